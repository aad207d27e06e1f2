//! Pixel plumbing shared by the loaders: channel conversion, resizing, scaling to [-1, 1].

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageBuffer, Luma, RgbImage};

/// ITU-R BT.601 luma of an 8-bit RGB pixel.
#[inline]
pub(crate) fn luma(r: u8, g: u8, b: u8) -> u8 {
    (0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32 + 0.5).min(255.0) as u8
}

/// Converts 8-bit interleaved pixels (`channels_in` 1 or 3, `width`×`height`) to a model input:
/// converted to `channels_out` (RGB→grey by BT.601 luma, grey→RGB by replication), resized to
/// `size`×`size` with a triangle (bilinear) filter, CHW planar, scaled to [-1, 1].
///
/// # Panics
/// If `pixels.len() != width * height * channels_in` or a channel count is not 1 or 3; the
/// loaders check sizes before calling.
pub fn to_model_input(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels_in: usize,
    size: usize,
    channels_out: usize,
) -> Vec<f32> {
    assert_eq!(
        pixels.len(),
        width * height * channels_in,
        "pixel buffer size"
    );
    assert!(
        matches!(channels_in, 1 | 3) && matches!(channels_out, 1 | 3),
        "channels must be 1 or 3"
    );
    let (w, h) = (width as u32, height as u32);
    let s = size as u32;
    let scale = |v: u8| v as f32 * (2.0 / 255.0) - 1.0;
    if channels_out == 1 {
        let grey: Vec<u8> = if channels_in == 1 {
            pixels.to_vec()
        } else {
            pixels
                .chunks_exact(3)
                .map(|p| luma(p[0], p[1], p[2]))
                .collect()
        };
        let img = GrayImage::from_raw(w, h, grey).expect("sized above");
        let img = if (w, h) == (s, s) {
            img
        } else {
            imageops::resize(&img, s, s, FilterType::Triangle)
        };
        img.into_raw().into_iter().map(scale).collect()
    } else if channels_in == 1 {
        let img = GrayImage::from_raw(w, h, pixels.to_vec()).expect("sized above");
        let img = if (w, h) == (s, s) {
            img
        } else {
            imageops::resize(&img, s, s, FilterType::Triangle)
        };
        let plane: Vec<f32> = img.into_raw().into_iter().map(scale).collect();
        let mut out = Vec::with_capacity(plane.len() * 3);
        for _ in 0..3 {
            out.extend_from_slice(&plane);
        }
        out
    } else {
        let img = RgbImage::from_raw(w, h, pixels.to_vec()).expect("sized above");
        let img = if (w, h) == (s, s) {
            img
        } else {
            imageops::resize(&img, s, s, FilterType::Triangle)
        };
        let raw = img.into_raw();
        let n = size * size;
        let mut out = vec![0.0; 3 * n];
        for (i, p) in raw.chunks_exact(3).enumerate() {
            out[i] = scale(p[0]);
            out[n + i] = scale(p[1]);
            out[2 * n + i] = scale(p[2]);
        }
        out
    }
}

/// A grey 8-bit mask (`width`×`height`) resized to `size`×`size` by nearest neighbour,
/// thresholded at > 127.
pub fn mask_from_u8(mask: &[u8], width: usize, height: usize, size: usize) -> Vec<bool> {
    assert_eq!(mask.len(), width * height, "mask buffer size");
    if width == size && height == size {
        return mask.iter().map(|&m| m > 127).collect();
    }
    let img: ImageBuffer<Luma<u8>, Vec<u8>> =
        ImageBuffer::from_raw(width as u32, height as u32, mask.to_vec()).expect("sized above");
    imageops::resize(&img, size as u32, size as u32, FilterType::Nearest)
        .into_raw()
        .into_iter()
        .map(|m| m > 127)
        .collect()
}
