//! Gaussian smoothing of anomaly maps, as a graph the ONNX export can reproduce exactly:
//! padding by index gathering (scipy's `reflect`: the edge sample is repeated, `dcba|abcd|dcba`,
//! as in `vigil_shared::mask`) followed by a separable convolution.

use candle_core::{Device, Result, Tensor};

#[derive(Clone, Debug)]
pub struct GaussianSmoother {
    sigma: f32,
    radius: usize,
    /// `[1, 1, K, 1]` and `[1, 1, 1, K]`.
    vertical: Tensor,
    horizontal: Tensor,
}

pub use vigil_shared::mask::gaussian_kernel1d as kernel1d;

/// Source index for each padded position, using the same reflect rule as
/// `vigil_shared::mask` so host, ONNX graph and appliance agree.
pub fn reflect_indices(n: usize, radius: usize) -> Vec<u32> {
    (-(radius as isize)..(n + radius) as isize)
        .map(|i| vigil_shared::mask::reflect_index(i, n) as u32)
        .collect()
}

impl GaussianSmoother {
    pub fn new(sigma: f32, size: usize, device: &Device) -> Result<Self> {
        let k = kernel1d(sigma);
        let radius = k.len() / 2;
        if radius > size {
            candle_core::bail!(
                "smoothing sigma {sigma} needs a {radius}-pixel border, too wide for {size}×{size} maps (use a smaller --sigma)"
            )
        }
        let n = k.len();
        Ok(Self {
            sigma,
            radius,
            vertical: Tensor::from_vec(k.clone(), (1, 1, n, 1), device)?,
            horizontal: Tensor::from_vec(k, (1, 1, 1, n), device)?,
        })
    }

    pub fn sigma(&self) -> f32 {
        self.sigma
    }

    pub fn kernel(&self) -> Vec<f32> {
        kernel1d(self.sigma)
    }

    /// `[N, 1, H, W]` → `[N, 1, H, W]`.
    pub fn apply(&self, map: &Tensor) -> Result<Tensor> {
        if self.radius == 0 {
            return Ok(map.clone());
        }
        let (_, _, h, w) = map.dims4()?;
        let dev = map.device();
        let rows = Tensor::new(reflect_indices(h, self.radius), dev)?;
        let cols = Tensor::new(reflect_indices(w, self.radius), dev)?;
        let m = map
            .index_select(&rows, 2)?
            .conv2d(&self.vertical, 0, 1, 1, 1)?;
        m.index_select(&cols, 3)?
            .conv2d(&self.horizontal, 0, 1, 1, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_indices_repeat_the_edge_like_scipy() {
        assert_eq!(reflect_indices(4, 2), vec![1, 0, 0, 1, 2, 3, 3, 2]);
    }

    #[test]
    fn constant_map_stays_constant_and_delta_spreads_as_the_kernel() {
        let dev = Device::Cpu;
        let s = GaussianSmoother::new(1.0, 16, &dev).unwrap();
        let c = Tensor::full(0.7f32, (1, 1, 16, 16), &dev).unwrap();
        let out = s
            .apply(&c)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(out.iter().all(|v| (v - 0.7).abs() < 1e-5));

        let mut d = vec![0f32; 256];
        d[8 * 16 + 8] = 1.0;
        let d = Tensor::from_vec(d, (1, 1, 16, 16), &dev).unwrap();
        let out = s
            .apply(&d)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let k = kernel1d(1.0);
        let r = k.len() / 2;
        assert!((out[8 * 16 + 8] - k[r] * k[r]).abs() < 1e-6);
        assert!((out[8 * 16 + 9] - k[r] * k[r + 1]).abs() < 1e-6);
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn too_wide_a_kernel_is_a_clear_error() {
        let err = GaussianSmoother::new(4.0, 8, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--sigma"), "{err}");
    }
}
