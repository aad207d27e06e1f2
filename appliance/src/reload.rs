//! Hot model reload: a background thread loads, verifies, optimises and warms a new bundle,
//! then hands the ready backend to the scoring loop, which swaps it in between two frames.
//!
//! The scoring thread only does a non-blocking `try_recv` per frame and a pointer swap when a
//! backend is ready; the old backend goes back to this thread to be dropped, so neither the
//! load nor the free happens on the per-frame path. Requests come from SIGHUP (the configured
//! bundle directory, re-read) and from the MQTT command topic (publisher). A bundle whose
//! checksums, input shape or graph are wrong is refused and the old model keeps running; every
//! outcome is reported (stderr, counters, `…/command/result`).
//!
//! Commands are untrusted input until proven otherwise: [`parse_command`] ignores retained
//! messages (a retained command would run again at every reconnect) and checks the token;
//! [`allowed_bundle`] canonicalises the requested `bundle` and accepts only the configured model
//! directory or another release's model beside it (`PREFIX/releases/<id>/model`, the deploy
//! layout); a panic while loading is caught and reported as a refusal; and refusals of
//! unauthenticated messages are rate-limited ([`RefusalLimiter`]) so that a flood costs a few
//! log lines.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use vigil_shared::manifest::{Manifest, Normalisation};
use vigil_shared::messages::{self, CommandResult, ModelRef, ReloadCommand};

use crate::backend::Backend;
use crate::pipeline::{map_scale, Telemetry, WARMUP_RUNS};

/// The models vigild has run, indexed by generation (0 = the one it started with). Results
/// carry only the generation (no allocation on the scoring thread); the publisher looks the
/// [`ModelRef`] up here.
#[derive(Debug)]
pub struct ModelTable(Mutex<Vec<ModelRef>>);

impl ModelTable {
    pub fn new(first: ModelRef) -> Arc<ModelTable> {
        Arc::new(ModelTable(Mutex::new(vec![first])))
    }
    fn push(&self, m: ModelRef) -> u32 {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.push(m);
        (v.len() - 1) as u32
    }
    /// The model of generation `gen` (the newest if out of range).
    pub fn get(&self, gen: u32) -> ModelRef {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.get(gen as usize)
            .or(v.last())
            .cloned()
            .expect("the table always holds the first model")
    }
    pub fn latest(&self) -> ModelRef {
        self.get(u32::MAX)
    }
}

/// Model id and ONNX checksum carried by every result.
pub fn model_ref(m: &Manifest) -> ModelRef {
    let onnx = m.model_file().or(m.files.first());
    ModelRef {
        id: format!(
            "{}-{}x{}-{}",
            m.detector,
            m.input.height,
            m.input.width,
            onnx.map_or("f32", |f| f.precision.as_str())
        ),
        sha256: onnx.map(|f| f.sha256.clone()).unwrap_or_default(),
    }
}

/// A warmed-up backend, ready for the scoring loop.
pub struct Swap {
    pub backend: Box<dyn Backend>,
    /// Index in the [`ModelTable`].
    pub gen: u32,
    pub norm: Normalisation,
    pub map_hi: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Sighup,
    Mqtt,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Sighup => "sighup",
            Trigger::Mqtt => "mqtt",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReloadRequest {
    /// None: the configured bundle directory.
    pub bundle: Option<PathBuf>,
    pub trigger: Trigger,
    pub request_id: Option<String>,
}

/// Opens a backend on a bundle directory (vigild: tract with the configured precision).
pub type LoadFn = Box<dyn Fn(&Path) -> Result<Box<dyn Backend>, String> + Send>;
/// Receives every outcome (vigild: the publisher's `…/command/result`).
pub type ReportFn = Box<dyn Fn(CommandResult) + Send>;

pub struct ReloaderOptions {
    pub default_bundle: PathBuf,
    pub load: LoadFn,
    pub report: Option<ReportFn>,
    pub models: Arc<ModelTable>,
    pub telemetry: Arc<Telemetry>,
    /// Set by the SIGHUP handler; the thread clears it and reloads `default_bundle`.
    pub sighup: &'static AtomicBool,
}

/// The reload thread; stops when dropped.
pub struct Reloader {
    requests: Sender<ReloadRequest>,
    report: Arc<Mutex<Option<ReportFn>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reloader {
    /// Starts the thread. `swaps`/`retired` are the scoring loop's ends from
    /// [`crate::pipeline::Pipeline::reload_channel`]; `running` is the manifest of the model
    /// it started with (a new bundle must take the same input).
    pub fn spawn(
        opts: ReloaderOptions,
        running: &Manifest,
        swaps: SyncSender<Swap>,
        retired: Receiver<Box<dyn Backend>>,
    ) -> std::io::Result<Reloader> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut opts = opts;
        let report = Arc::new(Mutex::new(opts.report.take()));
        let rep = report.clone();
        let (s, input) = (stop.clone(), running.input.clone());
        let thread = std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                let mut r = Worker {
                    opts,
                    report: rep,
                    input,
                    swaps,
                    retired,
                };
                r.run(&rx, &s)
            })?;
        Ok(Reloader {
            requests: tx,
            report,
            stop,
            thread: Some(thread),
        })
    }

    /// Where outcomes go from now on (the publisher, which starts after the reloader because
    /// it needs [`Reloader::requests`]).
    pub fn set_report(&mut self, f: ReportFn) {
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Where reload requests go (the publisher's MQTT command handler).
    pub fn requests(&self) -> Sender<ReloadRequest> {
        self.requests.clone()
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    opts: ReloaderOptions,
    report: Arc<Mutex<Option<ReportFn>>>,
    input: vigil_shared::manifest::InputSpec,
    swaps: SyncSender<Swap>,
    retired: Receiver<Box<dyn Backend>>,
}

impl Worker {
    fn run(&mut self, rx: &Receiver<ReloadRequest>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            // Old backends are freed here, off the scoring thread.
            while let Ok(old) = self.retired.try_recv() {
                drop(old);
            }
            let req = if self.opts.sighup.swap(false, Ordering::SeqCst) {
                Some(ReloadRequest {
                    bundle: None,
                    trigger: Trigger::Sighup,
                    request_id: None,
                })
            } else {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(50));
                        None
                    }
                }
            };
            if let Some(req) = req {
                self.handle(req);
            }
        }
    }

    fn handle(&mut self, req: ReloadRequest) {
        let t0 = Instant::now();
        let (dir, outcome) = match &req.bundle {
            None => (self.opts.default_bundle.clone(), Ok(())),
            Some(b) => match allowed_bundle(&self.opts.default_bundle, b) {
                Ok(c) => (c, Ok(())),
                Err(e) => (b.clone(), Err(e)),
            },
        };
        let outcome = outcome.and_then(|()| {
            // A panic in a loader (tract on a hostile graph, say) must not take the reload
            // thread with it: it becomes a refusal and the running model stays.
            catch_unwind(AssertUnwindSafe(|| self.prepare(&dir)))
                .unwrap_or_else(|p| Err(format!("loading panicked: {}", panic_message(&*p))))
        });
        let tel = &self.opts.telemetry;
        let (ok, error) = match outcome {
            Ok(swap) => {
                let gen = swap.gen;
                // Blocks only until the scoring loop takes the previous swap (capacity 1).
                if self.swaps.send(swap).is_err() {
                    (false, Some("the scoring loop has stopped".to_string()))
                } else {
                    let m = self.opts.models.get(gen);
                    log_info!(
                        "reload ({}): {} ready in {:.0} ms (sha256 {}), swapping in at the next frame",
                        req.trigger.as_str(),
                        dir.display(),
                        t0.elapsed().as_secs_f64() * 1000.0,
                        m.sha256
                    );
                    (true, None)
                }
            }
            Err(e) => (false, Some(e)),
        };
        if let Some(e) = &error {
            tel.reloads_refused.fetch_add(1, Ordering::Relaxed);
            log_warn!(
                "reload ({}) of {} refused, the running model stays: {e}",
                req.trigger.as_str(),
                dir.display()
            );
        }
        if let Some(report) = &*self.report.lock().unwrap_or_else(|p| p.into_inner()) {
            report(CommandResult {
                command: "reload".into(),
                trigger: req.trigger.as_str().into(),
                request_id: req.request_id,
                bundle: dir.display().to_string(),
                ok,
                model: self.opts.models.latest(),
                error,
                at: messages::rfc3339_ms(SystemTime::now()),
            });
        }
    }

    /// Load, verify, optimise and warm up: everything that takes time, off the scoring thread.
    fn prepare(&self, dir: &Path) -> Result<Swap, String> {
        let m = Manifest::load_verified(dir).map_err(|e| e.to_string())?;
        let (a, b) = (&self.input, &m.input);
        if (a.channels, a.height, a.width, a.range) != (b.channels, b.height, b.width, b.range) {
            return Err(format!(
                "{}: input {}×{}×{} in [{}, {}] differs from the running model's {}×{}×{} in [{}, {}] \
                 (the scoring loop's buffers are sized for it): restart vigild to change the input",
                dir.join("manifest.json").display(),
                b.channels, b.height, b.width, b.range[0], b.range[1],
                a.channels, a.height, a.width, a.range[0], a.range[1]
            ));
        }
        let mut backend = (self.opts.load)(dir)?;
        let input = vec![0.0f32; a.channels * a.height * a.width];
        let mut scores = vec![0.0f32; 1];
        let mut map = vec![0.0f32; a.height * a.width];
        for _ in 0..WARMUP_RUNS {
            backend
                .score(&input, 1, &mut scores, &mut map)
                .map_err(|e| format!("warm-up: {e}"))?;
        }
        let gen = self.opts.models.push(model_ref(&m));
        Ok(Swap {
            norm: m.normalisation.clone(),
            map_hi: map_scale(&m),
            backend,
            gen,
        })
    }
}

/// The text of a panic's payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The directory a command's `bundle` may be loaded from, canonicalised (symlinks and `..`
/// resolved, so the load reads what was checked): the configured model directory itself, or,
/// when that is a release's model in the deploy layout (`ROOT/releases/<id>/<name>`, see
/// docs/deploy.md), the same-named directory of another release under the same `releases`.
pub fn allowed_bundle(configured: &Path, requested: &Path) -> Result<PathBuf, String> {
    let want = requested
        .canonicalize()
        .map_err(|e| format!("bundle {}: {e}", requested.display()))?;
    let home = configured.canonicalize().map_err(|e| {
        format!(
            "the configured model directory {}: {e}",
            configured.display()
        )
    })?;
    if want == home {
        return Ok(want);
    }
    let releases = home
        .parent()
        .and_then(Path::parent)
        .filter(|r| r.file_name().is_some_and(|n| n == "releases"));
    let sibling = releases.is_some_and(|root| {
        let release = want.parent();
        want.file_name() == home.file_name()
            && release.and_then(Path::parent) == Some(root)
            // `.incoming-*`: a release still being uploaded and verified.
            && release
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
    });
    if sibling {
        return Ok(want);
    }
    let allowed = match releases {
        Some(root) => format!(
            "the configured model directory {} or another release's {} under {}",
            home.display(),
            home.file_name()
                .map_or("model".into(), |n| n.to_string_lossy()),
            root.display()
        ),
        None => format!("only the configured model directory {}", home.display()),
    };
    Err(format!(
        "bundle {} (resolves to {}) is outside the bundles a command may load: {allowed}",
        requested.display(),
        want.display()
    ))
}

/// A command message that is not carried out (reported on `…/command/result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub request_id: Option<String>,
    pub bundle: String,
    pub msg: String,
}

/// A `…/command/reload` message into a request for the reload thread, or why not. Nothing
/// in `payload` is trusted: any bytes give a request or a refusal, never a panic.
pub fn parse_command(payload: &[u8], retain: bool, token: &str) -> Result<ReloadRequest, Refusal> {
    let refuse = |request_id, bundle, msg: String| Refusal {
        request_id,
        bundle,
        msg,
    };
    if retain {
        return Err(refuse(
            None,
            String::new(),
            "a retained command is ignored (it would run again at every reconnect): publish \
             commands without the retain flag, and clear this one with an empty retained message"
                .into(),
        ));
    }
    let c: ReloadCommand = serde_json::from_slice(payload).map_err(|e| {
        refuse(
            None,
            String::new(),
            format!("not a reload command ({{\"token\", \"bundle\"}} JSON): {e}"),
        )
    })?;
    let bundle = c.bundle.clone().unwrap_or_default();
    if !token_eq(&c.token, token) {
        return Err(refuse(c.request_id, bundle, "wrong token".into()));
    }
    Ok(ReloadRequest {
        bundle: c.bundle.map(PathBuf::from),
        trigger: Trigger::Mqtt,
        request_id: c.request_id,
    })
}

/// Refusals reported, at most [`RefusalLimiter::BURST`] per [`RefusalLimiter::WINDOW`]; the
/// rest are counted and the count goes with the next one reported.
#[derive(Debug, Default)]
pub struct RefusalLimiter {
    window_start: Option<Instant>,
    reported: u32,
    suppressed: u64,
}

impl RefusalLimiter {
    pub const BURST: u32 = 5;
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// Some(refusals suppressed since the last one reported) when this one is to be reported,
    /// None when it is only counted.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.window_start {
            Some(t) if now.saturating_duration_since(t) < Self::WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.reported = 0;
            }
        }
        if self.reported < Self::BURST {
            self.reported += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Token comparison whose time does not depend on where the strings differ (only on length).
pub fn token_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureStats;
    use crate::pipeline::testing::{manifest, MeanBackend};

    static NO_HUP: AtomicBool = AtomicBool::new(false);

    #[test]
    fn token_eq_compares_whole_strings() {
        assert!(token_eq("secret-token", "secret-token"));
        assert!(!token_eq("secret-token", "secret-tokeN"));
        assert!(!token_eq("secret", "secret-token"));
        assert!(!token_eq("", "x"));
    }

    /// A missing bundle, one with another input size and one whose model fails its checksum
    /// are refused and counted; nothing reaches the scoring loop.
    #[test]
    fn bad_bundles_are_refused_and_counted() {
        let tmp = tempfile::tempdir().unwrap();
        // The deploy layout: a command may load other releases' `model` beside the running one.
        let dir = tmp.path().join("releases");
        std::fs::create_dir_all(dir.join("running").join("model")).unwrap();
        let rel = |name: &str| dir.join(name).join("model");
        let tel = Arc::new(Telemetry::new(Arc::new(CaptureStats::default())));
        let (swap_tx, swap_rx) = mpsc::sync_channel(1);
        let (_ret_tx, ret_rx) = mpsc::sync_channel(1);
        let results = Arc::new(Mutex::new(Vec::new()));
        let r2 = results.clone();
        let running = manifest(1, 8);
        let models = ModelTable::new(model_ref(&running));
        let rl = Reloader::spawn(
            ReloaderOptions {
                default_bundle: rel("running"),
                load: Box::new(|_| {
                    Ok(Box::new(MeanBackend {
                        manifest: manifest(1, 8),
                        delay: Duration::ZERO,
                    }) as Box<dyn Backend>)
                }),
                report: Some(Box::new(move |r| r2.lock().unwrap().push(r))),
                models,
                telemetry: tel.clone(),
                sighup: &NO_HUP,
            },
            &running,
            swap_tx,
            ret_rx,
        )
        .unwrap();
        // A bundle of another input size (16×16), with no files to verify.
        let other = rel("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(
            other.join("manifest.json"),
            serde_json::to_string(&manifest(1, 16)).unwrap(),
        )
        .unwrap();
        // The right input size, but model.onnx is not the file the manifest's sha256 names.
        let tampered = rel("tampered");
        std::fs::create_dir_all(&tampered).unwrap();
        let mut m = manifest(1, 8);
        m.files = serde_json::from_value(serde_json::json!([{
            "name": "model.onnx", "sha256": "00".repeat(32), "precision": "f32"
        }]))
        .unwrap();
        std::fs::write(
            tampered.join("manifest.json"),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
        std::fs::write(tampered.join("model.onnx"), b"not the graph").unwrap();
        for b in [rel("nope"), other, tampered] {
            rl.requests()
                .send(ReloadRequest {
                    bundle: Some(b),
                    trigger: Trigger::Mqtt,
                    request_id: Some("r".into()),
                })
                .unwrap();
        }
        let t = Instant::now();
        while results.lock().unwrap().len() < 3 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = results.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|r| !r.ok && r.trigger == "mqtt"));
        assert!(got[0].error.as_deref().unwrap().contains("nope"), "{got:?}");
        assert!(
            got[1].error.as_deref().unwrap().contains("1×16×16"),
            "{got:?}"
        );
        let e = got[2].error.as_deref().unwrap();
        assert!(e.contains("model.onnx") && e.contains("sha256"), "{got:?}");
        assert_eq!(tel.reloads_refused.load(Ordering::Relaxed), 3);
        assert!(swap_rx.try_recv().is_err());
    }

    /// The deploy layout and what a command may load from it.
    #[test]
    fn bundles_outside_the_tree_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for r in ["r1", "r2", ".incoming-r3"] {
            std::fs::create_dir_all(root.join("releases").join(r).join("model")).unwrap();
        }
        std::fs::create_dir_all(root.join("releases/r2/other")).unwrap();
        std::os::unix::fs::symlink("releases/r1", root.join("current")).unwrap();
        // A symlink planted in a release, pointing out of the tree.
        std::fs::create_dir_all(root.join("outside/model")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("releases/r2/escape")).unwrap();
        let configured = root.join("current/model");
        let canon = |p: &str| root.join(p).canonicalize().unwrap();
        for ok in [
            "current/model",
            "releases/r1/model",
            "releases/r2/model",
            "releases/r2/../r2/model",
        ] {
            assert_eq!(
                allowed_bundle(&configured, &root.join(ok)),
                Ok(canon(ok)),
                "{ok}"
            );
        }
        for bad in [
            "releases/r2/escape/model",
            "releases/.incoming-r3/model",
            "releases/r2/other",
            "releases/r2",
            "outside/model",
            "current/model/../../../../../../etc",
            "/etc",
            "releases/r9/model",
        ] {
            let e = allowed_bundle(&configured, &root.join(bad)).unwrap_err();
            assert!(e.contains(bad) && !e.contains('\n'), "{bad}: {e}");
        }
        // Outside a releases tree only the configured directory itself is accepted.
        let e = allowed_bundle(&root.join("outside/model"), &root.join("releases/r1/model"))
            .unwrap_err();
        assert!(e.contains("only the configured model directory"), "{e}");
        // A relative path is resolved (against the working directory) before the check.
        let e = allowed_bundle(&configured, Path::new("../../etc")).unwrap_err();
        assert!(e.contains("../../etc"), "{e}");
    }

    #[test]
    fn commands_are_parsed_and_checked() {
        let tok = "0123456789abcdef";
        let ok = format!(r#"{{"token":"{tok}","bundle":"/b","request_id":"7"}}"#);
        let r = parse_command(ok.as_bytes(), false, tok).unwrap();
        assert_eq!(r.bundle.as_deref(), Some(Path::new("/b")));
        assert_eq!(r.request_id.as_deref(), Some("7"));
        assert_eq!(r.trigger, Trigger::Mqtt);
        let e = parse_command(ok.as_bytes(), true, tok).unwrap_err();
        assert!(e.msg.contains("retained"), "{e:?}");
        let e = parse_command(b"{not json", false, tok).unwrap_err();
        assert!(e.msg.contains("not a reload command"), "{e:?}");
        let e = parse_command(
            br#"{"token":"0123456789abcdeX","request_id":"w"}"#,
            false,
            tok,
        )
        .unwrap_err();
        assert_eq!(
            (e.msg.as_str(), e.request_id.as_deref()),
            ("wrong token", Some("w"))
        );
        for junk in [&b""[..], b"\xff\xfe", b"[]", b"null", br#"{"token":1}"#] {
            assert!(parse_command(junk, false, tok).is_err());
        }
    }

    #[test]
    fn refusals_are_rate_limited() {
        let mut l = RefusalLimiter::default();
        let t = Instant::now();
        let got: Vec<Option<u64>> = (0..8).map(|_| l.admit(t)).collect();
        assert_eq!(
            got,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                None,
                None,
                None
            ]
        );
        // The next window reports again, with the count of what was suppressed.
        assert_eq!(l.admit(t + RefusalLimiter::WINDOW), Some(3));
        assert_eq!(l.admit(t + RefusalLimiter::WINDOW), Some(0));
    }

    /// A loader that panics is a refusal; the thread lives on and the next reload works.
    #[test]
    fn a_panic_while_loading_is_a_refusal() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("model");
        std::fs::create_dir(&bundle).unwrap();
        std::fs::write(
            bundle.join("manifest.json"),
            serde_json::to_string(&manifest(1, 8)).unwrap(),
        )
        .unwrap();
        let tel = Arc::new(Telemetry::new(Arc::new(CaptureStats::default())));
        let (swap_tx, swap_rx) = mpsc::sync_channel(1);
        let (_ret_tx, ret_rx) = mpsc::sync_channel(1);
        let results = Arc::new(Mutex::new(Vec::new()));
        let r2 = results.clone();
        let running = manifest(1, 8);
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c2 = calls.clone();
        let rl = Reloader::spawn(
            ReloaderOptions {
                default_bundle: bundle.clone(),
                load: Box::new(move |_| {
                    if c2.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("hostile graph");
                    }
                    Ok(Box::new(MeanBackend {
                        manifest: manifest(1, 8),
                        delay: Duration::ZERO,
                    }) as Box<dyn Backend>)
                }),
                report: Some(Box::new(move |r| r2.lock().unwrap().push(r))),
                models: ModelTable::new(model_ref(&running)),
                telemetry: tel.clone(),
                sighup: &NO_HUP,
            },
            &running,
            swap_tx,
            ret_rx,
        )
        .unwrap();
        for id in ["boom", "fine"] {
            rl.requests()
                .send(ReloadRequest {
                    bundle: Some(bundle.clone()),
                    trigger: Trigger::Mqtt,
                    request_id: Some(id.into()),
                })
                .unwrap();
        }
        let t = Instant::now();
        while results.lock().unwrap().len() < 2 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let got = results.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(!got[0].ok, "{got:?}");
        let e = got[0].error.as_deref().unwrap();
        assert!(e.contains("panicked") && e.contains("hostile graph"), "{e}");
        assert!(got[1].ok, "{got:?}");
        assert_eq!(tel.reloads_refused.load(Ordering::Relaxed), 1);
        assert!(swap_rx.try_recv().is_ok());
    }
}
