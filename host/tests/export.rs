//! `vigil export` as a user runs it, and the exported graphs against the trained model: tract
//! (the appliance backend) and onnxruntime must give Candle's scores and maps.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use vigil_appliance::backend::tract::{Precision, TractBackend, TractOptions};
use vigil_appliance::backend::{Backend, BackendError};
use vigil_host::data::{self, DataSpec, LoadOptions, Sample};
use vigil_shared::manifest::{sha256_file, Manifest};

mod common;
use common::{max_abs_diff, ok, score_tolerance, vigil};

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

/// A private copy of the shared GANomaly bundle, so tests can damage or edit it.
fn copy_bundle(to: &Path) -> PathBuf {
    copy_bundle_of(trained(), to)
}

fn copy_bundle_of(from: &Path, to: &Path) -> PathBuf {
    let dst = to.join("bundle");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["manifest.json", "weights.safetensors"] {
        std::fs::copy(from.join(f), dst.join(f)).unwrap();
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

/// Candle's (scores, maps) for `samples` with the manifest's score (and that score's map).
fn candle_scores(dir: &Path, samples: &[Sample]) -> (Vec<f32>, Vec<f32>) {
    let model = vigil_host::bundle::load(dir, &Device::Cpu).unwrap();
    let m = &model.manifest;
    let (c, s) = (m.input.channels, m.input.height);
    let x = Tensor::from_vec(flat(samples), (samples.len(), c, s, s), &Device::Cpu).unwrap();
    let name = m.score.name.as_str();
    let inf = vigil_models::maps::infer(model.detector.as_ref(), &x, &[name]).unwrap();
    (
        inf.score(name).unwrap().to_vec1().unwrap(),
        inf.map(name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap(),
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

/// For each of `scores`: exports the bundle at `trained` with that score, then tract and
/// onnxruntime on the f32 graph must give Candle's score (within [`score_tolerance`]) and
/// anomaly map (within 1e-4) on 64 test images. The bundle with score `int8` is also exported
/// with `--quantize int8` and checked with tract against the f32 graph: the detector's default
/// score, or where that leaves a network out of the graph (EGBAD's residual skips the
/// discriminator) a score that holds it. GANomaly's `encoder` score is left out of the int8
/// check: the distance between two quantised latent codes ranks the test images only loosely
/// (measured Spearman 0.74 against f32 on this bundle; docs/bundle.md).
fn check_export(trained: &Path, detector: &str, scores: &[&str], int8: &str) {
    assert!(scores.contains(&int8), "{int8} is not among {scores:?}");
    let tmp = tempfile::tempdir().unwrap();
    for score in scores {
        let dir = copy_bundle_of(trained, &tmp.path().join(score));
        let mut m = Manifest::load(&dir).unwrap();
        assert_eq!(m.detector, detector);
        m.score.name = (*score).into();
        m.save(&dir).unwrap();
        let quantize = *score == int8;
        if quantize {
            export(&dir, &["--quantize", "int8", "--calibration", "64"]);
        } else {
            export(&dir, &[]);
        }
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
        let tol = score_tolerance(&cs);
        eprintln!(
            "{detector}/{score}: max |candle - tract| score {:.2e} map {:.2e}; |candle - ort| \
             score {:.2e} map {:.2e} (score tolerance {tol:.1e}, scores up to {:.3e})",
            d[0],
            d[1],
            d[2],
            d[3],
            cs.iter().fold(0f32, |m, s| m.max(s.abs()))
        );
        assert!(
            d[0] <= tol && d[2] <= tol && d[1] <= 1e-4 && d[3] <= 1e-4,
            "{detector}/{score}: differences {d:?}"
        );
        // The scores must not be trivially equal (e.g. all zero).
        assert!(
            cs.iter().any(|&s| (s - cs[0]).abs() > 1e-6),
            "{detector}/{score}: constant scores {cs:?}"
        );

        if quantize {
            let entry = m
                .file("model.int8.onnx")
                .expect("manifest lists the int8 graph");
            assert_eq!(entry.precision, "int8");
            check_int8(
                detector,
                score,
                &ts,
                &tm,
                &tract_scores(&dir, Precision::Int8, &samples, 8),
            );
        }
    }
}

/// The int8 graph's scores against the f32 graph's (both in tract): finite, ordered alike
/// (Spearman ρ ≥ 0.8) and within half the f32 scores' range. A loose check that the quantised
/// graph computes the same thing, not an accuracy claim: scores on critic features (ALAD's
/// `features`) move by up to ~40 % of their range on these barely trained bundles.
fn check_int8(
    detector: &str,
    score: &str,
    fs: &[f32],
    fm: &[f32],
    (qs, qm): &(Vec<f32>, Vec<f32>),
) {
    assert!(
        qs.iter().chain(qm).all(|v| v.is_finite()),
        "{detector}/{score} int8: non-finite output"
    );
    let range = fs.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s))
        - fs.iter().fold(f32::INFINITY, |m, &s| m.min(s));
    let d = max_abs_diff(fs, qs);
    let rho = spearman(fs, qs);
    let map_range = fm.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let dm = max_abs_diff(fm, qm);
    eprintln!(
        "{detector}/{score} int8 vs f32 (tract): max score diff {d:.3e} (f32 score range \
         {range:.3e}), Spearman {rho:.3}; max map diff {dm:.3e} (map max {map_range:.3e})"
    );
    assert!(
        rho >= 0.8 && d <= 0.5 * range,
        "{detector}/{score} int8: Spearman {rho}, max diff {d} against range {range}"
    );
}

/// Spearman's rank correlation (no tie correction: the scores are continuous).
fn spearman(a: &[f32], b: &[f32]) -> f32 {
    let ranks = |v: &[f32]| {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0f32; v.len()];
        for (rank, i) in idx.into_iter().enumerate() {
            r[i] = rank as f32;
        }
        r
    };
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f32;
    let d2: f32 = ra.iter().zip(&rb).map(|(x, y)| (x - y) * (x - y)).sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// A small synthetic metal folder (173 training, 19 validation, 96 test images at 32²), so each
/// detector below trains for one epoch in seconds.
fn small_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("metal");
        ok(vigil(&[
            "synth",
            "--out",
            dir.to_str().unwrap(),
            "--count",
            "192",
            "--size",
            "32",
        ]));
        dir
    })
}

/// `detector` trained for one epoch (batches of 32) on [`small_data`], in `tmp`: tiny, but
/// every weight, batch-norm statistic, power-iteration vector and stored range has moved.
fn trained_small(tmp: &Path, detector: &str) -> PathBuf {
    trained_small_with(tmp, detector, &[])
}

fn trained_small_with(tmp: &Path, detector: &str, extra: &[&str]) -> PathBuf {
    let dir = tmp.join(detector);
    let data = format!("folder:{}", small_data().display());
    ok(vigil(
        &[
            "train",
            "--detector",
            detector,
            "--data",
            &data,
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--batch",
            "32",
            "--out",
            dir.to_str().unwrap(),
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
    ));
    dir
}

/// Every score GANomaly offers, on the bundle the other tests of this file share.
#[test]
fn exported_ganomaly_matches_candle_in_tract_and_onnxruntime() {
    check_export(trained(), "ganomaly", &["residual", "encoder"], "residual");
}

#[test]
fn exported_egbad_matches_candle_in_tract_and_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = trained_small(tmp.path(), "egbad");
    check_export(
        &dir,
        "egbad",
        &["residual", "combined", "features"],
        "combined",
    );
}

#[test]
fn exported_alad_matches_candle_in_tract_and_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = trained_small(tmp.path(), "alad");
    check_export(
        &dir,
        "alad",
        &["features", "l1", "l2", "logits"],
        "features",
    );
}

#[test]
fn exported_fanogan_matches_candle_in_tract_and_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = trained_small(tmp.path(), "fanogan");
    check_export(&dir, "fanogan", &["izif", "residual", "origin"], "izif");
}

#[test]
fn exported_gaae_matches_candle_in_tract_and_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = trained_small(tmp.path(), "gaae");
    check_export(
        &dir,
        "gaae",
        &["combined", "residual", "features", "latent"],
        "combined",
    );
}

#[test]
fn exported_wild_matches_candle_in_tract_and_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = trained_small(tmp.path(), "wild");
    check_export(
        &dir,
        "wild",
        &["combined", "residual", "origin"],
        "combined",
    );
}

/// `seg`: restoration and segmentation U-Net in one graph, its own scores and a map score read
/// from its restoration, in both engines and as int8.
#[test]
fn exported_seg_matches_candle_in_tract_and_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = trained_small(tmp.path(), "seg");
    check_export(&dir, "seg", &["seg-max", "seg-topk", "residual"], "seg-max");
    check_export(&dir, "seg", &["l1-max", "msgms-topk"], "l1-max");
}

/// `--decoder upsample` (nearest ×2 + 3×3 conv, the stem a matrix product): the exported graph
/// has no transposed convolution, scores as Candle does in both engines, and quantises.
#[test]
fn exported_upsample_decoders_match_candle_and_have_no_transposed_convolution() {
    let tmp = tempfile::tempdir().unwrap();
    for (detector, scores, int8) in [
        ("ganomaly", &["residual", "encoder"][..], "residual"),
        ("fanogan", &["izif"][..], "izif"),
    ] {
        let dir = trained_small_with(tmp.path(), detector, &["--decoder", "upsample"]);
        let m = Manifest::load(&dir).unwrap();
        assert_eq!(
            m.training.decoder,
            vigil_shared::manifest::Decoder::Upsample
        );
        check_export(&dir, detector, scores, int8);
        export(&dir, &[]);
        let graph = std::fs::read(dir.join("model.onnx")).unwrap();
        let has = |op: &[u8]| graph.windows(op.len()).any(|w| w == op);
        assert!(
            !has(b"ConvTranspose"),
            "{detector}: a ConvTranspose in the graph"
        );
        assert!(has(b"Resize"), "{detector}: no Resize in the graph");
    }
}

/// The map scores (`vigil_models::maps`) of GANomaly's shared bundle, one of them also as int8.
#[test]
fn exported_ganomaly_map_scores_match_candle_in_tract_and_onnxruntime() {
    check_export(trained(), "ganomaly", MAP_SCORES, MAP_INT8);
}

/// The map scores of a BiGAN-family detector: the same graph pieces on another reconstruction.
#[test]
fn exported_alad_map_scores_match_candle_in_tract_and_onnxruntime() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = trained_small(tmp.path(), "alad");
    check_export(&dir, "alad", MAP_SCORES, MAP_INT8);
}

/// Every map score, as the two tests above check them.
const MAP_SCORES: &[&str] = &[
    "l1-max",
    "l1-topk",
    "ssim-mean",
    "ssim-max",
    "ssim-topk",
    "msgms-mean",
    "msgms-max",
    "msgms-topk",
];
/// The map score also exported as int8 (the networks are quantised, the map pieces stay f32).
const MAP_INT8: &str = "ssim-topk";

#[test]
fn map_score_tests_cover_every_map_score() {
    assert_eq!(MAP_SCORES, vigil_models::maps::SCORES);
}

/// The tests above name every score of every exportable detector: a score added to a
/// detector without a test (or an export) fails here.
#[test]
fn export_tests_cover_every_score_of_every_exportable_detector() {
    use vigil_models::export::check_exportable;
    use vigil_models::DetectorKind;
    let tested: &[(&str, &[&str])] = &[
        ("ganomaly", &["residual", "encoder"]),
        ("egbad", &["residual", "combined", "features"]),
        ("alad", &["features", "l1", "l2", "logits"]),
        ("fanogan", &["izif", "residual", "origin"]),
        ("gaae", &["combined", "residual", "features", "latent"]),
        ("wild", &["combined", "residual", "origin"]),
        ("seg", &["seg-max", "seg-topk", "residual"]),
    ];
    for kind in DetectorKind::ALL {
        let entry = tested.iter().find(|(d, _)| *d == kind.name());
        match (check_exportable(kind), entry) {
            (Ok(()), Some((_, scores))) => assert_eq!(*scores, kind.scores(), "{kind}"),
            (Ok(()), None) => panic!("{kind} exports but has no parity test"),
            (Err(_), Some(_)) => panic!("{kind} is tested but refused"),
            (Err(_), None) => {}
        }
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

/// `vigil eval --onnx`: the exported f32 graph gives the Candle model's metrics on the same
/// test split (pixel metrics included), the int8 graph metrics of its own that stay close, and
/// a file that is not part of the bundle is refused by name.
#[test]
fn eval_with_the_exported_graph_matches_candle_and_int8_stays_close() {
    let tmp = tempfile::tempdir().unwrap();
    let b = copy_bundle(tmp.path());
    export(&b, &["--quantize", "int8", "--calibration", "64"]);
    let model = b.to_str().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["eval", "--model", model];
        all.extend_from_slice(args);
        serde_json::from_slice(&ok(vigil(&all)).stdout).expect("eval prints JSON")
    };
    let candle = json(&[]);
    let f32 = json(&["--onnx", "model.onnx"]);
    let int8 = json(&["--onnx", "model.int8.onnx"]);
    for key in ["image_auroc", "image_auprc", "pixel_auroc", "pixel_aupro"] {
        let (c, f, q) = (
            candle[key].as_f64().unwrap(),
            f32[key].as_f64().unwrap(),
            int8[key].as_f64().unwrap(),
        );
        assert!((c - f).abs() < 1e-4, "{key}: candle {c} vs f32 graph {f}");
        assert!((c - q).abs() < 0.03, "{key}: candle {c} vs int8 graph {q}");
    }
    assert_eq!(f32["n_anomalous"], candle["n_anomalous"]);

    let o = vigil(&["eval", "--model", model, "--onnx", "other.onnx"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("other.onnx"), "{err}");
}
