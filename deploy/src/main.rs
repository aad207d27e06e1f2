//! `vigil-deploy`: roll vigild, a model bundle and a config out to an edge device over SSH,
//! switch atomically, restart (or hot-reload a model), wait for the device's retained status to
//! show the new model online, and roll back when it does not. `just deploy` calls it; the
//! sequence and the device layout are in docs/deploy.md.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;
use vigil_deploy::{
    broker_from_device, check_bundle, choose_build, kv, prepare_config, release_id, render_unit,
    sha256_file, shq, status_is_healthy, BuildPath, Bundle, Ssh, StatusWatch,
};

#[derive(Parser, Debug)]
#[command(
    name = "vigil-deploy",
    version,
    about = "Deploy vigild, a model bundle and its config to an edge device over SSH, \
             with a health check and automatic rollback (docs/deploy.md)"
)]
struct Cli {
    /// The device: `user@host` (anything ssh accepts). May also be given as the first
    /// positional word.
    #[arg(long, value_name = "USER@HOST", default_value_t = String::new(), hide_default_value = true)]
    target: String,
    /// The `just deploy` form: `USER@HOST` (or `target=USER@HOST`), `model=DIR`,
    /// `config=FILE`; the same as --target, --model and --config.
    #[arg(value_name = "WORD")]
    words: Vec<String>,
    /// Model bundle directory to ship (manifest.json, model.onnx, …). Default: keep the
    /// device's current bundle.
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// vigild.toml for the device (its `model` is rewritten to PREFIX/current/model). Default:
    /// keep the device's current config. Required for a first install.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Ship this vigild binary instead of building one (it must run on the device).
    #[arg(long, value_name = "PATH")]
    vigild: Option<PathBuf>,
    /// Model-only update without a restart: ship the bundle, switch `current`, send SIGHUP
    /// (vigild swaps the model in between frames). Needs --model and a running vigild.
    #[arg(long)]
    reload: bool,
    /// Where releases live on the device; relative paths are under the ssh user's home.
    #[arg(long, value_name = "DIR", default_value = "vigil")]
    prefix: String,
    /// SSH port.
    #[arg(long, value_name = "PORT")]
    ssh_port: Option<u16>,
    /// SSH private key.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Extra ssh `-o` option, repeatable. Pin the device's host key rather than turning the
    /// check off: `ssh-keyscan -p PORT HOST > cam.known_hosts` once (compare its fingerprint,
    /// `ssh-keygen -lf cam.known_hosts`, with the device's console), then pass
    /// `--ssh-option UserKnownHostsFile=cam.known_hosts --ssh-option StrictHostKeyChecking=yes`
    /// (docs/deploy.md, "Host keys"). Never `StrictHostKeyChecking=no`: it sends the config's
    /// secrets to whoever answers on that address.
    #[arg(long = "ssh-option", value_name = "OPT")]
    ssh_options: Vec<String>,
    /// Limit for one ssh step (uploads included), in seconds.
    #[arg(long, value_name = "S", default_value_t = 300.0)]
    ssh_timeout_s: f64,
    /// Broker to watch the device's status on, `mqtt://HOST:PORT`. Default: the `broker` of
    /// the device's config, with localhost replaced by the ssh host.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// How long to wait for `online` with the new model before rolling back, in seconds.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    timeout_s: f64,
    /// Releases to keep on the device (the current one is never removed).
    #[arg(long, value_name = "N", default_value_t = 3)]
    keep: usize,
    /// How vigild runs: `systemd` (unit installed, needs root and a booted systemd),
    /// `process` (setsid under the ssh user, pid file in PREFIX), or `auto`.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    service: String,
    /// Build vigild without the V4L2 camera feature (no libclang needed).
    #[arg(long)]
    no_camera: bool,
    /// Print the plan (read-only probes of the device only) and exit.
    #[arg(long)]
    dry_run: bool,
}

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

fn run(cli: Cli) -> Result<()> {
    let t0 = Instant::now();
    let ssh = Ssh {
        target: cli.target.clone(),
        port: cli.ssh_port,
        identity: cli.identity.clone(),
        options: cli.ssh_options.clone(),
        timeout: Duration::from_secs_f64(cli.ssh_timeout_s.max(1.0)),
    };
    if !["auto", "systemd", "process"].contains(&cli.service.as_str()) {
        bail!(
            "--service {}: expected auto, systemd or process",
            cli.service
        );
    }
    if cli.reload && (cli.model.is_none() || cli.vigild.is_some() || cli.config.is_some()) {
        bail!("--reload ships a model only: pass --model DIR and neither --vigild nor --config");
    }
    if cli.keep < 2 {
        bail!(
            "--keep {}: keep at least 2 releases (the current one and one to roll back to)",
            cli.keep
        );
    }
    // Local checks first: a bad bundle or config never reaches the device.
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
    let first = dev.current.is_none();
    if first && (cli.model.is_none() || cli.config.is_none()) {
        bail!(
            "{}: no release in {prefix} yet: a first install needs --model DIR and --config FILE",
            cli.target
        );
    }
    if cli.reload && !dev.running && !dev.systemd {
        bail!("--reload: no vigild runs in {prefix} (pid file): deploy without --reload");
    }
    let service = match cli.service.as_str() {
        "auto" if dev.systemd => "systemd",
        "auto" => "process",
        s => s,
    };
    let build_path = if cli.reload {
        None
    } else {
        let targets = Command::new("rustup")
            .args(["target", "list", "--installed"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        Some(choose_build(
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
        ))
    };

    // The config: the given one, or the device's current one (to read topic and broker).
    let (cfg_text, cfg_origin) = match local_config {
        Some(c) => c,
        None => (
            ssh.device("cat", &prefix, &["vigild.toml"])?.stdout,
            format!("{}:{prefix}/current/vigild.toml", cli.target),
        ),
    };
    let dcfg = prepare_config(&cfg_text, &cfg_origin, &prefix)?;
    // The model sha256 the health check expects.
    let model_sha = match &bundle {
        Some(b) => b.model_sha256.clone(),
        None => {
            let text = ssh.device("cat", &prefix, &["model/manifest.json"])?.stdout;
            let m: vigil_shared::manifest::Manifest = serde_json::from_str(&text)
                .with_context(|| format!("{}:{prefix}/current/model/manifest.json", cli.target))?;
            m.model_file()
                .map(|f| f.sha256.clone())
                .context("the device's current manifest lists no .onnx")?
        }
    };
    let broker = match (&cli.broker, &dcfg.broker) {
        (Some(b), _) | (None, Some(b)) => broker_from_device(b, ssh.host())?,
        (None, None) => bail!(
            "{cfg_origin}: no `broker` (or embedded_broker): the health check needs the broker the \
             device publishes to; set it or pass --broker"
        ),
    };
    let id = release_id(SystemTime::now());
    let status_topic = format!("{}/status", dcfg.topic_prefix);

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
    match &build_path {
        Some(p) => say(format!("vigild: {p}")),
        None => say("vigild: the current release's (model-only update)"),
    }
    say(format!(
        "model: {} (model.onnx sha256 {model_sha})",
        bundle.as_ref().map_or("the current release's".into(), |b| b
            .dir
            .display()
            .to_string())
    ));
    say(format!("config: {cfg_origin}"));
    say(format!(
        "new release {prefix}/releases/{id}, switched atomically via {prefix}/current"
    ));
    say(if cli.reload {
        format!("then: SIGHUP ({service}), vigild swaps the model between frames")
    } else if service == "systemd" {
        "then: install /etc/systemd/system/vigild.service (user vigil, group video), restart".into()
    } else {
        format!("then: restart as a process (setsid, pid file {prefix}/vigild.pid)")
    });
    say(format!(
        "health: mqtt://{}:{} {status_topic} online with model_sha256 {model_sha} within {} s, \
         else roll back to {}",
        broker.0,
        broker.1,
        cli.timeout_s,
        dev.current.as_deref().unwrap_or("nothing (vigild stopped)")
    ));
    if cli.dry_run {
        say("dry run: nothing changed");
        return Ok(());
    }

    // Build, then stage the release locally with its checksums.
    let vigild = match &build_path {
        Some(p) => build(p, cli.no_camera)?,
        None => None,
    };
    let bin_from = match (&build_path, &vigild) {
        (_, Some(_)) => "-".to_string(),
        (Some(BuildPath::OnDevice), None) => build_on_device(&ssh, &prefix)?,
        _ => format!("{prefix}/current/vigild"),
    };
    let stage = tempfile::tempdir().context("cannot create a staging directory")?;
    let sums = stage_release(
        stage.path(),
        vigild.as_deref(),
        bundle.as_ref(),
        &dcfg.text,
        &prefix,
    )?;
    let model_from = if bundle.is_some() {
        "-".to_string()
    } else {
        format!("{prefix}/current/model")
    };

    // Upload and verify on arrival; nothing is switched if a checksum fails.
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
    let v = ssh.device("verify", &prefix, &[&id, &model_from, &bin_from])?;
    let version = kv(&v.stdout, "version").map(str::to_string);
    say(format!(
        "uploaded and verified {sums} checksums in {:.1} s; vigild {}",
        t_up.elapsed().as_secs_f64(),
        version.as_deref().unwrap_or("?")
    ));

    // Watch the status before anything changes, to tell the old status from the new.
    let watch = StatusWatch::start(
        &broker.0,
        broker.1,
        &[
            status_topic.clone(),
            format!("{}/command/result", dcfg.topic_prefix),
        ],
    );
    if !watch.wait_subscribed(Duration::from_secs(10)) {
        bail!(
            "cannot subscribe to {status_topic} on mqtt://{}:{} within 10 s: nothing switched \
             (release {id} stays on the device)",
            broker.0,
            broker.1
        );
    }
    std::thread::sleep(Duration::from_millis(300)); // the retained status arrives with the SUBACK
    let baseline = watch.on(&status_topic).last().cloned();

    let t_switch = Instant::now();
    ssh.device("switch", &prefix, &[&id])?;
    // From here on, any failure rolls back.
    let healthy = (|| -> Result<()> {
        if cli.reload {
            ssh.device("reload", &prefix, &[service])?;
        } else {
            ssh.device("restart", &prefix, &[service])?;
        }
        say(format!("switched to {id}; waiting for the device's status"));
        wait_healthy(
            &watch,
            &ssh,
            &prefix,
            service,
            &dcfg.topic_prefix,
            baseline.as_deref(),
            &model_sha,
            if cli.reload { None } else { version.as_deref() },
            cli.reload,
            Duration::from_secs_f64(cli.timeout_s),
        )
    })();
    match healthy {
        Ok(()) => {
            say(format!(
                "{} online with model {model_sha} {:.1} s after the switch ({:.1} s in all)",
                cli.target,
                t_switch.elapsed().as_secs_f64(),
                t0.elapsed().as_secs_f64()
            ));
            if let Ok(o) = ssh.device("prune", &prefix, &[&cli.keep.to_string()]) {
                for l in o.stdout.lines().filter_map(|l| l.strip_prefix("pruned=")) {
                    say(format!("removed old release {l}"));
                }
            }
            Ok(())
        }
        Err(why) => {
            let log = ssh
                .device("log", &prefix, &[service])
                .map(|o| o.stdout)
                .unwrap_or_default();
            let rolled = rollback(
                &ssh,
                &prefix,
                service,
                dev.current.as_deref(),
                &id,
                cli.reload,
            );
            let rb = match rolled {
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
    }
}

/// Waits for `online` with the new model; fails early when vigild exits (process mode) or
/// refuses the reload.
#[allow(clippy::too_many_arguments)]
fn wait_healthy(
    watch: &StatusWatch,
    ssh: &Ssh,
    prefix: &str,
    service: &str,
    topic_prefix: &str,
    baseline: Option<&[u8]>,
    model_sha: &str,
    version: Option<&str>,
    reload: bool,
    limit: Duration,
) -> Result<()> {
    let status_topic = format!("{topic_prefix}/status");
    let result_topic = format!("{topic_prefix}/command/result");
    let seen_results = watch.on(&result_topic).len();
    let start = Instant::now();
    let mut next_probe = Instant::now() + Duration::from_secs(2);
    while start.elapsed() < limit {
        if watch
            .on(&status_topic)
            .iter()
            .any(|p| status_is_healthy(p, baseline, model_sha, version))
        {
            return Ok(());
        }
        if reload {
            for r in watch.on(&result_topic).iter().skip(seen_results) {
                if let Ok(r) = serde_json::from_slice::<vigil_shared::messages::CommandResult>(r) {
                    if !r.ok {
                        bail!("vigild refused the reload: {}", r.error.unwrap_or_default());
                    }
                }
            }
        }
        if service == "process" && Instant::now() >= next_probe {
            next_probe = Instant::now() + Duration::from_secs(2);
            if let Ok(o) = ssh.device("running", prefix, &["process"]) {
                if o.stdout.trim() == "no" {
                    bail!("vigild exited");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let last = watch
        .on(&status_topic)
        .last()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "none".into());
    bail!(
        "no `online` status with model_sha256 {model_sha} on {status_topic} within {:.0} s (last status: {last})",
        limit.as_secs_f64()
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

impl Cli {
    /// Folds the positional words into the flags they stand for.
    fn apply_words(&mut self) -> Result<()> {
        for w in std::mem::take(&mut self.words) {
            let (key, value) = match w.split_once('=') {
                Some((k, v)) if !k.contains('@') => (k.to_string(), v.to_string()),
                _ => ("target".to_string(), w.clone()),
            };
            let set_twice = |flag: &str| format!("{flag} given twice (`{w}`)");
            match key.as_str() {
                "target" if self.target.is_empty() => self.target = value,
                "model" if self.model.is_none() => self.model = Some(value.into()),
                "config" if self.config.is_none() => self.config = Some(value.into()),
                "target" | "model" | "config" => bail!(set_twice(&key)),
                _ => bail!(
                    "unknown argument `{w}`: expected USER@HOST, target=USER@HOST, model=DIR or \
                     config=FILE (or a --flag, see --help)"
                ),
            }
        }
        if self.target.is_empty() {
            bail!("no device given: pass USER@HOST (or --target USER@HOST)");
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli> {
        let mut c =
            Cli::try_parse_from(std::iter::once("vigil-deploy").chain(args.iter().copied()))?;
        c.apply_words()?;
        Ok(c)
    }

    #[test]
    fn just_style_words_mean_the_flags() {
        let c = cli(&[
            "target=pi@cam-3",
            "model=runs/fm1",
            "config=cam.toml",
            "--dry-run",
        ])
        .unwrap();
        assert_eq!(c.target, "pi@cam-3");
        assert_eq!(c.model.as_deref(), Some(Path::new("runs/fm1")));
        assert_eq!(c.config.as_deref(), Some(Path::new("cam.toml")));
        assert!(c.dry_run);
        let c = cli(&["pi@cam-3", "--model", "runs/fm1"]).unwrap();
        assert_eq!(c.target, "pi@cam-3");
        let c = cli(&["--target", "pi@cam-3"]).unwrap();
        assert_eq!(c.target, "pi@cam-3");
    }

    #[test]
    fn bad_words_are_named() {
        let e = cli(&["pi@cam-3", "modle=runs/fm1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("modle=runs/fm1"), "{e}");
        let e = cli(&["pi@cam-3", "model=a", "--model", "b"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("model given twice"), "{e}");
        let e = cli(&["--dry-run"]).unwrap_err().to_string();
        assert!(e.contains("no device given"), "{e}");
    }
}
