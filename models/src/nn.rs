//! The networks the detectors are built from, each from a `VarBuilder` (its `pp` path names the
//! variables in `weights.safetensors`): DCGAN encoder and decoder pyramids with batch norm, and
//! the batch-norm-free critics (plain, joint image–latent, MLP) with optional spectral
//! normalisation.

use candle_core::{DType, Module, ModuleT, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::conv::{Conv2d, ConvTranspose2d};
use crate::detector::ModelConfig;
use crate::fused::{leaky_relu, BatchNormTrain, BatchStats};
use vigil_shared::manifest::Decoder;

/// DCGAN initialisation (Radford et al.): conv weights N(0, 0.02), batch-norm scale N(1, 0.02).
const CONV_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

pub fn conv2d(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Result<Conv2d> {
    Ok(Conv2d {
        weight: vb.get_with_hints((cout, cin, k, k), "weight", CONV_INIT)?,
        bias: None,
        stride,
        pad,
    })
}

pub fn conv_transpose2d(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Result<ConvTranspose2d> {
    Ok(ConvTranspose2d {
        weight: vb.get_with_hints((cin, cout, k, k), "weight", CONV_INIT)?,
        bias: None,
        stride,
        pad,
    })
}

/// Batch normalisation over `[N, C, H, W]` (PyTorch semantics: ε = 1e-5, momentum 0.1,
/// unbiased running variance). Variables `weight`, `bias`, `running_mean`, `running_var`.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
}

const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm2d {
    fn per_channel(t: &Tensor) -> Result<Tensor> {
        t.reshape((1, t.elem_count(), 1, 1))
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let unbiased = count as f64 / (count.max(2) - 1) as f64;
        let m = ((self.running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (mean * BN_MOMENTUM)?)?;
        let v = ((self.running_var.as_tensor() * (1.0 - BN_MOMENTUM))?
            + (var * (BN_MOMENTUM * unbiased))?)?;
        self.running_mean.set(&m)?;
        self.running_var.set(&v)
    }
}

impl ModuleT for BatchNorm2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if !train {
            let inv = (self.running_var.as_tensor() + BN_EPS as f64)?
                .sqrt()?
                .recip()?;
            let scale = (&self.weight * &inv)?;
            let shift = (&self.bias - (self.running_mean.as_tensor() * &scale)?)?;
            return x
                .broadcast_mul(&Self::per_channel(&scale)?)?
                .broadcast_add(&Self::per_channel(&shift)?);
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            let stats = BatchStats::default();
            let op = BatchNormTrain {
                eps: BN_EPS,
                stats: stats.clone(),
            };
            let y = x.contiguous()?.apply_op3(&self.weight, &self.bias, op)?;
            let (mean, var) = stats
                .lock()
                .expect("batch stats lock poisoned")
                .take()
                .expect("forward sets stats");
            let dev = x.device();
            self.update_running(
                &Tensor::from_vec(mean, c, dev)?,
                &Tensor::from_vec(var, c, dev)?,
                n * h * w,
            )?;
            return Ok(y);
        }
        // Other devices: the same computation from candle's differentiable ops.
        let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc
            .sqr()?
            .mean_keepdim(0)?
            .mean_keepdim(2)?
            .mean_keepdim(3)?;
        let y = xc.broadcast_div(&(&var + BN_EPS as f64)?.sqrt()?)?;
        self.update_running(
            &mean.flatten_all()?.detach(),
            &var.flatten_all()?.detach(),
            n * h * w,
        )?;
        y.broadcast_mul(&Self::per_channel(&self.weight)?)?
            .broadcast_add(&Self::per_channel(&self.bias)?)
    }
}

pub fn batch_norm(vb: VarBuilder, c: usize) -> Result<BatchNorm2d> {
    let var = |name: &str, init: f64| -> Result<Var> {
        // A VarMap-backed builder hands out the variable itself: `set` writes through to it.
        Var::from_tensor(&vb.get_with_hints(c, name, Init::Const(init))?)
    };
    Ok(BatchNorm2d {
        weight: vb.get_with_hints(c, "weight", Init::Const(1.0))?,
        bias: vb.get_with_hints(c, "bias", Init::Const(0.0))?,
        running_mean: var("running_mean", 0.0)?,
        running_var: var("running_var", 1.0)?,
    })
}

/// Number of stride-2 stages between `size` and the 4×4 bottleneck.
fn pyramid_depth(size: usize) -> Result<usize> {
    if !size.is_power_of_two() || !(16..=1024).contains(&size) {
        candle_core::bail!(
            "image size {size} is not supported: use a power of two between 16 and 1024"
        )
    }
    Ok(size.trailing_zeros() as usize - 2)
}

/// The DCGAN encoder of GANomaly (and the discriminator body of several detectors):
/// conv(4,2,1)+LeakyReLU, then conv(4,2,1)+BN+LeakyReLU until 4×4, then conv(4,1,0) to `out`×1×1.
#[derive(Clone, Debug)]
pub struct DcEncoder {
    first: Conv2d,
    pyramid: Vec<(Conv2d, BatchNorm2d)>,
    last: Conv2d,
}

impl DcEncoder {
    /// `cfg.channels`×`cfg.size`² images to `out` channels, base width `cfg.width`.
    pub fn new(vb: VarBuilder, cfg: &ModelConfig, out: usize) -> Result<Self> {
        let (channels, width) = (cfg.channels, cfg.width);
        let depth = pyramid_depth(cfg.size)?;
        let first = conv2d(vb.pp("conv0"), channels, width, 4, 2, 1)?;
        let mut pyramid = Vec::new();
        let mut c = width;
        for i in 1..depth {
            let conv = conv2d(vb.pp(format!("conv{i}")), c, c * 2, 4, 2, 1)?;
            let bn = batch_norm(vb.pp(format!("bn{i}")), c * 2)?;
            pyramid.push((conv, bn));
            c *= 2;
        }
        let last = conv2d(vb.pp("head"), c, out, 4, 1, 0)?;
        Ok(Self {
            first,
            pyramid,
            last,
        })
    }

    /// Activations before the last convolution: `[N, C, 4, 4]`. Discriminators use them for
    /// feature matching and feature-space scores.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = leaky_relu(&self.first.forward(x)?, 0.2)?;
        for (conv, bn) in &self.pyramid {
            h = leaky_relu(&bn.forward_t(&conv.forward(&h)?, train)?, 0.2)?;
        }
        Ok(h)
    }

    pub fn head(&self, features: &Tensor) -> Result<Tensor> {
        self.last.forward(features)
    }
}

impl ModuleT for DcEncoder {
    /// `[N, C, S, S]` → `[N, out, 1, 1]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.head(&self.features_t(x, train)?)
    }
}

/// One doubling of the decoder: a 4×4 transposed convolution of stride 2 (DCGAN), or
/// nearest-neighbour ×2 upsampling then a 3×3 convolution ([`Decoder::Upsample`]).
#[derive(Clone, Debug)]
enum Up {
    Deconv(ConvTranspose2d),
    Resize(Conv2d),
}

impl Up {
    fn new(vb: VarBuilder, decoder: Decoder, cin: usize, cout: usize) -> Result<Self> {
        Ok(match decoder {
            Decoder::Deconv => Up::Deconv(conv_transpose2d(vb, cin, cout, 4, 2, 1)?),
            Decoder::Upsample => Up::Resize(conv2d(vb, cin, cout, 3, 1, 1)?),
        })
    }
}

impl Module for Up {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Up::Deconv(t) => t.forward(x),
            Up::Resize(c) => c.forward(&upsample2(x)?),
        }
    }
}

/// Nearest-neighbour ×2 of `[N, C, H, W]`, as a broadcast (whose gradient is a sum) rather than
/// candle's `upsample_nearest2d`, whose backward is a grouped convolution.
pub fn upsample2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, 2, w, 2))?
        .reshape((n, c, 2 * h, 2 * w))
}

/// The decoder's first stage, latent `[N, L, 1, 1]` to `[N, C, 4, 4]`: a 4×4 transposed
/// convolution (DCGAN), or the same weights `[L, C, 4, 4]` as a matrix product
/// ([`Decoder::Upsample`], which has no transposed convolution anywhere).
#[derive(Clone, Debug)]
enum Stem {
    Deconv(ConvTranspose2d),
    Linear(Tensor),
}

impl Module for Stem {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        match self {
            Stem::Deconv(t) => t.forward(z),
            Stem::Linear(w) => {
                let (latent, c, kh, kw) = w.dims4()?;
                let n = z.dim(0)?;
                z.reshape((n, latent))?
                    .matmul(&w.reshape((latent, c * kh * kw))?)?
                    .reshape((n, c, kh, kw))
            }
        }
    }
}

/// The DCGAN generator / decoder: convT(4,1,0)+BN+ReLU from the latent to 4×4, convT(4,2,1)+BN+ReLU
/// doubling the size, and a last convT(4,2,1)+tanh to `channels`×S×S. With
/// [`Decoder::Upsample`] each doubling is upsample ×2 + conv(3,1,1) and the first stage a
/// matrix product; variables `proj0`, `conv{i}`, `head` instead of `convt{i}`, `head`.
#[derive(Clone, Debug)]
pub struct DcDecoder {
    stem: (Stem, BatchNorm2d),
    pyramid: Vec<(Up, BatchNorm2d)>,
    last: Up,
}

impl DcDecoder {
    /// A `cfg.latent` code to `cfg.channels`×`cfg.size`² images, base width `cfg.width`.
    pub fn new(vb: VarBuilder, cfg: &ModelConfig) -> Result<Self> {
        let depth = pyramid_depth(cfg.size)?;
        // Channels at 4×4 are `width · 2^(depth−1)`, halving at each doubling of the size.
        let mut c = cfg.width << (depth - 1);
        let stem = match cfg.decoder {
            Decoder::Deconv => {
                Stem::Deconv(conv_transpose2d(vb.pp("convt0"), cfg.latent, c, 4, 1, 0)?)
            }
            Decoder::Upsample => Stem::Linear(vb.pp("proj0").get_with_hints(
                (cfg.latent, c, 4, 4),
                "weight",
                CONV_INIT,
            )?),
        };
        let stem = (stem, batch_norm(vb.pp("bn0"), c)?);
        let name = |i: usize| match cfg.decoder {
            Decoder::Deconv => format!("convt{i}"),
            Decoder::Upsample => format!("conv{i}"),
        };
        let mut pyramid = Vec::new();
        for i in 1..depth {
            pyramid.push((
                Up::new(vb.pp(name(i)), cfg.decoder, c, c / 2)?,
                batch_norm(vb.pp(format!("bn{i}")), c / 2)?,
            ));
            c /= 2;
        }
        let last = Up::new(vb.pp("head"), cfg.decoder, c, cfg.channels)?;
        Ok(Self {
            stem,
            pyramid,
            last,
        })
    }
}

impl ModuleT for DcDecoder {
    /// `[N, latent, 1, 1]` → `[N, C, S, S]` in [-1, 1].
    fn forward_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let (stem, bn) = &self.stem;
        let mut h = bn.forward_t(&stem.forward(z)?, train)?.relu()?;
        for (up, bn) in &self.pyramid {
            h = bn.forward_t(&up.forward(&h)?, train)?.relu()?;
        }
        self.last.forward(&h)?.tanh()
    }
}

/// One power iteration for the largest singular value of `w` `[rows, cols]` from the left
/// vector `u` `[rows]`: v = Wᵀu/‖Wᵀu‖, u' = Wv/‖Wv‖, σ = u'ᵀWv (Miyato et al. 2018).
/// `u'` and `v` carry no gradient; σ does, through W.
pub fn power_iteration(w: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)> {
    let w_d = w.detach();
    let normalise = |t: Tensor| -> Result<Tensor> {
        let n = (t.sqr()?.sum_all()? + 1e-12)?.sqrt()?;
        t.broadcast_div(&n)
    };
    let v = normalise(w_d.t()?.matmul(&u.unsqueeze(1)?)?)?;
    let u_new = normalise(w_d.matmul(&v)?)?;
    let sigma = u_new.t()?.matmul(&w.matmul(&v)?)?.squeeze(0)?.squeeze(0)?;
    Ok((u_new.squeeze(1)?, sigma))
}

/// Convolution without bias, optionally spectrally normalised. The power-iteration vector `u`
/// is a VarMap variable (`<name>.u`, saved with the weights) updated only in training, so a
/// loaded bundle scores deterministically.
#[derive(Clone, Debug)]
pub struct SnConv2d {
    weight: Tensor,
    u: Option<Var>,
    stride: usize,
    pad: usize,
}

impl SnConv2d {
    pub fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        spectral: bool,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((cout, cin, k, k), "weight", CONV_INIT)?;
        let u = if spectral {
            // A VarMap-backed builder hands out the variable itself, so `set` persists.
            Some(Var::from_tensor(&vb.get_with_hints(
                cout,
                "u",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            u,
            stride,
            pad,
        })
    }

    /// The weight actually applied: W/σ(W) with spectral norm, W otherwise.
    pub fn effective_weight(&self, train: bool) -> Result<Tensor> {
        let Some(u) = &self.u else {
            return Ok(self.weight.clone());
        };
        let cout = self.weight.dim(0)?;
        let w2 = self.weight.reshape((cout, ()))?;
        let (u_new, sigma) = power_iteration(&w2, u.as_tensor())?;
        if train {
            u.set(&u_new)?;
        }
        self.weight.broadcast_div(&sigma)
    }
}

impl ModuleT for SnConv2d {
    /// `train` also advances the power iteration.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Conv2d {
            weight: self.effective_weight(train)?,
            bias: None,
            stride: self.stride,
            pad: self.pad,
        }
        .forward(x)
    }
}

/// A batch-norm-free DCGAN critic (WGAN-GP forbids batch norm in the critic; spectral norm is
/// the ALAD/GAAE choice): conv(4,2,1)+LeakyReLU(0.2) down to 4×4, then conv(4,1,0) to `out`.
#[derive(Clone, Debug)]
pub struct Critic {
    body: Vec<SnConv2d>,
    head: SnConv2d,
}

impl Critic {
    /// `cfg.channels`×`cfg.size`² images to `out` channels, base width `cfg.width`.
    pub fn new(vb: VarBuilder, cfg: &ModelConfig, out: usize, spectral: bool) -> Result<Self> {
        let (channels, width) = (cfg.channels, cfg.width);
        let depth = pyramid_depth(cfg.size)?;
        let mut body = vec![SnConv2d::new(
            vb.pp("conv0"),
            channels,
            width,
            4,
            2,
            1,
            spectral,
        )?];
        let mut c = width;
        for i in 1..depth {
            body.push(SnConv2d::new(
                vb.pp(format!("conv{i}")),
                c,
                c * 2,
                4,
                2,
                1,
                spectral,
            )?);
            c *= 2;
        }
        let head = SnConv2d::new(vb.pp("head"), c, out, 4, 1, 0, spectral)?;
        Ok(Self { body, head })
    }

    /// Feature tap: activations before the last convolution, `[N, C, 4, 4]`.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for conv in &self.body {
            h = leaky_relu(&conv.forward_t(&h, train)?, 0.2)?;
        }
        Ok(h)
    }

    pub fn head_t(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        self.head.forward_t(features, train)
    }
}

impl ModuleT for Critic {
    /// `[N, C, S, S]` → `[N, out, 1, 1]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.head_t(&self.features_t(x, train)?, train)
    }
}

/// Fully connected layers as 1×1 convolutions on `[N, C, 1, 1]` with LeakyReLU between them;
/// `features_t` taps the input of the last layer.
#[derive(Clone, Debug)]
pub struct Mlp {
    layers: Vec<SnConv2d>,
}

impl Mlp {
    pub fn new(vb: VarBuilder, dims: &[usize], spectral: bool) -> Result<Self> {
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, w)| SnConv2d::new(vb.pp(format!("fc{i}")), w[0], w[1], 1, 1, 0, spectral))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers[..self.layers.len() - 1] {
            h = leaky_relu(&l.forward_t(&h, train)?, 0.2)?;
        }
        Ok(h)
    }

    pub fn head_t(&self, f: &Tensor, train: bool) -> Result<Tensor> {
        self.layers[self.layers.len() - 1].forward_t(f, train)
    }
}

/// The BiGAN joint discriminator D(x, z) of EGBAD and ALAD (D_xz): an image critic to a
/// 512-vector, a latent branch to 512, concatenated, one hidden layer (the feature tap), logit.
#[derive(Clone, Debug)]
pub struct JointCritic {
    x_branch: Critic,
    z_branch: Mlp,
    joint: Mlp,
}

impl JointCritic {
    pub fn new(vb: VarBuilder, cfg: &ModelConfig, spectral: bool) -> Result<Self> {
        Ok(Self {
            x_branch: Critic::new(vb.pp("x"), cfg, 512, spectral)?,
            z_branch: Mlp::new(vb.pp("z"), &[cfg.latent, 512, 512], spectral)?,
            joint: Mlp::new(vb.pp("joint"), &[1024, 1024, 1], spectral)?,
        })
    }

    /// (features `[N, 1024, 1, 1]`, logits `[N]`).
    pub fn forward_t(&self, x: &Tensor, z: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let hx = leaky_relu(&self.x_branch.forward_t(x, train)?, 0.2)?;
        let hz = leaky_relu(
            &self
                .z_branch
                .head_t(&self.z_branch.features_t(z, train)?, train)?,
            0.2,
        )?;
        let f = self
            .joint
            .features_t(&Tensor::cat(&[&hx, &hz], 1)?, train)?;
        let logits = self.joint.head_t(&f, train)?.flatten_all()?;
        Ok((f, logits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    use crate::testutil::config;
    use crate::train_util::var_builder;

    #[test]
    fn encoder_and_decoder_shapes_for_every_supported_size() {
        for (size, decoder) in [32, 64, 128]
            .into_iter()
            .flat_map(|s| Decoder::ALL.map(|d| (s, d)))
        {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let cfg = ModelConfig {
                decoder,
                ..config(size, 3, 100, 8)
            };
            let enc = DcEncoder::new(vb.pp("e"), &cfg, 100).unwrap();
            let dec = DcDecoder::new(vb.pp("d"), &cfg).unwrap();
            let x = Tensor::zeros((2, 3, size, size), DType::F32, &Device::Cpu).unwrap();
            let z = enc.forward_t(&x, false).unwrap();
            assert_eq!(z.dims(), &[2, 100, 1, 1]);
            assert_eq!(enc.features_t(&x, false).unwrap().dims()[2..], [4, 4]);
            assert_eq!(
                dec.forward_t(&z, false).unwrap().dims(),
                &[2, 3, size, size]
            );
        }
    }

    #[test]
    fn upsample2_repeats_each_pixel_and_its_gradient_sums_each_block() {
        let x = crate::testutil::randn(&[2, 3, 4, 5], 1, 0.0);
        let up = upsample2(&x).unwrap();
        let reference = x.upsample_nearest2d(8, 10).unwrap();
        assert_eq!(
            up.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            reference.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let v = Var::from_tensor(&x).unwrap();
        let w = crate::testutil::randn(&[2, 3, 8, 10], 2, 0.0);
        let loss = (upsample2(v.as_tensor()).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = loss.backward().unwrap().get(v.as_tensor()).unwrap().clone();
        let expect = (w.avg_pool2d(2).unwrap() * 4.0).unwrap();
        let diff = (g - expect)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn unsupported_size_is_a_clear_error() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let err = DcEncoder::new(vb, &config(48, 1, 10, 8), 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("48") && err.contains("power of two"), "{err}");
    }

    #[test]
    fn spectral_norm_of_a_2x2_matrix() {
        // [[1, 1], [0, 1]] has singular values φ and 1/φ; σ_max = (1 + √5)/2.
        let w = Tensor::new(&[[1f32, 1.0], [0.0, 1.0]], &Device::Cpu).unwrap();
        let mut u = Tensor::new(&[1f32, 0.0], &Device::Cpu).unwrap();
        let mut sigma = 0f32;
        for _ in 0..30 {
            let (un, s) = power_iteration(&w, &u).unwrap();
            u = un;
            sigma = s.to_scalar().unwrap();
        }
        let phi = (1.0 + 5f32.sqrt()) / 2.0;
        assert!((sigma - phi).abs() < 1e-4, "σ = {sigma}, expected {phi}");
        // Diagonal: σ = the largest entry.
        let d = Tensor::new(&[[3f32, 0.0], [0.0, -2.0]], &Device::Cpu).unwrap();
        let (_, s) =
            power_iteration(&d, &Tensor::new(&[0.6f32, 0.8], &Device::Cpu).unwrap()).unwrap();
        let (u2, _) =
            power_iteration(&d, &Tensor::new(&[0.6f32, 0.8], &Device::Cpu).unwrap()).unwrap();
        let mut u = u2;
        let mut s_last = s.to_scalar::<f32>().unwrap();
        for _ in 0..40 {
            let (un, s) = power_iteration(&d, &u).unwrap();
            u = un;
            s_last = s.to_scalar().unwrap();
        }
        assert!((s_last - 3.0).abs() < 1e-4, "{s_last}");
    }

    #[test]
    fn spectral_conv_keeps_u_in_the_varmap_and_only_updates_it_in_training() {
        let vm = VarMap::new();
        let conv =
            SnConv2d::new(var_builder(&vm, &Device::Cpu).pp("c"), 2, 3, 1, 1, 0, true).unwrap();
        let u0 = vm.data().lock().unwrap()["c.u"].to_vec1::<f32>().unwrap();
        let x = Tensor::ones((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let a = conv.forward_t(&x, false).unwrap().flatten_all().unwrap();
        let b = conv.forward_t(&x, false).unwrap().flatten_all().unwrap();
        assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        assert_eq!(
            vm.data().lock().unwrap()["c.u"].to_vec1::<f32>().unwrap(),
            u0
        );
        conv.forward_t(&x, true).unwrap();
        assert_ne!(
            vm.data().lock().unwrap()["c.u"].to_vec1::<f32>().unwrap(),
            u0
        );
    }
}
