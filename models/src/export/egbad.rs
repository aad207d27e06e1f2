//! EGBAD's scoring graph: E → G, the joint discriminator's features of (x, E(x)) and
//! (G(E(x)), E(x)), the chosen score and the smoothed residual map — `Egbad::infer` in
//! evaluation mode.

use super::graph::GraphBuilder;
use super::layers::{encode_decode, joint_critic_features, joint_critic_z};
use super::{ExportError, ScorerIo, Weights};
use crate::egbad::EGBAD_ALPHA;
use crate::ModelConfig;

pub fn build(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    score: &str,
    io: &ScorerIo,
) -> Result<(String, String), ExportError> {
    let x = io.image.as_str();
    let (ex, rec) = encode_decode(b, w, cfg, x, "e", "g")?;
    let diff = b.binary("Sub", x, &rec);
    let abs = b.unary("Abs", &diff);
    // The discriminator's feature term; EGBAD's D has no spectral norm.
    let features = |b: &mut GraphBuilder| -> Result<String, ExportError> {
        let hz = joint_critic_z(b, w, "d", &ex, cfg.latent, false)?;
        let f_real = joint_critic_features(b, w, "d", x, &hz, cfg, false)?;
        let f_rec = joint_critic_features(b, w, "d", &rec, &hz, cfg, false)?;
        Ok(b.l1_per_sample(&f_real, &f_rec))
    };
    let score = match score {
        "residual" => b.per_sample_mean(&abs),
        "combined" => {
            let f = features(b)?;
            let l1 = b.per_sample_sum(&abs);
            let l1 = b.scale(&l1, 1.0 - EGBAD_ALPHA);
            let f = b.scale(&f, EGBAD_ALPHA);
            b.binary("Add", &l1, &f)
        }
        "features" => features(b)?,
        other => return Err(ExportError::UnknownScore(other.to_string())),
    };
    let map = b.residual_map(&abs, cfg.sigma, cfg.size, cfg.size);
    Ok((score, map))
}
