//! vigild's live view (`--http`), from outside: a running vigild scores synthetic frames at
//! 30 fps with a region of interest, and the test reads every route as a dashboard, a
//! Prometheus server and a browser would:
//! - `/healthz` 200 while frames are scored; `/api/state` with the ROI, model and verdict;
//! - `/overlay.jpg` a JPEG of the frame with the ROI outlined, new images at ≥ 5 per second;
//! - `/stream.mjpg` a multipart stream of JPEGs; `/metrics` accepted by `promtool`;
//! - headless Chromium loads the page, which shows a verdict and the image (screenshot under
//!   target/live-view.png);
//! - off the loopback, vigild refuses to start without a token, and with one asks for it.

mod model_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_tests::workspace_bin;

/// The synthetic source's frames are 128².
const ROI: [usize; 4] = [16, 16, 96, 96];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET over a plain socket: (status, headers, body).
fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head, raw[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        })
        .map(|(_, v)| v.trim())
}

struct Vigild(Child);

impl Drop for Vigild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn vigild(model: &Path, http: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(workspace_bin("vigild"));
    let roi = ROI.map(|v| v.to_string()).join(",");
    c.arg("--model")
        .arg(model)
        .args(["--source", "synthetic", "--fps", "30", "--roi", &roi])
        .args(["--http", http])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

fn wait_healthy(port: u16) {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/healthz").0 == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/healthz never said 200");
}

/// The outline pixel at (x, y) of a decoded overlay is green or red.
fn outline_colour(img: &image::RgbImage, x: u32, y: u32) -> &'static str {
    let p = img.get_pixel(x, y).0.map(i32::from);
    let near = |c: [i32; 3]| (0..3).all(|k| (p[k] - c[k]).abs() < 50);
    if near([40, 200, 80]) {
        "green"
    } else if near([230, 40, 30]) {
        "red"
    } else {
        panic!("({x}, {y}) = {p:?} is not the ROI outline")
    }
}

fn check_routes(port: u16) {
    let (code, _, body) = get(port, "/api/state");
    assert_eq!(code, 200);
    let s: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(s["roi"], serde_json::json!(ROI), "{s}");
    assert_eq!(s["model"]["detector"], "ganomaly");
    let engine = s["model"]["backend"].as_str().unwrap_or_default();
    assert!(engine.starts_with("tract f32"), "the engine line: {s}");
    assert!(s["frames"].as_u64().unwrap() > 0);
    assert!(s["last"]["anomalous"].is_boolean(), "{s}");

    let (code, head, jpeg) = get(port, "/overlay.jpg");
    assert_eq!(
        (code, header(&head, "content-type")),
        (200, Some("image/jpeg"))
    );
    let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .expect("a JPEG")
        .to_rgb8();
    assert_eq!(
        img.dimensions(),
        (128, 128),
        "the whole frame, not just the ROI"
    );
    let verdict = outline_colour(&img, ROI[0] as u32, 60);
    assert_eq!(
        verdict == "red",
        header(&head, "x-anomalous") == Some("true"),
        "outline colour and verdict disagree"
    );

    // The page's way of updating: ask for a newer image than the last, as fast as they come.
    let (start, mut seq, mut images) = (Instant::now(), 0u64, 0);
    while start.elapsed() < Duration::from_secs(3) {
        let (code, head, _) = get(port, &format!("/overlay.jpg?after={seq}"));
        if code == 200 {
            let next: u64 = header(&head, "x-frame-seq").unwrap().parse().unwrap();
            assert!(next > seq, "an image no newer than the last");
            (seq, images) = (next, images + 1);
        }
    }
    let rate = images as f64 / start.elapsed().as_secs_f64();
    eprintln!("live view: {rate:.1} new images per second while vigild scores 30 fps");
    assert!(rate >= 5.0, "{rate:.1} images per second");

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /stream.mjpg HTTP/1.1\r\n\r\n").unwrap();
    let (mut buf, mut chunk, t) = (Vec::new(), [0u8; 65536], Instant::now());
    while t.elapsed() < Duration::from_secs(2) {
        let n = s.read(&mut chunk).unwrap();
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains("multipart/x-mixed-replace; boundary=frame"));
    let parts = text.matches("--frame\r\nContent-Type: image/jpeg").count();
    assert!(parts >= 10, "{parts} MJPEG parts in 2 s");
}

fn check_metrics(port: u16, dir: &Path) {
    let (code, head, body) = get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(header(&head, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(body).unwrap();
    for name in [
        "vigild_frames_total ",
        "vigild_deadline_misses_total ",
        "vigild_inference_seconds_bucket{le=\"+Inf\"} ",
        "vigild_inference_seconds_count ",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    // Every metric the example Grafana dashboard queries is exported.
    let dash = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/grafana-dashboard.json"),
    )
    .unwrap();
    for word in dash.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("vigild_") {
            assert!(
                text.contains(&format!("{word} ")) || text.contains(&format!("{word}{{")),
                "docs/examples/grafana-dashboard.json queries {word}, which /metrics lacks"
            );
        }
    }
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is missing: install Debian's `prometheus` package (.ci/run does)");
    assert!(
        promtool.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
}

/// Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
/// commands on its fd 3, replies on its fd 4, each a JSON text ended by a NUL), in a process
/// group of its own that is killed whole on drop. Real time, not `--virtual-time-budget`: the
/// page always has a request in flight (its overlay long-poll), which virtual time waits on.
struct Browser {
    child: Child,
    commands: std::fs::File,
    replies: std::sync::mpsc::Receiver<serde_json::Value>,
    next_id: u64,
    stderr: std::path::PathBuf,
}

impl Browser {
    fn launch(url: &str, dir: &Path) -> Browser {
        use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let pipe = || {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills two fds we then own.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        let (cmd_r, cmd_w) = pipe();
        let (rep_r, rep_w) = pipe();
        let (cr, rw) = (cmd_r.into_raw_fd(), rep_w.into_raw_fd());
        let stderr = dir.join("chromium.err");
        let mut c = Command::new("chromium");
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
        ])
        // No traffic of its own: this network is closed, and lookups of Google's hosts can hang.
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
        ])
        .args(["--hide-scrollbars", "--window-size=1100,700"])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec. The pipe ends are moved
        // above 10 first so that neither is overwritten by the other's dup2 onto 3 or 4; dup2
        // clears close-on-exec on its copy.
        unsafe {
            c.pre_exec(move || {
                let a = libc::fcntl(cr, libc::F_DUPFD_CLOEXEC, 10);
                let b = libc::fcntl(rw, libc::F_DUPFD_CLOEXEC, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c
            .spawn()
            .expect("chromium is missing: install Debian's `chromium` package (.ci/run does)");
        // SAFETY: the parent's copies of the child's ends, closed here.
        unsafe {
            libc::close(cr);
            libc::close(rw);
        }
        let (tx, replies) = std::sync::mpsc::channel();
        let mut r = std::fs::File::from(rep_r);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n @ 1..) = r.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&msg[..end]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Browser {
            child,
            commands: std::fs::File::from(cmd_w),
            replies,
            next_id: 1,
            stderr,
        }
    }

    /// One command (to a page when `session` is given); its `result`, or a panic naming the
    /// method with what Chromium printed if no reply comes within 30 s.
    fn call(
        &mut self,
        method: &str,
        params: serde_json::Value,
        session: Option<&str>,
    ) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
                Ok(_) => {} // an event, or another command's reply
                Err(_) => panic!(
                    "chromium did not answer {method} within 30 s; it printed:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                ),
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the group this child leads; no memory is touched.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Standard base64 (Chromium's screenshots), padding and all.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    digits
        .chunks(4)
        .flat_map(|q| {
            let n = q
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
            let bytes = n.to_be_bytes();
            bytes[1..q.len()].to_vec()
        })
        .collect()
}

/// Headless Chromium on the page: within 30 s of real time the page shows a verdict and an
/// image has loaded; its screenshot is saved.
fn check_browser(port: u16, dir: &Path) {
    let shot = workspace_bin("vigild")
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("live-view.png");
    let mut b = Browser::launch(&format!("http://127.0.0.1:{port}/"), dir);
    let targets = b.call("Target.getTargets", serde_json::json!({}), None);
    let page = targets["targetInfos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "page")
        .unwrap_or_else(|| panic!("no page among {targets}"))["targetId"]
        .clone();
    let attached = b.call(
        "Target.attachToTarget",
        serde_json::json!({"targetId": page, "flatten": true}),
        None,
    );
    let session = attached["sessionId"].as_str().unwrap().to_string();
    // The viewport itself (--window-size counts the window's frame too).
    b.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 1100, "height": 700, "deviceScaleFactor": 1, "mobile": false}),
        Some(&session),
    );
    let probe = "JSON.stringify([document.getElementById('verdict')?.textContent ?? '', \
                 document.getElementById('live')?.dataset.loaded ?? ''])";
    let end = Instant::now() + Duration::from_secs(30);
    let (verdict, loaded) = loop {
        let r = b.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": probe, "returnByValue": true}),
            Some(&session),
        );
        let seen: (String, String) =
            serde_json::from_str(r["result"]["value"].as_str().unwrap_or("[\"\",\"\"]")).unwrap();
        let shown = (seen.0 == "OK" || seen.0 == "ANOMALY") && seen.1 == "1";
        if shown || Instant::now() > end {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        verdict == "OK" || verdict == "ANOMALY",
        "the page shows no verdict after 30 s ({verdict:?})"
    );
    assert_eq!(loaded, "1", "the image never loaded");
    // A moment for the chart and counters to fill, then the picture a user would see.
    std::thread::sleep(Duration::from_secs(2));
    let png = b.call(
        "Page.captureScreenshot",
        serde_json::json!({"format": "png"}),
        Some(&session),
    );
    std::fs::write(&shot, base64_decode(png["data"].as_str().unwrap())).unwrap();
    let png = image::open(&shot).unwrap();
    assert_eq!((png.width(), png.height()), (1100, 700));
    eprintln!(
        "live view: the page says {verdict}; screenshot {}",
        shot.display()
    );
}

#[test]
fn live_view_serves_the_page_overlays_stream_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_support::small_model(dir.path());
    let port = free_port();
    // With its embedded broker, so the publisher's figures are in /metrics too.
    let broker = format!("mqtt://127.0.0.1:{}", free_port());
    let spool = dir.path().join("spool");
    let with_broker = [
        "--embedded-broker",
        "--broker",
        &broker,
        "--spool-dir",
        spool.to_str().unwrap(),
    ];
    let _v = Vigild(
        vigild(&model, &format!("127.0.0.1:{port}"), &with_broker)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_healthy(port);
    let (_, _, body) = get(port, "/healthz");
    assert!(String::from_utf8_lossy(&body).starts_with("ok: "));
    check_routes(port);
    check_metrics(port, dir.path());
    check_browser(port, dir.path());
    assert_eq!(get(port, "/nope").0, 404);
}

#[test]
fn live_view_off_the_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_support::small_model(dir.path());
    let port = free_port();
    let open = vigild(&model, &format!("0.0.0.0:{port}"), &["--frames", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&open.stderr);
    assert!(!open.status.success(), "started exposed without a token");
    assert!(err.contains("http") && err.contains("http_token"), "{err}");

    let token = "live-token-0123456789";
    let _v = Vigild(
        vigild(&model, &format!("0.0.0.0:{port}"), &[])
            .env("VIGILD_HTTP_TOKEN", token)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_healthy(port);
    let (code, head, _) = get(port, "/api/state");
    assert_eq!(code, 401);
    assert!(header(&head, "www-authenticate").is_some());
    assert_eq!(get(port, "/metrics").0, 401);
    assert_eq!(get(port, &format!("/api/state?token={token}")).0, 200);
    assert_eq!(get(port, &format!("/?token={token}")).0, 200);
}
