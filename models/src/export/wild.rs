//! The "in the wild" detector's scoring graph: E → G, the min-max normalised residual L_n (the
//! range the detector saved with its weights, `stats.residual_range`, as constants), the
//! latent-norm term L_o, the chosen score and the smoothed residual map — `Wild::infer` in
//! evaluation mode.

use super::graph::GraphBuilder;
use super::layers::encode_decode;
use super::{ExportError, ScorerIo, Weights};
use crate::wild::WILD_LAMBDA;
use crate::ModelConfig;

pub fn build(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    score: &str,
    io: &ScorerIo,
) -> Result<(String, String), ExportError> {
    let x = io.image.as_str();
    let (z, rec) = encode_decode(b, w, cfg, x, "e", "g")?;
    let diff = b.binary("Sub", x, &rec);
    let abs = b.unary("Abs", &diff);
    // L_o = −‖E(x)‖₂/√N_z.
    let l_o = |b: &mut GraphBuilder| {
        let sq = b.binary("Mul", &z, &z);
        let ss = b.per_sample_sum(&sq);
        let norm = b.unary("Sqrt", &ss);
        b.scale(&norm, -1.0 / (cfg.latent as f64).sqrt())
    };
    let score = match score {
        "combined" => {
            // L_n = (r − lo)/(hi − lo) as `Wild::infer` evaluates it: one affine map whose
            // factor and offset are worked out in f64 from the stored f32 range.
            let range = w.get("stats.residual_range", &[2])?;
            let (lo, hi) = (range[0] as f64, range[1] as f64);
            let span = (hi - lo).max(1e-6);
            let r = b.per_sample_sum(&abs);
            let r = b.scale(&r, 1.0 / span);
            let l_n = b.offset(&r, -lo / span);
            let o = l_o(b);
            let n = b.scale(&l_n, WILD_LAMBDA);
            let o = b.scale(&o, 1.0 - WILD_LAMBDA);
            b.binary("Add", &n, &o)
        }
        "residual" => b.per_sample_mean(&abs),
        "origin" => l_o(b),
        other => return Err(ExportError::UnknownScore(other.to_string())),
    };
    let map = b.residual_map(&abs, cfg.sigma, cfg.size, cfg.size);
    Ok((score, map))
}
