//! ALAD (Zenati et al. 2018, shared/papers/zenati-alad.txt): a BiGAN with two extra
//! discriminators that enforce cycle consistency, D_xx(x, x') in image space and D_zz(z, z') in
//! latent space, spectral normalisation on all three discriminators. The DCGAN-style bodies of
//! Table IX scale with the image size (the pyramid depth follows `size`).

use candle_core::{Device, ModuleT, Tensor};
use candle_nn::VarMap;
use vigil_shared::rng::Rng;

use crate::detector::{Detector, DetectorKind, Inference, ModelConfig, OptimizerState};
use crate::loss::{bce_with_logits, l1_per_sample, per_sample_mean};
use crate::nn::{Critic, DcDecoder, DcEncoder, JointCritic, Mlp};
use crate::optim::{Adam, AdamConfig};
use crate::smoothing::GaussianSmoother;
use crate::train_util::{
    adam_for, load_optimizers_state, optimizers_state, randn, seeded_init, var_builder,
};
use crate::ModelError;

pub struct Alad {
    cfg: ModelConfig,
    varmap: VarMap,
    encoder: DcEncoder,
    generator: DcDecoder,
    d_xz: JointCritic,
    d_xx: Critic,
    d_zz: Mlp,
    smoother: GaussianSmoother,
    opt_ge: Adam,
    opt_d: Adam,
    rng: Rng,
}

/// softplus(−l) = −log σ(l), per sample: the ALAD "logits" score is the cross-entropy of
/// D_xx(x, G(E(x))) against the "real pair" label.
fn softplus_neg(l: &Tensor) -> candle_core::Result<Tensor> {
    let pos = l.neg()?.relu()?;
    let soft = (l.abs()?.neg()?.exp()? + 1.0)?.log()?;
    pos + soft
}

impl Alad {
    /// `features` (paper's default): Σ|f_xx(x, x) − f_xx(x, G(E(x)))|; `l1`/`l2`: Σ|x − x̂|,
    /// Σ(x − x̂)²; `logits`: −log σ(D_xx(x, G(E(x)))).
    pub const SCORES: &'static [&'static str] = &["features", "l1", "l2", "logits"];

    pub fn new(cfg: ModelConfig, device: &Device) -> Result<Self, ModelError> {
        let varmap = VarMap::new();
        let vb = var_builder(&varmap, device);
        let encoder = DcEncoder::new(vb.pp("e"), &cfg, cfg.latent)?;
        let generator = DcDecoder::new(vb.pp("g"), &cfg)?;
        let d_xz = JointCritic::new(vb.pp("dxz"), &cfg, true)?;
        // D_xx sees the image pair concatenated along the channels.
        let pair = ModelConfig {
            channels: 2 * cfg.channels,
            ..cfg.clone()
        };
        let d_xx = Critic::new(vb.pp("dxx"), &pair, 1, true)?;
        let d_zz = Mlp::new(vb.pp("dzz"), &[2 * cfg.latent, 64, 32, 1], true)?;
        seeded_init(&varmap, cfg.seed)?;
        let smoother = GaussianSmoother::new(cfg.sigma, cfg.size, device)?;
        let opt_ge = adam_for(&varmap, &["e.", "g."], AdamConfig::default())?;
        let opt_d = adam_for(&varmap, &["dxz.", "dxx.", "dzz."], AdamConfig::default())?;
        let rng = Rng::new(cfg.seed ^ 0xa1ad);
        Ok(Self {
            cfg,
            varmap,
            encoder,
            generator,
            d_xz,
            d_xx,
            d_zz,
            smoother,
            opt_ge,
            opt_d,
            rng,
        })
    }

    fn xx(&self, a: &Tensor, b: &Tensor, train: bool) -> candle_core::Result<(Tensor, Tensor)> {
        let f = self.d_xx.features_t(&Tensor::cat(&[a, b], 1)?, train)?;
        let l = self.d_xx.head_t(&f, train)?.flatten_all()?;
        Ok((f, l))
    }

    fn zz(&self, a: &Tensor, b: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let f = self.d_zz.features_t(&Tensor::cat(&[a, b], 1)?, train)?;
        self.d_zz.head_t(&f, train)?.flatten_all()
    }

    /// The six logits (real, fake) of D_xz, D_xx, D_zz for one batch.
    #[allow(clippy::too_many_arguments)]
    fn logits(
        &self,
        x: &Tensor,
        z: &Tensor,
        ex: &Tensor,
        gz: &Tensor,
        rec: &Tensor,
        z_cycle: &Tensor,
    ) -> candle_core::Result<[Tensor; 6]> {
        let (_, xz_real) = self.d_xz.forward_t(x, ex, true)?;
        let (_, xz_fake) = self.d_xz.forward_t(gz, z, true)?;
        let (_, xx_real) = self.xx(x, x, true)?;
        let (_, xx_fake) = self.xx(x, rec, true)?;
        let zz_real = self.zz(z, z, true)?;
        let zz_fake = self.zz(z, z_cycle, true)?;
        Ok([xz_real, xz_fake, xx_real, xx_fake, zz_real, zz_fake])
    }

    fn bigan_loss(logits: &[Tensor; 6], real_label: f64) -> candle_core::Result<Tensor> {
        let mut total = Tensor::new(0f32, logits[0].device())?;
        for pair in logits.chunks(2) {
            total = (total + bce_with_logits(&pair[0], real_label)?)?;
            total = (total + bce_with_logits(&pair[1], 1.0 - real_label)?)?;
        }
        Ok(total)
    }
}

impl Detector for Alad {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Alad
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
        let rec = self.generator.forward_t(&ex, true)?;
        let z_cycle = self.encoder.forward_t(&gz, true)?;

        let det = self.logits(
            x,
            &z,
            &ex.detach(),
            &gz.detach(),
            &rec.detach(),
            &z_cycle.detach(),
        )?;
        let loss_d = Self::bigan_loss(&det, 1.0)?;
        self.opt_d.step(&loss_d.backward()?)?;

        let live = self.logits(x, &z, &ex, &gz, &rec, &z_cycle)?;
        let loss_ge = Self::bigan_loss(&live, 0.0)?;
        self.opt_ge.step(&loss_ge.backward()?)?;
        Ok(vec![
            ("d", loss_d.to_scalar()?),
            ("ge", loss_ge.to_scalar()?),
        ])
    }

    fn infer(&self, x: &Tensor) -> Result<Inference, ModelError> {
        let ex = self.encoder.forward_t(x, false)?;
        let rec = self.generator.forward_t(&ex, false)?;
        let (f_real, _) = self.xx(x, x, false)?;
        let (f_rec, l_rec) = self.xx(x, &rec, false)?;
        let diff = (x - &rec)?;
        let abs = diff.abs()?;
        let map = self.smoother.apply(&abs.mean_keepdim(1)?)?;
        debug_assert_eq!(Self::SCORES, ["features", "l1", "l2", "logits"]);
        Ok(Inference {
            scores: vec![
                ("features", l1_per_sample(&f_real, &f_rec)?),
                ("l1", per_sample_mean(&abs)?),
                ("l2", per_sample_mean(&diff.sqr()?)?),
                ("logits", softplus_neg(&l_rec)?),
            ],
            reconstruction: rec,
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
