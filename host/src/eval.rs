//! `vigil eval`: image- and pixel-level metrics of a bundle on a test split, and the report.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use serde::Serialize;
use vigil_shared::metrics;

use crate::bundle::LoadedModel;
use crate::data::{Dataset, Sample};
use crate::patch::{self, preview_tiles, score_samples, score_samples_many};
use crate::report::{self, Tile};
use crate::train::{calibrate, Scored};

/// The JSON object `vigil eval` prints (field names are fixed by docs/design.md).
#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    pub image_auroc: f64,
    pub image_auprc: f64,
    pub image_f1: f64,
    pub threshold: f32,
    pub pixel_auroc: Option<f64>,
    pub pixel_aupro: Option<f64>,
    pub n_normal: usize,
    pub n_anomalous: usize,
    pub detector: String,
    pub score: String,
}

/// FPR limit of the AUPRO integral (MVTec AD's and anomalib's default).
const AUPRO_FPR_LIMIT: f64 = 0.3;

/// `score` picks another of the detector's scores than the one the bundle was calibrated for
/// (`None`: the bundle's own); its threshold is then calibrated afresh on the data's held-out
/// normal images, with the bundle's quantile, so `image_f1` stays meaningful.
pub fn evaluate(
    model: &LoadedModel,
    data: &Dataset,
    score: Option<&str>,
    report_dir: Option<&Path>,
    device: &Device,
) -> Result<EvalResult> {
    let m = &model.manifest;
    check_geometry(model, data)?;
    let detector = model.detector.as_ref();
    let tiling = patch::tiling(m)?;
    let tiling = tiling.as_ref();
    let (score, threshold) = match score {
        None => (m.score.name.as_str(), m.normalisation.threshold),
        Some(s) if s == m.score.name => (s, m.normalisation.threshold),
        Some(s) => {
            let kind = detector.kind();
            if !kind.all_scores().contains(&s) {
                anyhow::bail!(
                    "--score {s}: {} has no such score (it has: {}), nor is it a map score ({})",
                    kind.name(),
                    kind.scores().join(", "),
                    vigil_models::maps::SCORES.join(", ")
                );
            }
            let val = score_samples(detector, tiling, &data.val, s, false, device)?;
            let norm = calibrate(&val.scores, m.normalisation.quantile)
                .with_context(|| format!("calibrating the threshold of --score {s}"))?;
            (s, norm.threshold)
        }
    };
    let test = &data.test;
    let has_masks = test.iter().any(|s| s.mask.is_some());
    let scored = score_samples(detector, tiling, test, score, has_masks, device)?;
    let result = metrics_of(model, data, &scored, score, threshold)?;
    if let Some(dir) = report_dir {
        let labels: Vec<bool> = test.iter().map(|s| s.anomalous).collect();
        write_report(
            model,
            test,
            &scored.scores,
            &labels,
            &result,
            dir,
            score,
            device,
        )?;
    }
    Ok(result)
}

/// Every score of the bundle's detector (`vigil eval --score all`), from one scoring pass over
/// the held-out normals and one over the test split: the bundle's own score first, with its
/// threshold, then the others in the detector's order and then the map scores
/// (`DetectorKind::all_scores`), each calibrated afresh as [`evaluate`] does, each with its own
/// map for the pixel metrics. What `just bench-accuracy` uses to compare a detector's scores on
/// the same models.
pub fn evaluate_all_scores(
    model: &LoadedModel,
    data: &Dataset,
    device: &Device,
) -> Result<Vec<EvalResult>> {
    let m = &model.manifest;
    check_geometry(model, data)?;
    let detector = model.detector.as_ref();
    let tiling = patch::tiling(m)?;
    let tiling = tiling.as_ref();
    let own = m.score.name.as_str();
    let names: Vec<&str> = std::iter::once(own)
        .chain(
            detector
                .kind()
                .all_scores()
                .into_iter()
                .filter(|s| *s != own),
        )
        .collect();
    let val = score_samples_many(detector, tiling, &data.val, &names[1..], false, device)?.scores;
    let test = &data.test;
    let has_masks = test.iter().any(|s| s.mask.is_some());
    let many = score_samples_many(detector, tiling, test, &names, has_masks, device)?;
    let mut results = Vec::with_capacity(names.len());
    for (i, (name, scores)) in names.iter().zip(&many.scores).enumerate() {
        let threshold = match i {
            0 => m.normalisation.threshold,
            _ => {
                calibrate(&val[i - 1], m.normalisation.quantile)
                    .with_context(|| format!("calibrating the threshold of score {name}"))?
                    .threshold
            }
        };
        let scored = Scored {
            scores: scores.clone(),
            maps: many.map(i).map(<[f32]>::to_vec),
        };
        results.push(metrics_of(model, data, &scored, name, threshold)?);
    }
    Ok(results)
}

/// [`evaluate`] with the scores and maps of an exported graph (`file`, relative to the bundle
/// directory `dir` and listed in its manifest) run by tract.
pub fn evaluate_onnx(
    model: &LoadedModel,
    dir: &Path,
    file: &Path,
    data: &Dataset,
) -> Result<EvalResult> {
    let m = &model.manifest;
    check_geometry(model, data)?;
    let name = file.to_string_lossy();
    m.verify_file(dir, &name)
        .with_context(|| format!("--onnx {name}: not a verified file of the bundle"))?;
    let test = &data.test;
    let images: Vec<f32> = test.iter().flat_map(|s| s.image.iter().copied()).collect();
    let (scores, maps) = patch::onnx_scores(dir, file, m, &images)?;
    let has_masks = test.iter().any(|s| s.mask.is_some());
    let scored = Scored {
        scores,
        maps: has_masks.then_some(maps),
    };
    metrics_of(
        model,
        data,
        &scored,
        &m.score.name,
        m.normalisation.threshold,
    )
}

fn check_geometry(model: &LoadedModel, data: &Dataset) -> Result<()> {
    let m = &model.manifest;
    let (size, channels) = (m.input.height, m.input.channels);
    if data.size != size || data.channels != channels {
        anyhow::bail!(
            "the data was loaded at {}×{}×{} but the model expects {channels}×{size}×{size}",
            data.channels,
            data.size,
            data.size
        );
    }
    Ok(())
}

fn metrics_of(
    model: &LoadedModel,
    data: &Dataset,
    scored: &Scored,
    score: &str,
    threshold: f32,
) -> Result<EvalResult> {
    let m = &model.manifest;
    let size = m.input.height;
    let test = &data.test;
    let labels: Vec<bool> = test.iter().map(|s| s.anomalous).collect();
    let scores = &scored.scores;

    let image_auroc = metrics::auroc(scores, &labels).context("image AUROC")?;
    let image_auprc = metrics::average_precision(scores, &labels).context("image AUPRC")?;
    let image_f1 = metrics::f1_at(scores, &labels, threshold).context("image F1")?;

    let (mut pixel_auroc, mut pixel_aupro) = (None, None);
    if let Some(maps) = &scored.maps {
        let plane = size * size;
        let masks: Vec<Vec<bool>> = test
            .iter()
            .map(|s| s.mask.clone().unwrap_or_else(|| vec![false; plane]))
            .collect();
        let map_refs: Vec<&[f32]> = maps.chunks(plane).collect();
        let mask_refs: Vec<&[bool]> = masks.iter().map(|v| v.as_slice()).collect();
        pixel_auroc = Some(metrics::pixel_auroc(&map_refs, &mask_refs).context("pixel AUROC")?);
        pixel_aupro = Some(
            metrics::aupro(&map_refs, &mask_refs, size, size, AUPRO_FPR_LIMIT)
                .context("pixel AUPRO")?,
        );
    }

    let result = EvalResult {
        image_auroc,
        image_auprc,
        image_f1,
        threshold,
        pixel_auroc,
        pixel_aupro,
        n_normal: labels.iter().filter(|l| !**l).count(),
        n_anomalous: labels.iter().filter(|l| **l).count(),
        detector: m.detector.clone(),
        score: score.to_string(),
    };
    Ok(result)
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    model: &LoadedModel,
    test: &[Sample],
    scores: &[f32],
    labels: &[bool],
    result: &EvalResult,
    dir: &Path,
    score: &str,
    device: &Device,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    report::roc_curve(
        &dir.join("roc.png"),
        &metrics::roc_curve(scores, labels)?,
        result.image_auroc,
    )?;
    let positive_rate = result.n_anomalous as f64 / labels.len() as f64;
    report::pr_curve(
        &dir.join("pr.png"),
        &metrics::pr_curve(scores, labels)?,
        result.image_auprc,
        positive_rate,
    )?;
    let pick = |anom: bool| -> Vec<f32> {
        scores
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l == anom)
            .map(|(s, _)| *s)
            .collect()
    };
    report::score_histogram(
        &dir.join("histogram.png"),
        &pick(false),
        &pick(true),
        Some(result.threshold),
    )?;
    overlay_grid(model, test, scores, score, &dir.join("overlay.png"), device)?;
    std::fs::write(
        dir.join("metrics.json"),
        serde_json::to_string_pretty(result)?,
    )
    .with_context(|| format!("writing {}", dir.join("metrics.json").display()))?;
    Ok(())
}

/// Input | reconstruction | heatmap overlay | ground truth for the most anomalous-looking
/// defects and a few normals, so a person can see whether the map (of `score`) lights the defect.
fn overlay_grid(
    model: &LoadedModel,
    test: &[Sample],
    scores: &[f32],
    score: &str,
    path: &Path,
    device: &Device,
) -> Result<()> {
    let m = &model.manifest;
    let size = m.input.height;
    let mut anomalous: Vec<usize> = (0..test.len()).filter(|&i| test[i].anomalous).collect();
    anomalous.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // A spread of defects (strongest first, then every k-th) rather than only the easiest.
    let stride = (anomalous.len() / 6).max(1);
    let mut chosen: Vec<usize> = anomalous.iter().step_by(stride).take(6).copied().collect();
    chosen.extend((0..test.len()).filter(|&i| !test[i].anomalous).take(2));
    let refs: Vec<&Sample> = chosen.iter().map(|&i| &test[i]).collect();
    let with_masks = refs.iter().any(|s| s.mask.is_some());
    let empty = vec![false; size * size];
    let tiling = patch::tiling(m)?;
    let (detector, tiling) = (model.detector.as_ref(), tiling.as_ref());
    let rows: Vec<Vec<Tile>> = preview_tiles(detector, tiling, &refs, score, device)?
        .into_iter()
        .zip(&refs)
        .map(|(p, s)| {
            let overlay = Tile::overlay(&p.input, &p.map, 0.0, p.map_max, 0.5);
            let mut row = vec![p.input, p.reconstruction, overlay];
            if with_masks {
                row.push(Tile::mask(s.mask.as_deref().unwrap_or(&empty), size, size));
            }
            row
        })
        .collect();
    let mut titles = vec!["input", "reconstruction", "anomaly map"];
    if with_masks {
        titles.push("ground truth");
    }
    report::image_grid(path, &rows, &titles, (160 / size as u32).max(1))
}
