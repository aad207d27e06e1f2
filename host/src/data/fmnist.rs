//! Fashion-MNIST under the one-class protocol.
//!
//! Train on the training split's images of class C less a validation tenth (normal only, for
//! threshold calibration); test on the whole 10k test split with C normal and the other nine
//! classes anomalous. With contamination P, round(P × n_train) anomalous images drawn from the
//! training split's other classes join `train`, marked anomalous (Berg et al.'s setting).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use vigil_shared::rng::Rng;

use super::idx::{find_idx, read_labelled, LabelledImages};
use super::pixels::to_model_input;
use super::{holdout_tenth, DataError, LoadOptions, Sample};

pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const DEFAULT_ROOT: &str = "/usr/share/datasets/fashion-mnist";

const HINT: &str = "install it with `apt-get install dataset-fashion-mnist`, or point --data-root \
                    / VIGIL_DATA at a directory holding train-images-idx3-ubyte.gz, \
                    train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz";

/// The data root: `opts.data_root`, else `$VIGIL_DATA`, else [`DEFAULT_ROOT`].
pub fn data_root(opts: &LoadOptions) -> PathBuf {
    opts.data_root
        .clone()
        .or_else(|| {
            std::env::var_os("VIGIL_DATA")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

fn file(root: &Path, name: &str) -> Result<PathBuf, DataError> {
    find_idx(root, name).ok_or_else(|| DataError::NotFound {
        what: "Fashion-MNIST file",
        path: root.join(name),
        hint: HINT.to_string(),
    })
}

/// Reads one split (`train` or `t10k`) from `root`.
pub fn read_split(root: &Path, split: &str) -> Result<LabelledImages, DataError> {
    if !root.is_dir() {
        return Err(DataError::NotFound {
            what: "Fashion-MNIST directory",
            path: root.to_path_buf(),
            hint: HINT.to_string(),
        });
    }
    let images = file(root, &format!("{split}-images-idx3-ubyte.gz"))?;
    let labels = file(root, &format!("{split}-labels-idx1-ubyte.gz"))?;
    read_labelled(&images, &labels, 10)
}

fn samples(
    set: &LabelledImages,
    indices: &[usize],
    split: &str,
    normal: u8,
    opts: &LoadOptions,
) -> Result<Vec<Sample>, DataError> {
    indices
        .par_iter()
        .map(|&i| {
            let label = set.labels[i];
            let name = format!("fmnist-{split}-{i:05}");
            let image = to_model_input(
                set.image(i),
                set.cols,
                set.rows,
                1,
                opts.image_size,
                opts.channels,
            )
            .map_err(|source| DataError::Preprocess {
                what: format!("Fashion-MNIST image {name}"),
                source,
            })?;
            Ok(Sample {
                image,
                anomalous: label != normal,
                mask: None,
                name,
                class: CLASS_NAMES[label as usize].to_string(),
            })
        })
        .collect()
}

pub(crate) type Splits = (Vec<Sample>, Vec<Sample>, Vec<Sample>);

pub(crate) fn load(
    normal: u8,
    contamination: f32,
    opts: &LoadOptions,
) -> Result<Splits, DataError> {
    if normal > 9 {
        return Err(DataError::Options(format!(
            "Fashion-MNIST normal class {normal} is not in 0..=9"
        )));
    }
    if !(0.0..0.5).contains(&contamination) {
        return Err(DataError::Options(format!(
            "contamination {contamination} must satisfy 0 <= P < 0.5"
        )));
    }
    let root = data_root(opts);
    let (train_set, test_set) =
        rayon::join(|| read_split(&root, "train"), || read_split(&root, "t10k"));
    let (train_set, test_set) = (train_set?, test_set?);
    if (train_set.rows, train_set.cols) != (test_set.rows, test_set.cols) {
        return Err(DataError::Layout {
            path: root,
            reason: format!(
                "train images are {}x{} but test images are {}x{}",
                train_set.cols, train_set.rows, test_set.cols, test_set.rows
            ),
        });
    }

    let normal_idx: Vec<usize> = (0..train_set.len())
        .filter(|&i| train_set.labels[i] == normal)
        .collect();
    if normal_idx.is_empty() {
        return Err(DataError::Layout {
            path: root,
            reason: format!("the training split has no images of class {normal}"),
        });
    }
    let (mut train_idx, val_idx) = holdout_tenth(normal_idx, opts.seed);

    let n_extra = (contamination as f64 * train_idx.len() as f64).round() as usize;
    if n_extra > 0 {
        let mut others: Vec<usize> = (0..train_set.len())
            .filter(|&i| train_set.labels[i] != normal)
            .collect();
        Rng::new(opts.seed ^ 0xC0_4A_41_4E_u64).shuffle(&mut others);
        let mut drawn = others[..n_extra.min(others.len())].to_vec();
        drawn.sort_unstable();
        train_idx.extend(drawn);
    }

    let all_test: Vec<usize> = (0..test_set.len()).collect();
    let train = samples(&train_set, &train_idx, "train", normal, opts)?;
    let val = samples(&train_set, &val_idx, "train", normal, opts)?;
    let test = samples(&test_set, &all_test, "test", normal, opts)?;
    Ok((train, val, test))
}
