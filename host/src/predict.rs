//! `vigil predict`: score image files and folders with a bundle, the way vigild would (the
//! bundle's exported graph in tract, the shared preprocessing, batch 1), and write what a person
//! checks: `predictions.csv` / `predictions.jsonl` (file, score, normalised score, verdict) and,
//! per image, an overlay PNG of three panels, input | heatmap | overlay.
//!
//! No dataset layout and no labels: any pictures of any size.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use serde::Serialize;
use vigil_shared::manifest::Manifest;
use vigil_shared::mask::{heat_blend, heat_colour, sample_bilinear};

use crate::data::folder::{decode, list_images, Decoded, EXTENSIONS};
use crate::patch::GraphScorer;

/// Overlay panels are scaled to this height.
const PANEL_HEIGHT: u32 = 256;

pub struct PredictOptions {
    pub model: PathBuf,
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    /// `model.onnx` (f32) or `model.int8.onnx`, as vigild's `--precision`.
    pub graph: String,
    pub overlays: bool,
}

/// One scored image.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub file: String,
    pub score: f32,
    pub normalized_score: f32,
    pub anomalous: bool,
    /// The overlay PNG, relative to the output folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overlay: Option<String>,
}

/// The image files of `inputs`: files as given, folders' images (not recursive) by name.
pub fn list_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let found = list_images(input)?;
            if found.is_empty() {
                bail!(
                    "{}: no image files ({}) in the folder",
                    input.display(),
                    EXTENSIONS.join(", ")
                );
            }
            files.extend(found);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            bail!("{}: no such file or folder", input.display());
        }
    }
    Ok(files)
}

/// Scores every image; `progress` is called after each.
pub fn predict(opts: &PredictOptions, mut progress: impl FnMut()) -> Result<Vec<Prediction>> {
    let m = Manifest::load_verified(&opts.model)?;
    if m.patch.is_none() && m.input.height != m.input.width {
        bail!("{}: the model input is not square", opts.model.display());
    }
    m.verify_file(&opts.model, &opts.graph).with_context(|| {
        format!(
            "{}: no verified {} in the bundle: run `vigil export --model {}`{} first (vigild \
             scores that graph too)",
            opts.model.display(),
            opts.graph,
            opts.model.display(),
            if opts.graph.contains("int8") {
                " --quantize int8"
            } else {
                ""
            }
        )
    })?;
    let files = list_inputs(&opts.inputs)?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("{}: cannot create the folder", opts.out.display()))?;
    // Batch 1, as vigild scores frames: tract's kernels are then the same ones.
    let mut scorer = GraphScorer::load(&opts.model, Path::new(&opts.graph), &m, 1)?;
    let (c, size) = (m.input.channels, m.input.height);
    let map_hi = m.map_scale();
    let mut out = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let img = decode(file)?;
        let input = img.to_model_input(file, size, c)?;
        let (scores, map) = scorer
            .score(&input)
            .with_context(|| format!("{}: scoring failed", file.display()))?;
        let score = scores[0];
        let overlay = if opts.overlays {
            let name = format!("{:05}_{}.png", i, stem(file));
            let panels = panels(&img, &map, m.input.width, m.input.height, map_hi);
            panels
                .save(opts.out.join(&name))
                .with_context(|| format!("{}: cannot write", opts.out.join(&name).display()))?;
            Some(name)
        } else {
            None
        };
        out.push(Prediction {
            file: file.display().to_string(),
            score,
            normalized_score: m.normalisation.normalise(score),
            anomalous: m.normalisation.is_anomalous(score),
            overlay,
        });
        progress();
    }
    write_tables(&opts.out, &out)?;
    Ok(out)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| {
            s.to_string_lossy()
                .replace(|c: char| !c.is_alphanumeric() && c != '-', "_")
        })
        .unwrap_or_default()
}

/// `predictions.csv` and `predictions.jsonl` in `out`.
fn write_tables(out: &Path, preds: &[Prediction]) -> Result<()> {
    let csv_path = out.join("predictions.csv");
    let mut csv = String::from("file,score,normalized_score,verdict,overlay\n");
    for p in preds {
        let quoted = format!("\"{}\"", p.file.replace('"', "\"\""));
        csv.push_str(&format!(
            "{quoted},{},{},{},{}\n",
            p.score,
            p.normalized_score,
            if p.anomalous { "anomalous" } else { "good" },
            p.overlay.as_deref().unwrap_or("")
        ));
    }
    std::fs::write(&csv_path, csv)
        .with_context(|| format!("{}: cannot write", csv_path.display()))?;
    let jsonl_path = out.join("predictions.jsonl");
    let mut f = std::fs::File::create(&jsonl_path)
        .with_context(|| format!("{}: cannot write", jsonl_path.display()))?;
    for p in preds {
        writeln!(f, "{}", serde_json::to_string(p)?)
            .with_context(|| format!("{}: cannot write", jsonl_path.display()))?;
    }
    Ok(())
}

/// input | heatmap | overlay, each `PANEL_HEIGHT` high at the picture's aspect ratio. The map
/// covers the whole picture (the model saw it resized to its square input).
fn panels(img: &Decoded, map: &[f32], mw: usize, mh: usize, map_hi: f32) -> RgbImage {
    let ph = PANEL_HEIGHT;
    let pw = ((img.width as f32 / img.height as f32) * ph as f32)
        .round()
        .max(1.0) as u32;
    let mut out = RgbImage::new(pw * 3 + 8, ph);
    let c = img.channels;
    for y in 0..ph {
        for x in 0..pw {
            let (u, v) = ((x as f32 + 0.5) / pw as f32, (y as f32 + 0.5) / ph as f32);
            let sx = ((u * img.width as f32) as usize).min(img.width as usize - 1);
            let sy = ((v * img.height as f32) as usize).min(img.height as usize - 1);
            let p = &img.pixels[(sy * img.width as usize + sx) * c..][..c];
            let rgb = if c >= 3 {
                [p[0] as f32, p[1] as f32, p[2] as f32]
            } else {
                [p[0] as f32; 3]
            };
            let t = (sample_bilinear(map, mw, mh, u, v) / map_hi).clamp(0.0, 1.0);
            let heat = heat_colour(t);
            let blend = heat_blend(rgb, t);
            out.put_pixel(x, y, Rgb(rgb.map(|v| v as u8)));
            out.put_pixel(pw + 4 + x, y, Rgb(heat.map(|v| v as u8)));
            out.put_pixel(2 * (pw + 4) + x, y, Rgb(blend.map(|v| v as u8)));
        }
    }
    out
}
