//! GAAE's score head: eq. 7 (critic-feature, pixel and latent L1 terms, weighted) or one of its
//! terms — the scores of `Gaae::infer` in evaluation mode.

use super::graph::GraphBuilder;
use super::layers::{critic_features, dc_encoder};
use super::{ExportError, Reconstruction, Weights};
use crate::gaae::{GAAE_BETA, GAAE_LAMBDA};
use crate::ModelConfig;

pub fn score(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    r: &Reconstruction,
    score: &str,
) -> Result<String, ExportError> {
    let (s, c, l, wd) = (cfg.size, cfg.channels, cfg.latent, cfg.width);
    // L_D: Σ|f(x) − f(x̂)| on the spectrally normalised critic's features.
    let l_d = |b: &mut GraphBuilder| -> Result<String, ExportError> {
        let (f_x, _) = critic_features(b, w, "c", &r.x, cfg, c, true)?;
        let (f_rec, _) = critic_features(b, w, "c", &r.x_hat, cfg, c, true)?;
        Ok(b.l1_per_sample(&f_x, &f_rec))
    };
    // L_L: Σ|E(x) − E(x̂)|.
    let l_l = |b: &mut GraphBuilder| -> Result<String, ExportError> {
        let e_rec = dc_encoder(b, w, "e", &r.x_hat, s, c, l, wd)?;
        Ok(b.l1_per_sample(&r.z, &e_rec))
    };
    Ok(match score {
        "combined" => {
            let d = l_d(b)?;
            let rs = b.per_sample_sum(&r.abs);
            let lat = l_l(b)?;
            let d = b.scale(&d, GAAE_LAMBDA);
            let rs = b.scale(&rs, 1.0 - GAAE_LAMBDA);
            let lat = b.scale(&lat, GAAE_BETA);
            let dr = b.binary("Add", &d, &rs);
            b.binary("Add", &dr, &lat)
        }
        "residual" => b.per_sample_mean(&r.abs),
        "features" => l_d(b)?,
        "latent" => l_l(b)?,
        other => return Err(ExportError::UnknownScore(other.to_string())),
    })
}
