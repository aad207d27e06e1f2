//! `vigild` on bad bundles: a clear one-line error naming the file, never a panic.

use std::process::Command;

fn vigild(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vigild"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn missing_bundle_names_the_manifest_path() {
    let o = vigild(&["--check", "--model", "/nonexistent/bundle"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.starts_with("error:") && err.contains("/nonexistent/bundle/manifest.json"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn manifest_that_is_not_json_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), "{ not json").unwrap();
    let o = vigild(&["--check", "--model", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("manifest.json") && !err.contains("panicked"),
        "{err}"
    );
}
