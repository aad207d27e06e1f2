//! `vigil train`: the training loop, per-epoch checkpoints, threshold calibration and plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use vigil_models::{build, maps, Detector, DetectorKind};
use vigil_shared::manifest::{
    Decoder, InputSpec, Manifest, Normalisation, Provenance, ScoreSpec, SCHEMA_VERSION,
};
use vigil_shared::metrics::quantile;
use vigil_shared::rng::Rng;
use vigil_shared::tiles::Tiling;

use crate::bundle::{self, TrainState};
use crate::data::{Dataset, Sample};
use crate::patch::{self, CropPlan};
use crate::report::{self, Tile};

pub struct TrainOptions {
    pub detector: DetectorKind,
    pub out: PathBuf,
    pub epochs: usize,
    pub batch: usize,
    pub latent: usize,
    /// How the decoders upsample (`--decoder`).
    pub decoder: Decoder,
    pub seed: u64,
    pub resume: bool,
    /// Score to calibrate and ship; `None` = the detector's default.
    pub score: Option<String>,
    pub sigma: f32,
    /// Quantile of held-out normal scores used as the threshold (0.99 by default).
    pub threshold_quantile: f64,
    pub device: Device,
    /// Show an interactive progress bar (stderr is a terminal).
    pub progress: bool,
    /// Patch mode: train on random crops, score as stitched tiles (`crate::patch`).
    pub patch: Option<patch::PatchTraining>,
}

pub struct TrainSummary {
    pub epochs: usize,
    pub images_per_s: f64,
    pub threshold: f32,
}

/// Stack samples `[C, H, W]` into a batch tensor `[N, C, H, W]`.
pub fn batch_tensor(
    samples: &[&Sample],
    channels: usize,
    size: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut data = Vec::with_capacity(samples.len() * channels * size * size);
    for s in samples {
        data.extend_from_slice(&s.image);
    }
    Ok(Tensor::from_vec(
        data,
        (samples.len(), channels, size, size),
        device,
    )?)
}

/// Scores (and optionally anomaly maps, flattened `N·H·W`) for a set of samples.
pub struct Scored {
    pub scores: Vec<f32>,
    pub maps: Option<Vec<f32>>,
}

/// Several scores of the same images: one vector per score name, and (when kept) the maps they
/// are read from, each distinct map once (the detector's scores share its L1 map; each map
/// score family its own, `vigil_models::maps`).
pub struct ScoredMany {
    pub scores: Vec<Vec<f32>>,
    /// Distinct maps, flattened `N·H·W`; empty unless maps were kept.
    pub maps: Vec<Vec<f32>>,
    /// For each score, the index of its map in `maps`.
    pub map_of: Vec<usize>,
}

impl ScoredMany {
    /// The map of score `i`, if maps were kept.
    pub fn map(&self, i: usize) -> Option<&[f32]> {
        self.maps.get(self.map_of[i]).map(Vec::as_slice)
    }
}

/// Several of the detector's scores, and map scores, from one pass over `samples` (each detector
/// computes all of its scores in one forward pass anyway, and each map is computed once); one
/// score vector per name, in `names`' order.
pub fn score_samples_many(
    detector: &dyn Detector,
    samples: &[Sample],
    names: &[&str],
    keep_maps: bool,
    device: &Device,
) -> Result<ScoredMany> {
    let cfg = detector.config();
    let mut scores = vec![Vec::with_capacity(samples.len()); names.len()];
    let (kinds, map_of) = distinct_maps(names);
    let plane = cfg.size * cfg.size;
    let mut kept: Vec<Vec<f32>> = match keep_maps {
        true => vec![Vec::with_capacity(samples.len() * plane); kinds.len()],
        false => Vec::new(),
    };
    // At most 128 images and 2¹⁸ pixels a pass (`patch::PIXELS_PER_PASS` says why).
    let per_pass = (crate::patch::PIXELS_PER_PASS / plane).clamp(1, 128);
    for chunk in samples.chunks(per_pass) {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let x = batch_tensor(&refs, cfg.channels, cfg.size, device)?;
        let inf = maps::infer(detector, &x, names)?;
        for (name, out) in names.iter().zip(scores.iter_mut()) {
            out.extend(inf.score(name)?.to_vec1::<f32>()?);
        }
        for (m, (_, name)) in kept.iter_mut().zip(&kinds) {
            m.extend(inf.map(name)?.flatten_all()?.to_vec1::<f32>()?);
        }
    }
    Ok(ScoredMany {
        scores,
        maps: kept,
        map_of,
    })
}

/// One representative score name per distinct map among `names`, and each name's map index.
/// Which map a score reads: its kind, and whether it is a map score (true) or one of the
/// detector's own scores (false, the detector's own map).
pub(crate) type MapKey = (maps::MapKind, bool);

/// A detector's own scores read its own map, map scores theirs: the same L1 map for the seed
/// detectors, but not for `seg` (segmentation vs L1), so the two are kept apart.
pub(crate) fn distinct_maps<'a>(names: &[&'a str]) -> (Vec<(MapKey, &'a str)>, Vec<usize>) {
    let mut kinds: Vec<(MapKey, &str)> = Vec::new();
    let mut map_of = Vec::with_capacity(names.len());
    for name in names {
        let kind = (maps::map_of(name), maps::MapScore::parse(name).is_some());
        map_of.push(match kinds.iter().position(|(k, _)| *k == kind) {
            Some(i) => i,
            None => {
                kinds.push((kind, *name));
                kinds.len() - 1
            }
        });
    }
    (kinds, map_of)
}

/// Threshold = the chosen quantile of held-out normal scores; the normalisation maps the lowest
/// normal score to 0 and the threshold to 0.5, linearly (so `max` mirrors `min` around it).
pub fn calibrate(val_scores: &[f32], q: f64) -> Result<Normalisation> {
    if val_scores.is_empty() {
        bail!("calibration needs held-out normal images, and the validation split is empty");
    }
    let threshold = quantile(val_scores, q)?;
    let min = val_scores.iter().copied().fold(f32::INFINITY, f32::min);
    let max = threshold + (threshold - min).max(f32::EPSILON);
    Ok(Normalisation {
        threshold,
        min,
        max,
        quantile: q,
    })
}

pub fn train(data: &Dataset, opts: &TrainOptions) -> Result<TrainSummary> {
    let kind = opts.detector;
    let score = chosen_score(kind, opts.score.as_deref())?;
    // Refused before training rather than at the first calibration; the model sees tiles in
    // patch mode.
    let side = opts.patch.map_or(data.size, |p| p.spec.size);
    maps::check_geometry(&score, side, side)?;
    if data.train.len() < opts.batch {
        bail!(
            "the training split has {} images, fewer than one batch of {} (lower --batch)",
            data.train.len(),
            opts.batch
        );
    }
    let mut manifest = new_manifest(data, opts, &score);
    // The architecture as loaders will read it back from the manifest.
    let mut detector = build(kind, bundle::model_config(&manifest), &opts.device)?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let plots = opts.out.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    let mut state = initial_state(detector.as_mut(), opts)?;
    let tiling = patch::tiling(&manifest)?;

    let preview: Vec<&Sample> = data.val.iter().chain(data.train.iter()).take(8).collect();
    let mut images = 0usize;
    let started = Instant::now();
    for epoch in state.epochs_done..opts.epochs {
        let (epoch_losses, seen) = train_epoch(detector.as_mut(), data, opts, epoch, &mut state)?;
        images += seen;

        // End of epoch: calibrate on held-out normals, write a usable bundle and the checkpoint.
        let val = patch::score_samples(
            detector.as_ref(),
            tiling.as_ref(),
            &data.val,
            &score,
            false,
            &opts.device,
        )?;
        manifest.normalisation = calibrate(&val.scores, opts.threshold_quantile)?;
        manifest.training.epochs = epoch + 1;
        bundle::save_weights(detector.as_ref(), &opts.out, &mut manifest)?;
        state.epochs_done = epoch + 1;
        bundle::save_checkpoint(detector.as_ref(), &opts.out, &state)?;
        let shown = Preview {
            samples: &preview,
            score: &score,
            tiling: tiling.as_ref(),
        };
        write_epoch_plots(
            detector.as_ref(),
            &shown,
            &state,
            &plots,
            epoch + 1,
            &opts.device,
        )?;

        let mean: Vec<String> = epoch_losses
            .iter()
            .map(|(n, (s, c))| format!("{n} {:.4}", s / *c as f64))
            .collect();
        eprintln!(
            "epoch {}/{}  {}  threshold {:.5}  ({:.0} img/s)",
            epoch + 1,
            opts.epochs,
            mean.join("  "),
            manifest.normalisation.threshold,
            images as f64 / started.elapsed().as_secs_f64()
        );
    }
    Ok(TrainSummary {
        epochs: opts.epochs,
        images_per_s: images as f64 / started.elapsed().as_secs_f64(),
        threshold: manifest.normalisation.threshold,
    })
}

/// `--score`, checked against what `kind` offers; its default when not given.
fn chosen_score(kind: DetectorKind, score: Option<&str>) -> Result<String> {
    match score {
        Some(s) if kind.all_scores().contains(&s) => Ok(s.to_string()),
        Some(s) => bail!(
            "--score {s}: {kind} offers {}, and the map scores {}",
            kind.scores().join(", "),
            maps::SCORES.join(", ")
        ),
        None => Ok(kind.scores()[0].to_string()),
    }
}

/// The training state to continue from: the checkpoint's with `--resume`, a fresh one otherwise.
fn initial_state(detector: &mut dyn Detector, opts: &TrainOptions) -> Result<TrainState> {
    let state = if opts.resume {
        // A different architecture would fail on a variable name; say which flag differs.
        if let Ok(m) = Manifest::load(&opts.out) {
            if m.training.decoder != opts.decoder {
                bail!(
                    "--resume: {} was trained with --decoder {}, not {}",
                    opts.out.display(),
                    m.training.decoder,
                    opts.decoder
                );
            }
        }
        let state = bundle::load_checkpoint(detector, &opts.out)?;
        eprintln!(
            "resuming {} after epoch {}",
            opts.out.display(),
            state.epochs_done
        );
        state
    } else {
        TrainState {
            detector: opts.detector.name().into(),
            epochs_done: 0,
            optimizer_steps: vec![],
            losses: vec![],
        }
    };
    if state.epochs_done >= opts.epochs {
        bail!(
            "--resume: {} has already trained {} epochs; ask for more with --epochs",
            opts.out.display(),
            state.epochs_done
        );
    }
    Ok(state)
}

/// The bundle manifest before the first epoch: normalisation and epoch count are filled in
/// after each epoch.
fn new_manifest(data: &Dataset, opts: &TrainOptions, score: &str) -> Manifest {
    Manifest {
        schema_version: SCHEMA_VERSION,
        detector: opts.detector.name().into(),
        input: InputSpec {
            channels: data.channels,
            height: data.size,
            width: data.size,
            range: [-1.0, 1.0],
        },
        patch: opts.patch.map(|p| p.spec),
        score: ScoreSpec {
            name: score.to_string(),
            params: BTreeMap::from([("sigma".to_string(), opts.sigma as f64)]),
        },
        normalisation: Normalisation {
            threshold: 0.0,
            min: 0.0,
            max: 0.0,
            quantile: opts.threshold_quantile,
        },
        training: Provenance {
            data: data.spec.clone(),
            seed: opts.seed,
            epochs: 0,
            image_size: data.size,
            latent: opts.latent,
            decoder: opts.decoder,
            batch: opts.batch,
            git_commit: bundle::git_commit(),
            created_at: now_rfc3339(),
        },
        files: vec![],
    }
}

/// Per-loss (sum, count) over one epoch.
type EpochLosses = BTreeMap<&'static str, (f64, usize)>;

/// One epoch of optimisation steps over whole batches (of images, or in patch mode of random
/// crops), the loss series appended to `state`; returns the losses and the images seen.
fn train_epoch(
    detector: &mut dyn Detector,
    data: &Dataset,
    opts: &TrainOptions,
    epoch: usize,
    state: &mut TrainState,
) -> Result<(EpochLosses, usize)> {
    // Seeded per epoch so a resumed run draws the same batches as an uninterrupted one.
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    Rng::new(opts.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)).shuffle(&mut order);
    let crops = (opts.patch.as_ref()).map(|p| CropPlan::new(data, p, opts.seed, epoch));
    let steps_per_epoch = crops
        .as_ref()
        .map_or(data.train.len() / opts.batch, |c| c.steps(opts.batch));
    let bar = progress_bar(opts.progress, steps_per_epoch, epoch, opts.epochs);
    let mut epoch_losses = EpochLosses::new();
    detector.begin_epoch(epoch, opts.epochs);
    for step in 0..steps_per_epoch {
        let x = match &crops {
            Some(c) => c.batch(data, step, opts.batch, &opts.device)?,
            None => {
                let idx = &order[step * opts.batch..(step + 1) * opts.batch];
                let refs: Vec<&Sample> = idx.iter().map(|&i| &data.train[i]).collect();
                batch_tensor(&refs, data.channels, data.size, &opts.device)?
            }
        };
        let losses = detector.train_step(&x)?;
        for (name, v) in &losses {
            if !v.is_finite() {
                bail!(
                    "training diverged at epoch {} step {step}: loss {name} is {v}",
                    epoch + 1
                );
            }
            let e = epoch_losses.entry(name).or_default();
            e.0 += *v as f64;
            e.1 += 1;
            match state.losses.iter_mut().find(|(n, _)| n == name) {
                Some((_, series)) => series.push(*v),
                None => state.losses.push((name.to_string(), vec![*v])),
            }
        }
        bar.set_message(format_losses(&losses));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((epoch_losses, steps_per_epoch * opts.batch))
}

fn progress_bar(visible: bool, steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta}  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
    bar
}

fn format_losses(losses: &[(&'static str, f32)]) -> String {
    losses
        .iter()
        .map(|(n, v)| format!("{n} {v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the per-epoch reconstruction grid shows: these samples, `score`'s map, whole images
/// (stitched from their tiles in patch mode).
struct Preview<'a> {
    samples: &'a [&'a Sample],
    score: &'a str,
    tiling: Option<&'a Tiling>,
}

fn write_epoch_plots(
    detector: &dyn Detector,
    preview: &Preview,
    state: &TrainState,
    dir: &Path,
    epoch: usize,
    device: &Device,
) -> Result<()> {
    let series: Vec<(&str, &[f32])> = state
        .losses
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    report::loss_curves(
        &dir.join("loss.png"),
        &format!("{} training losses", detector.kind()),
        "step",
        &series,
    )?;

    let (samples, score, tiling) = (preview.samples, preview.score, preview.tiling);
    let side = tiling.map_or(detector.config().size, |t| t.height());
    let rows: Vec<Vec<Tile>> = patch::preview_tiles(detector, tiling, samples, score, device)?
        .into_iter()
        .map(|p| {
            vec![
                p.input,
                p.reconstruction,
                Tile::heatmap(&p.map, side, side, 0.0, p.map_max),
            ]
        })
        .collect();
    let scale = (128 / side as u32).max(1);
    report::image_grid(
        &dir.join(format!("reconstruction-epoch-{epoch:03}.png")),
        &rows,
        &["input", "reconstruction", "anomaly map"],
        scale,
    )
}

/// One sample as shown in reports: input, reconstruction, and its anomaly map with the largest
/// map value of the whole set (so all rows share one colour scale).
pub struct PreviewTile {
    pub input: Tile,
    pub reconstruction: Tile,
    pub map: Vec<f32>,
    pub map_max: f32,
}

/// `score`'s map is shown (the detector's L1 map for its own scores).
pub fn preview_tiles(
    detector: &dyn Detector,
    samples: &[&Sample],
    score: &str,
    device: &Device,
) -> Result<Vec<PreviewTile>> {
    let cfg = detector.config();
    let (c, s) = (cfg.channels, cfg.size);
    let inf = maps::infer(detector, &batch_tensor(samples, c, s, device)?, &[score])?;
    let recon = inf
        .inference
        .reconstruction
        .flatten_from(1)?
        .to_vec2::<f32>()?;
    let maps = inf.map(score)?.flatten_from(1)?.to_vec2::<f32>()?;
    let map_max = maps
        .iter()
        .flatten()
        .copied()
        .fold(f32::MIN, f32::max)
        .max(1e-6);
    Ok(samples
        .iter()
        .zip(recon.iter().zip(maps))
        .map(|(smp, (r, map))| PreviewTile {
            input: Tile::from_chw(&smp.image, c, s, s, (-1.0, 1.0)),
            reconstruction: Tile::from_chw(r, c, s, s, (-1.0, 1.0)),
            map,
            map_max,
        })
        .collect())
}

/// UTC now as RFC 3339 with seconds, without a date-time dependency.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_maps_threshold_to_half() {
        let scores: Vec<f32> = (0..=100).map(|i| i as f32 / 100.0).collect();
        let n = calibrate(&scores, 0.99).unwrap();
        assert!((n.threshold - 0.99).abs() < 1e-5);
        assert_eq!(n.min, 0.0);
        assert!((n.normalise(n.threshold) - 0.5).abs() < 1e-5);
        assert!(calibrate(&[], 0.99).is_err());
    }

    #[test]
    fn rfc3339_has_the_right_shape() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 20);
        assert!(s.starts_with("20") && s.ends_with('Z'), "{s}");
    }
}
