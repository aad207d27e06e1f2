//! The delivery state machine: what is queued in memory, in the spool and in flight, and the
//! reaction to each MQTT event (ConnAck, PubAck, a lost connection), so that every result
//! reaches the broker once it is back, in order, and nothing acknowledged is sent again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, ConnectionError, QoS};
use vigil_shared::messages::{
    self, DeviceState, ModelRef, PipelineStats, PublisherStats, Stats, Topics,
};

use super::config::{status, PublishConfig};
use super::spool::Spool;
use crate::config::{BrokerUrl, MqttConfig};
use crate::pipeline::{Lease, Telemetry};

/// Messages sent but not yet acknowledged, at most: keeps the resend after a lost connection
/// small and far below rumqttc's packet-id range (no id collisions).
const WINDOW: usize = 16;
/// Messages held in memory (only those the spool could not take while connected) before the
/// oldest is given up and counted.
const MEMQ_MAX: usize = 256;

/// A message waiting in memory: one the spool refused (a full disk) while the broker was there.
pub(super) struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    is_result: bool,
}

pub(super) enum Origin {
    /// In the spool with this seq.
    Spool(u64, bool),
    /// Only in memory (spool empty when it was sent).
    Mem(Msg),
    /// Status, state, stats, discovery: not resent after a lost connection (they are
    /// republished fresh instead).
    Ephemeral,
}

pub(super) struct Inflight {
    pub(super) origin: Origin,
    /// Packet id once rumqttc has written it (0 for QoS 0).
    pkid: Option<u16>,
    pub(super) acked: bool,
}

pub(super) struct State {
    pub(super) cfg: PublishConfig,
    pub(super) topics: Topics,
    /// Where it connects (for the log).
    broker: BrokerUrl,
    pub(super) client: AsyncClient,
    pub(super) spool: Spool,
    memq: VecDeque<Msg>,
    pub(super) inflight: VecDeque<Inflight>,
    pub(super) connected: bool,
    connections: u64,
    published: u64,
    pub(super) publish_errors: u64,
    /// Records the handle refused (queue full).
    queue_full: Arc<AtomicU64>,
    masks_dropped: u64,
    /// Latest result JSON and whether it is on `…/state` yet.
    latest: Option<Vec<u8>>,
    latest_sent: bool,
    /// The model generation of the last record (a change means a hot reload took effect).
    model_gen: u32,
    pipeline: PipelineStats,
    telemetry: Option<Arc<Telemetry>>,
    started: Instant,
    pub(super) backoff: Duration,
    last_error: Option<String>,
    connect_failures: u64,
    /// The last failure's reason, kept after a later success (stats).
    last_connect_error: Option<String>,
    /// `stopped` was submitted; waiting for its PubAck.
    pub(super) stopped_sent: bool,
    pub(super) disconnect_sent: bool,
    /// When the current connection came online (kept in `status` across hot reloads).
    online_since: SystemTime,
}

impl State {
    pub(super) fn new(
        cfg: PublishConfig,
        topics: Topics,
        broker: BrokerUrl,
        client: AsyncClient,
        spool: Spool,
        queue_full: Arc<AtomicU64>,
        telemetry: Option<Arc<Telemetry>>,
    ) -> State {
        State {
            backoff: cfg.reconnect_min,
            cfg,
            topics,
            broker,
            client,
            spool,
            memq: VecDeque::new(),
            inflight: VecDeque::new(),
            connected: false,
            connections: 0,
            published: 0,
            publish_errors: 0,
            queue_full,
            masks_dropped: 0,
            latest: None,
            latest_sent: true,
            model_gen: 0,
            pipeline: PipelineStats::default(),
            telemetry,
            started: Instant::now(),
            last_error: None,
            connect_failures: 0,
            last_connect_error: None,
            stopped_sent: false,
            disconnect_sent: false,
            online_since: SystemTime::now(),
        }
    }

    pub(super) fn stats(&self) -> PublisherStats {
        PublisherStats {
            spooled: self.spool.len(),
            spool_bytes: self.spool.bytes(),
            spool_dropped: self.spool.dropped(),
            published: self.published,
            reconnects: self.connections.saturating_sub(1),
            queue_full: self.queue_full.load(Ordering::Relaxed)
                + self
                    .telemetry
                    .as_ref()
                    .map_or(0, |t| t.queue_full.load(Ordering::Relaxed)),
            masks_dropped: self.masks_dropped,
            publish_errors: self.publish_errors,
            connect_failures: self.connect_failures,
            last_connect_error: self.last_connect_error.clone(),
        }
    }

    pub(super) fn submit(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        qos: QoS,
        retain: bool,
        origin: Origin,
    ) {
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
                log_error!("mqtt: client refused a message on {topic}: {e}");
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
                        log_warn!("{e}; retrying");
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
    pub(super) fn spill(&mut self) {
        let mut errors = 0;
        for i in self.inflight.iter_mut().filter(|i| !i.acked) {
            if let Origin::Mem(m) = &i.origin {
                match self.spool.append_sent(m.retain, &m.topic, &m.payload) {
                    Ok(seq) => i.origin = Origin::Spool(seq, m.is_result),
                    Err(e) => {
                        errors += 1;
                        super::spool::report(&e);
                    }
                }
            }
        }
        for m in self.memq.drain(..) {
            if let Err(e) = self.spool.append(m.retain, &m.topic, &m.payload) {
                errors += 1;
                super::spool::report(&e);
            }
        }
        self.publish_errors += errors;
    }

    /// Write-ahead: every result and mask goes to the spool first and is sent from there, so a
    /// crash of vigild loses nothing that reached the spool (the page cache outlives the
    /// process) and a power cut at most what came after the last `sync_data` (every
    /// `event_loop::SYNC_DATA_EVERY`). When the spool cannot take it (a full disk) and the broker
    /// is there, it is delivered from memory instead; offline, it is lost and counted.
    fn enqueue(&mut self, m: Msg) {
        match self.spool.try_append(m.retain, &m.topic, &m.payload) {
            Ok(_) => {}
            Err(e) => {
                super::spool::report(&e);
                if self.connected {
                    self.memq.push_back(m);
                    if self.memq.len() > MEMQ_MAX {
                        self.memq.pop_front();
                        self.spool.count_dropped();
                        self.publish_errors += 1;
                    }
                } else {
                    self.spool.count_dropped();
                    self.publish_errors += 1;
                }
            }
        }
    }

    /// A scored frame: its result (and mask PNG, when the scorer chose to make one) to the
    /// queue, and the `…/state` copy of the newest result.
    pub(super) fn on_frame(&mut self, rec: Lease) {
        if rec.model_gen != self.model_gen {
            // The first frame of a hot-reloaded model: results and status carry it from here.
            self.model_gen = rec.model_gen;
            if let Some(m) = self.cfg.models.as_ref().map(|t| t.get(rec.model_gen)) {
                self.on_model(m);
            }
        }
        let json = match serde_json::to_vec(&rec.to_message(&self.cfg.model)) {
            Ok(j) => j,
            Err(e) => {
                self.publish_errors += 1;
                log_error!("result {} not serialisable: {e}", rec.frame_id);
                return;
            }
        };
        let mask = rec.mask_png();
        let frame_id = rec.frame_id;
        // Back to the scorer's pool before the (possibly slow) queueing below.
        drop(rec);
        self.latest = Some(json.clone());
        self.latest_sent = false;
        self.enqueue(Msg {
            topic: self.topics.result(),
            payload: json,
            retain: false,
            is_result: true,
        });
        match mask {
            Some(Ok(png)) => self.enqueue(Msg {
                topic: self.topics.mask(),
                payload: png,
                retain: false,
                is_result: false,
            }),
            Some(Err(e)) => {
                self.masks_dropped += 1;
                log_warn!("mask of frame {frame_id}: {e}");
            }
            None => {}
        }
        self.pump();
    }

    pub(super) fn on_connack(&mut self) {
        self.connected = true;
        self.connections += 1;
        self.backoff = self.cfg.reconnect_min;
        if self.last_error.take().is_some() {
            log_info!(
                "mqtt: connected to {}:{} (reconnect {}), {} spooled",
                self.broker.host,
                self.broker.port,
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
                log_warn!("mqtt: cannot subscribe to {topic}: {e}");
            }
        }
        if let Some(prefix) = self.cfg.ha_discovery_prefix.clone() {
            for d in messages::ha_discovery(
                &prefix,
                &self.cfg.mqtt.device_id,
                &self.topics,
                &self.cfg.version,
                &self.cfg.model.id,
                self.cfg.mqtt.ha_expire_after_s,
            ) {
                let payload = serde_json::to_vec(&d.config).unwrap_or_default();
                self.submit(&d.topic, payload, QoS::AtLeastOnce, true, Origin::Ephemeral);
            }
            if self.cfg.mqtt.snapshots != crate::config::MaskPolicy::None {
                let (topic, config) = messages::ha_snapshot_discovery(
                    &prefix,
                    &self.cfg.mqtt.device_id,
                    &self.topics,
                    &self.cfg.version,
                    &self.cfg.model.id,
                );
                let payload = serde_json::to_vec(&config).unwrap_or_default();
                self.submit(&topic, payload, QoS::AtLeastOnce, true, Origin::Ephemeral);
            }
        }
        // The retained state may be older than what was scored while away.
        self.latest_sent = false;
        self.pump();
    }

    /// The retained `online` status with the model that runs now.
    fn publish_online(&mut self) {
        self.publish_status(DeviceState::Online, self.online_since);
    }

    /// The retained `…/status`.
    pub(super) fn publish_status(&mut self, state: DeviceState, since: SystemTime) {
        let s = status(&self.cfg, state, since);
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
        log_info!("now scoring with {} (sha256 {})", m.id, m.sha256);
        self.cfg.model = m;
        if self.connected && !self.disconnect_sent {
            self.publish_online();
        }
    }

    pub(super) fn on_disconnect(&mut self, e: &ConnectionError) {
        let msg = explain(e, &self.broker, &self.cfg.mqtt);
        // Once per distinct reason: an unreachable broker or a refused login retried every
        // few seconds says so once, not at every attempt.
        if self.connected || self.last_error.as_deref() != Some(msg.as_str()) {
            log_warn!(
                "mqtt: {}:{}: {msg}; retrying with backoff, results go to the spool",
                self.broker.host,
                self.broker.port
            );
        }
        if !self.connected {
            // Losing an established connection is a reconnect, not a failed attempt.
            self.connect_failures += 1;
            self.last_connect_error = Some(msg.clone());
        }
        self.last_error = Some(msg);
        self.connected = false;
        self.spill();
        self.inflight.clear();
        self.spool.rewind();
        self.stopped_sent = false;
        self.disconnect_sent = false;
    }

    pub(super) fn on_outgoing_publish(&mut self, pkid: u16) {
        if let Some(i) = self.inflight.iter_mut().find(|i| i.pkid.is_none()) {
            i.pkid = Some(pkid);
            if pkid == 0 {
                i.acked = true;
            }
        }
        self.settle();
    }

    pub(super) fn on_puback(&mut self, pkid: u16) {
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
                        log_error!("{e}");
                    }
                    self.published += u64::from(is_result);
                }
                Origin::Mem(m) => self.published += u64::from(m.is_result),
                Origin::Ephemeral => {}
            }
        }
    }

    pub(super) fn publish_stats(&mut self) {
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

    pub(super) fn idle(&self) -> bool {
        self.memq.is_empty() && self.spool.is_empty() && self.inflight.is_empty()
    }
}

/// A connection failure in the words an operator acts on: which setting to look at, not only
/// the library's error.
pub(super) fn explain(e: &ConnectionError, broker: &BrokerUrl, mqtt: &MqttConfig) -> String {
    use rumqttc::ConnectReturnCode as Code;
    let has_ca = mqtt.tls_ca.is_some();
    match e {
        ConnectionError::ConnectionRefused(Code::BadUserNamePassword) => {
            "the broker refused the login: wrong username or password".into()
        }
        // mosquitto answers a wrong password with "not authorised" too.
        ConnectionError::ConnectionRefused(Code::NotAuthorized) if mqtt.username.is_some() => {
            "the broker refused the login as not authorised: wrong username or password, or \
             its ACL denies this client"
                .into()
        }
        ConnectionError::ConnectionRefused(Code::NotAuthorized) => {
            "the broker refused this client as not authorised: it needs a username and password"
                .into()
        }
        ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection ({code:?})")
        }
        ConnectionError::Tls(t) => {
            let s = t.to_string();
            let ca = if has_ca {
                "the tls_ca file"
            } else {
                "the system's CAs (set tls_ca to the CA that signed it)"
            };
            if s.contains("UnknownIssuer") || s.contains("BadSignature") {
                format!(
                    "TLS handshake failed: the broker's certificate is not signed by {ca} ({s})"
                )
            } else if s.contains("NotValidForName") || s.contains("not valid for name") {
                format!(
                    "TLS handshake failed: the broker's certificate is not valid for `{}`; connect \
                     by a name or address the certificate carries ({s})",
                    broker.host
                )
            } else if s.contains("Expired") || s.contains("expired") {
                format!("TLS handshake failed: the broker's certificate has expired ({s})")
            } else {
                format!("TLS handshake failed: {s}")
            }
        }
        // A plain-text MQTT broker answering a TLS client (or the reverse) shows up here.
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("nothing accepts connections there ({io})")
        }
        other => other.to_string(),
    }
}
