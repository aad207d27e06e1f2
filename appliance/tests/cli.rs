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

/// Settings that would expose the box are refused before anything starts, in one line
/// naming the field and the address (no bundle needed: the config is checked first).
#[test]
fn exposed_embedded_broker_and_plaintext_token_are_refused() {
    for (args, field, value) in [
        (
            &["--embedded-broker", "--broker", "mqtt://0.0.0.0:18830"][..],
            "`broker`",
            "0.0.0.0:18830",
        ),
        (
            &[
                "--broker",
                "mqtt://10.20.30.40:1883",
                "--command-token",
                "0123456789abcdef",
            ][..],
            "`command_token`",
            "mqtt://10.20.30.40:1883",
        ),
    ] {
        let mut all = vec!["--model", "/nonexistent/bundle", "--print-config"];
        all.extend_from_slice(args);
        let o = vigild(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(
            err.starts_with("error:")
                && err.contains(field)
                && err.contains(value)
                && err.trim_end().lines().count() == 1
                && !err.contains("0123456789abcdef"),
            "{args:?}: {err}"
        );
    }
    // Asked for explicitly: accepted.
    let o = vigild(&[
        "--model",
        "/nonexistent/bundle",
        "--print-config",
        "--broker",
        "mqtt://10.20.30.40:1883",
        "--command-token",
        "0123456789abcdef",
        "--allow-plaintext-commands",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = vigild(&[
        "--model",
        "/nonexistent/bundle",
        "--print-config",
        "--embedded-broker",
        "--broker",
        "mqtt://0.0.0.0:18830",
        "--username",
        "line",
        "--password",
        "s3cret",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn completions_cover_the_flags_and_load_in_bash() {
    let o = vigild(&["--completions", "bash"]);
    assert!(o.status.success());
    let script = String::from_utf8_lossy(&o.stdout);
    for flag in ["--model", "--broker", "--ha-discovery", "--completions"] {
        assert!(script.contains(flag), "completion lacks {flag}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigild.bash");
    std::fs::write(&path, script.as_bytes()).unwrap();
    let b = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p vigild", path.display()))
        .output()
        .unwrap();
    assert!(
        b.status.success() && String::from_utf8_lossy(&b.stdout).contains("vigild"),
        "bash did not load it: {}",
        String::from_utf8_lossy(&b.stderr)
    );
    let fish = vigild(&["--completions", "fish"]);
    assert!(String::from_utf8_lossy(&fish.stdout).contains("complete -c vigild"));
}
