//! Building blocks shared by the detectors: DCGAN encoder and decoder pyramids, losses,
//! seeded weight initialisation.

use candle_core::{DType, Module, ModuleT, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder, VarMap};
use vigil_shared::rng::Rng;

use crate::conv::{Conv2d, ConvTranspose2d};
use crate::fused::{leaky_relu, BatchNormTrain, BatchStats};

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
    pub fn new(
        vb: VarBuilder,
        size: usize,
        channels: usize,
        out: usize,
        width: usize,
    ) -> Result<Self> {
        let depth = pyramid_depth(size)?;
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

/// The DCGAN generator / decoder: convT(4,1,0)+BN+ReLU from the latent to 4×4, convT(4,2,1)+BN+ReLU
/// doubling the size, and a last convT(4,2,1)+tanh to `channels`×S×S.
#[derive(Clone, Debug)]
pub struct DcDecoder {
    pyramid: Vec<(ConvTranspose2d, BatchNorm2d)>,
    last: ConvTranspose2d,
}

impl DcDecoder {
    pub fn new(
        vb: VarBuilder,
        size: usize,
        channels: usize,
        latent: usize,
        width: usize,
    ) -> Result<Self> {
        let depth = pyramid_depth(size)?;
        // Channels at 4×4 are `width · 2^(depth−1)`, halving at each doubling of the size.
        let mut c = width << (depth - 1);
        let mut pyramid = vec![(
            conv_transpose2d(vb.pp("convt0"), latent, c, 4, 1, 0)?,
            batch_norm(vb.pp("bn0"), c)?,
        )];
        for i in 1..depth {
            pyramid.push((
                conv_transpose2d(vb.pp(format!("convt{i}")), c, c / 2, 4, 2, 1)?,
                batch_norm(vb.pp(format!("bn{i}")), c / 2)?,
            ));
            c /= 2;
        }
        let last = conv_transpose2d(vb.pp("head"), c, channels, 4, 2, 1)?;
        Ok(Self { pyramid, last })
    }
}

impl ModuleT for DcDecoder {
    /// `[N, latent, 1, 1]` → `[N, C, S, S]` in [-1, 1].
    fn forward_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = z.clone();
        for (conv, bn) in &self.pyramid {
            h = bn.forward_t(&conv.forward(&h)?, train)?.relu()?;
        }
        self.last.forward(&h)?.tanh()
    }
}

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

/// Per-sample mean over every dimension but the first: `[N, …]` → `[N]`.
pub fn per_sample_mean(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(1)?.mean(D::Minus1)
}

/// Re-initialise every variable of `varmap` from a seeded generator, in name order, so training
/// is reproducible on the CPU (candle's CPU RNG cannot be seeded). Rules follow the names the
/// builders above give: `*.running_mean` 0, `*.running_var` 1, batch-norm `weight` N(1, 0.02),
/// `bias` 0, other weights N(0, 0.02).
pub fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    seeded_init_prefix(varmap, seed, "")
}

/// [`seeded_init`] restricted to the variables whose names start with `prefix`.
pub fn seeded_init_prefix(varmap: &VarMap, seed: u64, prefix: &str) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = data.keys().filter(|n| n.starts_with(prefix)).collect();
    names.sort();
    let mut rng = Rng::new(seed);
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let leaf = name.rsplit('.').next().unwrap_or("");
        let is_bn = name.rsplit('.').nth(1).is_some_and(|m| m.starts_with("bn"));
        let values: Vec<f32> = match leaf {
            "running_mean" | "bias" => vec![0.0; n],
            "running_var" => vec![1.0; n],
            "weight" if is_bn => (0..n).map(|_| 1.0 + 0.02 * rng.normal()).collect(),
            _ => (0..n).map(|_| 0.02 * rng.normal()).collect(),
        };
        var.set(&Tensor::from_vec(values, shape, var.device())?.to_dtype(DType::F32)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn encoder_and_decoder_shapes_for_every_supported_size() {
        for size in [32, 64, 128] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let enc = DcEncoder::new(vb.pp("e"), size, 3, 100, 8).unwrap();
            let dec = DcDecoder::new(vb.pp("d"), size, 3, 100, 8).unwrap();
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
    fn unsupported_size_is_a_clear_error() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let err = DcEncoder::new(vb, 48, 1, 10, 8).unwrap_err().to_string();
        assert!(err.contains("48") && err.contains("power of two"), "{err}");
    }

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
    fn seeded_init_is_reproducible() {
        let make = |seed| {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            DcEncoder::new(vb.pp("e"), 32, 1, 4, 4).unwrap();
            seeded_init(&vm, seed).unwrap();
            let d = vm.data().lock().unwrap();
            d["e.conv0.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(make(1), make(1));
        assert_ne!(make(1), make(2));
    }
}
