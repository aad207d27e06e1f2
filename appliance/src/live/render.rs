//! The overlay people look at: the camera frame, the anomaly heatmap blended over the region
//! the model scored, and that region outlined (green: good, red: anomalous), as a JPEG.
//!
//! The heatmap uses the same fixed scale as the mask PNGs (`map_hi`), not per-frame min–max,
//! so a clean part stays cool and a defect stands out; its opacity grows with the value, so
//! the texture under low values stays visible.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageError};

use vigil_shared::mask::{heat_blend, sample_bilinear};

use crate::pipeline::View;

/// Rendered frames are at most this wide (larger frames are scaled down by an integer factor).
pub const MAX_WIDTH: usize = 800;

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
                let m = sample_bilinear(&v.map, v.map_w, v.map_h, u, (sy - ry) as f32 / rh as f32);
                let t = (m / v.map_hi).clamp(0.0, 1.0);
                rgb = heat_blend(rgb, t);
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
