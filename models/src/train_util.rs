//! Training plumbing shared by the detectors: seeded initialisation and noise (candle's CPU RNG
//! cannot be seeded), Adam over a VarMap prefix and its checkpoint state, and the latent search.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use vigil_shared::rng::Rng;

use crate::detector::OptimizerState;
use crate::optim::{Adam, AdamConfig};
use crate::ModelError;

/// Re-initialise every variable of `varmap` from a seeded generator, in name order, so training
/// is reproducible on the CPU (candle's CPU RNG cannot be seeded). Rules follow the names the
/// builders of `nn` give: `*.running_mean` 0, `*.running_var` 1, batch-norm `weight` N(1, 0.02),
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

/// Adam as WGAN-GP trains (lr 1e-4, β = (0, 0.9)).
pub fn wgan_adam() -> AdamConfig {
    AdamConfig {
        lr: 1e-4,
        beta1: 0.0,
        beta2: 0.9,
        eps: 1e-8,
    }
}

/// Settings of the iterative latent search (AnoGAN, Schlegl et al. 2017, eqs. 4–7).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatentSearch {
    /// Γ, the number of optimisation steps.
    pub steps: usize,
    /// Adam's learning rate on z.
    pub lr: f64,
    /// λ, the weight of the feature (discrimination) term.
    pub lambda: f64,
}

impl Default for LatentSearch {
    fn default() -> Self {
        Self {
            steps: 500,
            lr: 0.01,
            lambda: 0.1,
        }
    }
}

impl LatentSearch {
    /// Minimise `loss(z)` (`[N]`, one independent problem per sample) from `z0` with Adam,
    /// batched: the summed loss gives each z its own gradient. Returns (z_Γ, loss(z_Γ)).
    pub fn run<F>(&self, z0: &Tensor, loss: F) -> Result<(Tensor, Tensor)>
    where
        F: Fn(&Tensor) -> Result<Tensor>,
    {
        let z = Var::from_tensor(&z0.detach())?;
        let mut adam = Adam::new(
            vec![("z".to_string(), z.clone())],
            AdamConfig {
                lr: self.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
        )?;
        for _ in 0..self.steps {
            let l = loss(z.as_tensor())?.sum_all()?;
            adam.step(&l.backward()?)?;
        }
        let z = z.as_tensor().detach();
        let final_loss = loss(&z)?.detach();
        Ok((z, final_loss))
    }
}

/// Standard normal noise from a seeded generator (candle's CPU RNG cannot be seeded).
pub fn randn(rng: &mut Rng, shape: &[usize], device: &Device) -> Result<Tensor> {
    let n = shape.iter().product::<usize>();
    let v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    Tensor::from_vec(v, shape, device)
}

/// Uniform [0, 1) noise, `[n, 1, 1, 1]`: one interpolation weight per sample.
pub fn uniform_per_sample(rng: &mut Rng, n: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
    Tensor::from_vec(v, (n, 1, 1, 1), device)
}

/// An Adam over every variable whose name starts with one of `prefixes`. Batch-norm running
/// statistics and power-iteration vectors get no gradient, so Adam leaves them alone.
pub fn adam_for(varmap: &VarMap, prefixes: &[&str], cfg: AdamConfig) -> Result<Adam> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let vars = data
        .iter()
        .filter(|(n, _)| prefixes.iter().any(|p| n.starts_with(p)))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    Adam::new(vars, cfg)
}

/// Checkpoint state of several optimisers, each under its own prefix.
pub fn optimizers_state(opts: &[(&str, &Adam)]) -> std::result::Result<OptimizerState, ModelError> {
    let mut tensors = HashMap::new();
    let mut steps = Vec::new();
    for (prefix, o) in opts {
        let (t, s) = o.state(prefix)?;
        tensors.extend(t);
        steps.push(s);
    }
    Ok((tensors, steps))
}

pub fn load_optimizers_state(
    opts: &mut [(&str, &mut Adam)],
    state: &OptimizerState,
) -> std::result::Result<(), ModelError> {
    let (tensors, steps) = state;
    if steps.len() != opts.len() {
        return Err(ModelError::Checkpoint(format!(
            "expected {} optimiser step counters, found {}",
            opts.len(),
            steps.len()
        )));
    }
    for ((prefix, o), &s) in opts.iter_mut().zip(steps) {
        o.load_state(prefix, tensors, s)?;
    }
    Ok(())
}

/// Builder over a fresh VarMap on `device` (F32), the idiom every detector starts from.
pub fn var_builder(varmap: &VarMap, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_varmap(varmap, DType::F32, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::l1_per_sample;
    use crate::nn::DcEncoder;
    use crate::testutil::config;

    #[test]
    fn seeded_init_is_reproducible() {
        let make = |seed| {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            DcEncoder::new(vb.pp("e"), &config(32, 1, 4, 4), 4).unwrap();
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

    #[test]
    fn latent_search_recovers_z_of_a_linear_generator() {
        // G(z) = A z with A full rank: the L1 residual is minimised exactly at z*.
        let a = Tensor::new(
            &[[1f32, 0.5], [-0.3, 1.0], [0.2, 0.1], [0.7, -0.4]],
            &Device::Cpu,
        )
        .unwrap();
        let z_true = Tensor::new(&[[0.8f32, -1.2], [-0.5, 0.3]], &Device::Cpu).unwrap();
        let x = z_true.matmul(&a.t().unwrap()).unwrap();
        let search = LatentSearch {
            steps: 2000,
            lr: 0.01,
            lambda: 0.0,
        };
        let z0 = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let (z, loss) = search
            .run(&z0, |z| l1_per_sample(&z.matmul(&a.t()?)?, &x))
            .unwrap();
        let err: f32 = (z - &z_true)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(err < 0.02, "z error {err}");
        assert_eq!(loss.dims(), &[2]);
        assert!(loss.max_all().unwrap().to_scalar::<f32>().unwrap() < 0.05);
    }
}
