//! The publisher's event loop: one current-thread tokio task that polls rumqttc's event loop
//! (caller-owned, as rumqttc intends), takes work from the queue, runs the timers (stats,
//! spool sync) and the shutdown sequence (drain, `stopped`, DISCONNECT).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet};
use tokio::sync::{mpsc, oneshot};
use vigil_shared::messages::{DeviceState, PublisherStats, Topics};

use super::config::PublishConfig;
use super::delivery::{Origin, State};
use super::handle::Inbound;
use super::spool::Spool;
use crate::config::BrokerUrl;
use crate::pipeline::Telemetry;

/// The spool's tail is fsynced this often when records were appended (write-ahead: a power
/// cut loses at most the records of the last interval, plus one tick).
pub(super) const SYNC_DATA_EVERY: Duration = Duration::from_millis(100);
/// The acknowledged position is saved this often (a crash re-sends at most this much).
const SYNC_EVERY: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(50);

/// Everything the publisher thread owns.
pub(super) struct Task {
    pub(super) cfg: PublishConfig,
    pub(super) topics: Topics,
    pub(super) broker: BrokerUrl,
    pub(super) spool: Spool,
    pub(super) options: MqttOptions,
    pub(super) queue_full: Arc<AtomicU64>,
    pub(super) telemetry: Option<Arc<Telemetry>>,
    pub(super) rx: mpsc::Receiver<Inbound>,
    pub(super) stop_rx: oneshot::Receiver<()>,
    /// Refreshed every second for readers outside the loop (`/metrics`).
    pub(super) live: Arc<std::sync::Mutex<PublisherStats>>,
}

/// The loop's inputs besides MQTT.
struct Inputs {
    rx: mpsc::Receiver<Inbound>,
    stop_rx: oneshot::Receiver<()>,
    tick: tokio::time::Interval,
}

struct Timers {
    next_stats: Instant,
    next_sync: Instant,
    next_sync_data: Instant,
    /// When shutdown was asked for.
    stopping: Option<Instant>,
    rx_open: bool,
    live: Arc<std::sync::Mutex<PublisherStats>>,
}

pub(super) async fn run(task: Task) -> PublisherStats {
    let Task {
        cfg,
        topics,
        broker,
        spool,
        options,
        queue_full,
        telemetry,
        rx,
        stop_rx,
        live,
    } = task;
    let (client, mut el): (AsyncClient, EventLoop) = AsyncClient::new(options, 256);
    let mut st = State::new(cfg, topics, broker, client, spool, queue_full, telemetry);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inp = Inputs { rx, stop_rx, tick };
    let mut t = Timers {
        next_stats: Instant::now() + st.cfg.mqtt.stats_interval,
        next_sync: Instant::now() + SYNC_EVERY,
        next_sync_data: Instant::now() + SYNC_DATA_EVERY,
        stopping: None,
        rx_open: true,
        live,
    };
    let mut next_connect = tokio::time::Instant::now();
    loop {
        if t.stopping.is_some() && !st.connected {
            break;
        }
        if tokio::time::Instant::now() < next_connect {
            backoff(&mut st, &mut t, &mut inp, next_connect).await;
            continue;
        }
        // Shutdown gave up on the connection.
        let Some(event) = poll(&mut el, &mut st, &mut t, &mut inp).await else {
            break;
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => st.on_connack(),
            Ok(Event::Incoming(Packet::PubAck(a))) => st.on_puback(a.pkid),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => st.on_outgoing_publish(pkid),
            Ok(Event::Incoming(Packet::Publish(p))) => {
                st.on_incoming(&p.topic, &p.payload, p.retain)
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if st.disconnect_sent => break,
            Ok(_) => {}
            Err(_) if st.disconnect_sent => break,
            Err(e) => {
                st.on_disconnect(&e);
                next_connect = tokio::time::Instant::now() + st.backoff;
                st.backoff = (st.backoff * 2).min(st.cfg.reconnect_max);
            }
        }
    }
    // Whatever the broker did not take waits in the spool for the next run.
    st.connected = false;
    st.spill();
    if let Err(e) = st.spool.sync() {
        st.publish_errors += 1;
        log_error!("{e}");
    }
    st.stats()
}

/// Reconnect backoff: still taking results (into the spool) until `until`.
async fn backoff(st: &mut State, t: &mut Timers, inp: &mut Inputs, until: tokio::time::Instant) {
    tokio::select! {
        _ = tokio::time::sleep_until(until) => {}
        m = inp.rx.recv(), if t.rx_open => t.inbound(st, m),
        _ = &mut inp.stop_rx, if t.stopping.is_none() => t.stopping = Some(Instant::now()),
        _ = inp.tick.tick() => {}
    }
    housekeeping(st, t, &mut inp.rx);
}

/// The next MQTT event, doing the other work while waiting for it; None when shutdown
/// abandons the connection.
async fn poll(
    el: &mut EventLoop,
    st: &mut State,
    t: &mut Timers,
    inp: &mut Inputs,
) -> Option<Result<Event, ConnectionError>> {
    // The poll future is not dropped half-way while connected (rumqttc may be mid-write):
    // other work happens inside this select while it runs.
    let poll = el.poll();
    tokio::pin!(poll);
    loop {
        tokio::select! {
            biased;
            ev = &mut poll => return Some(ev),
            m = inp.rx.recv(), if t.rx_open => t.inbound(st, m),
            _ = &mut inp.stop_rx, if t.stopping.is_none() => t.stopping = Some(Instant::now()),
            _ = inp.tick.tick() => {}
        }
        if housekeeping(st, t, &mut inp.rx) {
            return None;
        }
    }
}

impl Timers {
    fn inbound(&mut self, st: &mut State, m: Option<Inbound>) {
        match m {
            Some(Inbound::Frame(r)) => st.on_frame(r),
            Some(Inbound::Command(r)) => st.publish_command_result(&r),
            Some(Inbound::Snapshot(jpeg)) => st.publish_snapshot(jpeg),
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
        t.next_stats = now + st.cfg.mqtt.stats_interval;
    }
    if now >= t.next_sync {
        if let Err(e) = st.spool.sync() {
            st.publish_errors += 1;
            log_error!("{e}");
        }
        t.next_sync = now + SYNC_EVERY;
        t.next_sync_data = now + SYNC_DATA_EVERY;
        *t.live.lock().unwrap_or_else(|p| p.into_inner()) = st.stats();
    } else if now >= t.next_sync_data {
        if let Err(e) = st.spool.sync_data() {
            st.publish_errors += 1;
            log_error!("{e}");
        }
        t.next_sync_data = now + SYNC_DATA_EVERY;
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
        st.publish_status(DeviceState::Stopped, SystemTime::now());
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
