//! The appliance's MQTT publisher against real brokers: mosquitto (started here on a free
//! loopback port) and the embedded rumqttd. Topics and payloads: docs/mqtt.md.

mod mqtt_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mqtt_support::{free_port, result_ids, wait_until, Mosquitto, Subscriber};
use vigil_appliance::pipeline::Record;
use vigil_appliance::publish::{start_embedded_broker, PublishConfig, Publisher, PublisherHandle};
use vigil_shared::mask::decode_png_gray;
use vigil_shared::messages::{LatencyMs, ModelRef};

const MASK: u32 = 16;

fn config(port: u16, device: &str, spool: &Path) -> PublishConfig {
    let model = ModelRef {
        id: "test-model".into(),
        sha256: "ab".repeat(32),
    };
    let mut c = PublishConfig::new(
        "127.0.0.1",
        port,
        device,
        "cam0",
        model,
        spool.to_path_buf(),
    )
    .unwrap();
    c.mqtt.stats_interval = Duration::from_millis(500);
    c.reconnect_max = Duration::from_millis(500);
    c.drain_timeout = Duration::from_secs(10);
    c.queue_capacity = 1024;
    c.backend = "tract f32, 1 thread".into();
    c
}

/// Every fifth frame is anomalous and carries a mask whose pixels encode its id.
fn report(i: u64, source: &Arc<str>) -> Record {
    let anomalous = i.is_multiple_of(5);
    Record {
        frame_id: i,
        capture_id: i,
        source: source.to_string(),
        captured_at: SystemTime::now(),
        score: if anomalous { 0.9 } else { 0.1 },
        normalized_score: if anomalous { 0.8 } else { 0.2 },
        threshold: 0.5,
        anomalous,
        latency: LatencyMs {
            capture: 0.25,
            infer: 2.5,
            total: 3.0,
        },
        label: None,
        mask: vec![(i % 256) as u8; (MASK * MASK) as usize],
        has_mask: anomalous,
        mask_width: MASK,
        mask_height: MASK,
        model_gen: 0,
    }
}

/// Sends frames `ids` `gap` apart; the queue is large enough that none is refused.
fn send(handle: &PublisherHandle, ids: std::ops::Range<u64>, gap: Duration) {
    let source: Arc<str> = Arc::from("part.png");
    for i in ids {
        assert!(
            handle.try_publish(report(i, &source)).is_ok(),
            "frame {i} refused: publisher queue full"
        );
        std::thread::sleep(gap);
    }
}

fn json(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload).expect("JSON payload")
}

/// N results in order with the documented fields, masks for the anomalous ones, stats,
/// retained status / state / discovery for a late subscriber, `stopped` after shutdown.
fn full_run(port: u16, device: &str) {
    const N: u64 = 120;
    let spool = tempfile::tempdir().unwrap();
    let prefix = format!("vigil/{device}");
    let sub = Subscriber::start(port, &format!("{device}-sub"), "#", false);
    assert!(
        sub.wait_connected(Duration::from_secs(10)),
        "subscriber never connected"
    );
    let publisher = Publisher::start(config(port, device, spool.path())).unwrap();
    let status = format!("{prefix}/status");
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .on(&status)
            .iter()
            .any(|m| json(&m.payload)["state"] == "online")),
        "no status online on {status}"
    );
    send(&publisher.handle(), 0..N, Duration::from_millis(2));

    let result = format!("{prefix}/cam0/result");
    assert!(
        wait_until(Duration::from_secs(20), || sub.count(&result) >= N as usize),
        "{} of {N} results arrived",
        sub.count(&result)
    );
    let results = sub.on(&result);
    assert_eq!(result_ids(&results), (0..N).collect::<Vec<_>>());
    for m in &results {
        assert!(!m.retain, "results are not retained");
        let v = json(&m.payload);
        let id = v["frame_id"].as_u64().unwrap();
        for k in [
            "source",
            "captured_at",
            "score",
            "normalized_score",
            "threshold",
            "anomalous",
        ] {
            assert!(v.get(k).is_some(), "result {id} lacks {k}: {v}");
        }
        assert_eq!(v["anomalous"], id.is_multiple_of(5));
        assert_eq!(v["source"], "part.png");
        assert_eq!(v["latency_ms"]["infer"], 2.5);
        assert_eq!(v["model"]["id"], "test-model");
        let at = v["captured_at"].as_str().unwrap();
        assert!(
            at.len() == 24 && at.ends_with('Z') && at.as_bytes()[19] == b'.',
            "{at}"
        );
    }

    let mask_topic = format!("{prefix}/cam0/mask");
    assert!(wait_until(Duration::from_secs(5), || sub
        .count(&mask_topic)
        >= (N / 5) as usize));
    let masks = sub.on(&mask_topic);
    let mask_ids: Vec<u64> = masks
        .iter()
        .map(|m| {
            let (pixels, w, h, text) = decode_png_gray(&m.payload).expect("mask is a PNG");
            assert_eq!((w, h), (MASK, MASK));
            let id: u64 = text
                .iter()
                .find(|(k, _)| k == "frame_id")
                .expect("frame_id text chunk")
                .1
                .parse()
                .unwrap();
            assert!(pixels.iter().all(|&p| u64::from(p) == id % 256));
            id
        })
        .collect();
    assert_eq!(mask_ids, (0..N).step_by(5).collect::<Vec<_>>());

    let stats = format!("{prefix}/stats");
    assert!(
        wait_until(Duration::from_secs(5), || sub.count(&stats) > 0),
        "no stats"
    );
    let s = json(&sub.on(&stats)[0].payload);
    for k in [
        "fps",
        "latency_ms",
        "deadline_misses",
        "dropped_frames",
        "spooled",
        "reconnects",
    ] {
        assert!(s.get(k).is_some(), "stats lack {k}: {s}");
    }

    // A dashboard connecting late gets the retained messages at once.
    let late = Subscriber::start(port, &format!("{device}-late"), "#", false);
    assert!(late.wait_connected(Duration::from_secs(10)));
    let state = format!("{prefix}/cam0/state");
    assert!(
        wait_until(Duration::from_secs(5), || !late.on(&status).is_empty()
            && late
                .on(&state)
                .iter()
                .any(|m| json(&m.payload)["frame_id"] == N - 1)),
        "late subscriber: status {:?}, state {:?}",
        late.on(&status).len(),
        late.on(&state)
            .iter()
            .map(|m| json(&m.payload)["frame_id"].clone())
            .collect::<Vec<_>>()
    );
    let st = late.on(&status);
    assert!(st[0].retain);
    assert_eq!(json(&st[0].payload)["state"], "online");
    assert_eq!(json(&st[0].payload)["model"], "test-model");
    // The engine line vigild hands the publisher (docs/mqtt.md, "Status").
    assert_eq!(json(&st[0].payload)["backend"], "tract f32, 1 thread");
    let node = format!("vigil_{device}");
    for t in [
        format!("homeassistant/sensor/{node}/cam0_score/config"),
        format!("homeassistant/binary_sensor/{node}/cam0_anomaly/config"),
    ] {
        assert!(
            wait_until(Duration::from_secs(5), || !late.on(&t).is_empty()),
            "no retained discovery on {t}"
        );
        let d = &late.on(&t)[0];
        assert!(d.retain);
        let v = json(&d.payload);
        assert_eq!(v["state_topic"], state);
        assert_eq!(v["availability"][0]["topic"], status);
    }

    let fin = publisher.shutdown().unwrap();
    assert_eq!(fin.published, N);
    assert_eq!(
        (fin.spool_dropped, fin.spooled, fin.publish_errors),
        (0, 0, 0)
    );
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .on(&status)
            .iter()
            .any(|m| json(&m.payload)["state"] == "stopped")),
        "no status stopped after a clean shutdown"
    );
    let after = Subscriber::start(port, &format!("{device}-after"), &status, false);
    assert!(after.wait_connected(Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(5), || !after
        .on(&status)
        .is_empty()));
    assert_eq!(json(&after.on(&status)[0].payload)["state"], "stopped");
}

#[test]
fn mqtt_results_masks_status_state_stats_discovery_on_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::new(dir.path(), free_port());
    broker.start();
    full_run(broker.port, "mosq-full");
}

#[test]
fn mqtt_results_masks_status_state_stats_discovery_on_embedded_broker() {
    let port = free_port();
    start_embedded_broker(port).unwrap();
    full_run(port, "emb-full");
}

/// SIGKILL of the publishing process: the broker publishes the retained Last Will `offline`.
fn last_will(port: u16, device: &str) {
    let spool = tempfile::tempdir().unwrap();
    let status = format!("vigil/{device}/status");
    let sub = Subscriber::start(port, &format!("{device}-sub"), &status, false);
    assert!(sub.wait_connected(Duration::from_secs(10)));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-mqtt-probe"))
        .args([
            &port.to_string(),
            device,
            &spool.path().display().to_string(),
            "5",
            "--hold",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let online = wait_until(Duration::from_secs(10), || {
        sub.on(&status)
            .iter()
            .any(|m| json(&m.payload)["state"] == "online")
    });
    let _ = child.kill(); // SIGKILL: no clean DISCONNECT, so the will fires
    let _ = child.wait();
    assert!(online, "probe never reported online");
    assert!(
        wait_until(Duration::from_secs(10), || sub
            .on(&status)
            .iter()
            .any(|m| json(&m.payload)["state"] == "offline")),
        "no Last Will after SIGKILL: {:?}",
        sub.on(&status)
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect::<Vec<_>>()
    );
    // Retained: a dashboard connecting now sees `offline`.
    let late = Subscriber::start(port, &format!("{device}-late"), &status, false);
    assert!(late.wait_connected(Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(5), || !late
        .on(&status)
        .is_empty()));
    let v = json(&late.on(&status)[0].payload);
    assert_eq!(v["state"], "offline", "{v}");
    assert_eq!(v["model"], "probe");
}

#[test]
fn mqtt_sigkill_makes_mosquitto_publish_offline() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::new(dir.path(), free_port());
    broker.start();
    last_will(broker.port, "mosq-lwt");
}

#[test]
fn mqtt_sigkill_makes_embedded_broker_publish_offline() {
    let port = free_port();
    start_embedded_broker(port).unwrap();
    last_will(port, "emb-lwt");
}
