//! Frame sources and the capture thread.
//!
//! A [`Source`] produces frames as interleaved HWC `u8` with the model's channel count. The
//! capture thread ([`spawn`]) runs it and publishes each frame into a single-slot [`Mailbox`]:
//! a newer frame replaces one the scorer has not taken yet (counted as dropped), so frames
//! never queue up and the scorer always sees the newest one. Frames move between the capture
//! thread, the slot and the scorer by swapping buffers, so no frame buffer is allocated per
//! frame once sizes are stable.

pub mod convert;
pub mod folder;
pub mod synthetic;
#[cfg(feature = "camera")]
pub mod v4l;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{Config, SourceSpec};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {msg}")]
    Open { path: String, msg: String },
    #[error("{source_name}: {msg}")]
    Frame { source_name: String, msg: String },
}

/// One frame: pixels plus where and when it was captured.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Sequence number of captured frames (gaps = frames dropped before scoring).
    pub id: u64,
    /// Interleaved HWC, `width·height·channels` bytes.
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// File name (folder replay), device path (camera) or `synthetic`.
    pub source: String,
    /// Wall-clock time of capture (published as `captured_at`).
    pub captured_at: SystemTime,
    /// Monotonic instant the frame was taken from the device/file; total latency starts here.
    pub acquired: Instant,
    /// Time spent reading and converting it on the capture thread.
    pub capture_time: Duration,
    /// Ground truth where the source knows it (synthetic parts): defective or not.
    pub label: Option<bool>,
}

impl Frame {
    /// An empty frame whose buffers can hold `len` pixel bytes and a `source` of 256 bytes
    /// without reallocating.
    pub fn with_capacity(len: usize) -> Frame {
        Frame {
            id: 0,
            data: Vec::with_capacity(len),
            width: 0,
            height: 0,
            channels: 0,
            source: String::with_capacity(256),
            captured_at: SystemTime::UNIX_EPOCH,
            acquired: Instant::now(),
            capture_time: Duration::ZERO,
            label: None,
        }
    }

    /// Sets the geometry and sizes `data` (reallocates only when it grows).
    pub fn shape(&mut self, width: usize, height: usize, channels: usize) {
        self.width = width;
        self.height = height;
        self.channels = channels;
        self.data.resize(width * height * channels, 0);
    }

    pub fn set_source(&mut self, s: &str) {
        self.source.clear();
        self.source.push_str(s);
    }
}

/// Counters of capture events, shared with the stats publisher.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Frames published into the mailbox.
    pub captured: AtomicU64,
    /// Frames overwritten in the mailbox before the scorer took them.
    pub dropped: AtomicU64,
    /// Frames the driver had already replaced when we drained its queue (camera only).
    pub drained: AtomicU64,
    /// Dequeue timeouts (camera delivered nothing within its timeout).
    pub timeouts: AtomicU64,
    /// Device (re)opens after a failure.
    pub reopens: AtomicU64,
    /// Frames that could not be read or converted (skipped).
    pub errors: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureCounts {
    pub captured: u64,
    pub dropped: u64,
    pub drained: u64,
    pub timeouts: u64,
    pub reopens: u64,
    pub errors: u64,
}

impl CaptureStats {
    pub fn counts(&self) -> CaptureCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CaptureCounts {
            captured: g(&self.captured),
            dropped: g(&self.dropped),
            drained: g(&self.drained),
            timeouts: g(&self.timeouts),
            reopens: g(&self.reopens),
            errors: g(&self.errors),
        }
    }
    pub(crate) fn bump(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a source's `next` produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Frame,
    /// Asked to stop while waiting.
    Stopped,
}

/// A frame source, run on the capture thread.
pub trait Source: Send {
    /// Width, height, channels of the frames it will produce (known after opening).
    fn geometry(&self) -> (usize, usize, usize);
    /// One line for the log: what is open and in which format.
    fn describe(&self) -> String;
    /// Fills `frame` (pixels, size, source, timestamps) with the next frame, waiting for it
    /// to be due (paced sources) or to arrive (cameras), but returning `Stopped` soon after
    /// `stop` is set. Recoverable faults are handled and counted inside; an error is fatal.
    fn next(
        &mut self,
        frame: &mut Frame,
        stats: &CaptureStats,
        stop: &AtomicBool,
    ) -> Result<Next, CaptureError>;
}

/// Opens the configured source for frames with `channels` channels.
pub fn open(cfg: &Config, channels: usize) -> Result<Box<dyn Source>, CaptureError> {
    Ok(match &cfg.source {
        SourceSpec::Folder(p) => Box::new(folder::FolderSource::open(p, cfg.fps, channels)?),
        SourceSpec::Synthetic(kind) => {
            Box::new(synthetic::SyntheticSource::new(*kind, cfg, channels)?)
        }
        #[cfg(feature = "camera")]
        SourceSpec::V4l(p) => Box::new(v4l::V4lSource::open(p, &cfg.v4l, channels)?),
        #[cfg(not(feature = "camera"))]
        SourceSpec::V4l(p) => {
            return Err(CaptureError::Open {
                path: format!("v4l:{}", p.display()),
                msg: "this vigild was built without camera support (cargo feature `camera`, \
                      which needs libclang-dev to build)"
                    .into(),
            })
        }
    })
}

struct Slot {
    frame: Frame,
    fresh: bool,
    /// The scorer is waiting for a frame (lockstep sources produce only then).
    wanted: bool,
    closed: bool,
}

/// Single-slot mailbox: the newest frame wins.
pub struct Mailbox {
    slot: Mutex<Slot>,
    cv: Condvar,
}

/// Result of [`Mailbox::take`].
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Frame,
    Timeout,
    Closed,
}

impl Mailbox {
    pub fn new(capacity: usize) -> Mailbox {
        Mailbox {
            slot: Mutex::new(Slot {
                frame: Frame::with_capacity(capacity),
                fresh: false,
                wanted: false,
                closed: false,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        // A panicking peer leaves consistent data (buffers only): keep going.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Swaps `frame` into the slot (taking back the slot's old buffer). Returns true when
    /// the slot held a frame nobody took: that frame is dropped.
    pub fn put(&self, frame: &mut Frame) -> bool {
        let mut s = self.lock();
        std::mem::swap(&mut s.frame, frame);
        let overwritten = s.fresh;
        s.fresh = true;
        s.wanted = false;
        drop(s);
        self.cv.notify_all();
        overwritten
    }

    /// Swaps the newest frame into `frame`, waiting at most `timeout`.
    pub fn take(&self, frame: &mut Frame, timeout: Duration) -> Take {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        s.wanted = true;
        self.cv.notify_all();
        loop {
            if s.fresh {
                std::mem::swap(&mut s.frame, frame);
                s.fresh = false;
                return Take::Frame;
            }
            if s.closed {
                return Take::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Take::Timeout;
            }
            s = self
                .cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Blocks until the scorer waits for a frame (or `stop`): lockstep replay.
    pub fn wait_wanted(&self, stop: &AtomicBool) {
        let mut s = self.lock();
        while !s.wanted && !s.closed && !stop.load(Ordering::Relaxed) {
            s = self
                .cv
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// No more frames will come (the capture thread ended).
    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }
}

/// The running capture thread.
pub struct Capture {
    pub mailbox: Arc<Mailbox>,
    pub stats: Arc<CaptureStats>,
    handle: Option<std::thread::JoinHandle<Result<(), CaptureError>>>,
    stop: Arc<AtomicBool>,
}

impl Capture {
    /// Stops the thread and returns its error, if it ended on one.
    pub fn stop(mut self) -> Result<(), CaptureError> {
        self.stop.store(true, Ordering::Relaxed);
        self.mailbox.close();
        self.join()
    }

    fn join(&mut self) -> Result<(), CaptureError> {
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(CaptureError::Frame {
                source_name: "capture thread".into(),
                msg: "panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.mailbox.close();
        let _ = self.join();
    }
}

/// Starts the capture thread, counting into `stats`. `lockstep`: produce a frame only when the
/// scorer asks for one (unpaced replay, nothing dropped).
pub fn spawn(
    mut source: Box<dyn Source>,
    lockstep: bool,
    stats: Arc<CaptureStats>,
) -> std::io::Result<Capture> {
    let (w, h, c) = source.geometry();
    let cap = w * h * c;
    let mailbox = Arc::new(Mailbox::new(cap));
    let stop = Arc::new(AtomicBool::new(false));
    let (mb, st, sp) = (mailbox.clone(), stats.clone(), stop.clone());
    let handle = std::thread::Builder::new()
        .name("vigild-capture".into())
        .spawn(move || {
            let mut back = Frame::with_capacity(cap);
            let mut seq = 0u64;
            let result = loop {
                if sp.load(Ordering::Relaxed) {
                    break Ok(());
                }
                if lockstep {
                    mb.wait_wanted(&sp);
                    if sp.load(Ordering::Relaxed) {
                        break Ok(());
                    }
                }
                match source.next(&mut back, &st, &sp) {
                    Ok(Next::Frame) => {
                        back.id = seq;
                        seq += 1;
                        CaptureStats::bump(&st.captured);
                        if mb.put(&mut back) {
                            CaptureStats::bump(&st.dropped);
                        }
                    }
                    Ok(Next::Stopped) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            mb.close();
            result
        })?;
    Ok(Capture {
        mailbox,
        stats,
        handle: Some(handle),
        stop,
    })
}

/// Sleeps until `until` in short steps so that `stop` is honoured promptly. Returns false when
/// stopped.
pub(crate) fn sleep_until(until: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Fixed-rate ticker for paced sources: ticks at `start + k/fps`; when it falls behind it
/// skips to the next tick instead of bursting.
pub(crate) struct Pacer {
    period: Option<Duration>,
    next: Option<Instant>,
}

impl Pacer {
    pub fn new(fps: f64) -> Pacer {
        Pacer {
            period: (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps)),
            next: None,
        }
    }
    /// Waits for the next tick; false when stopped.
    pub fn wait(&mut self, stop: &AtomicBool) -> bool {
        let Some(period) = self.period else {
            return !stop.load(Ordering::Relaxed);
        };
        let now = Instant::now();
        let due = *self.next.get_or_insert(now);
        if !sleep_until(due, stop) {
            return false;
        }
        let mut n = due + period;
        let now = Instant::now();
        while n <= now {
            n += period;
        }
        self.next = Some(n);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_keeps_newest_and_counts_overwrites() {
        let mb = Mailbox::new(4);
        let mut a = Frame::with_capacity(4);
        a.id = 1;
        assert!(!mb.put(&mut a));
        a.id = 2;
        assert!(mb.put(&mut a), "frame 1 was never taken");
        let mut got = Frame::with_capacity(4);
        assert_eq!(mb.take(&mut got, Duration::from_millis(10)), Take::Frame);
        assert_eq!(got.id, 2);
        assert_eq!(mb.take(&mut got, Duration::from_millis(10)), Take::Timeout);
        mb.close();
        assert_eq!(mb.take(&mut got, Duration::from_millis(10)), Take::Closed);
    }

    #[test]
    fn pacer_keeps_rate_without_bursts() {
        let stop = AtomicBool::new(false);
        let mut p = Pacer::new(100.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(p.wait(&stop));
        }
        let el = t0.elapsed();
        assert!(el >= Duration::from_millis(39), "{el:?}");
        // Falling behind by 5 periods does not produce 5 immediate ticks.
        std::thread::sleep(Duration::from_millis(50));
        let t1 = Instant::now();
        for _ in 0..3 {
            assert!(p.wait(&stop));
        }
        assert!(
            t1.elapsed() >= Duration::from_millis(10),
            "{:?}",
            t1.elapsed()
        );
        stop.store(true, Ordering::Relaxed);
        assert!(!p.wait(&stop));
    }
}
