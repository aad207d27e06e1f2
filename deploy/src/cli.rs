//! vigil-deploy's command line: the flags, the `just deploy` words (`target=…`, `model=…`,
//! `config=…`) folded into them, and `--service`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "vigil-deploy",
    version,
    about = "Deploy vigild, a model bundle and its config to an edge device over SSH, \
             with a health check and automatic rollback (docs/deploy.md)"
)]
pub(crate) struct Cli {
    /// The device: `user@host` (anything ssh accepts). May also be given as the first
    /// positional word.
    #[arg(long, value_name = "USER@HOST", default_value_t = String::new(), hide_default_value = true)]
    pub(crate) target: String,
    /// The `just deploy` form: `USER@HOST` (or `target=USER@HOST`), `model=DIR`,
    /// `config=FILE`; the same as --target, --model and --config.
    #[arg(value_name = "WORD")]
    pub(crate) words: Vec<String>,
    /// Model bundle directory to ship (manifest.json, model.onnx, …). Default: keep the
    /// device's current bundle.
    #[arg(long, value_name = "DIR")]
    pub(crate) model: Option<PathBuf>,
    /// vigild.toml for the device (its `model` is rewritten to PREFIX/current/model). Default:
    /// keep the device's current config. Required for a first install.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Ship this vigild binary instead of building one (it must run on the device).
    #[arg(long, value_name = "PATH")]
    pub(crate) vigild: Option<PathBuf>,
    /// Model-only update without a restart: ship the bundle, switch `current`, send SIGHUP
    /// (vigild swaps the model in between frames). Needs --model and a running vigild.
    #[arg(long)]
    pub(crate) reload: bool,
    /// Where releases live on the device; relative paths are under the ssh user's home.
    #[arg(long, value_name = "DIR", default_value = "vigil")]
    pub(crate) prefix: String,
    /// SSH port.
    #[arg(long, value_name = "PORT")]
    pub(crate) ssh_port: Option<u16>,
    /// SSH private key.
    #[arg(long, value_name = "FILE")]
    pub(crate) identity: Option<PathBuf>,
    /// Extra ssh `-o` option, repeatable. Pin the device's host key rather than turning the
    /// check off: `ssh-keyscan -p PORT HOST > cam.known_hosts` once (compare its fingerprint,
    /// `ssh-keygen -lf cam.known_hosts`, with the device's console), then pass
    /// `--ssh-option UserKnownHostsFile=cam.known_hosts --ssh-option StrictHostKeyChecking=yes`
    /// (docs/deploy.md, "Host keys"). Never `StrictHostKeyChecking=no`: it sends the config's
    /// secrets to whoever answers on that address.
    #[arg(long = "ssh-option", value_name = "OPT")]
    pub(crate) ssh_options: Vec<String>,
    /// Limit for one ssh step (uploads included), in seconds.
    #[arg(long, value_name = "S", default_value_t = 300.0)]
    pub(crate) ssh_timeout_s: f64,
    /// Broker to watch the device's status on, `mqtt://HOST:PORT`. Default: the `broker` of
    /// the device's config, with localhost replaced by the ssh host.
    #[arg(long, value_name = "URL")]
    pub(crate) broker: Option<String>,
    /// How long to wait for `online` with the new model before rolling back, in seconds.
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub(crate) timeout_s: f64,
    /// Releases to keep on the device (the current one is never removed).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(crate) keep: usize,
    /// How vigild runs: `systemd` (unit installed, needs root and a booted systemd),
    /// `process` (setsid under the ssh user, pid file in PREFIX), or `auto` (systemd when the
    /// device has it).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Service::Auto)]
    pub(crate) service: Service,
    /// Build vigild without the V4L2 camera feature (no libclang needed).
    #[arg(long)]
    pub(crate) no_camera: bool,
    /// Print the plan (read-only probes of the device only) and exit.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// How vigild runs on the device (`--service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Service {
    Auto,
    Systemd,
    Process,
}

impl Service {
    /// `auto` resolved for a device (systemd when it has it).
    pub(crate) fn on(self, systemd: bool) -> Service {
        match self {
            Service::Auto if systemd => Service::Systemd,
            Service::Auto => Service::Process,
            s => s,
        }
    }
    /// The word the device script takes.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Service::Auto => "auto",
            Service::Systemd => "systemd",
            Service::Process => "process",
        }
    }
}

impl Cli {
    /// Folds the positional words into the flags they stand for.
    pub(crate) fn apply_words(&mut self) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

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
