//! The scoring loop ([`Pipeline`]): newest frame → ROI crop → resize/normalise → backend →
//! score, mask → a [`Record`](super::Record) for the publisher, at a fixed per-frame budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_shared::manifest::{InputSpec, Normalisation};
use vigil_shared::messages::LatencyMs;
use vigil_shared::preprocess::Preprocessor;

use super::records::{result_channel, ResultPort, Results, RESULT_QUEUE};
use super::telemetry::{Stage, Telemetry};
use super::view::{Scored, ViewTap};
use super::PipelineError;
use crate::backend::Backend;
use crate::capture::{convert, Frame, Mailbox, Take};
use crate::config::{MaskPolicy, Roi};
use crate::reload::Swap;

/// Backend calls on zero input before the first frame: the first runs pay for lazy
/// initialisation and cold caches, which must not count as a deadline miss.
pub const WARMUP_RUNS: usize = 3;

/// Where ready backends arrive from the reload thread, and where replaced ones go back.
type SwapPorts = (Receiver<Swap>, SyncSender<Box<dyn Backend>>);

pub struct PipelineOptions {
    pub budget: Duration,
    pub roi: Option<Roi>,
    pub masks: MaskPolicy,
    /// Source geometry (width, height, channels) to preallocate for.
    pub source: (usize, usize, usize),
}

pub struct Pipeline {
    backend: Box<dyn Backend>,
    spec: InputSpec,
    norm: Normalisation,
    /// Upper end of the anomaly-map scale for mask PNGs (see `map_scale`).
    map_hi: f32,
    budget: Duration,
    roi: Option<Roi>,
    masks: MaskPolicy,
    pre: Preprocessor,
    pre_src: (usize, usize, usize),
    crop: Vec<u8>,
    input: Vec<f32>,
    scores: Vec<f32>,
    map: Vec<f32>,
    frame: Frame,
    port: ResultPort,
    telemetry: Arc<Telemetry>,
    view: Arc<ViewTap>,
    scored: u64,
    /// Ready backends from the reload thread, and the way back for the replaced ones.
    swaps: Option<SwapPorts>,
    model_gen: u32,
    /// Duration of the warm-up, for the log.
    pub warmup: Duration,
}

/// Scale of the anomaly map for mask PNGs ([`Manifest::map_scale`]).
///
/// [`Manifest::map_scale`]: vigil_shared::manifest::Manifest::map_scale
pub(crate) fn map_scale(m: &vigil_shared::manifest::Manifest) -> f32 {
    m.map_scale()
}

impl Pipeline {
    /// Allocates every buffer and warms the backend up. Returns the pipeline and the
    /// publisher's end of the result channel.
    pub fn new(
        backend: Box<dyn Backend>,
        opts: PipelineOptions,
        telemetry: Arc<Telemetry>,
    ) -> Result<(Pipeline, Results), PipelineError> {
        let m = backend.manifest().clone();
        let spec = m.input.clone();
        let (sw, sh, sc) = opts.source;
        let (pw, ph) = match opts.roi {
            Some(r) => {
                if r.x + r.w > sw || r.y + r.h > sh {
                    return Err(PipelineError::Roi {
                        x: r.x,
                        y: r.y,
                        w: r.w,
                        h: r.h,
                        width: sw,
                        height: sh,
                    });
                }
                (r.w, r.h)
            }
            None => (sw, sh),
        };
        let pre = Preprocessor::new(&spec, sc, ph, pw)?;
        let plane = spec.height * spec.width;
        let (port, results) = result_channel(RESULT_QUEUE, spec.height, spec.width);
        let mut p = Pipeline {
            map_hi: map_scale(&m),
            backend,
            norm: m.normalisation.clone(),
            budget: opts.budget,
            roi: opts.roi,
            masks: opts.masks,
            input: vec![0.0; pre.output_len()],
            pre,
            pre_src: (pw, ph, sc),
            crop: vec![0; pw * ph * sc],
            scores: vec![0.0; 1],
            map: vec![0.0; plane],
            frame: Frame::with_capacity(sw * sh * sc),
            port,
            telemetry,
            view: Arc::new(ViewTap::new(opts.roi)),
            scored: 0,
            swaps: None,
            model_gen: 0,
            warmup: Duration::ZERO,
            spec,
        };
        let t0 = Instant::now();
        // Warm-up on a mid-gray frame through the real preprocessing path.
        let gray = vec![128u8; pw * ph * sc];
        p.pre.run(&gray, &mut p.input)?;
        for _ in 0..WARMUP_RUNS {
            p.backend
                .score(&p.input, 1, &mut p.scores, &mut p.map)
                .map_err(|e| PipelineError::Warmup(e.to_string()))?;
        }
        p.warmup = t0.elapsed();
        Ok((p, results))
    }

    /// Where viewers (the live page, snapshots) get copies of scored frames.
    pub fn view(&self) -> Arc<ViewTap> {
        self.view.clone()
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Enables hot reload: returns the reload thread's ends (ready backends in, replaced
    /// backends out, see [`crate::reload::Reloader::spawn`]).
    pub fn reload_channel(&mut self) -> (SyncSender<Swap>, Receiver<Box<dyn Backend>>) {
        let (swap_tx, swap_rx) = mpsc::sync_channel(1);
        let (ret_tx, ret_rx) = mpsc::sync_channel(2);
        self.swaps = Some((swap_rx, ret_tx));
        (swap_tx, ret_rx)
    }

    /// Swaps in a backend the reload thread has made ready: a few pointer moves, between two
    /// frames. The old backend is freed on the reload thread.
    fn take_swap(&mut self) {
        let Some((rx, retire)) = &self.swaps else {
            return;
        };
        let Ok(s) = rx.try_recv() else {
            return;
        };
        let old = std::mem::replace(&mut self.backend, s.backend);
        self.norm = s.norm;
        self.map_hi = s.map_hi;
        self.model_gen = s.gen;
        // Full only if two swaps arrive within a frame: then it is freed here, once.
        let _ = retire.try_send(old);
        self.telemetry.reloads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn input_spec(&self) -> &InputSpec {
        &self.spec
    }

    /// Takes frames from `mailbox` and scores them until `stop`, `max_frames` scored, or the
    /// capture thread ends. Returns the number scored.
    pub fn run(
        &mut self,
        mailbox: &Mailbox,
        stop: &AtomicBool,
        max_frames: Option<u64>,
    ) -> Result<u64, PipelineError> {
        let mut frame = std::mem::replace(&mut self.frame, Frame::with_capacity(0));
        let result = loop {
            self.telemetry.beat();
            if stop.load(Ordering::Relaxed) || max_frames.is_some_and(|n| self.scored >= n) {
                break Ok(self.scored);
            }
            match mailbox.take(&mut frame, Duration::from_millis(100)) {
                Take::Frame => {}
                Take::Timeout => continue,
                Take::Closed => break Ok(self.scored),
            }
            if let Err(e) = self.score_frame(&frame) {
                break Err(e);
            }
        };
        self.frame = frame;
        result
    }

    /// Scores one frame and hands the record to the publisher. Allocation-free once the
    /// source geometry is stable.
    pub fn score_frame(&mut self, frame: &Frame) -> Result<(), PipelineError> {
        self.take_swap();
        let t_pre = Instant::now();
        if let Err(e) = self.preprocess(frame) {
            self.telemetry.frame_errors.fetch_add(1, Ordering::Relaxed);
            // Once per kind of fault would be nicer; a bad frame is rare and the counter is
            // the record that matters.
            log_warn!("frame {} ({}) skipped: {e}", frame.id, frame.source);
            return Ok(());
        }
        let t_inf = Instant::now();
        self.backend
            .score(&self.input, 1, &mut self.scores, &mut self.map)?;
        let t_post = Instant::now();

        let score = self.scores[0];
        let anomalous = self.norm.is_anomalous(score);
        let wants_mask = self.masks.wants(anomalous);
        let frame_id = self.scored;
        self.scored += 1;
        let (norm, model_gen, map_hi, map) = (&self.norm, self.model_gen, self.map_hi, &self.map);
        let sent = self.port.send(|rec| {
            rec.frame_id = frame_id;
            rec.capture_id = frame.id;
            rec.source.clear();
            rec.source.push_str(&frame.source);
            rec.captured_at = frame.captured_at;
            rec.score = score;
            rec.normalized_score = norm.normalise(score);
            rec.threshold = norm.threshold;
            rec.anomalous = anomalous;
            rec.label = frame.label;
            rec.model_gen = model_gen;
            rec.has_mask = wants_mask;
            if wants_mask {
                vigil_shared::mask::to_u8(map, 0.0, map_hi, &mut rec.mask);
            }
            rec.latency = LatencyMs {
                capture: ms(t_inf.saturating_duration_since(frame.acquired)),
                infer: ms(t_post - t_inf),
                total: ms(Instant::now().saturating_duration_since(frame.acquired)),
            };
        });
        if !sent {
            // The publisher is behind (or gone): dropped and counted, never waited for.
            self.telemetry.queue_full.fetch_add(1, Ordering::Relaxed);
        }
        self.view.offer(
            frame,
            &Scored {
                frame_id,
                roi: self.roi,
                map: &self.map,
                map_w: self.spec.width,
                map_h: self.spec.height,
                map_hi: self.map_hi,
                score,
                normalized_score: self.norm.normalise(score),
                anomalous,
                at: t_post,
            },
        );
        let end = Instant::now();
        let total = end.saturating_duration_since(frame.acquired);
        if total > self.budget {
            self.telemetry
                .deadline_misses
                .fetch_add(1, Ordering::Relaxed);
        }
        self.telemetry.frames.fetch_add(1, Ordering::Relaxed);
        self.telemetry.record(&[
            (Stage::Capture, frame.capture_time),
            (Stage::Preprocess, t_inf - t_pre),
            (Stage::Infer, t_post - t_inf),
            (Stage::Post, end - t_post),
            (Stage::Total, total),
            (Stage::Overhead, total.saturating_sub(t_post - t_inf)),
        ]);
        Ok(())
    }

    fn preprocess(&mut self, frame: &Frame) -> Result<(), PipelineError> {
        let (w, h, c) = (frame.width, frame.height, frame.channels);
        let (pw, ph) = self.roi.map_or((w, h), |r| (r.w, r.h));
        if (pw, ph, c) != self.pre_src {
            // A source whose frame size changed (a folder of mixed sizes, a camera reopened
            // at another size): rebuild once, the only allocation on this path.
            self.pre = Preprocessor::new(&self.spec, c, ph, pw)?;
            self.crop.resize(pw * ph * c, 0);
            self.pre_src = (pw, ph, c);
        }
        match &self.roi {
            Some(r) => {
                convert::crop(&frame.data, w, h, c, r, &mut self.crop).map_err(|_| {
                    PipelineError::Roi {
                        x: r.x,
                        y: r.y,
                        w: r.w,
                        h: r.h,
                        width: w,
                        height: h,
                    }
                })?;
                self.pre.run(&self.crop, &mut self.input)?;
            }
            None => self.pre.run(&frame.data, &mut self.input)?,
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureStats;
    use crate::pipeline::testing::*;

    fn pipeline(
        delay_ms: u64,
        budget_ms: u64,
        roi: Option<Roi>,
    ) -> (Pipeline, Results, Arc<Telemetry>) {
        let tel = Arc::new(Telemetry::new(Arc::new(CaptureStats::default())));
        let backend = Box::new(MeanBackend {
            manifest: manifest(1, 8),
            delay: Duration::from_millis(delay_ms),
        });
        let (p, r) = Pipeline::new(
            backend,
            PipelineOptions {
                budget: Duration::from_millis(budget_ms),
                roi,
                masks: MaskPolicy::Anomalous,
                source: (16, 16, 1),
            },
            tel.clone(),
        )
        .unwrap();
        (p, r, tel)
    }

    fn frame(v: u8) -> Frame {
        let mut f = Frame::with_capacity(256);
        f.shape(16, 16, 1);
        f.data.fill(v);
        f.set_source("x.png");
        f.acquired = Instant::now();
        f
    }

    #[test]
    fn scores_threshold_and_masks() {
        let (mut p, results, tel) = pipeline(0, 1000, None);
        p.score_frame(&frame(0)).unwrap(); // input -1 → score -1: normal
        p.score_frame(&frame(255)).unwrap(); // +1: anomalous
        let a = results.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!((a.frame_id, a.anomalous, a.has_mask), (0, false, false));
        assert_eq!(a.normalized_score, 0.0);
        assert!(a.mask_png().is_none());
        let b = results.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!((b.frame_id, b.anomalous, b.has_mask), (1, true, true));
        assert_eq!(b.source, "x.png");
        let png = b.mask_png().unwrap().unwrap();
        let (px, w, h, text) = vigil_shared::mask::decode_png_gray(&png).unwrap();
        assert_eq!((w, h), (8, 8));
        // map = 1.0 on a scale of 0..2 (input range span) → 128.
        assert!(px.iter().all(|&v| v == 128), "{px:?}");
        assert_eq!(text, vec![("frame_id".into(), "1".into())]);
        assert_eq!(tel.frames.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn deadline_misses_are_counted() {
        // Budget 5 ms, inference 8 ms: every frame misses.
        let (mut p, _r, tel) = pipeline(8, 5, None);
        for _ in 0..3 {
            p.score_frame(&frame(10)).unwrap();
        }
        assert_eq!(tel.deadline_misses.load(Ordering::Relaxed), 3);
        // A frame that waited in the mailbox past its budget misses too, even if scoring is fast.
        let (mut p, _r, tel) = pipeline(0, 5, None);
        let mut f = frame(10);
        f.acquired = Instant::now() - Duration::from_millis(6);
        p.score_frame(&f).unwrap();
        p.score_frame(&frame(10)).unwrap();
        assert_eq!(tel.deadline_misses.load(Ordering::Relaxed), 1);
        let h = tel.totals();
        assert_eq!(h.get(Stage::Total).len(), 2);
        assert!(h.ms(Stage::Total, 1.0) >= 6.0);
    }

    #[test]
    fn slow_publisher_drops_and_counts_instead_of_blocking() {
        let (mut p, results, tel) = pipeline(0, 1000, None);
        let t = Instant::now();
        for _ in 0..RESULT_QUEUE + 10 {
            p.score_frame(&frame(255)).unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(tel.queue_full.load(Ordering::Relaxed), 10);
        // Received records go back to the pool and scoring resumes delivering.
        drop(results.recv_timeout(Duration::from_secs(1)).unwrap());
        p.score_frame(&frame(255)).unwrap();
        assert_eq!(tel.queue_full.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn roi_is_cropped_before_resize() {
        // Left half 0, right half 255; ROI on the right half → all +1 → anomalous.
        let (mut p, results, _t) = pipeline(
            0,
            1000,
            Some(Roi {
                x: 8,
                y: 0,
                w: 8,
                h: 16,
            }),
        );
        let mut f = frame(0);
        for row in f.data.chunks_mut(16) {
            row[8..].fill(255);
        }
        p.score_frame(&f).unwrap();
        let r = results.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(r.score, 1.0);
        // An ROI outside the source is refused at start.
        let tel = Arc::new(Telemetry::new(Arc::new(CaptureStats::default())));
        let e = Pipeline::new(
            Box::new(MeanBackend {
                manifest: manifest(1, 8),
                delay: Duration::ZERO,
            }),
            PipelineOptions {
                budget: Duration::from_millis(10),
                roi: Some(Roi {
                    x: 10,
                    y: 0,
                    w: 8,
                    h: 8,
                }),
                masks: MaskPolicy::None,
                source: (16, 16, 1),
            },
            tel,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("roi 10,0,8,8"), "{e}");
    }

    #[test]
    fn stats_window() {
        let (mut p, _r, tel) = pipeline(0, 1000, None);
        for _ in 0..5 {
            p.score_frame(&frame(1)).unwrap();
        }
        let s = tel.take_window();
        assert_eq!(s.frames, 5);
        assert!(s.fps > 0.0);
        let s2 = tel.take_window();
        assert_eq!((s2.frames, s2.fps), (5, 0.0));
    }
}

#[cfg(test)]
mod alloc_tests {
    //! No allocation on the per-frame path: a counting global allocator (per thread, so
    //! parallel tests do not disturb the count) around `score_frame`.
    use super::*;
    use crate::capture::CaptureStats;
    use crate::pipeline::testing::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;
    thread_local! {
        static ALLOCS: Cell<u64> = const { Cell::new(0) };
    }
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            ALLOCS.with(|c| c.set(c.get() + 1));
            System.alloc(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            System.dealloc(p, l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            ALLOCS.with(|c| c.set(c.get() + 1));
            System.realloc(p, l, n)
        }
    }
    #[global_allocator]
    static A: Counting = Counting;

    fn allocs() -> u64 {
        ALLOCS.with(Cell::get)
    }

    #[test]
    fn per_frame_path_does_not_allocate() {
        for (roi, masks, size) in [
            (None, MaskPolicy::All, (64, 48)),
            (
                Some(Roi {
                    x: 4,
                    y: 2,
                    w: 40,
                    h: 30,
                }),
                MaskPolicy::Anomalous,
                (64, 48),
            ),
            (None, MaskPolicy::None, (16, 16)), // no resize
        ] {
            let tel = Arc::new(Telemetry::new(Arc::new(CaptureStats::default())));
            let (mut p, results) = Pipeline::new(
                Box::new(MeanBackend {
                    manifest: manifest(3, 16),
                    delay: Duration::ZERO,
                }),
                PipelineOptions {
                    budget: Duration::from_millis(100),
                    roi,
                    masks,
                    source: (size.0, size.1, 3),
                },
                tel.clone(),
            )
            .unwrap();
            let mut frames: Vec<Frame> = (0..4u8)
                .map(|i| {
                    let mut f = Frame::with_capacity(0);
                    f.shape(size.0, size.1, 3);
                    f.data
                        .iter_mut()
                        .enumerate()
                        .for_each(|(j, v)| *v = (j as u8).wrapping_mul(i * 60 + 1));
                    f.set_source("frame_0001.png");
                    f
                })
                .collect();
            // The publisher runs on its own thread, returning records to the pool.
            let publisher = std::thread::spawn(move || {
                let mut n = 0;
                while let Some(r) = results.recv() {
                    n += usize::from(r.has_mask);
                }
                n
            });
            let before = allocs();
            for k in 0..200 {
                let f = &mut frames[k % 4];
                f.acquired = Instant::now();
                p.score_frame(f).unwrap();
            }
            let n = allocs() - before;
            assert_eq!(n, 0, "{n} allocation(s) in 200 frames ({roi:?}, {masks:?})");
            assert_eq!(tel.frames.load(Ordering::Relaxed), 200);
            drop(p);
            let masks_seen = publisher.join().unwrap();
            if masks == MaskPolicy::All {
                assert!(masks_seen > 0);
            }
        }
    }

    #[test]
    fn counter_sees_allocations() {
        // The test above could pass with a broken counter: check it counts.
        let before = allocs();
        let v = std::hint::black_box(vec![1u8; 100]);
        assert!(allocs() > before);
        drop(v);
    }
}
