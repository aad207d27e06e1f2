//! `vigild` configuration and source errors at start: one clear line naming the field, file or
//! device, never a panic.

use std::path::Path;
use std::process::{Command, Output};

fn vigild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigild"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bundle whose manifest is valid and lists no files (enough to get past the bundle check).
fn bundle(dir: &Path) {
    let m = serde_json::json!({
        "schema_version": 1,
        "detector": "ganomaly",
        "input": {"channels": 1, "height": 32, "width": 32, "range": [-1.0, 1.0]},
        "score": {"name": "latent", "params": {}},
        "normalisation": {"threshold": 0.5, "min": 0.0, "max": 1.0, "quantile": 0.99},
        "training": {"data": "synthetic:metal", "seed": 0, "epochs": 1, "image_size": 32,
                     "latent": 16, "batch": 8, "git_commit": null,
                     "created_at": "2026-11-23T00:00:00Z"},
        "files": []
    });
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
}

#[test]
fn unknown_config_field_is_named_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigild.toml");
    std::fs::write(&cfg, "model = \"/m\"\nframez = 10\n").unwrap();
    let o = vigild(&["--config", cfg.to_str().unwrap(), "--print-config"]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.starts_with("error:") && err.contains("vigild.toml") && err.contains("framez"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigild.toml");
    std::fs::write(&cfg, "model = \"/m\"\nmasks = \"sometimes\"\n").unwrap();
    let o = vigild(&["--config", cfg.to_str().unwrap(), "--print-config"]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("`masks`") && err.contains("sometimes"),
        "{err}"
    );
    // The same field as a flag overrides the file, and a bad flag is named too.
    let o = vigild(&[
        "--config",
        cfg.to_str().unwrap(),
        "--masks",
        "all",
        "--broker",
        "tcp://x",
        "--print-config",
    ]);
    let err = stderr(&o);
    assert!(err.contains("`broker`") && err.contains("tcp://x"), "{err}");
    // `gpu` is no engine: refused when the configuration is read, naming the field and
    // where the GPU path is.
    let o = vigild(&["--model", "/m", "--backend", "gpu", "--print-config"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("`backend`") && err.contains("backend = \"ort\" with ep = \"cuda\""),
        "{err}"
    );
    // ort is a valid name whether or not this build has the engine (loading says which).
    let o = vigild(&["--model", "/m", "--backend", "ort", "--print-config"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // An execution provider without onnxruntime is refused, naming the field.
    let o = vigild(&["--model", "/m", "--ep", "cuda", "--print-config"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("`ep`"), "{err}");
}

#[test]
fn print_config_shows_effective_values_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigild.toml");
    std::fs::write(
        &cfg,
        "model = \"/m\"\nfps = 5.0\ncamera = \"line-1\"\npassword = \"s3cret\"\nusername = \"u\"\n",
    )
    .unwrap();
    let o = vigild(&[
        "--config",
        cfg.to_str().unwrap(),
        "--fps",
        "25",
        "--print-config",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("fps = 25.0"), "{out}");
    assert!(out.contains("budget_ms = 40.0"), "{out}");
    assert!(out.contains("camera = \"line-1\""), "{out}");
    assert!(out.contains("masks = \"anomalous\""), "{out}");
    assert!(!out.contains("s3cret"), "password must be masked: {out}");
    // The printed config is itself a valid config file.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, out.as_bytes()).unwrap();
    let o2 = vigild(&["--config", again.to_str().unwrap(), "--print-config"]);
    assert!(o2.status.success(), "{}", stderr(&o2));
}

#[test]
fn gpu_backend_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path());
    let o = vigild(&[
        "--model",
        dir.path().to_str().unwrap(),
        "--backend",
        "gpu",
        "--source",
        "synthetic",
        "--frames",
        "1",
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("`backend`") && err.contains("backend = \"ort\" with ep = \"cuda\""),
        "{err}"
    );
}

#[test]
fn camera_that_does_not_exist_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path());
    let o = vigild(&[
        "--model",
        dir.path().to_str().unwrap(),
        "--source",
        "v4l:/dev/video-vigil-missing",
        "--frames",
        "1",
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("v4l:/dev/video-vigil-missing") && err.contains("no such device"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path());
    let o = vigild(&[
        "--model",
        dir.path().to_str().unwrap(),
        "--source",
        "folder:/nonexistent/frames",
        "--frames",
        "1",
    ]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("/nonexistent/frames"), "{err}");
}

fn vigild_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigild"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn secrets_from_the_environment_are_used_and_never_echoed() {
    let env = [
        ("VIGILD_PASSWORD", "env-pass-s3cret"),
        ("VIGILD_COMMAND_TOKEN", "env-token-0123456789"),
    ];
    let args = [
        "--model",
        "/m",
        "--broker",
        "mqtts://broker.example:8883",
        "--username",
        "u",
        "--print-config",
    ];
    let o = vigild_env(&args, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("password = \"********\""), "{out}");
    assert!(out.contains("command_token = \"********\""), "{out}");
    assert!(
        !out.contains("s3cret") && !out.contains("0123456789"),
        "{out}"
    );
    // Without a username the password is refused; the error must not echo it either.
    let o = vigild_env(&["--model", "/m", "--print-config"], &env);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("password"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    let help = vigild_env(&["--help"], &env);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("VIGILD_PASSWORD"),
        "--help names the variable"
    );
    assert!(!help.contains("s3cret"), "--help must not show its value");
}

#[test]
fn home_assistant_discovery_settings() {
    let o = vigild(&["--model", "/m", "--print-config"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ha_discovery = true"), "{out}");
    assert!(
        out.contains("ha_discovery_prefix = \"homeassistant\""),
        "{out}"
    );
    assert!(out.contains("ha_expire_after_s = 60"), "{out}");
    let o = vigild(&[
        "--model",
        "/m",
        "--ha-discovery",
        "false",
        "--ha-expire-after-s",
        "0",
        "--print-config",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ha_discovery = false"), "{out}");
    assert!(out.contains("ha_expire_after_s = 0"), "{out}");
    let o = vigild(&[
        "--model",
        "/m",
        "--ha-discovery-prefix",
        "ha/#",
        "--print-config",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("ha_discovery_prefix") && err.contains("ha/#"),
        "{err}"
    );
}
