//! `/metrics`: vigild's counters, latency histograms and spool gauges in the Prometheus text
//! format (version 0.0.4), named as Prometheus advises: `vigild_` prefix, base units
//! (seconds, bytes), `_total` on counters.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use vigil_shared::messages::PublisherStats;

use crate::pipeline::{Stage, Telemetry};

/// Histogram bucket bounds in seconds: 1 ms to 2.5 s, around a 30 fps frame budget.
const BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5,
];

/// What the page and `/metrics` say about the model.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    pub id: String,
    pub detector: String,
    pub sha256: String,
    pub threshold: f32,
    /// e.g. `1×64×64`.
    pub input: String,
    /// The engine line vigild logged at start, e.g. `tract f32, 1 thread`.
    pub backend: String,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Label values escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn histogram(out: &mut String, t: &Telemetry, stage: Stage, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let (buckets, count, sum) = t.with_totals(|h| {
        let h = h.get(stage);
        let b: Vec<u64> = BUCKETS
            .iter()
            .map(|s| h.count_between(0, (s * 1e6) as u64))
            .collect();
        (b, h.len(), h.mean() * h.len() as f64 / 1e6)
    });
    for (le, n) in BUCKETS.iter().zip(buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
}

/// The whole `/metrics` page.
pub fn render(t: &Telemetry, model: &ModelInfo, publisher: Option<&PublisherStats>) -> String {
    let mut o = String::with_capacity(4096);
    let labels = format!(
        "model=\"{}\",detector=\"{}\",sha256=\"{}\",input=\"{}\",backend=\"{}\"",
        label(&model.id),
        label(&model.detector),
        label(&model.sha256),
        label(&model.input),
        label(&model.backend)
    );
    let help = "The model bundle being scored (always 1).";
    let _ = writeln!(
        o,
        "# HELP vigild_model_info {help}\n# TYPE vigild_model_info gauge"
    );
    let _ = writeln!(o, "vigild_model_info{{{labels}}} 1");
    for (name, kind, help, value) in loop_metrics(t, model) {
        metric(&mut o, name, kind, help, value);
    }
    histogram(
        &mut o,
        t,
        Stage::Infer,
        "vigild_inference_seconds",
        "Model inference time per frame.",
    );
    histogram(
        &mut o,
        t,
        Stage::Total,
        "vigild_frame_seconds",
        "Capture-to-result time per frame.",
    );
    for (name, kind, help, value) in publisher.map(publisher_metrics).into_iter().flatten() {
        metric(&mut o, name, kind, help, value);
    }
    o
}

type Metric = (&'static str, &'static str, &'static str, f64);

/// The scoring loop's and the capture's figures: (name, type, help, value).
fn loop_metrics(t: &Telemetry, model: &ModelInfo) -> [Metric; 12] {
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let c = t.capture.counts();
    let up = t.started.elapsed().as_secs_f64();
    [
        (
            "vigild_threshold",
            "gauge",
            "Raw-score threshold of the model.",
            f64::from(model.threshold),
        ),
        (
            "vigild_uptime_seconds",
            "gauge",
            "Seconds since vigild started.",
            up,
        ),
        (
            "vigild_frames_total",
            "counter",
            "Frames scored.",
            g(&t.frames),
        ),
        (
            "vigild_deadline_misses_total",
            "counter",
            "Frames whose capture-to-result time exceeded the budget.",
            g(&t.deadline_misses),
        ),
        (
            "vigild_frame_errors_total",
            "counter",
            "Frames skipped because they could not be preprocessed.",
            g(&t.frame_errors),
        ),
        (
            "vigild_results_queue_full_total",
            "counter",
            "Results dropped because the publisher was behind.",
            g(&t.queue_full),
        ),
        (
            "vigild_reloads_total",
            "counter",
            "Hot model reloads swapped in.",
            g(&t.reloads),
        ),
        (
            "vigild_reloads_refused_total",
            "counter",
            "Hot model reloads refused.",
            g(&t.reloads_refused),
        ),
        (
            "vigild_captured_frames_total",
            "counter",
            "Frames taken from the source.",
            c.captured as f64,
        ),
        (
            "vigild_dropped_frames_total",
            "counter",
            "Frames replaced by a newer one before they were scored.",
            c.dropped as f64,
        ),
        (
            "vigild_capture_errors_total",
            "counter",
            "Frames that could not be read or converted.",
            c.errors as f64,
        ),
        (
            "vigild_camera_reopens_total",
            "counter",
            "Camera reopens after a failure.",
            c.reopens as f64,
        ),
    ]
}

/// The publisher's figures: (name, type, help, value).
fn publisher_metrics(p: &PublisherStats) -> [Metric; 7] {
    [
        (
            "vigild_spool_records",
            "gauge",
            "Records in the on-disk spool not yet acknowledged by the broker.",
            p.spooled as f64,
        ),
        (
            "vigild_spool_bytes",
            "gauge",
            "Bytes in the on-disk spool.",
            p.spool_bytes as f64,
        ),
        (
            "vigild_spool_dropped_total",
            "counter",
            "Records dropped because the spool was full or unreadable.",
            p.spool_dropped as f64,
        ),
        (
            "vigild_published_total",
            "counter",
            "Results acknowledged by the broker.",
            p.published as f64,
        ),
        (
            "vigild_mqtt_reconnects_total",
            "counter",
            "Connections to the broker after the first one.",
            p.reconnects as f64,
        ),
        (
            "vigild_mqtt_connect_failures_total",
            "counter",
            "Failed connection attempts to the broker.",
            p.connect_failures as f64,
        ),
        (
            "vigild_publish_errors_total",
            "counter",
            "Messages lost to a local fault.",
            p.publish_errors as f64,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let t = Telemetry::new(Arc::default());
        for ms in [3, 12, 12, 40, 700] {
            t.record(&[(Stage::Infer, Duration::from_millis(ms))]);
        }
        let text = render(&t, &ModelInfo::default(), None);
        let bucket = |le: &str| -> u64 {
            let key = format!("vigild_inference_seconds_bucket{{le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key)).unwrap();
            line[key.len()..].parse().unwrap()
        };
        assert_eq!(bucket("0.002"), 0);
        assert_eq!(bucket("0.005"), 1);
        assert_eq!(bucket("0.02"), 3);
        assert_eq!(bucket("0.05"), 4);
        assert_eq!(bucket("+Inf"), 5);
        assert!(text.contains("vigild_inference_seconds_count 5"));
        assert!(
            !text.contains("vigild_spool_bytes"),
            "no publisher, no spool gauges"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
