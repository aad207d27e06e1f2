//! Step 3 of the preprocessing order: resizing (area averaging when shrinking, bilinear when
//! enlarging) and the nearest-neighbour resize for masks.

use super::{check_len, PreprocessError, MAX_CHANNELS};

fn check_resize(
    src: usize,
    channels: usize,
    src_h: usize,
    src_w: usize,
    dst: usize,
    dst_h: usize,
    dst_w: usize,
) -> Result<(), PreprocessError> {
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(PreprocessError::Channels {
            what: "resize",
            found: channels,
            expected: "1 to 4",
        });
    }
    check_len("resize source", src, &[src_h, src_w, channels])?;
    check_len("resize destination", dst, &[dst_h, dst_w, channels])?;
    if (src_h == 0 || src_w == 0) && dst > 0 {
        return Err(PreprocessError::EmptySource {
            src_h,
            src_w,
            dst_h,
            dst_w,
        });
    }
    Ok(())
}

/// How one output index samples one axis of the source.
#[derive(Clone, Copy)]
enum Taps {
    /// Two neighbours, weights `1 - f` and `f` (`i0 == i1` at the borders).
    Linear { i0: usize, i1: usize, f: f32 },
    /// All source cells overlapping `[start, end)`, weighted by overlap / scale.
    Area {
        start: f64,
        end: f64,
        lo: usize,
        hi: usize,
        inv_scale: f64,
    },
}

impl Taps {
    /// Output index `o` of an axis resized from `n_src` to `n_dst` (both > 0).
    ///
    /// Shrinking uses area averaging, enlarging (or 1:1) bilinear. Bilinear reads only the two
    /// nearest source samples, so from a factor of 2 on it skips pixels and aliases (thin
    /// scratches vanish or flicker between frames); area averaging lets every source pixel
    /// contribute. Below 2x area is still the better low-pass, and both are the identity at
    /// exactly 1x, so switching at "any shrink" (like OpenCV's INTER_AREA advice) keeps the
    /// result continuous in the scale. The choice is per axis.
    fn new(n_src: usize, n_dst: usize, o: usize) -> Taps {
        let scale = n_src as f64 / n_dst as f64;
        if n_src > n_dst {
            let start = o as f64 * scale;
            let end = ((o + 1) as f64 * scale).min(n_src as f64);
            Taps::Area {
                start,
                end,
                lo: start.floor() as usize,
                hi: (end.ceil() as usize).min(n_src),
                inv_scale: 1.0 / scale,
            }
        } else {
            // Half-pixel centres (align_corners = false), like OpenCV / PyTorch.
            let pos = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (pos.floor() as usize).min(n_src - 1);
            let i1 = (i0 + 1).min(n_src - 1);
            Taps::Linear {
                i0,
                i1,
                f: (pos - i0 as f64) as f32,
            }
        }
    }

    fn range(&self) -> std::ops::Range<usize> {
        match *self {
            Taps::Linear { i0, i1, .. } => i0..i1 + 1,
            Taps::Area { lo, hi, .. } => lo..hi,
        }
    }

    fn weight(&self, i: usize) -> f32 {
        match *self {
            Taps::Linear { i0, i1, f } => {
                if i0 == i1 {
                    1.0
                } else if i == i0 {
                    1.0 - f
                } else {
                    f
                }
            }
            Taps::Area {
                start,
                end,
                inv_scale,
                ..
            } => {
                (((i + 1) as f64).min(end) - (i as f64).max(start)).max(0.0) as f32
                    * inv_scale as f32
            }
        }
    }
}

/// Resizes an interleaved HWC `u8` image, area averaging along an axis that shrinks and
/// bilinear along an axis that grows (see the reasoning on the method choice in the source).
/// Values are rounded to nearest.
///
/// # Panics
/// When the buffer lengths do not match the dimensions or `channels` is not 1..=4: those are
/// the caller's buffers, not data. Use [`try_resize_bilinear_u8`] to get an error instead.
pub fn resize_bilinear_u8(
    src: &[u8],
    channels: usize,
    src_h: usize,
    src_w: usize,
    dst: &mut [u8],
    dst_h: usize,
    dst_w: usize,
) {
    if let Err(e) = try_resize_bilinear_u8(src, channels, src_h, src_w, dst, dst_h, dst_w) {
        panic!("resize_bilinear_u8: {e}");
    }
}

/// [`resize_bilinear_u8`] that reports bad buffer sizes as an error.
pub fn try_resize_bilinear_u8(
    src: &[u8],
    channels: usize,
    src_h: usize,
    src_w: usize,
    dst: &mut [u8],
    dst_h: usize,
    dst_w: usize,
) -> Result<(), PreprocessError> {
    check_resize(src.len(), channels, src_h, src_w, dst.len(), dst_h, dst_w)?;
    if dst.is_empty() {
        return Ok(());
    }
    if src_h == dst_h && src_w == dst_w {
        dst.copy_from_slice(src);
        return Ok(());
    }
    for oy in 0..dst_h {
        let ty = Taps::new(src_h, dst_h, oy);
        for ox in 0..dst_w {
            let tx = Taps::new(src_w, dst_w, ox);
            let mut acc = [0f32; MAX_CHANNELS];
            for iy in ty.range() {
                let wy = ty.weight(iy);
                let row = iy * src_w;
                for ix in tx.range() {
                    let w = wy * tx.weight(ix);
                    let px = &src[(row + ix) * channels..][..channels];
                    for (a, &v) in acc.iter_mut().zip(px) {
                        *a += w * f32::from(v);
                    }
                }
            }
            let out = &mut dst[(oy * dst_w + ox) * channels..][..channels];
            for (o, a) in out.iter_mut().zip(acc) {
                *o = a.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(())
}

/// Nearest-neighbour resize of an interleaved HWC image of any `Copy` element (masks: `u8`
/// or `bool`); never invents values. Output index `o` reads source `floor((o + 0.5) * scale)`,
/// i.e. the source pixel under the output pixel's centre (PyTorch's "nearest-exact").
pub fn try_resize_nearest<T: Copy>(
    src: &[T],
    channels: usize,
    src_h: usize,
    src_w: usize,
    dst: &mut [T],
    dst_h: usize,
    dst_w: usize,
) -> Result<(), PreprocessError> {
    check_resize(src.len(), channels, src_h, src_w, dst.len(), dst_h, dst_w)?;
    let pick = |o: usize, n_src: usize, n_dst: usize| {
        (((o as f64 + 0.5) * n_src as f64 / n_dst as f64) as usize).min(n_src - 1)
    };
    for oy in 0..dst_h {
        let iy = pick(oy, src_h, dst_h);
        for ox in 0..dst_w {
            let ix = pick(ox, src_w, dst_w);
            let s = (iy * src_w + ix) * channels;
            let d = (oy * dst_w + ox) * channels;
            dst[d..d + channels].copy_from_slice(&src[s..s + channels]);
        }
    }
    Ok(())
}

/// Nearest-neighbour resize for `u8` masks (see [`try_resize_nearest`]).
///
/// # Panics
/// Like [`resize_bilinear_u8`], on buffers that do not match the dimensions.
pub fn resize_nearest_u8(
    src: &[u8],
    channels: usize,
    src_h: usize,
    src_w: usize,
    dst: &mut [u8],
    dst_h: usize,
    dst_w: usize,
) {
    if let Err(e) = try_resize_nearest(src, channels, src_h, src_w, dst, dst_h, dst_w) {
        panic!("resize_nearest_u8: {e}");
    }
}
