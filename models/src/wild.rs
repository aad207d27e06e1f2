//! Anomaly detection "in the wild" (Berg, Ahlberg, Felsberg 2019, shared/papers/
//! berg-anomaly-detection-in-the-wild.txt): a WGAN-GP generator and critic with an encoder
//! trained *jointly*, on the image-space encoder loss ‖G(z) − G(E(G(z)))‖₁ (G and E updated
//! together, one critic step per generator step as in pGAN). Score a = λ·L_n + (1 − λ)·L_o with
//! L_n the min-max normalised residual ‖x − G(E(x))‖₁ and L_o = −‖E(x)‖₂/√N_z, λ = 0.05.
//!
//! Deviation (documented in docs/benchmarks.md): no progressive growing. At 32² the pyramid has
//! three resolutions, and a two-epoch budget leaves no room for fade-in stages; the DCGAN pyramid
//! trains at full resolution from the start. The residual's min and max, for L_n, are taken over
//! the normal training images of the last epoch and saved with the weights
//! (`stats.residual_range`), so a bundle scores each image on its own.

use candle_core::{Device, ModuleT, Tensor, Var};
use candle_nn::{Init, VarMap};
use vigil_shared::rng::Rng;

use crate::detector::{Detector, DetectorKind, Inference, ModelConfig, OptimizerState};
use crate::loss::{
    enable_double_backprop, l1, l1_per_sample, origin_score, per_sample_mean, wgan_gp_critic_loss,
};
use crate::nn::{Critic, DcDecoder, DcEncoder};
use crate::optim::Adam;
use crate::smoothing::GaussianSmoother;
use crate::train_util::{
    adam_for, load_optimizers_state, optimizers_state, randn, seeded_init, var_builder, wgan_adam,
};
use crate::ModelError;

pub const WILD_LAMBDA: f64 = 0.05;

pub struct Wild {
    cfg: ModelConfig,
    varmap: VarMap,
    encoder: DcEncoder,
    generator: DcDecoder,
    critic: Critic,
    /// `[min, max]` of the per-image residual over the last epoch's training images.
    range: Var,
    /// Running (min, max) of the epoch in progress.
    epoch_range: (f32, f32),
    smoother: GaussianSmoother,
    opt_ge: Adam,
    opt_c: Adam,
    rng: Rng,
}

impl Wild {
    /// `combined`: the paper's a; `residual`: mean |x − G(E(x))|; `origin`: L_o alone.
    pub const SCORES: &'static [&'static str] = &["combined", "residual", "origin"];

    pub fn new(cfg: ModelConfig, device: &Device) -> Result<Self, ModelError> {
        enable_double_backprop();
        let varmap = VarMap::new();
        let vb = var_builder(&varmap, device);
        let encoder = DcEncoder::new(vb.pp("e"), &cfg, cfg.latent)?;
        let generator = DcDecoder::new(vb.pp("g"), &cfg)?;
        let critic = Critic::new(vb.pp("c"), &cfg, 1, false)?;
        let range = Var::from_tensor(&vb.pp("stats").get_with_hints(
            2,
            "residual_range",
            Init::Const(0.0),
        )?)?;
        seeded_init(&varmap, cfg.seed)?;
        range.set(&Tensor::new(&[0f32, 1.0], device)?)?;
        let smoother = GaussianSmoother::new(cfg.sigma, cfg.size, device)?;
        let opt_ge = adam_for(&varmap, &["e.", "g."], wgan_adam())?;
        let opt_c = adam_for(&varmap, &["c."], wgan_adam())?;
        let rng = Rng::new(cfg.seed ^ 0x3117d);
        Ok(Self {
            cfg,
            varmap,
            encoder,
            generator,
            critic,
            range,
            epoch_range: (f32::INFINITY, f32::NEG_INFINITY),
            smoother,
            opt_ge,
            opt_c,
            rng,
        })
    }

    /// (ẑ, x̂, per-image Σ|x − x̂|) in evaluation mode.
    fn reconstruct(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let z = self.encoder.forward_t(x, false)?;
        let rec = self.generator.forward_t(&z, false)?;
        let r = l1_per_sample(x, &rec)?;
        Ok((z, rec, r))
    }
}

impl Detector for Wild {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Wild
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn begin_epoch(&mut self, _epoch: usize, _total: usize) {
        self.epoch_range = (f32::INFINITY, f32::NEG_INFINITY);
    }

    fn train_step(&mut self, x: &Tensor) -> Result<Vec<(&'static str, f32)>, ModelError> {
        let n = x.dim(0)?;
        let z = randn(&mut self.rng, &[n, self.cfg.latent, 1, 1], x.device())?;
        let fake = self.generator.forward_t(&z, true)?;
        let critic = &self.critic;
        let (loss_c, w) =
            wgan_gp_critic_loss(|t| critic.forward_t(t, true), x, &fake, &mut self.rng)?;
        self.opt_c.step(&loss_c.backward()?)?;

        let adv = self.critic.forward_t(&fake, true)?.mean_all()?.neg()?;
        let cycle = self
            .generator
            .forward_t(&self.encoder.forward_t(&fake, true)?, true)?;
        let enc = l1(&fake, &cycle)?;
        let loss = (&adv + &enc)?;
        self.opt_ge.step(&loss.backward()?)?;

        // The residual range L_n is normalised by, tracked on this epoch's normal images.
        let (_, _, r) = self.reconstruct(x)?;
        let lo: f32 = r.min_all()?.to_scalar()?;
        let hi: f32 = r.max_all()?.to_scalar()?;
        self.epoch_range = (self.epoch_range.0.min(lo), self.epoch_range.1.max(hi));
        let (lo, hi) = self.epoch_range;
        self.range
            .set(&Tensor::new(&[lo, hi.max(lo + 1e-6)], x.device())?)?;
        Ok(vec![
            ("c", loss_c.to_scalar()?),
            ("wasserstein", w),
            ("g_adv", adv.to_scalar()?),
            ("enc", enc.to_scalar()?),
        ])
    }

    fn infer(&self, x: &Tensor) -> Result<Inference, ModelError> {
        let (z, rec, r) = self.reconstruct(x)?;
        let range = self.range.as_tensor().to_vec1::<f32>()?;
        let (lo, hi) = (range[0] as f64, range[1] as f64);
        let l_n = r.affine(1.0 / (hi - lo).max(1e-6), -lo / (hi - lo).max(1e-6))?;
        let l_o = origin_score(&z)?;
        let combined = ((&l_n * WILD_LAMBDA)? + (&l_o * (1.0 - WILD_LAMBDA))?)?;
        let abs = (x - &rec)?.abs()?;
        let map = self.smoother.apply(&abs.mean_keepdim(1)?)?;
        debug_assert_eq!(Self::SCORES, ["combined", "residual", "origin"]);
        Ok(Inference {
            scores: vec![
                ("combined", combined),
                ("residual", per_sample_mean(&abs)?),
                ("origin", l_o),
            ],
            reconstruction: rec,
            map,
        })
    }

    fn optimizer_state(&self) -> Result<OptimizerState, ModelError> {
        optimizers_state(&[("adam_ge", &self.opt_ge), ("adam_c", &self.opt_c)])
    }

    fn load_optimizer_state(&mut self, state: &OptimizerState) -> Result<(), ModelError> {
        load_optimizers_state(
            &mut [("adam_ge", &mut self.opt_ge), ("adam_c", &mut self.opt_c)],
            state,
        )
    }
}
