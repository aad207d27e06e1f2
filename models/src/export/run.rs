//! Running an exported scorer graph with tract on the host: `vigil eval --onnx` measures the
//! exported (f32 or int8) file's accuracy on the same test split as the Candle model, so a
//! quantised graph's cost in AUROC is measured, not assumed.

use std::path::Path;

use tract_onnx::prelude::*;

use super::{ExportError, MAP, SCORE};

type Plan = std::sync::Arc<TypedRunnableModel>;

/// A scorer graph optimised for a fixed batch.
pub struct OnnxScorer {
    plan: Plan,
    batch: usize,
    chw: [usize; 3],
    score_out: usize,
    map_out: usize,
}

fn run_err(path: &Path, e: impl std::fmt::Display) -> ExportError {
    ExportError::Unsupported(format!("{}: {e}", path.display()))
}

impl OnnxScorer {
    pub fn load(path: &Path, chw: [usize; 3], batch: usize) -> Result<Self, ExportError> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| run_err(path, format!("{e:#}")))?;
        let names: Vec<String> = model
            .outputs
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let find = |want: &str| {
            model
                .outputs
                .iter()
                .position(|o| {
                    model.outlet_label(*o) == Some(want) || model.node(o.node).name == want
                })
                .ok_or_else(|| {
                    run_err(
                        path,
                        format!("the graph has no output `{want}` (outputs: {names:?})"),
                    )
                })
        };
        let (score_out, map_out) = (find(SCORE)?, find(MAP)?);
        let plan = model
            .with_input_fact(0, f32::fact([batch, chw[0], chw[1], chw[2]]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| {
                run_err(
                    path,
                    format!(
                        "does not take image f32 [{batch},{},{},{}]: {e:#}",
                        chw[0], chw[1], chw[2]
                    ),
                )
            })?;
        Ok(Self {
            plan,
            batch,
            chw,
            score_out,
            map_out,
        })
    }

    /// Scores and maps (`[n, H, W]` flattened) of `images` (`n` CHW planes back to back, any
    /// `n`): the last partial batch is padded and the padding's outputs dropped.
    pub fn run(&self, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>), ExportError> {
        let frame = self.chw.iter().product::<usize>();
        let plane = self.chw[1] * self.chw[2];
        if !images.len().is_multiple_of(frame) {
            return Err(ExportError::Unsupported(format!(
                "{} values are not whole {}×{}×{} images",
                images.len(),
                self.chw[0],
                self.chw[1],
                self.chw[2]
            )));
        }
        let n = images.len() / frame;
        let (mut scores, mut maps) = (Vec::with_capacity(n), Vec::with_capacity(n * plane));
        let shape = [self.batch, self.chw[0], self.chw[1], self.chw[2]];
        for chunk in images.chunks(self.batch * frame) {
            let k = chunk.len() / frame;
            let mut buf = chunk.to_vec();
            buf.resize(self.batch * frame, 0.0);
            let input = Tensor::from_shape(&shape, &buf)
                .map_err(|e| ExportError::Unsupported(e.to_string()))?;
            let out = self
                .plan
                .run(tvec![input.into()])
                .map_err(|e| ExportError::Unsupported(format!("tract: {e:#}")))?;
            let view = |i: usize| -> Result<Vec<f32>, ExportError> {
                let t = out[i]
                    .try_as_plain_ram()
                    .map_err(|e| ExportError::Unsupported(e.to_string()))?;
                Ok(t.as_slice::<f32>()
                    .map_err(|e| ExportError::Unsupported(e.to_string()))?
                    .to_vec())
            };
            scores.extend_from_slice(&view(self.score_out)?[..k]);
            maps.extend_from_slice(&view(self.map_out)?[..k * plane]);
        }
        Ok((scores, maps))
    }
}
