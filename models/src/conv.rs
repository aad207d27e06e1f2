//! Convolution and transposed convolution as im2col/col2im + gemm on the CPU.
//!
//! Candle's CPU backend runs the backward passes of `conv2d` and the whole of
//! `conv_transpose2d` as direct loops, which makes GAN training ~10× slower than PyTorch
//! (candle issue #2144). Here both layers are a matrix product (candle's gemm, multithreaded,
//! differentiable) plus one of two memory-bound rearrangements, `Im2Col` and `Col2Im`, which are
//! each other's adjoint: the gradient of one is the other. So forward and backward of both layers
//! are gemm-bound. On other devices the layers use candle's native kernels.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry of a square-kernel convolution over an image of `c × h × w` producing an `oh × ow`
/// grid; `Im2Col` maps image → columns, `Col2Im` columns → image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geometry {
    pub fn new(c: usize, h: usize, w: usize, k: usize, stride: usize, pad: usize) -> Result<Self> {
        if h + 2 * pad < k || w + 2 * pad < k || stride == 0 {
            candle_core::bail!(
                "convolution kernel {k} (stride {stride}, pad {pad}) does not fit a {h}×{w} input"
            )
        }
        Ok(Self {
            c,
            h,
            w,
            k,
            stride,
            pad,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        })
    }

    fn cols(&self) -> usize {
        self.c * self.k * self.k
    }

    fn rows(&self) -> usize {
        self.oh * self.ow
    }

    /// Input coordinate touched by output position `o` and kernel tap `t`, if inside the image.
    #[inline]
    fn src(&self, o: usize, t: usize, size: usize) -> Option<usize> {
        (o * self.stride + t)
            .checked_sub(self.pad)
            .filter(|&i| i < size)
    }
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(d) => d.as_slice(),
        _ => candle_core::bail!("{op}: only f32 is supported"),
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// `[N, C, H, W]` → `[N, OH·OW, C·K·K]`, column order (c, ki, kj) to match a conv weight
/// `[O, C, K, K]` reshaped to `[O, C·K·K]`.
#[derive(Clone, Copy, Debug)]
pub struct Im2Col(pub Geometry);

/// `[N, OH·OW, C·K·K]` → `[N, C, H, W]`, summing overlapping taps (the adjoint of `Im2Col`).
#[derive(Clone, Copy, Debug)]
pub struct Col2Im(pub Geometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "vigil-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        if dims.len() != 4 || dims[1..] != [g.c, g.h, g.w] {
            candle_core::bail!("im2col: input {dims:?} does not match {g:?}")
        }
        let n = dims[0];
        let (rows, cols, plane) = (g.rows(), g.cols(), g.h * g.w);
        let mut out = vec![0f32; n * rows * cols];
        // One output row per (image, output position): large enough units for rayon.
        out.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
            let (b, pos) = (r / rows, r % rows);
            let (oy, ox) = (pos / g.ow, pos % g.ow);
            let img = &x[b * g.c * plane..(b + 1) * g.c * plane];
            let mut i = 0;
            for c in 0..g.c {
                let chan = &img[c * plane..(c + 1) * plane];
                for ki in 0..g.k {
                    match g.src(oy, ki, g.h) {
                        Some(iy) => {
                            for kj in 0..g.k {
                                if let Some(ix) = g.src(ox, kj, g.w) {
                                    row[i] = chan[iy * g.w + ix];
                                }
                                i += 1;
                            }
                        }
                        None => i += g.k,
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, rows, cols))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1(Col2Im(self.0))?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "vigil-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = contiguous_f32(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        if dims.len() != 3 || dims[1..] != [g.rows(), g.cols()] {
            candle_core::bail!("col2im: input {dims:?} does not match {g:?}")
        }
        let n = dims[0];
        let (rows, cols, plane, kk) = (g.rows(), g.cols(), g.h * g.w, g.k * g.k);
        let mut out = vec![0f32; n * g.c * plane];
        // One task per image (its C·H·W output stays in cache), walking the columns row by row
        // so they are read sequentially; deterministic sums.
        out.par_chunks_mut(g.c * plane)
            .enumerate()
            .for_each(|(b, img)| {
                let src = &x[b * rows * cols..(b + 1) * rows * cols];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let row = &src[(oy * g.ow + ox) * cols..][..cols];
                        for (c, taps) in row.chunks_exact(kk).enumerate() {
                            let dst = &mut img[c * plane..(c + 1) * plane];
                            for ki in 0..g.k {
                                let Some(iy) = g.src(oy, ki, g.h) else {
                                    continue;
                                };
                                for kj in 0..g.k {
                                    if let Some(ix) = g.src(ox, kj, g.w) {
                                        dst[iy * g.w + ix] += taps[ki * g.k + kj];
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, g.c, g.h, g.w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1(Im2Col(self.0))?))
    }
}

fn fast_path(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// 2-D convolution, square kernel, weight `[O, C, K, K]`, optional bias `[O]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub pad: usize,
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (o, c, k, _) = self.weight.dims4()?;
        let y = if fast_path(x) {
            let (n, _, h, w) = x.dims4()?;
            let g = Geometry::new(c, h, w, k, self.stride, self.pad)?;
            let cols = x.contiguous()?.apply_op1(Im2Col(g))?;
            let wt = self.weight.reshape((o, g.cols()))?.t()?;
            cols.reshape((n * g.rows(), g.cols()))?
                .matmul(&wt)?
                .reshape((n, g.oh, g.ow, o))?
                .permute((0, 3, 1, 2))?
                .contiguous()?
        } else {
            x.conv2d(&self.weight, self.pad, self.stride, 1, 1)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, o, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// 2-D transposed convolution, square kernel, weight `[Cin, Cout, K, K]` (PyTorch layout),
/// output size `(H − 1)·stride − 2·pad + K`.
#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: usize,
    pub pad: usize,
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (cin, cout, k, _) = self.weight.dims4()?;
        let (n, _, h, w) = x.dims4()?;
        let (oh, ow) = (
            ((h - 1) * self.stride + k).checked_sub(2 * self.pad),
            ((w - 1) * self.stride + k).checked_sub(2 * self.pad),
        );
        let (Some(oh), Some(ow)) = (oh, ow) else {
            candle_core::bail!(
                "transposed convolution: padding {} too large for {h}×{w}",
                self.pad
            )
        };
        let y = if fast_path(x) {
            // The transposed convolution is the adjoint of a convolution over the *output* image.
            let g = Geometry::new(cout, oh, ow, k, self.stride, self.pad)?;
            debug_assert_eq!((g.oh, g.ow), (h, w));
            let xt = x.permute((0, 2, 3, 1))?.reshape((n * h * w, cin))?;
            xt.matmul(&self.weight.reshape((cin, cout * k * k))?)?
                .reshape((n, h * w, cout * k * k))?
                .apply_op1(Col2Im(g))?
        } else {
            x.conv_transpose2d(&self.weight, self.pad, 0, self.stride, 1)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, cout, 1, 1))?),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_same_fwd_bwd, randn};
    use candle_core::Var;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        randn(shape, seed, 0.0)
    }

    /// Forward and both gradients equal candle's reference kernels.
    #[test]
    fn conv2d_matches_candle_forward_and_backward() {
        for &(n, c, h, o, k, s, p) in &[
            (2, 3, 8, 4, 4, 2, 1),
            (3, 2, 5, 3, 3, 1, 1),
            (1, 4, 4, 5, 4, 1, 0),
        ] {
            let x = Var::from_tensor(&rand(&[n, c, h, h], 1)).unwrap();
            let w = Var::from_tensor(&rand(&[o, c, k, k], 2)).unwrap();
            let conv = Conv2d {
                weight: w.as_tensor().clone(),
                bias: None,
                stride: s,
                pad: p,
            };
            let ours = conv.forward(x.as_tensor()).unwrap();
            let theirs = x.as_tensor().conv2d(w.as_tensor(), p, s, 1, 1).unwrap();
            assert_same_fwd_bwd(&ours, &theirs, &[&x, &w], 1e-4, 1e-3);
        }
    }

    #[test]
    fn conv_transpose2d_matches_candle_forward_and_backward() {
        for &(n, cin, h, cout, k, s, p) in &[
            (2, 3, 4, 2, 4, 2, 1),
            (2, 5, 1, 3, 4, 1, 0),
            (1, 2, 3, 2, 3, 1, 1),
        ] {
            let x = Var::from_tensor(&rand(&[n, cin, h, h], 4)).unwrap();
            let w = Var::from_tensor(&rand(&[cin, cout, k, k], 5)).unwrap();
            let conv = ConvTranspose2d {
                weight: w.as_tensor().clone(),
                bias: None,
                stride: s,
                pad: p,
            };
            let ours = conv.forward(x.as_tensor()).unwrap();
            let theirs = x
                .as_tensor()
                .conv_transpose2d(w.as_tensor(), p, 0, s, 1)
                .unwrap();
            assert_same_fwd_bwd(&ours, &theirs, &[&x, &w], 1e-4, 1e-3);
        }
    }

    #[test]
    fn kernel_larger_than_input_is_an_error_not_a_panic() {
        let x = rand(&[1, 1, 2, 2], 7);
        let conv = Conv2d {
            weight: rand(&[1, 1, 4, 4], 8),
            bias: None,
            stride: 1,
            pad: 0,
        };
        let err = conv.forward(&x).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
