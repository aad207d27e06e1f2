//! Turning camera / dataset pixels into model input.
//!
//! The one path from 8-bit pixels to a model tensor, for the host (training data, `vigil eval`,
//! threshold calibration) and the appliance (per-frame scoring) alike, so a model sees the same
//! pixels on the line as in training. In order:
//!
//! 1. **crop** ([`try_crop_u8`], the appliance's ROI);
//! 2. **channels** ([`convert_channels`]) to the model's count at the source resolution:
//!    RGB → gray by BT.601 luma rounded to `u8`, gray → RGB by replication. This is the order
//!    a camera frame takes (vigild's capture converts before anything else), so a colour file
//!    read by the host and a gray camera frame of the same scene give the same bytes;
//! 3. **resize** ([`try_resize_bilinear_u8`]): area averaging along an axis that shrinks,
//!    bilinear along one that grows;
//! 4. **scaling** ([`to_model_input`]) to planar CHW `f32` in the manifest's `input.range`.
//!
//! [`Preprocessor`] runs 2–4 with its buffers allocated once (the appliance's per-frame path);
//! [`image_to_model_input`] is the same thing for one image (the host's loaders).
//! Everything else writes into caller-provided buffers and does not allocate.
//!
//! Images are `u8`, interleaved HWC (`[y][x][c]`), rows top to bottom. Model input is planar
//! CHW `f32` in the manifest's `input.range`.

use crate::manifest::InputSpec;

mod resize;
pub use resize::{
    resize_bilinear_u8, resize_nearest_u8, try_resize_bilinear_u8, try_resize_nearest,
};

/// Most channels an interleaved image may have here (gray, RGB, RGBA).
pub const MAX_CHANNELS: usize = 4;

/// ITU-R BT.601 luma weights, the ones PIL's `convert("L")` and OpenCV use.
pub const LUMA_WEIGHTS: [f32; 3] = [0.299, 0.587, 0.114];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    #[error("{what}: expected {expected} values, found {found}")]
    Length {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error(
        "image is {found_h}x{found_w} (height x width) but the model expects \
         {expected_h}x{expected_w}"
    )]
    Shape {
        expected_h: usize,
        expected_w: usize,
        found_h: usize,
        found_w: usize,
    },
    #[error("{what}: {found} channels is not supported (expected {expected})")]
    Channels {
        what: &'static str,
        found: usize,
        expected: &'static str,
    },
    #[error("input range [{lo}, {hi}] must be finite with low < high")]
    Range { lo: f32, hi: f32 },
    #[error(
        "crop {w}x{h} at ({x}, {y}) (width x height at x, y) lies outside the \
         {src_w}x{src_h} image"
    )]
    Crop {
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        src_w: usize,
        src_h: usize,
    },
    #[error("cannot resize an empty {src_h}x{src_w} image to {dst_h}x{dst_w}")]
    EmptySource {
        src_h: usize,
        src_w: usize,
        dst_h: usize,
        dst_w: usize,
    },
}

fn check_len(what: &'static str, found: usize, dims: &[usize]) -> Result<(), PreprocessError> {
    // Saturating: absurd dimensions must give an error, not an overflow panic.
    let expected = dims.iter().fold(1usize, |a, &d| a.saturating_mul(d));
    if found == expected {
        Ok(())
    } else {
        Err(PreprocessError::Length {
            what,
            expected,
            found,
        })
    }
}

/// BT.601 luma of one RGB pixel, unrounded, in 0..=255.
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> f32 {
    let [wr, wg, wb] = LUMA_WEIGHTS;
    // The weights sum to 1 only up to f32 rounding: keep white at exactly 255.
    (wr * f32::from(r) + wg * f32::from(g) + wb * f32::from(b)).min(255.0)
}

/// Interleaved RGB → gray (BT.601 luma, rounded to nearest).
pub fn gray_from_rgb(rgb: &[u8], gray: &mut [u8]) -> Result<(), PreprocessError> {
    check_len(
        "gray_from_rgb source (3 x gray length)",
        rgb.len(),
        &[gray.len(), 3],
    )?;
    for (g, p) in gray.iter_mut().zip(rgb.chunks_exact(3)) {
        *g = luma(p[0], p[1], p[2]).round() as u8;
    }
    Ok(())
}

/// Gray → interleaved RGB by replicating the value.
pub fn rgb_from_gray(gray: &[u8], rgb: &mut [u8]) -> Result<(), PreprocessError> {
    check_len(
        "rgb_from_gray destination (3 x gray length)",
        rgb.len(),
        &[gray.len(), 3],
    )?;
    for (p, &g) in rgb.chunks_exact_mut(3).zip(gray) {
        p.fill(g);
    }
    Ok(())
}

/// Converts interleaved pixels between 1 and 3 channels (step 2 of the module's order):
/// 3 → 1 by [`gray_from_rgb`] (BT.601, rounded), 1 → 3 by [`rgb_from_gray`], same count →
/// copy. `dst` must hold `src.len() / src_channels * dst_channels` values.
pub fn convert_channels(
    src: &[u8],
    src_channels: usize,
    dst: &mut [u8],
    dst_channels: usize,
) -> Result<(), PreprocessError> {
    for (what, c) in [
        ("source image", src_channels),
        ("converted image", dst_channels),
    ] {
        if c != 1 && c != 3 {
            return Err(PreprocessError::Channels {
                what,
                found: c,
                expected: "1 or 3",
            });
        }
    }
    if !src.len().is_multiple_of(src_channels) {
        return Err(PreprocessError::Length {
            what: "convert_channels source (a whole number of pixels)",
            expected: src.len() / src_channels * src_channels,
            found: src.len(),
        });
    }
    let pixels = src.len() / src_channels;
    check_len(
        "convert_channels destination",
        dst.len(),
        &[pixels, dst_channels],
    )?;
    match (src_channels, dst_channels) {
        (3, 1) => gray_from_rgb(src, dst),
        (1, 3) => rgb_from_gray(src, dst),
        _ => {
            dst.copy_from_slice(src);
            Ok(())
        }
    }
}

/// Copies the `w x h` window at (`x`, `y`) of an interleaved `src_w x src_h x channels` image
/// into `dst` (`w * h * channels` values): step 1 of the module's order, the appliance's ROI.
pub fn try_crop_u8(
    src: &[u8],
    channels: usize,
    src_h: usize,
    src_w: usize,
    (x, y, w, h): (usize, usize, usize, usize),
    dst: &mut [u8],
) -> Result<(), PreprocessError> {
    let outside =
        x.checked_add(w).is_none_or(|e| e > src_w) || y.checked_add(h).is_none_or(|e| e > src_h);
    if outside {
        return Err(PreprocessError::Crop {
            x,
            y,
            w,
            h,
            src_w,
            src_h,
        });
    }
    check_len("crop source", src.len(), &[src_h, src_w, channels])?;
    check_len("crop destination", dst.len(), &[h, w, channels])?;
    let row = w * channels;
    if row == 0 {
        return Ok(());
    }
    for (r, out) in dst.chunks_exact_mut(row).enumerate() {
        let start = ((y + r) * src_w + x) * channels;
        out.copy_from_slice(&src[start..start + row]);
    }
    Ok(())
}

fn check_spec(spec: &InputSpec) -> Result<(f32, f32), PreprocessError> {
    if spec.channels != 1 && spec.channels != 3 {
        return Err(PreprocessError::Channels {
            what: "model input",
            found: spec.channels,
            expected: "1 or 3",
        });
    }
    let [lo, hi] = spec.range;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(PreprocessError::Range { lo, hi });
    }
    Ok((lo, hi))
}

/// Converts an HWC `u8` image already at `spec.height x spec.width` into planar CHW `f32`
/// model input in `spec.range` (0 → low, 255 → high, exactly).
///
/// Channel conversion: 1 → 3 replicates the gray value; 3 → 1 takes BT.601 luma (unrounded,
/// so no precision is lost before scaling). `out` must hold `spec.channels * h * w` values.
pub fn to_model_input(
    src: &[u8],
    src_channels: usize,
    h: usize,
    w: usize,
    spec: &InputSpec,
    out: &mut [f32],
) -> Result<(), PreprocessError> {
    let (lo, hi) = check_spec(spec)?;
    if src_channels != 1 && src_channels != 3 {
        return Err(PreprocessError::Channels {
            what: "source image",
            found: src_channels,
            expected: "1 or 3",
        });
    }
    if h != spec.height || w != spec.width {
        return Err(PreprocessError::Shape {
            expected_h: spec.height,
            expected_w: spec.width,
            found_h: h,
            found_w: w,
        });
    }
    check_len(
        "source image (h x w x channels)",
        src.len(),
        &[h, w, src_channels],
    )?;
    check_len(
        "model input buffer (c x h x w)",
        out.len(),
        &[spec.channels, h, w],
    )?;

    let span = hi - lo;
    // v / 255 (not v * (1/255)) so that 255 maps to exactly `hi`.
    let scale = |v: f32| (v / 255.0 * span + lo).clamp(lo, hi);
    let plane = h * w;
    match (src_channels, spec.channels) {
        (1, 1) | (1, 3) => {
            for c in 0..spec.channels {
                for (o, &v) in out[c * plane..][..plane].iter_mut().zip(src) {
                    *o = scale(f32::from(v));
                }
            }
        }
        (3, 3) => {
            for (i, p) in src.chunks_exact(3).enumerate() {
                for (c, &v) in p.iter().enumerate() {
                    out[c * plane + i] = scale(f32::from(v));
                }
            }
        }
        _ => {
            // (3, 1); the other combinations were rejected above.
            for (o, p) in out.iter_mut().zip(src.chunks_exact(3)) {
                *o = scale(luma(p[0], p[1], p[2]));
            }
        }
    }
    Ok(())
}

/// Channel conversion + resize + scaling (steps 2–4 of the module's order) for one source
/// format, with its buffers allocated once: [`Preprocessor::run`] is the appliance's
/// allocation-free per-frame path, and [`image_to_model_input`] runs it for the host.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    spec: InputSpec,
    src_channels: usize,
    src_h: usize,
    src_w: usize,
    /// The frame at the model's channel count, source size (empty when no conversion is due).
    converted: Vec<u8>,
    resized: Vec<u8>,
}

impl Preprocessor {
    pub fn new(
        spec: &InputSpec,
        src_channels: usize,
        src_h: usize,
        src_w: usize,
    ) -> Result<Self, PreprocessError> {
        check_spec(spec)?;
        if src_channels != 1 && src_channels != 3 {
            return Err(PreprocessError::Channels {
                what: "source image",
                found: src_channels,
                expected: "1 or 3",
            });
        }
        if src_h == 0 || src_w == 0 {
            return Err(PreprocessError::EmptySource {
                src_h,
                src_w,
                dst_h: spec.height,
                dst_w: spec.width,
            });
        }
        let converted = if src_channels == spec.channels {
            Vec::new()
        } else {
            vec![0; src_h.saturating_mul(src_w).saturating_mul(spec.channels)]
        };
        let resized = vec![0; spec.height * spec.width * spec.channels];
        Ok(Self {
            spec: spec.clone(),
            src_channels,
            src_h,
            src_w,
            converted,
            resized,
        })
    }

    /// Length of the `out` buffer [`Preprocessor::run`] expects.
    pub fn output_len(&self) -> usize {
        self.spec.channels * self.spec.height * self.spec.width
    }

    /// `frame` is HWC `u8` at the size and channel count given to `new`; `out` receives the
    /// model input.
    pub fn run(&mut self, frame: &[u8], out: &mut [f32]) -> Result<(), PreprocessError> {
        let (h, w, c) = (self.spec.height, self.spec.width, self.spec.channels);
        check_len(
            "frame (h x w x channels)",
            frame.len(),
            &[self.src_h, self.src_w, self.src_channels],
        )?;
        let at_model_channels: &[u8] = if self.src_channels == c {
            frame
        } else {
            convert_channels(frame, self.src_channels, &mut self.converted, c)?;
            &self.converted
        };
        if (self.src_h, self.src_w) == (h, w) {
            return to_model_input(at_model_channels, c, h, w, &self.spec, out);
        }
        try_resize_bilinear_u8(
            at_model_channels,
            c,
            self.src_h,
            self.src_w,
            &mut self.resized,
            h,
            w,
        )?;
        to_model_input(&self.resized, c, h, w, &self.spec, out)
    }
}

/// One image (HWC `u8`, `channels` 1 or 3, any size) to model input: [`Preprocessor`] built
/// for it and run once. The host's loaders go through here, vigild through `Preprocessor`.
pub fn image_to_model_input(
    pixels: &[u8],
    channels: usize,
    h: usize,
    w: usize,
    spec: &InputSpec,
) -> Result<Vec<f32>, PreprocessError> {
    let mut p = Preprocessor::new(spec, channels, h, w)?;
    let mut out = vec![0.0; p.output_len()];
    p.run(pixels, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(channels: usize, h: usize, w: usize) -> InputSpec {
        InputSpec {
            channels,
            height: h,
            width: w,
            range: [-1.0, 1.0],
        }
    }

    #[test]
    fn two_by_two_to_one_is_the_mean() {
        let mut out = [0u8];
        resize_bilinear_u8(&[10, 20, 30, 40], 1, 2, 2, &mut out, 1, 1);
        assert_eq!(out, [25]);
        // (0 + 255 + 0 + 255) / 4 = 127.5 rounds to 128.
        resize_bilinear_u8(&[0, 255, 0, 255], 1, 2, 2, &mut out, 1, 1);
        assert_eq!(out, [128]);
    }

    #[test]
    fn four_to_two_averages_blocks_per_channel() {
        // 4x4 RGB, block (by, bx) has value 10 * (2 * by + bx) + c in channel c.
        let mut src = vec![0u8; 4 * 4 * 3];
        for y in 0..4 {
            for x in 0..4 {
                for c in 0..3 {
                    src[(y * 4 + x) * 3 + c] = (10 * (2 * (y / 2) + x / 2) + c) as u8;
                }
            }
        }
        let mut dst = [0u8; 2 * 2 * 3];
        resize_bilinear_u8(&src, 3, 4, 4, &mut dst, 2, 2);
        assert_eq!(dst, [0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32]);
    }

    #[test]
    fn fractional_area_weights() {
        // 3 -> 2: scale 1.5. Output 0 covers [0, 1.5): (1 * 0 + 0.5 * 30) / 1.5 = 10.
        // Output 1 covers [1.5, 3): (0.5 * 30 + 1 * 60) / 1.5 = 50.
        let mut dst = [0u8; 2];
        resize_bilinear_u8(&[0, 30, 60], 1, 1, 3, &mut dst, 1, 2);
        assert_eq!(dst, [10, 50]);
    }

    #[test]
    fn bilinear_upscale_half_pixel_centres() {
        // 2 -> 4: scale 0.5, source positions (o + 0.5) * 0.5 - 0.5 = -0.25 (clamped to 0),
        // 0.25, 0.75, 1.25 (past the last sample, so the last sample).
        let mut dst = [0u8; 4];
        resize_bilinear_u8(&[0, 100], 1, 1, 2, &mut dst, 1, 4);
        assert_eq!(dst, [0, 25, 75, 100]);
    }

    #[test]
    fn identity_resize() {
        let src: Vec<u8> = (0..5 * 7 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let mut dst = vec![0u8; src.len()];
        resize_bilinear_u8(&src, 3, 5, 7, &mut dst, 5, 7);
        assert_eq!(dst, src);
        resize_nearest_u8(&src, 3, 5, 7, &mut dst, 5, 7);
        assert_eq!(dst, src);
    }

    #[test]
    fn mixed_axes_shrink_and_grow() {
        // 2 rows x 1 col -> 1 row x 2 cols: rows average, the column is replicated.
        let mut dst = [0u8; 2];
        resize_bilinear_u8(&[100, 200], 1, 2, 1, &mut dst, 1, 2);
        assert_eq!(dst, [150, 150]);
    }

    #[test]
    fn nearest_picks_pixel_under_centre() {
        let mut dst = [0u8; 2];
        resize_nearest_u8(&[1, 2, 3, 4], 1, 1, 4, &mut dst, 1, 2);
        assert_eq!(dst, [2, 4]);
        let mut up = [0u8; 4];
        resize_nearest_u8(&[7, 9], 1, 1, 2, &mut up, 1, 4);
        assert_eq!(up, [7, 7, 9, 9]);
        let mut b = [false; 4];
        try_resize_nearest(&[true, false], 1, 1, 2, &mut b, 1, 4).unwrap();
        assert_eq!(b, [true, true, false, false]);
    }

    #[test]
    fn resize_bad_buffers_are_errors() {
        let mut dst = [0u8; 3];
        let e = try_resize_bilinear_u8(&[0; 4], 1, 2, 2, &mut dst, 2, 2).unwrap_err();
        assert_eq!(
            e,
            PreprocessError::Length {
                what: "resize destination",
                expected: 4,
                found: 3
            }
        );
        assert!(try_resize_bilinear_u8(&[], 1, 0, 0, &mut dst, 1, 3).is_err());
        assert!(try_resize_bilinear_u8(&[0; 5], 5, 1, 1, &mut [0; 5], 1, 1).is_err());
        assert!(
            try_resize_bilinear_u8(&[0; 4], 1, usize::MAX, 2, &mut [0; 1], 1, 1).is_err(),
            "overflowing dimensions must not panic"
        );
    }

    #[test]
    fn range_endpoints_and_planar_layout() {
        // 1x2 RGB: pixel 0 = (0, 255, 0), pixel 1 = (255, 0, 255).
        let src = [0, 255, 0, 255, 0, 255];
        let mut out = [0f32; 6];
        to_model_input(&src, 3, 1, 2, &spec(3, 1, 2), &mut out).unwrap();
        assert_eq!(out, [-1.0, 1.0, 1.0, -1.0, -1.0, 1.0]);

        let mut s = spec(1, 1, 3);
        s.range = [0.0, 1.0];
        let mut out = [0f32; 3];
        to_model_input(&[0, 51, 255], 1, 1, 3, &s, &mut out).unwrap();
        assert_eq!(out, [0.0, 0.2, 1.0]);
    }

    #[test]
    fn channel_conversion() {
        // Gray -> 3 planes, each a copy.
        let mut out = [0f32; 6];
        to_model_input(&[0, 255], 1, 1, 2, &spec(3, 1, 2), &mut out).unwrap();
        assert_eq!(out, [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]);
        // RGB -> luma: pure red is 0.299 * 255 = 76.245, i.e. 0.299 * 2 - 1 = -0.402.
        let mut out = [0f32; 2];
        to_model_input(
            &[255, 0, 0, 255, 255, 255],
            3,
            1,
            2,
            &spec(1, 1, 2),
            &mut out,
        )
        .unwrap();
        assert!((out[0] - (-0.402)).abs() < 1e-6, "{}", out[0]);
        assert_eq!(out[1], 1.0);

        let mut g = [0u8; 2];
        gray_from_rgb(&[255, 0, 0, 0, 0, 255], &mut g).unwrap();
        assert_eq!(g, [76, 29]); // 76.245, 29.07
        let mut rgb = [0u8; 6];
        rgb_from_gray(&[5, 6], &mut rgb).unwrap();
        assert_eq!(rgb, [5, 5, 5, 6, 6, 6]);
    }

    #[test]
    fn model_input_errors_name_expected_and_found() {
        let mut out = [0f32; 4];
        let e = to_model_input(&[0; 6], 1, 2, 3, &spec(1, 2, 2), &mut out).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("2x3") && msg.contains("2x2"), "{msg}");
        let e = to_model_input(&[0; 3], 1, 2, 2, &spec(1, 2, 2), &mut out).unwrap_err();
        assert_eq!(
            e,
            PreprocessError::Length {
                what: "source image (h x w x channels)",
                expected: 4,
                found: 3
            }
        );
        let e = to_model_input(&[0; 4], 1, 2, 2, &spec(3, 2, 2), &mut out).unwrap_err();
        assert!(e.to_string().contains("expected 12 values, found 4"), "{e}");
        let e = to_model_input(&[0; 8], 2, 2, 2, &spec(1, 2, 2), &mut out).unwrap_err();
        assert!(matches!(e, PreprocessError::Channels { found: 2, .. }));
    }

    #[test]
    fn preprocessor_resizes_then_scales() {
        let s = spec(1, 1, 1);
        let mut p = Preprocessor::new(&s, 3, 2, 2).unwrap();
        assert_eq!(p.output_len(), 1);
        // Four white RGB pixels -> one white gray value -> 1.0.
        let mut out = [0f32; 1];
        p.run(&[255; 12], &mut out).unwrap();
        assert_eq!(out, [1.0]);
        assert!(p.run(&[255; 11], &mut out).is_err());
    }
    #[test]
    fn convert_channels_luma_and_replication() {
        let rgb = [255, 0, 0, 0, 0, 255, 10, 20, 30];
        let mut g = [0u8; 3];
        convert_channels(&rgb, 3, &mut g, 1).unwrap();
        assert_eq!(g, [76, 29, 18]); // 76.245, 29.07, 0.299*10+0.587*20+0.114*30 = 18.15
        let mut back = [0u8; 9];
        convert_channels(&g, 1, &mut back, 3).unwrap();
        assert_eq!(back, [76, 76, 76, 29, 29, 29, 18, 18, 18]);
        let mut same = [0u8; 9];
        convert_channels(&rgb, 3, &mut same, 3).unwrap();
        assert_eq!(same, rgb);
        assert!(convert_channels(&rgb[..8], 3, &mut g, 1).is_err());
        assert!(convert_channels(&rgb, 3, &mut [0u8; 2], 1).is_err());
        assert!(convert_channels(&rgb, 2, &mut g, 1).is_err());
    }

    #[test]
    fn crop_copies_the_window_and_rejects_outside() {
        // 3 rows x 4 cols, value = 10 * y + x.
        let src: Vec<u8> = (0..3)
            .flat_map(|y| (0..4).map(move |x| 10 * y + x))
            .collect();
        let mut dst = [0u8; 4];
        try_crop_u8(&src, 1, 3, 4, (1, 1, 2, 2), &mut dst).unwrap();
        assert_eq!(dst, [11, 12, 21, 22]);
        let e = try_crop_u8(&src, 1, 3, 4, (3, 0, 2, 2), &mut dst).unwrap_err();
        assert!(matches!(e, PreprocessError::Crop { x: 3, .. }), "{e}");
        assert!(e.to_string().contains("2x2 at (3, 0)") && e.to_string().contains("4x3"));
        assert!(try_crop_u8(&src, 1, 3, 4, (usize::MAX, 0, 2, 2), &mut dst).is_err());
        assert!(try_crop_u8(&src, 1, 3, 4, (0, 0, 1, 2), &mut dst).is_err());
        try_crop_u8(&src, 1, 3, 4, (0, 0, 0, 0), &mut []).unwrap();
    }

    /// A 48x40 test card with gradients, texture and a 1-pixel line: content where resize
    /// rounding and channel order matter (a constant image would hide both).
    fn card(channels: usize) -> Vec<u8> {
        let (h, w) = (40, 48);
        let mut v = Vec::with_capacity(h * w * channels);
        for y in 0..h {
            for x in 0..w {
                for c in 0..channels {
                    let t = (x * 5 + y * 3 + c * 70) % 256;
                    let tex = ((x * 7919 + y * 104_729 + c * 31) % 37) * 3;
                    let line = if x == 21 { 120 } else { 0 };
                    v.push(((t + tex + line) % 256) as u8);
                }
            }
        }
        v
    }

    #[test]
    fn preprocessor_converts_channels_before_resizing() {
        // A colour frame given to a gray model must give exactly what the capture path gives:
        // convert at full size, then resize the gray frame.
        for (h, w) in [(10, 12), (40, 48), (80, 96)] {
            let s = spec(1, h, w);
            let rgb = card(3);
            let mut gray = vec![0u8; 40 * 48];
            convert_channels(&rgb, 3, &mut gray, 1).unwrap();
            let direct = image_to_model_input(&rgb, 3, 40, 48, &s).unwrap();
            let captured = image_to_model_input(&gray, 1, 40, 48, &s).unwrap();
            assert_eq!(direct, captured, "{h}x{w}");
            let s3 = spec(3, h, w);
            let mut rgb_from = vec![0u8; 40 * 48 * 3];
            convert_channels(&gray, 1, &mut rgb_from, 3).unwrap();
            assert_eq!(
                image_to_model_input(&gray, 1, 40, 48, &s3).unwrap(),
                image_to_model_input(&rgb_from, 3, 40, 48, &s3).unwrap(),
                "{h}x{w} gray to RGB"
            );
        }
    }

    #[test]
    fn shrinking_averages_a_thin_line_instead_of_dropping_it() {
        // A 1-pixel bright column in 640 -> 64 (10x): area averaging spreads it to a tenth in
        // the one output column it falls in on every row; a two-tap bilinear would read it
        // on no row or at full strength depending on where it falls (aliasing).
        let (h, w) = (20, 640);
        for col in [0usize, 3, 5, 9, 317, 639] {
            let mut src = vec![0u8; h * w];
            for y in 0..h {
                src[y * w + col] = 250;
            }
            let mut dst = vec![0u8; 2 * 64];
            resize_bilinear_u8(&src, 1, h, w, &mut dst, 2, 64);
            for row in dst.chunks(64) {
                let lit: Vec<(usize, u8)> = row
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|&(_, v)| v > 0)
                    .collect();
                assert_eq!(lit, vec![(col / 10, 25)], "column {col}");
            }
        }
    }

    #[test]
    fn upscale_28_to_32_stays_smooth() {
        // Fashion-MNIST's 28 -> 32 is an upscale (bilinear): a ramp stays monotone and within
        // its end values, a constant stays constant.
        let ramp: Vec<u8> = (0..28 * 28).map(|i| ((i % 28) * 9) as u8).collect();
        let mut up = vec![0u8; 32 * 32];
        resize_bilinear_u8(&ramp, 1, 28, 28, &mut up, 32, 32);
        for row in up.chunks(32) {
            assert!(row.windows(2).all(|p| p[0] <= p[1]), "{row:?}");
            assert_eq!((row[0], row[31]), (0, 243));
        }
        let mut flat = vec![0u8; 32 * 32];
        resize_bilinear_u8(&[77; 28 * 28], 1, 28, 28, &mut flat, 32, 32);
        assert!(flat.iter().all(|&v| v == 77));
    }
}
