//! Helpers for the unit tests: seeded tensors, forward/gradient comparisons against candle's
//! reference ops, and small model configurations.

use candle_core::{Device, Tensor, Var};

use crate::ModelConfig;

/// A configuration of the given geometry (σ 1, seed 0).
pub fn config(size: usize, channels: usize, latent: usize, width: usize) -> ModelConfig {
    ModelConfig {
        size,
        channels,
        latent,
        width,
        sigma: 1.0,
        seed: 0,
        decoder: Default::default(),
    }
}

/// Normal(offset, 1) values, seeded.
pub fn randn(shape: &[usize], seed: u64, offset: f32) -> Tensor {
    let mut r = vigil_shared::rng::Rng::new(seed);
    let v: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| r.normal() + offset)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Asserts `ours` equals `theirs` and that both have the same gradients with respect to `vars`
/// under a random (non-symmetric) linear loss.
pub fn assert_same_fwd_bwd(
    ours: &Tensor,
    theirs: &Tensor,
    vars: &[&Var],
    tol_fwd: f32,
    tol_bwd: f32,
) {
    assert_eq!(ours.dims(), theirs.dims());
    let d = max_diff(ours, theirs);
    assert!(d < tol_fwd, "forward differs by {d}");
    let probe = randn(ours.dims(), 99, 0.0);
    let g1 = (ours * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g2 = (theirs * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, v) in vars.iter().enumerate() {
        let d = max_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
        assert!(d < tol_bwd, "gradient of input {i} differs by {d}");
    }
}
