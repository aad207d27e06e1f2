//! Model bundles on disk: `manifest.json` + `weights.safetensors` (+ ONNX files once exported),
//! and the training checkpoint kept beside them (`checkpoint/`) for `vigil train --resume`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use vigil_models::{build, Detector, DetectorKind, ModelConfig};
use vigil_shared::manifest::{sha256_file, FileEntry, Manifest};

pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const CHECKPOINT_DIR: &str = "checkpoint";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";

/// Base channel width of the DCGAN pyramids (the papers' 64).
pub const WIDTH: usize = 64;

/// Default anomaly-map smoothing: anomalib's σ = 4 at 256², scaled with the image, at least 1.
pub fn default_sigma(size: usize) -> f32 {
    (size as f32 / 64.0).max(1.0)
}

/// Training progress, saved each epoch so `--resume` can continue exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub detector: String,
    pub epochs_done: usize,
    pub optimizer_steps: Vec<u64>,
    /// Per-step losses, by name, across all epochs so far (for the loss curve).
    pub losses: Vec<(String, Vec<f32>)>,
}

/// Write the weights and the manifest (with the sha256 of the weights) into `dir`.
pub fn save_weights(detector: &dyn Detector, dir: &Path, manifest: &mut Manifest) -> Result<()> {
    let path = dir.join(WEIGHTS_FILE);
    let tmp = dir.join(format!(".{WEIGHTS_FILE}.tmp"));
    detector
        .varmap()
        .save(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    let sha256 = sha256_file(&path).with_context(|| format!("reading {}", path.display()))?;
    manifest.upsert_file(FileEntry {
        name: WEIGHTS_FILE.into(),
        sha256,
        precision: "f32".into(),
    });
    manifest.save(dir)?;
    Ok(())
}

pub fn save_checkpoint(detector: &dyn Detector, dir: &Path, state: &TrainState) -> Result<()> {
    let ck = dir.join(CHECKPOINT_DIR);
    std::fs::create_dir_all(&ck).with_context(|| format!("creating {}", ck.display()))?;
    let (tensors, steps) = detector.optimizer_state()?;
    let state = TrainState {
        optimizer_steps: steps,
        ..state.clone()
    };
    let opt = ck.join(OPTIMIZER_FILE);
    candle_core::safetensors::save(&tensors, &opt)
        .with_context(|| format!("writing {}", opt.display()))?;
    let json = serde_json::to_string(&state)?;
    let path = ck.join(STATE_FILE);
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Architecture of a bundle, from its manifest.
pub fn model_config(manifest: &Manifest) -> ModelConfig {
    ModelConfig {
        // In patch mode the network takes the tile, not the whole input.
        size: manifest.patch.map_or(manifest.input.height, |p| p.size),
        channels: manifest.input.channels,
        latent: manifest.training.latent,
        width: WIDTH,
        sigma: manifest
            .score
            .params
            .get("sigma")
            .map(|s| *s as f32)
            .unwrap_or_else(|| default_sigma(manifest.input.height)),
        seed: manifest.training.seed,
        decoder: manifest.training.decoder,
    }
}

pub struct LoadedModel {
    pub manifest: Manifest,
    pub detector: Box<dyn Detector>,
    pub dir: PathBuf,
}

/// Load a bundle for scoring: manifest validated, weights checked against their sha256 and
/// loaded by name and shape. Every failure names the file.
pub fn load(dir: &Path, device: &Device) -> Result<LoadedModel> {
    let manifest = Manifest::load(dir)?;
    if manifest.input.height != manifest.input.width {
        bail!(
            "{}: input is {}×{}; only square inputs are supported",
            dir.join("manifest.json").display(),
            manifest.input.height,
            manifest.input.width
        );
    }
    let kind: DetectorKind = manifest
        .detector
        .parse()
        .with_context(|| format!("{}: field detector", dir.join("manifest.json").display()))?;
    let weights = manifest.verify_file(dir, WEIGHTS_FILE)?;
    let mut detector = build(kind, model_config(&manifest), device).with_context(|| {
        format!(
            "{}: building the {kind} network",
            dir.join("manifest.json").display()
        )
    })?;
    load_weights(detector.as_mut(), &weights)?;
    Ok(LoadedModel {
        manifest,
        detector,
        dir: dir.to_path_buf(),
    })
}

/// Load weights by name, checking every tensor's presence and shape, so a bundle from another
/// architecture or a damaged file is reported instead of half-loaded.
pub fn load_weights(detector: &mut dyn Detector, path: &Path) -> Result<()> {
    let device = {
        let data = detector
            .varmap()
            .data()
            .lock()
            .expect("varmap lock poisoned");
        data.values()
            .next()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu)
    };
    let tensors = candle_core::safetensors::load(path, &device)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display()))?;
    set_vars(detector, &tensors, path)
}

fn set_vars(
    detector: &mut dyn Detector,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    let data = detector
        .varmap()
        .data()
        .lock()
        .expect("varmap lock poisoned");
    for (name, var) in data.iter() {
        let Some(t) = tensors.get(name) else {
            bail!(
                "{}: tensor {name} is missing (the file belongs to another model)",
                path.display()
            )
        };
        if t.shape() != var.shape() {
            bail!(
                "{}: tensor {name} has shape {:?}, the model expects {:?}",
                path.display(),
                t.dims(),
                var.dims()
            )
        }
        var.set(t)?;
    }
    Ok(())
}

/// Restore a training run from `dir` (weights, optimiser moments, progress).
pub fn load_checkpoint(detector: &mut dyn Detector, dir: &Path) -> Result<TrainState> {
    let ck = dir.join(CHECKPOINT_DIR);
    let state_path = ck.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).with_context(|| {
        format!(
            "--resume: no checkpoint at {} (train without --resume first)",
            state_path.display()
        )
    })?;
    let state: TrainState = serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupt checkpoint", state_path.display()))?;
    if state.detector != detector.kind().name() {
        bail!(
            "--resume: {} holds a {} run, not {}",
            dir.display(),
            state.detector,
            detector.kind().name()
        );
    }
    let manifest = Manifest::load(dir)?;
    let weights = manifest.verify_file(dir, WEIGHTS_FILE)?;
    load_weights(detector, &weights)?;
    let device = Device::Cpu;
    let opt = ck.join(OPTIMIZER_FILE);
    let tensors = candle_core::safetensors::load(&opt, &device)
        .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file ({e})", opt.display()))?;
    detector
        .load_optimizer_state(&(tensors, state.optimizer_steps.clone()))
        .with_context(|| format!("{}", opt.display()))?;
    Ok(state)
}

/// The commit the binary is run from, when inside a git checkout (training provenance).
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}
