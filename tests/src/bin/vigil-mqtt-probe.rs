//! Test helper for the `mqtt_*` tests: runs the appliance's MQTT publisher in a process of
//! its own so that a test can SIGKILL it and watch the broker publish the Last Will.
//!
//! `vigil-mqtt-probe PORT DEVICE_ID SPOOL_DIR FRAMES [--hold]`: connects to
//! 127.0.0.1:PORT, publishes FRAMES results, then either shuts down cleanly and prints the
//! publisher's final counters as JSON, or (`--hold`) keeps the connection open for up to
//! 60 s, waiting to be killed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vigil_appliance::pipeline::Record;
use vigil_appliance::publish::{PublishConfig, Publisher};
use vigil_shared::messages::{LatencyMs, ModelRef};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: vigil-mqtt-probe PORT DEVICE_ID SPOOL_DIR FRAMES [--hold]");
        return ExitCode::from(2);
    }
    let (Ok(port), Ok(frames)) = (args[0].parse::<u16>(), args[3].parse::<u64>()) else {
        eprintln!(
            "PORT {:?} and FRAMES {:?} must be numbers",
            args[0], args[3]
        );
        return ExitCode::from(2);
    };
    let hold = args.get(4).is_some_and(|a| a == "--hold");
    let model = ModelRef {
        id: "probe".into(),
        sha256: "0".repeat(64),
    };
    let cfg = match PublishConfig::new(
        "127.0.0.1",
        port,
        &args[1],
        "cam0",
        model,
        PathBuf::from(&args[2]),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let publisher = match Publisher::start(cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = publisher.handle();
    let source: Arc<str> = Arc::from("probe");
    for i in 0..frames {
        let report = Record {
            frame_id: i,
            capture_id: i,
            source: source.to_string(),
            captured_at: SystemTime::now(),
            score: 0.1,
            normalized_score: 0.1,
            threshold: 0.5,
            anomalous: false,
            latency: LatencyMs {
                capture: 0.1,
                infer: 1.0,
                total: 1.2,
            },
            ..Record::new(0, 0)
        };
        if handle.try_publish(report).is_err() {
            eprintln!("frame {i}: publisher queue full");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if hold {
        std::thread::sleep(Duration::from_secs(60));
        return ExitCode::SUCCESS;
    }
    match publisher.shutdown() {
        Ok(stats) => {
            println!("{}", serde_json::to_string(&stats).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
