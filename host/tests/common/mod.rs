//! Shared by `tests/export.rs` and `tests/patch.rs`: running `vigil`, and the tolerances that
//! compare Candle with an exported graph.
#![allow(dead_code)] // each test binary uses a different subset

use std::process::{Command, Output};

pub fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

pub fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "vigil failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest score difference accepted between Candle and an exported f32 graph: 1e-4, or 2e-6
/// of the largest score where that is more. Scores that sum over an image or a feature tensor
/// (EGBAD's `combined`, GAAE's terms, …) reach tens or hundreds, where summing f32 in another
/// order alone moves the last digits (measured: up to 2e-7 of the score).
pub fn score_tolerance(candle: &[f32]) -> f32 {
    let largest = candle.iter().fold(0f32, |m, s| m.max(s.abs()));
    (2e-6 * largest).max(1e-4)
}
