//! Camera pixel formats → interleaved HWC `u8` with the model's channel count (1 or 3), and
//! ROI cropping. Everything writes into caller buffers and does not allocate (MJPG decoding
//! excepted: it goes through the `image` crate).
//!
//! YUV → RGB uses BT.601, the matrix of SD and USB (UVC) cameras. Limited-range YUV
//! (Y 16..235, the V4L2 default for YUYV) is expanded to full range so that a gray camera
//! frame has the same levels as the full-range images the model was trained on.

use crate::config::{PixelFormat, Roi};
use vigil_shared::preprocess::{self, luma};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("{format} frame {width}x{height} (stride {stride}): expected at least {expected} bytes, got {found}")]
    Short {
        format: PixelFormat,
        width: usize,
        height: usize,
        stride: usize,
        expected: usize,
        found: usize,
    },
    #[error("output channels must be 1 or 3, got {0}")]
    Channels(usize),
    #[error("output buffer: expected {expected} bytes, got {found}")]
    Output { expected: usize, found: usize },
    #[error("MJPG frame does not decode: {0}")]
    Jpeg(String),
    #[error("MJPG frame is {found_w}x{found_h}, the driver announced {width}x{height}")]
    JpegSize {
        width: usize,
        height: usize,
        found_w: usize,
        found_h: usize,
    },
    #[error("ROI {x},{y},{w},{h} lies outside the {width}x{height} frame")]
    Roi {
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        width: usize,
        height: usize,
    },
}

/// A raw camera frame's layout, as the driver granted it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawLayout {
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    /// Bytes per line (≥ the packed width; drivers may pad).
    pub stride: usize,
    /// Y is 16..235 rather than 0..255 (YUYV only).
    pub limited_range: bool,
}

impl RawLayout {
    fn bytes_per_pixel(&self) -> usize {
        match self.format {
            PixelFormat::YUYV => 2,
            PixelFormat::GREY => 1,
            PixelFormat::RGB3 => 3,
            PixelFormat::MJPG => 0,
        }
    }
}

#[inline]
fn expand_y(y: u8, limited: bool) -> f32 {
    if limited {
        ((f32::from(y) - 16.0) * (255.0 / 219.0)).clamp(0.0, 255.0)
    } else {
        f32::from(y)
    }
}

/// BT.601 YCbCr → RGB (limited or full range), rounded and clamped.
#[inline]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8, limited: bool) -> [u8; 3] {
    let yf = expand_y(y, limited);
    let (cscale, u, v) = if limited {
        (255.0 / 224.0, f32::from(u) - 128.0, f32::from(v) - 128.0)
    } else {
        (1.0, f32::from(u) - 128.0, f32::from(v) - 128.0)
    };
    let (u, v) = (u * cscale, v * cscale);
    let r = yf + 1.402 * v;
    let g = yf - 0.344_136 * u - 0.714_136 * v;
    let b = yf + 1.772 * u;
    let q = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [q(r), q(g), q(b)]
}

/// Converts one raw frame (`YUYV`, `GREY`, `RGB3`; `MJPG` goes through [`decode_mjpg`]) into
/// `out`: `width·height·channels` bytes, interleaved.
pub fn convert(
    raw: &[u8],
    layout: &RawLayout,
    channels: usize,
    out: &mut [u8],
) -> Result<(), ConvertError> {
    let RawLayout {
        format,
        width: w,
        height: h,
        stride,
        limited_range,
    } = *layout;
    if channels != 1 && channels != 3 {
        return Err(ConvertError::Channels(channels));
    }
    if format == PixelFormat::MJPG {
        return decode_mjpg(raw, w, h, channels, out);
    }
    let row_bytes = w * layout.bytes_per_pixel();
    // The last row need not carry its padding.
    let expected = if h == 0 {
        0
    } else {
        stride.max(row_bytes) * (h - 1) + row_bytes
    };
    if raw.len() < expected || stride < row_bytes {
        return Err(ConvertError::Short {
            format,
            width: w,
            height: h,
            stride,
            expected,
            found: raw.len(),
        });
    }
    if out.len() != w * h * channels {
        return Err(ConvertError::Output {
            expected: w * h * channels,
            found: out.len(),
        });
    }
    for y in 0..h {
        let src = &raw[y * stride..][..row_bytes];
        let dst = &mut out[y * w * channels..][..w * channels];
        match (format, channels) {
            (PixelFormat::GREY, 1) => dst.copy_from_slice(src),
            (PixelFormat::GREY, _) => {
                for (d, &g) in dst.chunks_exact_mut(3).zip(src) {
                    d.fill(g);
                }
            }
            (PixelFormat::RGB3, 3) => dst.copy_from_slice(src),
            (PixelFormat::RGB3, _) => {
                for (d, p) in dst.iter_mut().zip(src.chunks_exact(3)) {
                    *d = luma(p[0], p[1], p[2]).round() as u8;
                }
            }
            (PixelFormat::YUYV, 1) => {
                // Y0 U Y1 V: luma is every even byte.
                for (d, &y) in dst.iter_mut().zip(src.iter().step_by(2)) {
                    *d = expand_y(y, limited_range).round() as u8;
                }
            }
            (PixelFormat::YUYV, _) => {
                // Two pixels share U and V; an odd width ends with a half macropixel whose
                // second Y is padding.
                for (x, d) in dst.chunks_exact_mut(3).enumerate() {
                    let m = &src[(x / 2) * 4..];
                    let (y, u, v) = (m[(x % 2) * 2], m[1], m.get(3).copied().unwrap_or(128));
                    d.copy_from_slice(&yuv_to_rgb(y, u, v, limited_range));
                }
            }
            (PixelFormat::MJPG, _) => unreachable!("handled above"),
        }
    }
    Ok(())
}

/// Decodes an MJPG frame into `out` (gray or RGB). Allocates inside the decoder: this runs on
/// the capture thread, never on the scoring path.
pub fn decode_mjpg(
    jpeg: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    out: &mut [u8],
) -> Result<(), ConvertError> {
    let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
    if (img.width() as usize, img.height() as usize) != (w, h) {
        return Err(ConvertError::JpegSize {
            width: w,
            height: h,
            found_w: img.width() as usize,
            found_h: img.height() as usize,
        });
    }
    let expected = w * h * channels;
    if out.len() != expected {
        return Err(ConvertError::Output {
            expected,
            found: out.len(),
        });
    }
    from_decoded(img, channels, out).map_err(|e| ConvertError::Jpeg(e.to_string()))
}

/// A decoded image into `out` (`width·height·channels` bytes) the way the host's loaders read
/// files: gray stays gray, anything else becomes RGB (alpha dropped), then
/// `vigil_shared::preprocess::convert_channels` (BT.601 luma). The `image` crate's own
/// `to_luma8` weighs by Rec. 709 and would give other gray levels than training saw.
pub fn from_decoded(
    img: image::DynamicImage,
    channels: usize,
    out: &mut [u8],
) -> Result<(), preprocess::PreprocessError> {
    use image::DynamicImage as D;
    let gray = matches!(
        img,
        D::ImageLuma8(_) | D::ImageLumaA8(_) | D::ImageLuma16(_) | D::ImageLumaA16(_)
    );
    if gray {
        preprocess::convert_channels(img.into_luma8().as_raw(), 1, out, channels)
    } else {
        preprocess::convert_channels(img.into_rgb8().as_raw(), 3, out, channels)
    }
}

/// Copies the `roi` of an interleaved `width×height×channels` image into `out`
/// (`roi.w·roi.h·channels` bytes).
pub fn crop(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    roi: &Roi,
    out: &mut [u8],
) -> Result<(), ConvertError> {
    let window = (roi.x, roi.y, roi.w, roi.h);
    preprocess::try_crop_u8(src, channels, height, width, window, out).map_err(|e| match e {
        preprocess::PreprocessError::Crop { .. } => ConvertError::Roi {
            x: roi.x,
            y: roi.y,
            w: roi.w,
            h: roi.h,
            width,
            height,
        },
        _ => ConvertError::Output {
            expected: roi.w * roi.h * channels,
            found: out.len(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(format: PixelFormat, w: usize, h: usize, stride: usize, limited: bool) -> RawLayout {
        RawLayout {
            format,
            width: w,
            height: h,
            stride,
            limited_range: limited,
        }
    }

    #[test]
    fn yuyv_to_gray_and_rgb() {
        // 2x2 frame, stride 6 (2 bytes of padding per row). Full range: gray = Y.
        let raw = [
            10, 128, 200, 128, 0xEE, 0xEE, //
            0, 128, 255, 128, 0xEE, 0xEE,
        ];
        let l = layout(PixelFormat::YUYV, 2, 2, 6, false);
        let mut g = [0u8; 4];
        convert(&raw, &l, 1, &mut g).unwrap();
        assert_eq!(g, [10, 200, 0, 255]);
        // Neutral chroma → gray RGB.
        let mut rgb = [0u8; 12];
        convert(&raw, &l, 3, &mut rgb).unwrap();
        assert_eq!(rgb, [10, 10, 10, 200, 200, 200, 0, 0, 0, 255, 255, 255]);
        // Limited range: 16 → 0, 235 → 255, 125.5 → 127.5.
        let raw = [16, 128, 235, 128];
        let mut g = [0u8; 2];
        convert(&raw, &layout(PixelFormat::YUYV, 2, 1, 4, true), 1, &mut g).unwrap();
        assert_eq!(g, [0, 255]);
        // Saturated red in full-range BT.601: Y 76, U 85, V 255.
        assert_eq!(yuv_to_rgb(76, 85, 255, false), [254, 0, 0]);
    }

    #[test]
    fn yuyv_chroma_is_shared_per_pair() {
        // Pixel 0 and 1 share (U, V) = (85, 255): both reddish; pixel 2-3 neutral.
        let raw = [76, 85, 76, 255, 100, 128, 50, 128];
        let mut rgb = [0u8; 12];
        convert(
            &raw,
            &layout(PixelFormat::YUYV, 4, 1, 8, false),
            3,
            &mut rgb,
        )
        .unwrap();
        assert_eq!(&rgb[..6], &[254, 0, 0, 254, 0, 0]);
        assert_eq!(&rgb[6..], &[100, 100, 100, 50, 50, 50]);
    }

    #[test]
    fn grey_and_rgb3() {
        let raw = [1, 2, 3, 99, 4, 5, 6, 99]; // 3x2 GREY with stride 4
        let l = layout(PixelFormat::GREY, 3, 2, 4, false);
        let mut g = [0u8; 6];
        convert(&raw, &l, 1, &mut g).unwrap();
        assert_eq!(g, [1, 2, 3, 4, 5, 6]);
        let mut rgb = [0u8; 18];
        convert(&raw, &l, 3, &mut rgb).unwrap();
        assert_eq!(&rgb[..6], &[1, 1, 1, 2, 2, 2]);

        let raw = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]; // 2x2 RGB3
        let l = layout(PixelFormat::RGB3, 2, 2, 6, false);
        let mut rgb = [0u8; 12];
        convert(&raw, &l, 3, &mut rgb).unwrap();
        assert_eq!(rgb, raw);
        let mut g = [0u8; 4];
        convert(&raw, &l, 1, &mut g).unwrap();
        assert_eq!(g, [76, 150, 29, 255]);
    }

    #[test]
    fn short_buffers_are_errors_not_panics() {
        let l = layout(PixelFormat::YUYV, 4, 4, 8, false);
        let e = convert(&[0; 10], &l, 1, &mut [0; 16]).unwrap_err();
        assert!(
            matches!(
                e,
                ConvertError::Short {
                    expected: 32,
                    found: 10,
                    ..
                }
            ),
            "{e}"
        );
        let l = layout(PixelFormat::RGB3, 4, 1, 4, false); // stride below the row
        assert!(convert(&[0; 12], &l, 3, &mut [0; 12]).is_err());
        assert!(convert(
            &[0; 4],
            &layout(PixelFormat::GREY, 2, 2, 2, false),
            2,
            &mut [0; 8]
        )
        .is_err());
        assert!(matches!(
            convert(
                b"not a jpeg",
                &layout(PixelFormat::MJPG, 2, 2, 0, false),
                1,
                &mut [0; 4]
            ),
            Err(ConvertError::Jpeg(_))
        ));
    }

    #[test]
    fn mjpg_decodes_to_gray_and_rgb() {
        let img = image::RgbImage::from_fn(16, 8, |x, _| image::Rgb([x as u8 * 16, 128, 64]));
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let l = layout(PixelFormat::MJPG, 16, 8, 0, false);
        let mut rgb = vec![0u8; 16 * 8 * 3];
        convert(&jpeg, &l, 3, &mut rgb).unwrap();
        // Lossy, but close: green stays near 128 and red ramps up.
        assert!(rgb.chunks(3).all(|p| p[1].abs_diff(128) < 12), "{rgb:?}");
        assert!(rgb[15 * 3] > rgb[0] + 150);
        let mut g = vec![0u8; 16 * 8];
        convert(&jpeg, &l, 1, &mut g).unwrap();
        let l2 = layout(PixelFormat::MJPG, 8, 8, 0, false);
        assert!(matches!(
            convert(&jpeg, &l2, 1, &mut [0; 64]),
            Err(ConvertError::JpegSize { .. })
        ));
    }

    #[test]
    fn crop_roi() {
        // 4x3, 1 channel, values = index.
        let src: Vec<u8> = (0..12).collect();
        let roi = Roi {
            x: 1,
            y: 1,
            w: 2,
            h: 2,
        };
        let mut out = [0u8; 4];
        crop(&src, 4, 3, 1, &roi, &mut out).unwrap();
        assert_eq!(out, [5, 6, 9, 10]);
        let src3: Vec<u8> = (0..36).collect();
        let mut out3 = [0u8; 12];
        crop(&src3, 4, 3, 3, &roi, &mut out3).unwrap();
        assert_eq!(&out3[..6], &[15, 16, 17, 18, 19, 20]);
        let bad = Roi {
            x: 3,
            y: 0,
            w: 2,
            h: 1,
        };
        assert!(matches!(
            crop(&src, 4, 3, 1, &bad, &mut [0; 2]),
            Err(ConvertError::Roi { .. })
        ));
        let huge = Roi {
            x: usize::MAX,
            y: 0,
            w: 2,
            h: 1,
        };
        assert!(crop(&src, 4, 3, 1, &huge, &mut [0; 2]).is_err());
    }
    #[test]
    fn decoded_files_convert_like_the_host_loaders() {
        // Colour → gray by BT.601 (what training saw), not the image crate's Rec. 709
        // `to_luma8`, which gives 54 and 182 here.
        let rgb = image::RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 255, 0]).unwrap();
        let mut gray = [0u8; 2];
        from_decoded(image::DynamicImage::ImageRgb8(rgb), 1, &mut gray).unwrap();
        assert_eq!(gray, [76, 150]); // 76.245, 149.685
        let g = image::GrayImage::from_raw(2, 1, vec![9, 200]).unwrap();
        let mut out = [0u8; 6];
        from_decoded(image::DynamicImage::ImageLuma8(g), 3, &mut out).unwrap();
        assert_eq!(out, [9, 9, 9, 200, 200, 200]);
        assert!(from_decoded(image::DynamicImage::new_luma8(2, 2), 1, &mut out).is_err());
    }
}
