//! A minimal BMP decoder (the `image` crate is built without its BMP codec): uncompressed
//! 8-bit palette, 24-bit and 32-bit (BI_RGB or BI_BITFIELDS with the usual masks) images,
//! bottom-up or top-down. Returns RGB8.

/// Decodes `bytes` to (width, height, RGB8 pixels).
pub(crate) fn decode(bytes: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let u16_at = |o: usize| -> Result<u16, String> {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated BMP header".to_string())
    };
    let u32_at = |o: usize| -> Result<u32, String> {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "truncated BMP header".to_string())
    };
    if !bytes.starts_with(b"BM") {
        return Err("not a BMP file (missing `BM` signature)".into());
    }
    let data_off = u32_at(10)? as usize;
    let dib = u32_at(14)? as usize;
    if dib < 40 {
        return Err(format!(
            "unsupported BMP header size {dib} (OS/2 bitmaps are not supported)"
        ));
    }
    let width = u32_at(18)? as i32;
    let height = u32_at(22)? as i32;
    let bpp = u16_at(28)?;
    let compression = u32_at(30)?;
    let colours_used = u32_at(46)? as usize;
    if width <= 0 || height == 0 || width > 1 << 16 || height.unsigned_abs() > 1 << 16 {
        return Err(format!("unsupported BMP dimensions {width}x{height}"));
    }
    let top_down = height < 0;
    let (w, h) = (width as usize, height.unsigned_abs() as usize);
    match (bpp, compression) {
        (8, 0) | (24, 0) | (32, 0) | (32, 3) => {}
        _ => {
            return Err(format!(
                "unsupported BMP format: {bpp} bits per pixel, compression {compression} \
                 (only uncompressed 8/24/32-bit is supported)"
            ))
        }
    }
    let palette: Vec<[u8; 3]> = if bpp == 8 {
        let n = if colours_used == 0 {
            256
        } else {
            colours_used.min(256)
        };
        let start = 14 + dib;
        let pal = bytes
            .get(start..start + 4 * n)
            .ok_or_else(|| "truncated BMP palette".to_string())?;
        pal.chunks_exact(4).map(|c| [c[2], c[1], c[0]]).collect()
    } else {
        Vec::new()
    };
    let bytes_pp = bpp as usize / 8;
    let stride = (w * bytes_pp).div_ceil(4) * 4;
    let need = data_off + stride * (h - 1) + w * bytes_pp;
    if bytes.len() < need {
        return Err(format!(
            "truncated BMP pixel data: need {need} bytes, file has {}",
            bytes.len()
        ));
    }
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        let src_row = if top_down { y } else { h - 1 - y };
        let row = &bytes[data_off + src_row * stride..];
        for x in 0..w {
            let rgb = match bpp {
                8 => *palette
                    .get(row[x] as usize)
                    .ok_or_else(|| format!("palette index {} out of range", row[x]))?,
                _ => {
                    let p = &row[x * bytes_pp..];
                    [p[2], p[1], p[0]]
                }
            };
            out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&rgb);
        }
    }
    Ok((w as u32, h as u32, out))
}

/// Test helper: an encoder for the decoder's most common input.
#[cfg(test)]
pub(crate) mod tests_support {
    /// A 24-bit bottom-up BMP, as most tools write it.
    pub(crate) fn encode24(w: usize, h: usize, rgb: &[u8]) -> Vec<u8> {
        let stride = (w * 3).div_ceil(4) * 4;
        let size = 54 + stride * h;
        let mut b = Vec::with_capacity(size);
        b.extend_from_slice(b"BM");
        b.extend_from_slice(&(size as u32).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&54u32.to_le_bytes());
        b.extend_from_slice(&40u32.to_le_bytes());
        b.extend_from_slice(&(w as i32).to_le_bytes());
        b.extend_from_slice(&(h as i32).to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&24u16.to_le_bytes());
        b.extend_from_slice(&[0; 24]);
        for y in (0..h).rev() {
            for x in 0..w {
                let p = &rgb[(y * w + x) * 3..];
                b.extend_from_slice(&[p[2], p[1], p[0]]);
            }
            b.extend(std::iter::repeat_n(0, stride - w * 3));
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::encode24;
    use super::*;

    #[test]
    fn round_trips_24_bit() {
        let (w, h) = (5, 3);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7) as u8).collect();
        let (dw, dh, px) = decode(&encode24(w, h, &rgb)).unwrap();
        assert_eq!((dw, dh), (5, 3));
        assert_eq!(px, rgb);
        let mut cut = encode24(w, h, &rgb);
        cut.truncate(60);
        assert!(decode(&cut).unwrap_err().contains("truncated"));
        assert!(decode(b"PNG").is_err());
    }
}
