//! Step 3 of the demo: vigild replays the line ([`Daemon`]), a dashboard subscribes to its
//! topics and shows each verdict ([`Dashboard`], [`View`]), and a loop drives both until the
//! last part has been scored and vigild has stopped on SIGTERM ([`replay`]).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rumqttc::{Client, Connection, Event, MqttOptions, Packet, Publish, QoS};
use vigil_shared::messages::{DeviceState, FrameResult, Stats, Status};

use super::{DemoOptions, CAMERA, DEVICE_ID};
use crate::data::LinePart;

/// What the dashboard saw.
pub struct Live {
    pub results: Vec<FrameResult>,
    pub last_stats: Option<Stats>,
    pub final_status: Option<Status>,
    /// Results per second as the dashboard received them (first to last).
    pub fps: f64,
    /// vigild's one-line JSON summary from its log, if it wrote one.
    pub vigild_summary: Option<serde_json::Value>,
}

/// Runs vigild on the line with its embedded broker at `port`, watches it as a dashboard until
/// every part is scored, stops it with SIGTERM and waits for its `stopped` status and exit.
pub(super) fn replay(
    opts: &DemoOptions,
    vigild: &Path,
    model: &Path,
    line: &Path,
    port: u16,
    parts: &[LinePart],
    term: bool,
) -> Result<Live> {
    let mut daemon = Daemon::start(opts, vigild, model, line, port)?;
    let mut o = MqttOptions::new("vigil-demo-dashboard", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(o, 64);
    let mut dashboard = Dashboard::new(opts.frames, parts, term);
    let limit = Duration::from_secs_f64(opts.frames as f64 / opts.fps + 60.0);
    watch(&mut daemon, &mut dashboard, &client, &mut conn, limit)?;
    let _ = client.try_disconnect();
    daemon.wait_exit()?;
    let mut live = dashboard.live;
    live.vigild_summary = daemon.summary();
    Ok(live)
}

/// The loop: MQTT events to the dashboard, vigild's liveness checked between them, SIGTERM once
/// the dashboard has seen the whole line. Ends when vigild has reported `stopped` (or gone).
fn watch(
    daemon: &mut Daemon,
    dashboard: &mut Dashboard,
    client: &Client,
    conn: &mut Connection,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut stop_sent: Option<Instant> = None;
    let mut connected = false;
    loop {
        if Instant::now() > deadline {
            bail!(
                "timed out: {} of {} results after {:.0} s; vigild log:\n{}",
                dashboard.live.results.len(),
                dashboard.frames,
                limit.as_secs_f64(),
                daemon.log_tail()
            );
        }
        daemon.check(stop_sent.is_some())?;
        // Done: the `stopped` status seen (or the broker gone with vigild) after the SIGTERM.
        if stop_sent.is_some() && (dashboard.live.final_status.is_some() || daemon.exited()) {
            break;
        }
        if stop_sent.is_some_and(|t| t.elapsed() > Duration::from_secs(15)) {
            bail!(
                "vigild did not stop within 15 s of SIGTERM:\n{}",
                daemon.log_tail()
            );
        }
        let ev = match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(ev)) => ev,
            // The embedded broker is not listening yet (or has gone with vigild): retry.
            Ok(Err(_)) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(rumqttc::RecvTimeoutError::Timeout) => continue,
            Err(rumqttc::RecvTimeoutError::Disconnected) => break,
        };
        match ev {
            Event::Incoming(Packet::ConnAck(_)) if !connected => {
                connected = true;
                client
                    .try_subscribe(format!("vigil/{DEVICE_ID}/#"), QoS::AtLeastOnce)
                    .context("subscribing the dashboard")?;
            }
            Event::Incoming(Packet::Publish(p))
                if dashboard.on_publish(&p, stop_sent.is_some())? =>
            {
                daemon.terminate();
                stop_sent = Some(Instant::now());
            }
            _ => {}
        }
    }
    Ok(())
}

/// vigild as a child process, its stderr in `vigild.log`. It is killed if the demo leaves early
/// (error or panic), never left running.
struct Daemon {
    child: Option<Child>,
    log_path: PathBuf,
}

impl Daemon {
    fn start(
        opts: &DemoOptions,
        vigild: &Path,
        model: &Path,
        line: &Path,
        port: u16,
    ) -> Result<Self> {
        let log_path = opts.out.join("vigild.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        // No --frames: the folder replay loops until the SIGTERM, as on a real line.
        let child = Command::new(vigild)
            .arg("--model")
            .arg(model)
            .arg("--source")
            .arg(format!("folder:{}", line.display()))
            .args(["--fps", &opts.fps.to_string()])
            .args(["--embedded-broker", "--broker"])
            .arg(format!("mqtt://127.0.0.1:{port}"))
            .args(["--device-id", DEVICE_ID, "--camera", CAMERA])
            .args(["--stats-interval-s", "2"])
            .arg("--spool-dir")
            .arg(opts.out.join("spool"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", vigild.display()))?;
        Ok(Self {
            child: Some(child),
            log_path,
        })
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    fn exited(&self) -> bool {
        self.child.is_none()
    }

    /// Notes an exit: an error before SIGTERM (`stopping` false) or with a failure status.
    fn check(&mut self, stopping: bool) -> Result<()> {
        let Some(c) = self.child.as_mut() else {
            return Ok(());
        };
        if let Some(st) = c.try_wait()? {
            self.child = None;
            if !stopping {
                bail!(
                    "vigild exited early ({st}); log {}:\n{}",
                    self.log_path.display(),
                    self.log_tail()
                );
            }
            if !st.success() {
                bail!("vigild failed after SIGTERM ({st}):\n{}", self.log_tail());
            }
        }
        Ok(())
    }

    fn terminate(&self) {
        if let Some(c) = self.child.as_ref() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// vigild exits right after its `stopped` status and clean disconnect: wait up to 15 s.
    fn wait_exit(&mut self) -> Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        let limit = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = c.try_wait()? {
                if !st.success() {
                    bail!("vigild failed after SIGTERM ({st}):\n{}", self.log_tail());
                }
                return Ok(());
            }
            if Instant::now() > limit {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "vigild did not exit within 15 s of SIGTERM:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The one-line JSON summary vigild logs on exit.
    fn summary(&self) -> Option<serde_json::Value> {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("vigild: summary "))
            .and_then(|j| serde_json::from_str(j).ok())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A subscriber to vigild's topics, as a dashboard would be: results shown against the ground
/// truth as they arrive, the latest stats and the final status kept.
struct Dashboard<'a> {
    frames: usize,
    result_topic: String,
    status_topic: String,
    stats_topic: String,
    labels: BTreeMap<&'a str, &'a LinePart>,
    last_part: Option<&'a str>,
    view: View,
    live: Live,
    first_at: Option<Instant>,
    /// Arrival times of the last 20 results, for the live fps.
    arrivals: VecDeque<Instant>,
}

impl<'a> Dashboard<'a> {
    fn new(frames: usize, parts: &'a [LinePart], term: bool) -> Self {
        let prefix = format!("vigil/{DEVICE_ID}");
        Self {
            frames,
            result_topic: format!("{prefix}/{CAMERA}/result"),
            status_topic: format!("{prefix}/status"),
            stats_topic: format!("{prefix}/stats"),
            labels: parts.iter().map(|p| (p.name.as_str(), p)).collect(),
            last_part: parts.last().map(|p| p.name.as_str()),
            view: View::new(frames, term),
            live: Live {
                results: Vec::with_capacity(frames),
                last_stats: None,
                final_status: None,
                fps: 0.0,
                vigild_summary: None,
            },
            first_at: None,
            arrivals: VecDeque::new(),
        }
    }

    /// One message from vigild; `stopping` once SIGTERM is sent. True when this result
    /// completes the line, so vigild should be stopped.
    fn on_publish(&mut self, p: &Publish, stopping: bool) -> Result<bool> {
        if p.topic == self.result_topic {
            let r: FrameResult = serde_json::from_slice(&p.payload)
                .with_context(|| format!("{}: payload is not a result", self.result_topic))?;
            if stopping || self.live.results.iter().any(|x| x.frame_id == r.frame_id) {
                return Ok(false); // the loop came round again before SIGTERM landed, or a redelivery
            }
            return Ok(self.on_result(r));
        }
        if p.topic == self.stats_topic {
            self.live.last_stats = serde_json::from_slice(&p.payload).ok();
        } else if p.topic == self.status_topic {
            let s: Status = serde_json::from_slice(&p.payload)
                .with_context(|| format!("{}: payload is not a status", self.status_topic))?;
            if stopping && s.state == DeviceState::Stopped {
                self.live.final_status = Some(s);
            }
        }
        Ok(false)
    }

    fn on_result(&mut self, r: FrameResult) -> bool {
        let now = Instant::now();
        self.first_at.get_or_insert(now);
        self.arrivals.push_back(now);
        while self.arrivals.len() > 20 {
            self.arrivals.pop_front();
        }
        let fps = rate(self.arrivals.len(), now - self.arrivals[0]);
        let truth = self.labels.get(r.source.as_str()).and_then(|p| p.defect);
        if self.live.results.is_empty() && r.frame_id > 0 {
            self.view.line(&format!(
                "(the dashboard subscribed after frame {}; earlier results were not seen)",
                r.frame_id - 1
            ));
        }
        self.view.frame(&r, truth.map(|d| d.name()), fps);
        // The last part, or as many frames as parts (a frame dropped while scoring lagged
        // shifts the files against the frame ids).
        let done =
            Some(r.source.as_str()) == self.last_part || r.frame_id + 1 >= self.frames as u64;
        self.live.results.push(r);
        if done {
            let first = self.first_at.unwrap_or(now);
            self.live.fps = rate(self.live.results.len(), now - first);
            self.view.finish();
        }
        done
    }
}

/// `n` arrivals over `span`: (n − 1)/span per second, 0 with fewer than two.
fn rate(n: usize, span: Duration) -> f64 {
    if n >= 2 {
        (n - 1) as f64 / span.as_secs_f64().max(f64::EPSILON)
    } else {
        0.0
    }
}

/// The live view: one row per frame scrolling above a progress bar (on a terminal), plain rows
/// otherwise.
struct View {
    bar: ProgressBar,
    colour: bool,
}

impl View {
    fn new(frames: usize, term: bool) -> View {
        let bar = if term {
            let b = ProgressBar::new(frames as u64);
            b.set_style(
                ProgressStyle::with_template("  [{bar:30}] {pos}/{len} parts  {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        let v = View { bar, colour: term };
        v.line(&format!(
            "{:>6}  {:<15} {:>9}  {:<7} {:<18} {:>6} {:>9} {:>9}",
            "frame", "source", "score", "verdict", "truth", "fps", "infer ms", "total ms"
        ));
        v
    }

    fn line(&self, s: &str) {
        if self.bar.is_hidden() {
            println!("{s}");
        } else {
            self.bar.println(s);
        }
    }

    fn frame(&self, r: &FrameResult, truth: Option<&str>, fps: f64) {
        let (verdict, colour) = if r.anomalous {
            ("DEFECT", "\x1b[1;31m")
        } else {
            ("OK", "\x1b[32m")
        };
        let verdict = if self.colour {
            format!("{colour}{verdict:<7}\x1b[0m")
        } else {
            format!("{verdict:<7}")
        };
        let truth = match (truth, r.anomalous) {
            (Some(d), true) => format!("{d} (caught)"),
            (Some(d), false) => format!("{d} (MISSED)"),
            (None, true) => "good (false alarm)".to_string(),
            (None, false) => "good".to_string(),
        };
        self.line(&format!(
            "{:>6}  {:<15} {:>9.5}  {verdict} {:<18} {:>6.1} {:>9.2} {:>9.2}",
            r.frame_id, r.source, r.score, truth, fps, r.latency_ms.infer, r.latency_ms.total
        ));
        self.bar.inc(1);
        self.bar.set_message(format!("{fps:.1} fps"));
        let _ = std::io::stdout().flush();
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
