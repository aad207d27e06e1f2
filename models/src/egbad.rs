//! EGBAD (Zenati et al. 2018, arXiv 1802.06222; survey text): a BiGAN — encoder E, generator G
//! and a joint discriminator D(x, z) — whose score mixes the residual ‖x − G(E(x))‖₁ with the
//! discriminator-feature distance, weighted by α (the paper's λ-style weight, 0.1).

use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarMap;
use vigil_shared::rng::Rng;

use crate::detector::{Detector, DetectorKind, Inference, ModelConfig, OptimizerState};
use crate::loss::{bce_with_logits, l1_per_sample, per_sample_mean};
use crate::nn::{DcDecoder, DcEncoder, JointCritic};
use crate::optim::{Adam, AdamConfig};
use crate::smoothing::GaussianSmoother;
use crate::train_util::{
    adam_for, load_optimizers_state, optimizers_state, randn, seeded_init, var_builder,
};
use crate::ModelError;

/// Weight of the feature term in the combined score (EGBAD uses 0.1 with feature matching).
pub const EGBAD_ALPHA: f64 = 0.1;

pub struct Egbad {
    cfg: ModelConfig,
    varmap: VarMap,
    encoder: DcEncoder,
    generator: DcDecoder,
    disc: JointCritic,
    smoother: GaussianSmoother,
    opt_ge: Adam,
    opt_d: Adam,
    rng: Rng,
}

impl Egbad {
    /// `residual`: mean |x − G(E(x))|; `combined`: (1 − α)·Σ|x − G(E(x))| + α·Σ|f(x, E(x)) −
    /// f(G(E(x)), E(x))| (the paper's score); `features`: the feature term alone.
    pub const SCORES: &'static [&'static str] = &["residual", "combined", "features"];

    pub fn new(cfg: ModelConfig, device: &Device) -> Result<Self, ModelError> {
        let varmap = VarMap::new();
        let vb = var_builder(&varmap, device);
        let encoder = DcEncoder::new(vb.pp("e"), &cfg, cfg.latent)?;
        let generator = DcDecoder::new(vb.pp("g"), &cfg)?;
        let disc = JointCritic::new(vb.pp("d"), &cfg, false)?;
        seeded_init(&varmap, cfg.seed)?;
        let smoother = GaussianSmoother::new(cfg.sigma, cfg.size, device)?;
        let opt_ge = adam_for(&varmap, &["e.", "g."], AdamConfig::default())?;
        let opt_d = adam_for(&varmap, &["d."], AdamConfig::default())?;
        let rng = Rng::new(cfg.seed ^ 0xe9bad);
        Ok(Self {
            cfg,
            varmap,
            encoder,
            generator,
            disc,
            smoother,
            opt_ge,
            opt_d,
            rng,
        })
    }
}

impl Detector for Egbad {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Egbad
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
        let ex = self.encoder.forward_t(x, true)?;
        let gz = self.generator.forward_t(&z, true)?;

        // Discriminator: (x, E(x)) real, (G(z), z) fake.
        let (_, real) = self.disc.forward_t(x, &ex.detach(), true)?;
        let (_, fake) = self.disc.forward_t(&gz.detach(), &z, true)?;
        let loss_d = (bce_with_logits(&real, 1.0)? + bce_with_logits(&fake, 0.0)?)?;
        self.opt_d.step(&loss_d.backward()?)?;

        // Encoder and generator: the labels swapped.
        let (_, real) = self.disc.forward_t(x, &ex, true)?;
        let (_, fake) = self.disc.forward_t(&gz, &z, true)?;
        let loss_ge = (bce_with_logits(&real, 0.0)? + bce_with_logits(&fake, 1.0)?)?;
        self.opt_ge.step(&loss_ge.backward()?)?;
        Ok(vec![
            ("d", loss_d.to_scalar()?),
            ("ge", loss_ge.to_scalar()?),
        ])
    }

    fn infer(&self, x: &Tensor) -> Result<Inference, ModelError> {
        let ex = self.encoder.forward_t(x, false)?;
        let rec = self.generator.forward_t(&ex, false)?;
        let (f_real, _) = self.disc.forward_t(x, &ex, false)?;
        let (f_rec, _) = self.disc.forward_t(&rec, &ex, false)?;
        let diff = (x - &rec)?.abs()?;
        let features = l1_per_sample(&f_real, &f_rec)?;
        let combined =
            ((l1_per_sample(x, &rec)? * (1.0 - EGBAD_ALPHA))? + (&features * EGBAD_ALPHA)?)?;
        let map = self.smoother.apply(&diff.mean_keepdim(1)?)?;
        debug_assert_eq!(Self::SCORES, ["residual", "combined", "features"]);
        Ok(Inference {
            reconstruction: rec,
            scores: vec![
                ("residual", per_sample_mean(&diff)?),
                ("combined", combined),
                ("features", features),
            ],
            map,
        })
    }

    fn optimizer_state(&self) -> Result<OptimizerState, ModelError> {
        optimizers_state(&[("adam_ge", &self.opt_ge), ("adam_d", &self.opt_d)])
    }

    fn load_optimizer_state(&mut self, state: &OptimizerState) -> Result<(), ModelError> {
        load_optimizers_state(
            &mut [("adam_ge", &mut self.opt_ge), ("adam_d", &mut self.opt_d)],
            state,
        )
    }
}
