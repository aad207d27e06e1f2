//! Running under systemd (`Type=notify`, `WatchdogSec=`): READY, STATUS, WATCHDOG and STOPPING
//! notifications, sent as datagrams to `$NOTIFY_SOCKET` (the sd_notify(3) protocol; no
//! libsystemd needed).
//!
//! The watchdog pings only while the scoring loop is alive: the loop stamps
//! [`Telemetry::beat`] every iteration (at least every 100 ms, frame or not), and this thread
//! pings when the stamp is younger than half the watchdog interval. A loop stuck in inference
//! or deadlocked stops the pings and systemd restarts vigild; a camera that delivers nothing
//! does not (the capture reconnects on its own and counts it). The loop itself makes no
//! syscall for this.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::pipeline::Telemetry;

/// How often STATUS is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// A socket to the service manager, from `$NOTIFY_SOCKET`.
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// `None` when not started by a service manager (no `NOTIFY_SOCKET`) or when the socket
    /// cannot be used (said once on stderr: notifications are best effort, as in sd_notify).
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::connect(&path) {
            Ok(n) => Some(n),
            Err(e) => {
                log_warn!(
                    "NOTIFY_SOCKET {}: {e}; no systemd notifications",
                    path.to_string_lossy()
                );
                None
            }
        }
    }

    fn connect(path: &std::ffi::OsStr) -> io::Result<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_bytes();
        let addr = match bytes.first() {
            // `@name`: a Linux abstract socket.
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&bytes[1..])?
            }
            Some(b'/') => SocketAddr::from_pathname(path)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an @abstract name",
                ))
            }
        };
        Ok(Notifier {
            sock: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends one notification, e.g. `READY=1` or `STATUS=…`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

/// `$WATCHDOG_USEC`, when it is meant for this process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The notification thread: STATUS every few seconds and, with a watchdog, pings while the
/// scoring loop beats. Sends STOPPING=1 when dropped.
pub struct Service {
    notifier: Arc<Notifier>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Tells the manager vigild is ready (the model is warm, the sink up, the camera started)
    /// and starts the thread. `None` without `NOTIFY_SOCKET`.
    pub fn ready(telemetry: Arc<Telemetry>) -> Option<Service> {
        let notifier = Arc::new(Notifier::from_env()?);
        let watchdog = watchdog_interval();
        let _ = notifier.notify(&format!("READY=1\nSTATUS={}", status(&telemetry, None)));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (notifier.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("systemd".into())
            .spawn(move || notify_loop(&n, &telemetry, watchdog, &s))
            .ok()?;
        Some(Service {
            notifier,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self
            .notifier
            .notify("STOPPING=1\nSTATUS=stopping: draining results");
    }
}

fn notify_loop(n: &Notifier, t: &Telemetry, watchdog: Option<Duration>, stop: &AtomicBool) {
    // Half the interval, as sd_watchdog_enabled(3) advises, and never slower than STATUS.
    let tick = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let mut last = (Instant::now(), t.frames.load(Ordering::Relaxed));
    let mut next_status = Instant::now() + STATUS_EVERY;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick.min(Duration::from_millis(100)));
        let now = Instant::now();
        if let Some(w) = watchdog {
            if t.since_beat() < w / 2 && now.duration_since(last.0) >= tick {
                let _ = n.notify("WATCHDOG=1");
                last.0 = now;
            }
        }
        if now >= next_status {
            let frames = t.frames.load(Ordering::Relaxed);
            let fps = (frames - last.1) as f64 / STATUS_EVERY.as_secs_f64();
            let _ = n.notify(&format!("STATUS={}", status(t, Some(fps))));
            last.1 = frames;
            next_status = now + STATUS_EVERY;
        }
    }
}

/// One line for `systemctl status`.
fn status(t: &Telemetry, fps: Option<f64>) -> String {
    let frames = t.frames.load(Ordering::Relaxed);
    let misses = t.deadline_misses.load(Ordering::Relaxed);
    match fps {
        None => "scoring: camera started".to_string(),
        Some(fps) => format!("scoring {fps:.1} fps; {frames} frames, {misses} deadline misses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.as_os_str()).unwrap();
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        let e = Notifier::connect(std::ffi::OsStr::new("relative/n.sock"))
            .err()
            .expect("a relative path is refused");
        assert!(e.to_string().contains("absolute path"), "{e}");
    }
}
