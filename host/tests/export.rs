//! `vigil export` as a user runs it, and the exported graphs against the trained model: tract
//! (the appliance backend) and onnxruntime must give Candle's scores and maps.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use vigil_appliance::backend::tract::{Precision, TractBackend, TractOptions};
use vigil_appliance::backend::{Backend, BackendError};
use vigil_host::data::{self, DataSpec, LoadOptions, Sample};
use vigil_shared::manifest::{sha256_file, Manifest};

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "vigil failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// One small GANomaly bundle (synthetic metal, 32², one epoch) shared by the tests of this file.
fn trained() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("b32");
        ok(vigil(&[
            "train",
            "--detector",
            "ganomaly",
            "--data",
            "synthetic:metal",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--out",
            dir.to_str().unwrap(),
        ]));
        dir
    })
}

/// A private copy of the trained bundle, so tests can damage or edit it.
fn copy_bundle(to: &Path) -> PathBuf {
    let dst = to.join("bundle");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["manifest.json", "weights.safetensors"] {
        std::fs::copy(trained().join(f), dst.join(f)).unwrap();
    }
    dst
}

fn export(dir: &Path, extra: &[&str]) {
    let mut args = vec!["export", "--model", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(vigil(&args));
}

fn test_images(m: &Manifest, n: usize) -> Vec<Sample> {
    let opts = LoadOptions {
        image_size: m.input.height,
        channels: m.input.channels,
        data_root: None,
        seed: m.training.seed,
    };
    let spec: DataSpec = m.training.data.parse().unwrap();
    let ds = data::load(&spec, &opts).unwrap();
    ds.test.into_iter().take(n).collect()
}

fn flat(samples: &[Sample]) -> Vec<f32> {
    samples
        .iter()
        .flat_map(|s| s.image.iter().copied())
        .collect()
}

/// Candle's (scores, maps) for `samples` with the manifest's score.
fn candle_scores(dir: &Path, samples: &[Sample]) -> (Vec<f32>, Vec<f32>) {
    let model = vigil_host::bundle::load(dir, &Device::Cpu).unwrap();
    let m = &model.manifest;
    let (c, s) = (m.input.channels, m.input.height);
    let x = Tensor::from_vec(flat(samples), (samples.len(), c, s, s), &Device::Cpu).unwrap();
    let inf = model.detector.infer(&x).unwrap();
    (
        inf.score(&m.score.name).unwrap().to_vec1().unwrap(),
        inf.map.flatten_all().unwrap().to_vec1().unwrap(),
    )
}

fn tract_scores(
    dir: &Path,
    p: Precision,
    samples: &[Sample],
    max_batch: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut b = TractBackend::load(
        dir,
        &TractOptions {
            precision: p,
            max_batch,
            threads: 1,
        },
    )
    .unwrap();
    let m = b.manifest().clone();
    let plane = m.input.height * m.input.width;
    let frame = m.input.channels * plane;
    let x = flat(samples);
    let (mut scores, mut maps) = (vec![0f32; samples.len()], vec![0f32; samples.len() * plane]);
    // Mixed batch sizes: full batches, then the rest one by one (both plans run).
    let mut i = 0;
    while i < samples.len() {
        let n = if samples.len() - i >= max_batch {
            max_batch
        } else {
            1
        };
        b.score(
            &x[i * frame..(i + n) * frame],
            n,
            &mut scores[i..i + n],
            &mut maps[i * plane..(i + n) * plane],
        )
        .unwrap();
        i += n;
    }
    (scores, maps)
}

fn ort_python() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/ort-venv.sh");
    let o = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run ort-venv.sh");
    assert!(
        o.status.success(),
        "ort-venv.sh failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    PathBuf::from(String::from_utf8(o.stdout).unwrap().trim())
}

fn read_f32(p: &Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn ort_scores(model: &Path, m: &Manifest, samples: &[Sample], tmp: &Path) -> (Vec<f32>, Vec<f32>) {
    let py = ort_python();
    let inp = tmp.join("input.f32");
    let bytes: Vec<u8> = flat(samples).iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&inp, bytes).unwrap();
    let out = tmp.join("ort");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/ort_run.py");
    let n = samples.len().to_string();
    let (c, h, w) = (
        m.input.channels.to_string(),
        m.input.height.to_string(),
        m.input.width.to_string(),
    );
    let o = Command::new(py)
        .arg(script)
        .args([
            model.to_str().unwrap(),
            inp.to_str().unwrap(),
            &n,
            &c,
            &h,
            &w,
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "onnxruntime failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    (
        read_f32(&out.with_extension("score.f32")),
        read_f32(&out.with_extension("map.f32")),
    )
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// For each score GANomaly offers: tract and onnxruntime on the exported f32 graph give
/// Candle's score and anomaly map on 64 test images within 1e-4.
#[test]
fn exported_ganomaly_matches_candle_in_tract_and_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    for score in ["residual", "encoder"] {
        let dir = copy_bundle(&tmp.path().join(score));
        let mut m = Manifest::load(&dir).unwrap();
        m.score.name = score.into();
        m.save(&dir).unwrap();
        export(&dir, &[]);
        let m = Manifest::load(&dir).unwrap();
        let entry = m.file("model.onnx").expect("manifest lists model.onnx");
        assert_eq!(entry.precision, "f32");
        assert_eq!(entry.sha256, sha256_file(&dir.join("model.onnx")).unwrap());

        let samples = test_images(&m, 64);
        assert_eq!(samples.len(), 64);
        let (cs, cm) = candle_scores(&dir, &samples);
        let (ts, tm) = tract_scores(&dir, Precision::F32, &samples, 8);
        let (os, om) = ort_scores(&dir.join("model.onnx"), &m, &samples, &dir);
        let d = [
            max_abs_diff(&cs, &ts),
            max_abs_diff(&cm, &tm),
            max_abs_diff(&cs, &os),
            max_abs_diff(&cm, &om),
        ];
        eprintln!(
            "{score}: max |candle - tract| score {:.2e} map {:.2e}; |candle - ort| score {:.2e} map {:.2e}",
            d[0], d[1], d[2], d[3]
        );
        assert!(d.iter().all(|&x| x <= 1e-4), "{score}: differences {d:?}");
        // The scores must not be trivially equal (e.g. all zero).
        assert!(cs.iter().any(|&s| (s - cs[0]).abs() > 1e-6));
    }
}

fn load_err(dir: &Path) -> BackendError {
    match TractBackend::load(dir, &TractOptions::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

fn exported_copy(tmp: &Path) -> PathBuf {
    let dir = copy_bundle(tmp);
    export(&dir, &[]);
    dir
}

#[test]
fn truncated_onnx_file_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = exported_copy(tmp.path());
    let path = dir.join("model.onnx");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    // Record the truncated file's sha256 so the parse, not the checksum, must catch it.
    let mut m = Manifest::load(&dir).unwrap();
    let mut e = m.file("model.onnx").unwrap().clone();
    e.sha256 = sha256_file(&path).unwrap();
    m.upsert_file(e);
    m.save(&dir).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("not a valid ONNX model"),
        "{msg}"
    );
}

#[test]
fn sha256_mismatch_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = exported_copy(tmp.path());
    let path = dir.join("model.onnx");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("sha256 mismatch"),
        "{msg}"
    );
}

#[test]
fn wrong_input_shape_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = exported_copy(tmp.path());
    // A graph exported for 32×32 under a manifest that promises 64×64 frames.
    let mut m = Manifest::load(&dir).unwrap();
    m.input.height = 64;
    m.input.width = 64;
    m.save(&dir).unwrap();
    let e = load_err(&dir);
    let msg = e.to_string();
    assert!(matches!(e, BackendError::Shape(_)), "{msg}");
    assert!(
        msg.contains("model.onnx") && msg.contains("[N,1,32,32]") && msg.contains("[N,1,64,64]"),
        "{msg}"
    );

    // Frames of the wrong size at scoring time.
    m.input.height = 32;
    m.input.width = 32;
    m.save(&dir).unwrap();
    let mut b = TractBackend::load(&dir, &TractOptions::default()).unwrap();
    let (mut s, mut mp) = (vec![0f32; 2], vec![0f32; 2 * 32 * 32]);
    let e = b
        .score(&vec![0f32; 2 * 64 * 64], 2, &mut s, &mut mp)
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, BackendError::Shape(_)), "{msg}");
    assert!(msg.contains("8192") && msg.contains("[2,1,32,32]"), "{msg}");
}

#[test]
fn anogan_export_is_refused_with_a_pointer_to_candle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_bundle(tmp.path());
    let mut m = Manifest::load(&dir).unwrap();
    m.detector = "anogan".into();
    m.save(&dir).unwrap();
    let o = vigil(&["export", "--model", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("anogan") && err.contains("Candle"), "{err}");
    assert!(!dir.join("model.onnx").exists());
}
