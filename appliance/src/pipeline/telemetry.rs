//! Latency histograms and counters of the scoring loop, shared with the stats publisher.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use vigil_shared::messages::{Percentiles, PipelineStats, StageLatency};

use crate::capture::CaptureStats;

/// Latency stages recorded per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading + converting on the capture thread.
    Capture,
    /// Mailbox wait excluded: crop, resize, normalise on the scoring thread.
    Preprocess,
    Infer,
    /// Score normalisation, mask quantisation, hand-over to the publisher.
    Post,
    /// Frame acquired → result handed over.
    Total,
    /// Total minus inference: what the loop itself costs (capture conversion, mailbox wait,
    /// preprocessing, post-processing, hand-over).
    Overhead,
}

pub const STAGES: [Stage; 6] = [
    Stage::Capture,
    Stage::Preprocess,
    Stage::Infer,
    Stage::Post,
    Stage::Total,
    Stage::Overhead,
];

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Preprocess => "preprocess",
            Stage::Infer => "infer",
            Stage::Post => "post",
            Stage::Total => "total",
            Stage::Overhead => "overhead",
        }
    }
}

/// Microsecond histograms, one per stage.
#[derive(Clone)]
pub struct Hists(pub [Histogram<u64>; 6]);

impl Hists {
    fn new() -> Hists {
        // 1 µs .. 10 min at 3 significant digits: fixed size, recording never allocates.
        let h = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds");
        Hists([h(), h(), h(), h(), h(), h()])
    }
    fn record(&mut self, stage: Stage, d: Duration) {
        let us = (d.as_micros() as u64).max(1);
        self.0[stage as usize].saturating_record(us);
    }
    pub fn get(&self, stage: Stage) -> &Histogram<u64> {
        &self.0[stage as usize]
    }
    /// Percentile of a stage in milliseconds.
    pub fn ms(&self, stage: Stage, q: f64) -> f64 {
        let h = self.get(stage);
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    }
    fn reset(&mut self) {
        self.0.iter_mut().for_each(Histogram::reset);
    }
}

/// Counters and histograms of the scoring loop, shared with the stats publisher.
pub struct Telemetry {
    pub frames: AtomicU64,
    pub deadline_misses: AtomicU64,
    /// Results not handed to the publisher because its queue was full.
    pub queue_full: AtomicU64,
    /// Frames skipped because they could not be preprocessed (e.g. ROI outside a frame).
    pub frame_errors: AtomicU64,
    /// Hot reloads swapped in by the scoring loop.
    pub reloads: AtomicU64,
    /// Hot reloads refused by the reload thread (the old model kept running).
    pub reloads_refused: AtomicU64,
    pub capture: Arc<CaptureStats>,
    /// When the scoring loop last went round, in ns since `started` ([`Telemetry::beat`]).
    heartbeat_ns: AtomicU64,
    /// Since start.
    pub total: Mutex<Hists>,
    /// Since the last [`Telemetry::take_window`].
    window: Mutex<(Hists, u64, Instant)>,
    pub started: Instant,
}

impl Telemetry {
    pub fn new(capture: Arc<CaptureStats>) -> Telemetry {
        Telemetry {
            frames: AtomicU64::new(0),
            deadline_misses: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            frame_errors: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
            capture,
            heartbeat_ns: AtomicU64::new(0),
            total: Mutex::new(Hists::new()),
            window: Mutex::new((Hists::new(), 0, Instant::now())),
            started: Instant::now(),
        }
    }

    pub(crate) fn record(&self, lat: &[(Stage, Duration)]) {
        let mut t = self.total.lock().unwrap_or_else(|p| p.into_inner());
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        for &(s, d) in lat {
            t.record(s, d);
            w.0.record(s, d);
        }
        w.1 += 1;
    }

    /// Reads the since-start histograms in place (no copy: the loop waits on this lock, so
    /// keep `f` short).
    pub fn with_totals<T>(&self, f: impl FnOnce(&Hists) -> T) -> T {
        f(&self.total.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stamped by the scoring loop on every iteration, frame or not (the systemd watchdog
    /// and health checks read it).
    pub fn beat(&self) {
        let ns = self.started.elapsed().as_nanos() as u64;
        self.heartbeat_ns.store(ns, Ordering::Relaxed);
    }

    /// How long ago the scoring loop last went round (since start if it never did).
    pub fn since_beat(&self) -> Duration {
        let at = Duration::from_nanos(self.heartbeat_ns.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(at)
    }

    /// The `…/stats` pipeline figures: counters since start, fps and percentiles over the
    /// window since the previous call (which this call starts anew).
    pub fn take_window(&self) -> PipelineStats {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let secs = w.2.elapsed().as_secs_f64();
        let pct = |s: Stage| Percentiles {
            p50: w.0.ms(s, 0.5),
            p99: w.0.ms(s, 0.99),
        };
        let c = self.capture.counts();
        let stats = PipelineStats {
            frames: self.frames.load(Ordering::Relaxed),
            fps: if secs > 0.0 { w.1 as f64 / secs } else { 0.0 },
            latency_ms: StageLatency {
                capture: pct(Stage::Capture),
                infer: pct(Stage::Infer),
                total: pct(Stage::Total),
            },
            deadline_misses: self.deadline_misses.load(Ordering::Relaxed),
            dropped_frames: c.dropped + c.drained,
            capture_errors: c.timeouts + c.errors + c.reopens,
            reloads: self.reloads.load(Ordering::Relaxed),
            reloads_refused: self.reloads_refused.load(Ordering::Relaxed),
        };
        w.0.reset();
        w.1 = 0;
        w.2 = Instant::now();
        stats
    }

    /// Histograms since start.
    pub fn totals(&self) -> Hists {
        self.total.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
