//! f-AnoGAN's score head: izi_f (pixel plus WGAN-critic feature residual), the residual or the
//! latent-norm term of Berg et al. —
//! the scores of `FAnoGan::infer` in evaluation mode.

use super::graph::GraphBuilder;
use super::layers::critic_features;
use super::{ExportError, Reconstruction, Weights};
use crate::fanogan::KAPPA;
use crate::ModelConfig;

pub fn score(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    r: &Reconstruction,
    score: &str,
) -> Result<String, ExportError> {
    Ok(match score {
        "izif" => {
            let sq = b.binary("Mul", &r.diff, &r.diff);
            let pixels = b.per_sample_mean(&sq);
            let (f_x, _) = critic_features(b, w, "c", &r.x, cfg, cfg.channels, false)?;
            let (f_rec, _) = critic_features(b, w, "c", &r.x_hat, cfg, cfg.channels, false)?;
            let fd = b.binary("Sub", &f_x, &f_rec);
            let fsq = b.binary("Mul", &fd, &fd);
            let feats = b.per_sample_mean(&fsq);
            let feats = b.scale(&feats, KAPPA);
            b.binary("Add", &pixels, &feats)
        }
        "residual" => b.per_sample_mean(&r.abs),
        "origin" => r.origin(b, cfg),
        other => return Err(ExportError::UnknownScore(other.to_string())),
    })
}
