//! `vigild`: the Vigil appliance daemon.
//!
//! This first version checks a model bundle the way the scoring loop will load it (manifest
//! schema and fields, checksums of every listed file) and reports what it would run. Capture,
//! scoring and MQTT publishing build on this (see docs/architecture.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use vigil_shared::manifest::Manifest;

#[derive(Parser)]
#[command(
    name = "vigild",
    version,
    about = "Vigil appliance: score camera frames with a model bundle and publish results"
)]
struct Cli {
    /// Model bundle directory (manifest.json, weights, ONNX files), as written by `vigil train`.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Verify the bundle (schema, fields, sha256 of every file) and exit.
    #[arg(long)]
    check: bool,
}

fn run(cli: Cli) -> Result<()> {
    let manifest = Manifest::load(&cli.model)?;
    for f in &manifest.files {
        manifest.verify_file(&cli.model, &f.name)?;
    }
    let i = &manifest.input;
    println!(
        "{}: {} detector, input {}×{}×{} in [{}, {}], score {} (threshold {}), {} file(s) verified",
        cli.model.display(),
        manifest.detector,
        i.channels,
        i.height,
        i.width,
        i.range[0],
        i.range[1],
        manifest.score.name,
        manifest.normalisation.threshold,
        manifest.files.len()
    );
    if !cli.check {
        anyhow::bail!("the scoring loop is not part of this build yet: only --check is available");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
