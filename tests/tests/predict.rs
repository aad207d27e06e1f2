//! `vigil predict` on a folder of camera-sized photos (640×480, PNG grey and JPEG colour): it
//! writes the CSV, the JSON lines and an overlay per image, its exit status says whether any
//! image was anomalous, and its scores equal vigild's on the same files (`folder:` replay in
//! lockstep) within 1e-5: the same preprocessing and the same graph.

mod model_support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use vigil_tests::workspace_bin;

/// Brushed-metal-like 640×480 pictures: horizontal streaks and noise; `defect` adds a dark spot.
fn photo(seed: u32, defect: bool) -> image::RgbImage {
    let hash = |x: u32| {
        let mut h = x.wrapping_mul(0x9E37_79B9) ^ seed.wrapping_mul(0x85EB_CA6B);
        h ^= h >> 15;
        h = h.wrapping_mul(0x2C1B_3C6D);
        (h ^ (h >> 12)) as f32 / u32::MAX as f32
    };
    image::RgbImage::from_fn(640, 480, |x, y| {
        let streak = hash(y) * 40.0;
        let mut v = 110.0 + streak + hash(x * 7919 + y * 104_729) * 20.0;
        if defect && (x as i32 - 400).pow(2) + (y as i32 - 200).pow(2) < 30 * 30 {
            v = 25.0;
        }
        let v = v.clamp(0.0, 255.0) as u8;
        image::Rgb([v, v, v.saturating_add(6)])
    })
}

fn write_photos(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..3 {
        let grey = image::DynamicImage::ImageRgb8(photo(i, i == 2)).into_luma8();
        grey.save(dir.join(format!("part_{i}.png"))).unwrap();
    }
    photo(7, false).save(dir.join("part_3.jpg")).unwrap();
}

#[test]
fn predict_writes_tables_and_overlays_and_scores_as_vigild_does() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_support::small_model(dir.path());
    let photos = dir.path().join("photos");
    write_photos(&photos);
    let out = dir.path().join("out");

    let p = Command::new(workspace_bin("vigil"))
        .arg("predict")
        .arg("--model")
        .arg(&model)
        .arg(&photos)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&p.stderr);
    assert!(
        matches!(p.status.code(), Some(0) | Some(3)),
        "vigil predict failed: {stderr}"
    );
    let csv = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    let preds: Vec<serde_json::Value> = std::fs::read_to_string(out.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(preds.len(), 4);
    let any_bad = preds.iter().any(|p| p["anomalous"] == true);
    assert_eq!(
        p.status.code(),
        Some(if any_bad { 3 } else { 0 }),
        "exit status"
    );
    for pred in &preds {
        let overlay = out.join(pred["overlay"].as_str().unwrap());
        let img = image::open(&overlay).unwrap();
        // Three panels of 341×256 (640×480 scaled to 256 high) with 4-pixel gaps.
        assert_eq!(
            (img.width(), img.height()),
            (3 * 341 + 8, 256),
            "{overlay:?}"
        );
    }

    let v = Command::new(workspace_bin("vigild"))
        .arg("--model")
        .arg(&model)
        .arg("--source")
        .arg(format!("folder:{}", photos.display()))
        .args(["--fps", "0", "--frames", "4"])
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let vigild: HashMap<String, f64> = String::from_utf8_lossy(&v.stdout)
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                r["source"].as_str().unwrap().to_string(),
                r["score"].as_f64().unwrap(),
            )
        })
        .collect();
    let mut worst = 0f64;
    for pred in &preds {
        let file = Path::new(pred["file"].as_str().unwrap());
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let theirs = *vigild
            .get(&name)
            .unwrap_or_else(|| panic!("vigild did not score {name}: {vigild:?}"));
        let ours = pred["score"].as_f64().unwrap();
        worst = worst.max((ours - theirs).abs());
        assert!(
            (ours - theirs).abs() <= 1e-5,
            "{name}: predict {ours} vs vigild {theirs}"
        );
    }
    eprintln!("vigil predict vs vigild on 4 photos of 640×480: largest score difference {worst:e}");
}
