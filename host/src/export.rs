//! `vigil export`: the bundle's scorer as ONNX (`model.onnx`, and `model.int8.onnx` with
//! `--quantize int8`), recorded in the manifest with sha256 and precision.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use vigil_models::export;
use vigil_models::DetectorKind;
use vigil_shared::manifest::{sha256_file, FileEntry, Manifest};

use crate::bundle;

pub const F32_FILE: &str = "model.onnx";
pub const INT8_FILE: &str = "model.int8.onnx";

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Also write the int8 graph, calibrated on this many normal training images.
    pub int8_calibration: Option<usize>,
    /// Fashion-MNIST directory for calibration data (see `vigil train --data-root`).
    pub data_root: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub files: Vec<(PathBuf, String)>,
}

/// Writes `bytes` to `dir/name` through a temporary file, so a reader never sees half a model.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn record(dir: &Path, manifest: &mut Manifest, name: &str, precision: &str) -> Result<String> {
    let path = dir.join(name);
    let sha256 = sha256_file(&path).with_context(|| format!("reading {}", path.display()))?;
    manifest.upsert_file(FileEntry {
        name: name.into(),
        sha256: sha256.clone(),
        precision: precision.into(),
    });
    Ok(sha256)
}

pub fn export(dir: &Path, opts: &ExportOptions) -> Result<ExportSummary> {
    // Refuse detectors without a feed-forward scorer before building anything.
    let manifest = Manifest::load(dir)?;
    let kind: DetectorKind = manifest
        .detector
        .parse()
        .with_context(|| format!("{}: field detector", dir.join("manifest.json").display()))?;
    export::check_exportable(kind).with_context(|| format!("cannot export {}", dir.display()))?;

    let model = bundle::load(dir, &Device::Cpu)?;
    let mut manifest = model.manifest.clone();
    let score = manifest.score.name.clone();
    let f32_model = export::scorer_model(model.detector.as_ref(), &score)
        .with_context(|| format!("exporting {}", dir.display()))?;
    let mut files = Vec::new();
    let path = write_atomic(dir, F32_FILE, &export::encode(&f32_model))?;
    let sha = record(dir, &mut manifest, F32_FILE, "f32")?;
    files.push((path, sha));

    if let Some(n) = opts.int8_calibration {
        if n == 0 {
            bail!("--calibration 0: int8 calibration needs at least one image");
        }
        let images = calibration_images(&manifest, dir, n, opts.data_root.clone())?;
        let q = export::quant::quantize(&f32_model, &images, &crate::patch::graph_chw(&manifest))
            .with_context(|| format!("quantising {}", dir.join(F32_FILE).display()))?;
        let path = write_atomic(dir, INT8_FILE, &export::encode(&q))?;
        let sha = record(dir, &mut manifest, INT8_FILE, "int8")?;
        files.push((path, sha));
    }
    manifest.save(dir)?;
    Ok(ExportSummary { files })
}

/// The first `n` normal training images of the data the model was trained on, flattened CHW.
fn calibration_images(
    manifest: &Manifest,
    dir: &Path,
    n: usize,
    data_root: Option<PathBuf>,
) -> Result<Vec<f32>> {
    let spec: crate::data::DataSpec = manifest.training.data.parse().with_context(|| {
        format!(
            "{}: field training.data",
            dir.join("manifest.json").display()
        )
    })?;
    let opts = crate::data::LoadOptions {
        image_size: manifest.input.height,
        channels: manifest.input.channels,
        data_root,
        seed: manifest.training.seed,
    };
    let normal = crate::data::load_normal_images(&spec, &opts)
        .with_context(|| format!("loading calibration images from {spec}"))?;
    if normal.is_empty() {
        bail!("{spec}: no normal training images to calibrate on");
    }
    // In patch mode the graph takes tiles: calibrate on the tiles of the first `n` images.
    let take = normal.len().min(n);
    crate::patch::calibration_inputs(manifest, &normal[..take])
}
