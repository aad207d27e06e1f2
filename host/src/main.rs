//! `vigil`: train, evaluate and package GAN anomaly detectors for the Vigil appliance.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use vigil_host::data::{self, DataSpec, LoadOptions};
use vigil_host::{bundle, demo, eval, export, patch, predict, train};
use vigil_models::DetectorKind;
use vigil_shared::manifest::Decoder;
use vigil_shared::synth::SurfaceKind;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Train, evaluate and package GAN anomaly detectors for visual inspection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a detector on normal images and write a model bundle (checkpointed every epoch).
    Train(TrainArgs),
    /// Score a test split with a bundle and print image/pixel metrics as one JSON object.
    Eval(EvalArgs),
    /// Write a procedural dataset of textured parts with defects and exact masks (MVTec AD layout).
    Synth(SynthArgs),
    /// Write the bundle's scorer as ONNX (model.onnx, and model.int8.onnx with --quantize int8)
    /// and record the files in its manifest.
    Export(ExportArgs),
    /// The whole product in about two minutes: synthesise a line of parts (a few defective),
    /// train a small GANomaly on good parts, export it, run vigild on a replay of the line with
    /// its embedded MQTT broker, and show its verdicts live as a dashboard subscribed to them
    /// sees them; then score them against the known defects.
    Demo(DemoArgs),
    /// Score image files or folders of any size as vigild would (the bundle's exported graph
    /// and preprocessing) and write predictions.csv, predictions.jsonl and an overlay PNG per
    /// image (input | heatmap | overlay). Exit status: 0 when every image is good, 3 when at
    /// least one is anomalous, 1 on an error.
    Predict(PredictArgs),
    /// Print a shell completion script: `vigil completions bash > /etc/bash_completion.d/vigil`
    /// (or zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
struct PredictArgs {
    /// Model bundle directory, exported (`vigil export`).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Image files (png, jpg, jpeg, bmp) and folders of them (not recursive).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Where predictions.csv, predictions.jsonl and the overlays go.
    #[arg(long, value_name = "DIR", default_value = "runs/predict")]
    out: PathBuf,
    /// Exported graph to run, as vigild's --precision: f32 (model.onnx) or int8 (model.int8.onnx).
    #[arg(long, default_value = "f32", value_parser = ["f32", "int8"])]
    precision: String,
    /// Skip the overlay PNGs (scores only).
    #[arg(long)]
    no_overlays: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Working directory: line/ (frames + labels.csv), model/ (bundle), vigild.log, summary.json.
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    out: PathBuf,
    /// Parts on the line (frames replayed to vigild).
    #[arg(long, default_value_t = 200)]
    frames: usize,
    /// Replay rate of the line in frames per second.
    #[arg(long, default_value_t = 10.0)]
    fps: f64,
    /// Fraction of parts with a defect.
    #[arg(long, default_value_t = 0.1)]
    defect_rate: f32,
    /// Training epochs over 1000 good parts (about 15 s each at 32² on two cores).
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Side of the model input and of the frames, a power of two (32, 64, 128, 256). 64 takes
    /// about four times as long to train.
    #[arg(long, default_value_t = 32, value_parser = parse_size)]
    image_size: usize,
    /// Surface of the parts: metal, fabric or casting.
    #[arg(long, default_value = "metal")]
    kind: SurfaceKind,
    /// Seed of the line and of training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Port of vigild's embedded MQTT broker on 127.0.0.1 (default: a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Skip training when DIR/model already holds a model of the same size, epochs, seed and kind.
    #[arg(long)]
    reuse_model: bool,
    /// The vigild binary (default: next to this executable; built with cargo when missing
    /// under `cargo run`).
    #[arg(long, value_name = "PATH")]
    vigild: Option<PathBuf>,
}

#[derive(Args)]
struct ExportArgs {
    /// Bundle directory written by `vigil train`.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Also write an int8 graph (model.int8.onnx): `int8`.
    #[arg(long, value_parser = ["int8"])]
    quantize: Option<String>,
    /// Normal training images (from the manifest's training.data) to calibrate int8 ranges on.
    #[arg(long, default_value_t = 256, requires = "quantize")]
    calibration: usize,
    /// Directory of the Fashion-MNIST IDX files (see `vigil train --help`).
    #[arg(long, env = "VIGIL_DATA", value_name = "DIR")]
    data_root: Option<PathBuf>,
}

#[derive(Args)]
struct DataArgs {
    /// Where the data comes from: `fashion-mnist:normal=C[,contamination=P]` (one-class protocol,
    /// class C normal), `folder:PATH` (MVTec AD layout: train/good, test/<type>,
    /// ground_truth/<type>/<name>_mask.png) or `synthetic:KIND` (metal, fabric).
    #[arg(long, value_name = "SPEC")]
    data: DataSpec,
    /// Directory of the Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist,
    /// from the Debian package dataset-fashion-mnist).
    #[arg(long, env = "VIGIL_DATA", value_name = "DIR")]
    data_root: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    /// Detector to train: anogan, egbad, ganomaly, alad, fanogan, gaae, wild (the seed
    /// detectors, which model normal images), or seg (restoration + segmentation trained on
    /// synthetic anomalies: the one for textured surfaces with small defects; docs/bundle.md).
    #[arg(long, default_value = "ganomaly")]
    detector: DetectorKind,
    #[command(flatten)]
    data: DataArgs,
    /// Bundle directory to write (created if missing; overwritten unless --resume).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Side of the square model input, a power of two (32, 64, 128, 256); default 64. With
    /// --patch, the side the images are loaded at (from the patch up to 512, or `native`: the
    /// folder's own size, all images sharing one; the default with --patch).
    #[arg(long, value_name = "N|native")]
    image_size: Option<patch::SizeArg>,
    /// Patch mode: train on random N×N crops of the --image-size images (N a power of two,
    /// 32..=256) and score a whole image as overlapping tiles, their anomaly maps stitched at
    /// input resolution and the image score the largest tile score (docs/bundle.md).
    #[arg(long, value_name = "N")]
    patch: Option<usize>,
    /// Step between tiles when scoring in patch mode (default: N/2).
    #[arg(long, value_name = "S", requires = "patch")]
    stride: Option<usize>,
    /// Random crops per training image and epoch in patch mode (default: as many as
    /// non-overlapping N×N tiles fit in the image).
    #[arg(long, value_name = "K", requires = "patch")]
    crops: Option<usize>,
    /// Colour channels of the model input, 1 or 3 (default: 1 for fashion-mnist and synthetic,
    /// 3 for folder data).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    channels: Option<u8>,
    /// Passes over the training split.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Images per optimisation step. Default: 64 (the papers'), 16 for egbad, whose BiGAN
    /// encoder needs more steps than 2 epochs of batch 64 give (docs/benchmarks.md).
    #[arg(long)]
    batch: Option<usize>,
    /// Size of the latent code.
    #[arg(long, default_value_t = 100)]
    latent: usize,
    /// How the decoders double their resolution: `deconv`, 4×4 transposed convolutions of
    /// stride 2 (DCGAN, the papers'); `upsample`, nearest-neighbour ×2 then a 3×3 convolution
    /// (no transposed convolution in the exported graph; docs/benchmarks.md compares the two).
    #[arg(long, default_value_t = Decoder::Deconv)]
    decoder: Decoder,
    /// Seed for weight initialisation, data splits and batch order (runs are reproducible on CPU).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute device: `cpu` or `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue the run checkpointed in --out up to --epochs.
    #[arg(long)]
    resume: bool,
    /// Score to calibrate and ship; default: the first of the detector's. anogan: search,
    /// residual; egbad: residual, combined, features; ganomaly: residual, encoder; alad:
    /// features, l1, l2, logits; fanogan: izif, residual, origin; gaae: combined, residual,
    /// features, latent; wild: combined, residual, origin; seg: seg-max, seg-topk, residual
    /// (docs/bundle.md defines each). Every
    /// detector also has the map scores l1-max, l1-topk, ssim-mean, ssim-max, ssim-topk,
    /// msgms-mean, msgms-max, msgms-topk: an image score read from a smoothed residual map
    /// (L1, 1 − SSIM, 1 − MSGMS; its max, or the mean of its top 1 % or of all pixels), and that
    /// map becomes the bundle's anomaly map.
    #[arg(long)]
    score: Option<String>,
    /// Gaussian σ in pixels for smoothing the anomaly map (default: image size / 64, at least 1).
    #[arg(long)]
    sigma: Option<f32>,
    /// Quantile of held-out normal scores that becomes the threshold.
    #[arg(long, default_value_t = 0.99)]
    threshold_quantile: f64,
}

#[derive(Args)]
struct EvalArgs {
    /// Bundle directory written by `vigil train`.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Test data (default: the data spec the model was trained on).
    #[arg(long, value_name = "SPEC")]
    data: Option<DataSpec>,
    /// Directory of the Fashion-MNIST IDX files (see `vigil train --help`).
    #[arg(long, env = "VIGIL_DATA", value_name = "DIR")]
    data_root: Option<PathBuf>,
    /// Also write ROC and PR curves, a score histogram and an overlay grid (PNG) here.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Score with an exported graph of the bundle run by tract, as the appliance does, instead of
    /// the Candle model: `model.onnx` or `model.int8.onnx` (a path relative to --model, checked
    /// against the manifest's sha256). Measures what export and quantisation cost in accuracy.
    #[arg(long, value_name = "FILE", conflicts_with = "report")]
    onnx: Option<PathBuf>,
    /// Evaluate another of the detector's scores than the bundle's (e.g. `origin` for `wild`;
    /// `docs/bundle.md` lists each detector's). Its threshold, which only `image_f1` uses, is
    /// calibrated afresh on the data's held-out normal images at the bundle's quantile. `all`
    /// evaluates every score from one scoring pass and prints one JSON object per line, the
    /// bundle's own score first.
    #[arg(long, value_name = "NAME", conflicts_with = "onnx")]
    score: Option<String>,
    /// Compute device: `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct SynthArgs {
    /// Output directory (MVTec AD layout).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Surface: metal (brushed metal) or fabric (woven fabric).
    #[arg(long, default_value = "metal")]
    kind: SurfaceKind,
    /// Number of good training images; the test split gets half as many, with defects.
    #[arg(long, default_value_t = 400)]
    count: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Colour channels, 1 or 3.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    channels: u8,
    /// Fraction of test images with a defect.
    #[arg(long, default_value_t = 0.5)]
    defect_rate: f32,
    /// Seed of the generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if n.is_power_of_two() && (32..=256).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not one of 32, 64, 128, 256"))
    }
}

fn parse_device(s: &str) -> Result<Device> {
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(n) = s.strip_prefix("cuda:").or((s == "cuda").then_some("0")) else {
        bail!("--device {s}: expected cpu or cuda:N");
    };
    let n: usize = n
        .parse()
        .with_context(|| format!("--device {s}: bad GPU index"))?;
    if !candle_core::utils::cuda_is_available() {
        bail!(
            "--device {s}: this vigil was built without CUDA (build one with `just build-cuda`, \
             or `cargo build --release -p vigil-host --features cuda` where a CUDA toolkit is \
             installed; docs/gpu.md)"
        );
    }
    Ok(Device::new_cuda(n)?)
}

fn default_channels(spec: &DataSpec) -> usize {
    match spec {
        DataSpec::Folder(_) => 3,
        _ => 1,
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Predict(a) = cli.command {
        return run_predict(a);
    }
    run_other(cli.command).map(|()| ExitCode::SUCCESS)
}

/// Exit status 3 when an image is anomalous.
fn run_predict(a: PredictArgs) -> Result<ExitCode> {
    let opts = predict::PredictOptions {
        model: a.model,
        inputs: a.inputs,
        out: a.out,
        graph: if a.precision == "int8" {
            "model.int8.onnx".into()
        } else {
            "model.onnx".into()
        },
        overlays: !a.no_overlays,
    };
    let n = predict::list_inputs(&opts.inputs)?.len();
    // On a terminal only: piped output stays clean for scripts.
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(n as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "scoring [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let preds = predict::predict(&opts, || bar.inc(1))?;
    bar.finish_and_clear();
    let bad = preds.iter().filter(|p| p.anomalous).count();
    println!(
        "{} images: {} good, {bad} anomalous; {}",
        preds.len(),
        preds.len() - bad,
        opts.out.join("predictions.csv").display()
    );
    Ok(if bad > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_other(command: Command) -> Result<()> {
    match command {
        Command::Train(a) => run_train(a),
        Command::Eval(a) => run_eval(a),
        Command::Export(a) => run_export(a),
        Command::Demo(a) => run_demo(a),
        Command::Synth(a) => run_synth(a),
        Command::Predict(_) => unreachable!("handled by run"),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "vigil", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn run_train(a: TrainArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let channels = a
        .channels
        .map(usize::from)
        .unwrap_or_else(|| default_channels(&a.data.data));
    if channels != 1 && channels != 3 {
        bail!("--channels {channels}: expected 1 or 3");
    }
    let image_size = patch::image_size(a.image_size, a.patch, &a.data.data)?;
    let patch = patch::training(a.patch, a.stride, a.crops, image_size)?;
    let opts = LoadOptions {
        image_size,
        channels,
        data_root: a.data.data_root,
        seed: a.seed,
    };
    let dataset = data::load(&a.data.data, &opts)?;
    eprintln!(
        "{}: {} train, {} validation, {} test images at {channels}×{}²",
        dataset.spec,
        dataset.train.len(),
        dataset.val.len(),
        dataset.test.len(),
        image_size
    );
    let summary = train::train(
        &dataset,
        &train::TrainOptions {
            detector: a.detector,
            out: a.out.clone(),
            epochs: a.epochs,
            batch: a.batch.unwrap_or_else(|| a.detector.default_batch()),
            latent: a.latent,
            decoder: a.decoder,
            seed: a.seed,
            resume: a.resume,
            score: a.score,
            sigma: a.sigma.unwrap_or_else(|| bundle::default_sigma(image_size)),
            threshold_quantile: a.threshold_quantile,
            device,
            progress: std::io::stderr().is_terminal(),
            patch,
        },
    )?;
    eprintln!(
        "wrote {} ({} epochs, {:.0} img/s, threshold {:.5})",
        a.out.display(),
        summary.epochs,
        summary.images_per_s,
        summary.threshold
    );
    Ok(())
}

fn run_eval(a: EvalArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let model = bundle::load(&a.model, &device)?;
    let spec = match a.data {
        Some(s) => s,
        None => model.manifest.training.data.parse().with_context(|| {
            format!(
                "{}: field training.data",
                a.model.join("manifest.json").display()
            )
        })?,
    };
    let opts = LoadOptions {
        image_size: model.manifest.input.height,
        channels: model.manifest.input.channels,
        data_root: a.data_root,
        seed: model.manifest.training.seed,
    };
    let dataset = data::load(&spec, &opts)?;
    if a.score.as_deref() == Some("all") {
        if a.report.is_some() {
            bail!("--report draws one score's curves: pick a score instead of --score all");
        }
        for r in eval::evaluate_all_scores(&model, &dataset, &device)? {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    }
    let result = match &a.onnx {
        Some(file) => eval::evaluate_onnx(&model, &a.model, file, &dataset)?,
        None => eval::evaluate(
            &model,
            &dataset,
            a.score.as_deref(),
            a.report.as_deref(),
            &device,
        )?,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

fn run_export(a: ExportArgs) -> Result<()> {
    let summary = export::export(
        &a.model,
        &export::ExportOptions {
            int8_calibration: a.quantize.is_some().then_some(a.calibration),
            data_root: a.data_root,
        },
    )?;
    for (path, sha) in summary.files {
        eprintln!("wrote {} (sha256 {sha})", path.display());
    }
    Ok(())
}

fn run_demo(a: DemoArgs) -> Result<()> {
    demo::run(&demo::DemoOptions {
        out: a.out,
        frames: a.frames,
        fps: a.fps,
        defect_rate: a.defect_rate,
        recipe: demo::ModelRecipe {
            kind: a.kind,
            size: a.image_size,
            epochs: a.epochs,
            seed: a.seed,
        },
        port: a.port,
        reuse_model: a.reuse_model,
        vigild: a.vigild,
    })?;
    Ok(())
}

fn run_synth(a: SynthArgs) -> Result<()> {
    let summary = data::write_synthetic_folder(
        &a.out,
        a.kind,
        a.count,
        a.size,
        usize::from(a.channels),
        a.defect_rate,
        a.seed,
    )?;
    eprintln!("wrote {}: {summary:?}", a.out.display());
    Ok(())
}

fn main() -> ExitCode {
    vigil_models::cpu::tune();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // One line, outermost context first: what failed and on which file.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
