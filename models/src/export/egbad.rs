//! EGBAD's score head: the residual, the joint discriminator's feature distance between
//! (x, E(x)) and (G(E(x)), E(x)), or their α-weighted mix — the scores of `Egbad::infer` in
//! evaluation mode.

use super::graph::GraphBuilder;
use super::layers::{joint_critic_features, joint_critic_z};
use super::{ExportError, Reconstruction, Weights};
use crate::egbad::EGBAD_ALPHA;
use crate::ModelConfig;

pub fn score(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    r: &Reconstruction,
    score: &str,
) -> Result<String, ExportError> {
    // The discriminator's feature term; EGBAD's D has no spectral norm.
    let features = |b: &mut GraphBuilder| -> Result<String, ExportError> {
        let hz = joint_critic_z(b, w, "d", &r.z, cfg.latent, false)?;
        let f_real = joint_critic_features(b, w, "d", &r.x, &hz, cfg, false)?;
        let f_rec = joint_critic_features(b, w, "d", &r.x_hat, &hz, cfg, false)?;
        Ok(b.l1_per_sample(&f_real, &f_rec))
    };
    Ok(match score {
        "residual" => b.per_sample_mean(&r.abs),
        "combined" => {
            let f = features(b)?;
            let l1 = b.per_sample_sum(&r.abs);
            let l1 = b.scale(&l1, 1.0 - EGBAD_ALPHA);
            let f = b.scale(&f, EGBAD_ALPHA);
            b.binary("Add", &l1, &f)
        }
        "features" => features(b)?,
        other => return Err(ExportError::UnknownScore(other.to_string())),
    })
}
