//! Hot model reload: a background thread loads, verifies, optimises and warms a new bundle,
//! then hands the ready backend to the scoring loop, which swaps it in between two frames.
//!
//! The scoring thread only does a non-blocking `try_recv` per frame and a pointer swap when a
//! backend is ready; the old backend goes back to this thread to be dropped, so neither the
//! load nor the free happens on the per-frame path. Requests come from SIGHUP (the configured
//! bundle directory, re-read) and from the MQTT command topic (publisher). A bundle whose
//! checksums, input shape or graph are wrong is refused and the old model keeps running; every
//! outcome is reported (stderr, counters, `…/command/result`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use vigil_shared::manifest::{Manifest, Normalisation};
use vigil_shared::messages::{self, CommandResult, ModelRef};

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
        let dir = req
            .bundle
            .clone()
            .unwrap_or_else(|| self.opts.default_bundle.clone());
        let t0 = Instant::now();
        let outcome = self.prepare(&dir);
        let tel = &self.opts.telemetry;
        let (ok, error) = match outcome {
            Ok(swap) => {
                let gen = swap.gen;
                // Blocks only until the scoring loop takes the previous swap (capacity 1).
                if self.swaps.send(swap).is_err() {
                    (false, Some("the scoring loop has stopped".to_string()))
                } else {
                    let m = self.opts.models.get(gen);
                    eprintln!(
                        "vigild: reload ({}): {} ready in {:.0} ms (sha256 {}), swapping in at the next frame",
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
            eprintln!(
                "vigild: reload ({}) of {} refused, the running model stays: {e}",
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
        let dir = tempfile::tempdir().unwrap();
        let tel = Arc::new(Telemetry::new(Arc::new(CaptureStats::default())));
        let (swap_tx, swap_rx) = mpsc::sync_channel(1);
        let (_ret_tx, ret_rx) = mpsc::sync_channel(1);
        let results = Arc::new(Mutex::new(Vec::new()));
        let r2 = results.clone();
        let running = manifest(1, 8);
        let models = ModelTable::new(model_ref(&running));
        let rl = Reloader::spawn(
            ReloaderOptions {
                default_bundle: dir.path().join("nope"),
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
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(
            other.join("manifest.json"),
            serde_json::to_string(&manifest(1, 16)).unwrap(),
        )
        .unwrap();
        // The right input size, but model.onnx is not the file the manifest's sha256 names.
        let tampered = dir.path().join("tampered");
        std::fs::create_dir(&tampered).unwrap();
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
        for b in [dir.path().join("nope"), other, tampered] {
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
}
