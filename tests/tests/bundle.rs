//! Host → appliance: a bundle trained by `vigil` is accepted by `vigild`, and a tampered one is
//! refused with an error naming the file.

use std::process::Command;

use vigil_tests::workspace_bin;

#[test]
fn vigild_verifies_a_bundle_trained_by_vigil_and_refuses_a_tampered_one() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let train = Command::new(workspace_bin("vigil"))
        .args([
            "train",
            "--data",
            "synthetic:metal",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--out",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );

    let check = Command::new(workspace_bin("vigild"))
        .args(["--check", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(out.contains("ganomaly") && out.contains("1×32×32"), "{out}");

    // One flipped byte in the weights: the checksum must catch it.
    let w = model.join("weights.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&w, bytes).unwrap();
    let check = Command::new(workspace_bin("vigild"))
        .args(["--check", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success());
    assert!(
        err.contains("weights.safetensors") && !err.contains("panicked"),
        "{err}"
    );
}
