//! Snapshots over MQTT (`…/<camera>/snapshot`), against mosquitto: vigild scores synthetic
//! parts (10 % defective) with a region of interest and publishes JPEG overlays, retained, at
//! most one per `snapshot_interval_s`; `snapshots = "anomalous"` sends only frames judged
//! anomalous (their ROI outline is red); Home Assistant gets an `image` entity for them.

mod model_support;

mod mqtt_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use mqtt_support::{free_port, Mosquitto, Subscriber};
use vigil_shared::messages::FrameResult;
use vigil_tests::workspace_bin;

/// Decodes a snapshot: a 128² JPEG (the synthetic frame), and whether its ROI outline is red.
fn decode(jpeg: &[u8]) -> bool {
    let img = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .expect("a snapshot is a JPEG")
        .to_rgb8();
    assert_eq!(img.dimensions(), (128, 128), "the whole frame");
    let p = img.get_pixel(16, 60).0.map(i32::from);
    let near = |c: [i32; 3]| (0..3).all(|k| (p[k] - c[k]).abs() < 50);
    assert!(
        near([230, 40, 30]) || near([40, 200, 80]),
        "no ROI outline at (16, 60): {p:?}"
    );
    near([230, 40, 30])
}

#[test]
fn mqtt_snapshots_are_rate_limited_jpegs_of_the_frames_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_support::small_model(dir.path());
    let mut broker = Mosquitto::new(dir.path(), free_port());
    broker.start();
    let run = |device: &str, policy: &str, every: &str, frames: &str, fps: &str| {
        let sub = Subscriber::start(broker.port, &format!("{device}-sub"), "#", false);
        assert!(sub.wait_connected(Duration::from_secs(10)));
        let out = Command::new(workspace_bin("vigild"))
            .arg("--model")
            .arg(&model)
            .args(["--source", "synthetic", "--fps", fps, "--frames", frames])
            .args(["--roi", "16,16,96,96", "--device-id", device])
            .arg("--broker")
            .arg(format!("mqtt://127.0.0.1:{}", broker.port))
            .arg("--spool-dir")
            .arg(dir.path().join(format!("spool-{device}")))
            .args(["--snapshots", policy, "--snapshot-interval-s", every])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
        sub
    };

    // Every frame, at most every 0.5 s, over 150 frames (5 s at 30 fps).
    let sub = run("snap-all", "all", "0.5", "150", "30");
    let snaps = sub.on("vigil/snap-all/cam0/snapshot");
    eprintln!(
        "snapshots = all, every 0.5 s, 5 s of frames: {} snapshots",
        snaps.len()
    );
    assert!(
        (5..=12).contains(&snaps.len()),
        "{} snapshots in 5 s at one per 0.5 s",
        snaps.len()
    );
    for s in &snaps {
        decode(&s.payload);
    }
    let image = sub.on("homeassistant/image/vigil_snap-all/cam0_snapshot/config");
    let config: serde_json::Value = serde_json::from_slice(&image[0].payload).unwrap();
    assert_eq!(config["image_topic"], "vigil/snap-all/cam0/snapshot");
    assert_eq!(config["content_type"], "image/jpeg");
    // Retained: a dashboard that connects later sees the newest at once.
    let late = Subscriber::start(broker.port, "late", "vigil/snap-all/cam0/snapshot", false);
    assert!(late.wait_connected(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(500));
    let kept = late.on("vigil/snap-all/cam0/snapshot");
    assert!(kept.len() == 1 && kept[0].retain, "no retained snapshot");
    assert_eq!(kept[0].payload, snaps.last().unwrap().payload);

    // Only anomalous frames, over 300 frames scored in lockstep (every frame, none dropped:
    // the same parts, and the same anomalous ones, in every run).
    let sub = run("snap-bad", "anomalous", "0.05", "300", "0");
    let anomalous = sub
        .on("vigil/snap-bad/cam0/result")
        .iter()
        .filter(|m| {
            let r: FrameResult = serde_json::from_slice(&m.payload).unwrap();
            r.anomalous
        })
        .count();
    let snaps = sub.on("vigil/snap-bad/cam0/snapshot");
    eprintln!(
        "snapshots = anomalous: {} snapshots for {anomalous} anomalous frames of 300",
        snaps.len()
    );
    assert!(anomalous > 0, "no anomalous frame: the test shows nothing");
    assert!(!snaps.is_empty() && snaps.len() <= anomalous);
    for s in &snaps {
        assert!(decode(&s.payload), "a snapshot of a good frame");
    }
}
