//! The onnxruntime backend (cargo feature `ort`): the bundle's exported graph run by a
//! libonnxruntime that is loaded at run time, on the CPU or on a GPU/NPU execution provider.
//!
//! Nothing of onnxruntime is linked or downloaded at build time: the library is `dlopen`ed from
//! `ort_library` (config or `--ort-library`), else `ORT_DYLIB_PATH`, else `libonnxruntime.so` on
//! the loader's search path. PyPI's `onnxruntime` wheel ships one
//! (`onnxruntime/capi/libonnxruntime.so.<version>`); `onnxruntime-gpu` adds the CUDA and
//! TensorRT providers. Loading checks the bundle exactly as the tract backend does (manifest,
//! sha256, graph interface). One session serves every batch size (the graph's batch dimension
//! is symbolic); the batch-1 and max-batch runs write into output tensors allocated once at
//! load, and the input is passed as a view of the caller's buffer, without a copy. A patch
//! bundle is tiled as tract tiles it (`super::patch`): one run of `T` tiles per frame, into
//! outputs allocated for `T`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::memory::Allocator;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::{Tensor, TensorRef};
use vigil_shared::manifest::Manifest;

use super::bundle::{check_file, CheckedFile};
use super::patch::Tiles;
use super::tract::Precision;
use super::{check_call, load_err, Backend, BackendError, Ep};

/// The onnxruntime version this crate's `ort` (2.0.0-rc.15) is written for, and the one the
/// tests install from PyPI (tests/support/ort-venv.sh). Older libraries from 1.17 on load too.
pub const ORT_VERSION: &str = "1.31.1";
/// What is `dlopen`ed when neither `ort_library` nor `ORT_DYLIB_PATH` names a file.
pub const DEFAULT_LIBRARY: &str = "libonnxruntime.so";

#[derive(Clone, Debug)]
pub struct OrtOptions {
    pub precision: Precision,
    /// Largest batch `score` takes in one run.
    pub max_batch: usize,
    /// onnxruntime's intra-op threads (1: the caller's thread only).
    pub threads: usize,
    pub ep: Ep,
    /// libonnxruntime to load; None: `ORT_DYLIB_PATH`, else [`DEFAULT_LIBRARY`].
    pub library: Option<PathBuf>,
}

impl Default for OrtOptions {
    fn default() -> Self {
        Self {
            precision: Precision::F32,
            max_batch: 8,
            threads: 1,
            ep: Ep::Cpu,
            library: None,
        }
    }
}

/// The library `configured` (or `ORT_DYLIB_PATH`, or the default name) resolves to.
pub fn library_path(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("ORT_DYLIB_PATH")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LIBRARY))
}

fn install_hint() -> String {
    format!(
        "install onnxruntime (`pip install onnxruntime=={ORT_VERSION}`, or onnxruntime-gpu for the \
         CUDA and TensorRT providers) and point `ort_library` (--ort-library, or ORT_DYLIB_PATH) \
         at its onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}"
    )
}

/// The one onnxruntime environment of the process (onnxruntime allows one) and the library
/// it came from: a later load that names another library is refused instead of silently
/// running the first one.
static RUNTIME: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

fn environment(library: &Path) -> Result<Environment, BackendError> {
    // A bare name is searched for by the loader (LD_LIBRARY_PATH, ld.so.cache); a path must exist.
    let is_path = library.components().count() > 1;
    if is_path && !library.is_file() {
        return Err(BackendError::Load(format!(
            "the onnxruntime library {} does not exist: {}",
            library.display(),
            install_hint()
        )));
    }
    let mut rt = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((loaded, env)) = rt.as_ref() {
        if loaded != library {
            return Err(BackendError::Load(format!(
                "onnxruntime is already loaded from {} in this process; it cannot also load {}",
                loaded.display(),
                library.display()
            )));
        }
        return Ok(env.clone());
    }
    let builder = ort::init_from(library).map_err(|e| {
        BackendError::Load(format!(
            "cannot load the onnxruntime library {} ({e}): {}",
            library.display(),
            install_hint()
        ))
    })?;
    let env = builder.with_name("vigild").build().map_err(|e| {
        BackendError::Load(format!(
            "{}: cannot create the onnxruntime environment: {e}",
            library.display()
        ))
    })?;
    *rt = Some((library.to_path_buf(), env.clone()));
    Ok(env)
}

/// A session for `file` on `ep` (None: the CPU provider only). A provider that cannot be
/// registered (not in this build of onnxruntime, no device, missing CUDA libraries) is an error
/// here, so that the caller can fall back and say why.
fn session(env: &Environment, file: &Path, ep: Ep, threads: usize) -> Result<Session, ort::Error> {
    let mut b = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(threads)?
        .with_inter_threads(1)?;
    let providers = match ep {
        Ep::Cpu => vec![],
        Ep::Cuda => vec![ort::ep::CUDA::default().build().error_on_failure()],
        // Nodes TensorRT does not take run on CUDA rather than the CPU; engines are cached next
        // to the model, since building one takes tens of seconds at every start otherwise.
        Ep::TensorRt => {
            let cache = file
                .parent()
                .unwrap_or(Path::new("."))
                .join("trt-cache")
                .display()
                .to_string();
            vec![
                ort::ep::TensorRT::default()
                    .with_engine_cache(true)
                    .with_engine_cache_path(cache)
                    .build()
                    .error_on_failure(),
                ort::ep::CUDA::default().build().error_on_failure(),
            ]
        }
        Ep::OpenVino => vec![ort::ep::OpenVINO::default().build().error_on_failure()],
    };
    if !providers.is_empty() {
        b = b.with_execution_providers(providers)?;
    }
    b.commit_from_file(file)
}

/// Run options whose outputs are written into tensors allocated once, for one batch size.
struct Plan {
    batch: usize,
    options: RunOptions<HasSelectedOutputs>,
}

pub struct OrtBackend {
    manifest: Manifest,
    path: PathBuf,
    sha256: String,
    library: PathBuf,
    session: Session,
    plans: Vec<Plan>,
    max_batch: usize,
    /// The provider asked for, and the one running (CPU after a fallback).
    requested: Ep,
    ep: Ep,
    /// Why the requested provider is not the one running.
    fallback: Option<String>,
    /// `[C, H, W]` the graph takes: the frame, or in patch mode one tile.
    graph: [usize; 3],
    /// Patch mode; `None` for whole-image bundles.
    tiles: Option<Tiles>,
}

/// A session on `ep`, or on the CPU with the reason when `ep` cannot run here.
fn session_or_cpu(
    env: &Environment,
    path: &Path,
    ep: Ep,
    threads: usize,
) -> Result<(Session, Ep, Option<String>), BackendError> {
    match session(env, path, ep, threads) {
        Ok(s) => Ok((s, ep, None)),
        Err(e) if ep != Ep::Cpu => {
            let why = format!("{ep} provider unavailable: {e}");
            let s = session(env, path, Ep::Cpu, threads)
                .map_err(|e| load_err(path, format!("onnxruntime: {e}")))?;
            Ok((s, Ep::Cpu, Some(why)))
        }
        Err(e) => Err(load_err(path, format!("onnxruntime: {e}"))),
    }
}

/// Run options with preallocated outputs for each batch size in `sizes`, on graph `[c, h, w]`.
fn plans(path: &Path, sizes: &[usize], [_, h, w]: [usize; 3]) -> Result<Vec<Plan>, BackendError> {
    let alloc = Allocator::default();
    let tensor_err = |e: ort::Error| load_err(path, format!("cannot allocate the outputs: {e}"));
    let mut plans = Vec::with_capacity(sizes.len());
    for &batch in sizes {
        let score = Tensor::<f32>::new(&alloc, [batch]).map_err(tensor_err)?;
        let map = Tensor::<f32>::new(&alloc, [batch, 1, h, w]).map_err(tensor_err)?;
        let options = RunOptions::new()
            .map_err(|e| load_err(path, format!("onnxruntime run options: {e}")))?
            .with_outputs(
                OutputSelector::no_default()
                    .with("score")
                    .with("anomaly_map")
                    .preallocate("score", score)
                    .preallocate("anomaly_map", map),
            );
        plans.push(Plan { batch, options });
    }
    Ok(plans)
}

impl OrtBackend {
    /// Loads `dir/model.onnx` (or `model.int8.onnx`) into onnxruntime after checking it
    /// against the manifest. If `opts.ep` cannot run here the session is built for the CPU
    /// instead, and [`OrtBackend::fallback`] says why.
    pub fn load(dir: &Path, opts: &OrtOptions) -> Result<Self, BackendError> {
        if opts.max_batch == 0 || opts.threads == 0 {
            return Err(BackendError::Load(format!(
                "max_batch and threads must be at least 1, found {} and {}",
                opts.max_batch, opts.threads
            )));
        }
        let library = library_path(opts.library.as_deref());
        let env = environment(&library)?;
        let checked = check_file(dir, opts.precision)?;
        let sizes = checked.batch_sizes(opts.max_batch);
        let CheckedFile {
            manifest,
            path,
            sha256,
            tiling,
            graph,
            ..
        } = checked;
        let (session, ep, fallback) = session_or_cpu(&env, &path, opts.ep, opts.threads)?;
        let plans = plans(&path, &sizes, graph)?;
        Ok(Self {
            manifest,
            path,
            sha256,
            library,
            session,
            plans,
            max_batch: opts.max_batch,
            requested: opts.ep,
            ep,
            fallback,
            graph,
            tiles: tiling.map(Tiles::new),
        })
    }

    /// The file being run.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its sha256, as checked at load.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The libonnxruntime in use.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The execution provider that runs the graph.
    pub fn ep(&self) -> Ep {
        self.ep
    }

    /// The provider that was asked for.
    pub fn requested_ep(&self) -> Ep {
        self.requested
    }

    /// Why the requested provider is not running (None: it is).
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Runs the graph on `n` of its inputs (frames, or one frame's tiles) in `input`.
    fn run_graph(
        &mut self,
        input: &[f32],
        n: usize,
        scores: &mut [f32],
        maps: &mut [f32],
    ) -> Result<(), BackendError> {
        let [c, h, w] = self.graph;
        let run_err = |e: ort::Error| BackendError::Run(format!("onnxruntime: {e}"));
        let x = TensorRef::from_array_view(([n, c, h, w], input)).map_err(run_err)?;
        // Batch sizes without a plan (between 1 and max_batch) get outputs onnxruntime
        // allocates from its arena; the symbolic batch dimension takes any size, no padding.
        let outputs = match self.plans.iter().find(|p| p.batch == n) {
            Some(p) => self
                .session
                .run_with_options(ort::inputs!["image" => x], &p.options),
            None => self.session.run(ort::inputs!["image" => x]),
        }
        .map_err(run_err)?;
        let read = |name: &str, dst: &mut [f32]| -> Result<(), BackendError> {
            let v = outputs
                .get(name)
                .ok_or_else(|| BackendError::Run(format!("onnxruntime returned no `{name}`")))?;
            let (_, src) = v.try_extract_tensor::<f32>().map_err(run_err)?;
            if src.len() != dst.len() {
                return Err(BackendError::Shape(format!(
                    "{}: `{name}` holds {} values for a run of {n}, expected {}",
                    self.path.display(),
                    src.len(),
                    dst.len()
                )));
            }
            dst.copy_from_slice(src);
            Ok(())
        };
        read("score", scores)?;
        read("anomaly_map", maps)?;
        Ok(())
    }
}

impl Backend for OrtBackend {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn score(
        &mut self,
        input: &[f32],
        batch: usize,
        scores: &mut [f32],
        maps: &mut [f32],
    ) -> Result<(), BackendError> {
        check_call(
            &self.path,
            self.max_batch,
            &self.manifest.input,
            batch,
            input,
            scores,
            maps,
        )?;
        if let Some(mut tiles) = self.tiles.take() {
            let count = tiles.count();
            let r = tiles.score(input, batch, scores, maps, |x, s, m| {
                self.run_graph(x, count, s, m)
            });
            // Put the buffers back before any error returns: the next frame needs them.
            self.tiles = Some(tiles);
            return r;
        }
        self.run_graph(input, batch, scores, maps)
    }
}
