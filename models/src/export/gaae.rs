//! GAAE's scoring graph: E → G → E, the spectrally normalised critic's features of x and
//! G(E(x)), the chosen score (eq. 7 or one of its terms) and the smoothed residual map —
//! `Gaae::infer` in evaluation mode.

use super::graph::GraphBuilder;
use super::layers::{critic_features, dc_encoder, encode_decode};
use super::{ExportError, ScorerIo, Weights};
use crate::gaae::{GAAE_BETA, GAAE_LAMBDA};
use crate::ModelConfig;

pub fn build(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    score: &str,
    io: &ScorerIo,
) -> Result<(String, String), ExportError> {
    let (s, c, l, wd) = (cfg.size, cfg.channels, cfg.latent, cfg.width);
    let x = io.image.as_str();
    let (ex, rec) = encode_decode(b, w, cfg, x, "e", "g")?;
    let diff = b.binary("Sub", x, &rec);
    let abs = b.unary("Abs", &diff);
    // L_D: Σ|f(x) − f(x̂)| on the critic's features.
    let l_d = |b: &mut GraphBuilder| -> Result<String, ExportError> {
        let (f_x, _) = critic_features(b, w, "c", x, cfg, c, true)?;
        let (f_rec, _) = critic_features(b, w, "c", &rec, cfg, c, true)?;
        Ok(b.l1_per_sample(&f_x, &f_rec))
    };
    // L_L: Σ|E(x) − E(x̂)|.
    let l_l = |b: &mut GraphBuilder| -> Result<String, ExportError> {
        let e_rec = dc_encoder(b, w, "e", &rec, s, c, l, wd)?;
        Ok(b.l1_per_sample(&ex, &e_rec))
    };
    let score = match score {
        "combined" => {
            let d = l_d(b)?;
            let r = b.per_sample_sum(&abs);
            let lat = l_l(b)?;
            let d = b.scale(&d, GAAE_LAMBDA);
            let r = b.scale(&r, 1.0 - GAAE_LAMBDA);
            let lat = b.scale(&lat, GAAE_BETA);
            let dr = b.binary("Add", &d, &r);
            b.binary("Add", &dr, &lat)
        }
        "residual" => b.per_sample_mean(&abs),
        "features" => l_d(b)?,
        "latent" => l_l(b)?,
        other => return Err(ExportError::UnknownScore(other.to_string())),
    };
    let map = b.residual_map(&abs, cfg.sigma, s, s);
    Ok((score, map))
}
