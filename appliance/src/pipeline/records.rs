//! The scored-frame record and the bounded channel that carries it from the scoring loop to
//! the publisher (or the stdout sink). Records are allocated once and recycled: the scorer
//! takes a free one, fills it, sends it; dropping the receiver's [`Lease`] returns it to the
//! pool. When the pool is empty (the publisher is behind) the scorer drops the result and
//! counts it instead of waiting.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, SystemTime};

use vigil_shared::messages::{self, FrameResult, LatencyMs, ModelRef};

/// Records in flight between scorer and publisher: ~4 s at 30 fps of slack for a slow broker
/// before results are dropped (the publisher spools to disk well before that).
pub const RESULT_QUEUE: usize = 128;

/// One scored frame: what the scoring loop measured, and what the publisher turns into the
/// `…/result` message ([`Record::to_message`]) and the mask PNG ([`Record::mask_png`]).
#[derive(Debug, Clone)]
pub struct Record {
    /// Scored-frame number since start, consecutive.
    pub frame_id: u64,
    /// Capture sequence number (gaps = frames dropped before scoring).
    pub capture_id: u64,
    pub source: String,
    pub captured_at: SystemTime,
    pub score: f32,
    pub normalized_score: f32,
    pub threshold: f32,
    pub anomalous: bool,
    pub latency: LatencyMs,
    /// Ground truth where the source knows it (synthetic).
    pub label: Option<bool>,
    /// Anomaly map quantised to 0..=255 (`mask_width × mask_height`); valid when `has_mask`.
    pub mask: Vec<u8>,
    /// The mask policy wants this frame's mask published (decided once, by the scorer).
    pub has_mask: bool,
    pub mask_width: u32,
    pub mask_height: u32,
    /// Which model scored it: an index into the [`crate::reload::ModelTable`].
    pub model_gen: u32,
}

impl Record {
    /// An empty record with room for an `h × w` mask and a 256-byte source name.
    pub fn new(h: usize, w: usize) -> Record {
        Record {
            frame_id: 0,
            capture_id: 0,
            source: String::with_capacity(256),
            captured_at: SystemTime::UNIX_EPOCH,
            score: 0.0,
            normalized_score: 0.0,
            threshold: 0.0,
            anomalous: false,
            latency: LatencyMs {
                capture: 0.0,
                infer: 0.0,
                total: 0.0,
            },
            label: None,
            mask: vec![0; h * w],
            has_mask: false,
            mask_width: w as u32,
            mask_height: h as u32,
            model_gen: 0,
        }
    }

    /// The wire payload of `…/result` (allocates: publisher side).
    pub fn to_message(&self, model: &ModelRef) -> FrameResult {
        FrameResult {
            frame_id: self.frame_id,
            source: self.source.clone(),
            captured_at: messages::rfc3339_ms(self.captured_at),
            score: self.score,
            normalized_score: self.normalized_score,
            threshold: self.threshold,
            anomalous: self.anomalous,
            latency_ms: self.latency,
            model: model.clone(),
        }
    }

    /// The mask PNG (frame_id in a tEXt chunk), when the policy wants one for this frame.
    pub fn mask_png(&self) -> Option<Result<Vec<u8>, vigil_shared::mask::MaskError>> {
        self.has_mask.then(|| {
            vigil_shared::mask::encode_png_gray(
                &self.mask,
                self.mask_width,
                self.mask_height,
                &[("frame_id", &self.frame_id.to_string())],
            )
        })
    }
}

/// The publisher's end of the result channel.
pub struct Results {
    rx: Receiver<Record>,
    free: SyncSender<Record>,
}

/// A received record; dropping it returns the buffer to the scorer's pool (if it came from
/// one: [`Lease::detached`] records are just freed).
pub struct Lease {
    rec: Option<Record>,
    free: Option<SyncSender<Record>>,
}

impl Lease {
    /// A record that belongs to no pool (tools and tests that publish without a scorer).
    pub fn detached(rec: Record) -> Lease {
        Lease {
            rec: Some(rec),
            free: None,
        }
    }
}

impl std::ops::Deref for Lease {
    type Target = Record;
    fn deref(&self) -> &Record {
        self.rec
            .as_ref()
            .expect("lease holds a record until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let (Some(r), Some(free)) = (self.rec.take(), &self.free) {
            let _ = free.try_send(r);
        }
    }
}

impl Results {
    fn lease(&self, r: Record) -> Lease {
        Lease {
            rec: Some(r),
            free: Some(self.free.clone()),
        }
    }
    /// Next record; `Err(Disconnected)` once the scorer has stopped and all were received.
    pub fn recv_timeout(&self, d: Duration) -> Result<Lease, RecvTimeoutError> {
        self.rx.recv_timeout(d).map(|r| self.lease(r))
    }
    pub fn recv(&self) -> Option<Lease> {
        self.rx.recv().ok().map(|r| self.lease(r))
    }
}

/// The scorer's end: a pool of free records and the queue to the publisher.
pub(crate) struct ResultPort {
    free: Receiver<Record>,
    out: SyncSender<Record>,
}

impl ResultPort {
    /// Fills a free record with `fill` and queues it; false when none is free (the publisher
    /// is behind) or nobody listens, so the caller counts the result as dropped. Never blocks
    /// and never allocates.
    pub(crate) fn send(&self, fill: impl FnOnce(&mut Record)) -> bool {
        match self.free.try_recv() {
            Ok(mut rec) => {
                fill(&mut rec);
                // Cannot be full: the pool holds exactly the queue's capacity.
                !matches!(
                    self.out.try_send(rec),
                    Err(mpsc::TrySendError::Disconnected(_))
                )
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => false,
        }
    }
}

/// A bounded result channel of `capacity` recycled records for `h × w` maps.
pub(crate) fn result_channel(capacity: usize, h: usize, w: usize) -> (ResultPort, Results) {
    let (free_tx, free_rx) = mpsc::sync_channel(capacity);
    let (out_tx, out_rx) = mpsc::sync_channel(capacity);
    for _ in 0..capacity {
        free_tx
            .try_send(Record::new(h, w))
            .expect("pool sized to capacity");
    }
    (
        ResultPort {
            free: free_rx,
            out: out_tx,
        },
        Results {
            rx: out_rx,
            free: free_tx,
        },
    )
}
