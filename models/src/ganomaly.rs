//! GANomaly (Akcay, Atapour-Abarghouei, Breckon 2018): an encoder–decoder–encoder generator
//! trained adversarially with a DCGAN discriminator (survey text, eqs. 8–12).

use candle_core::{Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::detector::{Detector, DetectorKind, Inference, ModelConfig, OptimizerState};
use crate::loss::{bce_with_logits, l1, mse, per_sample_mean};
use crate::nn::{DcDecoder, DcEncoder};
use crate::optim::{Adam, AdamConfig};
use crate::smoothing::GaussianSmoother;
use crate::train_util::{
    adam_for, load_optimizers_state, optimizers_state, seeded_init, seeded_init_prefix, var_builder,
};
use crate::ModelError;

/// Loss weights of the paper: w_adv = 1 (feature matching), w_con = 50 (L1), w_enc = 1 (L2).
#[derive(Clone, Copy, Debug)]
pub struct GanomalyWeights {
    pub adv: f64,
    pub con: f64,
    pub enc: f64,
}

impl Default for GanomalyWeights {
    fn default() -> Self {
        Self {
            adv: 1.0,
            con: 50.0,
            enc: 1.0,
        }
    }
}

/// The generator G = (G_E, G_D, E): x → z → x̂ → ẑ.
pub struct Generator {
    pub encoder: DcEncoder,
    pub decoder: DcDecoder,
    pub reencoder: DcEncoder,
}

impl Generator {
    pub fn new(vb: VarBuilder, cfg: &ModelConfig) -> candle_core::Result<Self> {
        Ok(Self {
            encoder: DcEncoder::new(vb.pp("encoder"), cfg, cfg.latent)?,
            decoder: DcDecoder::new(vb.pp("decoder"), cfg)?,
            reencoder: DcEncoder::new(vb.pp("reencoder"), cfg, cfg.latent)?,
        })
    }

    /// (x̂, z, ẑ)
    pub fn forward_t(
        &self,
        x: &Tensor,
        train: bool,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let z = self.encoder.forward_t(x, train)?;
        let x_hat = self.decoder.forward_t(&z, train)?;
        let z_hat = self.reencoder.forward_t(&x_hat, train)?;
        Ok((x_hat, z, z_hat))
    }
}

pub struct Ganomaly {
    cfg: ModelConfig,
    weights: GanomalyWeights,
    varmap: VarMap,
    generator: Generator,
    discriminator: DcEncoder,
    smoother: GaussianSmoother,
    opt_g: Adam,
    opt_d: Adam,
}

impl Ganomaly {
    /// `encoder`: the paper's ‖G_E(x) − E(G(x))‖² (mean over latent units);
    /// `residual`: mean |x − x̂|, the contextual loss as a score.
    pub const SCORES: &'static [&'static str] = &["residual", "encoder"];

    pub fn new(
        cfg: ModelConfig,
        weights: GanomalyWeights,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let varmap = VarMap::new();
        let vb = var_builder(&varmap, device);
        let generator = Generator::new(vb.pp("g"), &cfg)?;
        let discriminator = DcEncoder::new(vb.pp("d"), &cfg, 1)?;
        seeded_init(&varmap, cfg.seed)?;
        let smoother = GaussianSmoother::new(cfg.sigma, cfg.size, device)?;
        let opt_g = adam_for(&varmap, &["g."], AdamConfig::default())?;
        let opt_d = adam_for(&varmap, &["d."], AdamConfig::default())?;
        Ok(Self {
            cfg,
            weights,
            varmap,
            generator,
            discriminator,
            smoother,
            opt_g,
            opt_d,
        })
    }

    /// The paper re-initialises the discriminator when it wins outright (loss < 1e-5).
    fn reinit_discriminator(&mut self) -> candle_core::Result<()> {
        // A fresh draw each time: derive the seed from how far training has got.
        let steps = self.opt_g.steps();
        seeded_init_prefix(&self.varmap, self.cfg.seed.wrapping_add(steps), "d.")?;
        self.opt_d.reset()
    }
}

impl Detector for Ganomaly {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Ganomaly
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn train_step(&mut self, x: &Tensor) -> Result<Vec<(&'static str, f32)>, ModelError> {
        let w = self.weights;
        let (x_hat, z, z_hat) = self.generator.forward_t(x, true)?;

        // Generator: feature matching against D's features of the real batch (eq. 8), L1
        // reconstruction (eq. 9), latent L2 (eq. 10). D(x)'s features do not depend on G.
        let feat_real = self.discriminator.features_t(x, true)?.detach();
        let feat_fake = self.discriminator.features_t(&x_hat, true)?;
        let adv = mse(&feat_real, &feat_fake)?;
        let con = l1(&x_hat, x)?;
        let enc = mse(&z, &z_hat)?;
        let loss_g = (((&adv * w.adv)? + (&con * w.con)?)? + (&enc * w.enc)?)?;
        self.opt_g.step(&loss_g.backward()?)?;

        // Discriminator on the same fakes, detached from G.
        let real = self.discriminator.forward_t(x, true)?;
        let fake = self.discriminator.forward_t(&x_hat.detach(), true)?;
        let loss_d = ((bce_with_logits(&real, 1.0)? + bce_with_logits(&fake, 0.0)?)? * 0.5)?;
        self.opt_d.step(&loss_d.backward()?)?;
        let loss_d: f32 = loss_d.to_scalar()?;
        if loss_d < 1e-5 {
            self.reinit_discriminator()?;
        }
        Ok(vec![
            ("g_adv", adv.to_scalar()?),
            ("g_con", con.to_scalar()?),
            ("g_enc", enc.to_scalar()?),
            ("d", loss_d),
        ])
    }

    fn infer(&self, x: &Tensor) -> Result<Inference, ModelError> {
        let (x_hat, z, z_hat) = self.generator.forward_t(x, false)?;
        let residual = (x - &x_hat)?.abs()?;
        let encoder = per_sample_mean(&(z - z_hat)?.sqr()?)?;
        let map = self.smoother.apply(&residual.mean_keepdim(1)?)?;
        let residual = per_sample_mean(&residual)?;
        debug_assert_eq!(Self::SCORES, ["residual", "encoder"]);
        Ok(Inference {
            reconstruction: x_hat,
            scores: vec![("residual", residual), ("encoder", encoder)],
            map,
        })
    }

    fn optimizer_state(&self) -> Result<OptimizerState, ModelError> {
        optimizers_state(&[("adam_g", &self.opt_g), ("adam_d", &self.opt_d)])
    }

    fn load_optimizer_state(&mut self, state: &OptimizerState) -> Result<(), ModelError> {
        load_optimizers_state(
            &mut [("adam_g", &mut self.opt_g), ("adam_d", &mut self.opt_d)],
            state,
        )
    }
}
