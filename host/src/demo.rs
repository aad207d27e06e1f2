//! `vigil demo`: the whole product in a couple of minutes on a laptop CPU.
//!
//! 1. synthesises a production line of brushed-metal parts, a few of them defective
//!    ([`crate::data::write_line`]), with the ground truth in `labels.csv`;
//! 2. trains a small GANomaly on good parts only ([`train_line_model`]) and exports it to ONNX;
//! 3. runs the real `vigild` binary on a folder replay of the line with its embedded MQTT broker;
//! 4. subscribes like a dashboard would, shows every verdict as it arrives, stops vigild with
//!    SIGTERM (its retained status turns `stopped`) and scores the verdicts against the labels.
//!
//! The pieces other programs need (writing a line, training the line model, tallying verdicts
//! against labels) are public here so the end-to-end tests run exactly what the demo runs.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use vigil_models::DetectorKind;
use vigil_shared::messages::{DeviceState, FrameResult, Stats, Status};
use vigil_shared::metrics::quantile;
use vigil_shared::synth::SurfaceKind;

use crate::data::{self, DataSpec, LinePart, LoadOptions};
use crate::{bundle, export, train};

/// How the line's model is trained: small enough for a couple of minutes on two cores.
#[derive(Clone, Debug)]
pub struct ModelRecipe {
    pub kind: SurfaceKind,
    /// Side of the model input and of the line's frames.
    pub size: usize,
    pub epochs: usize,
    pub seed: u64,
}

impl Default for ModelRecipe {
    fn default() -> Self {
        // 32² GANomaly on metal: image AUROC ≈ 0.998 after 4 epochs (~1 min on 2 cores);
        // 64² costs four times as long for no visible gain on these parts.
        Self {
            kind: SurfaceKind::BrushedMetal,
            size: 32,
            epochs: 4,
            seed: 0,
        }
    }
}

/// Trains GANomaly on the good parts of `synthetic:KIND` into the bundle `dir` and exports
/// `model.onnx`. Returns the training summary.
pub fn train_line_model(
    dir: &Path,
    recipe: &ModelRecipe,
    progress: bool,
) -> Result<train::TrainSummary> {
    let spec = DataSpec::Synthetic { kind: recipe.kind };
    let opts = LoadOptions {
        image_size: recipe.size,
        channels: 1,
        data_root: None,
        seed: recipe.seed,
    };
    let dataset = data::load(&spec, &opts)?;
    let summary = train::train(
        &dataset,
        &train::TrainOptions {
            detector: DetectorKind::Ganomaly,
            out: dir.to_path_buf(),
            epochs: recipe.epochs,
            // Smaller batches: more optimiser steps per epoch, which is what a short run needs.
            batch: 32,
            latent: 100,
            seed: recipe.seed,
            resume: false,
            score: None,
            sigma: bundle::default_sigma(recipe.size),
            threshold_quantile: 0.99,
            device: Device::Cpu,
            progress,
            patch: None,
        },
    )?;
    export::export(
        dir,
        &export::ExportOptions {
            int8_calibration: None,
            data_root: None,
        },
    )?;
    Ok(summary)
}

/// Verdicts against ground truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub true_negatives: usize,
}

impl Tally {
    pub fn add(&mut self, flagged: bool, defective: bool) {
        match (flagged, defective) {
            (true, true) => self.true_positives += 1,
            (true, false) => self.false_positives += 1,
            (false, true) => self.false_negatives += 1,
            (false, false) => self.true_negatives += 1,
        }
    }
    pub fn total(&self) -> usize {
        self.true_positives + self.false_positives + self.false_negatives + self.true_negatives
    }
    pub fn flagged(&self) -> usize {
        self.true_positives + self.false_positives
    }
    pub fn defective(&self) -> usize {
        self.true_positives + self.false_negatives
    }
    /// Share of defective parts flagged (0 when there were none).
    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.defective())
    }
    /// Share of good parts flagged (0 when there were none).
    pub fn false_positive_rate(&self) -> f64 {
        ratio(
            self.false_positives,
            self.false_positives + self.true_negatives,
        )
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub out: PathBuf,
    pub frames: usize,
    pub fps: f64,
    pub defect_rate: f32,
    pub recipe: ModelRecipe,
    /// Embedded broker port; `None` picks a free one.
    pub port: Option<u16>,
    /// Reuse `OUT/model` when it holds an exported model of the same recipe.
    pub reuse_model: bool,
    /// The `vigild` binary; `None` looks next to this executable.
    pub vigild: Option<PathBuf>,
}

/// What the demo measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DemoSummary {
    pub frames: usize,
    pub flagged: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub missed: usize,
    pub recall: f64,
    pub false_positive_rate: f64,
    pub latency_total_ms: [f64; 2],
    pub latency_infer_ms: [f64; 2],
    pub fps: f64,
    pub final_status: Option<String>,
    /// Seconds per step: line, train, replay, total.
    pub seconds: BTreeMap<&'static str, f64>,
}

const DEVICE_ID: &str = "demo";
const CAMERA: &str = "line";

pub fn run(opts: &DemoOptions) -> Result<DemoSummary> {
    let term = std::io::stderr().is_terminal();
    if opts.frames == 0 {
        bail!("--frames 0: the line needs at least one part");
    }
    if !(opts.fps > 0.0 && opts.fps <= 1000.0) {
        bail!("--fps {}: expected a rate between 0 and 1000", opts.fps);
    }
    let vigild = find_vigild(opts.vigild.as_deref())?;
    // The demo's own time, from here: building vigild on a first run is not part of it.
    let started = Instant::now();
    let mut seconds = BTreeMap::new();
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;

    // 1. The line.
    let t = Instant::now();
    let line_dir = opts.out.join("line");
    clear_line(&line_dir)?;
    let parts = data::write_line(
        &line_dir,
        opts.recipe.kind,
        opts.frames,
        opts.recipe.size,
        1,
        opts.defect_rate,
        opts.recipe.seed ^ 0xDE30,
    )?;
    let n_def = parts.iter().filter(|p| p.defect.is_some()).count();
    step(&format!(
        "1/3 line: {} {}² {} parts, {n_def} defective, in {} (ground truth: {})",
        opts.frames,
        opts.recipe.size,
        opts.recipe.kind,
        line_dir.display(),
        data::LINE_LABELS
    ));
    seconds.insert("line", t.elapsed().as_secs_f64());

    // 2. The model.
    let t = Instant::now();
    let model_dir = opts.out.join("model");
    if opts.reuse_model && model_matches(&model_dir, &opts.recipe) {
        step(&format!(
            "2/3 model: reusing {} (--reuse-model)",
            model_dir.display()
        ));
    } else {
        step(&format!(
            "2/3 model: training GANomaly {}² on good {} parts for {} epochs (CPU)…",
            opts.recipe.size, opts.recipe.kind, opts.recipe.epochs
        ));
        let s = train_line_model(&model_dir, &opts.recipe, term)?;
        step(&format!(
            "    trained in {:.0} s ({:.0} img/s), threshold {:.5}; exported {}",
            t.elapsed().as_secs_f64(),
            s.images_per_s,
            s.threshold,
            model_dir.join(export::F32_FILE).display()
        ));
    }
    seconds.insert("train", t.elapsed().as_secs_f64());

    // 3. The appliance.
    let t = Instant::now();
    let port = match opts.port {
        Some(p) => p,
        None => free_port()?,
    };
    step(&format!(
        "3/3 vigild: folder replay at {} fps, embedded broker mqtt://127.0.0.1:{port} \
         (watch it: mosquitto_sub -p {port} -v -t 'vigil/#'); log {}",
        opts.fps,
        opts.out.join("vigild.log").display()
    ));
    let live = replay(opts, &vigild, &model_dir, &line_dir, port, &parts, term)?;
    seconds.insert("replay", t.elapsed().as_secs_f64());
    seconds.insert("total", started.elapsed().as_secs_f64());

    let summary = summarise(&live, &parts, seconds);
    print_summary(&summary, &live, &parts);
    let path = opts.out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(summary)
}

fn step(msg: &str) {
    eprintln!("{msg}");
}

/// Removes a line an earlier demo wrote (recognised by its labels file) so a rerun starts clean;
/// anything else in the way is left alone and reported by [`data::write_line`].
fn clear_line(dir: &Path) -> Result<()> {
    if dir.join(data::LINE_LABELS).is_file() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

fn model_matches(dir: &Path, r: &ModelRecipe) -> bool {
    let Ok(m) = vigil_shared::manifest::Manifest::load(dir) else {
        return false;
    };
    m.input.height == r.size
        && m.training.epochs == r.epochs
        && m.training.seed == r.seed
        && m.training.data == DataSpec::Synthetic { kind: r.kind }.to_string()
        && m.files.iter().any(|f| f.name == export::F32_FILE)
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// `vigild` next to this executable (cargo puts both in `target/<profile>/`). Under `cargo run`
/// (which sets `$CARGO`) a missing one is built first, so the README's one command works on a
/// fresh checkout.
fn find_vigild(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("--vigild {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating the vigil executable")?;
    let path = exe.with_file_name(format!("vigild{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        return Ok(path);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        bail!(
            "{} is missing: build it with `cargo build --release -p vigil-appliance` \
             (or pass --vigild PATH)",
            path.display()
        );
    };
    let release = exe
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release");
    step("building vigild (cargo build -p vigil-appliance), once; minutes on a small machine…");
    let build = |extra: &[&str]| -> Result<std::process::ExitStatus> {
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "-p", "vigil-appliance", "--bin", "vigild"]);
        cmd.args(extra);
        if release {
            cmd.arg("--release");
        }
        cmd.status().context("running cargo build for vigild")
    };
    let mut status = build(&[])?;
    if !status.success() {
        // Most often libclang is missing (V4L2 bindings are generated at build time): the demo
        // replays a folder and needs no camera, so build vigild without camera support.
        step(
            "that build failed (camera support needs libclang-dev); \
             building vigild without V4L2 camera support…",
        );
        status = build(&["--no-default-features"])?;
    }
    if !status.success() || !path.is_file() {
        bail!(
            "building vigild failed ({status}); expected {}",
            path.display()
        );
    }
    Ok(path)
}

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

/// vigild is killed if the demo leaves early (error or panic), never left running.
struct Daemon(Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn replay(
    opts: &DemoOptions,
    vigild: &Path,
    model: &Path,
    line: &Path,
    port: u16,
    parts: &[LinePart],
    term: bool,
) -> Result<Live> {
    let log_path = opts.out.join("vigild.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    // No --frames: the folder replay loops until the SIGTERM below, as on a real line.
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
    let mut daemon = Daemon(Some(child));
    let log_tail = || {
        let s = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    };

    let prefix = format!("vigil/{DEVICE_ID}");
    let (t_result, t_status, t_stats) = (
        format!("{prefix}/{CAMERA}/result"),
        format!("{prefix}/status"),
        format!("{prefix}/stats"),
    );
    let mut o = MqttOptions::new("vigil-demo-dashboard", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(o, 64);

    let view = View::new(opts.frames, term);
    let labels: BTreeMap<&str, &LinePart> = parts.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut live = Live {
        results: Vec::with_capacity(opts.frames),
        last_stats: None,
        final_status: None,
        fps: 0.0,
        vigild_summary: None,
    };
    let mut first_at: Option<Instant> = None;
    let mut arrivals: std::collections::VecDeque<Instant> = Default::default();
    let mut stop_sent: Option<Instant> = None;
    let limit = Duration::from_secs_f64(opts.frames as f64 / opts.fps + 60.0);
    let deadline = Instant::now() + limit;
    let mut connected = false;
    loop {
        if Instant::now() > deadline {
            bail!(
                "timed out: {} of {} results after {:.0} s; vigild log:\n{}",
                live.results.len(),
                opts.frames,
                limit.as_secs_f64(),
                log_tail()
            );
        }
        if let Some(c) = daemon.0.as_mut() {
            if let Some(st) = c.try_wait()? {
                daemon.0 = None;
                if stop_sent.is_none() {
                    bail!(
                        "vigild exited early ({st}); log {}:\n{}",
                        log_path.display(),
                        log_tail()
                    );
                }
                if !st.success() {
                    bail!("vigild failed after SIGTERM ({st}):\n{}", log_tail());
                }
            }
        }
        // Done: the `stopped` status seen (or the broker gone with vigild) after the SIGTERM.
        if stop_sent.is_some() && (live.final_status.is_some() || daemon.0.is_none()) {
            break;
        }
        if stop_sent.is_some_and(|t| t.elapsed() > Duration::from_secs(15)) {
            bail!(
                "vigild did not stop within 15 s of SIGTERM:\n{}",
                log_tail()
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
                    .try_subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
                    .context("subscribing the dashboard")?;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == t_result => {
                let r: FrameResult = serde_json::from_slice(&p.payload)
                    .with_context(|| format!("{t_result}: payload is not a result"))?;
                if stop_sent.is_some() || live.results.iter().any(|x| x.frame_id == r.frame_id) {
                    continue; // the loop came round again before SIGTERM landed, or a redelivery
                }
                let now = Instant::now();
                first_at.get_or_insert(now);
                arrivals.push_back(now);
                while arrivals.len() > 20 {
                    arrivals.pop_front();
                }
                let fps = if arrivals.len() >= 2 {
                    (arrivals.len() - 1) as f64
                        / (now - arrivals[0]).as_secs_f64().max(f64::EPSILON)
                } else {
                    0.0
                };
                let truth = labels.get(r.source.as_str()).and_then(|p| p.defect);
                if live.results.is_empty() && r.frame_id > 0 {
                    view.line(&format!(
                        "(the dashboard subscribed after frame {}; earlier results were not seen)",
                        r.frame_id - 1
                    ));
                }
                view.frame(&r, truth.map(|d| d.name()), fps);
                live.results.push(r);
                // The last part, or as many frames as parts (a frame dropped while scoring
                // lagged shifts the files against the frame ids).
                let last_part = parts.last().map(|p| p.name.as_str());
                if live.results.last().is_some_and(|r| {
                    Some(r.source.as_str()) == last_part || r.frame_id + 1 >= opts.frames as u64
                }) {
                    live.fps = if live.results.len() >= 2 {
                        (live.results.len() - 1) as f64
                            / (now - first_at.unwrap_or(now))
                                .as_secs_f64()
                                .max(f64::EPSILON)
                    } else {
                        0.0
                    };
                    view.finish();
                    if let Some(c) = daemon.0.as_ref() {
                        // SAFETY: kill(2) on our own child's pid; no memory is involved.
                        unsafe {
                            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
                        }
                    }
                    stop_sent = Some(Instant::now());
                }
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == t_stats => {
                live.last_stats = serde_json::from_slice(&p.payload).ok();
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == t_status => {
                let s: Status = serde_json::from_slice(&p.payload)
                    .with_context(|| format!("{t_status}: payload is not a status"))?;
                if stop_sent.is_some() && s.state == DeviceState::Stopped {
                    live.final_status = Some(s);
                }
            }
            _ => {}
        }
    }
    let _ = client.try_disconnect();
    // vigild exits right after its `stopped` status and clean disconnect.
    if let Some(mut c) = daemon.0.take() {
        let limit = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = c.try_wait()? {
                if !st.success() {
                    bail!("vigild failed after SIGTERM ({st}):\n{}", log_tail());
                }
                break;
            }
            if Instant::now() > limit {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "vigild did not exit within 15 s of SIGTERM:\n{}",
                    log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    live.vigild_summary = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("vigild: summary "))
        .and_then(|j| serde_json::from_str(j).ok());
    Ok(live)
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

fn percentiles(v: &[f32]) -> [f64; 2] {
    let q = |p| quantile(v, p).map(f64::from).unwrap_or(f64::NAN);
    [q(0.5), q(0.99)]
}

fn summarise(live: &Live, parts: &[LinePart], seconds: BTreeMap<&'static str, f64>) -> DemoSummary {
    let labels: BTreeMap<&str, bool> = parts
        .iter()
        .map(|p| (p.name.as_str(), p.defect.is_some()))
        .collect();
    let mut tally = Tally::default();
    for r in &live.results {
        tally.add(
            r.anomalous,
            labels.get(r.source.as_str()).copied().unwrap_or(false),
        );
    }
    let total: Vec<f32> = live
        .results
        .iter()
        .map(|r| r.latency_ms.total as f32)
        .collect();
    let infer: Vec<f32> = live
        .results
        .iter()
        .map(|r| r.latency_ms.infer as f32)
        .collect();
    DemoSummary {
        frames: tally.total(),
        flagged: tally.flagged(),
        true_positives: tally.true_positives,
        false_positives: tally.false_positives,
        missed: tally.false_negatives,
        recall: tally.recall(),
        false_positive_rate: tally.false_positive_rate(),
        latency_total_ms: percentiles(&total),
        latency_infer_ms: percentiles(&infer),
        fps: live.fps,
        final_status: live
            .final_status
            .as_ref()
            .map(|s| s.state.as_str().to_string()),
        seconds,
    }
}

fn print_summary(s: &DemoSummary, live: &Live, parts: &[LinePart]) {
    let defective = parts.iter().filter(|p| p.defect.is_some()).count();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for p in parts {
        if let Some(d) = p.defect {
            *kinds.entry(d.name()).or_default() += 1;
        }
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!();
    println!("summary");
    println!(
        "  line       {} parts, {defective} defective ({})",
        parts.len(),
        kinds.join(", ")
    );
    println!(
        "  results    {} received, {} flagged: true positives {}, false positives {}, missed {}",
        s.frames, s.flagged, s.true_positives, s.false_positives, s.missed
    );
    println!(
        "  detection  recall {:.1}%, false-positive rate {:.1}%",
        100.0 * s.recall,
        100.0 * s.false_positive_rate
    );
    println!(
        "  latency    total p50 {:.2} ms, p99 {:.2} ms (inference p50 {:.2} ms, p99 {:.2} ms); {:.1} fps",
        s.latency_total_ms[0], s.latency_total_ms[1], s.latency_infer_ms[0], s.latency_infer_ms[1], s.fps
    );
    if let Some(v) = &live.vigild_summary {
        println!(
            "  vigild     {} frames scored, {} deadline misses, {} dropped frames",
            v["frames"], v["deadline_misses"], v["dropped_frames"]
        );
    }
    println!(
        "  status     {} (retained on vigil/{DEVICE_ID}/status)",
        s.final_status.as_deref().unwrap_or("not seen")
    );
    let secs = |k| s.seconds.get(k).copied().unwrap_or(0.0);
    println!(
        "  wall time  {:.0} s: line {:.1} s, train + export {:.0} s, replay {:.0} s",
        secs("total"),
        secs("line"),
        secs("train"),
        secs("replay")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_and_rates() {
        let mut t = Tally::default();
        for (f, d) in [(true, true), (true, true), (false, true), (true, false)] {
            t.add(f, d);
        }
        for _ in 0..6 {
            t.add(false, false);
        }
        assert_eq!(t.total(), 10);
        assert_eq!(t.flagged(), 3);
        assert_eq!(t.defective(), 3);
        assert!((t.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((t.false_positive_rate() - 1.0 / 7.0).abs() < 1e-12);
        assert_eq!(Tally::default().recall(), 0.0);
    }
}
