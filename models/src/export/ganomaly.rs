//! GANomaly's scoring graph: encoder → decoder → re-encoder, the chosen score and the smoothed
//! residual map — the same computation as `Ganomaly::infer` in evaluation mode.

use super::graph::GraphBuilder;
use super::layers::{dc_decoder, dc_encoder};
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
    let z = dc_encoder(b, w, "g.encoder", x, s, c, l, wd)?;
    let x_hat = dc_decoder(b, w, "g.decoder", &z, s, c, l, wd)?;
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
    let mean = b.reduce_mean(&residual, &[1], true);
    let map = b.gaussian_smooth(&mean, cfg.sigma, s, s);
    Ok((score, map))
}
