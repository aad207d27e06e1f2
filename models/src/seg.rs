//! `seg`: adversarial restoration plus segmentation, trained on synthetic anomalies
//! (after DRAEM, Zavrtanik, Kristan, Skočaj 2021, with a patch discriminator on the
//! restorations). Unlike the seven seed detectors it does not only model "normal": it is shown
//! what an anomaly can look like ([`crate::synth`]) and learns to find one.
//!
//! - The restoration network G (an encoder–decoder without skip connections, bottleneck at 1/8
//!   of the input side) maps a synthetically damaged image back to the clean one: L2 + SSIM
//!   loss, plus a non-saturating adversarial term from a patch discriminator D so restorations
//!   stay on the texture instead of blurring it.
//! - The segmentation network S (a U-Net) sees the pair (x, G(x)) and predicts the synthetic
//!   mask, trained with the focal loss.
//! - Scores: `seg-max` (the largest pixel of the smoothed segmentation map, DRAEM's image
//!   score), `seg-topk` (the mean of its top 1 %) and `residual` (mean |x − G(x)|). The
//!   anomaly map is the smoothed segmentation probability.
//!
//! Every network is fully convolutional (sides divisible by 8), so patch mode trains it on
//! crops and scores tiles like the others. Variables: `g.*`, `s.*` (exported), `d.*` (training).

use candle_core::{Device, Module, ModuleT, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use vigil_shared::rng::Rng;

use crate::conv::{Conv2d, ConvTranspose2d};
use crate::detector::{Detector, DetectorKind, Inference, ModelConfig, OptimizerState};
use crate::fused::leaky_relu;
use crate::loss::{bce_with_logits, focal_with_logits, mse, per_sample_mean};
use crate::maps::{reduce, ssim_residual, Reduction};
use crate::nn::{batch_norm, conv2d, conv_transpose2d, BatchNorm2d, SnConv2d};
use crate::optim::{Adam, AdamConfig};
use crate::smoothing::GaussianSmoother;
use crate::synth;
use crate::train_util::{
    adam_for, load_optimizers_state, optimizers_state, seeded_init, var_builder,
};
use crate::ModelError;

/// Stride-2 stages of every network: sides must be divisible by 2^DEPTH.
pub const DEPTH: usize = 3;

/// Base width of the networks: a quarter of the DCGAN pyramids' (16 at the bundles' 64), which
/// keeps a 64² patch step affordable on two CPU cores.
pub fn base_width(cfg: &ModelConfig) -> usize {
    (cfg.width / 4).max(4)
}

/// Loss weights: L2 and SSIM as DRAEM (1, 1), focal 1, and a small adversarial term; and
/// whether the restorer sees synthetic damage at all.
#[derive(Clone, Copy, Debug)]
pub struct SegWeights {
    pub l2: f64,
    pub ssim: f64,
    pub focal: f64,
    pub adv: f64,
    /// false: train on the clean images (the synthesiser-off ablation). The restorer is then a
    /// plain autoencoder and the head, with no mask to learn, is not trained.
    pub synthetic: bool,
}

impl Default for SegWeights {
    fn default() -> Self {
        Self {
            l2: 1.0,
            ssim: 1.0,
            focal: 1.0,
            adv: 0.05,
            synthetic: true,
        }
    }
}

impl SegWeights {
    /// The defaults, with the adversarial weight from `VIGIL_SEG_ADV` and the focal weight
    /// from `VIGIL_SEG_FOCAL` if set (non-negative numbers; `VIGIL_SEG_ADV=0` trains without
    /// the discriminator, `VIGIL_SEG_FOCAL=0` without the segmentation head, which then stays
    /// at its initial weights), and `VIGIL_SEG_SYNTH=0` to train on clean images only (no
    /// head either): the knobs of the ablations in docs/benchmarks.md, training settings only
    /// (the exported graph is the same).
    pub fn from_env() -> std::result::Result<Self, ModelError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> std::result::Result<Self, ModelError> {
        let mut w = Self::default();
        for (var, slot) in [
            ("VIGIL_SEG_ADV", &mut w.adv),
            ("VIGIL_SEG_FOCAL", &mut w.focal),
        ] {
            if let Some(s) = get(var) {
                *slot = match s.trim().parse::<f64>() {
                    Ok(v) if v >= 0.0 && v.is_finite() => v,
                    _ => {
                        return Err(ModelError::InvalidSetting(format!(
                            "{var}='{s}' is not a non-negative number"
                        )))
                    }
                };
            }
        }
        if let Some(s) = get("VIGIL_SEG_SYNTH") {
            w.synthetic = match s.trim() {
                "1" => true,
                "0" => false,
                _ => {
                    return Err(ModelError::InvalidSetting(format!(
                        "VIGIL_SEG_SYNTH='{s}' is neither 0 nor 1"
                    )))
                }
            };
        }
        Ok(w)
    }
}

/// How one layer of these networks changes its input: a 3×3 convolution, a 4×4 stride-2
/// convolution (halving), or a 4×4 stride-2 transposed convolution (doubling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Conv3,
    Down,
    Up,
}

/// A layer followed by batch norm and ReLU; variables `<name>.conv.weight`, `<name>.bn.*`.
#[derive(Clone, Debug)]
enum Layer {
    Conv(Conv2d),
    Deconv(ConvTranspose2d),
}

#[derive(Clone, Debug)]
struct Block {
    layer: Layer,
    bn: BatchNorm2d,
}

impl Block {
    fn new(vb: VarBuilder, op: Op, cin: usize, cout: usize) -> Result<Self> {
        let layer = match op {
            Op::Conv3 => Layer::Conv(conv2d(vb.pp("conv"), cin, cout, 3, 1, 1)?),
            Op::Down => Layer::Conv(conv2d(vb.pp("conv"), cin, cout, 4, 2, 1)?),
            Op::Up => Layer::Deconv(conv_transpose2d(vb.pp("conv"), cin, cout, 4, 2, 1)?),
        };
        Ok(Self {
            layer,
            bn: batch_norm(vb.pp("bn"), cout)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = match &self.layer {
            Layer::Conv(c) => c.forward(x)?,
            Layer::Deconv(t) => t.forward(x)?,
        };
        self.bn.forward_t(&y, train)?.relu()
    }
}

/// The layers of G as (name, op, cin, cout), in order; the head (`g.head`, 3×3 to `channels`,
/// tanh) follows. Shared with the export so both read the same variables.
pub fn restoration_plan(channels: usize, base: usize) -> Vec<(String, Op, usize, usize)> {
    let mut plan = vec![("in".to_string(), Op::Conv3, channels, base)];
    let mut c = base;
    for i in 1..=DEPTH {
        plan.push((format!("down{i}"), Op::Down, c, 2 * c));
        plan.push((format!("mid{i}"), Op::Conv3, 2 * c, 2 * c));
        c *= 2;
    }
    for i in (1..=DEPTH).rev() {
        plan.push((format!("up{i}"), Op::Up, c, c / 2));
        plan.push((format!("out{i}"), Op::Conv3, c / 2, c / 2));
        c /= 2;
    }
    plan
}

/// G: damaged image → restored image in [-1, 1].
#[derive(Clone, Debug)]
pub struct Restorer {
    blocks: Vec<Block>,
    head: Conv2d,
}

impl Restorer {
    pub fn new(vb: VarBuilder, channels: usize, base: usize) -> Result<Self> {
        let blocks = restoration_plan(channels, base)
            .into_iter()
            .map(|(name, op, cin, cout)| Block::new(vb.pp(name), op, cin, cout))
            .collect::<Result<_>>()?;
        Ok(Self {
            blocks,
            head: conv2d(vb.pp("head"), base, channels, 3, 1, 1)?,
        })
    }
}

impl ModuleT for Restorer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for b in &self.blocks {
            h = b.forward_t(&h, train)?;
        }
        self.head.forward(&h)?.tanh()
    }
}

/// S: a U-Net on `[x, G(x)]` (2·channels) to one logit per pixel. Variables: `in`, `in2`
/// (3×3 at full size), `down{i}` + `mid{i}` per level, `up{i}` then, on the skip concatenated
/// with it, `fuse{i}`; `head` (3×3 with bias, no batch norm).
#[derive(Clone, Debug)]
pub struct Segmenter {
    entry: [Block; 2],
    down: Vec<[Block; 2]>,
    up: Vec<[Block; 2]>,
    head: Conv2d,
}

impl Segmenter {
    pub fn new(vb: VarBuilder, channels: usize, base: usize) -> Result<Self> {
        let entry = [
            Block::new(vb.pp("in"), Op::Conv3, 2 * channels, base)?,
            Block::new(vb.pp("in2"), Op::Conv3, base, base)?,
        ];
        let (mut down, mut up) = (Vec::new(), Vec::new());
        for i in 1..=DEPTH {
            let c = base << (i - 1);
            down.push([
                Block::new(vb.pp(format!("down{i}")), Op::Down, c, 2 * c)?,
                Block::new(vb.pp(format!("mid{i}")), Op::Conv3, 2 * c, 2 * c)?,
            ]);
            up.push([
                Block::new(vb.pp(format!("up{i}")), Op::Up, 2 * c, c)?,
                Block::new(vb.pp(format!("fuse{i}")), Op::Conv3, 2 * c, c)?,
            ]);
        }
        let mut head = conv2d(vb.pp("head"), base, 1, 3, 1, 1)?;
        head.bias = Some(
            vb.pp("head")
                .get_with_hints(1, "bias", candle_nn::Init::Const(0.0))?,
        );
        Ok(Self {
            entry,
            down,
            up,
            head,
        })
    }
}

impl ModuleT for Segmenter {
    /// `[N, 2C, H, W]` → logits `[N, 1, H, W]`.
    fn forward_t(&self, pair: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.entry[0].forward_t(pair, train)?;
        let mut skips = vec![self.entry[1].forward_t(&h, train)?];
        for [d, m] in &self.down {
            let h = d.forward_t(skips.last().expect("entry"), train)?;
            skips.push(m.forward_t(&h, train)?);
        }
        let mut h = skips.pop().expect("bottleneck");
        for [u, f] in self.up.iter().rev() {
            let skip = skips.pop().expect("one skip per level");
            let up = u.forward_t(&h, train)?;
            h = f.forward_t(&Tensor::cat(&[&up, &skip], 1)?, train)?;
        }
        self.head.forward(&h)
    }
}

/// D: a spectrally normalised patch critic, one logit per 8×8-pixel cell of its input.
#[derive(Clone, Debug)]
struct PatchCritic {
    body: Vec<SnConv2d>,
    head: SnConv2d,
}

impl PatchCritic {
    fn new(vb: VarBuilder, channels: usize, base: usize) -> Result<Self> {
        let mut body = Vec::new();
        let (mut cin, mut c) = (channels, base);
        for i in 0..DEPTH {
            body.push(SnConv2d::new(
                vb.pp(format!("conv{i}")),
                cin,
                c,
                4,
                2,
                1,
                true,
            )?);
            cin = c;
            c *= 2;
        }
        let head = SnConv2d::new(vb.pp("head"), cin, 1, 3, 1, 1, true)?;
        Ok(Self { body, head })
    }
}

impl ModuleT for PatchCritic {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.body {
            h = leaky_relu(&conv.forward_t(&h, train)?, 0.2)?;
        }
        self.head.forward_t(&h, train)
    }
}

/// σ(l) = 1 / (1 + e^−l), from ops the graph has one for one.
pub fn sigmoid(l: &Tensor) -> Result<Tensor> {
    (l.neg()?.exp()? + 1.0)?.recip()
}

pub struct Seg {
    cfg: ModelConfig,
    weights: SegWeights,
    varmap: VarMap,
    restorer: Restorer,
    segmenter: Segmenter,
    critic: PatchCritic,
    smoother: GaussianSmoother,
    opt_gs: Adam,
    opt_d: Adam,
}

impl Seg {
    pub const SCORES: &'static [&'static str] = &["seg-max", "seg-topk", "residual"];

    pub fn new(
        cfg: ModelConfig,
        weights: SegWeights,
        device: &Device,
    ) -> std::result::Result<Self, ModelError> {
        if !cfg.size.is_multiple_of(1 << DEPTH) || cfg.size < 16 {
            return Err(ModelError::InvalidSetting(format!(
                "seg needs an input side of at least 16 and divisible by 8, not {}",
                cfg.size
            )));
        }
        let varmap = VarMap::new();
        let vb = var_builder(&varmap, device);
        let base = base_width(&cfg);
        let restorer = Restorer::new(vb.pp("g"), cfg.channels, base)?;
        let segmenter = Segmenter::new(vb.pp("s"), cfg.channels, base)?;
        let critic = PatchCritic::new(vb.pp("d"), cfg.channels, base)?;
        seeded_init(&varmap, cfg.seed)?;
        let smoother = GaussianSmoother::new(cfg.sigma, cfg.size, device)?;
        // Restoration and segmentation are supervised losses: Adam's usual β₁.
        let supervised = AdamConfig {
            lr: 4e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let opt_gs = adam_for(&varmap, &["g.", "s."], supervised)?;
        let opt_d = adam_for(&varmap, &["d."], AdamConfig::default())?;
        Ok(Self {
            cfg,
            weights,
            varmap,
            restorer,
            segmenter,
            critic,
            smoother,
            opt_gs,
            opt_d,
        })
    }

    /// The synthetic batch of this step, from a generator seeded by the seed and the step
    /// count, so a resumed run draws what an uninterrupted one would.
    fn corrupt(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, c, h, w) = x.dims4()?;
        let step = self.opt_gs.steps();
        let mut rng = Rng::new(self.cfg.seed ^ (step + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let v = x.flatten_all()?.to_vec1::<f32>()?;
        let out = synth::corrupt(&v, [n, c, h, w], &mut rng);
        let dev = x.device();
        Ok((
            Tensor::from_vec(out.images, (n, c, h, w), dev)?,
            Tensor::from_vec(out.masks, (n, 1, h, w), dev)?,
        ))
    }
}

impl Detector for Seg {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Seg
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn train_step(
        &mut self,
        x: &Tensor,
    ) -> std::result::Result<Vec<(&'static str, f32)>, ModelError> {
        let w = self.weights;
        let (damaged, mask) = if w.synthetic {
            self.corrupt(x)?
        } else {
            (x.clone(), x.zeros_like()?)
        };
        let restored = self.restorer.forward_t(&damaged, true)?;
        let l2 = mse(&restored, x)?;
        let ssim = ssim_residual(&restored, x)?.mean_all()?;
        let mut loss = ((&l2 * w.l2)? + (&ssim * w.ssim)?)?;
        let mut losses = vec![("l2", l2.to_scalar()?), ("ssim", ssim.to_scalar()?)];
        if w.synthetic && w.focal != 0.0 {
            let logits = self
                .segmenter
                .forward_t(&Tensor::cat(&[&damaged, &restored], 1)?, true)?;
            let focal = focal_with_logits(&logits, &mask)?;
            loss = (loss + (&focal * w.focal)?)?;
            losses.push(("focal", focal.to_scalar()?));
        }
        if w.adv == 0.0 {
            // The ablation without the adversarial term: no discriminator to train either.
            self.opt_gs.step(&loss.backward()?)?;
            return Ok(losses);
        }
        let adv = bce_with_logits(&self.critic.forward_t(&restored, true)?, 1.0)?;
        self.opt_gs.step(&(loss + (&adv * w.adv)?)?.backward()?)?;

        let real = self.critic.forward_t(x, true)?;
        let fake = self.critic.forward_t(&restored.detach(), true)?;
        let loss_d = ((bce_with_logits(&real, 1.0)? + bce_with_logits(&fake, 0.0)?)? * 0.5)?;
        self.opt_d.step(&loss_d.backward()?)?;
        losses.push(("g_adv", adv.to_scalar()?));
        losses.push(("d", loss_d.to_scalar()?));
        Ok(losses)
    }

    fn infer(&self, x: &Tensor) -> std::result::Result<Inference, ModelError> {
        let restored = self.restorer.forward_t(x, false)?;
        let logits = self
            .segmenter
            .forward_t(&Tensor::cat(&[x, &restored], 1)?, false)?;
        let map = self.smoother.apply(&sigmoid(&logits)?)?;
        let residual = per_sample_mean(&(x - &restored)?.abs()?)?;
        debug_assert_eq!(Self::SCORES, ["seg-max", "seg-topk", "residual"]);
        Ok(Inference {
            scores: vec![
                ("seg-max", reduce(&map, Reduction::Max)?),
                ("seg-topk", reduce(&map, Reduction::TopK)?),
                ("residual", residual),
            ],
            reconstruction: restored,
            map,
        })
    }

    fn optimizer_state(&self) -> std::result::Result<OptimizerState, ModelError> {
        optimizers_state(&[("adam_gs", &self.opt_gs), ("adam_d", &self.opt_d)])
    }

    fn load_optimizer_state(
        &mut self,
        state: &OptimizerState,
    ) -> std::result::Result<(), ModelError> {
        load_optimizers_state(
            &mut [("adam_gs", &mut self.opt_gs), ("adam_d", &mut self.opt_d)],
            state,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::config;

    #[test]
    fn ablation_weights_come_from_the_environment_and_bad_values_are_named() {
        fn env(pairs: Vec<(&'static str, &'static str)>) -> impl Fn(&str) -> Option<String> {
            move |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        }
        let w = SegWeights::from_lookup(env(vec![])).unwrap();
        assert_eq!((w.adv, w.focal), (SegWeights::default().adv, 1.0));
        let set = vec![("VIGIL_SEG_ADV", "0"), ("VIGIL_SEG_FOCAL", " 0 ")];
        let w = SegWeights::from_lookup(env(set)).unwrap();
        assert_eq!((w.adv, w.focal), (0.0, 0.0));
        assert!(w.synthetic);
        let w = SegWeights::from_lookup(env(vec![("VIGIL_SEG_SYNTH", "0")])).unwrap();
        assert!(!w.synthetic);
        let e = SegWeights::from_lookup(env(vec![("VIGIL_SEG_SYNTH", "no")])).unwrap_err();
        assert!(e.to_string().contains("VIGIL_SEG_SYNTH='no'"), "{e}");
        for bad in ["-1", "nan", "inf", "off"] {
            let e = SegWeights::from_lookup(env(vec![("VIGIL_SEG_FOCAL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("VIGIL_SEG_FOCAL") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn training_without_the_head_or_the_critic_reports_only_the_terms_it_trains() {
        let cfg = config(32, 1, 8, 16);
        let weights = SegWeights {
            adv: 0.0,
            focal: 0.0,
            ..SegWeights::default()
        };
        let mut d = Seg::new(cfg, weights, &Device::Cpu).unwrap();
        let x = crate::testutil::randn(&[2, 1, 32, 32], 3, 0.0)
            .tanh()
            .unwrap();
        let names: Vec<_> = d
            .train_step(&x)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["l2", "ssim"]);

        // Without the synthesiser the head has no mask to learn, whatever its weight.
        let weights = SegWeights {
            synthetic: false,
            ..SegWeights::default()
        };
        let mut d = Seg::new(config(32, 1, 8, 16), weights, &Device::Cpu).unwrap();
        let names: Vec<_> = d
            .train_step(&x)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["l2", "ssim", "g_adv", "d"]);
    }

    #[test]
    fn shapes_and_scores() {
        let cfg = config(32, 3, 8, 16);
        let mut d = Seg::new(cfg, SegWeights::default(), &Device::Cpu).unwrap();
        let x = crate::testutil::randn(&[4, 3, 32, 32], 1, 0.0)
            .tanh()
            .unwrap();
        let losses = d.train_step(&x).unwrap();
        assert!(losses.iter().all(|(_, v)| v.is_finite()), "{losses:?}");
        let inf = d.infer(&x).unwrap();
        assert_eq!(inf.map.dims(), &[4, 1, 32, 32]);
        assert_eq!(inf.reconstruction.dims(), &[4, 3, 32, 32]);
        for (name, s) in &inf.scores {
            assert_eq!(s.dims(), &[4], "{name}");
        }
        let e = Seg::new(config(36, 1, 8, 16), SegWeights::default(), &Device::Cpu)
            .err()
            .unwrap();
        assert!(e.to_string().contains("36"), "{e}");
    }

    /// The behaviour the detector exists for: after a short training on a clean texture, a
    /// stain it never saw (a dark disc, unlike the synthesiser's blobs in shape) lights the
    /// segmentation map inside the stain, not around it.
    #[test]
    fn learns_to_segment_a_defect_it_never_saw() {
        let s = 32;
        let texture = |phase: f32| -> Vec<f32> {
            (0..s * s)
                .map(|p| {
                    let (y, x) = ((p / s) as f32, (p % s) as f32);
                    0.5 * ((x * 0.9 + phase).sin() * (y * 0.5).cos())
                })
                .collect()
        };
        let batch: Vec<f32> = (0..16).flat_map(|i| texture(i as f32 * 0.37)).collect();
        let x = Tensor::from_vec(batch, (16, 1, s, s), &Device::Cpu).unwrap();
        let mut d = Seg::new(config(s, 1, 8, 32), SegWeights::default(), &Device::Cpu).unwrap();
        for _ in 0..150 {
            d.train_step(&x).unwrap();
        }
        let mut img = texture(0.1);
        let inside = |p: usize| ((p / s) as f32 - 15.5).hypot((p % s) as f32 - 12.5) < 4.0;
        for (p, v) in img.iter_mut().enumerate() {
            if inside(p) {
                *v = -0.9;
            }
        }
        let t = Tensor::from_vec(img, (1, 1, s, s), &Device::Cpu).unwrap();
        let map: Vec<f32> = d
            .infer(&t)
            .unwrap()
            .map
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mean = |f: &dyn Fn(usize) -> bool| {
            let v: Vec<f32> = (0..s * s).filter(|&p| f(p)).map(|p| map[p]).collect();
            v.iter().sum::<f32>() / v.len() as f32
        };
        let (m_in, m_out) = (mean(&|p| inside(p)), mean(&|p| !inside(p)));
        // 150 steps are a start, not a trained model: the map has not yet learnt to be near 0
        // everywhere, but the stain already stands out (0.44 inside, 0.17 outside here).
        assert!(
            m_in > 0.3 && m_in > 2.0 * m_out,
            "map inside {m_in:.3}, outside {m_out:.3}"
        );
    }
}
