//! `vigil-deploy`: roll vigild, a model bundle and a config out to an edge device over SSH,
//! switch atomically, restart (or hot-reload a model), wait for the device's retained status to
//! show the new model online, and roll back when it does not. `just deploy` calls it; the
//! sequence and the device layout are in docs/deploy.md.

mod cli;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use vigil_deploy::{
    broker_from_device, check_bundle, choose_build, kv, prepare_config, release_id, render_unit,
    sha256_file, shq, status_is_healthy, write_private, BuildPath, Bundle, DeviceConfig, Ssh,
    StatusWatch,
};

use cli::{Cli, Service};

/// What the probe found on the device.
struct Device {
    arch: String,
    prefix: String,
    current: Option<String>,
    releases: Vec<String>,
    systemd: bool,
    running: bool,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("vigil-deploy: {}", msg.as_ref());
}

fn probe(ssh: &Ssh, prefix: &str) -> Result<Device> {
    let o = ssh.device("probe", prefix, &[])?.stdout;
    Ok(Device {
        arch: kv(&o, "arch")
            .context("the device did not report its architecture")?
            .into(),
        prefix: kv(&o, "prefix").unwrap_or(prefix).into(),
        current: kv(&o, "current").map(str::to_string),
        releases: kv(&o, "releases")
            .map(|r| {
                r.split_whitespace()
                    .filter(|r| !r.starts_with('.'))
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        systemd: kv(&o, "systemd") == Some("yes"),
        running: kv(&o, "running").is_some(),
    })
}

fn local_arch() -> String {
    Command::new("uname")
        .arg("-m")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn workspace_root() -> PathBuf {
    // deploy/ is a member of the workspace whose vigild we build.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo_build(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let mut c = Command::new("cargo");
    c.current_dir(workspace_root()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    say(format!("cargo {}", args.join(" ")));
    let s = c.status().context("cannot run cargo")?;
    if !s.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

/// Builds (or locates) vigild; None when it is built on the device later.
fn build(path: &BuildPath, no_camera: bool) -> Result<Option<PathBuf>> {
    let mut args = vec!["build", "--release", "-p", "vigil-appliance"];
    if no_camera {
        args.push("--no-default-features");
    }
    let target = workspace_root().join("target");
    match path {
        BuildPath::Prebuilt(p) => {
            if !p.is_file() {
                bail!("--vigild {}: no such file", p.display());
            }
            Ok(Some(p.clone()))
        }
        BuildPath::Native => {
            cargo_build(&args, &[])?;
            Ok(Some(target.join("release/vigild")))
        }
        BuildPath::Cross { triple, linker } => {
            args.extend(["--target", triple]);
            let var = format!(
                "CARGO_TARGET_{}_LINKER",
                triple.to_uppercase().replace('-', "_")
            );
            cargo_build(&args, &[(&var, linker)])?;
            Ok(Some(target.join(triple).join("release/vigild")))
        }
        BuildPath::OnDevice => Ok(None),
    }
}

/// Everything decided before the device changes: printed by --dry-run, then carried out.
struct Plan {
    ssh: Ssh,
    dev: Device,
    prefix: String,
    /// systemd or process (never auto).
    service: Service,
    /// None: a model-only reload keeps the current vigild.
    build_path: Option<BuildPath>,
    bundle: Option<Bundle>,
    cfg_origin: String,
    dcfg: DeviceConfig,
    /// The model.onnx sha256 the health check expects.
    model_sha: String,
    /// Where to watch the status, as seen from here.
    broker: (String, u16),
    id: String,
    status_topic: String,
}

fn run(cli: Cli) -> Result<()> {
    let t0 = Instant::now();
    validate(&cli)?;
    let plan = gather_plan(&cli)?;
    print_plan(&cli, &plan);
    if cli.dry_run {
        say("dry run: nothing changed");
        return Ok(());
    }
    let version = upload(&cli, &plan)?;
    switch_and_verify(&cli, &plan, version.as_deref(), t0)
}

/// Flag combinations that cannot work, refused before anything is read or reached.
fn validate(cli: &Cli) -> Result<()> {
    if cli.reload && (cli.model.is_none() || cli.vigild.is_some() || cli.config.is_some()) {
        bail!("--reload ships a model only: pass --model DIR and neither --vigild nor --config");
    }
    if cli.keep < 2 {
        bail!(
            "--keep {}: keep at least 2 releases (the current one and one to roll back to)",
            cli.keep
        );
    }
    Ok(())
}

/// Local checks (a bad bundle or config never reaches the device), then the read-only probes
/// of the device, into the plan.
fn gather_plan(cli: &Cli) -> Result<Plan> {
    let ssh = Ssh {
        target: cli.target.clone(),
        port: cli.ssh_port,
        identity: cli.identity.clone(),
        options: cli.ssh_options.clone(),
        timeout: Duration::from_secs_f64(cli.ssh_timeout_s.max(1.0)),
    };
    let bundle = cli.model.as_deref().map(check_bundle).transpose()?;
    let local_config = match &cli.config {
        Some(p) => Some((
            std::fs::read_to_string(p).with_context(|| format!("--config {}", p.display()))?,
            p.display().to_string(),
        )),
        None => None,
    };
    let dev = probe(&ssh, &cli.prefix).with_context(|| format!("cannot reach {}", cli.target))?;
    let prefix = dev.prefix.clone();
    if dev.current.is_none() && (cli.model.is_none() || cli.config.is_none()) {
        bail!(
            "{}: no release in {prefix} yet: a first install needs --model DIR and --config FILE",
            cli.target
        );
    }
    if cli.reload && !dev.running && !dev.systemd {
        bail!("--reload: no vigild runs in {prefix} (pid file): deploy without --reload");
    }
    let build_path = (!cli.reload).then(|| build_path_for(cli, &dev));
    // The config: the given one, or the device's current one (to read topic and broker).
    let (cfg_text, cfg_origin) = match local_config {
        Some(c) => c,
        None => (
            ssh.device("cat", &prefix, &["vigild.toml"])?.stdout,
            format!("{}:{prefix}/current/vigild.toml", cli.target),
        ),
    };
    let dcfg = prepare_config(&cfg_text, &cfg_origin, &prefix)?;
    let model_sha = match &bundle {
        Some(b) => b.model_sha256.clone(),
        None => current_model_sha(&ssh, &prefix)?,
    };
    let broker = match (&cli.broker, &dcfg.broker) {
        (Some(b), _) | (None, Some(b)) => broker_from_device(b, ssh.host())?,
        (None, None) => bail!(
            "{cfg_origin}: no `broker` (or embedded_broker): the health check needs the broker the \
             device publishes to; set it or pass --broker"
        ),
    };
    Ok(Plan {
        service: cli.service.on(dev.systemd),
        status_topic: format!("{}/status", dcfg.topic_prefix),
        id: release_id(SystemTime::now()),
        ssh,
        dev,
        prefix,
        build_path,
        bundle,
        cfg_origin,
        dcfg,
        model_sha,
        broker,
    })
}

/// How vigild gets built for the device's architecture.
fn build_path_for(cli: &Cli, dev: &Device) -> BuildPath {
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    choose_build(
        &dev.arch,
        &local_arch(),
        cli.vigild.as_deref(),
        &targets,
        |l| {
            Command::new(l)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        },
    )
}

/// The model.onnx sha256 of the device's current bundle (a deploy that keeps it).
fn current_model_sha(ssh: &Ssh, prefix: &str) -> Result<String> {
    let text = ssh.device("cat", prefix, &["model/manifest.json"])?.stdout;
    let m: vigil_shared::manifest::Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}:{prefix}/current/model/manifest.json", ssh.target))?;
    m.model_file()
        .map(|f| f.sha256.clone())
        .context("the device's current manifest lists no .onnx")
}

fn print_plan(cli: &Cli, p: &Plan) {
    let (dev, prefix, id) = (&p.dev, &p.prefix, &p.id);
    say(format!(
        "target {} ({}), prefix {prefix}",
        cli.target, dev.arch
    ));
    say(format!(
        "releases on the device: {} (current: {})",
        if dev.releases.is_empty() {
            "none".into()
        } else {
            dev.releases.join(" ")
        },
        dev.current.as_deref().unwrap_or("none, first install")
    ));
    match &p.build_path {
        Some(b) => say(format!("vigild: {b}")),
        None => say("vigild: the current release's (model-only update)"),
    }
    say(format!(
        "model: {} (model.onnx sha256 {})",
        p.bundle
            .as_ref()
            .map_or("the current release's".into(), |b| b
                .dir
                .display()
                .to_string()),
        p.model_sha
    ));
    say(format!("config: {}", p.cfg_origin));
    say(format!(
        "new release {prefix}/releases/{id}, switched atomically via {prefix}/current"
    ));
    say(if cli.reload {
        format!(
            "then: SIGHUP ({}), vigild swaps the model between frames",
            p.service.as_str()
        )
    } else if p.service == Service::Systemd {
        "then: install /etc/systemd/system/vigild.service (user vigil, group video), restart".into()
    } else {
        format!("then: restart as a process (setsid, pid file {prefix}/vigild.pid)")
    });
    say(format!(
        "health: mqtt://{}:{} {} online with model_sha256 {} within {} s, else roll back to {}",
        p.broker.0,
        p.broker.1,
        p.status_topic,
        p.model_sha,
        cli.timeout_s,
        dev.current.as_deref().unwrap_or("nothing (vigild stopped)")
    ));
}

/// Builds vigild, stages the release with its checksums, uploads it and verifies it on
/// arrival (nothing is switched if a checksum fails). Returns the version the new vigild
/// reports.
fn upload(cli: &Cli, p: &Plan) -> Result<Option<String>> {
    let (ssh, prefix, id) = (&p.ssh, &p.prefix, &p.id);
    let vigild = match &p.build_path {
        Some(b) => build(b, cli.no_camera)?,
        None => None,
    };
    let bin_from = match (&p.build_path, &vigild) {
        (_, Some(_)) => "-".to_string(),
        (Some(BuildPath::OnDevice), None) => build_on_device(ssh, prefix)?,
        _ => format!("{prefix}/current/vigild"),
    };
    let stage = tempfile::tempdir().context("cannot create a staging directory")?;
    let sums = stage_release(
        stage.path(),
        vigild.as_deref(),
        p.bundle.as_ref(),
        &p.dcfg.text,
        prefix,
    )?;
    let model_from = if p.bundle.is_some() {
        "-".to_string()
    } else {
        format!("{prefix}/current/model")
    };
    let t_up = Instant::now();
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(stage.path()).args(["-cf", "-", "."]);
    let inc = format!("{prefix}/releases/.incoming-{id}");
    ssh.pipe(
        tar,
        &format!(
            "rm -rf {q} && mkdir -p {q} && tar -xf - -C {q}",
            q = shq(&inc)
        ),
        ssh.timeout,
    )
    .context("upload")?;
    let v = ssh.device("verify", prefix, &[id, &model_from, &bin_from])?;
    let version = kv(&v.stdout, "version").map(str::to_string);
    say(format!(
        "uploaded and verified {sums} checksums in {:.1} s; vigild {}",
        t_up.elapsed().as_secs_f64(),
        version.as_deref().unwrap_or("?")
    ));
    Ok(version)
}

/// Watches the status, switches `current`, restarts (or reloads) and waits for the new model
/// online; prunes old releases on success, rolls back on failure.
fn switch_and_verify(cli: &Cli, p: &Plan, version: Option<&str>, t0: Instant) -> Result<()> {
    let (ssh, prefix, id, service) = (&p.ssh, &p.prefix, &p.id, p.service.as_str());
    // Watch the status before anything changes, to tell the old status from the new.
    let watch = StatusWatch::start(
        &p.broker.0,
        p.broker.1,
        &[
            p.status_topic.clone(),
            format!("{}/command/result", p.dcfg.topic_prefix),
        ],
    );
    if !watch.wait_subscribed(Duration::from_secs(10)) {
        bail!(
            "cannot subscribe to {} on mqtt://{}:{} within 10 s: nothing switched \
             (release {id} stays on the device)",
            p.status_topic,
            p.broker.0,
            p.broker.1
        );
    }
    std::thread::sleep(Duration::from_millis(300)); // the retained status arrives with the SUBACK
    let baseline = watch.on(&p.status_topic).last().cloned();

    let t_switch = Instant::now();
    ssh.device("switch", prefix, &[id])?;
    // From here on, any failure rolls back.
    let healthy = (|| -> Result<()> {
        ssh.device(
            if cli.reload { "reload" } else { "restart" },
            prefix,
            &[service],
        )?;
        say(format!("switched to {id}; waiting for the device's status"));
        let expect = Expect {
            baseline: baseline.as_deref(),
            version: if cli.reload { None } else { version },
            reload: cli.reload,
            limit: Duration::from_secs_f64(cli.timeout_s),
        };
        wait_healthy(&watch, p, &expect)
    })();
    if let Err(why) = healthy {
        let log = ssh
            .device("log", prefix, &[service])
            .map(|o| o.stdout)
            .unwrap_or_default();
        let rb = match rollback(
            ssh,
            prefix,
            service,
            p.dev.current.as_deref(),
            id,
            cli.reload,
        ) {
            Ok(Some(prev)) => format!("rolled back to {prev}"),
            Ok(None) => "first install: vigild stopped, nothing to roll back to".into(),
            Err(e) => format!("ROLLBACK FAILED: {e:#}"),
        };
        bail!(
            "release {id} failed its health check: {why:#}; {rb}; the failed release is in \
             {prefix}/failed/{id}\nlast lines of vigild's log:\n{}",
            log.trim_end()
        )
    }
    say(format!(
        "{} online with model {} {:.1} s after the switch ({:.1} s in all)",
        cli.target,
        p.model_sha,
        t_switch.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    ));
    if let Ok(o) = ssh.device("prune", prefix, &[&cli.keep.to_string()]) {
        for l in o.stdout.lines().filter_map(|l| l.strip_prefix("pruned=")) {
            say(format!("removed old release {l}"));
        }
    }
    Ok(())
}

/// What counts as healthy after the switch.
struct Expect<'a> {
    /// The status before the switch (a retained copy of it is not the new vigild).
    baseline: Option<&'a [u8]>,
    /// The version the new vigild must report (None: a reload keeps the old binary).
    version: Option<&'a str>,
    reload: bool,
    limit: Duration,
}

/// Waits for `online` with the new model; fails early when vigild exits (process mode) or
/// refuses the reload.
fn wait_healthy(watch: &StatusWatch, p: &Plan, e: &Expect) -> Result<()> {
    let status_topic = &p.status_topic;
    let result_topic = format!("{}/command/result", p.dcfg.topic_prefix);
    let seen_results = watch.on(&result_topic).len();
    let start = Instant::now();
    let mut next_probe = Instant::now() + Duration::from_secs(2);
    while start.elapsed() < e.limit {
        if watch
            .on(status_topic)
            .iter()
            .any(|s| status_is_healthy(s, e.baseline, &p.model_sha, e.version))
        {
            return Ok(());
        }
        if e.reload {
            for r in watch.on(&result_topic).iter().skip(seen_results) {
                if let Ok(r) = serde_json::from_slice::<vigil_shared::messages::CommandResult>(r) {
                    if !r.ok {
                        bail!("vigild refused the reload: {}", r.error.unwrap_or_default());
                    }
                }
            }
        }
        if p.service == Service::Process && Instant::now() >= next_probe {
            next_probe = Instant::now() + Duration::from_secs(2);
            if let Ok(o) = p.ssh.device("running", &p.prefix, &["process"]) {
                if o.stdout.trim() == "no" {
                    bail!("vigild exited");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = watch
        .on(status_topic)
        .last()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_else(|| "none".into());
    bail!(
        "no `online` status with model_sha256 {} on {status_topic} within {:.0} s (last status: {last})",
        p.model_sha,
        e.limit.as_secs_f64()
    )
}

/// Back to `prev` (switch, restart or reload); the failed release moves to PREFIX/failed.
fn rollback(
    ssh: &Ssh,
    prefix: &str,
    service: &str,
    prev: Option<&str>,
    failed: &str,
    reload: bool,
) -> Result<Option<String>> {
    match prev {
        Some(p) => {
            ssh.device("switch", prefix, &[p])?;
            if reload {
                // The old model kept running when vigild refused; a reload that went through
                // but never reported is undone by reloading the previous bundle.
                ssh.device("reload", prefix, &[service])?;
            } else {
                ssh.device("restart", prefix, &[service])?;
            }
            ssh.device("fail", prefix, &[failed])?;
            Ok(Some(p.to_string()))
        }
        None => {
            ssh.device("stop", prefix, &[service])?;
            ssh.device("fail", prefix, &[failed])?;
            Ok(None)
        }
    }
}

fn build_on_device(ssh: &Ssh, prefix: &str) -> Result<String> {
    say("building vigild on the device from `git archive HEAD` (this takes a while)");
    let mut git = Command::new("git");
    git.current_dir(workspace_root())
        .args(["archive", "--format=tar", "HEAD"]);
    let src = format!("{prefix}/src");
    ssh.pipe(
        git,
        &format!("mkdir -p {q} && tar -xf - -C {q}", q = shq(&src)),
        ssh.timeout,
    )?;
    let o = ssh.device_timeout("build", prefix, &[], Duration::from_secs(3 * 3600))?;
    kv(&o.stdout, "built")
        .map(str::to_string)
        .context("the device build did not report its binary")
}

/// Lays the release out in `dir`; returns how many files SHA256SUMS lists.
fn stage_release(
    dir: &Path,
    vigild: Option<&Path>,
    bundle: Option<&Bundle>,
    config: &str,
    prefix: &str,
) -> Result<usize> {
    let mut files: Vec<String> = Vec::new();
    if let Some(v) = vigild {
        std::fs::copy(v, dir.join("vigild"))
            .with_context(|| format!("cannot stage {}", v.display()))?;
        files.push("vigild".into());
    }
    if let Some(b) = bundle {
        std::fs::create_dir(dir.join("model"))?;
        for name in std::iter::once("manifest.json".to_string()).chain(b.files.iter().cloned()) {
            std::fs::copy(b.dir.join(&name), dir.join("model").join(&name))
                .with_context(|| format!("cannot stage {}", b.dir.join(&name).display()))?;
            files.push(format!("model/{name}"));
        }
    }
    write_private(&dir.join("vigild.toml"), config)?;
    files.push("vigild.toml".into());
    std::fs::write(dir.join("vigild.service"), render_unit(prefix))?;
    files.push("vigild.service".into());
    let mut sums = String::new();
    for f in &files {
        sums += &format!("{}  {f}\n", sha256_file(&dir.join(f))?);
    }
    std::fs::write(dir.join("SHA256SUMS"), sums)?;
    Ok(files.len())
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Err(e) = cli.apply_words() {
        eprintln!("vigil-deploy: error: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-deploy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
