//! GANomaly training throughput on the CPU (one step = generator update + discriminator update),
//! the figure `just bench-train` compares with PyTorch's on the same network.
//!
//! `cargo bench -p vigil-models --bench train_step -- [--size 32] [--batch 64] [--steps 20] [--warmup 3]`
//! prints one JSON line.

use std::time::Instant;

use candle_core::{Device, Tensor};
use vigil_models::{build, DetectorKind, ModelConfig};
use vigil_shared::rng::Rng;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    vigil_models::cpu::tune();
    let (size, batch, steps, warmup) = (
        arg("--size", 32),
        arg("--batch", 64),
        arg("--steps", 20),
        arg("--warmup", 3),
    );
    let threads = rayon::current_num_threads();
    let device = Device::Cpu;
    let cfg = ModelConfig {
        size,
        channels: 1,
        latent: 100,
        width: 64,
        sigma: 1.0,
        seed: 0,
        decoder: Default::default(),
    };
    let mut det = build(DetectorKind::Ganomaly, cfg, &device)?;
    let mut rng = Rng::new(1);
    let x: Vec<f32> = (0..batch * size * size)
        .map(|_| rng.range(-1.0, 1.0))
        .collect();
    let x = Tensor::from_vec(x, (batch, 1, size, size), &device)?;
    for _ in 0..warmup {
        det.train_step(&x)?;
    }
    let t = Instant::now();
    for _ in 0..steps {
        det.train_step(&x)?;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{{\"framework\":\"candle\",\"version\":\"0.11.1\",\"threads\":{threads},\"batch\":{batch},\"size\":{size},\"steps\":{steps},\"images_per_s\":{:.1},\"ms_per_step\":{:.2}}}",
        (steps * batch) as f64 / s,
        s * 1000.0 / steps as f64
    );
    Ok(())
}
