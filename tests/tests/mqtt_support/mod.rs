//! Shared by the `mqtt_*` tests: a real mosquitto on a free loopback port, a recording
//! subscriber, and polling helpers. Everything is bounded in time and cleaned up on drop.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use vigil_appliance::pipeline::Record;
use vigil_appliance::publish::{PublishConfig, PublisherHandle};
use vigil_shared::messages::{LatencyMs, ModelRef};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub fn wait_for_port(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Polls `f` every 20 ms until it is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mosquitto process with a generated config in `dir`. Persistence is on, so sessions
/// of persistent subscribers and their queued messages survive [`Mosquitto::stop`] +
/// [`Mosquitto::start`], as on a production broker.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn new(dir: &Path, port: u16) -> Mosquitto {
        Self::with_listener(
            dir,
            port,
            &format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
        )
    }

    /// A broker whose listener section is `listener` (e.g. TLS files and a password file);
    /// the rest of the config as in [`Mosquitto::new`].
    pub fn with_listener(dir: &Path, port: u16, listener: &str) -> Mosquitto {
        assert!(
            Path::new(MOSQUITTO).is_file(),
            "{MOSQUITTO} is missing: install the Debian package `mosquitto` (.ci/run does)"
        );
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "{listener}\
                 persistence true\n\
                 persistence_location {}/\n\
                 max_queued_messages 100000\n\
                 max_inflight_messages 100\n\
                 log_dest file {}/mosquitto.log\n\
                 log_type error\nlog_type warning\nlog_type notice\n{}",
                dir.display(),
                dir.display(),
                // Started as root (CI containers), mosquitto drops to the `mosquitto` user and
                // can then neither write its log nor its persistence file in our temp dir.
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } == 0 {
                    "user root\n"
                } else {
                    ""
                }
            ),
        )
        .expect("write mosquitto.conf");
        Mosquitto {
            port,
            dir: dir.to_path_buf(),
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "mosquitto already running");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "mosquitto did not listen on {} (log: {})",
            self.port,
            self.log()
        );
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The running broker's pid (to freeze it with SIGSTOP, as a hung broker would be).
    pub fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// Set by the broker when it redelivers to this subscriber (its leg, not the publisher's).
    pub dup: bool,
}

/// A subscriber on `filter` (QoS 1) that records every message, reconnecting on its own.
/// `persistent`: clean_session=false, so a broker with persistence queues messages for it
/// while it is disconnected.
pub struct Subscriber {
    pub got: Arc<Mutex<Vec<Received>>>,
    pub connacks: Arc<Mutex<u32>>,
    /// SUBACKs received: the broker holds the subscription (and, for a persistent session,
    /// will queue for it) only from then on.
    pub subacks: Arc<Mutex<u32>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    pub fn start(port: u16, client_id: &str, filter: &str, persistent: bool) -> Subscriber {
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(!persistent);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut conn) = Client::new(o, 64);
        let got = Arc::new(Mutex::new(Vec::new()));
        let connacks = Arc::new(Mutex::new(0));
        let subacks = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, c, sa, s, filter) = (
            got.clone(),
            connacks.clone(),
            subacks.clone(),
            stop.clone(),
            filter.to_string(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        *c.lock().unwrap() += 1;
                    }
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => *sa.lock().unwrap() += 1,
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        g.lock().unwrap().push(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            dup: p.dup,
                        });
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                    Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                }
            }
            let _ = client.try_disconnect();
            let _ = conn.recv_timeout(Duration::from_millis(200));
        });
        Subscriber {
            got,
            connacks,
            subacks,
            stop,
            thread: Some(thread),
        }
    }

    /// Connected and subscribed (SUBACK seen), so nothing published from now on is missed.
    pub fn wait_connected(&self, limit: Duration) -> bool {
        wait_until(limit, || *self.subacks.lock().unwrap() > 0)
    }

    pub fn on(&self, topic: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.topic == topic)
            .cloned()
            .collect()
    }

    pub fn count(&self, topic: &str) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.topic == topic)
            .count()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The frame ids of the results on `topic`, dropping the broker's own redeliveries to the
/// subscriber (`dup` set and identical to an earlier message): a duplicate sent by the
/// publisher arrives with `dup` clear and is kept, so the checks below catch it.
pub fn result_ids(msgs: &[Received]) -> Vec<u64> {
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut ids = Vec::new();
    for m in msgs {
        if m.dup && seen.contains(&m.payload.as_slice()) {
            continue;
        }
        seen.push(&m.payload);
        let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("result is JSON");
        ids.push(v["frame_id"].as_u64().expect("frame_id is a number"));
    }
    ids
}

/// The publisher of the fault tests: fast reconnects, a long drain, a deep queue, no Home
/// Assistant discovery.
pub fn publisher_config(port: u16, device: &str, spool: &Path) -> PublishConfig {
    let model = ModelRef {
        id: "test-model".into(),
        sha256: "cd".repeat(32),
    };
    let mut c = PublishConfig::new(
        "127.0.0.1",
        port,
        device,
        "cam0",
        model,
        spool.to_path_buf(),
    )
    .unwrap();
    c.reconnect_max = Duration::from_millis(500);
    c.drain_timeout = Duration::from_secs(10);
    c.queue_capacity = 1024;
    c.ha_discovery_prefix = None;
    c
}

/// A result without a mask for frame `i`.
pub fn plain_result(i: u64, source: &Arc<str>) -> Record {
    Record {
        frame_id: i,
        capture_id: i,
        source: source.to_string(),
        captured_at: SystemTime::now(),
        score: 0.1,
        normalized_score: 0.2,
        threshold: 0.5,
        anomalous: false,
        latency: LatencyMs {
            capture: 0.1,
            infer: 1.0,
            total: 1.2,
        },
        // No mask.
        ..Record::new(0, 0)
    }
}

/// Sends frames `ids` at `fps`, on schedule (no drift).
pub fn send(handle: &PublisherHandle, ids: std::ops::Range<u64>, fps: f64) {
    let source: Arc<str> = Arc::from("line");
    let start = Instant::now();
    for (n, i) in ids.enumerate() {
        let due = start + Duration::from_secs_f64(n as f64 / fps);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        assert!(
            handle.try_publish(plain_result(i, &source)).is_ok(),
            "frame {i} refused"
        );
    }
}
