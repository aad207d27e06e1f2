//! Train/serve parity of preprocessing: a 640×480 camera-sized picture, grey or colour, turned
//! into a model input by the host's loader (what training, `vigil eval` and calibration see)
//! and by vigild (its folder capture source, then the scoring pipeline up to the backend) must
//! give bit-identical tensors. A skew here moves scores away from the calibrated threshold.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_appliance::backend::{Backend, BackendError};
use vigil_appliance::capture::folder::FolderSource;
use vigil_appliance::capture::{CaptureStats, Frame, Next, Source};
use vigil_appliance::config::MaskPolicy;
use vigil_appliance::pipeline::{Pipeline, PipelineOptions, Telemetry};
use vigil_host::data::{self, DataSpec, LoadOptions};
use vigil_shared::manifest::Manifest;
use vigil_shared::rng::Rng;

const W: usize = 640;
const H: usize = 480;

/// A 640×480 picture with what a camera sees on a textured part: a lighting gradient, a
/// random fine texture, brick-like joints, a thin diagonal scratch and a dark blob; per channel
/// different in colour. Constant images would hide rounding and channel-order differences.
fn picture(channels: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(W * H * channels);
    for y in 0..H {
        for x in 0..W {
            let joint = y % 37 < 2 || (x + (y / 37) * 29) % 83 < 2;
            let scratch = (x as i64 - 2 * y as i64 / 3 - 100).abs() < 1;
            let (dx, dy) = (x as f32 - 420.0, y as f32 - 300.0);
            let blob = dx * dx + dy * dy < 900.0;
            for c in 0..channels {
                let base = 60.0 + 0.15 * x as f32 + 0.1 * y as f32 + 25.0 * c as f32;
                let mut p = base + 40.0 * rng.uniform();
                if joint {
                    p *= 0.55;
                }
                if scratch {
                    p = 250.0;
                }
                if blob {
                    p *= 0.3;
                }
                v.push(p.clamp(0.0, 255.0) as u8);
            }
        }
    }
    v
}

fn save(path: &Path, pixels: &[u8], channels: usize) {
    let colour = if channels == 3 {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    image::save_buffer(path, pixels, W as u32, H as u32, colour).unwrap();
}

fn manifest(channels: usize, size: usize) -> Manifest {
    serde_json::from_value(serde_json::json!({
        "schema_version": 1,
        "detector": "parity",
        "input": {"channels": channels, "height": size, "width": size, "range": [-1.0, 1.0]},
        "score": {"name": "mean", "params": {}},
        "normalisation": {"threshold": 0.0, "min": -1.0, "max": 1.0, "quantile": 0.99},
        "training": {"data": "test", "seed": 0, "epochs": 0, "image_size": size, "latent": 0,
                     "batch": 0, "git_commit": null, "created_at": "2026-01-01T00:00:00Z"},
        "files": []
    }))
    .unwrap()
}

/// A backend that keeps the last input tensor the pipeline handed it.
struct Recorder {
    manifest: Manifest,
    last: Arc<Mutex<Vec<f32>>>,
}

impl Backend for Recorder {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    fn max_batch(&self) -> usize {
        1
    }
    fn score(
        &mut self,
        input: &[f32],
        _batch: usize,
        scores: &mut [f32],
        maps: &mut [f32],
    ) -> Result<(), BackendError> {
        *self.last.lock().unwrap() = input.to_vec();
        scores[0] = 0.0;
        maps.fill(0.0);
        Ok(())
    }
}

/// What vigild feeds its model for every image of `dir`, in file-name order: the folder
/// capture source at the model's channel count, then `Pipeline::score_frame`.
fn vigild_inputs(dir: &Path, channels: usize, size: usize, n: usize) -> Vec<Vec<f32>> {
    let mut source = FolderSource::open(dir, 1000.0, channels).unwrap();
    let last = Arc::new(Mutex::new(Vec::new()));
    let backend = Box::new(Recorder {
        manifest: manifest(channels, size),
        last: last.clone(),
    });
    let stats = Arc::new(CaptureStats::default());
    let (mut pipeline, _results) = Pipeline::new(
        backend,
        PipelineOptions {
            budget: Duration::from_secs(10),
            roi: None,
            masks: MaskPolicy::None,
            source: source.geometry(),
        },
        Arc::new(Telemetry::new(stats.clone())),
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let mut frame = Frame::with_capacity(0);
    (0..n)
        .map(|_| {
            assert!(matches!(
                source.next(&mut frame, &stats, &stop).unwrap(),
                Next::Frame
            ));
            assert_eq!((frame.width, frame.height), (W, H));
            pipeline.score_frame(&frame).unwrap();
            last.lock().unwrap().clone()
        })
        .collect()
}

#[test]
fn host_loader_and_vigild_give_identical_tensors_for_640x480_frames() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("train").join("good");
    std::fs::create_dir_all(&good).unwrap();
    // File-name order is the replay order: grey frames first, then colour ones.
    let files = [
        ("a_grey.png", 1, 1),
        ("b_grey.png", 1, 2),
        ("c_rgb.png", 3, 3),
    ];
    for (name, ch, seed) in files {
        save(&good.join(name), &picture(ch, seed), ch);
    }
    let mut checked = 0;
    for (channels, size) in [(1, 64), (3, 64), (1, 128), (1, 32)] {
        let opts = LoadOptions {
            image_size: size,
            channels,
            data_root: None,
            seed: 0,
        };
        let ds = data::load(&DataSpec::Folder(dir.path().to_path_buf()), &opts).unwrap();
        let vigild = vigild_inputs(&good, channels, size, files.len());
        for ((name, ..), served) in files.iter().zip(&vigild) {
            let loaded = ds
                .train
                .iter()
                .chain(&ds.val)
                .find(|s| s.name == *name)
                .unwrap();
            assert_eq!(served.len(), channels * size * size);
            let first_diff = loaded.image.iter().zip(served).position(|(a, b)| a != b);
            assert_eq!(
                first_diff, None,
                "{name} at {channels}x{size}²: host loader and vigild differ"
            );
            // The one-file loader is the same path.
            let single = data::load_image_file(&good.join(name), size, channels).unwrap();
            assert_eq!(single, loaded.image, "{name}: load_image_file");
            // Real content survived: not a flat tensor.
            let (lo, hi) = served
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(hi - lo > 0.5, "{name}: range {lo}..{hi}");
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}
