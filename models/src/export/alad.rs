//! ALAD's score head: the spectrally normalised D_xx on (x, x) and (x, G(E(x))), or the pixel
//! residuals — the scores of `Alad::infer` in evaluation mode.

use super::graph::GraphBuilder;
use super::layers::{critic_features, critic_head};
use super::{ExportError, Reconstruction, Weights};
use crate::ModelConfig;

pub fn score(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    r: &Reconstruction,
    score: &str,
) -> Result<String, ExportError> {
    // D_xx sees the pair stacked along the channels.
    let xx = |b: &mut GraphBuilder, other: &str| {
        let pair = b.concat(&[&r.x, other], 1);
        critic_features(b, w, "dxx", &pair, cfg, 2 * cfg.channels, true)
    };
    Ok(match score {
        "features" => {
            let (f_real, _) = xx(b, &r.x)?;
            let (f_rec, _) = xx(b, &r.x_hat)?;
            b.l1_per_sample(&f_real, &f_rec)
        }
        "l1" => b.per_sample_mean(&r.abs),
        "l2" => {
            let sq = b.binary("Mul", &r.diff, &r.diff);
            b.per_sample_mean(&sq)
        }
        "logits" => {
            let (f_rec, c) = xx(b, &r.x_hat)?;
            let l = critic_head(b, w, "dxx", &f_rec, c, 1, true)?;
            let l = b.flatten_to_batch(&l);
            softplus_neg(b, &l)
        }
        other => return Err(ExportError::UnknownScore(other.to_string())),
    })
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
