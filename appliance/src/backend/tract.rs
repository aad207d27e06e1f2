//! The CPU backend: an exported scorer graph (`model.onnx` or `model.int8.onnx`) run by tract.
//!
//! Loading checks the manifest, the file's sha256 and the graph's input and output shapes
//! against the manifest, then optimises one plan per fixed batch size (1 and `max_batch`), so
//! no shape is resolved and no optimisation pass runs while scoring. Each plan keeps its state
//! and its input tensor between calls.
//!
//! A patch-mode bundle (`patch` in the manifest) has a graph that takes `N`² tiles: the backend
//! still takes whole frames at the manifest's input size, cuts each into its `T` tiles
//! (`vigil_shared::tiles`), runs them as one batch of `T` (the only plan), stitches the tile maps
//! into the frame's map and takes the largest tile score, all in buffers allocated at load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::pb;
use tract_onnx::prelude::*;
use vigil_shared::manifest::Manifest;
use vigil_shared::tiles::{max_over_tiles, Tiling};

use super::{Backend, BackendError};

pub const F32_FILE: &str = "model.onnx";
pub const INT8_FILE: &str = "model.int8.onnx";

/// Which exported file to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    Int8,
}

impl Precision {
    pub fn file(self) -> &'static str {
        match self {
            Self::F32 => F32_FILE,
            Self::Int8 => INT8_FILE,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TractOptions {
    pub precision: Precision,
    /// Largest batch `score` takes in one run; a plan is optimised for it and for batch 1.
    pub max_batch: usize,
    /// Threads for tract's matrix products (1: run on the caller's thread only).
    pub threads: usize,
}

impl Default for TractOptions {
    fn default() -> Self {
        Self {
            precision: Precision::F32,
            max_batch: 8,
            threads: 1,
        }
    }
}

/// One optimised plan for a fixed batch size, with its reusable state and input tensor.
struct Plan {
    batch: usize,
    state: TypedSimpleState,
    input: Arc<Tensor>,
}

pub struct TractBackend {
    manifest: Manifest,
    path: PathBuf,
    sha256: String,
    plans: Vec<Plan>,
    max_batch: usize,
    /// A private pool when `threads > 1`, so that two backends in one process do not share
    /// (or fight over) tract's global executor.
    executor: Option<Executor>,
    /// C·H·W of a frame (the manifest's input).
    frame: usize,
    /// H·W of a frame's map.
    plane: usize,
    /// C·H·W and H·W of what the graph takes: the frame, or in patch mode one tile.
    graph_frame: usize,
    graph_plane: usize,
    /// Patch mode; `None` for whole-image bundles.
    tiles: Option<Tiles>,
}

/// Patch mode's tiling and its per-frame buffers (`T` tiles, their scores and maps).
struct Tiles {
    tiling: Tiling,
    input: Vec<f32>,
    scores: Vec<f32>,
    maps: Vec<f32>,
}

fn load_err(path: &Path, msg: impl std::fmt::Display) -> BackendError {
    BackendError::Load(format!("{}: {msg}", path.display()))
}

/// Dims of a graph input or output as written in the file: `None` for a symbolic dimension.
fn proto_dims(v: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use pb::tensor_shape_proto::dimension::Value;
    let pb::type_proto::Value::TensorType(t) = v.r#type.as_ref()?.value.as_ref()?;
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(n)) => Some(*n),
                _ => None,
            })
            .collect(),
    )
}

fn fmt_dims(d: &[Option<i64>]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|x| x.map_or_else(|| "N".to_string(), |n| n.to_string()))
        .collect();
    format!("[{}]", parts.join(","))
}

/// Checks that the graph has `image` → `score`, `anomaly_map` with the geometry `[c, h, w]`
/// the manifest implies (its input, or in patch mode its tile).
fn check_interface(
    path: &Path,
    proto: &pb::ModelProto,
    [c, h, w]: [usize; 3],
) -> Result<(), BackendError> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| load_err(path, "the ONNX file holds no graph"))?;
    let (c, h, w) = (c as i64, h as i64, w as i64);
    let initialisers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initialisers.contains(&i.name.as_str()))
        .collect();
    let expect = |kind: &str, name: &str, list: &[&pb::ValueInfoProto], want: Vec<Option<i64>>| {
        let v = list.iter().find(|v| v.name == name).ok_or_else(|| {
            let names: Vec<&str> = list.iter().map(|v| v.name.as_str()).collect();
            load_err(
                path,
                format!("the graph has no {kind} `{name}` (found {names:?})"),
            )
        })?;
        let found = proto_dims(v).ok_or_else(|| {
            load_err(
                path,
                format!("{kind} `{name}` is not a tensor with a known rank"),
            )
        })?;
        // The batch dimension may be symbolic or fixed; every other dimension must match.
        let ok = found.len() == want.len() && found.iter().zip(&want).skip(1).all(|(f, w)| f == w);
        if !ok {
            return Err(BackendError::Shape(format!(
                "{}: {kind} `{name}` has shape {}, the manifest expects {}",
                path.display(),
                fmt_dims(&found),
                fmt_dims(&want)
            )));
        }
        Ok(())
    };
    expect(
        "input",
        "image",
        &inputs,
        vec![None, Some(c), Some(h), Some(w)],
    )?;
    let outputs: Vec<&pb::ValueInfoProto> = graph.output.iter().collect();
    expect("output", "score", &outputs, vec![None])?;
    expect(
        "output",
        "anomaly_map",
        &outputs,
        vec![None, Some(1), Some(h), Some(w)],
    )?;
    Ok(())
}

impl TractBackend {
    /// Loads `dir/model.onnx` (or `model.int8.onnx`) after checking it against the manifest.
    pub fn load(dir: &Path, opts: &TractOptions) -> Result<Self, BackendError> {
        if opts.max_batch == 0 || opts.threads == 0 {
            return Err(BackendError::Load(format!(
                "max_batch and threads must be at least 1, found {} and {}",
                opts.max_batch, opts.threads
            )));
        }
        let manifest = Manifest::load(dir).map_err(|e| BackendError::Load(e.to_string()))?;
        let name = opts.precision.file();
        let path = manifest.verify_file(dir, name).map_err(|e| {
            BackendError::Load(match e {
                vigil_shared::manifest::BundleError::MissingEntry { .. } => format!(
                    "{}: the manifest lists no {name} (run `vigil export --model {}{}`)",
                    dir.join("manifest.json").display(),
                    dir.display(),
                    if opts.precision == Precision::Int8 {
                        " --quantize int8"
                    } else {
                        ""
                    }
                ),
                other => other.to_string(),
            })
        })?;
        let sha256 = manifest
            .file(name)
            .map(|f| f.sha256.clone())
            .unwrap_or_default();
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_path(&path)
            .map_err(|e| load_err(&path, format!("not a valid ONNX model ({e})")))?;
        let (c, fh, fw) = (
            manifest.input.channels,
            manifest.input.height,
            manifest.input.width,
        );
        let tiling = manifest
            .patch
            .map(|p| Tiling::new(c, fh, fw, p))
            .transpose()
            .map_err(|e| load_err(&dir.join("manifest.json"), e))?;
        let (h, w) = tiling
            .as_ref()
            .map_or((fh, fw), |t| (t.spec().size, t.spec().size));
        check_interface(&path, &proto, [c, h, w])?;
        // Patch mode runs each frame's tiles as one batch: a single plan for `T`.
        let mut sizes = match &tiling {
            Some(t) => vec![t.count()],
            None => vec![1, opts.max_batch],
        };
        sizes.dedup();
        let mut plans = Vec::with_capacity(sizes.len());
        for batch in sizes {
            let plan = onnx
                .model_for_proto_model(&proto)
                .and_then(|m| m.with_input_fact(0, f32::fact([batch, c, h, w]).into()))
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .map_err(|e| {
                    load_err(
                        &path,
                        format!("cannot prepare the graph for batch {batch}: {e:#}"),
                    )
                })?;
            let state = TypedSimpleState::new(&plan)
                .map_err(|e| load_err(&path, format!("cannot create the run state: {e:#}")))?;
            let input = Arc::new(Tensor::zero::<f32>(&[batch, c, h, w]).map_err(|e| {
                load_err(&path, format!("cannot allocate the input tensor: {e:#}"))
            })?);
            plans.push(Plan {
                batch,
                state,
                input,
            });
        }
        Ok(Self {
            manifest,
            path,
            sha256,
            plans,
            max_batch: opts.max_batch,
            executor: (opts.threads > 1).then(|| Executor::multithread(opts.threads)),
            frame: c * fh * fw,
            plane: fh * fw,
            graph_frame: c * h * w,
            graph_plane: h * w,
            tiles: tiling.map(|t| Tiles {
                input: vec![0.0; t.count() * t.tile_len()],
                scores: vec![0.0; t.count()],
                maps: vec![0.0; t.count() * h * w],
                tiling: t,
            }),
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

    /// Runs plan `p` on `n ≤ batch` frames; rows past `n` are zero padding.
    fn run_plan(
        &mut self,
        p: usize,
        input: &[f32],
        n: usize,
        scores: &mut [f32],
        maps: &mut [f32],
    ) -> Result<(), BackendError> {
        let (frame, plane) = (self.graph_frame, self.graph_plane);
        let run_err = |e: TractError| BackendError::Run(format!("tract: {e:#}"));
        let plan = &mut self.plans[p];
        // Reuse the input tensor unless tract still holds the previous run's reference.
        if Arc::get_mut(&mut plan.input).is_none() {
            let shape = plan.input.shape().to_vec();
            plan.input = Arc::new(Tensor::zero::<f32>(&shape).map_err(run_err)?);
        }
        {
            let t = Arc::get_mut(&mut plan.input).expect("exclusive: checked or fresh");
            let mut view = t.try_as_plain_ram_mut().map_err(run_err)?;
            let dst = view.as_slice_mut::<f32>().map_err(run_err)?;
            dst[..n * frame].copy_from_slice(&input[..n * frame]);
            dst[n * frame..].fill(0.0);
        }
        let inputs = tvec![TValue::from_const(plan.input.clone())];
        let out = match &self.executor {
            Some(ex) => multithread_tract_scope(ex.clone(), || plan.state.run(inputs)),
            None => plan.state.run(inputs),
        }
        .map_err(run_err)?;
        let (sv, mv) = (
            out[0].try_as_plain_ram().map_err(run_err)?,
            out[1].try_as_plain_ram().map_err(run_err)?,
        );
        let s = sv.as_slice::<f32>().map_err(run_err)?;
        let m = mv.as_slice::<f32>().map_err(run_err)?;
        scores[..n].copy_from_slice(&s[..n]);
        maps[..n * plane].copy_from_slice(&m[..n * plane]);
        Ok(())
    }
}

impl TractBackend {
    /// Patch mode: each of the `batch` frames cut into its tiles, run as one batch of `T`,
    /// stitched into its map; its score is the largest tile score. No allocation.
    fn score_tiled(
        &mut self,
        tiles: &mut Tiles,
        input: &[f32],
        batch: usize,
        scores: &mut [f32],
        maps: &mut [f32],
    ) -> Result<(), BackendError> {
        let (frame, plane, count) = (self.frame, self.plane, tiles.tiling.count());
        let shape = |e: vigil_shared::tiles::TileError| BackendError::Shape(e.to_string());
        for i in 0..batch {
            tiles
                .tiling
                .cut(&input[i * frame..(i + 1) * frame], &mut tiles.input)
                .map_err(shape)?;
            self.run_plan(0, &tiles.input, count, &mut tiles.scores, &mut tiles.maps)?;
            let map = &mut maps[i * plane..(i + 1) * plane];
            tiles.tiling.stitch(&tiles.maps, 1, map).map_err(shape)?;
            // Per-tile scores; a score that reduces the map itself would reduce `map` here.
            scores[i] = max_over_tiles(&tiles.scores);
        }
        Ok(())
    }
}

impl Backend for TractBackend {
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
        let (c, h, w) = (
            self.manifest.input.channels,
            self.manifest.input.height,
            self.manifest.input.width,
        );
        if batch == 0 || batch > self.max_batch {
            return Err(BackendError::Shape(format!(
                "batch {batch} is out of range 1..={} for {}",
                self.max_batch,
                self.path.display()
            )));
        }
        if input.len() != batch * self.frame {
            return Err(BackendError::Shape(format!(
                "{}: input holds {} values, expected {batch}×{c}×{h}×{w} = {} for shape [{batch},{c},{h},{w}]",
                self.path.display(),
                input.len(),
                batch * self.frame
            )));
        }
        if scores.len() != batch || maps.len() != batch * self.plane {
            return Err(BackendError::Shape(format!(
                "{}: output buffers hold {} scores and {} map values, expected {batch} and {}",
                self.path.display(),
                scores.len(),
                maps.len(),
                batch * self.plane
            )));
        }
        if let Some(mut tiles) = self.tiles.take() {
            let r = self.score_tiled(&mut tiles, input, batch, scores, maps);
            // Put the buffers back before any error returns: the next frame needs them.
            self.tiles = Some(tiles);
            return r;
        }
        // Exact plans first; any other size is padded into the max-batch plan (one run beats
        // `batch` single-frame runs on throughput once the batch is at least half full) or run
        // frame by frame when it is small.
        let big = self.plans.len() - 1;
        if let Some(p) = self.plans.iter().position(|p| p.batch == batch) {
            return self.run_plan(p, input, batch, scores, maps);
        }
        if 2 * batch >= self.max_batch {
            return self.run_plan(big, input, batch, scores, maps);
        }
        for i in 0..batch {
            self.run_plan(
                0,
                &input[i * self.frame..(i + 1) * self.frame],
                1,
                &mut scores[i..i + 1],
                &mut maps[i * self.plane..(i + 1) * self.plane],
            )?;
        }
        Ok(())
    }
}
