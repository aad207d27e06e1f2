//! The onnxruntime backend (feature `ort`) against tract on the same exported bundle, with the
//! library of PyPI's onnxruntime wheel (tests/support/ort-venv.sh): scores within 1e-4 and maps
//! within 1e-3 on f32 (whole-image and patch bundles), a clear error for a missing library, the
//! CPU fallback of an execution provider this library lacks, and vigild's `--backend ort` and
//! `--backend auto`.
//!
//! The bundle is trained and exported by the `vigil` binary of this target directory (built
//! here when `cargo test --workspace` has not built it already).
#![cfg(feature = "ort")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use vigil_appliance::backend::ort::{OrtBackend, OrtOptions};
use vigil_appliance::backend::tract::{Precision, TractBackend, TractOptions};
use vigil_appliance::backend::{self, Backend, BackendKind, EngineSpec, Ep};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ok(what: &str, o: Output) -> Output {
    assert!(
        o.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `vigil` next to this test's target directory (target/release/deps/ → target/release/).
fn vigil() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap();
        let bin = dir.join("vigil");
        if !bin.is_file() {
            let profile = dir.file_name().unwrap().to_str().unwrap();
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.current_dir(root()).args(["build", "-p", "vigil-host"]);
            if profile == "release" {
                cmd.arg("--release");
            }
            ok("cargo build -p vigil-host", cmd.output().unwrap());
        }
        assert!(bin.is_file(), "no vigil binary at {}", bin.display());
        bin
    })
}

/// One GANomaly bundle (synthetic metal, 32², one epoch) with model.onnx and model.int8.onnx.
fn bundle() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("b32");
        let d = dir.to_str().unwrap();
        ok(
            "vigil train",
            Command::new(vigil())
                .args([
                    "train",
                    "--detector",
                    "ganomaly",
                    "--data",
                    "synthetic:metal",
                ])
                .args(["--image-size", "32", "--epochs", "1", "--out", d])
                .output()
                .unwrap(),
        );
        ok(
            "vigil export",
            Command::new(vigil())
                .args([
                    "export",
                    "--model",
                    d,
                    "--quantize",
                    "int8",
                    "--calibration",
                    "32",
                ])
                .output()
                .unwrap(),
        );
        dir
    })
}

/// A patch-mode GANomaly bundle: 32² tiles (stride 16, 9 per frame) of synthetic metal images
/// at 64², one epoch.
fn patch_bundle() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let (data, dir) = (root.join("metal64"), root.join("p32"));
        let run = |what: &str, args: &[&str]| {
            ok(what, Command::new(vigil()).args(args).output().unwrap());
        };
        let d = data.to_str().unwrap();
        run(
            "vigil synth",
            &["synth", "--out", d, "--count", "16", "--size", "64"],
        );
        let data = format!("folder:{d}");
        let out = dir.to_str().unwrap();
        run(
            "vigil train --patch",
            &[
                "train",
                "--detector",
                "ganomaly",
                "--data",
                &data,
                "--channels",
                "1",
                "--patch",
                "32",
                "--crops",
                "2",
                "--batch",
                "8",
                "--epochs",
                "1",
                "--out",
                out,
            ],
        );
        run("vigil export", &["export", "--model", out]);
        dir
    })
}

/// libonnxruntime of the venv that tests/support/ort-venv.sh makes.
fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let o = ok(
            "tests/support/ort-venv.sh",
            Command::new("bash")
                .arg(root().join("tests/support/ort-venv.sh"))
                .output()
                .unwrap(),
        );
        let py = String::from_utf8(o.stdout).unwrap().trim().to_string();
        let o = ok(
            "python -c onnxruntime",
            Command::new(&py)
                .args([
                    "-c",
                    "import glob, os, onnxruntime as o; \
                     print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), 'capi', 'libonnxruntime.so*')))[0])",
                ])
                .output()
                .unwrap(),
        );
        PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
    })
}

/// A deterministic batch in [-1, 1] (the input range).
fn frames(n: usize, frame: usize) -> Vec<f32> {
    (0..n * frame)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn run(b: &mut dyn Backend, input: &[f32], batch: usize) -> (Vec<f32>, Vec<f32>) {
    let i = &b.manifest().input;
    let plane = i.height * i.width;
    let (mut s, mut m) = (vec![0f32; batch], vec![0f32; batch * plane]);
    b.score(input, batch, &mut s, &mut m).unwrap();
    (s, m)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn ort_opts(precision: Precision) -> OrtOptions {
    OrtOptions {
        precision,
        library: Some(library().to_path_buf()),
        ..OrtOptions::default()
    }
}

#[test]
fn f32_scores_and_maps_equal_tracts() {
    let dir = bundle();
    let mut t = TractBackend::load(dir, &TractOptions::default()).unwrap();
    let mut o = OrtBackend::load(dir, &ort_opts(Precision::F32)).unwrap();
    assert_eq!(o.ep(), Ep::Cpu);
    assert!(o.fallback().is_none());
    let i = t.manifest().input.clone();
    let frame = i.channels * i.height * i.width;
    let x = frames(8, frame);
    // Batch 8 and 1 use the preallocated outputs; 3 is the unplanned path.
    for batch in [8, 1, 3] {
        let input = &x[..batch * frame];
        let (ts, tm) = run(&mut t, input, batch);
        let (os, om) = run(&mut o, input, batch);
        let (ds, dm) = (max_abs_diff(&ts, &os), max_abs_diff(&tm, &om));
        assert!(
            ds <= 1e-4,
            "batch {batch}: scores differ by {ds}: {ts:?} vs {os:?}"
        );
        assert!(dm <= 1e-3, "batch {batch}: maps differ by {dm}");
        assert!(ts.iter().any(|s| *s != 0.0), "all-zero scores: {ts:?}");
    }
    // The same frame scores the same alone and inside a batch (no state between runs).
    let (alone, _) = run(&mut o, &x[2 * frame..3 * frame], 1);
    let (batch, _) = run(&mut o, &x[..8 * frame], 8);
    assert!(
        (alone[0] - batch[2]).abs() <= 1e-5,
        "{alone:?} vs {batch:?}"
    );
}

#[test]
fn patch_bundle_scores_and_maps_equal_tracts() {
    let dir = patch_bundle();
    let mut t = TractBackend::load(dir, &TractOptions::default()).unwrap();
    let mut o = OrtBackend::load(dir, &ort_opts(Precision::F32)).unwrap();
    let i = t.manifest().input.clone();
    assert!(t.manifest().patch.is_some(), "not a patch bundle");
    let frame = i.channels * i.height * i.width;
    let x = frames(3, frame);
    // Whole frames go in, whole-frame maps come out; each frame is one run of its tiles.
    for batch in [1, 3] {
        let input = &x[..batch * frame];
        let (ts, tm) = run(&mut t, input, batch);
        let (os, om) = run(&mut o, input, batch);
        let (ds, dm) = (max_abs_diff(&ts, &os), max_abs_diff(&tm, &om));
        assert!(
            ds <= 1e-4,
            "batch {batch}: scores differ by {ds}: {ts:?} vs {os:?}"
        );
        assert!(dm <= 1e-3, "batch {batch}: maps differ by {dm}");
        assert!(om.iter().any(|v| *v != 0.0), "all-zero maps");
    }
}

#[test]
fn int8_graph_runs_and_ranks_like_f32() {
    let dir = bundle();
    let mut f = OrtBackend::load(dir, &ort_opts(Precision::F32)).unwrap();
    let mut q = OrtBackend::load(dir, &ort_opts(Precision::Int8)).unwrap();
    assert!(
        q.path().ends_with("model.int8.onnx"),
        "{}",
        q.path().display()
    );
    let i = f.manifest().input.clone();
    let frame = i.channels * i.height * i.width;
    let x = frames(8, frame);
    let (fs, _) = run(&mut f, &x, 8);
    let (qs, qm) = run(&mut q, &x, 8);
    assert!(qs.iter().chain(&qm).all(|v| v.is_finite()));
    // Quantisation moves scores; it must not move them by more than the scores' own spread.
    let spread = fs.iter().fold(0f32, |m, s| m.max(s.abs()));
    let d = max_abs_diff(&fs, &qs);
    assert!(d <= 0.5 * spread, "int8 scores {qs:?} vs f32 {fs:?}");
}

#[test]
fn missing_library_is_a_clear_error() {
    let missing = Path::new("/nonexistent/onnxruntime/capi/libonnxruntime.so.1.31.1");
    let e = OrtBackend::load(
        bundle(),
        &OrtOptions {
            library: Some(missing.to_path_buf()),
            ..OrtOptions::default()
        },
    )
    .err()
    .expect("a missing library must not load");
    let msg = e.to_string();
    assert!(
        msg.contains(missing.to_str().unwrap())
            && msg.contains("pip install onnxruntime==1.31.1")
            && msg.contains("ort_library"),
        "{msg}"
    );
}

#[test]
fn unavailable_provider_falls_back_to_cpu_and_says_why() {
    // PyPI's CPU wheel has no CUDA provider.
    let o = OrtBackend::load(
        bundle(),
        &OrtOptions {
            ep: Ep::Cuda,
            ..ort_opts(Precision::F32)
        },
    )
    .unwrap();
    assert_eq!((o.requested_ep(), o.ep()), (Ep::Cuda, Ep::Cpu));
    let why = o.fallback().expect("a reason");
    assert!(why.contains("cuda"), "{why}");
    let opened = backend::open(
        bundle(),
        &EngineSpec {
            kind: BackendKind::Ort,
            ep: Ep::Cuda,
            ort_library: Some(library().to_path_buf()),
            ..EngineSpec::default()
        },
    )
    .unwrap();
    assert!(
        opened.description.starts_with("ort cpu f32")
            && opened.description.contains("fell back to cpu"),
        "{}",
        opened.description
    );
    assert!(!opened.warnings.is_empty());
}

#[test]
fn auto_times_both_engines_and_keeps_the_faster() {
    let opened = backend::open(
        bundle(),
        &EngineSpec {
            kind: BackendKind::Auto,
            ort_library: Some(library().to_path_buf()),
            ..EngineSpec::default()
        },
    )
    .unwrap();
    let d = &opened.description;
    assert!(d.starts_with("auto: "), "{d}");
    // Both were measured, each with its median.
    assert!(
        d.contains("measured: tract f32") && d.contains("ort cpu f32"),
        "{d}"
    );
    assert_eq!(d.matches(" ms").count(), 3, "{d}");
}

fn vigild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigild"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn vigild_scores_with_ort_and_auto() {
    let model = bundle().to_str().unwrap();
    let lib = library().to_str().unwrap();
    for backend in ["ort", "auto"] {
        let o = vigild(&[
            "--model",
            model,
            "--backend",
            backend,
            "--ort-library",
            lib,
            "--frames",
            "5",
            "--fps",
            "0",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{backend}: {err}");
        // A log line: `<time> INFO vigild: backend …`.
        let line = err
            .lines()
            .find_map(|l| l.split_once(" INFO vigild: backend ").map(|(_, d)| d))
            .unwrap_or("");
        let want = if backend == "ort" {
            "ort cpu f32"
        } else {
            "auto: "
        };
        assert!(line.starts_with(want), "{backend}: {err}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).lines().count(),
            5,
            "{err}"
        );
    }
    // A missing library stops vigild with the path and the way to install it.
    let o = vigild(&[
        "--model",
        model,
        "--backend",
        "ort",
        "--ort-library",
        "/nonexistent/libonnxruntime.so",
        "--frames",
        "1",
        "--fps",
        "0",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("/nonexistent/libonnxruntime.so") && err.contains("pip install onnxruntime"),
        "{err}"
    );
}
