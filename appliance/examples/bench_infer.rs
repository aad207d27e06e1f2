//! Timing of vigild's engines for `just bench-infer`:
//! `bench_infer BUNDLE ENGINE(tract|ort) PRECISION(f32|int8) THREADS ITERS [SECONDS]` prints
//! one JSON line with the batch-1 latency and the batch-8 time (medians, ms) and throughput,
//! and the medians of the calling thread's CPU time per run (`b1_cpu_ms`, `b8_cpu_ms`).
//! Each batch size runs ITERS times after a warm-up, or fewer when SECONDS (default 3) have
//! passed, with at least 3 timed runs. `ort` needs the `ort` feature; its library comes from
//! ORT_DYLIB_PATH.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vigil_appliance::backend::tract::Precision;
use vigil_appliance::backend::{self, BackendKind, EngineSpec};

/// CPU time of the calling thread, in seconds.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() == 6 || a.len() == 7,
        "usage: bench_infer BUNDLE tract|ort f32|int8 THREADS ITERS [SECONDS]"
    );
    let dir = PathBuf::from(&a[1]);
    let kind = match a[2].as_str() {
        "tract" => BackendKind::Tract,
        "ort" => BackendKind::Ort,
        e => anyhow::bail!("engine {e}: expected tract or ort"),
    };
    let precision = match a[3].as_str() {
        "f32" => Precision::F32,
        "int8" => Precision::Int8,
        p => anyhow::bail!("precision {p}: expected f32 or int8"),
    };
    let threads: usize = a[4].parse()?;
    let iters: usize = a[5].parse()?;
    let budget = Duration::from_secs_f64(a.get(6).map_or(Ok(3.0), |s| s.parse())?);
    let mut b = backend::open(
        &dir,
        &EngineSpec {
            kind,
            precision,
            threads,
            max_batch: 8,
            ..EngineSpec::default()
        },
    )?
    .backend;
    let m = b.manifest().clone();
    let plane = m.input.height * m.input.width;
    let frame = m.input.channels * plane;
    // A deterministic frame pattern in [-1, 1]; timing does not depend on the values.
    let input: Vec<f32> = (0..8 * frame)
        .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
        .collect();
    let (mut s, mut mp) = (vec![0f32; 8], vec![0f32; 8 * plane]);
    // (wall, CPU time of this thread) medians: on a machine shared with other jobs the wall time
    // measures the scheduler too; with one thread the CPU time is what an idle core would take.
    let mut time = |batch: usize| -> anyhow::Result<(f64, f64)> {
        let mut call = || {
            b.score(
                &input[..batch * frame],
                batch,
                &mut s[..batch],
                &mut mp[..batch * plane],
            )
        };
        let start = Instant::now();
        for _ in 0..iters / 10 + 2 {
            call()?;
            if start.elapsed() > budget / 3 {
                break;
            }
        }
        let start = Instant::now();
        let (mut t, mut c) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
        while t.len() < iters && (t.len() < 3 || start.elapsed() < budget) {
            let (t0, c0) = (Instant::now(), thread_cpu_s());
            call()?;
            t.push(t0.elapsed().as_secs_f64());
            c.push(thread_cpu_s() - c0);
        }
        t.sort_by(f64::total_cmp);
        c.sort_by(f64::total_cmp);
        Ok((t[t.len() / 2], c[c.len() / 2]))
    };
    let (t1, c1) = time(1)?;
    let (t8, c8) = time(8)?;
    println!(
        "{{\"runtime\":\"{}\",\"precision\":\"{}\",\"threads\":{threads},\"size\":{},\"b1_ms\":{:.4},\"b8_ms\":{:.4},\"b8_img_s\":{:.1},\"b1_cpu_ms\":{:.4},\"b8_cpu_ms\":{:.4}}}",
        a[2],
        a[3],
        m.input.height,
        t1 * 1e3,
        t8 * 1e3,
        8.0 / t8,
        c1 * 1e3,
        c8 * 1e3
    );
    Ok(())
}
