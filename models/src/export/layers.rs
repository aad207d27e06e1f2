//! The DCGAN pyramids and the batch-norm-free critics of [`crate::nn`] as ONNX subgraphs, read
//! from a detector's weights by the variable names that module gives them. Batch norm is folded into the preceding convolution, so each stage
//! is one Conv / ConvTranspose (or Resize + Conv) and its activation; spectrally normalised weights are exported
//! already divided by their σ.

use candle_core::{Device, Tensor};

use super::graph::{BatchNorm, ConvWeights, GraphBuilder};
use super::{ExportError, Weights};
use crate::nn::power_iteration;
use crate::ModelConfig;
use vigil_shared::manifest::Decoder;

const BN_EPS: f32 = 1e-5;
const LEAK: f32 = 0.2;

fn depth(size: usize) -> Result<usize, ExportError> {
    if !size.is_power_of_two() || !(16..=1024).contains(&size) {
        return Err(ExportError::Unsupported(format!(
            "image size {size} (a power of two between 16 and 1024 is needed)"
        )));
    }
    Ok(size.trailing_zeros() as usize - 2)
}

pub(crate) fn batch_norm(w: &Weights, prefix: &str, c: usize) -> Result<BatchNorm, ExportError> {
    Ok(BatchNorm {
        gamma: w.get(&format!("{prefix}.weight"), &[c])?,
        beta: w.get(&format!("{prefix}.bias"), &[c])?,
        mean: w.get(&format!("{prefix}.running_mean"), &[c])?,
        var: w.get(&format!("{prefix}.running_var"), &[c])?,
        eps: BN_EPS,
    })
}

pub(crate) fn conv_w(
    w: &Weights,
    name: &str,
    dims: [usize; 4],
) -> Result<ConvWeights, ExportError> {
    Ok(ConvWeights {
        dims,
        weight: w.get(&format!("{name}.weight"), &dims)?,
        bias: None,
    })
}

/// `nn::DcEncoder` up to its features `[N, C, 4, 4]`; returns (value, C).
pub fn dc_encoder_features(
    b: &mut GraphBuilder,
    w: &Weights,
    prefix: &str,
    x: &str,
    size: usize,
    channels: usize,
    width: usize,
) -> Result<(String, usize), ExportError> {
    let depth = depth(size)?;
    let first = conv_w(w, &format!("{prefix}.conv0"), [width, channels, 4, 4])?;
    let h = b.conv(x, &first, 2, 1);
    let mut h = b.leaky_relu(&h, LEAK);
    let mut c = width;
    for i in 1..depth {
        let conv = conv_w(w, &format!("{prefix}.conv{i}"), [c * 2, c, 4, 4])?
            .fold_bn(&batch_norm(w, &format!("{prefix}.bn{i}"), c * 2)?, 0);
        let y = b.conv(&h, &conv, 2, 1);
        h = b.leaky_relu(&y, LEAK);
        c *= 2;
    }
    Ok((h, c))
}

/// `nn::DcEncoder`: `[N, channels, S, S]` → `[N, out, 1, 1]`.
#[allow(clippy::too_many_arguments)]
pub fn dc_encoder(
    b: &mut GraphBuilder,
    w: &Weights,
    prefix: &str,
    x: &str,
    size: usize,
    channels: usize,
    out: usize,
    width: usize,
) -> Result<String, ExportError> {
    let (h, c) = dc_encoder_features(b, w, prefix, x, size, channels, width)?;
    let head = conv_w(w, &format!("{prefix}.head"), [out, c, 4, 4])?;
    Ok(b.conv(&h, &head, 1, 0))
}

/// `nn::DcDecoder`: `[N, latent, 1, 1]` → `[N, channels, S, S]` in [-1, 1], with the layer
/// counts and widths `DcDecoder::new` derives from `cfg`.
pub fn dc_decoder(
    b: &mut GraphBuilder,
    w: &Weights,
    prefix: &str,
    z: &str,
    cfg: &ModelConfig,
) -> Result<String, ExportError> {
    let (channels, latent) = (cfg.channels, cfg.latent);
    let depth = depth(cfg.size)?;
    let mut c = cfg.width << (depth - 1);
    let bn0 = batch_norm(w, &format!("{prefix}.bn0"), c)?;
    let y = match cfg.decoder {
        Decoder::Deconv => {
            let t0 = conv_w(w, &format!("{prefix}.convt0"), [latent, c, 4, 4])?.fold_bn(&bn0, 1);
            b.conv_transpose(z, &t0, 1, 0)
        }
        Decoder::Upsample => {
            let p0 = conv_w(w, &format!("{prefix}.proj0"), [latent, c, 4, 4])?.fold_bn(&bn0, 1);
            linear_stem(b, z, &p0)
        }
    };
    let mut h = b.unary("Relu", &y);
    for i in 1..depth {
        let bn = batch_norm(w, &format!("{prefix}.bn{i}"), c / 2)?;
        let name = match cfg.decoder {
            Decoder::Deconv => format!("{prefix}.convt{i}"),
            Decoder::Upsample => format!("{prefix}.conv{i}"),
        };
        let y = doubling(b, w, cfg.decoder, &name, &h, [c, c / 2], Some(&bn))?;
        h = b.unary("Relu", &y);
        c /= 2;
    }
    let head = format!("{prefix}.head");
    let y = doubling(b, w, cfg.decoder, &head, &h, [c, channels], None)?;
    Ok(b.unary("Tanh", &y))
}

/// One doubling of the decoder (`nn::Up`), `[cin, cout]` channels, with the batch norm that
/// follows it folded in: ConvTranspose(4, 2, 1), or Resize ×2 then Conv(3, 1, 1).
fn doubling(
    b: &mut GraphBuilder,
    w: &Weights,
    decoder: Decoder,
    name: &str,
    h: &str,
    [cin, cout]: [usize; 2],
    bn: Option<&BatchNorm>,
) -> Result<String, ExportError> {
    // The output channels' axis of the weight layout: 1 for ConvTranspose, 0 for Conv.
    let fold = |k: ConvWeights, axis| match bn {
        Some(bn) => k.fold_bn(bn, axis),
        None => k,
    };
    Ok(match decoder {
        Decoder::Deconv => {
            let t = fold(conv_w(w, name, [cin, cout, 4, 4])?, 1);
            b.conv_transpose(h, &t, 2, 1)
        }
        Decoder::Upsample => {
            let k = fold(conv_w(w, name, [cout, cin, 3, 3])?, 0);
            let up = b.upsample2(h);
            b.conv(&up, &k, 1, 1)
        }
    })
}

/// `z [N, L, 1, 1]` times the (BN-folded) weights `[L, C, 4, 4]`, as `nn::DcDecoder`'s matrix
/// product stem: a 1×1 `Conv` to `C·16` channels (bias repeated over the 16 positions), then a
/// `Reshape` to `[N, C, 4, 4]`.
fn linear_stem(b: &mut GraphBuilder, z: &str, w: &ConvWeights) -> String {
    let [latent, c, kh, kw] = w.dims;
    let plane = kh * kw;
    let mut weight = vec![0f32; latent * c * plane];
    for ci in 0..latent {
        for o in 0..c * plane {
            weight[o * latent + ci] = w.weight[ci * c * plane + o];
        }
    }
    let bias = w.bias.as_ref().map(|bias| {
        bias.iter()
            .flat_map(|&v| std::iter::repeat_n(v, plane))
            .collect()
    });
    let conv = ConvWeights {
        dims: [c * plane, latent, 1, 1],
        weight,
        bias,
    };
    let y = b.conv(z, &conv, 1, 0);
    let shape = b.init_i64("shape", &[4], vec![0, c as i64, kh as i64, kw as i64]);
    b.node("Reshape", &[&y, &shape], vec![])
}

/// `DcEncoder` then `DcDecoder` under `enc` and `dec` (the E → G path every detector but
/// AnoGAN scores with): returns (z `[N, latent, 1, 1]`, x̂ `[N, C, S, S]`).
pub fn encode_decode(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    x: &str,
    enc: &str,
    dec: &str,
) -> Result<(String, String), ExportError> {
    let (s, c, l, wd) = (cfg.size, cfg.channels, cfg.latent, cfg.width);
    let z = dc_encoder(b, w, enc, x, s, c, l, wd)?;
    let x_hat = dc_decoder(b, w, dec, &z, cfg)?;
    Ok((z, x_hat))
}

/// The weight `nn::SnConv2d` applies in evaluation mode: `<name>.weight`, divided by σ
/// from one power iteration on the stored `<name>.u` when spectrally normalised. σ is
/// computed by the same Candle function on the CPU, so the constant is the weight Candle uses.
fn sn_conv_w(
    w: &Weights,
    name: &str,
    dims: [usize; 4],
    spectral: bool,
) -> Result<ConvWeights, ExportError> {
    let plain = conv_w(w, name, dims)?;
    if !spectral {
        return Ok(plain);
    }
    let u = w.get(&format!("{name}.u"), &[dims[0]])?;
    let dev = Device::Cpu;
    let weight = Tensor::from_vec(plain.weight, dims.to_vec(), &dev)?;
    let u = Tensor::from_vec(u, dims[0], &dev)?;
    let (_, sigma) = power_iteration(&weight.reshape((dims[0], ()))?, &u)?;
    Ok(ConvWeights {
        dims,
        weight: weight.broadcast_div(&sigma)?.flatten_all()?.to_vec1()?,
        bias: None,
    })
}

/// `nn::Critic` (no batch norm, optionally spectrally normalised) on `x` with `channels`
/// input channels: the features before the head `[N, C, 4, 4]`; returns (value, C).
pub fn critic_features(
    b: &mut GraphBuilder,
    w: &Weights,
    prefix: &str,
    x: &str,
    cfg: &ModelConfig,
    channels: usize,
    spectral: bool,
) -> Result<(String, usize), ExportError> {
    let depth = depth(cfg.size)?;
    let mut h = x.to_string();
    let (mut cin, mut c) = (channels, cfg.width);
    for i in 0..depth {
        let conv = sn_conv_w(w, &format!("{prefix}.conv{i}"), [c, cin, 4, 4], spectral)?;
        let y = b.conv(&h, &conv, 2, 1);
        h = b.leaky_relu(&y, LEAK);
        cin = c;
        c *= 2;
    }
    Ok((h, cin))
}

/// The head of `nn::Critic`: features `[N, c, 4, 4]` → `[N, out, 1, 1]`.
pub fn critic_head(
    b: &mut GraphBuilder,
    w: &Weights,
    prefix: &str,
    features: &str,
    c: usize,
    out: usize,
    spectral: bool,
) -> Result<String, ExportError> {
    let head = sn_conv_w(w, &format!("{prefix}.head"), [out, c, 4, 4], spectral)?;
    Ok(b.conv(features, &head, 1, 0))
}

/// `nn::Mlp` layers `fc0..` on `[N, dims[0], 1, 1]`, LeakyReLU after each. With `last`
/// false the final layer is left out (`features_t`); with `last` true it is applied too,
/// without its activation (`head_t(features_t(..))`).
fn mlp(
    b: &mut GraphBuilder,
    w: &Weights,
    prefix: &str,
    x: &str,
    dims: &[usize],
    spectral: bool,
    last: bool,
) -> Result<String, ExportError> {
    let n = dims.len() - 1;
    let mut h = x.to_string();
    for (i, d) in dims.windows(2).enumerate() {
        if i + 1 == n && !last {
            break;
        }
        let fc = sn_conv_w(w, &format!("{prefix}.fc{i}"), [d[1], d[0], 1, 1], spectral)?;
        h = b.conv(&h, &fc, 1, 0);
        if i + 1 < n {
            h = b.leaky_relu(&h, LEAK);
        }
    }
    Ok(h)
}

/// The latent branch of `nn::JointCritic` on `z`: `LeakyReLU(z_branch(z))` `[N, 512, 1, 1]`.
/// It depends on z alone, so detectors that query D(·, z) twice with one z compute it once.
pub fn joint_critic_z(
    b: &mut GraphBuilder,
    w: &Weights,
    prefix: &str,
    z: &str,
    latent: usize,
    spectral: bool,
) -> Result<String, ExportError> {
    let h = mlp(
        b,
        w,
        &format!("{prefix}.z"),
        z,
        &[latent, 512, 512],
        spectral,
        true,
    )?;
    Ok(b.leaky_relu(&h, LEAK))
}

/// The feature tap of `nn::JointCritic::forward_t` on `x` and the latent branch's output
/// `hz` (from [`joint_critic_z`]): `[N, 1024, 1, 1]`.
pub fn joint_critic_features(
    b: &mut GraphBuilder,
    w: &Weights,
    prefix: &str,
    x: &str,
    hz: &str,
    cfg: &ModelConfig,
    spectral: bool,
) -> Result<String, ExportError> {
    let xp = format!("{prefix}.x");
    let (f, c) = critic_features(b, w, &xp, x, cfg, cfg.channels, spectral)?;
    let hx = critic_head(b, w, &xp, &f, c, 512, spectral)?;
    let hx = b.leaky_relu(&hx, LEAK);
    let joint = b.concat(&[&hx, hz], 1);
    mlp(
        b,
        w,
        &format!("{prefix}.joint"),
        &joint,
        &[1024, 1024, 1],
        spectral,
        false,
    )
}
