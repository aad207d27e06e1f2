//! `vigil-deploy` end to end against a real sshd (started here on a loopback port with a
//! throwaway key) and a real mosquitto: a first install, an upgrade, a broken bundle rolled
//! back, a hot model reload (SIGHUP) with no frame lost or late, a refused hot reload, and the
//! authenticated MQTT reload command. No systemd here: vigild runs by the tool's process
//! fallback, and the generated unit is checked with `systemd-analyze verify` when present.

mod mqtt_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mqtt_support::{free_port, wait_for_port, wait_until, Mosquitto, Received, Subscriber};
use vigil_shared::messages::{CommandResult, DeviceState, FrameResult, Stats, Status};
use vigil_tests::workspace_bin;

const SSHD: &str = "/usr/sbin/sshd";
const DEVICE: &str = "deploy-e2e";
const TOKEN: &str = "e2e-token-0123456789";

/// sshd in the foreground on 127.0.0.1:port with its own host key and config; killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    log: PathBuf,
    /// This sshd's host key, pinned the way docs/deploy.md says (what `ssh-keyscan` writes).
    known_hosts: PathBuf,
}

impl Sshd {
    fn start(dir: &Path, client_pub: &Path) -> Sshd {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing: install the Debian package openssh-server (.ci/run does)"
        );
        let port = free_port();
        let host_key = dir.join("host_ed25519");
        keygen(&host_key);
        let auth = dir.join("authorized_keys");
        std::fs::copy(client_pub, &auth).unwrap();
        let cfg = dir.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 AcceptEnv LANG LC_*\n",
                host_key.display(),
                auth.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // sshd's privilege-separation directory, which only root's sshd needs.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let log = dir.join("sshd.log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&cfg)
            .arg("-h")
            .arg(&host_key)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn sshd");
        let known_hosts = dir.join("known_hosts");
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let mut key = host_pub.split_whitespace();
        let (kind, blob) = (key.next().unwrap(), key.next().unwrap());
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {blob}\n")).unwrap();
        let s = Sshd {
            child,
            port,
            log,
            known_hosts,
        };
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "sshd did not listen on {port}: {}",
            std::fs::read_to_string(&s.log).unwrap_or_default()
        );
        s
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops the device's vigild (pid file of the process fallback) when the test ends.
struct DeviceGuard(PathBuf);

impl Drop for DeviceGuard {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("vigild.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: signalling a pid we started.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
                let t = Instant::now();
                // SAFETY: as above; signal 0 only checks existence.
                while unsafe { libc::kill(pid, 0) } == 0 && t.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

fn keygen(path: &Path) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vigil-e2e", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Two small exported bundles (one epoch at 32², different seeds: different ONNX files).
fn train_two(a: &Path, b: &Path) {
    let spawn = |out: &Path, seed: u64| {
        Command::new(workspace_bin("vigil"))
            .args(["train", "--data", "synthetic:metal", "--image-size", "32"])
            .args(["--epochs", "1", "--seed", &seed.to_string(), "--out"])
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(a, 1), spawn(b, 2));
    for c in [ca, cb] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // vigild scores the exported graph.
    for out in [a, b] {
        let o = Command::new(workspace_bin("vigil"))
            .args(["export", "--model"])
            .arg(out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn onnx_sha(bundle: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"].as_str().unwrap().ends_with(".onnx"))
        .unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

struct Env {
    sshd: Sshd,
    key: PathBuf,
    prefix: PathBuf,
    user: String,
}

impl Env {
    fn deploy(&self, args: &[&str]) -> Output {
        let t = Instant::now();
        let mut c = Command::new(workspace_bin("vigil-deploy"));
        c.arg("--target")
            .arg(format!("{}@127.0.0.1", self.user))
            .args(["--ssh-port", &self.sshd.port.to_string()])
            .arg("--identity")
            .arg(&self.key)
            .args(["--ssh-option", "StrictHostKeyChecking=yes"])
            .arg("--ssh-option")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.sshd.known_hosts.display()
            ))
            .args(["--ssh-option", "LogLevel=ERROR"])
            .arg("--prefix")
            .arg(&self.prefix)
            // Never a real systemd unit from a test.
            .args([
                "--service",
                "process",
                "--timeout-s",
                "30",
                "--ssh-timeout-s",
                "60",
            ])
            .args(args)
            .stdin(Stdio::null());
        let o = c.output().unwrap();
        eprintln!(
            "--- vigil-deploy {} ({:.1} s, {}):\n{}",
            args.join(" "),
            t.elapsed().as_secs_f64(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn current(&self) -> String {
        std::fs::read_link(self.prefix.join("current"))
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn releases(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.prefix.join("releases"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn statuses(sub: &Subscriber) -> Vec<Status> {
    sub.on(&format!("vigil/{DEVICE}/status"))
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("status matches shared::messages"))
        .collect()
}

fn online_with(sub: &Subscriber, sha: &str, after: usize) -> bool {
    statuses(sub)
        .iter()
        .skip(after)
        .any(|s| s.state == DeviceState::Online && s.model_sha256 == sha)
}

fn results(msgs: &[Received]) -> Vec<FrameResult> {
    msgs.iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect()
}

fn last_stats(sub: &Subscriber) -> Option<Stats> {
    sub.on(&format!("vigil/{DEVICE}/stats"))
        .last()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The bundles the scenario ships: A and B (good, different ONNX), one whose manifest lies
/// about its input (passes the checksums, fails on the device), one with a truncated graph
/// (fails its checksum here).
struct Bundles {
    a: PathBuf,
    b: PathBuf,
    bad: PathBuf,
    truncated: PathBuf,
    sha_a: String,
    sha_b: String,
}

fn bundles(d: &Path) -> Bundles {
    let t_train = Instant::now();
    let (a, b) = (d.join("model-a"), d.join("model-b"));
    train_two(&a, &b);
    eprintln!(
        "trained two bundles in {:.0} s",
        t_train.elapsed().as_secs_f64()
    );
    let (sha_a, sha_b) = (onnx_sha(&a), onnx_sha(&b));
    assert_ne!(sha_a, sha_b);
    // Passes every checksum, but declares an input the graph does not take: only loading the
    // model on the device can tell, so the health check must catch it.
    let bad = d.join("model-bad");
    copy_dir(&b, &bad);
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bad.join("manifest.json")).unwrap()).unwrap();
    m["input"]["height"] = 48.into();
    m["input"]["width"] = 48.into();
    std::fs::write(bad.join("manifest.json"), m.to_string()).unwrap();
    // Fails its checksum: refused before anything is sent.
    let truncated = d.join("model-truncated");
    copy_dir(&b, &truncated);
    let onnx = std::fs::read(truncated.join("model.onnx")).unwrap();
    std::fs::write(truncated.join("model.onnx"), &onnx[..onnx.len() / 2]).unwrap();
    Bundles {
        a,
        b,
        bad,
        truncated,
        sha_a,
        sha_b,
    }
}

/// The world of the scenario. Fields drop in order: sshd first, then the device's vigild,
/// then the subscriber and the broker.
struct Scenario {
    env: Env,
    _guard: DeviceGuard,
    sub: Subscriber,
    broker: Mosquitto,
    bundles: Bundles,
    prefix: PathBuf,
    config: PathBuf,
    vigild: String,
}

impl Scenario {
    /// mosquitto with a subscriber on the device's topics, sshd with a fresh key, and the
    /// device's vigild.toml.
    fn start(d: &Path, bundles: Bundles) -> Scenario {
        let mut broker = Mosquitto::new(d, free_port());
        broker.start();
        let sub = Subscriber::start(
            broker.port,
            "deploy-e2e-sub",
            &format!("vigil/{DEVICE}/#"),
            false,
        );
        assert!(sub.wait_connected(Duration::from_secs(10)));

        let ssh_dir = d.join("ssh");
        std::fs::create_dir(&ssh_dir).unwrap();
        let key = ssh_dir.join("id_ed25519");
        keygen(&key);
        let sshd = Sshd::start(&ssh_dir, &key.with_extension("pub"));
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let prefix = d.join("device");
        let guard = DeviceGuard(prefix.clone());
        let env = Env {
            sshd,
            key,
            prefix: prefix.clone(),
            user,
        };
        let config = d.join("vigild.toml");
        std::fs::write(
            &config,
            format!(
                "broker = \"mqtt://localhost:{}\"\ndevice_id = \"{DEVICE}\"\nsource = \"synthetic\"\n\
                 fps = 20.0\nmasks = \"none\"\nstats_interval_s = 0.5\ncommand_token = \"{TOKEN}\"\n",
                broker.port
            ),
        )
        .unwrap();
        let vigild = workspace_bin("vigild").to_str().unwrap().to_string();
        Scenario {
            env,
            _guard: guard,
            sub,
            broker,
            bundles,
            prefix,
            config,
            vigild,
        }
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }
}

/// Timings of the deploys, printed at the end.
#[derive(Default)]
struct Timings {
    first_s: f64,
    upgrade_s: f64,
    rollback_s: f64,
    reload_s: f64,
}

/// A dry run on an empty device: the plan, and nothing on the device.
/// (`just deploy`'s words: model=…, config=…)
fn dry_run_changes_nothing(s: &Scenario) {
    let (env, prefix, sha_a) = (&s.env, &s.prefix, &s.bundles.sha_a);
    let a_s = Scenario::path(&s.bundles.a);
    let cfg_s = Scenario::path(&s.config);
    let (model_w, config_w) = (format!("model={a_s}"), format!("config={cfg_s}"));
    let o = env.deploy(&["--dry-run", &model_w, &config_w]);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("native build") && log.contains("first install") && log.contains(sha_a),
        "{log}"
    );
    assert!(env.releases().is_empty() && !prefix.join("current").exists());
}

/// Step 1: first install: the release layout, the rewritten config, the unit. Returns the release.
fn first_install(s: &Scenario, t_: &mut Timings) -> String {
    let (env, sub, prefix, sha_a) = (&s.env, &s.sub, &s.prefix, &s.bundles.sha_a);
    let (vigild, a_s, cfg_s) = (
        s.vigild.as_str(),
        Scenario::path(&s.bundles.a),
        Scenario::path(&s.config),
    );
    let t = Instant::now();
    let o = env.deploy(&["--vigild", vigild, "--model", a_s, "--config", cfg_s]);
    t_.first_s = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(online_with(sub, sha_a, 0), "{:?}", statuses(sub));
    let r1 = env.current();
    assert_eq!(env.releases(), vec![r1.clone()]);
    let rel = prefix.join("releases").join(&r1);
    for f in [
        "vigild",
        "vigild.toml",
        "vigild.service",
        "SHA256SUMS",
        "model/model.onnx",
    ] {
        assert!(rel.join(f).is_file(), "{f} missing in {}", rel.display());
    }
    let toml = std::fs::read_to_string(rel.join("vigild.toml")).unwrap();
    assert!(
        toml.contains(&format!("{}/current/model", prefix.display())),
        "{toml}"
    );
    // It holds the command token: readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(rel.join("vigild.toml"))
            .unwrap()
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600, "vigild.toml is {mode:o} on the device");
    if Path::new("/usr/bin/systemd-analyze").is_file() {
        let v = Command::new("systemd-analyze")
            .arg("verify")
            .arg(rel.join("vigild.service"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&v.stderr).to_string();
        assert!(v.status.success(), "systemd-analyze verify: {out}");
        eprintln!("systemd-analyze verify vigild.service: ok {out}");
    } else {
        eprintln!("note: systemd-analyze is not installed; the unit was not verified");
    }
    r1
}

/// Step 2: upgrade to model B, keeping the device's config (read back over ssh); then a bundle
/// that fails its checksum never leaves this machine. Returns the new release.
fn upgrade_then_refuse_a_corrupt_bundle(s: &Scenario, r1: &str, t_: &mut Timings) -> String {
    let (env, sub, sha_b) = (&s.env, &s.sub, &s.bundles.sha_b);
    let (vigild, b_s) = (s.vigild.as_str(), Scenario::path(&s.bundles.b));
    let n = statuses(sub).len();
    let t = Instant::now();
    let o = env.deploy(&["--vigild", vigild, "--model", b_s]);
    t_.upgrade_s = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(online_with(sub, sha_b, n), "{:?}", statuses(sub));
    let r2 = env.current();
    assert_ne!(r1, r2);
    assert_eq!(env.releases(), vec![r1.to_string(), r2.clone()]);

    let o = env.deploy(&[
        "--vigild",
        vigild,
        "--model",
        Scenario::path(&s.bundles.truncated),
    ]);
    let log = stderr(&o);
    assert!(!o.status.success());
    assert!(
        log.contains("model.onnx") && !log.contains("panicked"),
        "{log}"
    );
    assert_eq!((env.current(), env.releases().len()), (r2.clone(), 2));
    r2
}

/// Step 3: a broken bundle: vigild refuses it at start, the health check fails, B comes back.
fn broken_bundle_rolls_back(s: &Scenario, r1: &str, r2: &str, t_: &mut Timings) {
    let (env, sub, prefix, sha_b) = (&s.env, &s.sub, &s.prefix, &s.bundles.sha_b);
    let (vigild, bad_s) = (s.vigild.as_str(), Scenario::path(&s.bundles.bad));
    let n = statuses(sub).len();
    let t = Instant::now();
    let o = env.deploy(&["--vigild", vigild, "--model", bad_s]);
    t_.rollback_s = t.elapsed().as_secs_f64();
    let log = stderr(&o);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("failed its health check") && log.contains(&format!("rolled back to {r2}")),
        "{log}"
    );
    assert_eq!(env.current(), r2);
    assert_eq!(env.releases(), vec![r1.to_string(), r2.to_string()]);
    assert_eq!(std::fs::read_dir(prefix.join("failed")).unwrap().count(), 1);
    assert!(
        wait_until(Duration::from_secs(15), || online_with(sub, sha_b, n)),
        "{:?}",
        statuses(sub)
    );
}

/// Step 4: hot reload of model A: SIGHUP, no restart, no frame lost or late. Returns the release.
fn hot_reload_loses_no_frame(s: &Scenario, t_: &mut Timings) -> String {
    let (env, sub, prefix) = (&s.env, &s.sub, &s.prefix);
    let (sha_a, sha_b) = (&s.bundles.sha_a, &s.bundles.sha_b);
    let a_s = Scenario::path(&s.bundles.a);
    let result_topic = format!("vigil/{DEVICE}/cam0/result");
    assert!(wait_until(Duration::from_secs(10), || last_stats(sub).is_some()));
    let before = sub.count(&result_topic);
    let stats_before = last_stats(sub).unwrap();
    let pid_before = std::fs::read_to_string(prefix.join("vigild.pid")).unwrap();
    let t = Instant::now();
    let o = env.deploy(&["--reload", "--model", a_s]);
    t_.reload_s = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(prefix.join("vigild.pid")).unwrap(),
        pid_before,
        "a reload must not restart vigild"
    );
    // A second of results after the swap, then the stats that cover them.
    let swapped = || {
        results(&sub.on(&result_topic))
            .iter()
            .filter(|r| r.model.sha256 == *sha_a)
            .count()
            >= 20
    };
    assert!(wait_until(Duration::from_secs(15), swapped));
    std::thread::sleep(Duration::from_millis(1200));
    let rs = results(&sub.on(&result_topic)[before..]);
    let ids: Vec<u64> = rs.iter().map(|r| r.frame_id).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "frame ids not consecutive across the reload: {ids:?}"
    );
    let first_a = rs.iter().position(|r| r.model.sha256 == *sha_a).unwrap();
    assert!(first_a > 0, "no result of model B before the swap");
    assert!(rs[..first_a].iter().all(|r| r.model.sha256 == *sha_b));
    assert!(rs[first_a..].iter().all(|r| r.model.sha256 == *sha_a));
    let around = &rs[first_a.saturating_sub(5)..(first_a + 5).min(rs.len())];
    let worst = around
        .iter()
        .map(|r| r.latency_ms.total)
        .fold(0.0f64, f64::max);
    let stats_after = last_stats(sub).unwrap();
    eprintln!(
        "hot reload: swap at frame {}, worst total latency of the 10 frames around it {worst:.2} ms; \
         deadline misses {} -> {}, dropped {} -> {}",
        rs[first_a].frame_id,
        stats_before.pipeline.deadline_misses,
        stats_after.pipeline.deadline_misses,
        stats_before.pipeline.dropped_frames,
        stats_after.pipeline.dropped_frames
    );
    assert_eq!(stats_after.pipeline.reloads, 1);
    assert_eq!(
        stats_after.pipeline.deadline_misses, stats_before.pipeline.deadline_misses,
        "deadline missed during the reload"
    );
    assert!(online_with(sub, sha_a, 0));
    env.current()
}

/// Step 5: a hot reload of a bundle vigild cannot load: refused, A keeps scoring, `current` back.
fn unloadable_reload_is_refused(s: &Scenario, r4: &str) {
    let (env, sub, sha_a) = (&s.env, &s.sub, &s.bundles.sha_a);
    let result_topic = format!("vigil/{DEVICE}/cam0/result");
    let o = env.deploy(&["--reload", "--model", Scenario::path(&s.bundles.bad)]);
    let log = stderr(&o);
    assert!(!o.status.success(), "{log}");
    assert!(
        log.contains("refused the reload") && log.contains(&format!("rolled back to {r4}")),
        "{log}"
    );
    assert_eq!(env.current(), r4);
    let n = sub.count(&result_topic);
    assert!(wait_until(Duration::from_secs(10), || sub
        .count(&result_topic)
        > n + 10));
    assert!(results(&sub.on(&result_topic)[n..])
        .iter()
        .all(|r| r.model.sha256 == *sha_a));
    assert!(wait_until(Duration::from_secs(5), || last_stats(sub)
        .is_some_and(|s| s.pipeline.reloads_refused >= 1)));
}

/// Publishes one `…/command/reload` message (QoS 1, waits for the PubAck).
fn send_command(port: u16, payload: serde_json::Value) {
    let mut o = rumqttc::MqttOptions::new("deploy-e2e-cmd", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (c, mut conn) = rumqttc::Client::new(o, 8);
    c.publish(
        format!("vigil/{DEVICE}/command/reload"),
        rumqttc::QoS::AtLeastOnce,
        false,
        payload.to_string(),
    )
    .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) =
            conn.recv_timeout(Duration::from_millis(100))
        {
            break;
        }
    }
    let _ = c.disconnect();
}

/// Step 6: the MQTT command: a wrong token is refused; the right one reloads B from its release.
fn mqtt_command_reloads_with_the_token_only(s: &Scenario, r2: &str) {
    let (sub, prefix, sha_b) = (&s.sub, &s.prefix, &s.bundles.sha_b);
    let cmd = |payload: serde_json::Value| send_command(s.broker.port, payload);
    let cmd_results = || -> Vec<CommandResult> {
        sub.on(&format!("vigil/{DEVICE}/command/result"))
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect()
    };
    cmd(serde_json::json!({"token": "wrong-token-0123456789", "request_id": "w"}));
    assert!(wait_until(Duration::from_secs(10), || cmd_results()
        .iter()
        .any(|r| r.request_id.as_deref() == Some("w"))));
    let w = cmd_results()
        .into_iter()
        .find(|r| r.request_id.as_deref() == Some("w"))
        .unwrap();
    assert!(!w.ok && w.error.as_deref() == Some("wrong token"), "{w:?}");
    let b_model = prefix.join("releases").join(r2).join("model");
    let n = statuses(sub).len();
    cmd(serde_json::json!({"token": TOKEN, "bundle": b_model, "request_id": "ok"}));
    assert!(wait_until(Duration::from_secs(20), || cmd_results()
        .iter()
        .any(|r| r.request_id.as_deref() == Some("ok"))));
    let ok = cmd_results()
        .into_iter()
        .find(|r| r.request_id.as_deref() == Some("ok"))
        .unwrap();
    assert!(ok.ok && ok.model.sha256 == *sha_b, "{ok:?}");
    assert!(wait_until(Duration::from_secs(10), || online_with(
        sub, sha_b, n
    )));
}

#[test]
fn deploy_over_ssh_installs_upgrades_rolls_back_and_hot_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scenario::start(dir.path(), bundles(dir.path()));
    let mut t = Timings::default();
    dry_run_changes_nothing(&s);
    let r1 = first_install(&s, &mut t);
    let r2 = upgrade_then_refuse_a_corrupt_bundle(&s, &r1, &mut t);
    broken_bundle_rolls_back(&s, &r1, &r2, &mut t);
    let r4 = hot_reload_loses_no_frame(&s, &mut t);
    unloadable_reload_is_refused(&s, &r4);
    mqtt_command_reloads_with_the_token_only(&s, &r2);
    eprintln!(
        "deploy timings: first install {:.1} s, upgrade {:.1} s, \
         failed deploy + rollback {:.1} s, hot reload {:.1} s",
        t.first_s, t.upgrade_s, t.rollback_s, t.reload_s
    );
}
