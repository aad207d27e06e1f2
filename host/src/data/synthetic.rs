//! Procedural datasets: in memory (`synthetic:KIND`) or written to disk in the MVTec AD layout
//! (`vigil synth`).
//!
//! Every image gets its own generator seeded from (seed, split, index), so images are generated
//! in parallel and an image does not depend on how many others were asked for.

use std::fmt;
use std::path::{Path, PathBuf};

use image::{ExtendedColorType, ImageFormat};
use rayon::prelude::*;
use vigil_shared::rng::Rng;
use vigil_shared::synth::{DefectKind, Generator, SurfaceKind, SynthImage};

use super::pixels::to_model_input;
use super::{DataError, LoadOptions, Sample};

/// Sizes of the in-memory `synthetic:KIND` dataset.
pub const TRAIN_GOOD: usize = 1000;
pub const VAL_GOOD: usize = 100;
pub const TEST_GOOD: usize = 200;
pub const TEST_DEFECTIVE: usize = 200;

#[derive(Clone, Copy)]
enum Split {
    Train = 1,
    Val = 2,
    TestGood = 3,
    TestDefective = 4,
    /// Parts of a production line replay ([`write_line`]): never seen in training.
    Line = 5,
}

fn image_seed(seed: u64, split: Split, index: usize) -> u64 {
    let mut r = Rng::new(
        seed ^ ((split as u64) << 56) ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    r.next_u64()
}

/// One image; `defect` None = good. `size` and `channels` are already validated.
fn generate(
    kind: SurfaceKind,
    size: usize,
    channels: usize,
    seed: u64,
    split: Split,
    index: usize,
    defect: Option<DefectKind>,
) -> SynthImage {
    let mut g = Generator::new(kind, size, size, channels, image_seed(seed, split, index));
    match defect {
        None => g.good(),
        Some(d) => g.defective(d),
    }
}

fn to_sample(img: SynthImage, name: String, with_mask: bool) -> Result<Sample, DataError> {
    let image = to_model_input(
        &img.pixels,
        img.width,
        img.height,
        img.channels,
        img.width,
        img.channels,
    )
    .map_err(|source| DataError::Preprocess {
        what: format!("synthetic image {name}"),
        source,
    })?;
    Ok(Sample {
        image,
        anomalous: img.defect.is_some(),
        mask: with_mask.then(|| img.mask.iter().map(|&m| m != 0).collect()),
        name,
        class: img.defect.map_or("good", DefectKind::name).to_string(),
    })
}

/// The defect kinds of `n` defective images: round-robin, so every kind appears once `n >= 4`.
fn defect_plan(n: usize) -> Vec<DefectKind> {
    (0..n)
        .map(|i| DefectKind::ALL[i % DefectKind::ALL.len()])
        .collect()
}

pub(crate) type Splits = (Vec<Sample>, Vec<Sample>, Vec<Sample>);

pub(crate) fn load(kind: SurfaceKind, opts: &LoadOptions) -> Result<Splits, DataError> {
    let (size, ch, seed) = (opts.image_size, opts.channels, opts.seed);
    Generator::try_new(kind, size, size, ch, seed)
        .map_err(|e| DataError::Options(e.to_string()))?;
    let good = |split: Split, n: usize, prefix: &str| -> Result<Vec<Sample>, DataError> {
        (0..n)
            .into_par_iter()
            .map(|i| {
                let img = generate(kind, size, ch, seed, split, i, None);
                to_sample(img, format!("synthetic-{prefix}-{i:04}"), false)
            })
            .collect()
    };
    let train = good(Split::Train, TRAIN_GOOD, "train")?;
    let val = good(Split::Val, VAL_GOOD, "val")?;

    // Test: good and defective parts interleaved in a seeded order.
    let mut plan: Vec<Option<DefectKind>> = vec![None; TEST_GOOD];
    plan.extend(defect_plan(TEST_DEFECTIVE).into_iter().map(Some));
    Rng::new(seed ^ 0x7E57_0CDE).shuffle(&mut plan);
    let test = plan
        .par_iter()
        .enumerate()
        .map(|(i, &defect)| {
            let split = if defect.is_some() {
                Split::TestDefective
            } else {
                Split::TestGood
            };
            let img = generate(kind, size, ch, seed, split, i, defect);
            to_sample(img, format!("synthetic-test-{i:04}"), true)
        })
        .collect::<Result<_, _>>()?;
    Ok((train, val, test))
}

/// What [`write_synthetic_folder`] wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SynthSummary {
    pub root: PathBuf,
    pub kind: String,
    pub size: usize,
    pub channels: usize,
    pub train_good: usize,
    pub test_good: usize,
    /// (defect type, count) in [`DefectKind::ALL`] order.
    pub test_defective: Vec<(String, usize)>,
    pub masks: usize,
}

impl SynthSummary {
    pub fn total_defective(&self) -> usize {
        self.test_defective.iter().map(|(_, n)| n).sum()
    }
}

impl fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per: Vec<String> = self
            .test_defective
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        write!(
            f,
            "wrote {} {}x{}x{} {} parts to {}: train/good {}, test/good {}, test defective {} ({}), masks {}",
            self.train_good + self.test_good + self.total_defective(),
            self.size,
            self.size,
            self.channels,
            self.kind,
            self.root.display(),
            self.train_good,
            self.test_good,
            self.total_defective(),
            per.join(", "),
            self.masks
        )
    }
}

fn mkdir(p: &Path) -> Result<(), DataError> {
    std::fs::create_dir_all(p).map_err(|e| DataError::Write {
        path: p.to_path_buf(),
        reason: e.to_string(),
    })
}

fn save_png(path: &Path, pixels: &[u8], size: usize, channels: usize) -> Result<(), DataError> {
    let colour = if channels == 3 {
        ExtendedColorType::Rgb8
    } else {
        ExtendedColorType::L8
    };
    image::save_buffer_with_format(
        path,
        pixels,
        size as u32,
        size as u32,
        colour,
        ImageFormat::Png,
    )
    .map_err(|e| DataError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes a procedural dataset in the MVTec AD layout under `out`:
/// `train/good/NNN.png` (`count` good parts), `test/good/NNN.png`, `test/<defect>/NNN.png` and
/// `ground_truth/<defect>/NNN_mask.png`. The test set has `count / 2` parts of which a fraction
/// `defect_rate` is defective, but always at least one of each defect kind and one good part.
///
/// Refuses to write into a directory that already holds a `train`, `test` or `ground_truth`
/// directory, so stale files of an earlier run can never mix in.
pub fn write_synthetic_folder(
    out: &Path,
    kind: SurfaceKind,
    count: usize,
    size: usize,
    channels: usize,
    defect_rate: f32,
    seed: u64,
) -> Result<SynthSummary, DataError> {
    check_folder_request(out, kind, count, size, channels, defect_rate, seed)?;
    let n_test = count / 2;
    let n_def = ((n_test as f32 * defect_rate).round() as usize).max(DefectKind::ALL.len());
    let n_good = n_test.saturating_sub(n_def).max(1);
    let w = FolderWriter {
        out,
        kind,
        size,
        channels,
        seed,
        width: 3.max((count.max(n_good).max(n_def)).to_string().len()),
    };
    w.make_dirs()?;
    w.write_good(Split::Train, count, &out.join("train").join("good"))?;
    w.write_good(Split::TestGood, n_good, &out.join("test").join("good"))?;
    let per_kind = w.write_defective(&defect_plan(n_def))?;
    Ok(SynthSummary {
        root: out.to_path_buf(),
        kind: kind.name().to_string(),
        size,
        channels,
        train_good: count,
        test_good: n_good,
        test_defective: DefectKind::ALL
            .iter()
            .zip(per_kind)
            .map(|(d, n)| (d.name().to_string(), n))
            .collect(),
        masks: n_def,
    })
}

/// The checks [`write_synthetic_folder`] makes before writing anything.
fn check_folder_request(
    out: &Path,
    kind: SurfaceKind,
    count: usize,
    size: usize,
    channels: usize,
    defect_rate: f32,
    seed: u64,
) -> Result<(), DataError> {
    if count == 0 {
        return Err(DataError::Options(
            "synthetic count must be at least 1".into(),
        ));
    }
    if !(0.0..=1.0).contains(&defect_rate) {
        return Err(DataError::Options(format!(
            "defect rate {defect_rate} must be between 0 and 1"
        )));
    }
    Generator::try_new(kind, size, size, channels, seed)
        .map_err(|e| DataError::Options(e.to_string()))?;
    for sub in ["train", "test", "ground_truth"] {
        let p = out.join(sub);
        if p.exists() {
            return Err(DataError::Layout {
                path: p,
                reason: "already exists; remove it or choose another output directory".into(),
            });
        }
    }
    Ok(())
}

/// What every image [`write_synthetic_folder`] writes has in common.
struct FolderWriter<'a> {
    out: &'a Path,
    kind: SurfaceKind,
    size: usize,
    channels: usize,
    seed: u64,
    /// Digits of the zero-padded file numbers.
    width: usize,
}

impl FolderWriter<'_> {
    fn make_dirs(&self) -> Result<(), DataError> {
        mkdir(&self.out.join("train").join("good"))?;
        mkdir(&self.out.join("test").join("good"))?;
        for d in DefectKind::ALL {
            mkdir(&self.out.join("test").join(d.name()))?;
            mkdir(&self.out.join("ground_truth").join(d.name()))?;
        }
        Ok(())
    }

    fn name(&self, i: usize, suffix: &str) -> String {
        format!("{i:0w$}{suffix}.png", w = self.width)
    }

    /// `n` good parts of `split` as `dir/NNN.png`.
    fn write_good(&self, split: Split, n: usize, dir: &Path) -> Result<(), DataError> {
        let (kind, size, ch, seed) = (self.kind, self.size, self.channels, self.seed);
        (0..n).into_par_iter().try_for_each(|i| {
            let img = generate(kind, size, ch, seed, split, i, None);
            save_png(&dir.join(self.name(i, "")), &img.pixels, size, ch)
        })
    }

    /// The defective parts of `plan` with their masks, numbered per defect type as MVTec does;
    /// returns the count per type in [`DefectKind::ALL`] order.
    fn write_defective(
        &self,
        plan: &[DefectKind],
    ) -> Result<[usize; DefectKind::ALL.len()], DataError> {
        let mut per_kind = [0usize; DefectKind::ALL.len()];
        let jobs: Vec<(usize, DefectKind, usize)> = plan
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let k = DefectKind::ALL.iter().position(|&x| x == d).unwrap_or(0);
                let j = per_kind[k];
                per_kind[k] += 1;
                (i, d, j)
            })
            .collect();
        let (kind, size, ch, seed) = (self.kind, self.size, self.channels, self.seed);
        jobs.par_iter().try_for_each(|&(i, d, j)| {
            let img = generate(kind, size, ch, seed, Split::TestDefective, i, Some(d));
            let test = self.out.join("test").join(d.name());
            save_png(&test.join(self.name(j, "")), &img.pixels, size, ch)?;
            let gt = self.out.join("ground_truth").join(d.name());
            save_png(&gt.join(self.name(j, "_mask")), &img.mask, size, 1)
        })?;
        Ok(per_kind)
    }
}

/// One part of a line written by [`write_line`]: its file name and, for a defective part, the
/// defect drawn on it (the ground truth a detector's verdicts are checked against).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinePart {
    pub name: String,
    pub defect: Option<DefectKind>,
}

/// Name of the ground-truth file [`write_line`] puts next to the frames (not an image, so
/// vigild's folder replay skips it).
pub const LINE_LABELS: &str = "labels.csv";

/// Writes a production line of `count` parts as `part_NNNNN.png` in `dir` (replayed by vigild's
/// `folder:` source in that order) and `labels.csv` (`name,defect`, `good` for good parts).
///
/// Each part is defective with probability `defect_rate`, the defect kinds round-robin, from
/// generators seeded apart from every training split, so the line is parts the model never saw.
/// Refuses a `dir` that already holds files, so frames of an earlier line never mix in.
pub fn write_line(
    dir: &Path,
    kind: SurfaceKind,
    count: usize,
    size: usize,
    channels: usize,
    defect_rate: f32,
    seed: u64,
) -> Result<Vec<LinePart>, DataError> {
    if count == 0 {
        return Err(DataError::Options("a line needs at least one part".into()));
    }
    if !(0.0..=1.0).contains(&defect_rate) {
        return Err(DataError::Options(format!(
            "defect rate {defect_rate} must be between 0 and 1"
        )));
    }
    Generator::try_new(kind, size, size, channels, seed)
        .map_err(|e| DataError::Options(e.to_string()))?;
    let non_empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if non_empty {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            reason: "already holds files; remove it or choose another directory".into(),
        });
    }
    mkdir(dir)?;

    // Which parts are defective is drawn up front from one seeded stream, so the plan does not
    // depend on the parallel order the images are rendered in.
    let mut rng = Rng::new(seed ^ 0x11AE_5EED);
    let mut next_kind = 0;
    let parts: Vec<LinePart> = (0..count)
        .map(|i| {
            let defect = (rng.uniform() < defect_rate).then(|| {
                next_kind += 1;
                DefectKind::ALL[(next_kind - 1) % DefectKind::ALL.len()]
            });
            LinePart {
                name: format!("part_{i:05}.png"),
                defect,
            }
        })
        .collect();
    parts.par_iter().enumerate().try_for_each(|(i, p)| {
        let img = generate(kind, size, channels, seed, Split::Line, i, p.defect);
        save_png(&dir.join(&p.name), &img.pixels, size, channels)
    })?;
    let mut csv = String::from("name,defect\n");
    for p in &parts {
        csv += &format!("{},{}\n", p.name, p.defect.map_or("good", DefectKind::name));
    }
    let labels = dir.join(LINE_LABELS);
    std::fs::write(&labels, csv).map_err(|e| DataError::Write {
        path: labels,
        reason: e.to_string(),
    })?;
    Ok(parts)
}
