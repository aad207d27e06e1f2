//! GANomaly's score head: the mean residual, or the re-encoder's latent distance — the scores
//! of `Ganomaly::infer` in evaluation mode.

use super::graph::GraphBuilder;
use super::layers::dc_encoder;
use super::{ExportError, Reconstruction, Weights};
use crate::ModelConfig;

pub fn score(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    r: &Reconstruction,
    score: &str,
) -> Result<String, ExportError> {
    let (s, c, l, wd) = (cfg.size, cfg.channels, cfg.latent, cfg.width);
    Ok(match score {
        "residual" => b.per_sample_mean(&r.abs),
        "encoder" => {
            let z_hat = dc_encoder(b, w, "g.reencoder", &r.x_hat, s, c, l, wd)?;
            let d = b.binary("Sub", &r.z, &z_hat);
            let sq = b.binary("Mul", &d, &d);
            b.per_sample_mean(&sq)
        }
        other => return Err(ExportError::UnknownScore(other.to_string())),
    })
}
