//! The crate rules of docs/design.md ("Crate rules"), checked on the workspace's own manifests
//! (`cargo metadata --no-deps`): `vigil-shared` depends on no other workspace crate (it ships
//! on the edge and is what both sides agree on), `vigil-appliance` never on `vigil-host`
//! (the daemon carries no training code), and `vigil-models` on neither host nor appliance.
//! Every kind of dependency counts (normal, build, dev).

use std::process::Command;

use serde_json::Value;

/// (crate, workspace crates it must not depend on; None: none at all).
const RULES: &[(&str, Option<&[&str]>)] = &[
    ("vigil-shared", None),
    ("vigil-appliance", Some(&["vigil-host"])),
    ("vigil-models", Some(&["vigil-host", "vigil-appliance"])),
];

/// One line per broken rule, naming the crate, the dependency and its kind.
fn violations(metadata: &Value) -> Vec<String> {
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut out = Vec::new();
    for (name, forbidden) in RULES {
        let Some(pkg) = packages.iter().find(|p| p["name"] == *name) else {
            out.push(format!("{name} is not in the workspace"));
            continue;
        };
        for dep in pkg["dependencies"].as_array().into_iter().flatten() {
            let Some(dep_name) = dep["name"].as_str() else {
                continue;
            };
            let broken = match forbidden {
                None => members.contains(&dep_name) && dep_name != *name,
                Some(list) => list.contains(&dep_name),
            };
            if broken {
                let kind = dep["kind"].as_str().unwrap_or("normal");
                out.push(format!(
                    "{name} depends on {dep_name} ({kind} dependency): {}",
                    match forbidden {
                        None => "it may depend on no other workspace crate".to_string(),
                        Some(list) => format!("it must not depend on {}", list.join(" or ")),
                    }
                ));
            }
        }
    }
    out
}

fn workspace_metadata() -> Value {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let o = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .expect("run cargo metadata");
    assert!(
        o.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn workspace_crates_follow_the_dependency_rules() {
    let v = violations(&workspace_metadata());
    assert!(v.is_empty(), "crate rules broken:\n  {}", v.join("\n  "));
}

#[test]
fn a_broken_rule_is_reported_with_the_dependency() {
    // The check itself: a workspace where each rule is broken once.
    let dep = |name: &str, kind: Option<&str>| serde_json::json!({"name": name, "kind": kind});
    let metadata = serde_json::json!({"packages": [
        {"name": "vigil-shared", "dependencies": [dep("serde", None), dep("vigil-models", Some("dev"))]},
        {"name": "vigil-models", "dependencies": [dep("vigil-shared", None), dep("vigil-appliance", None)]},
        {"name": "vigil-appliance", "dependencies": [dep("vigil-host", Some("build"))]},
        {"name": "vigil-host", "dependencies": [dep("vigil-appliance", None)]},
    ]});
    let v = violations(&metadata);
    assert_eq!(v.len(), 3, "{v:#?}");
    assert!(v[0].starts_with("vigil-shared depends on vigil-models (dev dependency)"));
    assert!(v[1].starts_with("vigil-appliance depends on vigil-host (build dependency)"));
    assert!(v[2].starts_with("vigil-models depends on vigil-appliance (normal dependency)"));
}
