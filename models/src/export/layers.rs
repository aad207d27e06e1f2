//! The DCGAN pyramids of [`crate::layers`] as ONNX subgraphs, read from a detector's weights by
//! the variable names `layers.rs` gives them. Batch norm is folded into the preceding
//! convolution, so each stage is one Conv / ConvTranspose and its activation.

use super::graph::{BatchNorm, ConvWeights, GraphBuilder};
use super::{ExportError, Weights};

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

fn batch_norm(w: &Weights, prefix: &str, c: usize) -> Result<BatchNorm, ExportError> {
    Ok(BatchNorm {
        gamma: w.get(&format!("{prefix}.weight"), &[c])?,
        beta: w.get(&format!("{prefix}.bias"), &[c])?,
        mean: w.get(&format!("{prefix}.running_mean"), &[c])?,
        var: w.get(&format!("{prefix}.running_var"), &[c])?,
        eps: BN_EPS,
    })
}

fn conv_w(w: &Weights, name: &str, dims: [usize; 4]) -> Result<ConvWeights, ExportError> {
    Ok(ConvWeights {
        dims,
        weight: w.get(&format!("{name}.weight"), &dims)?,
        bias: None,
    })
}

/// `layers::DcEncoder` up to its features `[N, C, 4, 4]`; returns (value, C).
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

/// `layers::DcEncoder`: `[N, channels, S, S]` → `[N, out, 1, 1]`.
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

/// `layers::DcDecoder`: `[N, latent, 1, 1]` → `[N, channels, S, S]` in [-1, 1].
// Mirrors `DcDecoder::new`'s geometry arguments one for one, so the two read side by side.
#[allow(clippy::too_many_arguments)]
pub fn dc_decoder(
    b: &mut GraphBuilder,
    w: &Weights,
    prefix: &str,
    z: &str,
    size: usize,
    channels: usize,
    latent: usize,
    width: usize,
) -> Result<String, ExportError> {
    let depth = depth(size)?;
    let mut c = width << (depth - 1);
    let t0 = conv_w(w, &format!("{prefix}.convt0"), [latent, c, 4, 4])?
        .fold_bn(&batch_norm(w, &format!("{prefix}.bn0"), c)?, 1);
    let y = b.conv_transpose(z, &t0, 1, 0);
    let mut h = b.unary("Relu", &y);
    for i in 1..depth {
        let t = conv_w(w, &format!("{prefix}.convt{i}"), [c, c / 2, 4, 4])?
            .fold_bn(&batch_norm(w, &format!("{prefix}.bn{i}"), c / 2)?, 1);
        let y = b.conv_transpose(&h, &t, 2, 1);
        h = b.unary("Relu", &y);
        c /= 2;
    }
    let head = conv_w(w, &format!("{prefix}.head"), [c, channels, 4, 4])?;
    let y = b.conv_transpose(&h, &head, 2, 1);
    Ok(b.unary("Tanh", &y))
}
