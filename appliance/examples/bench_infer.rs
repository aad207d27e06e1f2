//! Timing of the tract backend for `just bench-infer`:
//! `bench_infer BUNDLE PRECISION(f32|int8) THREADS ITERS` prints one JSON line with the batch-1
//! latency (median ms) and the batch-8 throughput (images/s).

use std::path::PathBuf;
use std::time::Instant;

use vigil_appliance::backend::tract::{Precision, TractBackend, TractOptions};
use vigil_appliance::backend::Backend;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 5,
        "usage: bench_infer BUNDLE f32|int8 THREADS ITERS"
    );
    let dir = PathBuf::from(&a[1]);
    let precision = match a[2].as_str() {
        "f32" => Precision::F32,
        "int8" => Precision::Int8,
        p => anyhow::bail!("precision {p}: expected f32 or int8"),
    };
    let threads: usize = a[3].parse()?;
    let iters: usize = a[4].parse()?;
    let mut b = TractBackend::load(
        &dir,
        &TractOptions {
            precision,
            max_batch: 8,
            threads,
        },
    )?;
    let m = b.manifest().clone();
    let plane = m.input.height * m.input.width;
    let frame = m.input.channels * plane;
    // A deterministic frame pattern in [-1, 1]; timing does not depend on the values.
    let input: Vec<f32> = (0..8 * frame)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let (mut s, mut mp) = (vec![0f32; 8], vec![0f32; 8 * plane]);
    let mut time = |batch: usize| -> anyhow::Result<Vec<f64>> {
        for _ in 0..iters / 10 + 3 {
            b.score(
                &input[..batch * frame],
                batch,
                &mut s[..batch],
                &mut mp[..batch * plane],
            )?;
        }
        let mut t = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t0 = Instant::now();
            b.score(
                &input[..batch * frame],
                batch,
                &mut s[..batch],
                &mut mp[..batch * plane],
            )?;
            t.push(t0.elapsed().as_secs_f64());
        }
        t.sort_by(f64::total_cmp);
        Ok(t)
    };
    let t1 = time(1)?;
    let t8 = time(8)?;
    let med = |t: &[f64]| t[t.len() / 2];
    println!(
        "{{\"runtime\":\"tract\",\"precision\":\"{}\",\"threads\":{threads},\"b1_ms\":{:.4},\"b8_img_s\":{:.1}}}",
        a[2],
        med(&t1) * 1e3,
        8.0 / med(&t8)
    );
    Ok(())
}
