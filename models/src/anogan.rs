//! AnoGAN (Schlegl et al. 2017; survey text eqs. 4–7): a DCGAN trained on normal images; at test
//! time Γ steps of latent search per image minimise
//! L(z) = (1 − λ)·Σ|x − G(z)| + λ·Σ|f(x) − f(G(z))| (f: the discriminator's feature tap), and
//! the score is the final L. The search needs gradients, so scoring is slow and cannot be
//! exported as a graph: see `DetectorKind::needs_search`.
//!
//! Γ defaults to 500 and λ to 0.1 (the paper); `VIGIL_ANOGAN_STEPS` overrides Γ (the
//! acceptance test and quick runs use fewer, see docs/benchmarks.md).

use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarMap;
use vigil_shared::rng::Rng;

use crate::detector::{Detector, DetectorKind, Inference, ModelConfig, OptimizerState};
use crate::loss::{bce_with_logits, l1_per_sample, per_sample_mean};
use crate::nn::{DcDecoder, DcEncoder};
use crate::optim::{Adam, AdamConfig};
use crate::smoothing::GaussianSmoother;
use crate::train_util::{
    adam_for, load_optimizers_state, optimizers_state, randn, seeded_init, var_builder,
    LatentSearch,
};
use crate::ModelError;

pub struct AnoGan {
    cfg: ModelConfig,
    varmap: VarMap,
    generator: DcDecoder,
    disc: DcEncoder,
    smoother: GaussianSmoother,
    opt_g: Adam,
    opt_d: Adam,
    rng: Rng,
    pub search: LatentSearch,
}

/// Γ from `VIGIL_ANOGAN_STEPS`, if set to a positive integer.
fn steps_override() -> Result<Option<usize>, ModelError> {
    match std::env::var("VIGIL_ANOGAN_STEPS") {
        Err(_) => Ok(None),
        Ok(s) => match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(ModelError::InvalidSetting(format!(
                "VIGIL_ANOGAN_STEPS='{s}' is not a positive integer"
            ))),
        },
    }
}

impl AnoGan {
    /// `search`: the final L(z_Γ) (paper); `residual`: mean |x − G(z_Γ)|.
    pub const SCORES: &'static [&'static str] = &["search", "residual"];

    pub fn new(cfg: ModelConfig, device: &Device) -> Result<Self, ModelError> {
        let varmap = VarMap::new();
        let vb = var_builder(&varmap, device);
        let generator = DcDecoder::new(vb.pp("g"), &cfg)?;
        let disc = DcEncoder::new(vb.pp("d"), &cfg, 1)?;
        seeded_init(&varmap, cfg.seed)?;
        let smoother = GaussianSmoother::new(cfg.sigma, cfg.size, device)?;
        let opt_g = adam_for(&varmap, &["g."], AdamConfig::default())?;
        let opt_d = adam_for(&varmap, &["d."], AdamConfig::default())?;
        let rng = Rng::new(cfg.seed ^ 0xa70);
        let mut search = LatentSearch::default();
        if let Some(n) = steps_override()? {
            search.steps = n;
        }
        Ok(Self {
            cfg,
            varmap,
            generator,
            disc,
            smoother,
            opt_g,
            opt_d,
            rng,
            search,
        })
    }
}

impl Detector for AnoGan {
    fn kind(&self) -> DetectorKind {
        DetectorKind::AnoGan
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
        let real_l = self.disc.forward_t(x, true)?;
        let fake_l = self.disc.forward_t(&fake.detach(), true)?;
        let loss_d = (bce_with_logits(&real_l, 1.0)? + bce_with_logits(&fake_l, 0.0)?)?;
        self.opt_d.step(&loss_d.backward()?)?;
        // Non-saturating generator loss (DCGAN).
        let loss_g = bce_with_logits(&self.disc.forward_t(&fake, true)?, 1.0)?;
        self.opt_g.step(&loss_g.backward()?)?;
        Ok(vec![("d", loss_d.to_scalar()?), ("g", loss_g.to_scalar()?)])
    }

    fn infer(&self, x: &Tensor) -> Result<Inference, ModelError> {
        let n = x.dim(0)?;
        // The same start for every call: scoring is deterministic.
        let mut rng = Rng::new(self.cfg.seed ^ 0x5ea4c);
        let z0 = randn(&mut rng, &[n, self.cfg.latent, 1, 1], x.device())?;
        let f_x = self.disc.features_t(x, false)?.detach();
        let lambda = self.search.lambda;
        let loss = |z: &Tensor| -> candle_core::Result<Tensor> {
            let gz = self.generator.forward_t(z, false)?;
            let res = l1_per_sample(x, &gz)?;
            let feat = l1_per_sample(&f_x, &self.disc.features_t(&gz, false)?)?;
            (res * (1.0 - lambda))? + (feat * lambda)?
        };
        let (z, score) = self.search.run(&z0, loss)?;
        let rec = self.generator.forward_t(&z, false)?.detach();
        let abs = (x - &rec)?.abs()?;
        let map = self.smoother.apply(&abs.mean_keepdim(1)?)?;
        debug_assert_eq!(Self::SCORES, ["search", "residual"]);
        Ok(Inference {
            scores: vec![("search", score), ("residual", per_sample_mean(&abs)?)],
            reconstruction: rec,
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
