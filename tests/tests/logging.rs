//! vigild's log: every line has a time and a level, `--log-format json` gives one JSON object
//! per line (for journald / Loki), `--log-level` filters, and the libraries' `log` records
//! (tract, rumqttc) come through the same subscriber when RUST_LOG asks for them.

mod model_support;

use std::path::Path;
use std::process::Command;

use vigil_tests::workspace_bin;

fn run(model: &Path, extra: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(workspace_bin("vigild"))
        .arg("--model")
        .arg(model)
        .args(["--source", "synthetic", "--fps", "0", "--frames", "5"])
        .args(extra)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// Log lines: everything but vigild's end-of-run report (`vigild: …` summary lines).
fn log_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("vigild: "))
        .collect()
}

#[test]
fn log_lines_have_levels_json_works_and_libraries_log_too() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_support::small_model(dir.path());

    let text = run(&model, &[], &[]);
    let lines = log_lines(&text);
    assert!(lines.len() >= 3, "{text}");
    for l in &lines {
        let mut w = l.split_whitespace();
        let (time, level) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
        assert!(time.ends_with('Z') && time.contains('T'), "no time: {l}");
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG"].contains(&level),
            "no level: {l}"
        );
    }
    assert!(text.contains("INFO vigild: warm-up"), "{text}");
    assert!(
        text.contains("vigild: summary {"),
        "the report stays: {text}"
    );

    let quiet = run(&model, &["--log-level", "warn"], &[]);
    assert!(log_lines(&quiet).is_empty(), "warn hides info: {quiet}");

    let json = run(&model, &["--log-format", "json"], &[]);
    let events: Vec<serde_json::Value> = log_lines(&json)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(events
        .iter()
        .all(|e| e["level"].is_string() && e["timestamp"].is_string()));
    assert!(events
        .iter()
        .any(|e| e["message"].as_str().unwrap_or("").starts_with("warm-up")));

    // tract logs through the `log` crate: bridged into the same output.
    let bridged = run(&model, &[], &[("RUST_LOG", "info,tract_core=debug")]);
    assert!(
        log_lines(&bridged)
            .iter()
            .any(|l| l.contains(" tract_core")),
        "no tract log line: {bridged}"
    );
}
