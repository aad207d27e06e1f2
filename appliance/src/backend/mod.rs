//! Scoring engines. Every backend takes a batch of preprocessed frames in the bundle's input
//! layout (`[N, C, H, W]` f32 in the manifest's range) and fills one score and one anomaly map
//! (`[N, 1, H, W]`) per frame, into buffers the caller owns.
//!
//! Two engines run the same exported graph: tract (always built, pure Rust) and onnxruntime
//! (cargo feature `ort`, loaded at run time, with GPU/NPU execution providers). [`open`] loads
//! the one the configuration names, or with `auto` both, and keeps the faster on this box.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;
use vigil_shared::manifest::{InputSpec, Manifest};

mod bundle;
#[cfg(feature = "ort")]
pub mod ort;
mod patch;
pub mod tract;

use tract::{Precision, TractBackend, TractOptions};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Load(String),
    #[error("{0}")]
    Run(String),
    /// A shape that disagrees with the bundle: the graph's input or outputs against the
    /// manifest at load, or the caller's buffers against the batch at scoring. Kept apart from
    /// `Load`/`Run` so callers can tell a wrong frame geometry from a broken model.
    #[error("{0}")]
    Shape(String),
}

pub trait Backend: Send {
    /// The manifest of the loaded bundle (input shape, score, normalisation).
    fn manifest(&self) -> &Manifest;
    /// Largest batch `score` accepts.
    fn max_batch(&self) -> usize;
    /// Score `batch` frames: `input.len() == batch·C·H·W`, `scores.len() == batch`,
    /// `maps.len() == batch·H·W`.
    fn score(
        &mut self,
        input: &[f32],
        batch: usize,
        scores: &mut [f32],
        maps: &mut [f32],
    ) -> Result<(), BackendError>;
}

/// Checks a `score` call's batch and buffer sizes against the frame geometry `i` (the same
/// messages for every engine).
pub(crate) fn check_call(
    path: &Path,
    max_batch: usize,
    i: &InputSpec,
    batch: usize,
    input: &[f32],
    scores: &[f32],
    maps: &[f32],
) -> Result<(), BackendError> {
    let (c, h, w) = (i.channels, i.height, i.width);
    let (frame, plane) = (c * h * w, h * w);
    if batch == 0 || batch > max_batch {
        return Err(BackendError::Shape(format!(
            "batch {batch} is out of range 1..={max_batch} for {}",
            path.display()
        )));
    }
    if input.len() != batch * frame {
        return Err(BackendError::Shape(format!(
            "{}: input holds {} values, expected {batch}×{c}×{h}×{w} = {} for shape [{batch},{c},{h},{w}]",
            path.display(),
            input.len(),
            batch * frame
        )));
    }
    if scores.len() != batch || maps.len() != batch * plane {
        return Err(BackendError::Shape(format!(
            "{}: output buffers hold {} scores and {} map values, expected {batch} and {}",
            path.display(),
            scores.len(),
            maps.len(),
            batch * plane
        )));
    }
    Ok(())
}

pub(crate) fn load_err(path: &Path, msg: impl fmt::Display) -> BackendError {
    BackendError::Load(format!("{}: {msg}", path.display()))
}

/// Which engine scores (`backend` in vigild.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Tract,
    Ort,
    /// Both, timed at load; the faster one runs.
    Auto,
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tract" => Ok(Self::Tract),
            "ort" => Ok(Self::Ort),
            "auto" => Ok(Self::Auto),
            // The name of the old placeholder: say where the GPU path is now.
            "gpu" => Err(
                "the GPU path is backend = \"ort\" with ep = \"cuda\" or \"tensorrt\" \
                          (docs/gpu.md); expected tract, ort or auto"
                    .into(),
            ),
            _ => Err("expected tract, ort or auto".into()),
        }
    }
}

/// onnxruntime's execution provider (`ep` in vigild.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ep {
    Cpu,
    Cuda,
    /// TensorRT, with CUDA for the nodes it does not take.
    TensorRt,
    OpenVino,
}

impl Ep {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
            Self::OpenVino => "openvino",
        }
    }
}

impl fmt::Display for Ep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ep {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "tensorrt" => Ok(Self::TensorRt),
            "openvino" => Ok(Self::OpenVino),
            _ => Err("expected cpu, cuda, tensorrt or openvino".into()),
        }
    }
}

/// What to open: the engine settings of vigild's configuration.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub kind: BackendKind,
    pub precision: Precision,
    pub threads: usize,
    pub max_batch: usize,
    /// onnxruntime only.
    pub ep: Ep,
    /// onnxruntime only: the library to load (None: `ORT_DYLIB_PATH`, else the loader's
    /// search path).
    pub ort_library: Option<PathBuf>,
}

impl Default for EngineSpec {
    fn default() -> Self {
        Self {
            kind: BackendKind::Tract,
            precision: Precision::F32,
            threads: 1,
            max_batch: 8,
            ep: Ep::Cpu,
            ort_library: None,
        }
    }
}

/// A loaded engine and what to say about it.
pub struct Opened {
    pub backend: Box<dyn Backend>,
    /// One line for the log and the status (`backend` in `…/status`), e.g. `tract f32, 1
    /// thread` or `ort cpu f32, 1 thread (onnxruntime …) (fell back to cpu: …)`.
    pub description: String,
    /// Things the operator should know (a provider fallback, a slow int8 engine).
    pub warnings: Vec<String>,
}

fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::Int8 => "int8",
    }
}

fn threads_name(n: usize) -> String {
    format!("{n} thread{}", if n == 1 { "" } else { "s" })
}

/// tract's int8 kernels on x86-64 (tract 0.23.9: i32 multiplies, no VNNI) run the int8 graph
/// 20–28× slower than the f32 one (docs/benchmarks.md, "Inference"): int8 stays opt-in there.
fn tract_int8_warning(spec: &EngineSpec) -> Option<String> {
    (spec.precision == Precision::Int8 && cfg!(target_arch = "x86_64")).then(|| {
        "precision int8 with tract on x86-64: tract runs model.int8.onnx 20–28× slower than \
         model.onnx here (docs/benchmarks.md, \"Inference\"); use precision f32, or backend ort"
            .to_string()
    })
}

fn open_tract(dir: &Path, spec: &EngineSpec) -> Result<Opened, BackendError> {
    let b = TractBackend::load(
        dir,
        &TractOptions {
            precision: spec.precision,
            max_batch: spec.max_batch,
            threads: spec.threads,
        },
    )?;
    Ok(Opened {
        backend: Box::new(b),
        description: format!(
            "tract {}, {}",
            precision_name(spec.precision),
            threads_name(spec.threads)
        ),
        warnings: tract_int8_warning(spec).into_iter().collect(),
    })
}

#[cfg(feature = "ort")]
fn open_ort(dir: &Path, spec: &EngineSpec) -> Result<Opened, BackendError> {
    let b = ort::OrtBackend::load(
        dir,
        &ort::OrtOptions {
            precision: spec.precision,
            max_batch: spec.max_batch,
            threads: spec.threads,
            ep: spec.ep,
            library: spec.ort_library.clone(),
        },
    )?;
    let mut description = format!(
        "ort {} {}, {} (onnxruntime {})",
        b.ep(),
        precision_name(spec.precision),
        threads_name(spec.threads),
        b.library().display()
    );
    let mut warnings = Vec::new();
    if let Some(why) = b.fallback() {
        description += &format!(" (fell back to cpu: {why})");
        warnings.push(format!(
            "execution provider {} is not available, scoring on the CPU: {why}",
            b.requested_ep()
        ));
    }
    Ok(Opened {
        backend: Box::new(b),
        description,
        warnings,
    })
}

#[cfg(not(feature = "ort"))]
fn open_ort(_dir: &Path, _spec: &EngineSpec) -> Result<Opened, BackendError> {
    Err(BackendError::Load(
        "backend ort: this build has no onnxruntime backend; build vigild with \
         `cargo build --release -p vigil-appliance --features ort`"
            .into(),
    ))
}

/// Batch-1 runs on a zero frame: a few to warm up, then timed ones until `AUTO_RUNS` or
/// `AUTO_TIME` per engine, whichever comes first. Returns the median, or an error from a run.
const AUTO_WARMUP: usize = 3;
const AUTO_RUNS: usize = 15;
const AUTO_TIME: Duration = Duration::from_secs(3);

/// Median batch-1 latency of `b` over a short timed run.
pub fn time_batch1(b: &mut dyn Backend) -> Result<Duration, BackendError> {
    let i = &b.manifest().input;
    let plane = i.height * i.width;
    let input = vec![0f32; i.channels * plane];
    let (mut s, mut m) = ([0f32; 1], vec![0f32; plane]);
    for _ in 0..AUTO_WARMUP {
        b.score(&input, 1, &mut s, &mut m)?;
    }
    let start = Instant::now();
    let mut t = Vec::with_capacity(AUTO_RUNS);
    while t.len() < AUTO_RUNS && (t.len() < 3 || start.elapsed() < AUTO_TIME) {
        let t0 = Instant::now();
        b.score(&input, 1, &mut s, &mut m)?;
        t.push(t0.elapsed());
    }
    t.sort();
    Ok(t[t.len() / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

type Opener = fn(&Path, &EngineSpec) -> Result<Opened, BackendError>;

/// `auto`: every engine this build and box can run, timed at batch 1; the fastest is kept.
/// An engine that cannot load (no onnxruntime library) is left out and said so; only when
/// none loads is it an error.
fn open_auto(dir: &Path, spec: &EngineSpec) -> Result<Opened, BackendError> {
    let mut candidates: Vec<(Opened, Duration)> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut first_err = None;
    let openers: [(&str, Opener); 2] = [("tract", open_tract), ("ort", open_ort)];
    for (name, open_one) in openers {
        match open_one(dir, spec).and_then(|mut o| {
            let t = time_batch1(o.backend.as_mut())?;
            Ok((o, t))
        }) {
            Ok(c) => candidates.push(c),
            Err(e) => {
                skipped.push(format!("{name} unavailable: {e}"));
                first_err.get_or_insert(e);
            }
        }
    }
    let timings: Vec<String> = candidates
        .iter()
        .map(|(o, t)| format!("{} {}", o.description, ms(*t)))
        .collect();
    let best = candidates
        .iter()
        .enumerate()
        .min_by_key(|(_, (_, t))| *t)
        .map(|(i, _)| i);
    let Some(best) = best else {
        return Err(first_err.expect("two engines tried"));
    };
    let (mut chosen, t) = candidates.swap_remove(best);
    chosen.description = format!(
        "auto: {} (fastest at warm-up, batch-1 median {}; measured: {}{})",
        chosen.description,
        ms(t),
        timings.join(", "),
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; {}", skipped.join("; "))
        }
    );
    Ok(chosen)
}

/// Loads the engine `spec` names on the bundle in `dir`.
pub fn open(dir: &Path, spec: &EngineSpec) -> Result<Opened, BackendError> {
    match spec.kind {
        BackendKind::Tract => open_tract(dir, spec),
        BackendKind::Ort => open_ort(dir, spec),
        BackendKind::Auto => open_auto(dir, spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for k in ["tract", "ort", "auto"] {
            let kind: BackendKind = k.parse().unwrap();
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{k}\""));
        }
        for e in ["cpu", "cuda", "tensorrt", "openvino"] {
            assert_eq!(e.parse::<Ep>().unwrap().as_str(), e);
        }
        assert!("rocm".parse::<Ep>().is_err());
        let gpu = "gpu".parse::<BackendKind>().unwrap_err();
        assert!(gpu.contains("ort") && gpu.contains("cuda"), "{gpu}");
    }

    #[cfg(not(feature = "ort"))]
    #[test]
    fn ort_without_the_feature_says_how_to_build_it() {
        let spec = EngineSpec {
            kind: BackendKind::Ort,
            ..EngineSpec::default()
        };
        let e = open(Path::new("/nonexistent"), &spec)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--features ort"), "{e}");
    }
}
