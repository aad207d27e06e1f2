//! The overlay people look at: the camera frame, the anomaly heatmap blended over the region
//! the model scored, and that region outlined (green: good, red: anomalous), as a JPEG.
//!
//! The heatmap uses the same fixed scale as the mask PNGs (`map_hi`), not per-frame min–max,
//! so a clean part stays cool and a defect stands out; its opacity grows with the value, so
//! the texture under low values stays visible.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageError};

use crate::pipeline::View;

/// Rendered frames are at most this wide (larger frames are scaled down by an integer factor).
pub const MAX_WIDTH: usize = 800;

/// RGB of the "turbo"-like ramp at t in [0, 1]: blue → cyan → green → yellow → red.
fn ramp(t: f32) -> [f32; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [48.0, 18.0, 160.0],
        [30.0, 160.0, 230.0],
        [60.0, 220.0, 90.0],
        [250.0, 210.0, 40.0],
        [220.0, 30.0, 20.0],
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [
        a[0] + (b[0] - a[0]) * f,
        a[1] + (b[1] - a[1]) * f,
        a[2] + (b[2] - a[2]) * f,
    ]
}

/// Bilinear sample of the map at (u, v) in [0, 1]².
fn sample(v: &View, u: f32, w: f32) -> f32 {
    let (mw, mh) = (v.map_w, v.map_h);
    if mw == 0 || mh == 0 || v.map.len() < mw * mh {
        return 0.0;
    }
    let x = (u * mw as f32 - 0.5).clamp(0.0, (mw - 1) as f32);
    let y = (w * mh as f32 - 0.5).clamp(0.0, (mh - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(mw - 1), (y0 + 1).min(mh - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let m = |x: usize, y: usize| v.map[y * mw + x];
    let top = m(x0, y0) * (1.0 - fx) + m(x1, y0) * fx;
    let bottom = m(x0, y1) * (1.0 - fx) + m(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The overlay as RGB pixels: (width, height, bytes).
pub fn overlay_rgb(v: &View) -> (usize, usize, Vec<u8>) {
    let step = v.width.div_ceil(MAX_WIDTH).max(1);
    let (w, h) = (v.width / step, v.height / step);
    let c = v.channels.max(1);
    let mut out = vec![0u8; w * h * 3];
    let (rx, ry, rw, rh) = v
        .roi
        .map_or((0, 0, v.width, v.height), |r| (r.x, r.y, r.w, r.h));
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = (x * step, y * step);
            let p = &v.pixels[(sy * v.width + sx) * c..][..c];
            let mut rgb = if c >= 3 {
                [p[0] as f32, p[1] as f32, p[2] as f32]
            } else {
                [p[0] as f32; 3]
            };
            if (rx..rx + rw).contains(&sx) && (ry..ry + rh).contains(&sy) {
                let u = (sx - rx) as f32 / rw as f32;
                let t = (sample(v, u, (sy - ry) as f32 / rh as f32) / v.map_hi).clamp(0.0, 1.0);
                let heat = ramp(t);
                let alpha = 0.15 + 0.6 * t;
                for k in 0..3 {
                    rgb[k] = rgb[k] * (1.0 - alpha) + heat[k] * alpha;
                }
            }
            out[(y * w + x) * 3..][..3].copy_from_slice(&rgb.map(|c| c as u8));
        }
    }
    outline(
        &mut out,
        w,
        h,
        (rx / step, ry / step, rw / step, rh / step),
        v.anomalous,
    );
    (w, h, out)
}

/// A 2-pixel frame around the scored region.
fn outline(out: &mut [u8], w: usize, h: usize, r: (usize, usize, usize, usize), bad: bool) {
    let color = if bad { [230, 40, 30] } else { [40, 200, 80] };
    let (x0, y0) = (r.0.min(w.saturating_sub(1)), r.1.min(h.saturating_sub(1)));
    let (x1, y1) = ((r.0 + r.2).min(w) - 1, (r.1 + r.3).min(h) - 1);
    let mut put = |x: usize, y: usize| out[(y * w + x) * 3..][..3].copy_from_slice(&color);
    for d in 0..2 {
        for x in x0..=x1 {
            put(x, (y0 + d).min(y1));
            put(x, y1.saturating_sub(d).max(y0));
        }
        for y in y0..=y1 {
            put((x0 + d).min(x1), y);
            put(x1.saturating_sub(d).max(x0), y);
        }
    }
}

/// The overlay as a JPEG of `quality` (1–100).
pub fn overlay_jpeg(v: &View, quality: u8) -> Result<Vec<u8>, ImageError> {
    let (w, h, rgb) = overlay_rgb(v);
    let mut jpeg = Vec::with_capacity(w * h / 4);
    JpegEncoder::new_with_quality(&mut jpeg, quality.clamp(1, 100)).encode(
        &rgb,
        w as u32,
        h as u32,
        ExtendedColorType::Rgb8,
    )?;
    Ok(jpeg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Roi;

    fn view(anomalous: bool) -> View {
        let (w, h) = (40, 30);
        let mut map = vec![0.0; 16];
        map[5] = 1.0; // hot near the top-left of the ROI
        View {
            pixels: vec![100; w * h],
            width: w,
            height: h,
            channels: 1,
            roi: Some(Roi {
                x: 10,
                y: 5,
                w: 20,
                h: 20,
            }),
            map,
            map_w: 4,
            map_h: 4,
            map_hi: 1.0,
            anomalous,
            ..View::default()
        }
    }

    #[test]
    fn heat_lands_in_the_roi_and_the_outline_shows_the_verdict() {
        let (w, h, rgb) = overlay_rgb(&view(true));
        assert_eq!((w, h), (40, 30));
        let px = |x: usize, y: usize| &rgb[(y * w + x) * 3..][..3];
        // Outside the ROI: the frame untouched.
        assert_eq!(px(2, 2), [100, 100, 100]);
        // The hot map cell (1, 1) of 4×4 over the 20×20 ROI at (10, 5): around (17, 12).
        let hot = px(17, 12);
        assert!(hot[0] > 180 && hot[2] < 100, "hot = {hot:?}");
        // A cold cell is bluish, not red.
        let cold = px(27, 22);
        assert!(cold[2] > cold[0], "cold = {cold:?}");
        assert_eq!(px(10, 5), [230, 40, 30], "red outline when anomalous");
        let (_, _, good) = overlay_rgb(&view(false));
        assert_eq!(&good[(5 * w + 10) * 3..][..3], [40, 200, 80]);
    }

    #[test]
    fn jpeg_decodes_at_the_frame_size() {
        let jpeg = overlay_jpeg(&view(true), 80).unwrap();
        let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (40, 30));
    }
}
