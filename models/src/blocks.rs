//! Building blocks shared by the GAN family beyond GANomaly: spectral normalisation, batch-norm
//! free critics (plain, joint image–latent, pair), the WGAN-GP gradient penalty, the relativistic
//! loss, latent search, seeded noise and optimiser bookkeeping. Written once, used by every
//! detector file.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder, VarMap};
use vigil_shared::rng::Rng;

use crate::conv::Conv2d;
use crate::detector::OptimizerState;
use crate::fused::leaky_relu;
use crate::optim::{Adam, AdamConfig};
use crate::ModelError;

/// Candle detaches gradients during backprop unless this variable is set; it reads it once per
/// thread, at that thread's first backward pass. The WGAN-GP penalty differentiates a gradient,
/// so detectors that use it call this in their constructor, before any backward pass.
pub fn enable_double_backprop() {
    if std::env::var_os("CANDLE_GRAD_DO_NOT_DETACH").is_none() {
        std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
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
        let weight = vb.get_with_hints(
            (cout, cin, k, k),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
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

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
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
    pub fn new(
        vb: VarBuilder,
        size: usize,
        channels: usize,
        out: usize,
        width: usize,
        spectral: bool,
    ) -> Result<Self> {
        if !size.is_power_of_two() || !(16..=1024).contains(&size) {
            candle_core::bail!(
                "image size {size} is not supported: use a power of two between 16 and 1024"
            )
        }
        let depth = size.trailing_zeros() as usize - 2;
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

    /// `[N, C, S, S]` → `[N, out, 1, 1]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
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
    pub fn new(
        vb: VarBuilder,
        size: usize,
        channels: usize,
        latent: usize,
        width: usize,
        spectral: bool,
    ) -> Result<Self> {
        Ok(Self {
            x_branch: Critic::new(vb.pp("x"), size, channels, 512, width, spectral)?,
            z_branch: Mlp::new(vb.pp("z"), &[latent, 512, 512], spectral)?,
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

/// WGAN-GP penalty (Gulrajani et al. 2017): E[(‖∇_x̂ C(x̂)‖₂ − 1)²] at x̂ = αx + (1−α)x̃, with
/// `alpha` broadcastable to the batch (one draw per sample). The result is differentiable with
/// respect to the critic's weights (double backprop).
pub fn gradient_penalty<F>(
    critic: F,
    real: &Tensor,
    fake: &Tensor,
    alpha: &Tensor,
) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let one_minus = alpha.affine(-1.0, 1.0)?;
    let interp =
        (real.detach().broadcast_mul(alpha)? + fake.detach().broadcast_mul(&one_minus)?)?;
    let x = Var::from_tensor(&interp)?;
    let out = critic(x.as_tensor())?.sum_all()?;
    let grads = out.backward()?;
    let g = grads.get(x.as_tensor()).ok_or_else(|| {
        candle_core::Error::Msg("critic output does not depend on its input".into())
    })?;
    if !g.track_op() {
        candle_core::bail!(
            "gradient penalty: the input gradient is detached (set CANDLE_GRAD_DO_NOT_DETACH=1 \
             before the thread's first backward pass; see blocks::enable_double_backprop)"
        )
    }
    let norm = (g.flatten_from(1)?.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()?;
    (norm - 1.0)?.sqr()?.mean_all()
}

/// WGAN-GP's penalty weight.
pub const GP_WEIGHT: f64 = 10.0;

/// Adam as WGAN-GP trains (lr 1e-4, β = (0, 0.9)).
pub fn wgan_adam() -> AdamConfig {
    AdamConfig {
        lr: 1e-4,
        beta1: 0.0,
        beta2: 0.9,
        eps: 1e-8,
    }
}

/// The WGAN-GP critic loss E[C(x̃)] − E[C(x)] + 10·GP, and the Wasserstein estimate
/// E[C(x)] − E[C(x̃)] for logging. `critic` maps images to `[N, …]` scores.
pub fn wgan_gp_critic_loss<F>(
    critic: F,
    real: &Tensor,
    fake: &Tensor,
    rng: &mut Rng,
) -> Result<(Tensor, f32)>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let alpha = uniform_per_sample(rng, real.dim(0)?, real.device())?;
    let c_real = critic(real)?.mean_all()?;
    let c_fake = critic(&fake.detach())?.mean_all()?;
    let gp = gradient_penalty(&critic, real, fake, &alpha)?;
    let w = (&c_real - &c_fake)?;
    let loss = ((c_fake - c_real)? + (gp * GP_WEIGHT)?)?;
    Ok((loss, w.to_scalar()?))
}

/// Relativistic standard GAN losses (Jolicoeur-Martineau 2019) on critic outputs: the critic
/// minimises −log σ(C(x_r) − C(x_f)), the generator −log σ(C(x_f) − C(x_r)).
pub fn rsgan_loss(first: &Tensor, second: &Tensor) -> Result<Tensor> {
    crate::layers::bce_with_logits(&(first - second)?, 1.0)
}

/// Per-sample sum over every dimension but the first: `[N, …]` → `[N]`.
pub fn per_sample_sum(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(1)?.sum(D::Minus1)
}

/// Berg et al.'s origin term L_o = −‖z‖₂/√N_z per sample (`[N, N_z, …]` → `[N]`): a jointly
/// trained encoder maps anomalies closer to the origin, so a smaller norm scores higher.
pub fn origin_score(z: &Tensor) -> Result<Tensor> {
    let nz = z.flatten_from(1)?.dim(1)? as f64;
    per_sample_sum(&z.sqr()?)?.sqrt()? * (-1.0 / nz.sqrt())
}

/// Per-sample L1 distance `Σ|a − b|`, `[N]`.
pub fn l1_per_sample(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    per_sample_sum(&(a - b)?.abs()?)
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

    #[test]
    fn gradient_penalty_of_a_linear_critic() {
        enable_double_backprop();
        // C(x) = w·x has ∇C = w everywhere: penalty (‖w‖ − 1)² = (5 − 1)² = 16, and
        // ∂/∂w = 2(‖w‖ − 1)·w/‖w‖ = 8·(0.6, 0.8) = (4.8, 6.4).
        let w = Var::new(&[3f32, 4.0], &Device::Cpu).unwrap();
        let real = Tensor::new(&[[1f32, 2.0], [0.5, -1.0]], &Device::Cpu).unwrap();
        let fake = Tensor::new(&[[0f32, 0.0], [2.0, 2.0]], &Device::Cpu).unwrap();
        let alpha = Tensor::new(&[[0.3f32], [0.9]], &Device::Cpu).unwrap();
        let critic = |x: &Tensor| x.broadcast_mul(w.as_tensor())?.sum(1);
        let gp = gradient_penalty(critic, &real, &fake, &alpha).unwrap();
        assert!((gp.to_scalar::<f32>().unwrap() - 16.0).abs() < 1e-4);
        let g = gp.backward().unwrap();
        let gw = g.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(
            (gw[0] - 4.8).abs() < 1e-4 && (gw[1] - 6.4).abs() < 1e-4,
            "{gw:?}"
        );
    }

    #[test]
    fn gradient_penalty_backprops_through_a_conv_critic() {
        enable_double_backprop();
        let vm = VarMap::new();
        let critic =
            Critic::new(var_builder(&vm, &Device::Cpu).pp("c"), 16, 1, 1, 4, false).unwrap();
        crate::layers::seeded_init(&vm, 3).unwrap();
        let mut rng = Rng::new(1);
        let real = randn(&mut rng, &[2, 1, 16, 16], &Device::Cpu).unwrap();
        let fake = randn(&mut rng, &[2, 1, 16, 16], &Device::Cpu).unwrap();
        let alpha = uniform_per_sample(&mut rng, 2, &Device::Cpu).unwrap();
        let gp = gradient_penalty(|x| critic.forward_t(x, true), &real, &fake, &alpha).unwrap();
        let grads = gp.backward().unwrap();
        let data = vm.data().lock().unwrap();
        for name in ["c.conv0.weight", "c.conv1.weight", "c.head.weight"] {
            let g = grads.get(data[name].as_tensor()).expect(name);
            let s: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(s > 0.0, "{name} gets no penalty gradient");
        }
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
