//! MQTT publishing: results, masks, status with Last Will, retained state, stats, Home
//! Assistant discovery, and the on-disk spool that carries results across broker outages.
//! Topics and payloads: `vigil_shared::messages` and docs/mqtt.md.
//!
//! The publisher runs a current-thread tokio runtime on a thread of its own. The scoring loop
//! hands it [`FrameReport`]s with [`PublisherHandle::try_publish`], which never blocks: when
//! the bounded queue is full the report is refused and counted (`queue_full`).
//!
//! Delivery: every result (and mask) is QoS 1. The publisher keeps its own list of what is in
//! flight and removes a message from memory or from the spool only once the broker has
//! acknowledged it (PubAck), so after a lost connection exactly the unacknowledged messages are
//! sent again, in their original order, and nothing the broker acknowledged is repeated. While
//! the broker is unreachable, new messages go to the spool (see [`spool`]). The remaining
//! at-least-once edges: a message whose PubAck was lost together with the connection (the
//! broker got it, vigild cannot know), a message acknowledged after an earlier one that was not
//! (brokers ack in order, so this needs a broker bug), and, after a crash of vigild itself,
//! records acknowledged in the last second before it.
//!
//! Configuration: [`PublishConfig::from_mqtt`] takes `config::MqttConfig` (vigild's TOML and
//! flags); [`PublishConfig::new`] gives defaults for tests and tools.
//!
//! With the scoring loop: [`Publisher::start_for_pipeline`] takes the pipeline's result
//! channel and telemetry; a bridge thread (publisher side, so allocating there is fine) turns
//! each recycled record into a [`FrameReport`], and the stats timer reads the telemetry.

pub mod broker;
pub mod spool;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot};
use vigil_shared::messages::{
    self, CommandResult, DeviceState, FrameResult, LatencyMs, ModelRef, PipelineStats,
    PublisherStats, Stats, Status, Topics,
};

use crate::pipeline::{Results, Telemetry};
use crate::reload::{parse_command, ModelTable, Refusal, RefusalLimiter, ReloadRequest, Trigger};

pub use broker::{
    start_embedded_broker, start_embedded_broker_on, start_embedded_broker_with, BrokerError,
    Credentials, EmbeddedBroker,
};
pub use spool::{Spool, SpoolError};

/// Messages sent but not yet acknowledged, at most: keeps the resend after a lost connection
/// small and far below rumqttc's packet-id range (no id collisions).
const WINDOW: usize = 16;
/// Messages held in memory while connected before they go to the spool (a slow broker).
const MEMQ_MAX: usize = 256;
/// The spool is fsynced and the acknowledged position saved this often.
const SYNC_EVERY: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Topic(#[from] messages::TopicError),
    #[error("TLS CA file {}: {msg}", .path.display())]
    TlsCa { path: PathBuf, msg: String },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("publisher: cannot start its thread: {0}")]
    Thread(std::io::Error),
    #[error("publisher thread panicked")]
    Panicked,
    #[error("no MQTT broker configured: set `broker` or `embedded_broker`")]
    NoBroker,
}

pub use crate::config::MaskPolicy;

/// Everything the publisher needs.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS with rustls (ring), the CA from `tls_ca` or the system's roots.
    pub tls: bool,
    pub tls_ca: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub device_id: String,
    pub camera: String,
    /// Full topic prefix, e.g. `vigil/line-3` ([`Topics::default_prefix`]).
    pub topic_prefix: String,
    pub masks: MaskPolicy,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub stats_interval: Duration,
    /// Home Assistant discovery prefix; None disables discovery.
    pub ha_discovery_prefix: Option<String>,
    pub model: ModelRef,
    /// vigild's version, in `status` and discovery.
    pub version: String,
    /// Reports the scoring loop may queue ahead of the publisher.
    pub queue_capacity: usize,
    /// Mask buffers in the pool (each `model H × W` bytes).
    pub mask_buffers: usize,
    pub keep_alive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// On shutdown, how long to wait for the broker to take what is queued.
    pub drain_timeout: Duration,
    /// Models by generation, for results of hot-reloaded models (None: `model` only).
    pub models: Option<Arc<ModelTable>>,
    /// MQTT reload commands (None: not subscribed).
    pub commands: Option<Commands>,
}

/// Where authenticated `…/command/reload` messages go.
#[derive(Clone)]
pub struct Commands {
    /// The shared secret a command must carry (`command_token`).
    pub token: String,
    pub requests: std::sync::mpsc::Sender<ReloadRequest>,
    /// Shared by the clones: refusals of the whole run.
    pub limiter: Arc<Mutex<RefusalLimiter>>,
}

impl Commands {
    pub fn new(token: String, requests: std::sync::mpsc::Sender<ReloadRequest>) -> Commands {
        Commands {
            token,
            requests,
            limiter: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself.
        f.write_str("Commands { token: \"********\" }")
    }
}

impl PublishConfig {
    /// vigild's validated MQTT settings plus the model that runs. With the embedded broker
    /// and no `broker`, connects to it on 127.0.0.1:1883.
    pub fn from_mqtt(
        m: &crate::config::MqttConfig,
        model: ModelRef,
    ) -> Result<PublishConfig, PublishError> {
        let (host, port, tls) = match (&m.broker, m.embedded_broker) {
            (Some(b), _) => (b.host.clone(), b.port, b.tls),
            (None, true) => ("127.0.0.1".to_string(), crate::config::MQTT_PORT, false),
            (None, false) => return Err(PublishError::NoBroker),
        };
        let mut c = PublishConfig::new(
            &host,
            port,
            &m.device_id,
            &m.camera,
            model,
            m.spool_dir.clone(),
        )?;
        c.tls = tls;
        c.tls_ca = m.tls_ca.clone();
        c.username = m.username.clone();
        c.password = m.password.clone();
        c.topic_prefix = m.topic_prefix.clone();
        c.masks = m.masks;
        c.spool_max_bytes = m.spool_max_bytes;
        c.stats_interval = m.stats_interval;
        Ok(c)
    }

    /// Defaults for everything but the broker, identity, model and spool location.
    pub fn new(
        host: &str,
        port: u16,
        device_id: &str,
        camera: &str,
        model: ModelRef,
        spool_dir: PathBuf,
    ) -> Result<PublishConfig, PublishError> {
        Ok(PublishConfig {
            host: host.into(),
            port,
            tls: false,
            tls_ca: None,
            username: None,
            password: None,
            device_id: device_id.into(),
            camera: camera.into(),
            topic_prefix: Topics::default_prefix(device_id)?,
            masks: MaskPolicy::Anomalous,
            spool_dir,
            spool_max_bytes: 64 << 20,
            stats_interval: Duration::from_secs(10),
            ha_discovery_prefix: Some(messages::HA_DISCOVERY_PREFIX.into()),
            model,
            version: env!("CARGO_PKG_VERSION").into(),
            queue_capacity: 64,
            mask_buffers: 4,
            keep_alive: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            models: None,
            commands: None,
        })
    }
}

/// An 8-bit grayscale anomaly map (e.g. from `vigil_shared::mask::to_u8`), encoded to PNG on
/// the publisher's thread. `pixels` should come from [`PublisherHandle::take_mask_buffer`] so
/// that the scoring loop does not allocate.
#[derive(Debug)]
pub struct MaskImage {
    pub pixels: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// One scored frame, as the scoring loop hands it over.
#[derive(Debug)]
pub struct FrameReport {
    pub frame_id: u64,
    /// Shared name (e.g. the file name), cloned without allocating.
    pub source: Arc<str>,
    pub captured_at: SystemTime,
    pub score: f32,
    pub normalized_score: f32,
    pub threshold: f32,
    pub anomalous: bool,
    pub latency: LatencyMs,
    /// Only when [`PublisherHandle::wants_mask`] said so.
    pub mask: Option<MaskImage>,
}

enum Inbound {
    Frame(FrameReport),
    Pipeline(PipelineStats),
    /// The frames that follow were scored by this model (after a hot reload).
    Model(ModelRef),
    /// The outcome of a reload, for `…/command/result`.
    Command(CommandResult),
}

#[derive(Default)]
struct Counters {
    queue_full: AtomicU64,
    masks_dropped: AtomicU64,
}

/// The scoring loop's side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct PublisherHandle {
    tx: mpsc::Sender<Inbound>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    counters: Arc<Counters>,
    masks: MaskPolicy,
}

impl PublisherHandle {
    /// Queues a report; when the queue is full the report is handed back and counted.
    pub fn try_publish(&self, report: FrameReport) -> Result<(), Box<FrameReport>> {
        let (mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m)) =
            match self.tx.try_send(Inbound::Frame(report)) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
        self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
        match m {
            Inbound::Frame(mut r) => {
                if let Some(mask) = r.mask.take() {
                    self.give_back(mask.pixels);
                }
                Err(Box::new(r))
            }
            _ => Ok(()),
        }
    }

    /// Publishes the outcome of a reload on `…/command/result` (from the reload thread).
    pub fn report_command(&self, r: CommandResult) {
        if self.tx.try_send(Inbound::Command(r)).is_err() {
            eprintln!("vigild: publisher queue full: a reload result was not published");
        }
    }

    /// The latest pipeline counters, for the next `stats` message (the latest one wins).
    pub fn update_stats(&self, stats: PipelineStats) {
        // A full queue just means these figures are superseded by the next update.
        let _ = self.tx.try_send(Inbound::Pipeline(stats));
    }

    /// Whether a frame with this verdict gets a mask (the configured [`MaskPolicy`]).
    pub fn wants_mask(&self, anomalous: bool) -> bool {
        self.masks.wants(anomalous)
    }

    /// A buffer for [`MaskImage::pixels`] from the pool, or None when all are in use (the
    /// mask is then skipped and counted by [`PublisherHandle::mask_skipped`]).
    pub fn take_mask_buffer(&self) -> Option<Vec<u8>> {
        self.pool.lock().ok()?.pop()
    }

    /// Counts a mask the scoring loop could not provide.
    pub fn mask_skipped(&self) {
        self.counters.masks_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns a buffer to the pool (the publisher does this after encoding).
    pub fn give_back(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < p.capacity() {
                p.push(buf);
            }
        }
    }
}

/// The running publisher.
pub struct Publisher {
    handle: PublisherHandle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<PublisherStats>>,
    /// Set on shutdown: the bridge forwards what is queued, then exits.
    draining: Arc<AtomicBool>,
    bridge: Option<std::thread::JoinHandle<()>>,
    models: Option<Arc<ModelTable>>,
}

impl Publisher {
    /// Opens the spool, starts the publisher thread and begins connecting (in the background:
    /// an unreachable broker is retried forever while results are spooled).
    /// `mask_len` is the size of one mask buffer (model height × width).
    pub fn start(cfg: PublishConfig, mask_len: usize) -> Result<Publisher, PublishError> {
        Self::start_inner(cfg, mask_len, None)
    }

    /// Starts the publisher fed by the scoring loop's result channel; `…/stats` takes the
    /// pipeline figures from `telemetry` every `stats_interval`.
    pub fn start_for_pipeline(
        cfg: PublishConfig,
        results: Results,
        telemetry: Arc<Telemetry>,
    ) -> Result<Publisher, PublishError> {
        let mut p = Self::start_inner(cfg, 0, Some(telemetry))?;
        let tx = p.handle.tx.clone();
        let draining = p.draining.clone();
        let models = p.models.clone();
        let bridge = std::thread::Builder::new()
            .name("publisher-bridge".into())
            .spawn(move || bridge(results, tx, draining, models))
            .map_err(PublishError::Thread)?;
        p.bridge = Some(bridge);
        Ok(p)
    }

    fn start_inner(
        cfg: PublishConfig,
        mask_len: usize,
        telemetry: Option<Arc<Telemetry>>,
    ) -> Result<Publisher, PublishError> {
        let topics = Topics::new(&cfg.topic_prefix, &cfg.camera)?;
        let spool = Spool::open(&cfg.spool_dir, cfg.spool_max_bytes)?;
        let options = mqtt_options(&cfg, &topics)?;
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let mut pool = Vec::with_capacity(cfg.mask_buffers);
        for _ in 0..cfg.mask_buffers {
            pool.push(Vec::with_capacity(mask_len));
        }
        let handle = PublisherHandle {
            tx,
            pool: Arc::new(Mutex::new(pool)),
            counters: Arc::new(Counters::default()),
            masks: cfg.masks,
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        let h = handle.clone();
        let models = cfg.models.clone();
        let thread = std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("vigild: publisher: cannot build its runtime: {e}");
                        return PublisherStats::default();
                    }
                };
                rt.block_on(run(cfg, topics, spool, options, h, telemetry, rx, stop_rx))
            })
            .map_err(PublishError::Thread)?;
        Ok(Publisher {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
            draining: Arc::new(AtomicBool::new(false)),
            bridge: None,
            models,
        })
    }

    pub fn handle(&self) -> PublisherHandle {
        self.handle.clone()
    }

    /// Clean stop: publishes what is queued (up to `drain_timeout`), the retained status
    /// `stopped`, disconnects (so the broker discards the Last Will), spools whatever the
    /// broker did not take, and returns the final counters.
    pub fn shutdown(mut self) -> Result<PublisherStats, PublishError> {
        self.draining.store(true, Ordering::Relaxed);
        if let Some(b) = self.bridge.take() {
            let _ = b.join();
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| PublishError::Panicked),
            None => Ok(PublisherStats::default()),
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.draining.store(true, Ordering::Relaxed);
        if let Some(b) = self.bridge.take() {
            let _ = b.join();
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Forwards the pipeline's records to the publisher until the scorer is gone, or until
/// shutdown once the queue is empty. Blocking here is fine: the scoring loop never waits on
/// this thread (its own channel drops and counts when full).
fn bridge(
    results: Results,
    tx: mpsc::Sender<Inbound>,
    draining: Arc<AtomicBool>,
    models: Option<Arc<ModelTable>>,
) {
    let mut gen = 0;
    loop {
        let rec = match results.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) if draining.load(Ordering::Relaxed) => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let report = FrameReport {
            frame_id: rec.frame_id,
            source: Arc::from(rec.source.as_str()),
            captured_at: rec.captured_at,
            score: rec.score,
            normalized_score: rec.normalized_score,
            threshold: rec.threshold,
            anomalous: rec.anomalous,
            latency: rec.latency,
            mask: rec.has_mask.then(|| MaskImage {
                pixels: rec.mask.clone(),
                width: rec.mask_width,
                height: rec.mask_height,
            }),
        };
        let new_model = (rec.model_gen != gen)
            .then(|| models.as_ref().map(|m| m.get(rec.model_gen)))
            .flatten();
        gen = rec.model_gen;
        // Release the record to the scorer's pool before waiting on the publisher.
        drop(rec);
        // In the same queue, so it takes effect exactly from this frame on.
        if let Some(m) = new_model {
            if tx.blocking_send(Inbound::Model(m)).is_err() {
                return;
            }
        }
        if tx.blocking_send(Inbound::Frame(report)).is_err() {
            return;
        }
    }
}

fn mqtt_options(cfg: &PublishConfig, topics: &Topics) -> Result<MqttOptions, PublishError> {
    let client_id = format!("vigild-{}", messages::ha_id(&cfg.device_id));
    let mut o = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(1)));
    // Clean session: vigild tracks what is unacknowledged itself and resends it from its own
    // queue and spool; rumqttc then drops its copies on reconnect instead of sending them twice.
    o.set_clean_session(true);
    o.set_max_packet_size(16 << 20, 16 << 20);
    let will = status(cfg, DeviceState::Offline, SystemTime::now());
    o.set_last_will(LastWill::new(
        topics.status(),
        serde_json::to_vec(&will).unwrap_or_default(),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    if cfg.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(cfg)?),
        )));
    }
    Ok(o)
}

fn status(cfg: &PublishConfig, state: DeviceState, since: SystemTime) -> Status {
    Status {
        state,
        version: cfg.version.clone(),
        model: cfg.model.id.clone(),
        model_sha256: cfg.model.sha256.clone(),
        since: messages::rfc3339_ms(since),
    }
}

fn tls_config(cfg: &PublishConfig) -> Result<rustls::ClientConfig, PublishError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.tls_ca {
        Some(path) => {
            let ca_err = |msg: String| PublishError::TlsCa {
                path: path.clone(),
                msg,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                // Unparseable system certificates are skipped, as browsers do.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(PublishError::Tls(
                    "no system CA certificates found: set the TLS CA file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PublishError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A message waiting in memory.
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    is_result: bool,
}

enum Origin {
    /// In the spool with this seq.
    Spool(u64, bool),
    /// Only in memory (spool empty when it was sent).
    Mem(Msg),
    /// Status, state, stats, discovery: not resent after a lost connection (they are
    /// republished fresh instead).
    Ephemeral,
}

struct Inflight {
    origin: Origin,
    /// Packet id once rumqttc has written it (0 for QoS 0).
    pkid: Option<u16>,
    acked: bool,
}

struct State {
    cfg: PublishConfig,
    topics: Topics,
    client: AsyncClient,
    handle: PublisherHandle,
    spool: Spool,
    memq: VecDeque<Msg>,
    inflight: VecDeque<Inflight>,
    connected: bool,
    connections: u64,
    published: u64,
    publish_errors: u64,
    /// Latest result JSON and whether it is on `…/state` yet.
    latest: Option<Vec<u8>>,
    latest_sent: bool,
    pipeline: PipelineStats,
    telemetry: Option<Arc<Telemetry>>,
    started: Instant,
    backoff: Duration,
    last_error: Option<String>,
    /// `stopped` was submitted; waiting for its PubAck.
    stopped_sent: bool,
    disconnect_sent: bool,
    /// When the current connection came online (kept in `status` across hot reloads).
    online_since: SystemTime,
}

impl State {
    fn stats(&self) -> PublisherStats {
        PublisherStats {
            spooled: self.spool.len(),
            spool_bytes: self.spool.bytes(),
            spool_dropped: self.spool.dropped(),
            published: self.published,
            reconnects: self.connections.saturating_sub(1),
            queue_full: self.handle.counters.queue_full.load(Ordering::Relaxed)
                + self
                    .telemetry
                    .as_ref()
                    .map_or(0, |t| t.queue_full.load(Ordering::Relaxed)),
            masks_dropped: self.handle.counters.masks_dropped.load(Ordering::Relaxed),
            publish_errors: self.publish_errors,
        }
    }

    fn submit(&mut self, topic: &str, payload: Vec<u8>, qos: QoS, retain: bool, origin: Origin) {
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => self.inflight.push_back(Inflight {
                origin,
                pkid: None,
                acked: false,
            }),
            Err(e) => {
                // Cannot happen while WINDOW + ephemerals < the client's capacity; counted
                // rather than hidden if it ever does.
                self.publish_errors += 1;
                eprintln!("vigild: mqtt: client refused a message on {topic}: {e}");
            }
        }
    }

    fn ordered_inflight(&self) -> usize {
        self.inflight
            .iter()
            .filter(|i| !matches!(i.origin, Origin::Ephemeral))
            .count()
    }

    /// Sends queued messages, oldest first, up to the window.
    fn pump(&mut self) {
        if !self.connected || self.disconnect_sent {
            return;
        }
        while self.ordered_inflight() < WINDOW {
            if !self.spool.all_sent() {
                match self.spool.next_unsent() {
                    Ok(Some(rec)) => {
                        let is_result = rec.topic == self.topics.result();
                        self.submit(
                            &rec.topic,
                            rec.payload,
                            QoS::AtLeastOnce,
                            rec.retain,
                            Origin::Spool(rec.seq, is_result),
                        );
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // An I/O error reading the spool (corrupt records are skipped and
                        // counted by the spool itself): try again from the start next time.
                        self.publish_errors += 1;
                        eprintln!("vigild: {e}; retrying");
                        self.spool.rewind();
                        break;
                    }
                }
            }
            let Some(m) = self.memq.pop_front() else {
                break;
            };
            let (topic, payload, retain) = (m.topic.clone(), m.payload.clone(), m.retain);
            self.submit(&topic, payload, QoS::AtLeastOnce, retain, Origin::Mem(m));
        }
        let drained = self.spool.all_sent() && self.memq.is_empty();
        if drained && !self.latest_sent {
            if let Some(latest) = self.latest.clone() {
                let topic = self.topics.state();
                self.submit(&topic, latest, QoS::AtLeastOnce, true, Origin::Ephemeral);
                self.latest_sent = true;
            }
        }
    }

    /// Moves everything unacknowledged that lives only in memory to the spool, keeping order:
    /// the in-flight messages first, then the queue.
    fn spill(&mut self) {
        let mut errors = 0;
        for i in self.inflight.iter_mut().filter(|i| !i.acked) {
            if let Origin::Mem(m) = &i.origin {
                match self.spool.append_sent(m.retain, &m.topic, &m.payload) {
                    Ok(seq) => i.origin = Origin::Spool(seq, m.is_result),
                    Err(e) => {
                        errors += 1;
                        spool::report(&e);
                    }
                }
            }
        }
        for m in self.memq.drain(..) {
            if let Err(e) = self.spool.append(m.retain, &m.topic, &m.payload) {
                errors += 1;
                spool::report(&e);
            }
        }
        self.publish_errors += errors;
    }

    fn enqueue(&mut self, m: Msg) {
        if self.connected {
            self.memq.push_back(m);
            if self.memq.len() > MEMQ_MAX {
                self.spill();
            }
        } else if let Err(e) = self.spool.append(m.retain, &m.topic, &m.payload) {
            self.publish_errors += 1;
            spool::report(&e);
        }
    }

    fn on_frame(&mut self, r: FrameReport) {
        let result = FrameResult {
            frame_id: r.frame_id,
            source: r.source.to_string(),
            captured_at: messages::rfc3339_ms(r.captured_at),
            score: r.score,
            normalized_score: r.normalized_score,
            threshold: r.threshold,
            anomalous: r.anomalous,
            latency_ms: r.latency,
            model: self.cfg.model.clone(),
        };
        let json = match serde_json::to_vec(&result) {
            Ok(j) => j,
            Err(e) => {
                self.publish_errors += 1;
                eprintln!("vigild: result {} not serialisable: {e}", r.frame_id);
                return;
            }
        };
        self.latest = Some(json.clone());
        self.latest_sent = false;
        self.enqueue(Msg {
            topic: self.topics.result(),
            payload: json,
            retain: false,
            is_result: true,
        });
        if let Some(mask) = r.mask {
            if self.cfg.masks.wants(r.anomalous) {
                let id = r.frame_id.to_string();
                match vigil_shared::mask::encode_png_gray(
                    &mask.pixels,
                    mask.width,
                    mask.height,
                    &[("frame_id", &id)],
                ) {
                    Ok(png) => self.enqueue(Msg {
                        topic: self.topics.mask(),
                        payload: png,
                        retain: false,
                        is_result: false,
                    }),
                    Err(e) => {
                        self.handle.mask_skipped();
                        eprintln!("vigild: mask of frame {}: {e}", r.frame_id);
                    }
                }
            }
            self.handle.give_back(mask.pixels);
        }
        self.pump();
    }

    fn on_connack(&mut self) {
        self.connected = true;
        self.connections += 1;
        self.backoff = self.cfg.reconnect_min;
        if self.last_error.take().is_some() {
            eprintln!(
                "vigild: mqtt: connected to {}:{} (reconnect {}), {} spooled",
                self.cfg.host,
                self.cfg.port,
                self.connections - 1,
                self.spool.len()
            );
        }
        self.online_since = SystemTime::now();
        self.publish_online();
        if self.cfg.commands.is_some() {
            // Clean session: subscribe again at every connect.
            let topic = self.topics.command_reload();
            if let Err(e) = self.client.try_subscribe(&topic, QoS::AtLeastOnce) {
                self.publish_errors += 1;
                eprintln!("vigild: mqtt: cannot subscribe to {topic}: {e}");
            }
        }
        if let Some(prefix) = self.cfg.ha_discovery_prefix.clone() {
            for d in messages::ha_discovery(
                &prefix,
                &self.cfg.device_id,
                &self.topics,
                &self.cfg.version,
                &self.cfg.model.id,
            ) {
                let payload = serde_json::to_vec(&d.config).unwrap_or_default();
                self.submit(&d.topic, payload, QoS::AtLeastOnce, true, Origin::Ephemeral);
            }
        }
        // The retained state may be older than what was scored while away.
        self.latest_sent = false;
        self.pump();
    }

    /// The retained `online` status with the model that runs now.
    fn publish_online(&mut self) {
        let s = status(&self.cfg, DeviceState::Online, self.online_since);
        let topic = self.topics.status();
        self.submit(
            &topic,
            serde_json::to_vec(&s).unwrap_or_default(),
            QoS::AtLeastOnce,
            true,
            Origin::Ephemeral,
        );
    }

    /// A hot reload took effect: results from now on carry `m`, and so does the status.
    fn on_model(&mut self, m: ModelRef) {
        eprintln!("vigild: now scoring with {} (sha256 {})", m.id, m.sha256);
        self.cfg.model = m;
        if self.connected && !self.disconnect_sent {
            self.publish_online();
        }
    }

    fn publish_command_result(&mut self, r: &CommandResult) {
        if !self.connected || self.disconnect_sent {
            return;
        }
        let topic = self.topics.command_result();
        if let Ok(p) = serde_json::to_vec(r) {
            self.submit(&topic, p, QoS::AtLeastOnce, false, Origin::Ephemeral);
        }
    }

    /// An incoming message: only `…/command/reload` is subscribed. Parsing and the checks are
    /// `reload::parse_command`'s; refusals are rate-limited.
    fn on_incoming(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let Some(cmd) = self.cfg.commands.clone() else {
            return;
        };
        if topic != self.topics.command_reload() {
            return;
        }
        let refusal = match parse_command(payload, retain, &cmd.token) {
            Ok(req) => match cmd.requests.send(req) {
                Ok(()) => return,
                Err(e) => Refusal {
                    bundle: e
                        .0
                        .bundle
                        .map(|b| b.display().to_string())
                        .unwrap_or_default(),
                    request_id: e.0.request_id,
                    msg: "the reload thread has stopped".into(),
                },
            },
            Err(r) => r,
        };
        let now = Instant::now();
        let Some(suppressed) = cmd.limiter.lock().map_or(Some(0), |mut l| l.admit(now)) else {
            return;
        };
        let mut msg = refusal.msg;
        if suppressed > 0 {
            msg += &format!(" ({suppressed} more refused since the last one reported)");
        }
        eprintln!("vigild: {topic}: refused: {msg}");
        let r = CommandResult {
            command: "reload".into(),
            trigger: Trigger::Mqtt.as_str().into(),
            request_id: refusal.request_id,
            bundle: refusal.bundle,
            ok: false,
            model: self.cfg.model.clone(),
            error: Some(msg),
            at: messages::rfc3339_ms(SystemTime::now()),
        };
        self.publish_command_result(&r);
    }

    fn on_disconnect(&mut self, e: &ConnectionError) {
        let msg = e.to_string();
        if self.connected || self.last_error.as_deref() != Some(msg.as_str()) {
            eprintln!(
                "vigild: mqtt: {}:{}: {msg}; retrying, results go to the spool",
                self.cfg.host, self.cfg.port
            );
        }
        self.last_error = Some(msg);
        self.connected = false;
        self.spill();
        self.inflight.clear();
        self.spool.rewind();
        self.stopped_sent = false;
        self.disconnect_sent = false;
    }

    fn on_outgoing_publish(&mut self, pkid: u16) {
        if let Some(i) = self.inflight.iter_mut().find(|i| i.pkid.is_none()) {
            i.pkid = Some(pkid);
            if pkid == 0 {
                i.acked = true;
            }
        }
        self.settle();
    }

    fn on_puback(&mut self, pkid: u16) {
        if let Some(i) = self
            .inflight
            .iter_mut()
            .find(|i| i.pkid == Some(pkid) && !i.acked)
        {
            i.acked = true;
        }
        self.settle();
        self.pump();
    }

    /// Releases the acknowledged prefix of the in-flight list, in order.
    fn settle(&mut self) {
        while self.inflight.front().is_some_and(|i| i.acked) {
            let Some(i) = self.inflight.pop_front() else {
                break;
            };
            match i.origin {
                Origin::Spool(seq, is_result) => {
                    if let Err(e) = self.spool.ack_through(seq) {
                        self.publish_errors += 1;
                        eprintln!("vigild: {e}");
                    }
                    self.published += u64::from(is_result);
                }
                Origin::Mem(m) => self.published += u64::from(m.is_result),
                Origin::Ephemeral => {}
            }
        }
    }

    fn publish_stats(&mut self) {
        if let Some(t) = &self.telemetry {
            // Taken even while offline, so that each window covers one interval.
            self.pipeline = t.take_window();
        }
        if !self.connected {
            return;
        }
        let stats = Stats {
            at: messages::rfc3339_ms(SystemTime::now()),
            uptime_s: self.started.elapsed().as_secs_f64(),
            pipeline: self.pipeline,
            publisher: self.stats(),
        };
        let topic = self.topics.stats();
        if let Ok(p) = serde_json::to_vec(&stats) {
            self.submit(&topic, p, QoS::AtMostOnce, false, Origin::Ephemeral);
        }
    }

    fn idle(&self) -> bool {
        self.memq.is_empty() && self.spool.is_empty() && self.inflight.is_empty()
    }
}

#[allow(clippy::too_many_arguments)] // one call site, all owned parts of the task
async fn run(
    cfg: PublishConfig,
    topics: Topics,
    spool: Spool,
    options: MqttOptions,
    handle: PublisherHandle,
    telemetry: Option<Arc<Telemetry>>,
    mut rx: mpsc::Receiver<Inbound>,
    mut stop_rx: oneshot::Receiver<()>,
) -> PublisherStats {
    let (client, mut el): (AsyncClient, EventLoop) = AsyncClient::new(options, 256);
    let mut st = State {
        backoff: cfg.reconnect_min,
        cfg,
        topics,
        client,
        handle,
        spool,
        memq: VecDeque::new(),
        inflight: VecDeque::new(),
        connected: false,
        connections: 0,
        published: 0,
        publish_errors: 0,
        latest: None,
        latest_sent: true,
        pipeline: PipelineStats::default(),
        telemetry,
        started: Instant::now(),
        last_error: None,
        stopped_sent: false,
        disconnect_sent: false,
        online_since: SystemTime::now(),
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut t = Timers {
        next_stats: Instant::now() + st.cfg.stats_interval,
        next_sync: Instant::now() + SYNC_EVERY,
        stopping: None,
        rx_open: true,
    };
    let mut next_connect = tokio::time::Instant::now();

    loop {
        if t.stopping.is_some() && !st.connected {
            break;
        }
        if tokio::time::Instant::now() < next_connect {
            // Reconnect backoff: still taking results (into the spool).
            tokio::select! {
                _ = tokio::time::sleep_until(next_connect) => {}
                m = rx.recv(), if t.rx_open => t.inbound(&mut st, m),
                _ = &mut stop_rx, if t.stopping.is_none() => t.stopping = Some(Instant::now()),
                _ = tick.tick() => {}
            }
            housekeeping(&mut st, &mut t, &mut rx);
            continue;
        }
        let event = {
            // The poll future is not dropped half-way while connected (rumqttc may be
            // mid-write): other work happens inside this select while it runs.
            let poll = el.poll();
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    biased;
                    ev = &mut poll => break Some(ev),
                    m = rx.recv(), if t.rx_open => t.inbound(&mut st, m),
                    _ = &mut stop_rx, if t.stopping.is_none() => t.stopping = Some(Instant::now()),
                    _ = tick.tick() => {}
                }
                if housekeeping(&mut st, &mut t, &mut rx) {
                    break None;
                }
            }
        };
        match event {
            Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => st.on_connack(),
            Some(Ok(Event::Incoming(Packet::PubAck(a)))) => st.on_puback(a.pkid),
            Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => st.on_outgoing_publish(pkid),
            Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                st.on_incoming(&p.topic, &p.payload, p.retain)
            }
            Some(Ok(Event::Outgoing(Outgoing::Disconnect))) if st.disconnect_sent => break,
            Some(Ok(_)) => {}
            Some(Err(_)) if st.disconnect_sent => break,
            Some(Err(e)) => {
                st.on_disconnect(&e);
                next_connect = tokio::time::Instant::now() + st.backoff;
                st.backoff = (st.backoff * 2).min(st.cfg.reconnect_max);
            }
            // Shutdown gave up on the connection.
            None => break,
        }
    }
    // Whatever the broker did not take waits in the spool for the next run.
    st.connected = false;
    st.spill();
    if let Err(e) = st.spool.sync() {
        st.publish_errors += 1;
        eprintln!("vigild: {e}");
    }
    st.stats()
}

struct Timers {
    next_stats: Instant,
    next_sync: Instant,
    /// When shutdown was asked for.
    stopping: Option<Instant>,
    rx_open: bool,
}

impl Timers {
    fn inbound(&mut self, st: &mut State, m: Option<Inbound>) {
        match m {
            Some(Inbound::Frame(r)) => st.on_frame(r),
            Some(Inbound::Pipeline(p)) => st.pipeline = p,
            Some(Inbound::Model(m)) => st.on_model(m),
            Some(Inbound::Command(r)) => st.publish_command_result(&r),
            None => {
                // Every handle is gone: nothing more can come, so stop.
                self.rx_open = false;
                self.stopping.get_or_insert_with(Instant::now);
            }
        }
    }
}

/// Periodic work and the shutdown sequence; true when the current poll must be abandoned
/// (shutting down and either not connected, so no packet is half-written, or past the
/// drain timeout, when the process is leaving anyway).
fn housekeeping(st: &mut State, t: &mut Timers, rx: &mut mpsc::Receiver<Inbound>) -> bool {
    let now = Instant::now();
    if now >= t.next_stats {
        st.publish_stats();
        t.next_stats = now + st.cfg.stats_interval;
    }
    if now >= t.next_sync {
        if let Err(e) = st.spool.sync() {
            st.publish_errors += 1;
            eprintln!("vigild: {e}");
        }
        t.next_sync = now + SYNC_EVERY;
    }
    let Some(since) = t.stopping else {
        return false;
    };
    // Reports already queued by the scoring loop belong to this run.
    if t.rx_open {
        while let Ok(m) = rx.try_recv() {
            t.inbound(st, Some(m));
        }
    }
    let late = since.elapsed() >= st.cfg.drain_timeout;
    if st.connected && !st.stopped_sent && (st.idle() || late) {
        st.publish_stats();
        let status = status(&st.cfg, DeviceState::Stopped, SystemTime::now());
        let topic = st.topics.status();
        st.submit(
            &topic,
            serde_json::to_vec(&status).unwrap_or_default(),
            QoS::AtLeastOnce,
            true,
            Origin::Ephemeral,
        );
        st.stopped_sent = true;
    }
    let stopped_acked = st.stopped_sent
        && st
            .inflight
            .iter()
            .all(|i| i.acked || !matches!(i.origin, Origin::Ephemeral));
    if st.connected && st.stopped_sent && !st.disconnect_sent && (stopped_acked || late) {
        // A clean DISCONNECT makes the broker discard the Last Will, so `stopped` stays.
        // It is queued behind `stopped`, so it never overtakes it.
        if st.client.try_disconnect().is_ok() {
            st.disconnect_sent = true;
        }
    }
    !st.connected || since.elapsed() >= st.cfg.drain_timeout + Duration::from_secs(2)
}
