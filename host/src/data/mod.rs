//! Datasets for training and evaluation.
//!
//! Three sources, chosen by a `--data SPEC` string ([`DataSpec`]):
//! - `fashion-mnist:normal=C[,contamination=P]` — the one-class protocol on the IDX files of
//!   Debian's `dataset-fashion-mnist` package ([`fmnist`]);
//! - `folder:PATH` — an MVTec AD style directory ([`folder`]);
//! - `synthetic:KIND` — procedural surfaces from [`vigil_shared::synth`] ([`synthetic`]).
//!
//! Every image comes out at the model size (`image_size`², `channels` 1 or 3) as CHW planar
//! `f32` in [-1, 1], converted, resized and scaled by `vigil_shared::preprocess` (the code
//! vigild runs on every frame, see [`pixels`]); masks come out at the same size.

mod error;
pub mod fmnist;
pub mod folder;
pub mod idx;
pub mod pixels;
mod spec;
pub mod synthetic;

use std::path::PathBuf;

pub use error::DataError;
pub use folder::load_image_file;
pub use pixels::{mask_from_u8, model_spec, to_model_input, MODEL_RANGE};
pub use spec::DataSpec;
pub use synthetic::{write_line, write_synthetic_folder, LinePart, SynthSummary, LINE_LABELS};
pub use vigil_shared::synth::{DefectKind, SurfaceKind};

/// One image at the model size.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// CHW planar, values in [-1, 1].
    pub image: Vec<f32>,
    pub anomalous: bool,
    /// H*W at the model size; `None` where the dataset has no pixel ground truth.
    pub mask: Option<Vec<bool>>,
    /// File name (`000.png`) or a generated name (`fmnist-test-00042`).
    pub name: String,
    /// `good`, the defect type, or the Fashion-MNIST class name.
    pub class: String,
}

/// A loaded dataset: `train` (normal, plus any contamination), `val` (normal only, for threshold
/// calibration) and `test` (normal and anomalous).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub channels: usize,
    pub size: usize,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
    /// Canonical spec string ([`DataSpec`]'s `Display`).
    pub spec: String,
}

impl Dataset {
    /// True when any test sample carries a pixel mask.
    pub fn has_masks(&self) -> bool {
        self.test.iter().any(|s| s.mask.is_some())
    }

    /// (normal, anomalous) counts of a split.
    pub fn counts(split: &[Sample]) -> (usize, usize) {
        let a = split.iter().filter(|s| s.anomalous).count();
        (split.len() - a, a)
    }
}

/// How to load: model input geometry, where data lives, and the seed for splits and draws.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub image_size: usize,
    pub channels: usize,
    /// Fashion-MNIST directory; falls back to `$VIGIL_DATA`, then the Debian package's path.
    pub data_root: Option<PathBuf>,
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            image_size: 32,
            channels: 1,
            data_root: None,
            seed: 0,
        }
    }
}

impl LoadOptions {
    fn validate(&self) -> Result<(), DataError> {
        if self.channels != 1 && self.channels != 3 {
            return Err(DataError::Options(format!(
                "channels must be 1 or 3, got {}",
                self.channels
            )));
        }
        if !(8..=4096).contains(&self.image_size) {
            return Err(DataError::Options(format!(
                "image size must be between 8 and 4096, got {}",
                self.image_size
            )));
        }
        Ok(())
    }
}

/// Loads the dataset `spec` at the geometry in `opts`.
pub fn load(spec: &DataSpec, opts: &LoadOptions) -> Result<Dataset, DataError> {
    opts.validate()?;
    let (train, val, test) = match spec {
        DataSpec::FashionMnist {
            normal,
            contamination,
        } => fmnist::load(*normal, *contamination, opts)?,
        DataSpec::Folder(path) => folder::load(path, opts)?,
        DataSpec::Synthetic { kind } => synthetic::load(*kind, opts)?,
    };
    Ok(Dataset {
        channels: opts.channels,
        size: opts.image_size,
        train,
        val,
        test,
        spec: spec.to_string(),
    })
}

/// Only the normal images of `spec`'s training split (train + val, no contamination), e.g. for
/// int8 calibration or a quick look at what "good" means.
pub fn load_normal_images(spec: &DataSpec, opts: &LoadOptions) -> Result<Vec<Sample>, DataError> {
    let ds = load(spec, opts)?;
    Ok(ds
        .train
        .into_iter()
        .chain(ds.val)
        .filter(|s| !s.anomalous)
        .collect())
}

/// Splits `items` into (train, val) with a deterministic tenth (at least one item when there are
/// two or more) held out; both halves keep their original order.
pub(crate) fn holdout_tenth<T>(items: Vec<T>, seed: u64) -> (Vec<T>, Vec<T>) {
    let n = items.len();
    let n_val = if n >= 2 { (n / 10).max(1) } else { 0 };
    let mut order: Vec<usize> = (0..n).collect();
    vigil_shared::rng::Rng::new(seed ^ 0x7A11_DA7A_05E7_u64).shuffle(&mut order);
    let mut is_val = vec![false; n];
    for &i in &order[..n_val] {
        is_val[i] = true;
    }
    let (mut train, mut val) = (Vec::with_capacity(n - n_val), Vec::with_capacity(n_val));
    for (item, v) in items.into_iter().zip(is_val) {
        if v {
            val.push(item);
        } else {
            train.push(item);
        }
    }
    (train, val)
}

#[cfg(test)]
mod tests;
