//! GANomaly's scoring graph: encoder → decoder → re-encoder, the chosen score and the smoothed
//! residual map — the same computation as `Ganomaly::infer` in evaluation mode.

use super::graph::GraphBuilder;
use super::layers::{dc_encoder, encode_decode};
use super::{ExportError, ScorerIo, Weights};
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
    let (z, x_hat) = encode_decode(b, w, cfg, x, "g.encoder", "g.decoder")?;
    let diff = b.binary("Sub", x, &x_hat);
    let residual = b.unary("Abs", &diff);
    let score = match score {
        "residual" => b.per_sample_mean(&residual),
        "encoder" => {
            let z_hat = dc_encoder(b, w, "g.reencoder", &x_hat, s, c, l, wd)?;
            let d = b.binary("Sub", &z, &z_hat);
            let sq = b.binary("Mul", &d, &d);
            b.per_sample_mean(&sq)
        }
        other => return Err(ExportError::UnknownScore(other.to_string())),
    };
    let map = b.residual_map(&residual, cfg.sigma, s, s);
    Ok((score, map))
}
