//! Losses and per-sample distances of the detectors, and the WGAN-GP gradient penalty.

use candle_core::{Result, Tensor, Var, D};
use vigil_shared::rng::Rng;

use crate::train_util::uniform_per_sample;

/// Mean squared error.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// Mean absolute error.
pub fn l1(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a - b)?.abs()?.mean_all()
}

/// Binary cross-entropy on logits, in the overflow-free form max(l,0) − l·y + log(1 + e^−|l|).
pub fn bce_with_logits(logits: &Tensor, target: f64) -> Result<Tensor> {
    let pos = logits.relu()?;
    let soft = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((pos - (logits * target)?)? + soft)?.mean_all()
}

/// log(1 + eˣ) without overflow: max(x, 0) + log(1 + e^−|x|).
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// The focal loss of Lin et al. (2017), γ = 2, on per-pixel logits against a 0/1 `target` of
/// the same shape, averaged: −(1 − p_t)^γ log p_t. It keeps the few anomalous pixels of a
/// segmentation target from being drowned by the easy normal ones (DRAEM's choice).
pub fn focal_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    // log p = −softplus(−l), log(1 − p) = −softplus(l).
    let log_p = softplus(&logits.neg()?)?.neg()?;
    let log_q = softplus(logits)?.neg()?;
    let not_t = target.affine(-1.0, 1.0)?;
    let log_pt = ((target * &log_p)? + (&not_t * &log_q)?)?;
    let weight = log_pt.exp()?.affine(-1.0, 1.0)?.sqr()?;
    (weight * log_pt)?.neg()?.mean_all()
}

/// Per-sample mean over every dimension but the first: `[N, …]` → `[N]`.
pub fn per_sample_mean(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(1)?.mean(D::Minus1)
}

/// Relativistic standard GAN losses (Jolicoeur-Martineau 2019) on critic outputs: the critic
/// minimises −log σ(C(x_r) − C(x_f)), the generator −log σ(C(x_f) − C(x_r)).
pub fn rsgan_loss(first: &Tensor, second: &Tensor) -> Result<Tensor> {
    bce_with_logits(&(first - second)?, 1.0)
}

/// Per-sample sum over every dimension but the first: `[N, …]` → `[N]`.
pub fn per_sample_sum(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(1)?.sum(D::Minus1)
}

/// Berg et al.'s origin term L_o = −‖z‖₂/√N_z per sample (`[N, N_z, …]` → `[N]`): a jointly
/// trained encoder maps anomalies closer to the origin, so a smaller norm scores higher.
pub fn origin_score(z: &Tensor) -> Result<Tensor> {
    let nz = z.flatten_from(1)?.dim(1)? as f64;
    per_sample_sum(&z.sqr()?)?.sqrt()? * (-1.0 / nz.sqrt())
}

/// Per-sample L1 distance `Σ|a − b|`, `[N]`.
pub fn l1_per_sample(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    per_sample_sum(&(a - b)?.abs()?)
}

/// Candle detaches gradients during backprop unless this variable is set; it reads it once per
/// thread, at that thread's first backward pass. The WGAN-GP penalty differentiates a gradient,
/// so detectors that use it call this in their constructor, before any backward pass.
pub fn enable_double_backprop() {
    if std::env::var_os("CANDLE_GRAD_DO_NOT_DETACH").is_none() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    }
}

/// WGAN-GP penalty (Gulrajani et al. 2017): E[(‖∇_x̂ C(x̂)‖₂ − 1)²] at x̂ = αx + (1−α)x̃, with
/// `alpha` broadcastable to the batch (one draw per sample). The result is differentiable with
/// respect to the critic's weights (double backprop).
pub fn gradient_penalty<F>(
    critic: F,
    real: &Tensor,
    fake: &Tensor,
    alpha: &Tensor,
) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let one_minus = alpha.affine(-1.0, 1.0)?;
    let interp =
        (real.detach().broadcast_mul(alpha)? + fake.detach().broadcast_mul(&one_minus)?)?;
    let x = Var::from_tensor(&interp)?;
    let out = critic(x.as_tensor())?.sum_all()?;
    let grads = out.backward()?;
    let g = grads.get(x.as_tensor()).ok_or_else(|| {
        candle_core::Error::Msg("critic output does not depend on its input".into())
    })?;
    if !g.track_op() {
        candle_core::bail!(
            "gradient penalty: the input gradient is detached (set CANDLE_GRAD_DO_NOT_DETACH=1 \
             before the thread's first backward pass; see loss::enable_double_backprop)"
        )
    }
    let norm = (g.flatten_from(1)?.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()?;
    (norm - 1.0)?.sqr()?.mean_all()
}

/// WGAN-GP's penalty weight.
pub const GP_WEIGHT: f64 = 10.0;

/// The WGAN-GP critic loss E[C(x̃)] − E[C(x)] + 10·GP, and the Wasserstein estimate
/// E[C(x)] − E[C(x̃)] for logging. `critic` maps images to `[N, …]` scores.
pub fn wgan_gp_critic_loss<F>(
    critic: F,
    real: &Tensor,
    fake: &Tensor,
    rng: &mut Rng,
) -> Result<(Tensor, f32)>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let alpha = uniform_per_sample(rng, real.dim(0)?, real.device())?;
    let c_real = critic(real)?.mean_all()?;
    let c_fake = critic(&fake.detach())?.mean_all()?;
    let gp = gradient_penalty(&critic, real, fake, &alpha)?;
    let w = (&c_real - &c_fake)?;
    let loss = ((c_fake - c_real)? + (gp * GP_WEIGHT)?)?;
    Ok((loss, w.to_scalar()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, ModuleT};
    use candle_nn::VarMap;

    use crate::nn::Critic;
    use crate::testutil::config;
    use crate::train_util::{randn, seeded_init, var_builder};

    #[test]
    fn bce_matches_hand_values_and_survives_large_logits() {
        let l = Tensor::new(&[0f32, 100.0, -100.0], &Device::Cpu).unwrap();
        // Target 1: ln 2, ~0, 100 → mean (0.693147 + 0 + 100) / 3.
        let v: f32 = bce_with_logits(&l, 1.0).unwrap().to_scalar().unwrap();
        assert!(
            (v - (std::f32::consts::LN_2 + 100.0) / 3.0).abs() < 1e-4,
            "{v}"
        );
    }

    #[test]
    fn focal_loss_matches_hand_values() {
        // l = 0: p = ½, so either target gives ¼·ln 2; l = ln 3 with target 1: p = ¾,
        // (¼)²·ln(4/3); with target 0: (¾)²·ln 4.
        let l = Tensor::new(&[0f32, 0.0, 3f32.ln(), 3f32.ln()], &Device::Cpu).unwrap();
        let t = Tensor::new(&[1f32, 0.0, 1.0, 0.0], &Device::Cpu).unwrap();
        let v: f32 = focal_with_logits(&l, &t).unwrap().to_scalar().unwrap();
        let want = (2.0 * 0.25 * 2f32.ln() + 0.0625 * (4f32 / 3.0).ln() + 0.5625 * 4f32.ln()) / 4.0;
        assert!((v - want).abs() < 1e-5, "{v} vs {want}");
        let big = Tensor::new(&[80f32, -80.0], &Device::Cpu).unwrap();
        let t = Tensor::new(&[0f32, 1.0], &Device::Cpu).unwrap();
        let v: f32 = focal_with_logits(&big, &t).unwrap().to_scalar().unwrap();
        assert!((v - 80.0).abs() < 1e-3, "{v}");
    }

    #[test]
    fn gradient_penalty_of_a_linear_critic() {
        enable_double_backprop();
        // C(x) = w·x has ∇C = w everywhere: penalty (‖w‖ − 1)² = (5 − 1)² = 16, and
        // ∂/∂w = 2(‖w‖ − 1)·w/‖w‖ = 8·(0.6, 0.8) = (4.8, 6.4).
        let w = Var::new(&[3f32, 4.0], &Device::Cpu).unwrap();
        let real = Tensor::new(&[[1f32, 2.0], [0.5, -1.0]], &Device::Cpu).unwrap();
        let fake = Tensor::new(&[[0f32, 0.0], [2.0, 2.0]], &Device::Cpu).unwrap();
        let alpha = Tensor::new(&[[0.3f32], [0.9]], &Device::Cpu).unwrap();
        let critic = |x: &Tensor| x.broadcast_mul(w.as_tensor())?.sum(1);
        let gp = gradient_penalty(critic, &real, &fake, &alpha).unwrap();
        assert!((gp.to_scalar::<f32>().unwrap() - 16.0).abs() < 1e-4);
        let g = gp.backward().unwrap();
        let gw = g.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (gw[0] - 4.8).abs() < 1e-4 && (gw[1] - 6.4).abs() < 1e-4,
            "{gw:?}"
        );
    }

    #[test]
    fn gradient_penalty_backprops_through_a_conv_critic() {
        enable_double_backprop();
        let vm = VarMap::new();
        let cfg = config(16, 1, 1, 4);
        let critic = Critic::new(var_builder(&vm, &Device::Cpu).pp("c"), &cfg, 1, false).unwrap();
        seeded_init(&vm, 3).unwrap();
        let mut rng = Rng::new(1);
        let real = randn(&mut rng, &[2, 1, 16, 16], &Device::Cpu).unwrap();
        let fake = randn(&mut rng, &[2, 1, 16, 16], &Device::Cpu).unwrap();
        let alpha = uniform_per_sample(&mut rng, 2, &Device::Cpu).unwrap();
        let gp = gradient_penalty(|x| critic.forward_t(x, true), &real, &fake, &alpha).unwrap();
        let grads = gp.backward().unwrap();
        let data = vm.data().lock().unwrap();
        for name in ["c.conv0.weight", "c.conv1.weight", "c.head.weight"] {
            let g = grads.get(data[name].as_tensor()).expect(name);
            let s: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(s > 0.0, "{name} gets no penalty gradient");
        }
    }
}
