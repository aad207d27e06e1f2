//! MQTT snapshots (`…/<camera>/snapshot`, retained JPEG, as Frigate publishes them): the
//! overlay of an anomalous frame (or of every frame, `snapshots = "all"`), at most one per
//! `snapshot_interval_s`, rendered on this thread from the loop's [`ViewTap`] copies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::render::overlay_jpeg;
use crate::config::MaskPolicy;
use crate::pipeline::ViewTap;
use crate::publish::PublisherHandle;

/// The snapshot thread; stops when dropped.
pub struct Snapshots {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Snapshots {
    /// None for `snapshots = "none"`.
    pub fn start(
        policy: MaskPolicy,
        every: Duration,
        quality: u8,
        view: Arc<ViewTap>,
        publisher: PublisherHandle,
    ) -> std::io::Result<Option<Snapshots>> {
        if policy == MaskPolicy::None {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || run(policy, every, quality, &view, &publisher, &s))?;
        Ok(Some(Snapshots {
            stop,
            thread: Some(thread),
        }))
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    policy: MaskPolicy,
    every: Duration,
    quality: u8,
    view: &ViewTap,
    publisher: &PublisherHandle,
    stop: &AtomicBool,
) {
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        // Ask only when a snapshot may be sent: between two, the loop copies nothing for us.
        match policy {
            MaskPolicy::Anomalous => view.want_anomalous(true),
            _ => view.want_frames(),
        }
        let Some(v) = view.take(seq, Duration::from_millis(200)) else {
            continue;
        };
        seq = v.seq;
        if policy == MaskPolicy::Anomalous && !v.anomalous {
            // A viewer's copy of a good frame: not ours.
            continue;
        }
        view.want_anomalous(false);
        let sent_at = Instant::now();
        match overlay_jpeg(&v, quality) {
            Ok(jpeg) => {
                publisher.publish_snapshot(jpeg);
            }
            Err(e) => log_warn!("snapshot of frame {}: {e}", v.frame_id),
        }
        while sent_at.elapsed() < every && !stop.load(Ordering::Relaxed) {
            std::thread::sleep((every - sent_at.elapsed()).min(Duration::from_millis(100)));
        }
    }
    view.want_anomalous(false);
}
