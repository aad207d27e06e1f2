//! MVTec AD style folders:
//!
//! ```text
//! PATH/train/good/*.png                  normal training images
//! PATH/test/<type>/*.png                 test images; type `good` is normal, any other anomalous
//! PATH/ground_truth/<type>/<stem>_mask.png   optional pixel masks of the anomalous test images
//! ```
//! Images may be PNG, JPEG or BMP, grey or colour; all images of a dataset must share a size.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader};
use rayon::prelude::*;

use super::imageops::{mask_from_u8, to_model_input};
use super::{holdout_tenth, DataError, LoadOptions, Sample};

const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp"];

const LAYOUT: &str =
    "expected an MVTec AD layout: PATH/train/good/*.png (normal training images), \
                      PATH/test/<type>/*.png (test images; type `good` is normal), and optionally \
                      PATH/ground_truth/<type>/<name>_mask.png (pixel masks)";

/// An 8-bit image as decoded: 1 (grey) or 3 (RGB) channels, interleaved.
struct Decoded {
    width: u32,
    height: u32,
    channels: usize,
    pixels: Vec<u8>,
}

fn decode(path: &Path) -> Result<Decoded, DataError> {
    let decode_err = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let reader = ImageReader::open(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let img = reader.decode().map_err(|e| decode_err(e.to_string()))?;
    let (width, height) = (img.width(), img.height());
    let grey = matches!(
        img,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
    );
    let (channels, pixels) = if grey {
        (1, img.into_luma8().into_raw())
    } else {
        (3, img.into_rgb8().into_raw())
    };
    Ok(Decoded {
        width,
        height,
        channels,
        pixels,
    })
}

/// Loads one image file as a model input (`size`², `channels` 1 or 3, CHW, [-1, 1]).
pub fn load_image_file(path: &Path, size: usize, channels: usize) -> Result<Vec<f32>, DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::Options(format!(
            "channels must be 1 or 3, got {channels}"
        )));
    }
    let d = decode(path)?;
    Ok(to_model_input(
        &d.pixels,
        d.width as usize,
        d.height as usize,
        d.channels,
        size,
        channels,
    ))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        out.push(e.path());
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

/// Image files directly in `dir`, sorted by name.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(read_dir_sorted(dir)?
        .into_iter()
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        })
        .collect())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct Job {
    path: PathBuf,
    class: String,
    anomalous: bool,
    /// `Some(None)`: all-false mask (good test image of a dataset with masks).
    mask: Option<Option<PathBuf>>,
}

pub(crate) type Splits = (Vec<Sample>, Vec<Sample>, Vec<Sample>);

pub(crate) fn load(root: &Path, opts: &LoadOptions) -> Result<Splits, DataError> {
    if !root.is_dir() {
        return Err(DataError::NotFound {
            what: "dataset folder",
            path: root.to_path_buf(),
            hint: LAYOUT.to_string(),
        });
    }
    let train_dir = root.join("train").join("good");
    if !train_dir.is_dir() {
        return Err(DataError::Layout {
            path: train_dir,
            reason: format!("missing directory; {LAYOUT}"),
        });
    }
    let train_files = list_images(&train_dir)?;
    if train_files.is_empty() {
        return Err(DataError::Layout {
            path: train_dir,
            reason: format!("no images ({}); {LAYOUT}", EXTENSIONS.join(", ")),
        });
    }

    let gt_dir = root.join("ground_truth");
    let has_masks = gt_dir.is_dir();
    let mut jobs: Vec<Job> = train_files
        .into_iter()
        .map(|path| Job {
            path,
            class: "good".into(),
            anomalous: false,
            mask: None,
        })
        .collect();
    let n_train = jobs.len();

    let test_dir = root.join("test");
    if test_dir.is_dir() {
        for type_dir in read_dir_sorted(&test_dir)?
            .into_iter()
            .filter(|p| p.is_dir())
        {
            let class = file_name(&type_dir);
            let anomalous = class != "good";
            for path in list_images(&type_dir)? {
                let mask = if !has_masks {
                    None
                } else if !anomalous {
                    Some(None)
                } else {
                    let stem = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let m = gt_dir.join(&class).join(format!("{stem}_mask.png"));
                    if !m.is_file() {
                        return Err(DataError::NotFound {
                            what: "mask",
                            path: m,
                            hint: format!(
                                "{} has a ground_truth directory, so every anomalous test image \
                                 needs ground_truth/<type>/<name>_mask.png (missing for {})",
                                root.display(),
                                path.display()
                            ),
                        });
                    }
                    Some(Some(m))
                };
                jobs.push(Job {
                    path,
                    class: class.clone(),
                    anomalous,
                    mask,
                });
            }
        }
    }

    let first = decode(&jobs[0].path)?;
    let (w0, h0) = (first.width, first.height);
    let first_path = jobs[0].path.clone();
    let size = opts.image_size;
    let results: Vec<Result<Sample, DataError>> = jobs
        .par_iter()
        .map(|job| {
            let img = decode(&job.path)?;
            if (img.width, img.height) != (w0, h0) {
                return Err(DataError::ImageSize {
                    path: job.path.clone(),
                    found_w: img.width,
                    found_h: img.height,
                    first: first_path.clone(),
                    expected_w: w0,
                    expected_h: h0,
                });
            }
            let mask = match &job.mask {
                None => None,
                Some(None) => Some(vec![false; size * size]),
                Some(Some(mp)) => {
                    let m = decode(mp)?;
                    if (m.width, m.height) != (img.width, img.height) {
                        return Err(DataError::MaskSize {
                            mask: mp.clone(),
                            mask_w: m.width,
                            mask_h: m.height,
                            image: job.path.clone(),
                            image_w: img.width,
                            image_h: img.height,
                        });
                    }
                    let grey: Vec<u8> = if m.channels == 1 {
                        m.pixels
                    } else {
                        m.pixels
                            .chunks_exact(3)
                            .map(|p| p[0].max(p[1]).max(p[2]))
                            .collect()
                    };
                    Some(mask_from_u8(
                        &grey,
                        m.width as usize,
                        m.height as usize,
                        size,
                    ))
                }
            };
            Ok(Sample {
                image: to_model_input(
                    &img.pixels,
                    img.width as usize,
                    img.height as usize,
                    img.channels,
                    size,
                    opts.channels,
                ),
                anomalous: job.anomalous,
                mask,
                name: file_name(&job.path),
                class: job.class.clone(),
            })
        })
        .collect();
    // Report the first failure in file order, whatever order the threads finished in.
    let mut samples = Vec::with_capacity(results.len());
    for r in results {
        samples.push(r?);
    }
    let test = samples.split_off(n_train);
    let (train, val) = holdout_tenth(samples, opts.seed);
    Ok((train, val, test))
}
