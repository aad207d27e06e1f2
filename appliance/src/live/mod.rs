//! `vigild --http ADDR`: what the camera sees, in a browser. One page (static HTML/JS from
//! the binary, no build step, no CDN) with the newest frame, its heatmap and ROI, the verdict,
//! a rolling score chart and the counters; `/overlay.jpg` (one overlay, `?after=SEQ` waits for
//! a newer one), `/stream.mjpg` (the overlay as MJPEG, for VLC, Home Assistant, Frigate-style
//! tools), `/api/state` (the page's JSON), `/metrics` (Prometheus) and `/healthz`.
//!
//! A thread per connection on std's TcpListener: a handful of viewers, no async runtime.
//! Overlays are rendered on those threads from copies the scoring loop makes only while
//! someone asks ([`ViewTap`]).
//!
//! Access: on a loopback address anyone on this host may look. Elsewhere vigild refuses to
//! start unless a token (`http_token`: `Authorization: Bearer …` or `?token=…`) or the MQTT
//! login (HTTP Basic) is set, and then every route but `/healthz` demands it.

mod metrics;
pub mod render;
mod snapshot;
mod state;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use metrics::ModelInfo;
pub use snapshot::Snapshots;

use crate::pipeline::{Telemetry, ViewTap};
use crate::publish::PublisherHandle;
use crate::reload::ModelTable;

/// The page, served as is.
const PAGE: &str = include_str!("page.html");
/// Connections served at once; more get 503 (each MJPEG viewer holds one).
const MAX_CONNECTIONS: usize = 16;
/// MJPEG frames per second at most.
const STREAM_FPS: f64 = 15.0;
/// JPEG quality of the overlays.
const QUALITY: u8 = 80;

/// Who may see the page.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `Authorization: Bearer <token>` or `?token=<token>`.
    pub token: Option<String>,
    /// The MQTT login as HTTP Basic: the expected `Basic base64(user:password)` header.
    pub basic: Option<String>,
}

impl Access {
    fn open(&self) -> bool {
        self.token.is_none() && self.basic.is_none()
    }

    fn allows(&self, req: &Request) -> bool {
        if self.open() {
            return true;
        }
        let auth = req.authorization.as_deref().unwrap_or("");
        let token_ok = self.token.as_deref().is_some_and(|t| {
            same(auth.strip_prefix("Bearer ").unwrap_or(""), t)
                || req.query("token").is_some_and(|q| same(q, t))
        });
        token_ok || self.basic.as_deref().is_some_and(|b| same(auth, b))
    }

    /// Basic credentials for `user:password`.
    pub fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
    }
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Everything the routes read.
pub struct Sources {
    pub view: Arc<ViewTap>,
    pub telemetry: Arc<Telemetry>,
    pub publisher: Option<PublisherHandle>,
    pub model: ModelInfo,
    /// The models run so far: after a hot reload the page and `/metrics` name the newest.
    pub models: Option<Arc<ModelTable>>,
    pub device: String,
    pub camera: String,
    /// `/healthz` fails when no frame was scored for this long.
    pub stale_after: Duration,
}

impl Sources {
    /// [`Sources::model`] with the id and checksum of the newest model (hot reloads).
    fn model_now(&self) -> ModelInfo {
        let mut m = self.model.clone();
        if let Some(latest) = self.models.as_ref().map(|t| t.latest()) {
            (m.id, m.sha256) = (latest.id, latest.sha256);
        }
        m
    }
}

/// The running server; stops when dropped.
pub struct Live {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Live {
    /// Binds `addr` and serves until dropped.
    pub fn start(addr: SocketAddr, access: Access, src: Sources) -> io::Result<Live> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let shared = Arc::new((access, src, state::Rate::default()));
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || accept_loop(&listener, &shared, &s))?;
        Ok(Live {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Shared = (Access, Sources, state::Rate);

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, stop: &Arc<AtomicBool>) {
    let open = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let (shared, stop, open) = (shared.clone(), stop.clone(), open.clone());
                if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::Relaxed);
                    let _ = respond(&conn, 503, "text/plain", b"too many viewers\n", &[]);
                    continue;
                }
                let spawned =
                    std::thread::Builder::new()
                        .name("http-conn".into())
                        .spawn(move || {
                            let _ = serve(conn, &shared, &stop);
                            open.fetch_sub(1, Ordering::Relaxed);
                        });
                if spawned.is_err() {
                    log_warn!("http: cannot start a connection thread");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                log_warn!("http: accept: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// One request line and the headers we read.
struct Request {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
}

impl Request {
    fn query(&self, key: &str) -> Option<&str> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    fn read(conn: &TcpStream) -> io::Result<Request> {
        let mut r = BufReader::new(io::Read::take(conn, 16 * 1024));
        let mut line = String::new();
        r.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut req = Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            authorization: None,
        };
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") {
                    req.authorization = Some(v.trim().to_string());
                }
            }
        }
        Ok(req)
    }
}

fn respond(
    mut conn: &TcpStream,
    code: u16,
    ctype: &str,
    body: &[u8],
    extra: &[(&str, String)],
) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)
}

fn serve(conn: TcpStream, shared: &Shared, stop: &AtomicBool) -> io::Result<()> {
    let (access, src, rate) = shared;
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let req = Request::read(&conn)?;
    if req.method != "GET" {
        return respond(&conn, 405, "text/plain", b"GET only\n", &[]);
    }
    if req.path == "/healthz" {
        let (code, body) = state::health(src);
        return respond(&conn, code, "text/plain", body.as_bytes(), &[]);
    }
    if !access.allows(&req) {
        let challenge = [("WWW-Authenticate", "Basic realm=\"vigild\"".to_string())];
        return respond(
            &conn,
            401,
            "text/plain",
            b"token or login needed\n",
            &challenge,
        );
    }
    match req.path.as_str() {
        "/" | "/index.html" => {
            respond(&conn, 200, "text/html; charset=utf-8", PAGE.as_bytes(), &[])
        }
        "/api/state" => {
            let body = state::json(src, rate).to_string();
            respond(&conn, 200, "application/json", body.as_bytes(), &[])
        }
        "/metrics" => {
            let stats = src.publisher.as_ref().map(PublisherHandle::stats);
            let body = metrics::render(&src.telemetry, &src.model_now(), stats.as_ref());
            respond(
                &conn,
                200,
                "text/plain; version=0.0.4",
                body.as_bytes(),
                &[],
            )
        }
        "/overlay.jpg" => overlay(&conn, src, req.query("after")),
        "/stream.mjpg" => stream(conn, src, stop),
        _ => respond(&conn, 404, "text/plain", b"not found\n", &[]),
    }
}

/// One overlay newer than `after` (waits up to a second for the loop to score one).
fn overlay(conn: &TcpStream, src: &Sources, after: Option<&str>) -> io::Result<()> {
    let after = after.and_then(|a| a.parse().ok()).unwrap_or(0);
    src.view.want_frames();
    let Some(v) = src.view.take(after, Duration::from_secs(1)) else {
        return respond(
            conn,
            503,
            "text/plain",
            b"no frame scored in the last second\n",
            &[],
        );
    };
    match render::overlay_jpeg(&v, QUALITY) {
        Ok(jpeg) => {
            let headers = [
                ("X-Frame-Seq", v.seq.to_string()),
                ("X-Frame-Id", v.frame_id.to_string()),
                ("X-Anomalous", v.anomalous.to_string()),
            ];
            respond(conn, 200, "image/jpeg", &jpeg, &headers)
        }
        Err(e) => respond(conn, 503, "text/plain", e.to_string().as_bytes(), &[]),
    }
}

/// The overlay as `multipart/x-mixed-replace`, until the viewer leaves.
fn stream(mut conn: TcpStream, src: &Sources, stop: &AtomicBool) -> io::Result<()> {
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\
          Cache-Control: no-store\r\nConnection: close\r\n\r\n",
    )?;
    let (mut seq, period) = (0, Duration::from_secs_f64(1.0 / STREAM_FPS));
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        src.view.want_frames();
        let Some(v) = src.view.take(seq, Duration::from_secs(1)) else {
            continue;
        };
        seq = v.seq;
        let Ok(jpeg) = render::overlay_jpeg(&v, QUALITY) else {
            continue;
        };
        let head = format!(
            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(&jpeg)?;
        conn.write_all(b"\r\n")?;
        if let Some(rest) = period.checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(Access::basic("u", "p"), "Basic dTpw");
    }

    #[test]
    fn access_needs_the_token_or_the_login() {
        let req = |auth: Option<&str>, query: &str| Request {
            method: "GET".into(),
            path: "/".into(),
            query: query.into(),
            authorization: auth.map(String::from),
        };
        let a = Access {
            token: Some("tok-123".into()),
            basic: Some(Access::basic("u", "p")),
        };
        assert!(!a.allows(&req(None, "")));
        assert!(!a.allows(&req(Some("Bearer tok-12"), "")));
        assert!(a.allows(&req(Some("Bearer tok-123"), "")));
        assert!(a.allows(&req(None, "after=3&token=tok-123")));
        assert!(a.allows(&req(Some("Basic dTpw"), "")));
        assert!(!a.allows(&req(Some("Basic dTpx"), "")));
        assert!(Access::default().allows(&req(None, "")));
    }
}
