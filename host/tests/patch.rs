//! Patch mode end to end: `vigil train --patch` on full-resolution images, the bundle's geometry,
//! the exported patch-sized graph run over the tiles by tract against the Candle model (same
//! tolerances as `tests/export.rs`), and `vigil eval` on both.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use vigil_host::data::{self, DataSpec, LoadOptions, Sample};
use vigil_shared::manifest::{Manifest, PatchSpec};

mod common;
use common::{max_abs_diff, ok, score_tolerance, vigil};

/// A synthetic metal folder at 128² (72 training, 8 validation, 40 test images).
fn data_128() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("metal128");
        ok(vigil(&[
            "synth",
            "--out",
            dir.to_str().unwrap(),
            "--count",
            "80",
            "--size",
            "128",
        ]));
        dir
    })
}

/// GANomaly in patch mode on [`data_128`]: 32² crops of the images at their native size (no
/// `--image-size`), one epoch, exported with an int8 graph too.
fn trained_patch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("p32");
        let data = format!("folder:{}", data_128().display());
        ok(vigil(&[
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
            "16",
            "--epochs",
            "1",
            "--out",
            dir.to_str().unwrap(),
        ]));
        ok(vigil(&[
            "export",
            "--model",
            dir.to_str().unwrap(),
            "--quantize",
            "int8",
            "--calibration",
            "4",
        ]));
        dir
    })
}

fn test_images(m: &Manifest) -> Vec<Sample> {
    let opts = LoadOptions {
        image_size: m.input.height,
        channels: m.input.channels,
        data_root: None,
        seed: m.training.seed,
    };
    let spec: DataSpec = m.training.data.parse().unwrap();
    data::load(&spec, &opts).unwrap().test
}

#[test]
fn the_bundle_records_the_full_input_and_the_patch_geometry() {
    let m = Manifest::load(trained_patch()).unwrap();
    assert_eq!((m.input.height, m.input.width), (128, 128));
    assert_eq!(
        m.patch,
        Some(PatchSpec {
            size: 32,
            stride: 16
        })
    );
    assert_eq!(m.training.image_size, 128);
    let text = std::fs::read_to_string(trained_patch().join("manifest.json")).unwrap();
    assert!(text.contains("\"patch\""), "{text}");
    // The reconstruction plot shows the whole image, stitched.
    let plot = trained_patch().join("plots/reconstruction-epoch-001.png");
    let (w, h) = image::image_dimensions(&plot).unwrap();
    assert!(w >= 3 * 128 && h >= 128, "{w}×{h}");
}

/// The exported graph takes 32² tiles; run over each image's 49 tiles by tract and stitched,
/// it gives the Candle model's stitched map (within 1e-4) and image score (max over tiles).
#[test]
fn tiled_tract_on_the_exported_graph_matches_candle() {
    let dir = trained_patch();
    let model = vigil_host::bundle::load(dir, &Device::Cpu).unwrap();
    let m = &model.manifest;
    assert_eq!(model.detector.config().size, 32);
    let samples = test_images(m);
    assert_eq!(samples.len(), 40);
    let tiling = vigil_host::patch::tiling(m)
        .unwrap()
        .expect("a patch bundle");
    assert_eq!(tiling.count(), 49);
    let candle = vigil_host::patch::score_samples(
        model.detector.as_ref(),
        Some(&tiling),
        &samples,
        &m.score.name,
        true,
        &Device::Cpu,
    )
    .unwrap();
    let cmaps = candle.maps.unwrap();
    assert_eq!(cmaps.len(), 40 * 128 * 128);
    let images: Vec<f32> = samples.iter().flat_map(|s| s.image.clone()).collect();
    let (ts, tm) =
        vigil_host::patch::onnx_scores(dir, Path::new("model.onnx"), m, &images).unwrap();
    let (ds, dm) = (max_abs_diff(&candle.scores, &ts), max_abs_diff(&cmaps, &tm));
    let tol = score_tolerance(&candle.scores);
    eprintln!("patch: max |candle - tract| score {ds:.2e} (tolerance {tol:.1e}) map {dm:.2e}");
    assert!(ds <= tol && dm <= 1e-4, "score {ds}, map {dm}");
    let s = &candle.scores;
    assert!(s.iter().any(|&v| (v - s[0]).abs() > 1e-6), "constant {s:?}");
    // The stitched map is not one tile repeated: it varies across the image.
    let first = &cmaps[..128 * 128];
    assert!(max_abs_diff(&first[..32 * 128], &first[64 * 128..96 * 128]) > 1e-6);
}

/// `vigil eval` follows the geometry: Candle and the exported graph give the same metrics with
/// maps at 128², and the int8 graph (calibrated on tiles) stays close.
#[test]
fn eval_of_a_patch_bundle_matches_between_candle_and_the_graph() {
    let model = trained_patch().to_str().unwrap();
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
        assert!((c - q).abs() < 0.05, "{key}: candle {c} vs int8 graph {q}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    ok(vigil(&[
        "eval",
        "--model",
        model,
        "--report",
        report.to_str().unwrap(),
    ]));
    let (w, _) = image::image_dimensions(report.join("overlay.png")).unwrap();
    assert!(w >= 4 * 128, "overlay {w} wide");
}

#[test]
fn bad_patch_options_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let out = out.to_str().unwrap();
    for (args, want) in [
        (
            &["--data", "synthetic:metal", "--patch", "32"][..],
            "no native size",
        ),
        (
            &[
                "--data",
                "synthetic:metal",
                "--image-size",
                "128",
                "--patch",
                "48",
            ],
            "--patch 48",
        ),
        (
            &[
                "--data",
                "synthetic:metal",
                "--image-size",
                "128",
                "--patch",
                "32",
                "--stride",
                "40",
            ],
            "--stride",
        ),
        (
            &[
                "--data",
                "synthetic:metal",
                "--image-size",
                "1024",
                "--patch",
                "32",
            ],
            "at most 512",
        ),
        (
            &["--data", "synthetic:metal", "--image-size", "512"],
            "--patch",
        ),
    ] {
        let mut all = vec!["train", "--out", out, "--epochs", "1"];
        all.extend_from_slice(args);
        let o = vigil(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(want) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
