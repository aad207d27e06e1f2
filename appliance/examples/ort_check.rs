//! Parity and latency of the `ort` backend on one execution provider, against tract on the
//! CPU, for `bench/gpu-ort.sh` (docs/gpu.md): `ort_check BUNDLE EP(cpu|cuda|tensorrt|openvino)
//! [ITERS]`. Scores 8 deterministic frames at batch 8 and one at batch 1 with both engines and
//! prints one JSON line: the provider that ran (and why not the one asked for), the largest
//! score and map differences, whether they are within the parity rule (scores 1e-4, maps
//! 1e-3), the load time (TensorRT builds its engine then) and the median batch-1 and batch-8
//! latencies of both engines. The library comes from ORT_DYLIB_PATH.

use std::path::PathBuf;
use std::time::Instant;

use vigil_appliance::backend::ort::{OrtBackend, OrtOptions};
use vigil_appliance::backend::tract::{TractBackend, TractOptions};
use vigil_appliance::backend::{Backend, Ep};

fn median_ms(
    b: &mut dyn Backend,
    input: &[f32],
    batch: usize,
    iters: usize,
) -> anyhow::Result<f64> {
    let i = &b.manifest().input;
    let plane = i.height * i.width;
    let (mut s, mut m) = (vec![0f32; batch], vec![0f32; batch * plane]);
    for _ in 0..3 {
        b.score(input, batch, &mut s, &mut m)?;
    }
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        b.score(input, batch, &mut s, &mut m)?;
        t.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

fn outputs(
    b: &mut dyn Backend,
    input: &[f32],
    batch: usize,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let i = &b.manifest().input;
    let plane = i.height * i.width;
    let (mut s, mut m) = (vec![0f32; batch], vec![0f32; batch * plane]);
    b.score(input, batch, &mut s, &mut m)?;
    Ok((s, m))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 3 || a.len() == 4,
        "usage: ort_check BUNDLE cpu|cuda|tensorrt|openvino [ITERS]"
    );
    let dir = PathBuf::from(&a[1]);
    let ep: Ep = a[2]
        .parse()
        .map_err(|e: String| anyhow::anyhow!("{}: {e}", a[2]))?;
    let iters: usize = a.get(3).map_or(Ok(50), |s| s.parse())?;
    let mut t = TractBackend::load(&dir, &TractOptions::default())?;
    let t0 = Instant::now();
    let mut o = OrtBackend::load(
        &dir,
        &OrtOptions {
            ep,
            ..OrtOptions::default()
        },
    )?;
    let load_s = t0.elapsed().as_secs_f64();
    let i = t.manifest().input.clone();
    let frame = i.channels * i.height * i.width;
    let x: Vec<f32> = (0..8 * frame)
        .map(|k| ((k * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let (mut ds, mut dm) = (0f32, 0f32);
    for batch in [8, 1] {
        let (ts, tm) = outputs(&mut t, &x[..batch * frame], batch)?;
        let (os, om) = outputs(&mut o, &x[..batch * frame], batch)?;
        ds = ds.max(max_diff(&ts, &os));
        dm = dm.max(max_diff(&tm, &om));
    }
    let ms = |b: &mut dyn Backend, batch| median_ms(b, &x[..batch * frame], batch, iters);
    let (o1, o8) = (ms(&mut o, 1)?, ms(&mut o, 8)?);
    let (t1, t8) = (ms(&mut t, 1)?, ms(&mut t, 8)?);
    println!(
        "{}",
        serde_json::json!({
            "bundle": dir, "size": i.height, "requested_ep": ep.as_str(), "ep": o.ep().as_str(),
            "fallback": o.fallback(), "max_score_diff": ds, "max_map_diff": dm,
            "parity": ds <= 1e-4 && dm <= 1e-3, "load_s": load_s,
            "ort_b1_ms": o1, "ort_b8_ms": o8, "tract_cpu_b1_ms": t1, "tract_cpu_b8_ms": t8,
        })
    );
    Ok(())
}
