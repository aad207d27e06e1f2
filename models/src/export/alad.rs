//! ALAD's scoring graph: E → G, the spectrally normalised D_xx on (x, x) and (x, G(E(x))), the
//! chosen score and the smoothed residual map — `Alad::infer` in evaluation mode.

use super::graph::GraphBuilder;
use super::layers::{critic_features, critic_head, encode_decode};
use super::{ExportError, ScorerIo, Weights};
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
    // D_xx sees the pair stacked along the channels.
    let xx = |b: &mut GraphBuilder, other: &str| {
        let pair = b.concat(&[x, other], 1);
        critic_features(b, w, "dxx", &pair, cfg, 2 * cfg.channels, true)
    };
    let score = match score {
        "features" => {
            let (f_real, _) = xx(b, x)?;
            let (f_rec, _) = xx(b, &rec)?;
            b.l1_per_sample(&f_real, &f_rec)
        }
        "l1" => b.per_sample_mean(&abs),
        "l2" => {
            let sq = b.binary("Mul", &diff, &diff);
            b.per_sample_mean(&sq)
        }
        "logits" => {
            let (f_rec, c) = xx(b, &rec)?;
            let l = critic_head(b, w, "dxx", &f_rec, c, 1, true)?;
            let l = b.flatten_to_batch(&l);
            softplus_neg(b, &l)
        }
        other => return Err(ExportError::UnknownScore(other.to_string())),
    };
    let map = b.residual_map(&abs, cfg.sigma, cfg.size, cfg.size);
    Ok((score, map))
}

/// `alad::softplus_neg`, term for term: relu(−l) + log(1 + e^−|l|).
fn softplus_neg(b: &mut GraphBuilder, l: &str) -> String {
    let neg = b.unary("Neg", l);
    let pos = b.unary("Relu", &neg);
    let abs = b.unary("Abs", l);
    let nabs = b.unary("Neg", &abs);
    let e = b.unary("Exp", &nabs);
    let e1 = b.offset(&e, 1.0);
    let soft = b.unary("Log", &e1);
    b.binary("Add", &pos, &soft)
}
