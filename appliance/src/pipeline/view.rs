//! What the scoring loop shows to whoever watches (the live page, the MJPEG stream, MQTT
//! snapshots): a copy of the newest scored frame with its anomaly map, made only while
//! someone asks for one and only once the previous copy was taken, so the loop pays nothing
//! when nobody watches and at most one frame copy per rendered image when someone does.
//! Rendering (heatmap, JPEG) happens on the viewer's thread.
//!
//! It also keeps the last [`HISTORY`] normalised scores for the page's chart: one atomic
//! store per frame.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::capture::Frame;
use crate::config::Roi;

/// Scores kept for the chart.
pub const HISTORY: usize = 300;
/// How long one request for frames lasts: a viewer that stops asking stops the copies.
const WANT_FOR: Duration = Duration::from_secs(2);

/// A scored frame as a viewer sees it.
#[derive(Debug, Clone)]
pub struct View {
    /// Increases with every copy the loop makes.
    pub seq: u64,
    pub frame_id: u64,
    pub source: String,
    pub captured_at: SystemTime,
    /// Interleaved HWC bytes of the whole frame.
    pub pixels: Vec<u8>,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// The region the model scored (None: the whole frame).
    pub roi: Option<Roi>,
    /// The anomaly map over the scored region, `map_h × map_w`, and the value shown as hot.
    pub map: Vec<f32>,
    pub map_w: usize,
    pub map_h: usize,
    pub map_hi: f32,
    pub score: f32,
    pub normalized_score: f32,
    pub anomalous: bool,
}

impl Default for View {
    fn default() -> View {
        View {
            seq: 0,
            frame_id: 0,
            source: String::new(),
            captured_at: SystemTime::UNIX_EPOCH,
            pixels: Vec::new(),
            width: 0,
            height: 0,
            channels: 0,
            roi: None,
            map: Vec::new(),
            map_w: 0,
            map_h: 0,
            map_hi: 1.0,
            score: 0.0,
            normalized_score: 0.0,
            anomalous: false,
        }
    }
}

/// What the scorer knows about a frame besides its pixels, for [`ViewTap::offer`].
pub(crate) struct Scored<'a> {
    pub frame_id: u64,
    pub roi: Option<Roi>,
    pub map: &'a [f32],
    pub map_w: usize,
    pub map_h: usize,
    pub map_hi: f32,
    pub score: f32,
    pub normalized_score: f32,
    pub anomalous: bool,
    /// When it was scored (the loop's own clock reading: no extra one per frame).
    pub at: Instant,
}

/// Shared between the scoring loop and the viewers.
pub struct ViewTap {
    started: Instant,
    /// Viewers want frames until this time (ns since `started`); 0: never asked.
    want_all_until_ns: AtomicU64,
    /// The snapshot sender wants the next anomalous frame.
    want_anomalous: AtomicBool,
    /// A copy waits in the slot, not taken yet.
    full: AtomicBool,
    slot: Mutex<View>,
    copied: Condvar,
    /// (frame id << 32 | normalised score's f32 bits), newest at `head - 1`.
    history: Box<[AtomicU64]>,
    head: AtomicU64,
    /// When the last frame was offered, ns since `started` + 1 (0: none yet).
    last_ns: AtomicU64,
    roi: Option<Roi>,
}

impl Default for ViewTap {
    fn default() -> ViewTap {
        ViewTap::new(None)
    }
}

impl ViewTap {
    /// A tap for a loop that scores `roi` of each frame (None: the whole frame).
    pub fn new(roi: Option<Roi>) -> ViewTap {
        ViewTap {
            started: Instant::now(),
            want_all_until_ns: AtomicU64::new(0),
            want_anomalous: AtomicBool::new(false),
            full: AtomicBool::new(false),
            slot: Mutex::new(View::default()),
            copied: Condvar::new(),
            history: (0..HISTORY).map(|_| AtomicU64::new(0)).collect(),
            head: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            roi,
        }
    }

    /// The region the loop scores.
    pub fn roi(&self) -> Option<Roi> {
        self.roi
    }

    /// How long ago the loop scored its last frame (None: not one yet).
    pub fn since_last_frame(&self) -> Option<Duration> {
        match self.last_ns.load(Ordering::Relaxed) {
            0 => None,
            n => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(n - 1)),
            ),
        }
    }

    /// A viewer asks for frames for the next two seconds.
    pub fn want_frames(&self) {
        let until = (self.started.elapsed() + WANT_FOR).as_nanos() as u64;
        self.want_all_until_ns.store(until, Ordering::Relaxed);
    }

    /// The snapshot sender asks for (or stops asking for) the next anomalous frame.
    pub fn want_anomalous(&self, on: bool) {
        self.want_anomalous.store(on, Ordering::Relaxed);
    }

    /// Whether the loop should copy this frame: someone asked and the last copy was taken.
    fn wanted(&self, anomalous: bool, now: u64) -> bool {
        if self.full.load(Ordering::Relaxed) {
            return false;
        }
        if anomalous && self.want_anomalous.load(Ordering::Relaxed) {
            return true;
        }
        let until = self.want_all_until_ns.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// Called by the loop for every scored frame: records the score for the chart and, when
    /// wanted, copies the frame without ever waiting for a viewer (a busy slot is skipped).
    pub(crate) fn offer(&self, frame: &Frame, s: &Scored) {
        let now = s.at.saturating_duration_since(self.started).as_nanos() as u64;
        self.last_ns.store(now + 1, Ordering::Relaxed);
        let at = self.head.fetch_add(1, Ordering::Relaxed) as usize % HISTORY;
        let packed = (s.frame_id << 32) | u64::from(s.normalized_score.to_bits());
        self.history[at].store(packed, Ordering::Relaxed);
        if !self.wanted(s.anomalous, now) {
            return;
        }
        let Ok(mut v) = self.slot.try_lock() else {
            return;
        };
        v.seq += 1;
        v.frame_id = s.frame_id;
        v.source.clear();
        v.source.push_str(&frame.source);
        v.captured_at = frame.captured_at;
        v.pixels.clear();
        v.pixels.extend_from_slice(&frame.data);
        (v.width, v.height, v.channels) = (frame.width, frame.height, frame.channels);
        v.roi = s.roi;
        v.map.clear();
        v.map.extend_from_slice(s.map);
        (v.map_w, v.map_h, v.map_hi) = (s.map_w, s.map_h, s.map_hi);
        (v.score, v.normalized_score, v.anomalous) = (s.score, s.normalized_score, s.anomalous);
        self.full.store(true, Ordering::Relaxed);
        drop(v);
        self.copied.notify_all();
    }

    /// [`ViewTap::offer`] of a good frame with an empty map, for other modules' tests.
    #[cfg(test)]
    pub(crate) fn offer_for_test(&self, frame: &Frame) {
        let s = Scored {
            frame_id: 0,
            roi: None,
            map: &[],
            map_w: 0,
            map_h: 0,
            map_hi: 1.0,
            score: 0.0,
            normalized_score: 0.0,
            anomalous: false,
            at: Instant::now(),
        };
        self.offer(frame, &s);
    }

    /// The newest copy with a `seq` above `after`, waiting up to `timeout` for one; taking
    /// it lets the loop copy the next frame.
    pub fn take(&self, after: u64, timeout: Duration) -> Option<View> {
        let g = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = self
            .copied
            .wait_timeout_while(g, timeout, |v| v.seq <= after)
            .unwrap_or_else(|p| p.into_inner());
        if g.seq <= after {
            return None;
        }
        let v = g.clone();
        self.full.store(false, Ordering::Relaxed);
        Some(v)
    }

    /// The last scores, oldest first: (frame id mod 2³², normalised score).
    pub fn history(&self) -> Vec<(u32, f32)> {
        let head = self.head.load(Ordering::Relaxed);
        let n = head.min(HISTORY as u64);
        (head - n..head)
            .map(|i| {
                let p = self.history[i as usize % HISTORY].load(Ordering::Relaxed);
                ((p >> 32) as u32, f32::from_bits(p as u32))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: u8) -> Frame {
        let mut f = Frame::with_capacity(16);
        f.data.extend_from_slice(&[v; 16]);
        (f.width, f.height, f.channels) = (4, 4, 1);
        f
    }

    fn scored(id: u64, anomalous: bool) -> Scored<'static> {
        Scored {
            frame_id: id,
            roi: None,
            map: &[0.5; 4],
            map_w: 2,
            map_h: 2,
            map_hi: 1.0,
            score: 0.1,
            normalized_score: id as f32 / 10.0,
            anomalous,
            at: Instant::now(),
        }
    }

    #[test]
    fn copies_only_when_asked_and_taken() {
        let t = ViewTap::default();
        t.offer(&frame(1), &scored(0, true));
        assert!(t.take(0, Duration::ZERO).is_none(), "nobody asked: no copy");
        t.want_frames();
        t.offer(&frame(2), &scored(1, false));
        t.offer(&frame(3), &scored(2, false)); // slot still full: skipped
        let v = t.take(0, Duration::ZERO).expect("a copy");
        assert_eq!((v.frame_id, v.pixels[0], v.map.len()), (1, 2, 4));
        t.offer(&frame(4), &scored(3, false));
        assert_eq!(t.take(v.seq, Duration::ZERO).unwrap().frame_id, 3);
        let h = t.history();
        assert_eq!(h.len(), 4);
        assert_eq!(h[3], (3, 0.3));
    }

    #[test]
    fn snapshot_request_takes_only_anomalous_frames() {
        let t = ViewTap::default();
        t.want_anomalous(true);
        t.offer(&frame(1), &scored(0, false));
        assert!(t.take(0, Duration::ZERO).is_none());
        t.offer(&frame(2), &scored(1, true));
        assert!(t.take(0, Duration::ZERO).unwrap().anomalous);
    }
}
