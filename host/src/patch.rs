//! Patch mode on the host: training on random `N`² crops of full-resolution images, and scoring a
//! whole image as overlapping tiles stitched into one map ([`vigil_shared::tiles`]), with the
//! Candle model and with an exported graph.
//!
//! Whole-image mode (no `patch` in the manifest) goes through the functions of [`crate::train`]
//! unchanged; every function here that takes an `Option<&Tiling>` falls back to them on `None`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use vigil_models::export::run::OnnxScorer;
use vigil_models::{maps, Detector};
use vigil_shared::manifest::{Manifest, PatchSpec};
use vigil_shared::rng::Rng;
use vigil_shared::tiles::{max_over_tiles, Tiling};

use crate::data::{DataSpec, Dataset, Sample};
use crate::report::Tile;
use crate::train::{self, PreviewTile, Scored, ScoredMany};

/// Largest `--image-size` accepted in patch mode (a fixed size; `native` may be larger).
pub const MAX_IMAGE_SIZE: usize = 512;
/// Tiles per Candle forward pass when scoring (bounds the activations' memory)...
const TILES_PER_PASS: usize = 256;
/// ...and pixels per pass: the im2col buffers grow with tile area, and past a few hundred MB
/// each pass spends more time faulting pages in than multiplying (`seg` at 64² tiles scored
/// 120 images in 158 s with 256 tiles a pass, most of it system time).
pub const PIXELS_PER_PASS: usize = 1 << 18;

/// How `vigil train` crops in patch mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchTraining {
    pub spec: PatchSpec,
    /// Random crops drawn from each training image per epoch.
    pub crops_per_image: usize,
}

/// Default crops per image and epoch: as many as non-overlapping tiles fit, so an epoch sees
/// about as many pixels as the training images hold.
pub fn default_crops(height: usize, width: usize, patch: usize) -> usize {
    ((height / patch) * (width / patch)).max(1)
}

/// `--patch`, `--stride`, `--crops` as the training options, checked against the image size.
pub fn training(
    size: Option<usize>,
    stride: Option<usize>,
    crops: Option<usize>,
    image_size: usize,
) -> Result<Option<PatchTraining>> {
    let Some(n) = size else { return Ok(None) };
    let mut spec = PatchSpec::with_default_stride(n);
    if let Some(s) = stride {
        spec.stride = s;
    }
    spec.check(image_size, image_size).map_err(|(field, msg)| {
        let flag = if field == "patch.stride" {
            "--stride"
        } else {
            "--patch"
        };
        anyhow!("{flag}: {msg} (image size {image_size})")
    })?;
    let crops_per_image = crops.unwrap_or_else(|| default_crops(image_size, image_size, n));
    if crops_per_image == 0 {
        bail!("--crops 0: each image needs at least one crop per epoch");
    }
    Ok(Some(PatchTraining {
        spec,
        crops_per_image,
    }))
}

/// `--image-size` as given: a side in pixels, or `native` (the folder's own size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeArg {
    Pixels(usize),
    Native,
}

impl std::str::FromStr for SizeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "native" {
            return Ok(Self::Native);
        }
        s.parse()
            .map(Self::Pixels)
            .map_err(|_| format!("'{s}' is not a number or `native`"))
    }
}

fn is_model_side(n: usize) -> bool {
    n.is_power_of_two() && (32..=256).contains(&n)
}

/// The side the loaders produce, from `--image-size` and `--patch`. Whole-image mode keeps its
/// rules (a power of two 32..=256, default 64); patch mode takes any size from the patch up to
/// [`MAX_IMAGE_SIZE`], and `native` or no `--image-size` means the folder's own size.
pub fn image_size(arg: Option<SizeArg>, patch: Option<usize>, data: &DataSpec) -> Result<usize> {
    if let Some(n) = patch {
        if !is_model_side(n) {
            bail!("--patch {n}: the models take a power of two from 32 to 256");
        }
    }
    let size = match arg {
        Some(SizeArg::Pixels(s)) => s,
        None if patch.is_none() => 64,
        Some(SizeArg::Native) | None => match data {
            DataSpec::Folder(root) => native_size(root)?,
            other => bail!(
                "--image-size {}: {other} has no native size; give --image-size N",
                if arg.is_some() {
                    "native"
                } else {
                    "omitted with --patch"
                }
            ),
        },
    };
    match patch {
        None if !is_model_side(size) => bail!(
            "--image-size {size}: the whole-image model takes a power of two from 32 to 256 \
             (for larger images train on crops with --patch N)"
        ),
        Some(n) if size < n => bail!("--image-size {size} is smaller than --patch {n}"),
        Some(_) if matches!(arg, Some(SizeArg::Pixels(_))) && size > MAX_IMAGE_SIZE => {
            bail!("--image-size {size}: patch mode takes at most {MAX_IMAGE_SIZE} (or `native`)")
        }
        _ => Ok(size),
    }
}

/// The common side of every image of an MVTec-layout folder (headers only, nothing decoded);
/// an error names the first file whose size differs, or says that the images are not square.
pub fn native_size(root: &Path) -> Result<usize> {
    let mut dirs = vec![root.join("train").join("good")];
    let test = root.join("test");
    if let Ok(rd) = std::fs::read_dir(&test) {
        let mut types: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        types.sort();
        dirs.extend(types.into_iter().filter(|p| p.is_dir()));
    }
    let mut first: Option<(std::path::PathBuf, (u32, u32))> = None;
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let is_image = f
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["png", "jpg", "jpeg", "bmp"].contains(&&*e.to_lowercase()));
            if !f.is_file() || !is_image {
                continue;
            }
            let dims = image::image_dimensions(&f)
                .with_context(|| format!("--image-size native: reading {}", f.display()))?;
            match &first {
                None => first = Some((f, dims)),
                Some((p, d)) if *d != dims => bail!(
                    "--image-size native: {} is {}×{} but {} is {}×{}; the images of a folder \
                     must share one size (give --image-size N to resize them)",
                    f.display(),
                    dims.0,
                    dims.1,
                    p.display(),
                    d.0,
                    d.1
                ),
                Some(_) => {}
            }
        }
    }
    let Some((path, (w, h))) = first else {
        bail!(
            "--image-size native: no images under {}/train/good or {}/test",
            root.display(),
            root.display()
        );
    };
    if w != h {
        bail!(
            "--image-size native: the images are {w}×{h} ({}); patch mode needs square images \
             for now, so give --image-size N to resize them",
            path.display()
        );
    }
    Ok(w as usize)
}

/// The tiling a bundle scores with: `None` for whole-image bundles.
pub fn tiling(m: &Manifest) -> Result<Option<Tiling>> {
    m.patch
        .map(|p| Tiling::new(m.input.channels, m.input.height, m.input.width, p))
        .transpose()
        .context("the manifest's patch geometry")
}

/// One epoch's crops: which training image and where, drawn from a generator seeded by the
/// seed and the epoch (so `--resume` draws the same crops as an uninterrupted run).
pub struct CropPlan {
    /// (image index, y, x) of every crop, in training order.
    picks: Vec<(usize, usize, usize)>,
    channels: usize,
    side: usize,
    size: usize,
}

impl CropPlan {
    pub fn new(data: &Dataset, p: &PatchTraining, seed: u64, epoch: usize) -> Self {
        let n = data.train.len();
        let mut order: Vec<usize> = (0..n * p.crops_per_image).map(|i| i % n).collect();
        let mut rng =
            Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64) ^ 0xC409_5EED_u64);
        rng.shuffle(&mut order);
        let room = data.size - p.spec.size + 1;
        let picks = order
            .into_iter()
            .map(|i| (i, rng.below(room), rng.below(room)))
            .collect();
        Self {
            picks,
            channels: data.channels,
            side: data.size,
            size: p.spec.size,
        }
    }

    /// Whole batches in the epoch.
    pub fn steps(&self, batch: usize) -> usize {
        self.picks.len() / batch
    }

    /// Batch `step` as `[batch, C, N, N]`.
    pub fn batch(
        &self,
        data: &Dataset,
        step: usize,
        batch: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let (c, s, n) = (self.channels, self.side, self.size);
        let mut x = Vec::with_capacity(batch * c * n * n);
        for &(i, y, x0) in &self.picks[step * batch..(step + 1) * batch] {
            let img = &data.train[i].image;
            for ch in 0..c {
                for r in 0..n {
                    let start = ch * s * s + (y + r) * s + x0;
                    x.extend_from_slice(&img[start..start + n]);
                }
            }
        }
        Ok(Tensor::from_vec(x, (batch, c, n, n), device)?)
    }
}

/// Images per Candle forward pass so that one pass holds about [`TILES_PER_PASS`] tiles.
fn images_per_pass(t: &Tiling) -> usize {
    let tiles = TILES_PER_PASS.min(PIXELS_PER_PASS / t.tile_len().max(1));
    (tiles / t.count()).max(1)
}

/// [`train::score_samples_many`] in patch mode: each image scored as its tiles in one batch,
/// each score reduced over the tiles ([`image_score`]) and each distinct map stitched at input
/// size.
pub fn score_samples_many(
    detector: &dyn Detector,
    tiling: Option<&Tiling>,
    samples: &[Sample],
    names: &[&str],
    keep_maps: bool,
    device: &Device,
) -> Result<ScoredMany> {
    let Some(t) = tiling else {
        return train::score_samples_many(detector, samples, names, keep_maps, device);
    };
    let cfg = detector.config();
    let (c, n, count) = (cfg.channels, cfg.size, t.count());
    let mut scores = vec![Vec::with_capacity(samples.len()); names.len()];
    let (kinds, map_of) = train::distinct_maps(names);
    let mut kept: Vec<Vec<f32>> = match keep_maps {
        true => vec![vec![0f32; samples.len() * t.plane()]; kinds.len()],
        false => Vec::new(),
    };
    let per_pass = images_per_pass(t);
    let mut tiles = vec![0f32; per_pass * count * t.tile_len()];
    let mut stitched = vec![0f32; t.plane()];
    let plane = count * n * n;
    for (k, chunk) in samples.chunks(per_pass).enumerate() {
        let x = cut_all(t, chunk, &mut tiles, c, n, device)?;
        let inf = maps::infer(detector, &x, names)?;
        let tile_scores = names
            .iter()
            .map(|name| Ok(inf.score(name)?.to_vec1::<f32>()?))
            .collect::<Result<Vec<_>>>()?;
        for i in 0..chunk.len() {
            for (ts, out) in tile_scores.iter().zip(scores.iter_mut()) {
                out.push(image_score(&ts[i * count..(i + 1) * count]));
            }
        }
        for (m, (_, name)) in kept.iter_mut().zip(&kinds) {
            let tile_maps = inf.map(name)?.flatten_all()?.to_vec1::<f32>()?;
            for i in 0..chunk.len() {
                t.stitch(&tile_maps[i * plane..(i + 1) * plane], 1, &mut stitched)?;
                let j = k * per_pass + i;
                m[j * t.plane()..(j + 1) * t.plane()].copy_from_slice(&stitched);
            }
        }
    }
    Ok(ScoredMany {
        scores,
        maps: kept,
        map_of,
    })
}

/// The image score of one image in patch mode from its per-tile scores: the largest, as
/// vigild computes it (so host evaluation and the appliance agree to the last digit). Map
/// scores (`l1-topk`, `ssim-max`, …) are reduced per tile too, then the largest tile taken.
fn image_score(tile_scores: &[f32]) -> f32 {
    max_over_tiles(tile_scores)
}

/// Cuts `chunk`'s images into `buf` and wraps the filled part as `[k·T, C, N, N]`.
fn cut_all(
    t: &Tiling,
    chunk: &[Sample],
    buf: &mut [f32],
    c: usize,
    n: usize,
    device: &Device,
) -> Result<Tensor> {
    let per_image = t.count() * t.tile_len();
    for (s, dst) in chunk.iter().zip(buf.chunks_exact_mut(per_image)) {
        t.cut(&s.image, dst)
            .with_context(|| format!("cutting {} into tiles", s.name))?;
    }
    Ok(Tensor::from_slice(
        &buf[..chunk.len() * per_image],
        (chunk.len() * t.count(), c, n, n),
        device,
    )?)
}

/// One score (and its maps, when kept) of `samples`, whole-image or tiled per `tiling`.
pub fn score_samples(
    detector: &dyn Detector,
    tiling: Option<&Tiling>,
    samples: &[Sample],
    score: &str,
    keep_maps: bool,
    device: &Device,
) -> Result<Scored> {
    let ScoredMany {
        mut scores,
        mut maps,
        ..
    } = score_samples_many(detector, tiling, samples, &[score], keep_maps, device)?;
    Ok(Scored {
        scores: scores.pop().unwrap_or_default(),
        maps: maps.pop(),
    })
}

/// [`train::preview_tiles`] with tiling: input, stitched reconstruction and `score`'s stitched
/// map at input size.
pub fn preview_tiles(
    detector: &dyn Detector,
    tiling: Option<&Tiling>,
    samples: &[&Sample],
    score: &str,
    device: &Device,
) -> Result<Vec<PreviewTile>> {
    let Some(t) = tiling else {
        return train::preview_tiles(detector, samples, score, device);
    };
    let cfg = detector.config();
    let (c, n, count) = (cfg.channels, cfg.size, t.count());
    let (h, w) = (t.height(), t.width());
    let mut tiles = vec![0f32; count * t.tile_len()];
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let x = cut_all(t, std::slice::from_ref(*s), &mut tiles, c, n, device)?;
        let inf = maps::infer(detector, &x, &[score])?;
        let mut recon = vec![0f32; c * h * w];
        let r = inf.inference.reconstruction.flatten_all()?.to_vec1()?;
        t.stitch(&r, c, &mut recon)?;
        let mut map = vec![0f32; h * w];
        t.stitch(&inf.map(score)?.flatten_all()?.to_vec1()?, 1, &mut map)?;
        out.push(PreviewTile {
            input: Tile::from_chw(&s.image, c, h, w, (-1.0, 1.0)),
            reconstruction: Tile::from_chw(&recon, c, h, w, (-1.0, 1.0)),
            map,
            map_max: 0.0,
        });
    }
    // One colour scale for the whole set, as in whole-image mode.
    let map_max = out
        .iter()
        .flat_map(|p| p.map.iter().copied())
        .fold(f32::MIN, f32::max)
        .max(1e-6);
    for p in &mut out {
        p.map_max = map_max;
    }
    Ok(out)
}

/// An exported graph of a bundle run by tract, with the bundle's geometry: whole images, or in
/// patch mode each image cut into its `T` tiles, run as one batch, and the maps stitched, as
/// vigild does.
pub struct GraphScorer {
    scorer: OnnxScorer,
    tiling: Option<Tiling>,
    tiles: Vec<f32>,
}

impl GraphScorer {
    /// `file` (relative to `dir`) for batches of `batch` whole images (patch mode: one image's
    /// tiles per run).
    pub fn load(dir: &Path, file: &Path, m: &Manifest, batch: usize) -> Result<GraphScorer> {
        let (c, h, w) = (m.input.channels, m.input.height, m.input.width);
        let tiling = tiling(m)?;
        let scorer = match &tiling {
            None => OnnxScorer::load(&dir.join(file), [c, h, w], batch.max(1))?,
            Some(t) => {
                let n = t.spec().size;
                OnnxScorer::load(&dir.join(file), [c, n, n], t.count())?
            }
        };
        let tiles = tiling
            .as_ref()
            .map_or(Vec::new(), |t| vec![0f32; t.count() * t.tile_len()]);
        Ok(GraphScorer {
            scorer,
            tiling,
            tiles,
        })
    }

    /// Scores and maps (`[n, H, W]` flattened) of `images` (`n` CHW images at input size).
    pub fn score(&mut self, images: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let Some(t) = &self.tiling else {
            return Ok(self.scorer.run(images)?);
        };
        let frames = images.len() / t.image_len();
        let (mut scores, mut maps) = (Vec::with_capacity(frames), vec![0f32; frames * t.plane()]);
        for (i, image) in images.chunks_exact(t.image_len()).enumerate() {
            t.cut(image, &mut self.tiles)?;
            let (ts, tm) = self.scorer.run(&self.tiles)?;
            let stitched = &mut maps[i * t.plane()..(i + 1) * t.plane()];
            t.stitch(&tm, 1, stitched)?;
            scores.push(image_score(&ts));
        }
        Ok((scores, maps))
    }
}

/// Scores and stitched maps (`[n, H, W]` flattened) of `images` (`n` CHW images at input size)
/// from an exported graph of the bundle ([`GraphScorer`], batches of 32).
pub fn onnx_scores(
    dir: &Path,
    file: &Path,
    m: &Manifest,
    images: &[f32],
) -> Result<(Vec<f32>, Vec<f32>)> {
    GraphScorer::load(dir, file, m, 32)?.score(images)
}

/// Normal images as model inputs for int8 calibration: whole images, or in patch mode the tiles
/// of each image (what the graph sees), all flattened.
pub fn calibration_inputs(m: &Manifest, images: &[Sample]) -> Result<Vec<f32>> {
    let Some(t) = tiling(m)? else {
        return Ok(images
            .iter()
            .flat_map(|s| s.image.iter().copied())
            .collect());
    };
    let per_image = t.count() * t.tile_len();
    let mut out = vec![0f32; images.len() * per_image];
    for (s, dst) in images.iter().zip(out.chunks_exact_mut(per_image)) {
        t.cut(&s.image, dst)?;
    }
    Ok(out)
}

/// `[C, H, W]` of what the exported graph takes: the tile in patch mode, else the input.
pub fn graph_chw(m: &Manifest) -> [usize; 3] {
    match m.patch {
        Some(p) => [m.input.channels, p.size, p.size],
        None => [m.input.channels, m.input.height, m.input.width],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(size: usize, n: usize) -> Dataset {
        Dataset {
            channels: 1,
            size,
            train: (0..n)
                .map(|i| Sample {
                    // Pixel value encodes (image, y, x) so a crop can be traced back.
                    image: (0..size * size).map(|p| (i * 10_000 + p) as f32).collect(),
                    anomalous: false,
                    mask: None,
                    name: format!("{i}"),
                    class: "good".into(),
                })
                .collect(),
            val: vec![],
            test: vec![],
            spec: "test".into(),
        }
    }

    #[test]
    fn crops_are_reproducible_in_range_and_hold_their_image_pixels() {
        let data = dataset(40, 5);
        let p = PatchTraining {
            spec: PatchSpec::with_default_stride(32),
            crops_per_image: 3,
        };
        let a = CropPlan::new(&data, &p, 7, 2);
        assert_eq!(a.picks, CropPlan::new(&data, &p, 7, 2).picks);
        assert_ne!(a.picks, CropPlan::new(&data, &p, 7, 3).picks);
        assert_eq!(a.picks.len(), 15);
        // Every image appears crops_per_image times.
        for i in 0..5 {
            assert_eq!(a.picks.iter().filter(|(j, _, _)| *j == i).count(), 3);
        }
        assert!(a.picks.iter().all(|&(_, y, x)| y <= 8 && x <= 8));
        assert_eq!(a.steps(4), 3);
        let x = a.batch(&data, 1, 4, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), [4, 1, 32, 32]);
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (k, &(i, y, x0)) in a.picks[4..8].iter().enumerate() {
            let crop = &v[k * 1024..(k + 1) * 1024];
            assert_eq!(crop[0], (i * 10_000 + y * 40 + x0) as f32);
            assert_eq!(
                crop[31 * 32 + 31],
                (i * 10_000 + (y + 31) * 40 + x0 + 31) as f32
            );
        }
    }

    #[test]
    fn default_crops_counts_non_overlapping_tiles() {
        assert_eq!(default_crops(128, 128, 32), 16);
        assert_eq!(default_crops(100, 100, 32), 9);
        assert_eq!(default_crops(32, 32, 32), 1);
    }

    #[test]
    fn image_size_rules() {
        let synth: DataSpec = "synthetic:metal".parse().unwrap();
        let px = |n| Some(SizeArg::Pixels(n));
        assert_eq!(image_size(None, None, &synth).unwrap(), 64);
        assert_eq!(image_size(px(128), None, &synth).unwrap(), 128);
        assert!(image_size(px(100), None, &synth).is_err());
        assert!(image_size(px(512), None, &synth).is_err());
        assert_eq!(image_size(px(512), Some(32), &synth).unwrap(), 512);
        assert_eq!(image_size(px(100), Some(32), &synth).unwrap(), 100);
        assert!(image_size(px(513), Some(32), &synth).is_err());
        assert!(image_size(px(16), Some(32), &synth).is_err());
        assert!(image_size(px(128), Some(48), &synth).is_err());
        let e = image_size(None, Some(32), &synth).unwrap_err().to_string();
        assert!(e.contains("no native size"), "{e}");
        assert!(image_size(Some(SizeArg::Native), None, &synth).is_err());
        assert_eq!("native".parse::<SizeArg>(), Ok(SizeArg::Native));
        assert!("big".parse::<SizeArg>().is_err());
    }

    #[test]
    fn native_size_reads_the_folder_and_refuses_mixed_or_non_square_sizes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let write = |rel: &str, w: u32, h: u32| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            image::GrayImage::new(w, h).save(&p).unwrap();
        };
        write("train/good/a.png", 96, 96);
        write("test/good/b.png", 96, 96);
        write("test/scratch/c.png", 96, 96);
        assert_eq!(native_size(root).unwrap(), 96);
        let folder = DataSpec::Folder(root.to_path_buf());
        assert_eq!(image_size(None, Some(32), &folder).unwrap(), 96);
        assert_eq!(
            image_size(Some(SizeArg::Native), Some(64), &folder).unwrap(),
            96
        );
        write("test/scratch/d.png", 80, 96);
        let e = native_size(root).unwrap_err().to_string();
        assert!(e.contains("d.png") && e.contains("share one size"), "{e}");
        std::fs::remove_file(root.join("test/scratch/d.png")).unwrap();
        for f in ["train/good/a.png", "test/good/b.png", "test/scratch/c.png"] {
            std::fs::remove_file(root.join(f)).unwrap();
        }
        write("train/good/a.png", 96, 64);
        let e = native_size(root).unwrap_err().to_string();
        assert!(e.contains("square"), "{e}");
    }
}
