//! `/api/state` (what the page shows besides the image) and `/healthz`.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use super::Sources;
use crate::pipeline::Stage;

/// Frames per second between two `/api/state` calls.
#[derive(Default)]
pub(super) struct Rate(Mutex<Option<(Instant, u64, f64)>>);

impl Rate {
    fn fps(&self, frames: u64) -> f64 {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let fps = match *g {
            // Under half a second apart: keep the last figure rather than a noisy one.
            Some((t, _, fps)) if now.duration_since(t).as_secs_f64() < 0.5 => {
                return fps.max(0.0);
            }
            Some((t, n, _)) => {
                (frames.saturating_sub(n)) as f64 / now.duration_since(t).as_secs_f64()
            }
            None => 0.0,
        };
        *g = Some((now, frames, fps));
        fps
    }
}

/// 200 while frames are being scored, else 503 with the reason.
pub(super) fn health(src: &Sources) -> (u16, String) {
    let t = &src.telemetry;
    let since = src.view.since_last_frame();
    match since {
        Some(d) if d <= src.stale_after => (
            200,
            format!(
                "ok: {} frames scored, the last {:.0} ms ago\n",
                t.frames.load(Ordering::Relaxed),
                d.as_secs_f64() * 1000.0
            ),
        ),
        Some(d) => (
            503,
            format!("stale: no frame scored for {:.1} s\n", d.as_secs_f64()),
        ),
        None => (503, "starting: no frame scored yet\n".into()),
    }
}

pub(super) fn json(src: &Sources, rate: &Rate) -> Value {
    let t = &src.telemetry;
    let frames = t.frames.load(Ordering::Relaxed);
    let c = t.capture.counts();
    let (infer, total) = t.with_totals(|h| {
        let q = |s: Stage| json!({"p50": h.ms(s, 0.5), "p99": h.ms(s, 0.99)});
        (q(Stage::Infer), q(Stage::Total))
    });
    let history = src.view.history();
    let last = history.last().map(|&(id, s)| {
        // `normalized_score` puts the threshold at 0.5.
        json!({"frame_id": id, "normalized_score": s, "anomalous": s >= 0.5})
    });
    let roi = src.view.roi().map(|r| json!([r.x, r.y, r.w, r.h]));
    let m = &src.model_now();
    json!({
        "device": src.device,
        "camera": src.camera,
        "model": {"id": m.id, "detector": m.detector, "input": m.input,
                  "threshold": m.threshold, "sha256": m.sha256, "backend": m.backend},
        "roi": roi,
        "frames": frames,
        "fps": rate.fps(frames),
        "deadline_misses": t.deadline_misses.load(Ordering::Relaxed),
        "dropped_frames": c.dropped,
        "capture_errors": c.errors,
        "latency_ms": {"infer": infer, "total": total},
        "last": last,
        "history": history.iter().map(|&(id, s)| json!([id, s])).collect::<Vec<_>>(),
        "publisher": src.publisher.as_ref().map(|p| p.stats()),
        "healthy": health(src).0 == 200,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::capture::Frame;
    use crate::live::ModelInfo;
    use crate::pipeline::{Telemetry, ViewTap};

    fn sources(stale_after: Duration) -> Sources {
        Sources {
            view: Arc::new(ViewTap::default()),
            telemetry: Arc::new(Telemetry::new(Arc::default())),
            publisher: None,
            model: ModelInfo::default(),
            models: None,
            device: "d".into(),
            camera: "c".into(),
            stale_after,
        }
    }

    #[test]
    fn health_is_ok_only_while_frames_are_scored() {
        let src = sources(Duration::from_millis(50));
        assert_eq!(health(&src).0, 503, "no frame yet");
        src.view.offer_for_test(&Frame::with_capacity(0));
        let (code, body) = health(&src);
        assert_eq!(code, 200, "{body}");
        std::thread::sleep(Duration::from_millis(80));
        let (code, body) = health(&src);
        assert_eq!(code, 503);
        assert!(body.starts_with("stale: no frame scored for"), "{body}");
        let s = json(&src, &Rate::default());
        assert_eq!(s["healthy"], false);
        assert_eq!(s["history"].as_array().unwrap().len(), 1);
    }
}
