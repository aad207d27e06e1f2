//! The CPU backend: an exported scorer graph (`model.onnx` or `model.int8.onnx`) run by tract.
//!
//! Loading checks the manifest, the file's sha256 and the graph's input and output shapes
//! against the manifest, then optimises one plan per fixed batch size (1 and `max_batch`), so
//! no shape is resolved and no optimisation pass runs while scoring. Each plan keeps its state
//! and its input tensor between calls.
//!
//! A patch-mode bundle (`patch` in the manifest) runs each frame's tiles as one batch of `T`,
//! the only plan; cutting and stitching are shared with the other engines (`super::patch`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::prelude::*;
use vigil_shared::manifest::Manifest;

use super::bundle::{check_file, CheckedFile};
use super::patch::Tiles;
use super::{check_call, load_err, Backend, BackendError};

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

impl TractBackend {
    /// Loads `dir/model.onnx` (or `model.int8.onnx`) after checking it against the manifest.
    pub fn load(dir: &Path, opts: &TractOptions) -> Result<Self, BackendError> {
        if opts.max_batch == 0 || opts.threads == 0 {
            return Err(BackendError::Load(format!(
                "max_batch and threads must be at least 1, found {} and {}",
                opts.max_batch, opts.threads
            )));
        }
        let checked = check_file(dir, opts.precision)?;
        let sizes = checked.batch_sizes(opts.max_batch);
        let CheckedFile {
            manifest,
            path,
            sha256,
            proto,
            tiling,
            graph: [c, h, w],
        } = checked;
        let onnx = tract_onnx::onnx();
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
        let i = &manifest.input;
        let (frame, plane) = (i.channels * i.height * i.width, i.height * i.width);
        Ok(Self {
            path,
            sha256,
            plans,
            max_batch: opts.max_batch,
            executor: (opts.threads > 1).then(|| Executor::multithread(opts.threads)),
            frame,
            plane,
            graph_frame: c * h * w,
            graph_plane: h * w,
            tiles: tiling.map(Tiles::new),
            manifest,
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
                self.run_plan(0, x, count, s, m)
            });
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
