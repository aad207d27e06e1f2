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

use super::pixels::{mask_from_u8, to_model_input};
use super::{holdout_tenth, DataError, LoadOptions, Sample};

/// Image file extensions read (any case).
pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp"];

const LAYOUT: &str =
    "expected an MVTec AD layout: PATH/train/good/*.png (normal training images), \
                      PATH/test/<type>/*.png (test images; type `good` is normal), and optionally \
                      PATH/ground_truth/<type>/<name>_mask.png (pixel masks)";

/// An 8-bit image as decoded: 1 (grey) or 3 (RGB) channels, interleaved.
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

impl Decoded {
    /// Through `vigil_shared::preprocess`, as vigild would score this picture.
    pub fn to_model_input(
        &self,
        path: &Path,
        size: usize,
        channels: usize,
    ) -> Result<Vec<f32>, DataError> {
        to_model_input(
            &self.pixels,
            self.width as usize,
            self.height as usize,
            self.channels,
            size,
            channels,
        )
        .map_err(|source| DataError::Preprocess {
            what: path.display().to_string(),
            source,
        })
    }
}

/// Decodes an image file as vigild's folder source does (grey stays grey, else RGB).
pub fn decode(path: &Path) -> Result<Decoded, DataError> {
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
    decode(path)?.to_model_input(path, size, channels)
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
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
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

/// Loads `root` in four steps: find the training images, find the test images (and their
/// masks), decode everything at the model size in parallel, and hold out the validation tenth
/// of the training images (`vigil train` calibrates its threshold on that tenth).
pub(crate) fn load(root: &Path, opts: &LoadOptions) -> Result<Splits, DataError> {
    let mut jobs = train_jobs(root)?;
    let n_train = jobs.len();
    jobs.extend(test_jobs(root)?);
    let mut samples = load_samples(&jobs, opts)?;
    let test = samples.split_off(n_train);
    let (train, val) = holdout_tenth(samples, opts.seed);
    Ok((train, val, test))
}

/// `root/train/good/*`: there must be at least one image.
fn train_jobs(root: &Path) -> Result<Vec<Job>, DataError> {
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
    let files = list_images(&train_dir)?;
    if files.is_empty() {
        return Err(DataError::Layout {
            path: train_dir,
            reason: format!("no images ({}); {LAYOUT}", EXTENSIONS.join(", ")),
        });
    }
    Ok(files
        .into_iter()
        .map(|path| Job {
            path,
            class: "good".into(),
            anomalous: false,
            mask: None,
        })
        .collect())
}

/// `root/test/<type>/*` in type and file order, each with its mask when `root/ground_truth`
/// exists (none at all otherwise).
fn test_jobs(root: &Path) -> Result<Vec<Job>, DataError> {
    let test_dir = root.join("test");
    if !test_dir.is_dir() {
        return Ok(Vec::new());
    }
    let gt_dir = root.join("ground_truth");
    let has_masks = gt_dir.is_dir();
    let mut jobs = Vec::new();
    for type_dir in read_dir_sorted(&test_dir)?
        .into_iter()
        .filter(|p| p.is_dir())
    {
        let class = file_name(&type_dir);
        let anomalous = class != "good";
        for path in list_images(&type_dir)? {
            let mask = match (has_masks, anomalous) {
                (false, _) => None,
                (true, false) => Some(None),
                (true, true) => Some(Some(mask_path(root, &gt_dir, &class, &path)?)),
            };
            jobs.push(Job {
                path,
                class: class.clone(),
                anomalous,
                mask,
            });
        }
    }
    Ok(jobs)
}

/// `ground_truth/<class>/<stem>_mask.png` of the anomalous test image `image`, which must exist.
fn mask_path(root: &Path, gt_dir: &Path, class: &str, image: &Path) -> Result<PathBuf, DataError> {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let m = gt_dir.join(class).join(format!("{stem}_mask.png"));
    if m.is_file() {
        return Ok(m);
    }
    Err(DataError::NotFound {
        what: "mask",
        path: m,
        hint: format!(
            "{} has a ground_truth directory, so every anomalous test image needs \
             ground_truth/<type>/<name>_mask.png (missing for {})",
            root.display(),
            image.display()
        ),
    })
}

/// Decodes every job at the model size, in parallel; every image must have the first one's
/// size. The first failure in file order is reported, whatever order the threads finished in.
fn load_samples(jobs: &[Job], opts: &LoadOptions) -> Result<Vec<Sample>, DataError> {
    let first = decode(&jobs[0].path)?;
    let reference = (first.width, first.height, jobs[0].path.as_path());
    let results: Vec<Result<Sample, DataError>> = jobs
        .par_iter()
        .map(|job| load_sample(job, reference, opts))
        .collect();
    results.into_iter().collect()
}

fn load_sample(
    job: &Job,
    (w0, h0, first): (u32, u32, &Path),
    opts: &LoadOptions,
) -> Result<Sample, DataError> {
    let img = decode(&job.path)?;
    if (img.width, img.height) != (w0, h0) {
        return Err(DataError::ImageSize {
            path: job.path.clone(),
            found_w: img.width,
            found_h: img.height,
            first: first.to_path_buf(),
            expected_w: w0,
            expected_h: h0,
        });
    }
    let size = opts.image_size;
    let mask = match &job.mask {
        None => None,
        Some(None) => Some(vec![false; size * size]),
        Some(Some(mp)) => Some(load_mask(mp, &job.path, &img, size)?),
    };
    Ok(Sample {
        image: img.to_model_input(&job.path, size, opts.channels)?,
        anomalous: job.anomalous,
        mask,
        name: file_name(&job.path),
        class: job.class.clone(),
    })
}

/// The mask at `path` of `image` (already decoded as `img`) at `size`²: any channel above 127
/// marks a defective pixel.
fn load_mask(
    path: &Path,
    image: &Path,
    img: &Decoded,
    size: usize,
) -> Result<Vec<bool>, DataError> {
    let m = decode(path)?;
    if (m.width, m.height) != (img.width, img.height) {
        return Err(DataError::MaskSize {
            mask: path.to_path_buf(),
            mask_w: m.width,
            mask_h: m.height,
            image: image.to_path_buf(),
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
    mask_from_u8(&grey, m.width as usize, m.height as usize, size).map_err(|source| {
        DataError::Preprocess {
            what: format!("mask {}", path.display()),
            source,
        }
    })
}
