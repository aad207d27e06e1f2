//! Fused CPU kernels for the two per-activation layers of every DCGAN network.
//!
//! Candle composes batch norm from ~10 broadcast ops and leaky ReLU from zeros/max/min, and
//! autograd doubles each of them, so on a 2-core profile these memory passes cost as much as
//! the convolutions' gemm. Here each is one pass forward and one pass backward, with the
//! textbook gradients. Other devices use candle's composite ops.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel task for elementwise kernels: large enough to amortise scheduling.
pub(crate) const CHUNK: usize = 1 << 15;

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(d) = s else {
        candle_core::bail!("{op}: only f32 is supported")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous")
    };
    Ok(&d[a..b])
}

/// `max(x, 0) + slope·min(x, 0)`.
#[derive(Clone, Copy, Debug)]
pub struct LeakyRelu(pub f32);

/// Gradient of [`LeakyRelu`]: `(grad, x) → grad·(x > 0 ? 1 : slope)`.
#[derive(Clone, Copy, Debug)]
struct LeakyReluGrad(f32);

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "vigil-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let a = self.0;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = if v > 0.0 { v } else { a * v };
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            // Tracked (not `_no_bwd`) so critics under a gradient penalty can backprop twice;
            // `x` only selects the slope (zero gradient), so it enters detached.
            grad.contiguous()?
                .apply_op2(&arg.detach(), LeakyReluGrad(self.0))?,
        ))
    }
}

impl CustomOp2 for LeakyReluGrad {
    fn name(&self) -> &'static str {
        "vigil-leaky-relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s1, l1, self.name())?;
        let x = f32_slice(s2, l2, self.name())?;
        let a = self.0;
        let out = g
            .iter()
            .zip(x)
            .map(|(&g, &x)| if x > 0.0 { g } else { a * g })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// Linear in `grad` with a piecewise-constant mask of `x`: d/dgrad is the same masked
    /// product, d/dx is zero almost everywhere.
    fn bwd(
        &self,
        _grad: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad_res.contiguous()?.apply_op2(x, *self)?), None))
    }
}

pub fn leaky_relu(x: &Tensor, slope: f32) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(LeakyRelu(slope))
    } else {
        candle_nn::ops::leaky_relu(x, slope as f64)
    }
}

/// Batch statistics of the last forward pass, read back to update the running averages.
pub type BatchStats = Arc<Mutex<Option<(Vec<f32>, Vec<f32>)>>>;

/// Training-mode batch norm over `[N, C, H, W]` with per-channel `gamma`, `beta`:
/// `y = (x − μ_c)/√(σ²_c + ε)·γ_c + β_c`, μ and σ² (biased) over N·H·W.
#[derive(Clone, Debug)]
pub struct BatchNormTrain {
    pub eps: f32,
    pub stats: BatchStats,
}

/// Per-channel layout helpers: `x[n, c, i]` with `i` over H·W.
fn channel_planes(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    ch: usize,
) -> impl Iterator<Item = &[f32]> {
    (0..n).map(move |b| &x[(b * c + ch) * hw..(b * c + ch + 1) * hw])
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "vigil-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let (gamma, beta) = (
            f32_slice(s2, l2, self.name())?,
            f32_slice(s3, l3, self.name())?,
        );
        let dims = l1.shape().dims();
        let [n, c, h, w] = dims else {
            candle_core::bail!("batch norm: expected [N, C, H, W], got {dims:?}")
        };
        let (n, c, hw) = (*n, *c, h * w);
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("batch norm: {c} channels but {} scales", gamma.len())
        }
        let count = (n * hw) as f64;
        // Two-pass mean/variance in f64: activations after ReLU can have large means.
        let stats: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let mean = channel_planes(x, n, c, hw, ch)
                    .flatten()
                    .map(|&v| v as f64)
                    .sum::<f64>()
                    / count;
                let var = channel_planes(x, n, c, hw, ch)
                    .flatten()
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum::<f64>()
                    / count;
                (mean as f32, var as f32)
            })
            .collect();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(|(p, (yo, xi))| {
                let ch = p % c;
                let (mean, var) = stats[ch];
                let scale = gamma[ch] / (var + self.eps).sqrt();
                let shift = beta[ch] - mean * scale;
                for (o, &v) in yo.iter_mut().zip(xi) {
                    *o = v * scale + shift;
                }
            });
        *self.stats.lock().expect("batch stats lock poisoned") = Some((
            stats.iter().map(|s| s.0).collect(),
            stats.iter().map(|s| s.1).collect(),
        ));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, c, _, _) = x.dims4()?;
        // One op returns [dx | dγ | dβ] flattened; split here.
        let all =
            grad.contiguous()?
                .apply_op3_no_bwd(x, gamma, &BatchNormGrad { eps: self.eps })?;
        let n = x.elem_count();
        let dx = all.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = all.narrow(0, n, c)?;
        let dbeta = all.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `(dy, x, γ) → [dx, dγ, dβ]` flattened, with
/// `dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.
struct BatchNormGrad {
    eps: f32,
}

impl CustomOp3 for BatchNormGrad {
    fn name(&self) -> &'static str {
        "vigil-batch-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dy = f32_slice(s1, l1, self.name())?;
        let x = f32_slice(s2, l2, self.name())?;
        let gamma = f32_slice(s3, l3, self.name())?;
        let dims = l2.shape().dims();
        let [n, c, h, w] = dims else {
            candle_core::bail!("batch norm grad: expected [N, C, H, W], got {dims:?}")
        };
        let (n, c, hw) = (*n, *c, h * w);
        let count = (n * hw) as f64;
        // Per channel: mean, 1/σ, Σdy, Σdy·x̂ (recomputing statistics is cheaper than storing x̂).
        let per: Vec<(f32, f32, f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let mean = channel_planes(x, n, c, hw, ch)
                    .flatten()
                    .map(|&v| v as f64)
                    .sum::<f64>()
                    / count;
                let var = channel_planes(x, n, c, hw, ch)
                    .flatten()
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum::<f64>()
                    / count;
                let inv = 1.0 / (var + self.eps as f64).sqrt();
                let (mut sdy, mut sdyx) = (0f64, 0f64);
                for (xp, gp) in
                    channel_planes(x, n, c, hw, ch).zip(channel_planes(dy, n, c, hw, ch))
                {
                    for (&xv, &g) in xp.iter().zip(gp) {
                        sdy += g as f64;
                        sdyx += g as f64 * (xv as f64 - mean) * inv;
                    }
                }
                (mean as f32, inv as f32, sdy, sdyx)
            })
            .collect();
        let mut out = vec![0f32; x.len() + 2 * c];
        let (dx, rest) = out.split_at_mut(x.len());
        dx.par_chunks_mut(hw)
            .zip(x.par_chunks(hw).zip(dy.par_chunks(hw)))
            .enumerate()
            .for_each(|(p, (o, (xp, gp)))| {
                let ch = p % c;
                let (mean, inv, sdy, sdyx) = per[ch];
                let (mdy, mdyx) = ((sdy / count) as f32, (sdyx / count) as f32);
                let k = gamma[ch] * inv;
                for ((o, &xv), &g) in o.iter_mut().zip(xp).zip(gp) {
                    let xhat = (xv - mean) * inv;
                    *o = k * (g - mdy - xhat * mdyx);
                }
            });
        for (ch, p) in per.iter().enumerate() {
            rest[ch] = p.3 as f32;
            rest[c + ch] = p.2 as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_same_fwd_bwd, randn as rand};
    use candle_core::{Var, D};

    /// Reference: batch norm from candle's differentiable ops.
    fn reference(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> Tensor {
        let c = x.dim(1).unwrap();
        let xt = x.transpose(0, 1).unwrap().flatten_from(1).unwrap();
        let mean = xt.mean_keepdim(D::Minus1).unwrap();
        let xc = xt.broadcast_sub(&mean).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let y = xc
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap();
        let y = y
            .broadcast_mul(&g.reshape((c, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((c, 1)).unwrap())
            .unwrap();
        let (n, _, h, w) = x.dims4().unwrap();
        y.reshape((c, n, h, w)).unwrap().transpose(0, 1).unwrap()
    }

    #[test]
    fn batch_norm_matches_composite_forward_and_backward() {
        let x = Var::from_tensor(&rand(&[4, 3, 5, 5], 1, 2.0)).unwrap();
        let g = Var::from_tensor(&rand(&[3], 2, 1.0)).unwrap();
        let b = Var::from_tensor(&rand(&[3], 3, 0.0)).unwrap();
        let op = BatchNormTrain {
            eps: 1e-5,
            stats: Default::default(),
        };
        let ours = x
            .as_tensor()
            .apply_op3(g.as_tensor(), b.as_tensor(), op.clone())
            .unwrap();
        let theirs = reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5);
        assert_same_fwd_bwd(&ours, &theirs, &[&x, &g, &b], 1e-4, 1e-3);
        let (mean, var) = op.stats.lock().unwrap().clone().unwrap();
        assert_eq!((mean.len(), var.len()), (3, 3));
        assert!((mean[0] - 2.0).abs() < 0.5 && (var[0] - 1.0).abs() < 0.5);
    }

    #[test]
    fn leaky_relu_matches_candle_forward_and_backward() {
        let x = Var::from_tensor(&rand(&[2, 3, 4, 4], 5, 0.0)).unwrap();
        let ours = leaky_relu(x.as_tensor(), 0.2).unwrap();
        let theirs = candle_nn::ops::leaky_relu(x.as_tensor(), 0.2).unwrap();
        assert_same_fwd_bwd(&ours, &theirs, &[&x], 1e-6, 1e-6);
    }
}
