//! Support for the end-to-end tests in `tests/tests/`: locating the workspace's binaries.

use std::path::PathBuf;

/// Path of a workspace binary built by the same `cargo test` profile as the running test
/// (`target/<profile>/<name>`); cargo builds every binary of the workspace before running
/// integration tests with `--workspace`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` so it is built",
        bin.display()
    );
    bin
}
