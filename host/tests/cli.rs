//! The `vigil` binary as a user runs it: training, evaluation, reports, and clear one-line
//! errors for damaged bundles and data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use vigil_models::DetectorKind;

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "vigil failed:\n{}", stderr(&o));
    o
}

/// A failure the way users should see it: non-zero exit, no panic, one `error:` line that
/// mentions `needle` (the file or field at fault).
fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success:\n{err}");
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{err}");
    assert!(
        lines[0].contains(needle),
        "error does not name {needle}:\n{err}"
    );
}

fn eval_json(model: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["eval", "--model", model.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = ok(vigil(&args));
    serde_json::from_slice(&out.stdout).expect("eval prints one JSON object")
}

fn train_small(out: &Path, data: &str, epochs: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--detector",
        "ganomaly",
        "--data",
        data,
        "--image-size",
        "32",
        "--epochs",
        epochs,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    vigil(&args)
}

/// The acceptance run: two epochs on Fashion-MNIST class 1 (trouser) separate it from
/// the nine other classes with an image AUROC of at least 0.90.
#[test]
fn ganomaly_on_fashion_mnist_class_1_reaches_auroc_090() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("fm1");
    ok(train_small(&model, "fashion-mnist:normal=1", "2", &[]));
    for f in [
        "manifest.json",
        "weights.safetensors",
        "plots/loss.png",
        "plots/reconstruction-epoch-002.png",
    ] {
        assert!(model.join(f).is_file(), "missing {f}");
    }
    let report = dir.path().join("report");
    let v = eval_json(
        &model,
        &[
            "--data",
            "fashion-mnist:normal=1",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let auroc = v["image_auroc"].as_f64().unwrap();
    assert!(auroc >= 0.90, "image AUROC {auroc} < 0.90: {v}");
    assert_eq!(v["n_normal"], 1000);
    assert_eq!(v["n_anomalous"], 9000);
    assert_eq!(v["detector"], "ganomaly");
    assert!(
        v["pixel_auroc"].is_null() && v["pixel_aupro"].is_null(),
        "no masks → null: {v}"
    );
    for key in ["image_auprc", "image_f1", "threshold"] {
        assert!(v[key].is_number(), "{key} missing: {v}");
    }
    for f in ["roc.png", "pr.png", "histogram.png", "overlay.png"] {
        assert!(report.join(f).is_file(), "report lacks {f}");
    }

    // The paper's own score, from the same bundle: evaluated and calibrated on its own.
    let enc = eval_json(&model, &["--score", "encoder"]);
    assert_eq!(enc["score"], "encoder", "{enc}");
    let enc_auroc = enc["image_auroc"].as_f64().unwrap();
    assert!(
        enc_auroc > 0.5 && enc_auroc != auroc,
        "encoder score AUROC {enc_auroc} (residual {auroc})"
    );
    assert_ne!(
        enc["threshold"], v["threshold"],
        "threshold not recalibrated"
    );

    // `--score all`: both scores and then the map scores from one pass, one JSON line each, the
    // bundle's own first, with exactly the figures of the one-score runs.
    let out = ok(vigil(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "fashion-mnist:normal=1",
        "--score",
        "all",
    ]));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let maps = vigil_models::maps::SCORES;
    assert_eq!(lines.len(), 2 + maps.len(), "{lines:?}");
    for (got, want) in lines[2..].iter().zip(maps) {
        assert_eq!(got["score"], *want, "{got}");
    }
    for (got, want) in lines.iter().zip([&v, &enc]) {
        for key in [
            "score",
            "image_auroc",
            "image_auprc",
            "image_f1",
            "threshold",
        ] {
            assert_eq!(got[key], want[key], "{key}: {got} vs {want}");
        }
    }
}

fn synth_folder(dir: &Path) -> PathBuf {
    let data = dir.join("parts");
    ok(vigil(&[
        "synth",
        "--out",
        data.to_str().unwrap(),
        "--kind",
        "metal",
        "--count",
        "256",
        "--size",
        "64",
    ]));
    data
}

/// On folder data with ground-truth masks, pixel metrics are numbers and the anomaly map finds
/// the defects better than chance.
#[test]
fn folder_data_with_masks_gives_pixel_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_folder(dir.path());
    let spec = format!("folder:{}", data.display());
    let model = dir.path().join("model");
    ok(train_small(
        &model,
        &spec,
        "4",
        &["--channels", "1", "--batch", "32"],
    ));
    let report = dir.path().join("report");
    let v = eval_json(&model, &["--report", report.to_str().unwrap()]);
    let pixel = v["pixel_auroc"].as_f64().expect("pixel_auroc is a number");
    assert!(pixel > 0.6, "the map should light defects: {v}");
    assert!(v["pixel_aupro"].as_f64().is_some(), "{v}");
    let grid = image::open(report.join("overlay.png")).unwrap();
    assert!(grid.width() > 4 * 32, "four columns incl. ground truth");
}

/// `--resume` continues exactly: one epoch + one resumed epoch gives the same weights as two
/// epochs straight, which also shows the seed makes CPU training reproducible.
#[test]
fn resume_continues_exactly_and_seed_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_folder(dir.path());
    let spec = format!("folder:{}", data.display());
    let common = ["--channels", "1", "--batch", "32", "--seed", "7"];
    let straight = dir.path().join("straight");
    ok(train_small(&straight, &spec, "2", &common));
    let resumed = dir.path().join("resumed");
    ok(train_small(&resumed, &spec, "1", &common));
    let mut again = common.to_vec();
    again.push("--resume");
    ok(train_small(&resumed, &spec, "2", &again));
    let a = std::fs::read(straight.join("weights.safetensors")).unwrap();
    let b = std::fs::read(resumed.join("weights.safetensors")).unwrap();
    assert!(a == b, "resumed run differs from the straight run");

    let done = train_small(&resumed, &spec, "2", &again);
    assert_clean_error(&done, "--epochs");
    // Another architecture cannot continue this checkpoint: the flag that differs is named.
    again.extend(["--decoder", "upsample"]);
    let other = train_small(&resumed, &spec, "3", &again);
    assert_clean_error(&other, "--decoder deconv");
}

/// A bundle directory made by training once, shared by the damaged-bundle tests (each copies it).
fn trained_bundle() -> &'static Path {
    static BUNDLE: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = BUNDLE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        ok(train_small(
            &model,
            "synthetic:fabric",
            "1",
            &["--batch", "64"],
        ));
        (dir, model)
    });
    path
}

fn copy_bundle(to: &Path) -> PathBuf {
    let dst = to.join("bundle");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["manifest.json", "weights.safetensors"] {
        std::fs::copy(trained_bundle().join(f), dst.join(f)).unwrap();
    }
    dst
}

/// `--score`'s help is written by hand; this keeps it in step with the scores each detector
/// really offers, in their order (the first is the default).
#[test]
fn train_help_lists_every_detectors_scores() {
    let o = ok(vigil(&["train", "--help"]));
    // clap wraps to the terminal's width: compare with the line breaks folded away.
    let help = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for kind in DetectorKind::ALL {
        let entry = format!("{}: {}", kind.name(), kind.scores().join(", "));
        assert!(
            help.contains(&entry),
            "`vigil train --help` lacks `{entry}`:\n{help}"
        );
    }
}

/// The map scores every detector has are listed too, by the same names `maps::SCORES` holds.
#[test]
fn train_help_lists_the_map_scores() {
    let o = ok(vigil(&["train", "--help"]));
    let help = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let entry = format!("map scores {}:", vigil_models::maps::SCORES.join(", "));
    assert!(
        help.contains(&entry),
        "`vigil train --help` lacks `{entry}`:\n{help}"
    );
}

#[test]
fn unknown_score_names_the_detectors_scores() {
    let o = vigil(&[
        "eval",
        "--model",
        trained_bundle().to_str().unwrap(),
        "--score",
        "origin",
    ]);
    assert_clean_error(
        &o,
        "--score origin: ganomaly has no such score (it has: residual, encoder)",
    );
}

#[test]
fn truncated_weights_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let b = copy_bundle(dir.path());
    let w = b.join("weights.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    assert_clean_error(
        &vigil(&["eval", "--model", b.to_str().unwrap()]),
        "weights.safetensors",
    );
}

#[test]
fn corrupt_weights_with_a_matching_checksum_are_a_clear_error() {
    // Someone rewrote the file and its manifest entry: the checksum passes, the content does not.
    let dir = tempfile::tempdir().unwrap();
    let b = copy_bundle(dir.path());
    let w = b.join("weights.safetensors");
    std::fs::write(&w, b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}").unwrap();
    let sha = vigil_shared::manifest::sha256_file(&w).unwrap();
    let m = b.join("manifest.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    v["files"][0]["sha256"] = Value::String(sha);
    std::fs::write(&m, v.to_string()).unwrap();
    assert_clean_error(
        &vigil(&["eval", "--model", b.to_str().unwrap()]),
        "weights.safetensors",
    );
}

#[test]
fn wrong_schema_version_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let b = copy_bundle(dir.path());
    let m = b.join("manifest.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    v["schema_version"] = 99.into();
    std::fs::write(&m, v.to_string()).unwrap();
    let o = vigil(&["eval", "--model", b.to_str().unwrap()]);
    assert_clean_error(&o, "manifest.json");
    assert!(stderr(&o).contains("99"), "{}", stderr(&o));
}

#[test]
fn manifest_missing_a_field_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let b = copy_bundle(dir.path());
    let m = b.join("manifest.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    v["normalisation"]
        .as_object_mut()
        .unwrap()
        .remove("threshold");
    std::fs::write(&m, v.to_string()).unwrap();
    let o = vigil(&["eval", "--model", b.to_str().unwrap()]);
    assert_clean_error(&o, "manifest.json");
    assert!(stderr(&o).contains("threshold"), "{}", stderr(&o));
}

#[test]
fn wrong_size_image_in_a_folder_dataset_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth_folder(dir.path());
    let odd = data.join("train/good/zz-odd.png");
    image::GrayImage::new(50, 40).save(&odd).unwrap();
    let spec = format!("folder:{}", data.display());
    let o = train_small(&dir.path().join("m"), &spec, "1", &["--channels", "1"]);
    assert_clean_error(&o, "zz-odd.png");
}

#[test]
fn missing_dataset_names_the_path_and_the_debian_package() {
    let o = train_small(
        Path::new("/tmp/never"),
        "fashion-mnist:normal=1",
        "1",
        &["--data-root", "/nonexistent/fm"],
    );
    assert_clean_error(&o, "/nonexistent/fm");
    assert!(
        stderr(&o).contains("dataset-fashion-mnist"),
        "{}",
        stderr(&o)
    );
}

/// A CPU build asked for a GPU says how to get a CUDA one; a typo in --device names the value.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_on_a_cpu_build_says_how_to_build_one() {
    let out = tempfile::tempdir().unwrap();
    let o = train_small(out.path(), "synthetic:metal", "1", &["--device", "cuda:0"]);
    assert_clean_error(&o, "--device cuda:0");
    assert!(stderr(&o).contains("just build-cuda"), "{}", stderr(&o));
    let o = train_small(out.path(), "synthetic:metal", "1", &["--device", "gpu0"]);
    assert_clean_error(&o, "--device gpu0: expected cpu or cuda:N");
}

/// `vigil completions bash` is a script bash loads, completing the subcommands and flags.
#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let o = ok(vigil(&["completions", "bash"]));
    let script = String::from_utf8_lossy(&o.stdout);
    for word in ["train", "export", "demo", "--image-size", "--detector"] {
        assert!(script.contains(word), "completion lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.bash");
    std::fs::write(&path, script.as_bytes()).unwrap();
    let b = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p vigil", path.display()))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&b.stdout);
    assert!(
        b.status.success() && out.contains("vigil"),
        "bash did not load it: {out}{}",
        String::from_utf8_lossy(&b.stderr)
    );
    assert_clean_error(&vigil(&["completions", "cmd.exe"]), "cmd.exe");
}

/// `vigil predict`'s bad inputs: a bundle not exported yet (says how to export it), an input
/// that does not exist, a folder without images; each one clear line, no panic.
#[test]
fn predict_bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = copy_bundle(dir.path());
    let b = bundle.to_str().unwrap();
    let img = dir.path().join("part.png");
    image::GrayImage::new(40, 30).save(&img).unwrap();
    let img = img.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    assert_clean_error(
        &vigil(&["predict", "--model", b, img, "--out", out]),
        "vigil export --model",
    );
    ok(vigil(&["export", "--model", b]));
    assert_clean_error(
        &vigil(&[
            "predict",
            "--model",
            b,
            "/nonexistent/part.png",
            "--out",
            out,
        ]),
        "/nonexistent/part.png: no such file or folder",
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_clean_error(
        &vigil(&[
            "predict",
            "--model",
            b,
            empty.to_str().unwrap(),
            "--out",
            out,
        ]),
        "no image files",
    );
    // And the good input scores (exit 0 or 3: its verdict, not an error).
    let o = vigil(&["predict", "--model", b, img, "--out", out]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(3)),
        "{}",
        stderr(&o)
    );
}
