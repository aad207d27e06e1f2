//! IDX files (the MNIST / Fashion-MNIST container), plain or gzip-compressed.
//!
//! Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
//! each dimension as a big-endian u32, then the data in row-major order.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::DataError;

/// An unsigned-byte IDX array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Idx {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads an IDX file; gzip is detected by its magic bytes, not by the file name.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| err(path, format!("gzip stream is corrupt or truncated ({e})")))?;
        out
    } else {
        raw
    };
    parse_idx(path, bytes)
}

/// Parses IDX bytes; `path` only names the file in errors.
pub fn parse_idx(path: &Path, mut bytes: Vec<u8>) -> Result<IdxArray, DataError> {
    if bytes.len() < 4 {
        return Err(err(
            path,
            format!("truncated: {} bytes, too short for the header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(
            path,
            format!(
                "bad magic number {:02x}{:02x}{:02x}{:02x} (expected 0000TTNN)",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(err(
            path,
            format!(
                "element type 0x{:02x} is not supported (only 0x08, unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(err(path, "zero dimensions"));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(err(
            path,
            format!(
                "truncated: header of {ndims} dimensions needs {header} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| err(path, format!("dimensions {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have < count {
        return Err(err(
            path,
            format!("truncated: dimensions {dims:?} need {count} data bytes, found {have}"),
        ));
    }
    if have > count {
        return Err(err(
            path,
            format!(
                "{} unexpected trailing bytes after {count} data bytes (dimensions {dims:?})",
                have - count
            ),
        ));
    }
    bytes.drain(..header);
    Ok(IdxArray { dims, data: bytes })
}

/// Images (`N×rows×cols`) and labels (`N`) read from a pair of IDX files.
#[derive(Clone, Debug)]
pub struct LabelledImages {
    pub rows: usize,
    pub cols: usize,
    /// `N * rows * cols` bytes.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl LabelledImages {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Reads and cross-checks an image file and its label file; labels must be < `classes`.
pub fn read_labelled(
    images: &Path,
    labels: &Path,
    classes: u8,
) -> Result<LabelledImages, DataError> {
    let (img, lab) = rayon::join(|| read_idx(images), || read_idx(labels));
    let (img, lab) = (img?, lab?);
    if img.dims.len() != 3 {
        return Err(err(
            images,
            format!(
                "expected 3 dimensions (N, rows, cols), found {:?}",
                img.dims
            ),
        ));
    }
    if lab.dims.len() != 1 {
        return Err(err(
            labels,
            format!("expected 1 dimension (N), found {:?}", lab.dims),
        ));
    }
    if img.dims[0] != lab.dims[0] {
        return Err(err(
            labels,
            format!(
                "{} labels but {} has {} images",
                lab.dims[0],
                images.display(),
                img.dims[0]
            ),
        ));
    }
    if img.dims[1] == 0 || img.dims[2] == 0 {
        return Err(err(images, format!("empty images {:?}", img.dims)));
    }
    if let Some(i) = lab.data.iter().position(|&l| l >= classes) {
        return Err(err(
            labels,
            format!("label {} at index {i} is not below {classes}", lab.data[i]),
        ));
    }
    Ok(LabelledImages {
        rows: img.dims[1],
        cols: img.dims[2],
        pixels: img.data,
        labels: lab.data,
    })
}

/// `dir/name` if present, else `dir/name` without its `.gz` suffix (a decompressed copy).
pub(crate) fn find_idx(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        return Some(p);
    }
    let plain = dir.join(name.strip_suffix(".gz")?);
    plain.is_file().then_some(plain)
}
