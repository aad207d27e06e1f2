//! vigil-deploy's building blocks: ssh with timeouts, the device script, checksums, the
//! systemd unit, the device config rewrite, the build path and the health check.
//! The binary (`main.rs`) strings them into the deploy sequence; docs/deploy.md describes it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The device side, piped to `sh -s` over ssh for every step.
pub const DEVICE_SH: &str = include_str!("device.sh");

/// Single-quotes `s` for a POSIX shell.
pub fn shq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// How to reach the device.
#[derive(Debug, Clone)]
pub struct Ssh {
    /// `user@host` (or `host`).
    pub target: String,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    /// Extra `-o` options, e.g. `UserKnownHostsFile=cam.known_hosts` (docs/deploy.md).
    pub options: Vec<String>,
    /// Limit for one ssh command.
    pub timeout: Duration,
}

/// What a remote command printed.
#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

impl Ssh {
    /// The host part of the target (for the broker address when the device's is localhost).
    pub fn host(&self) -> &str {
        self.target
            .rsplit_once('@')
            .map_or(self.target.as_str(), |(_, h)| h)
    }

    fn command(&self) -> Command {
        let mut c = Command::new("ssh");
        // BatchMode: never prompt (a deploy runs unattended); fail instead.
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]);
        for o in &self.options {
            c.arg("-o").arg(o);
        }
        if let Some(p) = self.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(i) = &self.identity {
            c.arg("-i").arg(i);
        }
        c.arg(&self.target).arg("--");
        c
    }

    /// Runs `remote` (a shell command line) with `input` on its stdin.
    pub fn run(&self, remote: &str, input: &[u8], timeout: Duration) -> Result<Output> {
        let mut c = self.command();
        c.arg(remote);
        run_with_timeout(c, Input::Bytes(input.to_vec()), timeout)
            .with_context(|| format!("ssh {}: {}", self.target, first_line(remote)))
    }

    /// Runs a device-script command: `sh -s -- CMD PREFIX ARGS…`.
    pub fn device(&self, cmd: &str, prefix: &str, args: &[&str]) -> Result<Output> {
        self.device_timeout(cmd, prefix, args, self.timeout)
    }

    pub fn device_timeout(
        &self,
        cmd: &str,
        prefix: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output> {
        let mut line = format!("sh -s -- {} {}", shq(cmd), shq(prefix));
        for a in args {
            line.push(' ');
            line.push_str(&shq(a));
        }
        let mut c = self.command();
        c.arg(&line);
        run_with_timeout(c, Input::Bytes(DEVICE_SH.as_bytes().to_vec()), timeout)
            .with_context(|| format!("on {}: device step `{cmd}`", self.target))
    }

    /// Streams `producer`'s stdout (e.g. `tar -c`) into `remote` over ssh.
    pub fn pipe(&self, mut producer: Command, remote: &str, timeout: Duration) -> Result<Output> {
        let mut p = producer
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {:?}", producer.get_program()))?;
        let out = p.stdout.take().expect("piped stdout");
        let mut c = self.command();
        c.arg(remote);
        let r = run_with_timeout(c, Input::Stream(out), timeout)
            .with_context(|| format!("ssh {}: {}", self.target, first_line(remote)));
        let status = p.wait()?;
        let r = r?;
        if !status.success() {
            let mut e = String::new();
            if let Some(mut s) = p.stderr.take() {
                let _ = s.read_to_string(&mut e);
            }
            bail!("{:?} failed: {}", producer.get_program(), e.trim());
        }
        Ok(r)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

enum Input {
    Bytes(Vec<u8>),
    Stream(std::process::ChildStdout),
}

/// Runs `c`, feeding `input`, killing it after `timeout`; a non-zero exit is an error carrying
/// its stderr.
fn run_with_timeout(mut c: Command, input: Input, timeout: Duration) -> Result<Output> {
    let mut child = c
        .stdin(match &input {
            Input::Bytes(_) => Stdio::piped(),
            Input::Stream(_) => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {:?} (is it installed?)", c.get_program()))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        match input {
            Input::Bytes(b) => stdin.write_all(&b),
            Input::Stream(mut s) => std::io::copy(&mut s, &mut stdin).map(|_| ()),
        }
        // stdin drops here: EOF for the remote side.
    });
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {:.0} s", timeout.as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = feeder.join();
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    if !status.success() {
        bail!(
            "exit status {}: {}",
            status.code().map_or("signal".into(), |c| c.to_string()),
            stderr.trim()
        );
    }
    Ok(Output { stdout, stderr })
}

/// `key=value` lines of the device script's output.
pub fn kv<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    vigil_shared::manifest::sha256_file(path)
        .with_context(|| format!("{}: cannot read", path.display()))
}

/// A bundle checked locally: every file the manifest lists is present with its sha256.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    /// sha256 of the ONNX file vigild reports (`model_sha256` in its status): the first
    /// `.onnx` the manifest lists, as vigild's `model_ref` picks it.
    pub model_sha256: String,
    pub files: Vec<String>,
}

pub fn check_bundle(dir: &Path) -> Result<Bundle> {
    let m = vigil_shared::manifest::Manifest::load_verified(dir)
        .with_context(|| format!("bundle {}", dir.display()))?;
    Ok(Bundle {
        dir: dir.to_path_buf(),
        model_sha256: m
            .model_file()
            .map(|f| f.sha256.clone())
            .ok_or_else(|| anyhow!("bundle {}: the manifest lists no .onnx file", dir.display()))?,
        files: m.files.iter().map(|f| f.name.clone()).collect(),
    })
}

/// What the deploy needs from the device's vigild.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// The config as uploaded: `model` points at `<prefix>/current/model`.
    pub text: String,
    pub topic_prefix: String,
    /// `mqtt://host:port` vigild publishes to (None: no broker, no health check possible).
    pub broker: Option<String>,
}

/// Rewrites `model` to the release layout and reads the status topic and broker.
pub fn prepare_config(text: &str, origin: &str, prefix: &str) -> Result<DeviceConfig> {
    let mut t: toml::Table = text
        .parse()
        .map_err(|e| anyhow!("{origin}: not valid TOML: {e}"))?;
    t.insert(
        "model".into(),
        toml::Value::String(format!("{prefix}/current/model")),
    );
    let s = |k: &str| -> Result<Option<String>> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(v)) => Ok(Some(v.clone())),
            Some(v) => bail!("{origin}: field `{k}` = {v}: expected a string"),
        }
    };
    let device_id = s("device_id")?.unwrap_or_else(|| "vigil".into());
    let topic_prefix = s("topic_prefix")?.unwrap_or_else(|| format!("vigil/{device_id}"));
    let embedded = matches!(t.get("embedded_broker"), Some(toml::Value::Boolean(true)));
    let broker = s("broker")?.or_else(|| embedded.then(|| "mqtt://127.0.0.1:1883".into()));
    Ok(DeviceConfig {
        text: toml::to_string(&t).context("cannot render the config")?,
        topic_prefix,
        broker,
    })
}

/// `(host, port)` of the broker as seen from here: a loopback address in the device's config
/// means the device itself, so it becomes the ssh host.
pub fn broker_from_device(url: &str, ssh_host: &str) -> Result<(String, u16)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow!("broker `{url}`: expected mqtt://HOST[:PORT]"))?;
    if scheme != "mqtt" {
        bail!("broker `{url}`: the health check speaks plain mqtt://; pass --broker mqtt://HOST:PORT of a listener it can reach");
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| anyhow!("broker `{url}`: port `{p}` is not a number"))?,
        ),
        None => (rest.to_string(), 1883),
    };
    let host = match host.as_str() {
        "localhost" | "127.0.0.1" | "::1" | "[::1]" => ssh_host.to_string(),
        _ => host,
    };
    Ok((host, port))
}

/// The systemd unit for `prefix` (absolute).
pub fn render_unit(prefix: &str) -> String {
    format!(
        "# Installed by vigil-deploy (docs/deploy.md). Releases live in {prefix}/releases;\n\
         # `current` points at the running one.\n\
         [Unit]\n\
         Description=Vigil appliance daemon (vigild): score camera frames, publish over MQTT\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         # vigild says READY once the model is warm and the camera started, and pings the\n\
         # watchdog only while its scoring loop runs: a hung scorer is restarted.\n\
         Type=notify\n\
         NotifyAccess=main\n\
         WatchdogSec=10\n\
         User=vigil\n\
         Group=vigil\n\
         SupplementaryGroups=video\n\
         # The spool (vigild-spool/ in the working directory) outlives releases.\n\
         StateDirectory=vigild\n\
         WorkingDirectory=/var/lib/vigild\n\
         ExecStart={prefix}/current/vigild --config {prefix}/current/vigild.toml\n\
         # SIGHUP: hot model reload (re-reads current/model).\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         TimeoutStopSec=20\n\
         NoNewPrivileges=yes\n\
         PrivateTmp=yes\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// Sortable release id: UTC time to the millisecond.
pub fn release_id(t: std::time::SystemTime) -> String {
    let s = vigil_shared::messages::rfc3339_ms(t); // 2026-11-23T08:37:16.123Z
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == 'T')
        .collect()
}

/// How vigild gets built for the device's architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildPath {
    /// `--vigild PATH`.
    Prebuilt(PathBuf),
    /// Same architecture as this machine.
    Native,
    /// Cross-compile for `triple` with `linker`.
    Cross { triple: String, linker: String },
    /// Neither: build on the device from a source archive.
    OnDevice,
}

/// Chooses the build path for a device reporting `uname -m` = `arch`.
pub fn choose_build(
    arch: &str,
    local_arch: &str,
    prebuilt: Option<&Path>,
    installed_targets: &str,
    have_linker: impl Fn(&str) -> bool,
) -> BuildPath {
    if let Some(p) = prebuilt {
        return BuildPath::Prebuilt(p.to_path_buf());
    }
    if arch == local_arch {
        return BuildPath::Native;
    }
    let triple = format!("{arch}-unknown-linux-gnu");
    let linker = format!("{arch}-linux-gnu-gcc");
    if installed_targets.lines().any(|l| l.trim() == triple) && have_linker(&linker) {
        BuildPath::Cross { triple, linker }
    } else {
        BuildPath::OnDevice
    }
}

impl std::fmt::Display for BuildPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildPath::Prebuilt(p) => write!(f, "prebuilt {}", p.display()),
            BuildPath::Native => {
                write!(f, "native build (cargo build --release -p vigil-appliance)")
            }
            BuildPath::Cross { triple, linker } => write!(
                f,
                "cross-compile for {triple} with {linker} (rust std for {triple} is installed)"
            ),
            BuildPath::OnDevice => write!(
                f,
                "build on the device from a source archive (no rust std or linker for its \
                 architecture here)"
            ),
        }
    }
}

/// Messages received so far: topic and payload, in arrival order.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// The device's `…/status` as the health check sees it.
#[derive(Debug, Clone)]
pub struct StatusWatch {
    got: Received,
    stop: Arc<std::sync::atomic::AtomicBool>,
    subscribed: Arc<std::sync::atomic::AtomicBool>,
}

impl StatusWatch {
    /// Subscribes to `topics` on the broker (in a thread; reconnects on its own).
    pub fn start(host: &str, port: u16, topics: &[String]) -> StatusWatch {
        use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
        use std::sync::atomic::Ordering;
        let id = format!("vigil-deploy-{}", std::process::id());
        let mut o = MqttOptions::new(id, host, port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = Client::new(o, 16);
        let w = StatusWatch {
            got: Arc::default(),
            stop: Arc::default(),
            subscribed: Arc::default(),
        };
        let (g, s, sub, topics) = (
            w.got.clone(),
            w.stop.clone(),
            w.subscribed.clone(),
            topics.to_vec(),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match conn.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        for t in &topics {
                            let _ = client.try_subscribe(t.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                        sub.store(true, Ordering::Relaxed)
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => g
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((p.topic.to_string(), p.payload.to_vec())),
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
                    Err(rumqttc::RecvTimeoutError::Timeout) => {}
                    Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                }
            }
            let _ = client.try_disconnect();
        });
        w
    }

    pub fn wait_subscribed(&self, limit: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.subscribed.load(std::sync::atomic::Ordering::Relaxed) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Everything received on `topic` so far.
    pub fn on(&self, topic: &str) -> Vec<Vec<u8>> {
        self.got
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        // Clones share the flag; the deploy holds one watch.
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether `payload` is the status the deploy waits for: `online`, the new model's sha256, the
/// new vigild's version, and not the status that was retained before the deploy began (the
/// old process's, which could match on a redeploy of the same release).
pub fn status_is_healthy(
    payload: &[u8],
    baseline: Option<&[u8]>,
    model_sha256: &str,
    version: Option<&str>,
) -> bool {
    if baseline == Some(payload) {
        return false;
    }
    let Ok(s) = serde_json::from_slice::<vigil_shared::messages::Status>(payload) else {
        return false;
    };
    s.state == vigil_shared::messages::DeviceState::Online
        && s.model_sha256 == model_sha256
        && version.is_none_or(|v| s.version == v)
}

/// Writes a file only its owner can read (0600 from its creation, never briefly wider):
/// vigild.toml holds the MQTT password and the command token.
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode through open(): set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vigild.toml");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        for _ in 0..2 {
            write_private(&p, "password = \"x\"\n").unwrap();
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "password = \"x\"\n");
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shq("a b"), "'a b'");
        assert_eq!(shq("it's"), r"'it'\''s'");
    }

    #[test]
    fn config_is_pointed_at_current_and_read() {
        let c = prepare_config(
            "model = \"/somewhere/else\"\ndevice_id = \"line-3\"\nbroker = \"mqtt://localhost:1999\"\nfps = 15.0\n",
            "vigild.toml",
            "/opt/vigil",
        )
        .unwrap();
        assert!(
            c.text.contains("model = \"/opt/vigil/current/model\""),
            "{}",
            c.text
        );
        assert!(c.text.contains("fps = 15.0"));
        assert_eq!(c.topic_prefix, "vigil/line-3");
        assert_eq!(c.broker.as_deref(), Some("mqtt://localhost:1999"));
        let e = prepare_config("device_id = 3\n", "dev.toml", "/p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dev.toml") && e.contains("device_id"), "{e}");
        let e = prepare_config("model = \n", "dev.toml", "/p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dev.toml"), "{e}");
        let c = prepare_config(
            "embedded_broker = true\ntopic_prefix = \"f/x\"\n",
            "t",
            "/p",
        )
        .unwrap();
        assert_eq!(
            (c.topic_prefix.as_str(), c.broker.as_deref()),
            ("f/x", Some("mqtt://127.0.0.1:1883"))
        );
    }

    #[test]
    fn loopback_broker_means_the_device() {
        assert_eq!(
            broker_from_device("mqtt://localhost:1999", "jetson-3").unwrap(),
            ("jetson-3".into(), 1999)
        );
        assert_eq!(
            broker_from_device("mqtt://broker.lan", "jetson-3").unwrap(),
            ("broker.lan".into(), 1883)
        );
        assert!(broker_from_device("mqtts://b:8883", "h").is_err());
        assert!(broker_from_device("mqtt://b:x", "h")
            .unwrap_err()
            .to_string()
            .contains("`x`"));
    }

    #[test]
    fn build_path_follows_what_is_installed() {
        let p = Path::new("/x/vigild");
        assert_eq!(
            choose_build("aarch64", "x86_64", Some(p), "", |_| false),
            BuildPath::Prebuilt(p.into())
        );
        assert_eq!(
            choose_build("x86_64", "x86_64", None, "", |_| false),
            BuildPath::Native
        );
        assert_eq!(
            choose_build(
                "aarch64",
                "x86_64",
                None,
                "x86_64-unknown-linux-gnu\n",
                |_| true
            ),
            BuildPath::OnDevice
        );
        assert_eq!(
            choose_build(
                "aarch64",
                "x86_64",
                None,
                "aarch64-unknown-linux-gnu\n",
                |_| false
            ),
            BuildPath::OnDevice
        );
        assert_eq!(
            choose_build(
                "aarch64",
                "x86_64",
                None,
                "aarch64-unknown-linux-gnu\n",
                |l| l == "aarch64-linux-gnu-gcc"
            ),
            BuildPath::Cross {
                triple: "aarch64-unknown-linux-gnu".into(),
                linker: "aarch64-linux-gnu-gcc".into()
            }
        );
    }

    #[test]
    fn health_needs_a_new_online_status_with_the_new_model() {
        let st = |state: &str, sha: &str, since: &str| {
            format!(r#"{{"state":"{state}","version":"0.1.0","model":"m","model_sha256":"{sha}","since":"{since}"}}"#)
                .into_bytes()
        };
        let old = st("online", "aa", "2026-01-01T00:00:00.000Z");
        assert!(status_is_healthy(
            &st("online", "bb", "t2"),
            Some(&old),
            "bb",
            Some("0.1.0")
        ));
        assert!(!status_is_healthy(
            &st("online", "bb", "t2"),
            Some(&old),
            "bb",
            Some("0.2.0")
        ));
        assert!(!status_is_healthy(
            &st("offline", "bb", "t2"),
            Some(&old),
            "bb",
            None
        ));
        assert!(!status_is_healthy(
            &st("online", "aa", "t2"),
            Some(&old),
            "bb",
            None
        ));
        // The retained status of before the deploy does not count, even if it matches.
        assert!(!status_is_healthy(&old, Some(&old), "aa", None));
        assert!(status_is_healthy(
            &st("online", "aa", "t3"),
            Some(&old),
            "aa",
            None
        ));
        assert!(!status_is_healthy(b"not json", None, "aa", None));
    }

    #[test]
    fn unit_has_what_the_service_needs() {
        let u = render_unit("/opt/vigil");
        for want in [
            "ExecStart=/opt/vigil/current/vigild --config /opt/vigil/current/vigild.toml",
            "User=vigil",
            "SupplementaryGroups=video",
            "Restart=on-failure",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ] {
            assert!(u.contains(want), "{want} missing in\n{u}");
        }
    }

    #[test]
    fn release_ids_sort_by_time() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_795_449_605_123);
        let a = release_id(t);
        let b = release_id(t + Duration::from_millis(1));
        assert!(a < b && a.len() == 19, "{a} {b}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn kv_reads_device_output() {
        let o = "arch=x86_64\nprefix=/p\ncurrent=2026\n";
        assert_eq!(kv(o, "arch"), Some("x86_64"));
        assert_eq!(kv(o, "current"), Some("2026"));
        assert_eq!(kv(o, "running"), None);
    }
}
