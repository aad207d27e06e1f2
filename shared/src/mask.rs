//! Anomaly-map post-processing (Gaussian smoothing, scaling, thresholding, connected
//! components) and PNG encoding of masks for the MQTT `…/mask` topic.
//!
//! Maps are row-major `f32`, `height` rows of `width` values.

/// Kernel half-width in standard deviations, as scipy's `gaussian_filter` (truncate=4.0)
/// and anomalib's `GaussianBlur2d` (kernel size 2 * int(4σ + 0.5) + 1) use.
pub const TRUNCATE: f32 = 4.0;

/// Radius cap so that an absurd sigma cannot ask for gigabytes; far beyond any map size.
const MAX_RADIUS: usize = 1 << 14;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MaskError {
    #[error("{what}: expected {expected} values for {width}x{height}, found {found}")]
    Size {
        what: &'static str,
        width: u64,
        height: u64,
        expected: u64,
        found: usize,
    },
    #[error("PNG size {width}x{height} is invalid: both must be at least 1")]
    EmptyImage { width: u32, height: u32 },
    #[error(
        "PNG text keyword {keyword:?} is invalid: it must be 1-79 printable Latin-1 characters \
         without leading, trailing or double spaces"
    )]
    Keyword { keyword: String },
    #[error("PNG text for keyword {keyword:?} must be Latin-1 without NUL characters")]
    Text { keyword: String },
    #[error("PNG encoding failed: {0}")]
    Encode(String),
    #[error("PNG decoding failed: {0}")]
    Decode(String),
    #[error("expected an 8-bit grayscale PNG, found {color} at {depth} bits")]
    Format { color: String, depth: u8 },
}

/// Normalised 1-D Gaussian of radius int(4σ + 0.5) (scipy's rounding, not a ceiling), i.e.
/// 2r + 1 taps summing to 1 and exactly symmetric. `sigma <= 0` or non-finite gives `[1.0]`
/// (no smoothing).
pub fn gaussian_kernel1d(sigma: f32) -> Vec<f32> {
    if !(sigma > 0.0 && sigma.is_finite()) {
        return vec![1.0];
    }
    let sigma = f64::from(sigma);
    let radius = ((f64::from(TRUNCATE) * sigma + 0.5) as usize).min(MAX_RADIUS);
    let half: Vec<f64> = (0..=radius)
        .map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp())
        .collect();
    let sum = half[0] + 2.0 * half[1..].iter().sum::<f64>();
    // Built from one half so that k[r - i] == k[r + i] bit for bit.
    (0..=2 * radius)
        .map(|j| (half[j.abs_diff(radius)] / sum) as f32)
        .collect()
}

/// Source index of padded position `i` on an axis of length `n` > 0 under scipy's "reflect"
/// mode: mirror about the edge with the edge sample repeated, `d c b a | a b c d | d c b a`,
/// folding again as often as needed for kernels wider than the axis. This is numpy's
/// "symmetric" mode; it is NOT ONNX `Pad(mode="reflect")` nor PyTorch's `reflect` (those skip
/// the edge sample: `d c b | a b c d | c b a`). The ONNX exporter should build the padding
/// as a `Gather` with the index table from this function.
pub fn reflect_index(i: isize, n: usize) -> usize {
    let period = 2 * n as isize;
    let m = i.rem_euclid(period) as usize;
    if m < n {
        m
    } else {
        2 * n - 1 - m
    }
}

/// Separable Gaussian blur of `h x w` maps with scipy "reflect" padding (see
/// [`reflect_index`]); scratch is allocated once in `new`, so `apply` does not allocate.
/// Rows are filtered first, then columns, each tap accumulated in kernel order.
#[derive(Debug, Clone)]
pub struct GaussianBlur {
    kernel: Vec<f32>,
    h: usize,
    w: usize,
    /// The row-filtered map.
    scratch: Vec<f32>,
    /// One padded row: `w + 2 * radius`.
    line: Vec<f32>,
}

impl GaussianBlur {
    pub fn new(sigma: f32, h: usize, w: usize) -> Self {
        let kernel = gaussian_kernel1d(sigma);
        let radius = kernel.len() / 2;
        Self {
            scratch: vec![0.0; h * w],
            line: vec![0.0; w + 2 * radius],
            kernel,
            h,
            w,
        }
    }

    pub fn kernel(&self) -> &[f32] {
        &self.kernel
    }

    /// Blurs `map` (`h * w` values, row-major) in place.
    ///
    /// # Panics
    /// When `map.len() != h * w`: the caller sized the blur for its own buffers.
    pub fn apply(&mut self, map: &mut [f32]) {
        let (h, w) = (self.h, self.w);
        assert_eq!(
            map.len(),
            h * w,
            "GaussianBlur::apply: map has {} values, the blur was built for {h}x{w}",
            map.len()
        );
        if self.kernel.len() == 1 || map.is_empty() {
            return;
        }
        let r = (self.kernel.len() / 2) as isize;
        for (row, out) in map.chunks_exact(w).zip(self.scratch.chunks_exact_mut(w)) {
            for (j, v) in self.line.iter_mut().enumerate() {
                *v = row[reflect_index(j as isize - r, w)];
            }
            for (x, o) in out.iter_mut().enumerate() {
                *o = self.line[x..x + self.kernel.len()]
                    .iter()
                    .zip(&self.kernel)
                    .fold(0.0, |acc, (&v, &k)| acc + v * k);
            }
        }
        for (y, out) in map.chunks_exact_mut(w).enumerate() {
            out.fill(0.0);
            for (k, &kv) in self.kernel.iter().enumerate() {
                let ry = reflect_index(y as isize + k as isize - r, h);
                for (o, &s) in out.iter_mut().zip(&self.scratch[ry * w..(ry + 1) * w]) {
                    *o += kv * s;
                }
            }
        }
    }
}

/// The heatmap colour of `t` in [0, 1] (RGB, 0–255): blue → cyan → green → yellow → red, the
/// ramp of vigild's live view and snapshots and of `vigil predict`'s overlays.
pub fn heat_colour(t: f32) -> [f32; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [48.0, 18.0, 160.0],
        [30.0, 160.0, 230.0],
        [60.0, 220.0, 90.0],
        [250.0, 210.0, 40.0],
        [220.0, 30.0, 20.0],
    ];
    let x = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        1.0
    } * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    [
        a[0] + (b[0] - a[0]) * f,
        a[1] + (b[1] - a[1]) * f,
        a[2] + (b[2] - a[2]) * f,
    ]
}

/// `rgb` (0–255) with the heat colour of `t` in [0, 1] blended over it, more opaque the hotter,
/// so the texture under low values stays visible: vigild's overlays and `vigil predict`'s.
pub fn heat_blend(rgb: [f32; 3], t: f32) -> [f32; 3] {
    let heat = heat_colour(t);
    let alpha = 0.15 + 0.6 * t;
    std::array::from_fn(|k| rgb[k] * (1.0 - alpha) + heat[k] * alpha)
}

/// Bilinear sample of a `h × w` map at (u, v) in [0, 1]² (pixel centres at (i + 0.5) / n).
pub fn sample_bilinear(map: &[f32], w: usize, h: usize, u: f32, v: f32) -> f32 {
    if w == 0 || h == 0 || map.len() < w * h {
        return 0.0;
    }
    let x = (u * w as f32 - 0.5).clamp(0.0, (w - 1) as f32);
    let y = (v * h as f32 - 0.5).clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let m = |x: usize, y: usize| map[y * w + x];
    let top = m(x0, y0) * (1.0 - fx) + m(x1, y0) * fx;
    let bottom = m(x0, y1) * (1.0 - fx) + m(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Linear map of `[lo, hi]` to `0..=255`, clamped and rounded (for PNG masks). When
/// `hi <= lo` it is a step at `hi`. NaN becomes 255, like an anomalous pixel.
///
/// # Panics
/// When `out.len() != map.len()`.
pub fn to_u8(map: &[f32], lo: f32, hi: f32, out: &mut [u8]) {
    assert_eq!(map.len(), out.len(), "to_u8: map and output lengths differ");
    // f64: hi - lo of finite f32 can overflow f32.
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    let scale = 255.0 / (hi - lo);
    for (o, &v) in out.iter_mut().zip(map) {
        let v = f64::from(v);
        *o = if v.is_nan() {
            255
        } else if hi > lo {
            ((v - lo) * scale).round().clamp(0.0, 255.0) as u8
        } else if v >= hi {
            255
        } else {
            0
        };
    }
}

/// `out[i] = map[i] >= threshold`, the same rule as image scores; NaN counts as anomalous.
///
/// # Panics
/// When `out.len() != map.len()`.
pub fn binarise(map: &[f32], threshold: f32, out: &mut [bool]) {
    assert_eq!(
        map.len(),
        out.len(),
        "binarise: map and output lengths differ"
    );
    for (o, &v) in out.iter_mut().zip(map) {
        *o = v >= threshold || v.is_nan();
    }
}

/// Labels the 8-connected components of `mask` (`height` rows of `width`): `labels[i]` is 0
/// for background and 1..=n for the component of pixel i, numbered in raster order of their
/// first pixel. Returns n. Regions for the PRO metric are defined this way (MVTec AD).
pub fn connected_components(
    mask: &[bool],
    width: usize,
    height: usize,
    labels: &mut [u32],
) -> Result<u32, MaskError> {
    let expected = width.saturating_mul(height);
    for (what, found) in [
        ("connected_components mask", mask.len()),
        ("connected_components labels", labels.len()),
    ] {
        if found != expected {
            return Err(MaskError::Size {
                what,
                width: width as u64,
                height: height as u64,
                expected: expected as u64,
                found,
            });
        }
    }
    labels.fill(0);
    let mut n = 0u32;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        n += 1;
        labels[start] = n;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (y, x) = (p / width, p % width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let q = ny * width + nx;
                    if mask[q] && labels[q] == 0 {
                        labels[q] = n;
                        stack.push(q);
                    }
                }
            }
        }
    }
    Ok(n)
}

fn check_keyword(k: &str) -> Result<(), MaskError> {
    let printable = k
        .chars()
        .all(|c| matches!(c as u32, 0x20..=0x7E | 0xA1..=0xFF));
    let len = k.chars().count();
    if !(1..=79).contains(&len)
        || !printable
        || k.starts_with(' ')
        || k.ends_with(' ')
        || k.contains("  ")
    {
        return Err(MaskError::Keyword {
            keyword: k.to_string(),
        });
    }
    Ok(())
}

/// Encodes an 8-bit grayscale PNG with tEXt chunks, e.g. `[("frame_id", "42")]`. The text
/// chunks go before the image data, so a subscriber can read them without decoding pixels.
pub fn encode_png_gray(
    pixels: &[u8],
    width: u32,
    height: u32,
    text: &[(&str, &str)],
) -> Result<Vec<u8>, MaskError> {
    if width == 0 || height == 0 {
        return Err(MaskError::EmptyImage { width, height });
    }
    let expected = u64::from(width) * u64::from(height);
    if pixels.len() as u64 != expected {
        return Err(MaskError::Size {
            what: "PNG pixels",
            width: width.into(),
            height: height.into(),
            expected,
            found: pixels.len(),
        });
    }
    for (k, v) in text {
        check_keyword(k)?;
        if v.chars().any(|c| c == '\0' || c as u32 > 0xFF) {
            return Err(MaskError::Text {
                keyword: k.to_string(),
            });
        }
    }
    let enc_err = |e: png::EncodingError| MaskError::Encode(e.to_string());
    let mut bytes = Vec::with_capacity(pixels.len() / 2 + 128);
    let mut enc = png::Encoder::new(&mut bytes, width, height);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in text {
        enc.add_text_chunk(k.to_string(), v.to_string())
            .map_err(enc_err)?;
    }
    let mut writer = enc.write_header().map_err(enc_err)?;
    writer.write_image_data(pixels).map_err(enc_err)?;
    writer.finish().map_err(enc_err)?;
    Ok(bytes)
}

/// Decoded mask: pixels (row-major), width, height, and the text chunks (tEXt, zTXt, iTXt,
/// in file order per kind) as (keyword, text).
pub type DecodedPng = (Vec<u8>, u32, u32, Vec<(String, String)>);

/// Decodes an 8-bit grayscale PNG (what [`encode_png_gray`] writes); other formats are an
/// error rather than a silent conversion.
pub fn decode_png_gray(bytes: &[u8]) -> Result<DecodedPng, MaskError> {
    let dec_err = |e: png::DecodingError| MaskError::Decode(e.to_string());
    let mut dec = png::Decoder::new(bytes);
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut reader = dec.read_info().map_err(dec_err)?;
    let (color, depth) = reader.output_color_type();
    if color != png::ColorType::Grayscale || depth != png::BitDepth::Eight {
        return Err(MaskError::Format {
            color: format!("{color:?}"),
            depth: depth as u8,
        });
    }
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).map_err(dec_err)?;
    pixels.truncate(frame.buffer_size());
    // Text chunks may also follow the image data.
    reader.finish().map_err(dec_err)?;
    let info = reader.info();
    let mut text: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.compressed_latin1_text {
        text.push((t.keyword.clone(), t.get_text().map_err(dec_err)?));
    }
    for t in &info.utf8_text {
        text.push((t.keyword.clone(), t.get_text().map_err(dec_err)?));
    }
    Ok((pixels, frame.width, frame.height, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sums_to_one_and_is_symmetric() {
        for sigma in [0.5f32, 1.0, 2.5, 4.0] {
            let k = gaussian_kernel1d(sigma);
            let r = (4.0 * sigma + 0.5) as usize;
            assert_eq!(k.len(), 2 * r + 1, "sigma {sigma}");
            let sum: f32 = k.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6, "sigma {sigma}: sum {sum}");
            for i in 0..k.len() {
                assert_eq!(k[i], k[k.len() - 1 - i]);
            }
            assert!(
                k.windows(2).take(r).all(|p| p[0] < p[1]),
                "rises to the centre"
            );
        }
        // sigma 4 -> radius 16 (33 taps), anomalib's kernel for its default sigma.
        assert_eq!(gaussian_kernel1d(4.0).len(), 33);
        // sigma 1: centre weight 1 / sum_{i=-4..4} exp(-i^2 / 2) = 1 / 2.50662... = 0.398943.
        assert!((gaussian_kernel1d(1.0)[4] - 0.398_943).abs() < 1e-5);
        assert_eq!(gaussian_kernel1d(0.0), vec![1.0]);
        assert_eq!(gaussian_kernel1d(-1.0), vec![1.0]);
        assert_eq!(gaussian_kernel1d(f32::NAN), vec![1.0]);
    }

    #[test]
    fn reflect_index_is_scipy_reflect() {
        // n = 4, samples a b c d: ... d c b a | a b c d | d c b a | a ...
        let got: Vec<usize> = (-5..=9).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(got, [3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0, 1]);
        assert!((-3..3).all(|i| reflect_index(i, 1) == 0));
    }

    #[test]
    fn blur_of_constant_is_constant() {
        let (h, w) = (7, 5); // smaller than the kernel: padding folds several times
        let mut blur = GaussianBlur::new(2.0, h, w);
        let mut map = vec![3.5f32; h * w];
        blur.apply(&mut map);
        assert!(map.iter().all(|&v| (v - 3.5).abs() < 1e-5), "{map:?}");
    }

    #[test]
    fn blur_of_delta_is_outer_product() {
        let (h, w) = (13, 11);
        let mut blur = GaussianBlur::new(1.0, h, w);
        let k = blur.kernel().to_vec();
        let r = k.len() / 2; // 4
        let (cy, cx) = (6, 5);
        let mut map = vec![0f32; h * w];
        map[cy * w + cx] = 1.0;
        blur.apply(&mut map);
        // The delta's mirror images sit at distance > r from every pixel, so the whole map is
        // the outer product (zero outside the kernel's support).
        for y in 0..h {
            for x in 0..w {
                let (dy, dx) = (
                    y as isize - cy as isize + r as isize,
                    x as isize - cx as isize + r as isize,
                );
                let want =
                    if (0..k.len() as isize).contains(&dy) && (0..k.len() as isize).contains(&dx) {
                        k[dy as usize] * k[dx as usize]
                    } else {
                        0.0
                    };
                assert!((map[y * w + x] - want).abs() < 1e-7, "({y},{x})");
            }
        }
    }

    #[test]
    fn blur_edge_uses_reflect_with_edge_repeated() {
        // One row [1, 0, 0, 0, 0], sigma 0.5 -> radius 2, taps k0..k4. At x = 0 the window
        // reads padded positions -2..=2 = samples 1, 0, 0, 1, 2 = [0, 1, 1, 0, 0], so
        // out[0] = k1 + k2. (Torch/ONNX "reflect" would read [0, 0, 1, 0, 0]: only k2.)
        // With one row the vertical pass is the identity (every tap reads row 0, sum 1).
        let mut blur = GaussianBlur::new(0.5, 1, 5);
        let k = blur.kernel().to_vec();
        assert_eq!(k.len(), 5);
        let mut map = vec![1.0, 0.0, 0.0, 0.0, 0.0];
        blur.apply(&mut map);
        assert!((map[0] - (k[1] + k[2])).abs() < 1e-6, "{map:?} {k:?}");
        assert!((map[1] - (k[1] + k[0])).abs() < 1e-6);
        assert!((map[2] - k[0]).abs() < 1e-6);
    }

    #[test]
    fn to_u8_and_binarise() {
        let map = [-1.0, 0.0, 0.5, 1.0, 2.0, f32::NAN];
        let mut out = [0u8; 6];
        to_u8(&map, 0.0, 1.0, &mut out);
        assert_eq!(out, [0, 0, 128, 255, 255, 255]); // 127.5 rounds up
        to_u8(&map, 1.0, 1.0, &mut out);
        assert_eq!(out, [0, 0, 0, 255, 255, 255]);
        let mut b = [false; 6];
        binarise(&map, 0.5, &mut b);
        assert_eq!(b, [false, false, true, true, true, true]);
    }

    #[test]
    fn connected_components_8_connectivity() {
        // 3x4:  X . . X
        //       . X . X
        //       . . . .
        let mask = [
            true, false, false, true, //
            false, true, false, true, //
            false, false, false, false,
        ];
        let mut labels = [9u32; 12];
        assert_eq!(connected_components(&mask, 4, 3, &mut labels).unwrap(), 2);
        assert_eq!(labels, [1, 0, 0, 2, 0, 1, 0, 2, 0, 0, 0, 0]);
        assert!(connected_components(&mask, 4, 2, &mut labels).is_err());
        assert_eq!(connected_components(&[], 0, 0, &mut []).unwrap(), 0);
    }

    #[test]
    fn png_roundtrip_with_text() {
        let pixels: Vec<u8> = (0..6 * 4).map(|i| (i * 10) as u8).collect();
        let png =
            encode_png_gray(&pixels, 6, 4, &[("frame_id", "42"), ("camera", "line-1")]).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (got, w, h, text) = decode_png_gray(&png).unwrap();
        assert_eq!((w, h), (6, 4));
        assert_eq!(got, pixels);
        assert_eq!(
            text,
            vec![
                ("frame_id".to_string(), "42".to_string()),
                ("camera".to_string(), "line-1".to_string())
            ]
        );
    }

    #[test]
    fn png_errors() {
        assert!(matches!(
            encode_png_gray(&[0; 5], 2, 3, &[]),
            Err(MaskError::Size {
                expected: 6,
                found: 5,
                ..
            })
        ));
        assert!(matches!(
            encode_png_gray(&[], 0, 3, &[]),
            Err(MaskError::EmptyImage { .. })
        ));
        assert!(matches!(
            encode_png_gray(&[0], 1, 1, &[("", "x")]),
            Err(MaskError::Keyword { .. })
        ));
        assert!(matches!(
            encode_png_gray(&[0], 1, 1, &[("k", "caf\u{0100}")]),
            Err(MaskError::Text { .. })
        ));
        assert!(matches!(
            decode_png_gray(b"not a png"),
            Err(MaskError::Decode(_))
        ));
        let png = encode_png_gray(&[1, 2, 3, 4], 2, 2, &[]).unwrap();
        assert!(
            decode_png_gray(&png[..png.len() - 20]).is_err(),
            "truncated"
        );

        // An RGB PNG is refused, not converted.
        let mut rgb = Vec::new();
        let mut enc = png::Encoder::new(&mut rgb, 1, 1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[1, 2, 3]).unwrap();
        w.finish().unwrap();
        let e = decode_png_gray(&rgb).unwrap_err();
        assert!(matches!(e, MaskError::Format { depth: 8, .. }), "{e}");
    }
}
