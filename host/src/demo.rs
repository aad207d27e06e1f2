//! `vigil demo`: the whole product in a couple of minutes on a laptop CPU.
//!
//! 1. synthesises a production line of brushed-metal parts, a few of them defective
//!    ([`crate::data::write_line`]), with the ground truth in `labels.csv`;
//! 2. trains a small GANomaly on good parts only ([`train_line_model`]) and exports it to ONNX;
//! 3. runs the real `vigild` binary on a folder replay of the line with its embedded MQTT broker;
//! 4. subscribes like a dashboard would, shows every verdict as it arrives, stops vigild with
//!    SIGTERM (its retained status turns `stopped`) and scores the verdicts against the labels.
//!
//! Steps 3 and 4 (the daemon, the dashboard and the loop between them) are in `replay`.
//!
//! The pieces other programs need (writing a line, training the line model, tallying verdicts
//! against labels) are public here so the end-to-end tests run exactly what the demo runs.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use vigil_models::DetectorKind;
use vigil_shared::manifest::Decoder;
use vigil_shared::metrics::quantile;
use vigil_shared::synth::SurfaceKind;

use crate::data::{self, DataSpec, LinePart, LoadOptions};
use crate::{bundle, export, train};

mod replay;

pub use replay::Live;

/// How the line's model is trained: small enough for a couple of minutes on two cores.
#[derive(Clone, Debug)]
pub struct ModelRecipe {
    pub kind: SurfaceKind,
    /// Side of the model input and of the line's frames.
    pub size: usize,
    pub epochs: usize,
    pub seed: u64,
}

impl Default for ModelRecipe {
    fn default() -> Self {
        // 32² GANomaly on metal: image AUROC ≈ 0.998 after 4 epochs (~1 min on 2 cores);
        // 64² costs four times as long for no visible gain on these parts.
        Self {
            kind: SurfaceKind::BrushedMetal,
            size: 32,
            epochs: 4,
            seed: 0,
        }
    }
}

/// Trains GANomaly on the good parts of `synthetic:KIND` into the bundle `dir` and exports
/// `model.onnx`. Returns the training summary.
pub fn train_line_model(
    dir: &Path,
    recipe: &ModelRecipe,
    progress: bool,
) -> Result<train::TrainSummary> {
    let spec = DataSpec::Synthetic { kind: recipe.kind };
    let opts = LoadOptions {
        image_size: recipe.size,
        channels: 1,
        data_root: None,
        seed: recipe.seed,
    };
    let dataset = data::load(&spec, &opts)?;
    let summary = train::train(
        &dataset,
        &train::TrainOptions {
            detector: DetectorKind::Ganomaly,
            out: dir.to_path_buf(),
            epochs: recipe.epochs,
            // Smaller batches: more optimiser steps per epoch, which is what a short run needs.
            batch: 32,
            latent: 100,
            decoder: Decoder::default(),
            seed: recipe.seed,
            resume: false,
            score: None,
            sigma: bundle::default_sigma(recipe.size),
            threshold_quantile: 0.99,
            device: Device::Cpu,
            progress,
            patch: None,
        },
    )?;
    export::export(
        dir,
        &export::ExportOptions {
            int8_calibration: None,
            data_root: None,
        },
    )?;
    Ok(summary)
}

/// Verdicts against ground truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub true_negatives: usize,
}

impl Tally {
    pub fn add(&mut self, flagged: bool, defective: bool) {
        match (flagged, defective) {
            (true, true) => self.true_positives += 1,
            (true, false) => self.false_positives += 1,
            (false, true) => self.false_negatives += 1,
            (false, false) => self.true_negatives += 1,
        }
    }
    pub fn total(&self) -> usize {
        self.true_positives + self.false_positives + self.false_negatives + self.true_negatives
    }
    pub fn flagged(&self) -> usize {
        self.true_positives + self.false_positives
    }
    pub fn defective(&self) -> usize {
        self.true_positives + self.false_negatives
    }
    /// Share of defective parts flagged (0 when there were none).
    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.defective())
    }
    /// Share of good parts flagged (0 when there were none).
    pub fn false_positive_rate(&self) -> f64 {
        ratio(
            self.false_positives,
            self.false_positives + self.true_negatives,
        )
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub out: PathBuf,
    pub frames: usize,
    pub fps: f64,
    pub defect_rate: f32,
    pub recipe: ModelRecipe,
    /// Embedded broker port; `None` picks a free one.
    pub port: Option<u16>,
    /// Reuse `OUT/model` when it holds an exported model of the same recipe.
    pub reuse_model: bool,
    /// The `vigild` binary; `None` looks next to this executable.
    pub vigild: Option<PathBuf>,
}

/// What the demo measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DemoSummary {
    pub frames: usize,
    pub flagged: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub missed: usize,
    pub recall: f64,
    pub false_positive_rate: f64,
    pub latency_total_ms: [f64; 2],
    pub latency_infer_ms: [f64; 2],
    pub fps: f64,
    pub final_status: Option<String>,
    /// Seconds per step: line, train, replay, total.
    pub seconds: BTreeMap<&'static str, f64>,
}

const DEVICE_ID: &str = "demo";
const CAMERA: &str = "line";

pub fn run(opts: &DemoOptions) -> Result<DemoSummary> {
    let term = std::io::stderr().is_terminal();
    if opts.frames == 0 {
        bail!("--frames 0: the line needs at least one part");
    }
    if !(opts.fps > 0.0 && opts.fps <= 1000.0) {
        bail!("--fps {}: expected a rate between 0 and 1000", opts.fps);
    }
    let vigild = find_vigild(opts.vigild.as_deref())?;
    // The demo's own time, from here: building vigild on a first run is not part of it.
    let started = Instant::now();
    let mut seconds = BTreeMap::new();
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;

    let t = Instant::now();
    let line_dir = opts.out.join("line");
    let parts = make_line(opts, &line_dir)?;
    seconds.insert("line", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let model_dir = opts.out.join("model");
    make_model(opts, &model_dir, term)?;
    seconds.insert("train", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let port = match opts.port {
        Some(p) => p,
        None => free_port()?,
    };
    step(&format!(
        "3/3 vigild: folder replay at {} fps, embedded broker mqtt://127.0.0.1:{port} \
         (watch it: mosquitto_sub -p {port} -v -t 'vigil/#'); log {}",
        opts.fps,
        opts.out.join("vigild.log").display()
    ));
    let live = replay::replay(opts, &vigild, &model_dir, &line_dir, port, &parts, term)?;
    seconds.insert("replay", t.elapsed().as_secs_f64());
    seconds.insert("total", started.elapsed().as_secs_f64());

    let summary = summarise(&live, &parts, seconds);
    print_summary(&summary, &live, &parts);
    let path = opts.out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(summary)
}

/// Step 1: the line, written fresh into `line_dir`.
fn make_line(opts: &DemoOptions, line_dir: &Path) -> Result<Vec<LinePart>> {
    clear_line(line_dir)?;
    let parts = data::write_line(
        line_dir,
        opts.recipe.kind,
        opts.frames,
        opts.recipe.size,
        1,
        opts.defect_rate,
        opts.recipe.seed ^ 0xDE30,
    )?;
    let n_def = parts.iter().filter(|p| p.defect.is_some()).count();
    step(&format!(
        "1/3 line: {} {}² {} parts, {n_def} defective, in {} (ground truth: {})",
        opts.frames,
        opts.recipe.size,
        opts.recipe.kind,
        line_dir.display(),
        data::LINE_LABELS
    ));
    Ok(parts)
}

/// Step 2: the model, trained and exported into `model_dir` (or reused with `--reuse-model`).
fn make_model(opts: &DemoOptions, model_dir: &Path, term: bool) -> Result<()> {
    if opts.reuse_model && model_matches(model_dir, &opts.recipe) {
        step(&format!(
            "2/3 model: reusing {} (--reuse-model)",
            model_dir.display()
        ));
        return Ok(());
    }
    step(&format!(
        "2/3 model: training GANomaly {}² on good {} parts for {} epochs (CPU)…",
        opts.recipe.size, opts.recipe.kind, opts.recipe.epochs
    ));
    let t = Instant::now();
    let s = train_line_model(model_dir, &opts.recipe, term)?;
    step(&format!(
        "    trained in {:.0} s ({:.0} img/s), threshold {:.5}; exported {}",
        t.elapsed().as_secs_f64(),
        s.images_per_s,
        s.threshold,
        model_dir.join(export::F32_FILE).display()
    ));
    Ok(())
}

fn step(msg: &str) {
    eprintln!("{msg}");
}

/// Removes a line an earlier demo wrote (recognised by its labels file) so a rerun starts clean;
/// anything else in the way is left alone and reported by [`data::write_line`].
fn clear_line(dir: &Path) -> Result<()> {
    if dir.join(data::LINE_LABELS).is_file() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

fn model_matches(dir: &Path, r: &ModelRecipe) -> bool {
    let Ok(m) = vigil_shared::manifest::Manifest::load(dir) else {
        return false;
    };
    m.input.height == r.size
        && m.training.epochs == r.epochs
        && m.training.seed == r.seed
        && m.training.data == DataSpec::Synthetic { kind: r.kind }.to_string()
        && m.files.iter().any(|f| f.name == export::F32_FILE)
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// `vigild` next to this executable (cargo puts both in `target/<profile>/`). Under `cargo run`
/// (which sets `$CARGO`) a missing one is built first, so the README's one command works on a
/// fresh checkout.
fn find_vigild(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("--vigild {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating the vigil executable")?;
    let path = exe.with_file_name(format!("vigild{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        return Ok(path);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        bail!(
            "{} is missing: build it with `cargo build --release -p vigil-appliance` \
             (or pass --vigild PATH)",
            path.display()
        );
    };
    let release = exe
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release");
    // The V4L2 bindings are generated at build time with libclang; without it the build fails
    // after minutes with a bindgen panic. The demo replays a folder and needs no camera, so
    // look first and build once, without camera support if need be.
    let camera = libclang_found();
    if camera {
        step("building vigild (cargo build -p vigil-appliance), once; minutes on a small machine…");
    } else {
        step(
            "building vigild without V4L2 camera support: camera support needs libclang at build \
             time (sudo apt-get install libclang-dev); the demo needs no camera…",
        );
    }
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "vigil-appliance", "--bin", "vigild"]);
    if !camera {
        cmd.arg("--no-default-features");
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo build for vigild")?;
    if !status.success() || !path.is_file() {
        bail!(
            "building vigild failed ({status}); expected {}",
            path.display()
        );
    }
    Ok(path)
}

/// Whether clang-sys (the v4l crate's bindgen) will find a libclang: `LIBCLANG_PATH`, else the
/// directories it searches on Linux (`/usr/lib*`, `/usr/local/lib*`, `/usr/lib/llvm-*/lib`).
fn libclang_found() -> bool {
    let has_lib = |dir: &Path| {
        std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("libclang") && n.contains(".so")
            })
        })
    };
    if let Some(p) = std::env::var_os("LIBCLANG_PATH") {
        let p = PathBuf::from(p);
        return has_lib(&p) || p.is_file();
    }
    let mut dirs: Vec<PathBuf> = [
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/local/lib64",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for root in ["/usr/lib", "/usr/lib64"] {
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("llvm") {
                dirs.push(e.path().join("lib"));
            } else if name.contains("-linux-") {
                dirs.push(e.path());
            }
        }
    }
    dirs.iter().any(|d| has_lib(d))
}

fn percentiles(v: &[f32]) -> [f64; 2] {
    let q = |p| quantile(v, p).map(f64::from).unwrap_or(f64::NAN);
    [q(0.5), q(0.99)]
}

fn summarise(live: &Live, parts: &[LinePart], seconds: BTreeMap<&'static str, f64>) -> DemoSummary {
    let labels: BTreeMap<&str, bool> = parts
        .iter()
        .map(|p| (p.name.as_str(), p.defect.is_some()))
        .collect();
    let mut tally = Tally::default();
    for r in &live.results {
        tally.add(
            r.anomalous,
            labels.get(r.source.as_str()).copied().unwrap_or(false),
        );
    }
    let total: Vec<f32> = live
        .results
        .iter()
        .map(|r| r.latency_ms.total as f32)
        .collect();
    let infer: Vec<f32> = live
        .results
        .iter()
        .map(|r| r.latency_ms.infer as f32)
        .collect();
    DemoSummary {
        frames: tally.total(),
        flagged: tally.flagged(),
        true_positives: tally.true_positives,
        false_positives: tally.false_positives,
        missed: tally.false_negatives,
        recall: tally.recall(),
        false_positive_rate: tally.false_positive_rate(),
        latency_total_ms: percentiles(&total),
        latency_infer_ms: percentiles(&infer),
        fps: live.fps,
        final_status: live
            .final_status
            .as_ref()
            .map(|s| s.state.as_str().to_string()),
        seconds,
    }
}

fn print_summary(s: &DemoSummary, live: &Live, parts: &[LinePart]) {
    let defective = parts.iter().filter(|p| p.defect.is_some()).count();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for p in parts {
        if let Some(d) = p.defect {
            *kinds.entry(d.name()).or_default() += 1;
        }
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!();
    println!("summary");
    println!(
        "  line       {} parts, {defective} defective ({})",
        parts.len(),
        kinds.join(", ")
    );
    println!(
        "  results    {} received, {} flagged: true positives {}, false positives {}, missed {}",
        s.frames, s.flagged, s.true_positives, s.false_positives, s.missed
    );
    println!(
        "  detection  recall {:.1}%, false-positive rate {:.1}%",
        100.0 * s.recall,
        100.0 * s.false_positive_rate
    );
    println!(
        "  latency    total p50 {:.2} ms, p99 {:.2} ms (inference p50 {:.2} ms, p99 {:.2} ms); {:.1} fps",
        s.latency_total_ms[0], s.latency_total_ms[1], s.latency_infer_ms[0], s.latency_infer_ms[1], s.fps
    );
    if let Some(v) = &live.vigild_summary {
        println!(
            "  vigild     {} frames scored, {} deadline misses, {} dropped frames",
            v["frames"], v["deadline_misses"], v["dropped_frames"]
        );
    }
    println!(
        "  status     {} (retained on vigil/{DEVICE_ID}/status)",
        s.final_status.as_deref().unwrap_or("not seen")
    );
    let secs = |k| s.seconds.get(k).copied().unwrap_or(0.0);
    println!(
        "  wall time  {:.0} s: line {:.1} s, train + export {:.0} s, replay {:.0} s",
        secs("total"),
        secs("line"),
        secs("train"),
        secs("replay")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_and_rates() {
        let mut t = Tally::default();
        for (f, d) in [(true, true), (true, true), (false, true), (true, false)] {
            t.add(f, d);
        }
        for _ in 0..6 {
            t.add(false, false);
        }
        assert_eq!(t.total(), 10);
        assert_eq!(t.flagged(), 3);
        assert_eq!(t.defective(), 3);
        assert!((t.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((t.false_positive_rate() - 1.0 / 7.0).abs() < 1e-12);
        assert_eq!(Tally::default().recall(), 0.0);
    }
}
