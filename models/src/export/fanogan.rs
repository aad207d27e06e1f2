//! f-AnoGAN's scoring graph: E → G, the WGAN critic's features of x and G(E(x)), the chosen
//! score (izi_f or the residual) and the smoothed residual map — `FAnoGan::infer` in
//! evaluation mode.

use super::graph::GraphBuilder;
use super::layers::{critic_features, encode_decode};
use super::{ExportError, ScorerIo, Weights};
use crate::fanogan::KAPPA;
use crate::ModelConfig;

pub fn build(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    score: &str,
    io: &ScorerIo,
) -> Result<(String, String), ExportError> {
    let x = io.image.as_str();
    let (_, rec) = encode_decode(b, w, cfg, x, "e", "g")?;
    let diff = b.binary("Sub", x, &rec);
    let abs = b.unary("Abs", &diff);
    let score = match score {
        "izif" => {
            let sq = b.binary("Mul", &diff, &diff);
            let pixels = b.per_sample_mean(&sq);
            let (f_x, _) = critic_features(b, w, "c", x, cfg, cfg.channels, false)?;
            let (f_rec, _) = critic_features(b, w, "c", &rec, cfg, cfg.channels, false)?;
            let fd = b.binary("Sub", &f_x, &f_rec);
            let fsq = b.binary("Mul", &fd, &fd);
            let feats = b.per_sample_mean(&fsq);
            let feats = b.scale(&feats, KAPPA);
            b.binary("Add", &pixels, &feats)
        }
        "residual" => b.per_sample_mean(&abs),
        other => return Err(ExportError::UnknownScore(other.to_string())),
    };
    let map = b.residual_map(&abs, cfg.sigma, cfg.size, cfg.size);
    Ok((score, map))
}
