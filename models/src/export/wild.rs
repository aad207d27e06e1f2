//! The "in the wild" detector's score head: λ·L_n + (1 − λ)·L_o with L_n the min-max
//! normalised residual (the range the detector saved with its weights,
//! `stats.residual_range`, as constants) and L_o the latent-norm term, or either alone — the
//! scores of `Wild::infer` in evaluation mode.

use super::graph::GraphBuilder;
use super::{ExportError, Reconstruction, Weights};
use crate::wild::WILD_LAMBDA;
use crate::ModelConfig;

pub fn score(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    r: &Reconstruction,
    score: &str,
) -> Result<String, ExportError> {
    Ok(match score {
        "combined" => {
            // L_n = (Σ|x − x̂| − lo)/(hi − lo) as `Wild::infer` evaluates it: one affine map
            // whose factor and offset are worked out in f64 from the stored f32 range.
            let range = w.get("stats.residual_range", &[2])?;
            let (lo, hi) = (range[0] as f64, range[1] as f64);
            let span = (hi - lo).max(1e-6);
            let rs = b.per_sample_sum(&r.abs);
            let rs = b.scale(&rs, 1.0 / span);
            let l_n = b.offset(&rs, -lo / span);
            let o = r.origin(b, cfg);
            let n = b.scale(&l_n, WILD_LAMBDA);
            let o = b.scale(&o, 1.0 - WILD_LAMBDA);
            b.binary("Add", &n, &o)
        }
        "residual" => b.per_sample_mean(&r.abs),
        "origin" => r.origin(b, cfg),
        other => return Err(ExportError::UnknownScore(other.to_string())),
    })
}
