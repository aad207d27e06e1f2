//! Faults injected into a running publisher, against a real mosquitto: the spool's disk fills
//! up while the broker is away (ENOSPC, on a small tmpfs), and hostile or stale commands
//! arrive on `…/command/reload` (malformed JSON, a retained command, paths out of the
//! releases tree, a flood of wrong tokens). docs/mqtt.md, "What survives what", names these.

// The MQTT helpers of the end-to-end tests (a mosquitto on a free port, a recording
// subscriber), shared rather than copied; here so that `cargo test -p vigil-appliance` runs
// these without building the tests crate's training stack.
#[path = "../../tests/tests/mqtt_support/mod.rs"]
mod mqtt_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use mqtt_support::{
    free_port, publisher_config as config, result_ids, send, wait_until, Mosquitto, Subscriber,
};
use vigil_appliance::backend::{Backend, BackendError};
use vigil_appliance::capture::CaptureStats;
use vigil_appliance::pipeline::Telemetry;
use vigil_appliance::publish::{Commands, Publisher};
use vigil_appliance::reload::{model_ref, ModelTable, RefusalLimiter, Reloader, ReloaderOptions};
use vigil_shared::manifest::Manifest;
use vigil_shared::messages::CommandResult;

const TOKEN: &str = "faults-token-0123456789";

/// A tmpfs of `size` mounted at `dir`, unmounted on drop. None when this process may not
/// mount (not root, or no CAP_SYS_ADMIN in the container).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    let mut n = 0;
    while let Ok(k) = f.write(&block) {
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    let _ = f.sync_all();
    n
}

/// The spool's disk fills up while the broker is away, then space comes back, then the broker:
/// every result either arrives or is counted in `spool_dropped`, and the spool does not stall.
#[test]
fn mqtt_spool_disk_full_while_offline_every_result_arrives_or_is_counted() {
    const N: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("spoolfs"), "1m") else {
        eprintln!(
            "SKIPPED mqtt_spool_disk_full_while_offline_…: needs root (mount -t tmpfs) for a real \
             ENOSPC; the spool's unit test failed_append_is_cut_back_and_counted covers the \
             cut-back without it"
        );
        return;
    };
    let spool = fs.0.join("spool");
    let result = "vigil/enospc/cam0/result";
    let mut broker = Mosquitto::new(dir.path(), free_port());
    broker.start();
    let sub = Subscriber::start(broker.port, "enospc-sub", result, true);
    assert!(sub.wait_connected(Duration::from_secs(10)));
    drop(sub);
    broker.stop();

    let publisher = Publisher::start(config(broker.port, "enospc", &spool)).unwrap();
    let handle = publisher.handle();
    // Offline: 0..100 go to the spool, 100..200 meet a full disk, 200..300 have room again.
    send(&handle, 0..100, 500.0);
    std::thread::sleep(Duration::from_millis(300));
    let filler = fs.0.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);
    send(&handle, 100..200, 500.0);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_file(&filler).unwrap();
    send(&handle, 200..N, 500.0);
    std::thread::sleep(Duration::from_millis(300));

    broker.start();
    let sub = Subscriber::start(broker.port, "enospc-sub", result, true);
    assert!(
        wait_until(Duration::from_secs(30), || sub.count(result) >= 200),
        "{} results arrived; broker log:\n{}",
        sub.count(result),
        broker.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let fin = publisher.shutdown().unwrap();
    let got: BTreeSet<u64> = result_ids(&sub.on(result)).into_iter().collect();
    eprintln!(
        "disk full: {} of {N} results arrived, {} counted in spool_dropped ({fin:?})",
        got.len(),
        fin.spool_dropped
    );
    assert!(fin.spool_dropped > 0, "the disk never filled: {fin:?}");
    assert_eq!(
        got.len() as u64 + fin.spool_dropped,
        N,
        "every result arrives or is counted: {fin:?}"
    );
    // What was spooled before the disk filled and after it had room again all arrives.
    for i in (0..100).chain(200..N) {
        assert!(
            got.contains(&i),
            "frame {i} was spooled with room to spare and is missing"
        );
    }
    assert_eq!(fin.spooled, 0, "the spool drained: {fin:?}");
}

/// A backend for the reload thread: the command tests never score a frame.
struct NullBackend(Manifest);

impl Backend for NullBackend {
    fn manifest(&self) -> &Manifest {
        &self.0
    }
    fn max_batch(&self) -> usize {
        1
    }
    fn score(
        &mut self,
        _input: &[f32],
        _batch: usize,
        scores: &mut [f32],
        _maps: &mut [f32],
    ) -> Result<(), BackendError> {
        scores.fill(0.0);
        Ok(())
    }
}

fn manifest() -> Manifest {
    serde_json::from_value(serde_json::json!({
        "schema_version": 1,
        "detector": "test",
        "input": {"channels": 1, "height": 8, "width": 8, "range": [-1.0, 1.0]},
        "score": {"name": "mean", "params": {}},
        "normalisation": {"threshold": 0.0, "min": -1.0, "max": 1.0, "quantile": 0.99},
        "training": {"data": "test", "seed": 0, "epochs": 0, "image_size": 8, "latent": 0,
                     "batch": 0, "git_commit": null, "created_at": "2026-01-01T00:00:00Z"},
        "files": []
    }))
    .unwrap()
}

/// Publishes one message (QoS 1) and waits for its PUBACK.
fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let mut o = rumqttc::MqttOptions::new(format!("faults-cmd-{}", rand_id()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (c, mut conn) = rumqttc::Client::new(o, 8);
    c.publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.to_vec())
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
    let _ = conn.recv_timeout(Duration::from_millis(100));
}

fn rand_id() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

static NO_HUP: AtomicBool = AtomicBool::new(false);

/// Reload commands over MQTT that must not be carried out: each is refused with a reason on
/// `…/command/result` (a flood of them only a few times), the running model stays, and a good
/// command afterwards still works.
#[test]
fn mqtt_hostile_and_stale_reload_commands_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The deploy layout (docs/deploy.md): PREFIX/releases/<id>/model, PREFIX/current.
    let root = dir.path().join("prefix");
    let bundle = |p: &Path| {
        std::fs::create_dir_all(p).unwrap();
        std::fs::write(
            p.join("manifest.json"),
            serde_json::to_string(&manifest()).unwrap(),
        )
        .unwrap();
    };
    bundle(&root.join("releases/r1/model"));
    bundle(&root.join("releases/r2/model"));
    bundle(&root.join("outside/model"));
    std::os::unix::fs::symlink("releases/r1", root.join("current")).unwrap();
    // A link planted in a release, out of the tree.
    std::os::unix::fs::symlink(root.join("outside"), root.join("releases/r2/escape")).unwrap();

    let mut broker = Mosquitto::new(dir.path(), free_port());
    broker.start();
    let device = "cmds";
    let cmd_topic = format!("vigil/{device}/command/reload");
    let result_topic = format!("vigil/{device}/command/result");
    // Retained before vigild connects: it reaches vigild only through its subscription.
    let stale = serde_json::json!({"token": TOKEN, "bundle": root.join("releases/r2/model"),
                                   "request_id": "retained"});
    publish(broker.port, &cmd_topic, stale.to_string().as_bytes(), true);
    let sub = Subscriber::start(broker.port, "cmds-sub", &result_topic, false);
    assert!(sub.wait_connected(Duration::from_secs(10)));

    let running = manifest();
    let tel = Arc::new(Telemetry::new(Arc::new(CaptureStats::default())));
    let (swap_tx, swap_rx) = mpsc::sync_channel(4);
    let (_ret_tx, ret_rx) = mpsc::sync_channel::<Box<dyn Backend>>(1);
    let models = ModelTable::new(model_ref(&running));
    let mut reloader = Reloader::spawn(
        ReloaderOptions {
            default_bundle: root.join("current/model"),
            load: Box::new(|dir| {
                let m = Manifest::load(dir).map_err(|e| e.to_string())?;
                Ok(Box::new(NullBackend(m)) as Box<dyn Backend>)
            }),
            report: None,
            models: models.clone(),
            telemetry: tel.clone(),
            sighup: &NO_HUP,
        },
        &running,
        swap_tx,
        ret_rx,
    )
    .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let mut cfg = config(broker.port, device, spool.path());
    cfg.models = Some(models);
    cfg.commands = Some(Commands::new(TOKEN.into(), reloader.requests()));
    let publisher = Publisher::start(cfg).unwrap();
    let h = publisher.handle();
    reloader.set_report(Box::new(move |r| h.report_command(r)));

    let results = || -> Vec<CommandResult> {
        sub.on(&result_topic)
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect()
    };
    let wait_for = |id: &str| -> CommandResult {
        assert!(
            wait_until(Duration::from_secs(10), || results().iter().any(|r| r
                .request_id
                .as_deref()
                == Some(id)
                || (id.is_empty() && r.request_id.is_none()))),
            "no result for {id:?}: {:?}",
            results()
        );
        results()
            .into_iter()
            .find(|r| {
                r.request_id.as_deref() == Some(id) || (id.is_empty() && r.request_id.is_none())
            })
            .unwrap()
    };

    // The retained command: refused (it would run again at every reconnect).
    let r = wait_for("");
    assert!(
        !r.ok && r.error.as_deref().unwrap().contains("retained"),
        "{r:?}"
    );
    // Malformed JSON.
    publish(broker.port, &cmd_topic, b"{\"token\": \"faults-tok", false);
    assert!(wait_until(Duration::from_secs(10), || results().len() >= 2));
    let r = results().pop().unwrap();
    assert!(
        !r.ok && r.error.as_deref().unwrap().contains("not a reload command"),
        "{r:?}"
    );
    // Out of the tree: `..` up to /etc, a symlink out of a release, a relative path.
    for (id, path) in [
        (
            "dotdot",
            root.join("current/model/../../../../../../../../etc")
                .display()
                .to_string(),
        ),
        (
            "symlink",
            root.join("releases/r2/escape/model").display().to_string(),
        ),
        ("relative", "../../etc".to_string()),
        ("beside", root.join("outside/model").display().to_string()),
    ] {
        let c = serde_json::json!({"token": TOKEN, "bundle": path, "request_id": id});
        publish(broker.port, &cmd_topic, c.to_string().as_bytes(), false);
        let r = wait_for(id);
        assert!(!r.ok, "{id}: {r:?}");
        let e = r.error.as_deref().unwrap();
        assert!(e.contains(&path), "{id}: {e}");
        if id != "relative" {
            assert!(
                e.contains("outside the bundles a command may load"),
                "{id}: {e}"
            );
        }
    }
    assert!(
        swap_rx.try_recv().is_err(),
        "a refused bundle reached the scoring loop"
    );

    // A flood of wrong tokens: a few reported per window, the rest only counted.
    let t_flood = Instant::now();
    for i in 0..30 {
        let c = serde_json::json!({"token": "wrong-token-0123456789", "request_id": format!("flood-{i}")});
        publish(broker.port, &cmd_topic, c.to_string().as_bytes(), false);
    }
    let windows =
        2 + (t_flood.elapsed().as_secs_f64() / RefusalLimiter::WINDOW.as_secs_f64()) as usize;
    std::thread::sleep(Duration::from_secs(1));
    let flood = results()
        .iter()
        .filter(|r| {
            r.request_id
                .as_deref()
                .is_some_and(|i| i.starts_with("flood-"))
        })
        .count();
    eprintln!("wrong-token flood: 30 sent, {flood} refusals reported");
    // The flood may straddle a window boundary: at most BURST per window it touches.
    assert!(
        (1..=RefusalLimiter::BURST as usize * windows.min(3)).contains(&flood) && flood < 30,
        "{flood} of 30 refusals reported over {windows} window(s)"
    );

    // A sibling release with the right token still loads.
    let c = serde_json::json!({"token": TOKEN, "bundle": root.join("releases/r2/model"),
                               "request_id": "good"});
    publish(broker.port, &cmd_topic, c.to_string().as_bytes(), false);
    let r = wait_for("good");
    assert!(r.ok, "{r:?}");
    assert!(swap_rx.recv_timeout(Duration::from_secs(5)).is_ok());
    drop(reloader);
    publisher.shutdown().unwrap();
}

/// `openssl` with `args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package `openssl`; .ci/run installs it)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A test CA, a server certificate it signs for the name `localhost` only (no IP address, so
/// connecting by 127.0.0.1 is a name mismatch), and an unrelated second CA. P-256 keys: fast
/// to make, and what rustls with ring verifies.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=vigil {ca}"),
        );
        let mut a = vec![
            "req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt,
        ];
        a.extend(ec);
        a.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &a);
    }
    let mut a = vec![
        "req",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ];
    a.extend(ec);
    openssl(dir, &a);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// The publisher's counters after `secs` of trying `host` with this CA and password.
fn attempt(
    port: u16,
    host: &str,
    ca: &Path,
    password: &str,
    spool: &Path,
    secs: f64,
) -> vigil_shared::messages::PublisherStats {
    let mut cfg = config(port, "tls", spool);
    cfg.mqtt.broker = Some(vigil_appliance::config::BrokerUrl {
        tls: true,
        host: host.into(),
        port,
    });
    cfg.mqtt.tls_ca = Some(ca.to_path_buf());
    cfg.mqtt.username = Some("vigil".into());
    cfg.mqtt.password = Some(password.into());
    cfg.reconnect_min = Duration::from_millis(100);
    cfg.reconnect_max = Duration::from_millis(300);
    cfg.drain_timeout = Duration::from_secs(2);
    let publisher = Publisher::start(cfg).unwrap();
    send(&publisher.handle(), 0..5, 500.0);
    std::thread::sleep(Duration::from_secs_f64(secs));
    publisher.shutdown().unwrap()
}

/// A real mosquitto with a TLS listener and a password file: a wrong CA, a host name the
/// certificate does not carry and a wrong password each fail with the reason in plain words in
/// the stats (`connect_failures`, `last_connect_error`), are retried with backoff, and deliver
/// nothing; the right settings then connect and deliver.
#[test]
fn mqtt_tls_and_login_failures_are_reported_with_the_reason_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_certs(d);
    let o = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(d.join("passwd"))
        .args(["vigil", "right-password"])
        .output()
        .expect("run mosquitto_passwd (Debian package `mosquitto`)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = free_port();
    let listener = format!(
        "listener {port} 127.0.0.1\ncafile {0}/ca.crt\ncertfile {0}/server.crt\n\
         keyfile {0}/server.key\nallow_anonymous false\npassword_file {0}/passwd\n",
        d.display()
    );
    let mut broker = Mosquitto::with_listener(d, port, &listener);
    broker.start();
    let (ca, other) = (d.join("ca.crt"), d.join("other-ca.crt"));
    for (what, host, ca, password, want) in [
        (
            "wrong CA",
            "localhost",
            &other,
            "right-password",
            "not signed by the tls_ca file",
        ),
        (
            "name mismatch",
            "127.0.0.1",
            &ca,
            "right-password",
            "not valid for `127.0.0.1`",
        ),
        (
            "wrong password",
            "localhost",
            &ca,
            "wrong",
            "the broker refused the login",
        ),
    ] {
        let st = attempt(
            port,
            host,
            ca,
            password,
            &d.join(format!("spool-{what}")),
            1.5,
        );
        eprintln!("{what}: {st:?}");
        let reason = st.last_connect_error.as_deref().unwrap_or_default();
        assert!(reason.contains(want), "{what}: {reason:?} lacks {want:?}");
        assert!(st.connect_failures >= 2, "{what}: retried: {st:?}");
        assert_eq!(st.published, 0, "{what}: {st:?}");
        assert_eq!(
            st.spooled, 5,
            "{what}: the results wait in the spool: {st:?}"
        );
    }
    let st = attempt(
        port,
        "localhost",
        &ca,
        "right-password",
        &d.join("spool-ok"),
        1.5,
    );
    eprintln!("right settings: {st:?}");
    assert_eq!(
        (
            st.published,
            st.connect_failures,
            st.last_connect_error.clone()
        ),
        (5, 0, None),
        "{st:?}\nbroker log:\n{}",
        broker.log()
    );
}
