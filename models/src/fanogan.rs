//! f-AnoGAN (Schlegl et al. 2019): a WGAN-GP generator and critic, then an encoder trained
//! afterwards with G and the critic frozen, on the izi_f loss
//! ‖x − G(E(x))‖²/n + κ·‖f(x) − f(G(E(x)))‖²/n_f (κ = 1), which is also the anomaly score.
//! The first half of the epochs (at least one) trains the GAN, the rest the encoder; a one-epoch
//! run trains both in every step.

use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarMap;
use vigil_shared::rng::Rng;

use crate::detector::{Detector, DetectorKind, Inference, ModelConfig, OptimizerState};
use crate::loss::{enable_double_backprop, origin_score, per_sample_mean, wgan_gp_critic_loss};
use crate::nn::{Critic, DcDecoder, DcEncoder};
use crate::optim::Adam;
use crate::smoothing::GaussianSmoother;
use crate::train_util::{
    adam_for, load_optimizers_state, optimizers_state, randn, seeded_init, var_builder, wgan_adam,
};
use crate::ModelError;

/// Critic steps per generator step (WGAN-GP).
pub const N_CRITIC: u64 = 5;
/// κ, the weight of the critic-feature residual in izi_f.
pub const KAPPA: f64 = 1.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Gan,
    Encoder,
    Both,
}

pub struct FAnoGan {
    cfg: ModelConfig,
    varmap: VarMap,
    encoder: DcEncoder,
    generator: DcDecoder,
    critic: Critic,
    smoother: GaussianSmoother,
    opt_g: Adam,
    opt_c: Adam,
    opt_e: Adam,
    rng: Rng,
    phase: Phase,
}

impl FAnoGan {
    /// `izif`: the paper's score, the izi_f loss per image; `residual`: mean |x − G(E(x))|;
    /// `origin`: Berg et al.'s latent-norm term L_o on f-AnoGAN's encoder (their Table 2
    /// compares it with the jointly trained encoder of `wild`).
    pub const SCORES: &'static [&'static str] = &["izif", "residual", "origin"];

    pub fn new(cfg: ModelConfig, device: &Device) -> Result<Self, ModelError> {
        enable_double_backprop();
        let varmap = VarMap::new();
        let vb = var_builder(&varmap, device);
        let encoder = DcEncoder::new(vb.pp("e"), &cfg, cfg.latent)?;
        let generator = DcDecoder::new(vb.pp("g"), &cfg)?;
        let critic = Critic::new(vb.pp("c"), &cfg, 1, false)?;
        seeded_init(&varmap, cfg.seed)?;
        let smoother = GaussianSmoother::new(cfg.sigma, cfg.size, device)?;
        let opt_g = adam_for(&varmap, &["g."], wgan_adam())?;
        let opt_c = adam_for(&varmap, &["c."], wgan_adam())?;
        let opt_e = adam_for(&varmap, &["e."], wgan_adam())?;
        let rng = Rng::new(cfg.seed ^ 0xfa90);
        Ok(Self {
            cfg,
            varmap,
            encoder,
            generator,
            critic,
            smoother,
            opt_g,
            opt_c,
            opt_e,
            rng,
            phase: Phase::Both,
        })
    }

    /// (izi_f per sample, |x − x̂|, x̂, E(x)). `train` only selects the encoder's batch-norm
    /// mode: G is frozen once the encoder trains, so it always runs on its running statistics.
    fn izif(
        &self,
        x: &Tensor,
        train: bool,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor, Tensor)> {
        let z = self.encoder.forward_t(x, train)?;
        let rec = self.generator.forward_t(&z, false)?;
        let f_x = self.critic.features_t(x, false)?.detach();
        let f_rec = self.critic.features_t(&rec, false)?;
        let diff = (x - &rec)?;
        let izif =
            (per_sample_mean(&diff.sqr()?)? + (per_sample_mean(&(f_x - f_rec)?.sqr()?)? * KAPPA)?)?;
        Ok((izif, diff.abs()?, rec, z))
    }

    fn gan_step(&mut self, x: &Tensor) -> Result<Vec<(&'static str, f32)>, ModelError> {
        let n = x.dim(0)?;
        let z = randn(&mut self.rng, &[n, self.cfg.latent, 1, 1], x.device())?;
        let fake = self.generator.forward_t(&z, true)?;
        let critic = &self.critic;
        let (loss_c, w) =
            wgan_gp_critic_loss(|t| critic.forward_t(t, true), x, &fake, &mut self.rng)?;
        self.opt_c.step(&loss_c.backward()?)?;
        let mut out = vec![("c", loss_c.to_scalar()?), ("wasserstein", w)];
        if self.opt_c.steps().is_multiple_of(N_CRITIC) {
            let loss_g = self.critic.forward_t(&fake, true)?.mean_all()?.neg()?;
            self.opt_g.step(&loss_g.backward()?)?;
            out.push(("g", loss_g.to_scalar()?));
        }
        Ok(out)
    }

    fn encoder_step(&mut self, x: &Tensor) -> Result<Vec<(&'static str, f32)>, ModelError> {
        let (izif, _, _, _) = self.izif(x, true)?;
        let loss = izif.mean_all()?;
        self.opt_e.step(&loss.backward()?)?;
        Ok(vec![("e_izif", loss.to_scalar()?)])
    }
}

impl Detector for FAnoGan {
    fn kind(&self) -> DetectorKind {
        DetectorKind::FAnoGan
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn begin_epoch(&mut self, epoch: usize, total: usize) {
        self.phase = match total / 2 {
            0 => Phase::Both,
            gan_epochs if epoch < gan_epochs => Phase::Gan,
            _ => Phase::Encoder,
        };
    }

    fn train_step(&mut self, x: &Tensor) -> Result<Vec<(&'static str, f32)>, ModelError> {
        match self.phase {
            Phase::Gan => self.gan_step(x),
            Phase::Encoder => self.encoder_step(x),
            Phase::Both => {
                let mut out = self.gan_step(x)?;
                out.extend(self.encoder_step(x)?);
                Ok(out)
            }
        }
    }

    fn infer(&self, x: &Tensor) -> Result<Inference, ModelError> {
        let (izif, abs, rec, z) = self.izif(x, false)?;
        let map = self.smoother.apply(&abs.mean_keepdim(1)?)?;
        debug_assert_eq!(Self::SCORES, ["izif", "residual", "origin"]);
        Ok(Inference {
            scores: vec![
                ("izif", izif.detach()),
                ("residual", per_sample_mean(&abs)?.detach()),
                ("origin", origin_score(&z)?.detach()),
            ],
            reconstruction: rec.detach(),
            map: map.detach(),
        })
    }

    fn optimizer_state(&self) -> Result<OptimizerState, ModelError> {
        optimizers_state(&[
            ("adam_g", &self.opt_g),
            ("adam_c", &self.opt_c),
            ("adam_e", &self.opt_e),
        ])
    }

    fn load_optimizer_state(&mut self, state: &OptimizerState) -> Result<(), ModelError> {
        load_optimizers_state(
            &mut [
                ("adam_g", &mut self.opt_g),
                ("adam_c", &mut self.opt_c),
                ("adam_e", &mut self.opt_e),
            ],
            state,
        )
    }
}
