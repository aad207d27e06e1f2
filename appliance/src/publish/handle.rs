//! The publisher's two ends: [`Publisher`] (start, shutdown) and [`PublisherHandle`] (what
//! other threads use to hand it work, never blocking). With the scoring loop, a forwarding
//! thread moves the pipeline's [`Lease`]s into the publisher's queue as they are: the record
//! the scorer filled is the one the publisher reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use vigil_shared::messages::{CommandResult, PublisherStats, Topics};

use super::config::{mqtt_options, PublishConfig};
use super::event_loop::{run, Task};
use super::spool::Spool;
use super::PublishError;
use crate::pipeline::{Lease, Record, Results, Telemetry};

/// What the publisher's queue carries.
pub(super) enum Inbound {
    Frame(Lease),
    /// The outcome of a reload, for `…/command/result`.
    Command(CommandResult),
    /// A JPEG for `…/<camera>/snapshot`.
    Snapshot(Vec<u8>),
}

/// [`PublisherHandle::try_publish`] found the queue full; the record was dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("publisher queue full")]
pub struct QueueFull;

/// The other threads' side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct PublisherHandle {
    tx: mpsc::Sender<Inbound>,
    /// Records refused because the queue was full (in `…/stats` as `queue_full`).
    queue_full: Arc<AtomicU64>,
    live: Arc<std::sync::Mutex<PublisherStats>>,
}

impl PublisherHandle {
    /// Queues a record that belongs to no scorer (tools, tests); refused and counted when the
    /// queue is full.
    pub fn try_publish(&self, rec: Record) -> Result<(), QueueFull> {
        self.tx
            .try_send(Inbound::Frame(Lease::detached(rec)))
            .map_err(|_| {
                self.queue_full.fetch_add(1, Ordering::Relaxed);
                QueueFull
            })
    }

    /// The publisher's counters and spool figures, at most a second old.
    pub fn stats(&self) -> PublisherStats {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publishes a snapshot JPEG (retained) if the broker is connected; a snapshot is a view,
    /// not a result: never spooled, and dropped (false) when the queue is full.
    pub fn publish_snapshot(&self, jpeg: Vec<u8>) -> bool {
        self.tx.try_send(Inbound::Snapshot(jpeg)).is_ok()
    }

    /// Publishes the outcome of a reload on `…/command/result` (from the reload thread).
    pub fn report_command(&self, r: CommandResult) {
        if self.tx.try_send(Inbound::Command(r)).is_err() {
            log_warn!("publisher queue full: a reload result was not published");
        }
    }
}

/// The running publisher.
pub struct Publisher {
    handle: PublisherHandle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<PublisherStats>>,
    /// Set on shutdown: the forwarder passes on what is queued, then exits.
    draining: Arc<AtomicBool>,
    forwarder: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Opens the spool, starts the publisher thread and begins connecting (in the background:
    /// an unreachable broker is retried forever while results are spooled).
    pub fn start(cfg: PublishConfig) -> Result<Publisher, PublishError> {
        Self::start_inner(cfg, None)
    }

    /// Starts the publisher fed by the scoring loop's result channel; `…/stats` takes the
    /// pipeline figures from `telemetry` every `stats_interval`.
    pub fn start_for_pipeline(
        cfg: PublishConfig,
        results: Results,
        telemetry: Arc<Telemetry>,
    ) -> Result<Publisher, PublishError> {
        let mut p = Self::start_inner(cfg, Some(telemetry))?;
        let tx = p.handle.tx.clone();
        let draining = p.draining.clone();
        let forwarder = std::thread::Builder::new()
            .name("publisher-forward".into())
            .spawn(move || forward(results, tx, draining))
            .map_err(PublishError::Thread)?;
        p.forwarder = Some(forwarder);
        Ok(p)
    }

    fn start_inner(
        cfg: PublishConfig,
        telemetry: Option<Arc<Telemetry>>,
    ) -> Result<Publisher, PublishError> {
        let topics = Topics::new(&cfg.mqtt.topic_prefix, &cfg.mqtt.camera)?;
        let broker = cfg.endpoint()?;
        let spool = Spool::open(&cfg.mqtt.spool_dir, cfg.mqtt.spool_max_bytes)?;
        let options = mqtt_options(&cfg, &topics, &broker)?;
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let handle = PublisherHandle {
            tx,
            queue_full: Arc::new(AtomicU64::new(0)),
            live: Arc::default(),
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = Task {
            cfg,
            topics,
            broker,
            spool,
            options,
            queue_full: handle.queue_full.clone(),
            telemetry,
            rx,
            stop_rx,
            live: handle.live.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run(task)),
                    Err(e) => {
                        log_error!("publisher: cannot build its runtime: {e}");
                        PublisherStats::default()
                    }
                }
            })
            .map_err(PublishError::Thread)?;
        Ok(Publisher {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
            draining: Arc::new(AtomicBool::new(false)),
            forwarder: None,
        })
    }

    pub fn handle(&self) -> PublisherHandle {
        self.handle.clone()
    }

    /// Clean stop: publishes what is queued (up to `drain_timeout`), the retained status
    /// `stopped`, disconnects (so the broker discards the Last Will), spools whatever the
    /// broker did not take, and returns the final counters.
    pub fn shutdown(mut self) -> Result<PublisherStats, PublishError> {
        match self.stop_threads() {
            Some(t) => t.join().map_err(|_| PublishError::Panicked),
            None => Ok(PublisherStats::default()),
        }
    }

    /// Lets the forwarder drain and tells the event loop to stop; returns its thread.
    fn stop_threads(&mut self) -> Option<JoinHandle<PublisherStats>> {
        self.draining.store(true, Ordering::Relaxed);
        if let Some(f) = self.forwarder.take() {
            let _ = f.join();
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.thread.take()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(t) = self.stop_threads() {
            let _ = t.join();
        }
    }
}

/// Moves the pipeline's records into the publisher's queue until the scorer is gone, or until
/// shutdown once the channel is empty. Blocking here is fine: the scoring loop never waits on
/// this thread (its pool runs dry and it drops and counts instead).
fn forward(results: Results, tx: mpsc::Sender<Inbound>, draining: Arc<AtomicBool>) {
    loop {
        let lease = match results.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) if draining.load(Ordering::Relaxed) => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if tx.blocking_send(Inbound::Frame(lease)).is_err() {
            return;
        }
    }
}
