//! GAN + autoencoder with shared generator/decoder weights (Rafiee & Fevens, shared/papers/
//! rafiee-fevens-gan-autoencoder.txt): the GAN is trained with the relativistic RSGAN loss (eq. 2)
//! against a spectrally normalised critic, the autoencoder E→G with MSE; the score is eq. 7,
//! A(x) = λ·L_D + (1 − λ)·L_R + β·L_L, λ = 0.8, β = 0.5 (the paper's MNIST value).

use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarMap;
use vigil_shared::rng::Rng;

use crate::detector::{Detector, DetectorKind, Inference, ModelConfig, OptimizerState};
use crate::loss::{l1_per_sample, mse, per_sample_mean, rsgan_loss};
use crate::nn::{Critic, DcDecoder, DcEncoder};
use crate::optim::{Adam, AdamConfig};
use crate::smoothing::GaussianSmoother;
use crate::train_util::{
    adam_for, load_optimizers_state, optimizers_state, randn, seeded_init, var_builder,
};
use crate::ModelError;

pub const GAAE_LAMBDA: f64 = 0.8;
pub const GAAE_BETA: f64 = 0.5;

pub struct Gaae {
    cfg: ModelConfig,
    varmap: VarMap,
    encoder: DcEncoder,
    generator: DcDecoder,
    critic: Critic,
    smoother: GaussianSmoother,
    opt_ge: Adam,
    opt_c: Adam,
    rng: Rng,
}

impl Gaae {
    /// `combined`: eq. 7 with sums as in eqs. 4–6; `residual`: mean |x − G(E(x))| (L_R
    /// alone, per pixel); `features`: L_D, Σ|f(x) − f(G(E(x)))|; `latent`: L_L.
    pub const SCORES: &'static [&'static str] = &["combined", "residual", "features", "latent"];

    pub fn new(cfg: ModelConfig, device: &Device) -> Result<Self, ModelError> {
        let varmap = VarMap::new();
        let vb = var_builder(&varmap, device);
        let encoder = DcEncoder::new(vb.pp("e"), &cfg, cfg.latent)?;
        let generator = DcDecoder::new(vb.pp("g"), &cfg)?;
        let critic = Critic::new(vb.pp("c"), &cfg, 1, true)?;
        seeded_init(&varmap, cfg.seed)?;
        let smoother = GaussianSmoother::new(cfg.sigma, cfg.size, device)?;
        // The paper's learning rate for natural images, Adam(0.5, 0.999).
        let adam = AdamConfig {
            lr: 1e-4,
            ..AdamConfig::default()
        };
        let opt_ge = adam_for(&varmap, &["e.", "g."], adam)?;
        let opt_c = adam_for(&varmap, &["c."], adam)?;
        let rng = Rng::new(cfg.seed ^ 0x9aae);
        Ok(Self {
            cfg,
            varmap,
            encoder,
            generator,
            critic,
            smoother,
            opt_ge,
            opt_c,
            rng,
        })
    }
}

impl Detector for Gaae {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Gaae
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn train_step(&mut self, x: &Tensor) -> Result<Vec<(&'static str, f32)>, ModelError> {
        let n = x.dim(0)?;
        let z = randn(&mut self.rng, &[n, self.cfg.latent, 1, 1], x.device())?;
        let fake = self.generator.forward_t(&z, true)?;

        let c_real = self.critic.forward_t(x, true)?.flatten_all()?;
        let c_fake = self.critic.forward_t(&fake.detach(), true)?.flatten_all()?;
        let loss_c = rsgan_loss(&c_real, &c_fake)?;
        self.opt_c.step(&loss_c.backward()?)?;

        // Generator (shared decoder) against the critic, plus the autoencoder's MSE.
        let c_real = self.critic.forward_t(x, true)?.flatten_all()?.detach();
        let c_fake = self.critic.forward_t(&fake, true)?.flatten_all()?;
        let adv = rsgan_loss(&c_fake, &c_real)?;
        let rec = self
            .generator
            .forward_t(&self.encoder.forward_t(x, true)?, true)?;
        let ae = mse(&rec, x)?;
        let loss_ge = (&adv + &ae)?;
        self.opt_ge.step(&loss_ge.backward()?)?;
        Ok(vec![
            ("c", loss_c.to_scalar()?),
            ("g_adv", adv.to_scalar()?),
            ("ae", ae.to_scalar()?),
        ])
    }

    fn infer(&self, x: &Tensor) -> Result<Inference, ModelError> {
        let ex = self.encoder.forward_t(x, false)?;
        let rec = self.generator.forward_t(&ex, false)?;
        let e_rec = self.encoder.forward_t(&rec, false)?;
        let l_d = l1_per_sample(
            &self.critic.features_t(x, false)?,
            &self.critic.features_t(&rec, false)?,
        )?;
        let l_r = l1_per_sample(x, &rec)?;
        let l_l = l1_per_sample(&ex, &e_rec)?;
        let combined =
            (((&l_d * GAAE_LAMBDA)? + (&l_r * (1.0 - GAAE_LAMBDA))?)? + (&l_l * GAAE_BETA)?)?;
        let abs = (x - &rec)?.abs()?;
        let map = self.smoother.apply(&abs.mean_keepdim(1)?)?;
        debug_assert_eq!(Self::SCORES, ["combined", "residual", "features", "latent"]);
        Ok(Inference {
            scores: vec![
                ("combined", combined),
                ("residual", per_sample_mean(&abs)?),
                ("features", l_d),
                ("latent", l_l),
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
