//! `vigil-deploy` refuses bad input before touching a device, and fails fast with the device's
//! name when ssh cannot reach it. (The full deploy runs against a real sshd in
//! tests/tests/deploy.rs; this target also makes `cargo test --workspace` build the binary
//! that test drives.)

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn deploy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil-deploy"))
        .args(args)
        .output()
        .expect("run vigil-deploy")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_missing_bundle_is_named_before_any_ssh() {
    let o = deploy(&[
        "target=nobody@127.0.0.1",
        "model=/nonexistent/bundle",
        "--dry-run",
    ]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("/nonexistent/bundle"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn an_unreachable_device_is_a_quick_clear_error() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let t = Instant::now();
    let o = deploy(&["nobody@127.0.0.1", "--ssh-port", &port, "--dry-run"]);
    let e = stderr(&o);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("cannot reach nobody@127.0.0.1"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_misspelt_word_is_refused_with_usage() {
    let o = deploy(&["pi@cam-3", "modle=runs/fm1"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("unknown argument `modle=runs/fm1`"), "{e}");
}
