//! What write-ahead delivery costs per frame (`just bench-spool`): the publisher's own spool
//! calls, in the order and at the rate vigild makes them at 30 fps. Each frame's result
//! (~600 bytes of JSON) is appended, every tenth frame a mask PNG (~1.2 KB) too, the spool is
//! fsynced every 3 frames (vigild: every 100 ms), the records are acknowledged as a broker
//! would (a few frames later) and the acknowledged position is persisted every 30 frames (1 s).
//!
//! `bench_spool DIR FRAMES` prints one JSON line: per-call p50/p99/max in µs and the cost per
//! frame (wall and CPU µs of all spool work divided by frames). DIR should be on the disk vigild's
//! spool lives on: the fsyncs are most of the cost.

use std::path::PathBuf;
use std::time::Instant;

use vigil_appliance::publish::Spool;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn stats(v: &mut [f64]) -> serde_json::Value {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    serde_json::json!({
        "calls": v.len(),
        "p50_us": pct(v, 0.5),
        "p99_us": pct(v, 0.99),
        "max_us": pct(v, 1.0),
        "mean_us": mean,
    })
}

/// CPU time of this thread in µs: the fsyncs mostly wait on the disk, which costs the
/// publisher thread time but not the scoring loop's CPU.
fn thread_cpu_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() == 3, "usage: bench_spool DIR FRAMES");
    let dir = PathBuf::from(&a[1]);
    let frames: u64 = a[2].parse()?;
    anyhow::ensure!(frames >= 30, "FRAMES {frames}: at least 30");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut spool = Spool::open(&dir, 64 << 20)?;
    let result = br#"{"frame_id":123456,"source":"synthetic:metal:good","captured_at":"2026-12-01T18:00:00.000Z","score":0.123456,"normalized_score":0.234567,"threshold":0.5,"anomalous":false,"latency_ms":{"capture":0.004,"infer":11.6,"total":11.9},"model":{"id":"ganomaly-64-metal","sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"}}"#
        .repeat(2);
    let mask = vec![0x5au8; 1200];
    let (mut append, mut sync_data, mut ack, mut sync) = (vec![], vec![], vec![], vec![]);
    let mut seqs = Vec::new();
    let (start, cpu0) = (Instant::now(), thread_cpu_us());
    for f in 0..frames {
        let t = Instant::now();
        seqs.push(spool.try_append(false, "vigil/dev/cam0/result", &result[..600])?);
        if f % 10 == 0 {
            seqs.push(spool.try_append(false, "vigil/dev/cam0/mask", &mask)?);
        }
        append.push(t.elapsed().as_secs_f64() * 1e6);
        if f % 3 == 2 {
            let t = Instant::now();
            spool.sync_data()?;
            sync_data.push(t.elapsed().as_secs_f64() * 1e6);
        }
        // PUBACKs arrive a few frames behind the sends.
        if seqs.len() > 4 {
            let t = Instant::now();
            spool.ack_through(seqs[seqs.len() - 5])?;
            ack.push(t.elapsed().as_secs_f64() * 1e6);
        }
        if f % 30 == 29 {
            let t = Instant::now();
            spool.sync()?;
            sync.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let total_us = start.elapsed().as_secs_f64() * 1e6;
    let cpu_us = thread_cpu_us() - cpu0;
    println!(
        "{}",
        serde_json::json!({
            "frames": frames,
            "dir": dir.display().to_string(),
            "per_frame_us": total_us / frames as f64,
            "per_frame_cpu_us": cpu_us / frames as f64,
            "append": stats(&mut append),
            "sync_data": stats(&mut sync_data),
            "ack_through": stats(&mut ack),
            "sync": stats(&mut sync),
        })
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
