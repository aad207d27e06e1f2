//! `vigild`: the Vigil appliance daemon — capture → score → publish.
//!
//! `vigild --config vigild.toml` (every field also a flag), `--print-config` to show the
//! effective configuration, `--check` to verify a bundle and exit. SIGINT/SIGTERM stop it
//! cleanly; `--frames N` stops after N scored frames. SIGHUP hot-reloads the `model` bundle
//! (re-read from disk) without a restart; so does an authenticated MQTT command
//! (`command_token`, docs/mqtt.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use vigil_appliance::backend::{self, Backend, EngineSpec};
use vigil_appliance::capture;
use vigil_appliance::config::{self, Config, Settings, SourceSpec};
use vigil_appliance::live::{Access, Live, ModelInfo, Snapshots, Sources};
use vigil_appliance::pipeline::{Pipeline, PipelineOptions, Results, Telemetry, STAGES};
use vigil_appliance::publish::{self, Commands, PublishConfig, Publisher};
use vigil_appliance::reload::{model_ref, ModelTable, Reloader, ReloaderOptions};
use vigil_appliance::service::Service;
use vigil_shared::manifest::Manifest;

#[derive(Parser)]
#[command(
    name = "vigild",
    version,
    about = "Vigil appliance: score camera frames with a model bundle and publish results"
)]
struct Cli {
    /// Configuration file (TOML); flags override its fields.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Verify the bundle (schema, fields, sha256 of every file) and exit.
    #[arg(long)]
    check: bool,
    /// Print a shell completion script and exit: `vigild --completions bash >
    /// /etc/bash_completion.d/vigild` (or zsh, fish, elvish, powershell).
    #[arg(long, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,
    #[command(flatten)]
    settings: Settings,
}

/// Set by SIGINT/SIGTERM; the loops poll it.
static STOP: AtomicBool = AtomicBool::new(false);

/// Set by SIGHUP; the reload thread polls it.
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_hup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let hup = on_hup as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handlers only store to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGHUP, hup);
    }
}

fn describe_bundle(dir: &Path, m: &Manifest) -> String {
    let i = &m.input;
    format!(
        "{}: {} detector, input {}×{}×{} in [{}, {}], score {} (threshold {}), {} file(s) verified",
        dir.display(),
        m.detector,
        i.channels,
        i.height,
        i.width,
        i.range[0],
        i.range[1],
        m.score.name,
        m.normalisation.threshold,
        m.files.len()
    )
}

/// The backend `cfg` asks for, on the bundle in `dir` (at start, and for every hot reload),
/// and its one-line description; the choice and any fallback are logged.
fn open_backend(cfg: &Config, dir: &Path) -> Result<(Box<dyn Backend>, String)> {
    let spec = EngineSpec {
        kind: cfg.backend,
        precision: cfg.precision,
        threads: cfg.threads,
        ep: cfg.ep,
        ort_library: cfg.ort_library.clone(),
        ..EngineSpec::default()
    };
    let o = backend::open(dir, &spec)
        .with_context(|| format!("{}: cannot load the model", dir.display()))?;
    for w in &o.warnings {
        vigil_appliance::log_warn!("{w}");
    }
    vigil_appliance::log_info!("backend {}", o.description);
    Ok((o.backend, o.description))
}

/// Without a broker: one JSON result per line on stdout (batch runs, the VM test's serial
/// console, piping into other tools).
fn spawn_stdout_sink(results: Results, models: Arc<ModelTable>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        use std::io::Write;
        let out = std::io::stdout();
        let mut n = 0;
        let (mut gen, mut model) = (0, models.get(0));
        while let Some(r) = results.recv() {
            if r.model_gen != gen {
                gen = r.model_gen;
                model = models.get(gen);
            }
            let msg = r.to_message(&model);
            drop(r);
            let mut lock = out.lock();
            if let Ok(line) = serde_json::to_string(&msg) {
                // A closed pipe ends the output, not the scoring.
                if writeln!(lock, "{line}").and_then(|_| lock.flush()).is_ok() {
                    n += 1;
                }
            }
        }
        n
    })
}

enum Sink {
    Stdout(std::thread::JoinHandle<u64>),
    Mqtt(Publisher),
}

/// Where `--embedded-broker` listens: the `broker` address (an IP or localhost), else
/// 127.0.0.1:1883.
fn embedded_addr(cfg: &Config) -> Result<std::net::SocketAddr> {
    let Some(b) = &cfg.mqtt.broker else {
        return Ok(([127, 0, 0, 1], config::MQTT_PORT).into());
    };
    let host = if b.host == "localhost" {
        "127.0.0.1"
    } else {
        b.host.as_str()
    };
    let ip: std::net::IpAddr = host.parse().with_context(|| {
        format!(
            "field `broker` = \"{b}\": the embedded broker listens on an IP address or localhost"
        )
    })?;
    Ok((ip, b.port).into())
}

fn run(cli: Cli) -> Result<()> {
    if let Some(shell) = cli.completions {
        use clap::CommandFactory;
        clap_complete::generate(shell, &mut Cli::command(), "vigild", &mut std::io::stdout());
        return Ok(());
    }
    let file = match &cli.config {
        Some(p) => config::read_file(p)?,
        None => Settings::default(),
    };
    if cli.check {
        let model = cli
            .settings
            .model
            .clone()
            .or(file.model.clone())
            .context("--check needs --model DIR (or `model` in the config file)")?;
        let m = Manifest::load_verified(&model)?;
        println!("{}", describe_bundle(&model, &m));
        return Ok(());
    }
    let cfg = cli.settings.resolve(&file, cli.config.as_deref())?;
    if cli.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    init_logging(&cfg);
    install_signal_handlers();
    serve(&cfg)
}

/// Levelled logs on stderr (text or JSON lines), with the `log` records of tract and rumqttc
/// bridged in. RUST_LOG, when set, is the whole filter.
fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => EnvFilter::new(f),
        _ => EnvFilter::new(match cfg.log_level {
            // The libraries' info lines (every graph pass, every packet) drown ours, and
            // rumqttd logs ordinary client disconnects as errors: RUST_LOG shows them.
            level @ ("error" | "warn" | "info") => {
                let libs = if level == "error" { "error" } else { "warn" };
                format!(
                    "{level},rumqttd=off,rumqttc={libs},tract_core={libs},tract_hir={libs},\
                     tract_onnx={libs},tract_linalg={libs}"
                )
            }
            "debug" => "vigild=debug,info,rumqttd=warn".to_string(),
            level => level.to_string(),
        }),
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = if cfg.log_json {
        fmt.json().flatten_event(true).try_init()
    } else {
        fmt.try_init()
    };
}

/// The daemon: broker, source, model, scoring loop, reload thread and sink, until stopped.
fn serve(cfg: &Config) -> Result<()> {
    let manifest = Manifest::load_verified(&cfg.model)?;
    vigil_appliance::log_info!("{}", describe_bundle(&cfg.model, &manifest));
    if cfg.mqtt.embedded_broker {
        start_broker(cfg)?;
    }
    // The source first: a missing camera or folder is reported before the model loads.
    let source = capture::open(cfg, manifest.input.channels)?;
    vigil_appliance::log_info!("source {}", source.describe());
    let (backend, engine) = open_backend(cfg, &cfg.model)?;
    let lockstep = cfg.fps == 0.0 && !matches!(cfg.source, SourceSpec::V4l(_));
    let capture_stats = Arc::new(capture::CaptureStats::default());
    let telemetry = Arc::new(Telemetry::new(capture_stats.clone()));
    let options = PipelineOptions {
        budget: cfg.budget,
        roi: cfg.roi,
        masks: cfg.mqtt.masks,
        source: source.geometry(),
    };
    let (mut pipeline, results) = Pipeline::new(backend, options, telemetry.clone())?;
    vigil_appliance::log_info!(
        "warm-up {:.1} ms; budget {:.1} ms per frame{}",
        pipeline.warmup.as_secs_f64() * 1000.0,
        cfg.budget.as_secs_f64() * 1000.0,
        if lockstep { " (unpaced replay)" } else { "" }
    );
    let models = ModelTable::new(model_ref(&manifest));
    let mut reloader = spawn_reloader(cfg, &manifest, &mut pipeline, &models, &telemetry)?;
    let sink = start_sink(
        cfg,
        &manifest,
        results,
        &models,
        &telemetry,
        &mut reloader,
        engine.clone(),
    )?;
    let live = start_live(
        cfg, &manifest, &pipeline, &models, &telemetry, &sink, engine,
    )?;
    let snapshots = start_snapshots(cfg, &pipeline, &sink)?;

    // The camera starts last, once the model is warm and the sink is up: a frame captured
    // during start-up would wait for it and count as a deadline miss.
    let cap = capture::spawn(source, lockstep, capture_stats)
        .context("cannot start the capture thread")?;
    // Under systemd (Type=notify): READY now, then STATUS and watchdog pings while the loop runs.
    let service = Service::ready(telemetry.clone());
    let scored = pipeline.run(&cap.mailbox, &STOP, cfg.frames);
    drop(service); // STOPPING=1
    drop(live);
    drop(snapshots);
    drop(reloader);
    let capture_result = cap.stop();
    drop(pipeline); // closes the result channel: the sink drains and ends
    let published = match sink {
        Sink::Stdout(t) => t.join().unwrap_or(0),
        // Publishes what is queued, then the retained `stopped` status.
        Sink::Mqtt(p) => p.shutdown()?.published,
    };
    summary(&telemetry, published);
    let scored = scored?;
    capture_result?;
    if let Some(n) = cfg.frames {
        if scored < n && !STOP.load(Ordering::Relaxed) {
            bail!("the source ended after {scored} of {n} frames");
        }
    }
    Ok(())
}

/// Hot reload: loads on its own thread, hands ready backends to the loop.
fn spawn_reloader(
    cfg: &Config,
    manifest: &Manifest,
    pipeline: &mut Pipeline,
    models: &Arc<ModelTable>,
    telemetry: &Arc<Telemetry>,
) -> Result<Reloader> {
    let (swaps, retired) = pipeline.reload_channel();
    let load_cfg = cfg.clone();
    Reloader::spawn(
        ReloaderOptions {
            default_bundle: cfg.model.clone(),
            load: Box::new(move |dir| {
                open_backend(&load_cfg, dir)
                    .map(|(b, _)| b)
                    .map_err(|e| format!("{e:#}"))
            }),
            report: None,
            models: models.clone(),
            telemetry: telemetry.clone(),
            sighup: &RELOAD,
        },
        manifest,
        swaps,
        retired,
    )
    .context("cannot start the reload thread")
}

/// Snapshots on `…/<camera>/snapshot`, when publishing to a broker and configured.
fn start_snapshots(cfg: &Config, pipeline: &Pipeline, sink: &Sink) -> Result<Option<Snapshots>> {
    match sink {
        Sink::Mqtt(p) => Snapshots::start(
            cfg.mqtt.snapshots,
            cfg.mqtt.snapshot_interval,
            cfg.mqtt.snapshot_quality,
            pipeline.view(),
            p.handle(),
        )
        .context("cannot start the snapshot thread"),
        Sink::Stdout(_) => Ok(None),
    }
}

/// `--embedded-broker`: rumqttd inside vigild, with the MQTT login when one is set.
fn start_broker(cfg: &Config) -> Result<()> {
    let auth = cfg
        .mqtt
        .username
        .clone()
        .map(|username| publish::Credentials {
            username,
            password: cfg.mqtt.password.clone().unwrap_or_default(),
        });
    let b = publish::start_embedded_broker_with(embedded_addr(cfg)?, auth)?;
    vigil_appliance::log_info!("embedded MQTT broker on mqtt://{}", b.addr);
    Ok(())
}

/// The live view (`--http`), when configured.
fn start_live(
    cfg: &Config,
    manifest: &Manifest,
    pipeline: &Pipeline,
    models: &Arc<ModelTable>,
    telemetry: &Arc<Telemetry>,
    sink: &Sink,
    backend: String,
) -> Result<Option<Live>> {
    let Some(addr) = cfg.http else {
        return Ok(None);
    };
    let basic = match (&cfg.mqtt.username, &cfg.mqtt.password) {
        (Some(u), Some(p)) if !addr.ip().is_loopback() => Some(Access::basic(u, p)),
        _ => None,
    };
    let access = Access {
        token: cfg.http_token.clone(),
        basic,
    };
    let i = &manifest.input;
    let model = model_ref(manifest);
    let sources = Sources {
        view: pipeline.view(),
        telemetry: telemetry.clone(),
        publisher: match sink {
            Sink::Mqtt(p) => Some(p.handle()),
            Sink::Stdout(_) => None,
        },
        model: ModelInfo {
            id: model.id,
            detector: manifest.detector.clone(),
            sha256: model.sha256,
            threshold: manifest.normalisation.threshold,
            input: format!("{}×{}×{}", i.channels, i.height, i.width),
            backend,
        },
        models: Some(models.clone()),
        device: cfg.mqtt.device_id.clone(),
        camera: cfg.mqtt.camera.clone(),
        // Three frame intervals, and never under 5 s (a slow model, a paused replay).
        stale_after: Duration::from_secs_f64((3.0 / cfg.fps.max(1e-3)).max(5.0)),
    };
    let live = Live::start(addr, access, sources)
        .with_context(|| format!("field `http` = \"{addr}\": cannot serve the live view"))?;
    vigil_appliance::log_info!("live view on http://{}/", live.addr);
    Ok(Some(live))
}

/// The MQTT publisher when a broker is configured (it also takes reload commands and reports
/// their outcome), else JSON lines on stdout.
fn start_sink(
    cfg: &Config,
    manifest: &Manifest,
    results: Results,
    models: &Arc<ModelTable>,
    telemetry: &Arc<Telemetry>,
    reloader: &mut Reloader,
    backend: String,
) -> Result<Sink> {
    if cfg.mqtt.endpoint().is_none() {
        return Ok(Sink::Stdout(spawn_stdout_sink(results, models.clone())));
    }
    let mut pc = PublishConfig::from_mqtt(cfg.mqtt.clone(), model_ref(manifest));
    pc.models = Some(models.clone());
    pc.backend = backend;
    pc.commands = cfg
        .mqtt
        .command_token
        .clone()
        .map(|token| Commands::new(token, reloader.requests()));
    let p = Publisher::start_for_pipeline(pc, results, telemetry.clone())?;
    let h = p.handle();
    reloader.set_report(Box::new(move |r| h.report_command(r)));
    Ok(Sink::Mqtt(p))
}

fn summary(t: &Telemetry, published: u64) {
    let h = t.totals();
    let c = t.capture.counts();
    let mut line = format!(
        "vigild: {} frames scored, {} results written, deadline misses {}, dropped {} (+{} drained), \
         queue full {}, frame errors {}, capture timeouts {}, reopens {}, capture errors {}; ms p50/p99:",
        t.frames.load(Ordering::Relaxed),
        published,
        t.deadline_misses.load(Ordering::Relaxed),
        c.dropped,
        c.drained,
        t.queue_full.load(Ordering::Relaxed),
        t.frame_errors.load(Ordering::Relaxed),
        c.timeouts,
        c.reopens,
        c.errors
    );
    let mut stages = serde_json::Map::new();
    for s in STAGES {
        line += &format!(" {} {:.3}/{:.3}", s.name(), h.ms(s, 0.5), h.ms(s, 0.99));
        stages.insert(
            s.name().into(),
            serde_json::json!({"p50": h.ms(s, 0.5), "p99": h.ms(s, 0.99), "max": h.ms(s, 1.0),
                               "mean": h.get(s).mean() / 1000.0}),
        );
    }
    eprintln!("{line}");
    // The same figures as one JSON line, for scripts (bench/bench-loop.sh).
    let json = serde_json::json!({
        "frames": t.frames.load(Ordering::Relaxed),
        "results": published,
        "seconds": t.started.elapsed().as_secs_f64(),
        "deadline_misses": t.deadline_misses.load(Ordering::Relaxed),
        "dropped_frames": c.dropped,
        "drained_frames": c.drained,
        "queue_full": t.queue_full.load(Ordering::Relaxed),
        "frame_errors": t.frame_errors.load(Ordering::Relaxed),
        "capture_timeouts": c.timeouts,
        "reopens": c.reopens,
        "capture_errors": c.errors,
        "reloads": t.reloads.load(Ordering::Relaxed),
        "reloads_refused": t.reloads_refused.load(Ordering::Relaxed),
        "latency_ms": stages,
    });
    eprintln!("vigild: summary {json}");
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
