//! Map scores: residual maps of (x, x̂) that see small defects, and image scores read from them.
//! Every detector has a reconstruction x̂, so every detector has these scores, computed here from
//! its [`Inference`] alone (no detector-specific code), and exported as the same graph by
//! [`crate::export::maps`].
//!
//! A map score is named `<map>-<reduction>`:
//! - maps (each `[N, 1, H, W]`, Gaussian-smoothed with the detector's σ like the L1 map):
//!   - `l1`: the channel mean of |x − x̂|: the seed detectors' own `Inference::map`, computed
//!     here for `seg`, whose own map is its segmentation;
//!   - `ssim`: 1 − SSIM(x, x̂) (Wang et al. 2004), the mean over channels of the per-channel SSIM
//!     map, with the 11×11 Gaussian window of σ 1.5 that the paper and DRAEM's SSIM loss use;
//!   - `msgms`: 1 − the multi-scale gradient magnitude similarity of Zavrtanik et al.'s RIAD
//!     (2020): GMS (Xue et al.'s GMSD) of the channel means, Prewitt gradients, at 4 scales
//!     (2×2 average pooling between them), each upsampled bilinearly back, averaged.
//! - reductions: `mean` (per-pixel mean), `max` (largest map pixel), `topk` (mean of the
//!   [`TOPK_PERCENT`] % largest pixels).
//!
//! `l1-mean` is left out: it is the detector's residual score up to the smoothing at the border.
//! Images are in [-1, 1]; SSIM and MSGMS work on them mapped to [0, 1], where their constants
//! are defined (SSIM's C₁ = (0.01·L)², C₂ = (0.03·L)² with L = 1; GMSD's c = 170 for 0–255
//! images, 170/255² ≈ 0.0026, RIAD's c = 0.0026). Borders use the edge-repeating reflection of
//! [`crate::smoothing`] (DRAEM and RIAD pad with zeros or crop, which makes every image's border
//! look like an edge), so each map has the input's size.
//!
//! Every step is an op the ONNX graph has one for one: separable convolutions on
//! `[N·K, 1, H, W]` (depthwise over channels), `AveragePool`, `Resize` (linear, half-pixel, as
//! Candle's `upsample_bilinear2d` without aligned corners) and `TopK`.

use std::fmt;

use candle_core::{Device, Tensor};

use crate::detector::{Detector, Inference};
use crate::smoothing::{reflect_indices, GaussianSmoother};
use crate::ModelError;

/// Every map score, in the order `--score all` reports them.
pub const SCORES: &[&str] = &[
    "l1-max",
    "l1-topk",
    "ssim-mean",
    "ssim-max",
    "ssim-topk",
    "msgms-mean",
    "msgms-max",
    "msgms-topk",
];

/// SSIM's Gaussian window: 11 taps, σ 1.5 (Wang et al. 2004; DRAEM's `loss.py`).
pub const SSIM_WINDOW: usize = 11;
pub const SSIM_SIGMA: f64 = 1.5;
/// SSIM's stabilising constants for images in [0, 1]: (0.01)², (0.03)².
pub const SSIM_C1: f64 = 1e-4;
pub const SSIM_C2: f64 = 9e-4;
/// GMS constant for images in [0, 1] (RIAD's code; GMSD's 170 on 0–255).
pub const GMS_C: f64 = 0.0026;
/// Scales of MSGMS: the image and three 2×2 average-poolings of it.
pub const MSGMS_SCALES: usize = 4;
/// `topk` averages the top 1 % of the map's pixels: 41 of 64², 11 of 32² (at least one).
pub const TOPK_PERCENT: usize = 1;

/// Which residual map a map score reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    L1,
    Ssim,
    Msgms,
}

/// How a map becomes one score per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    Mean,
    Max,
    TopK,
}

/// One of [`SCORES`], parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapScore {
    pub map: MapKind,
    pub reduction: Reduction,
}

impl MapKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::Ssim => "ssim",
            Self::Msgms => "msgms",
        }
    }
}

impl MapScore {
    /// `None` for anything that is not one of [`SCORES`] (e.g. a detector's own score).
    pub fn parse(name: &str) -> Option<Self> {
        if !SCORES.contains(&name) {
            return None;
        }
        let (map, reduction) = name.split_once('-')?;
        let map = match map {
            "l1" => MapKind::L1,
            "ssim" => MapKind::Ssim,
            "msgms" => MapKind::Msgms,
            _ => return None,
        };
        let reduction = match reduction {
            "mean" => Reduction::Mean,
            "max" => Reduction::Max,
            "topk" => Reduction::TopK,
            _ => return None,
        };
        Some(Self { map, reduction })
    }
}

impl fmt::Display for MapScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = match self.reduction {
            Reduction::Mean => "mean",
            Reduction::Max => "max",
            Reduction::TopK => "topk",
        };
        write!(f, "{}-{r}", self.map.name())
    }
}

/// The map score `name` is read from: its own for a map score, the detector's L1 map otherwise.
pub fn map_of(name: &str) -> MapKind {
    MapScore::parse(name).map_or(MapKind::L1, |m| m.map)
}

/// Pixels `topk` averages on an `h × w` map.
pub fn topk_count(h: usize, w: usize) -> usize {
    (h * w * TOPK_PERCENT).div_ceil(100).max(1)
}

/// Whether map score `name` can be computed on `h × w` images (MSGMS halves the image three
/// times and upsamples back by 8, so it needs sides divisible by 8). Other names pass.
pub fn check_geometry(name: &str, h: usize, w: usize) -> Result<(), ModelError> {
    match MapScore::parse(name) {
        Some(MapScore {
            map: MapKind::Msgms,
            ..
        }) if !h.is_multiple_of(8) || !w.is_multiple_of(8) || h == 0 || w == 0 => {
            Err(ModelError::InvalidSetting(format!(
                "score {name}: MSGMS works at {MSGMS_SCALES} scales, halving the image each time, \
                 so it needs image sides divisible by 8, not {h}×{w}"
            )))
        }
        _ => Ok(()),
    }
}

/// The 11-tap SSIM window, normalised to sum 1, symmetric bit for bit.
pub fn ssim_kernel() -> Vec<f32> {
    let r = SSIM_WINDOW / 2;
    let half: Vec<f64> = (0..=r)
        .map(|i| (-((i * i) as f64) / (2.0 * SSIM_SIGMA * SSIM_SIGMA)).exp())
        .collect();
    let sum = half[0] + 2.0 * half[1..].iter().sum::<f64>();
    (0..SSIM_WINDOW)
        .map(|j| (half[j.abs_diff(r)] / sum) as f32)
        .collect()
}

/// Prewitt's operator as two separable passes (vertical taps, horizontal taps): the horizontal
/// gradient averages three rows and differences the columns, the vertical one the transpose.
/// Separable, so the int8 export (which quantises square kernels only) leaves it in f32.
pub fn prewitt_kernels() -> [(Vec<f32>, Vec<f32>); 2] {
    let third = vec![1.0f32 / 3.0; 3];
    let diff = vec![-1.0f32, 0.0, 1.0];
    [(third.clone(), diff.clone()), (diff, third)]
}

/// Separable cross-correlation of `[M, 1, H, W]` with `v` (down the rows) then `h` (along the
/// columns), each side padded by edge-repeating reflection so the output keeps `H × W`.
pub fn separable(m: &Tensor, v: &[f32], h: &[f32]) -> candle_core::Result<Tensor> {
    let (_, _, rows, cols) = m.dims4()?;
    let dev = m.device();
    let (rv, rh) = (v.len() / 2, h.len() / 2);
    let kv = Tensor::from_vec(v.to_vec(), (1, 1, v.len(), 1), dev)?;
    let kh = Tensor::from_vec(h.to_vec(), (1, 1, 1, h.len()), dev)?;
    let ri = Tensor::new(reflect_indices(rows, rv), dev)?;
    let ci = Tensor::new(reflect_indices(cols, rh), dev)?;
    let m = m.index_select(&ri, 2)?.conv2d(&kv, 0, 1, 1, 1)?;
    m.index_select(&ci, 3)?.conv2d(&kh, 0, 1, 1, 1)
}

/// [-1, 1] → [0, 1], where SSIM's and GMS's constants are defined.
fn unit(x: &Tensor) -> candle_core::Result<Tensor> {
    x.affine(0.5, 0.5)
}

/// `[N, K, H, W]` → filtered per channel (depthwise) by [`separable`].
fn depthwise(x: &Tensor, v: &[f32], h: &[f32]) -> candle_core::Result<Tensor> {
    let (n, k, rows, cols) = x.dims4()?;
    separable(&x.reshape((n * k, 1, rows, cols))?, v, h)?.reshape((n, k, rows, cols))
}

/// 1 − SSIM(x, y) `[N, 1, H, W]` (mean over channels), unsmoothed; `x`, `y` `[N, C, H, W]` in
/// [-1, 1]. 0 where the images agree.
pub fn ssim_residual(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let c = x.dim(1)?;
    let (u, v) = (unit(x)?, unit(y)?);
    // The five local means in one depthwise pass: μ_u, μ_v, E[u²], E[v²], E[uv].
    let stack = Tensor::cat(&[&u, &v, &(&u * &u)?, &(&v * &v)?, &(&u * &v)?], 1)?;
    let k = ssim_kernel();
    let b = depthwise(&stack, &k, &k)?;
    let part = |i: usize| b.narrow(1, i * c, c);
    let (mu_u, mu_v) = (part(0)?, part(1)?);
    let uu = (&mu_u * &mu_u)?;
    let vv = (&mu_v * &mu_v)?;
    let uv = (&mu_u * &mu_v)?;
    let var_u = (part(2)? - &uu)?;
    let var_v = (part(3)? - &vv)?;
    let cov = (part(4)? - &uv)?;
    let num = (uv.affine(2.0, SSIM_C1)? * cov.affine(2.0, SSIM_C2)?)?;
    let den = ((uu + vv)?.affine(1.0, SSIM_C1)? * (var_u + var_v)?.affine(1.0, SSIM_C2)?)?;
    (num / den)?.mean_keepdim(1)?.affine(-1.0, 1.0)
}

/// Gradient magnitude similarity of the two channels of `pair` `[N, 2, h, w]` → `[N, 1, h, w]`.
fn gms(pair: &Tensor) -> candle_core::Result<Tensor> {
    let [(gxv, gxh), (gyv, gyh)] = prewitt_kernels();
    let gx = depthwise(pair, &gxv, &gxh)?;
    let gy = depthwise(pair, &gyv, &gyh)?;
    let mag = ((&gx * &gx)? + (&gy * &gy)?)?.sqrt()?;
    let (a, b) = (mag.narrow(1, 0, 1)?, mag.narrow(1, 1, 1)?);
    let num = (&a * &b)?.affine(2.0, GMS_C)?;
    let den = ((&a * &a)? + (&b * &b)?)?.affine(1.0, GMS_C)?;
    num / den
}

/// 1 − MSGMS(x, y) `[N, 1, H, W]`, unsmoothed; `x`, `y` `[N, C, H, W]` in [-1, 1] with `H`, `W`
/// divisible by 8 ([`check_geometry`]). 0 where the images agree.
pub fn msgms_residual(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h % 8 != 0 || w % 8 != 0 {
        candle_core::bail!("MSGMS needs image sides divisible by 8, not {h}×{w}")
    }
    let mut pair = Tensor::cat(&[unit(x)?.mean_keepdim(1)?, unit(y)?.mean_keepdim(1)?], 1)?;
    let mut total = gms(&pair)?;
    for _ in 1..MSGMS_SCALES {
        pair = pair.avg_pool2d(2)?;
        total = (total + gms(&pair)?.upsample_bilinear2d(h, w, false)?)?;
    }
    total.affine(-1.0 / MSGMS_SCALES as f64, 1.0)
}

/// One score per image from a smoothed map `[N, 1, H, W]`.
pub fn reduce(map: &Tensor, r: Reduction) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = map.dims4()?;
    let flat = map.flatten_from(1)?;
    match r {
        Reduction::Mean => flat.mean(1),
        Reduction::Max => flat.max(1),
        Reduction::TopK => {
            // Sorted on the CPU: Candle's GPU argsort is limited to short rows, and a map of a
            // few thousand values is cheap to move.
            let dev = map.device();
            let (sorted, _) = flat.to_device(&Device::Cpu)?.sort_last_dim(false)?;
            sorted
                .narrow(1, 0, topk_count(h, w))?
                .mean(1)?
                .to_device(dev)
        }
    }
}

/// A scoring pass with map scores: the detector's [`Inference`] and, for the map scores asked
/// for, their smoothed maps and values.
pub struct Scoring {
    pub inference: Inference,
    maps: Vec<(MapKind, Tensor)>,
    scores: Vec<(MapScore, Tensor)>,
}

impl Scoring {
    /// Score `name` `[N]`: a map score asked for in [`infer`], or one of the detector's own.
    pub fn score(&self, name: &str) -> Result<&Tensor, ModelError> {
        match MapScore::parse(name) {
            Some(ms) => self
                .scores
                .iter()
                .find(|(s, _)| *s == ms)
                .map(|(_, t)| t)
                .ok_or_else(|| ModelError::UnknownScore(format!("{name} (not computed)"))),
            None => self.inference.score(name),
        }
    }

    /// The smoothed map `[N, 1, H, W]` that score `name` is read from: its own map for a map
    /// score, the detector's L1 map for the detector's scores.
    pub fn map(&self, name: &str) -> Result<&Tensor, ModelError> {
        match MapScore::parse(name) {
            // Computed in [`infer`] for a detector whose own map is another (`seg`).
            Some(MapScore {
                map: MapKind::L1, ..
            }) => Ok(self
                .maps
                .iter()
                .find(|(k, _)| *k == MapKind::L1)
                .map_or(&self.inference.map, |(_, t)| t)),
            Some(ms) => self
                .maps
                .iter()
                .find(|(k, _)| *k == ms.map)
                .map(|(_, t)| t)
                .ok_or_else(|| ModelError::UnknownScore(format!("{name} (not computed)"))),
            None => self.inference.score(name).map(|_| &self.inference.map),
        }
    }
}

/// The smoothed map of `kind` for images `x` and their reconstructions `x_hat`
/// (`MapKind::L1` is computed here too, for tests; [`infer`] takes the detector's).
pub fn smoothed_map(
    kind: MapKind,
    x: &Tensor,
    x_hat: &Tensor,
    sigma: f32,
) -> candle_core::Result<Tensor> {
    let (_, _, h, _) = x.dims4()?;
    let raw = match kind {
        MapKind::L1 => (x - x_hat)?.abs()?.mean_keepdim(1)?,
        MapKind::Ssim => ssim_residual(x, x_hat)?,
        MapKind::Msgms => msgms_residual(x, x_hat)?,
    };
    GaussianSmoother::new(sigma, h, x.device())?.apply(&raw)
}

/// Scores `x` with `detector` and adds the map scores among `names` (the detector's own names
/// are ignored here; [`Scoring::score`] finds them in the inference). Each map is computed once.
pub fn infer(detector: &dyn Detector, x: &Tensor, names: &[&str]) -> Result<Scoring, ModelError> {
    let (_, _, h, w) = x.dims4()?;
    let inference = detector.infer(x)?;
    let wanted: Vec<MapScore> = names.iter().filter_map(|n| MapScore::parse(n)).collect();
    for n in names {
        check_geometry(n, h, w)?;
    }
    let sigma = detector.config().sigma;
    let mut maps = Vec::new();
    // A detector whose own map is not the L1 residual (`seg`) gets the L1 map computed here.
    let own_l1 = detector.kind().map_is_residual();
    for kind in [MapKind::L1, MapKind::Ssim, MapKind::Msgms] {
        if kind == MapKind::L1 && own_l1 {
            continue;
        }
        if wanted.iter().any(|s| s.map == kind) {
            maps.push((
                kind,
                smoothed_map(kind, x, &inference.reconstruction, sigma)?,
            ));
        }
    }
    let mut scores = Vec::with_capacity(wanted.len());
    for ms in wanted {
        let map = match ms.map {
            MapKind::L1 if own_l1 => Some(&inference.map),
            kind => maps.iter().find(|(k, _)| *k == kind).map(|(_, m)| m),
        };
        if let Some(map) = map {
            scores.push((ms, reduce(map, ms.reduction)?));
        }
    }
    Ok(Scoring {
        inference,
        maps,
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{max_diff, randn};

    fn t(v: Vec<f32>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn vals(x: &Tensor) -> Vec<f32> {
        x.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn names_parse_and_print_back_and_others_are_not_map_scores() {
        for name in SCORES {
            assert_eq!(MapScore::parse(name).unwrap().to_string(), *name);
        }
        for other in [
            "residual",
            "l1",
            "l1-mean",
            "ssim",
            "ssim-min",
            "msgms-top1",
        ] {
            assert!(MapScore::parse(other).is_none(), "{other}");
        }
    }

    #[test]
    fn topk_takes_one_percent_rounded_up() {
        assert_eq!(topk_count(64, 64), 41);
        assert_eq!(topk_count(32, 32), 11);
        assert_eq!(topk_count(4, 4), 1);
    }

    #[test]
    fn ssim_window_is_normalised_symmetric_and_gaussian() {
        let k = ssim_kernel();
        assert_eq!(k.len(), 11);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(k[0], k[10]);
        // exp(-25 / 4.5) relative to the centre tap.
        assert!((k[0] / k[5] - (-25.0f32 / 4.5).exp()).abs() < 1e-6);
    }

    #[test]
    fn identical_images_give_zero_maps() {
        let x = randn(&[2, 3, 16, 16], 1, 0.0).tanh().unwrap();
        for m in [ssim_residual(&x, &x), msgms_residual(&x, &x)] {
            let m = m.unwrap();
            assert_eq!(m.dims(), &[2, 1, 16, 16]);
            let worst = vals(&m).iter().fold(0f32, |a, v| a.max(v.abs()));
            assert!(worst < 1e-5, "max |map| {worst}");
        }
    }

    /// SSIM on constant images has a closed form: every window sees the constants, so σ = 0 and
    /// SSIM = (2ab + C₁)/(a² + b² + C₁) with a, b the [0, 1] values. σ² = E[u²] − μ² cancels in
    /// f32, leaving ~1e-7 against C₂ = 9e-4, and the rounding differs between gemm kernels (AVX2
    /// vs AVX-512): hence 1e-3, still far below the 0.6 luminance term this checks.
    #[test]
    fn ssim_of_constant_images_is_the_luminance_term() {
        let x = Tensor::full(-0.5f32, (1, 1, 12, 12), &Device::Cpu).unwrap(); // 0.25
        let y = Tensor::full(0.5f32, (1, 1, 12, 12), &Device::Cpu).unwrap(); // 0.75
        let (a, b, c1) = (0.25f64, 0.75f64, SSIM_C1);
        let want = 1.0 - (2.0 * a * b + c1) / (a * a + b * b + c1);
        for v in vals(&ssim_residual(&x, &y).unwrap()) {
            assert!((f64::from(v) - want).abs() < 1e-3, "{v} vs {want}");
        }
    }

    /// A 1-D step seen by an 11-tap window, against the same formula in f64 by hand: one row
    /// repeated (so the vertical pass is an identity) with the edge-repeating border.
    #[test]
    fn ssim_of_a_step_matches_a_direct_computation() {
        let (h, w) = (4usize, 12usize);
        let row_x: Vec<f64> = (0..w).map(|j| if j < 6 { 0.2 } else { 0.8 }).collect();
        let row_y: Vec<f64> = (0..w).map(|j| if j < 4 { 0.2 } else { 0.8 }).collect();
        let to_img = |r: &[f64]| {
            let v: Vec<f32> = (0..h)
                .flat_map(|_| r.iter().map(|&u| (2.0 * u - 1.0) as f32))
                .collect();
            t(v, &[1, 1, h, w])
        };
        let got = vals(&ssim_residual(&to_img(&row_x), &to_img(&row_y)).unwrap());
        let k: Vec<f64> = ssim_kernel().iter().map(|&v| f64::from(v)).collect();
        let r = 5isize;
        let blur = |f: &dyn Fn(usize) -> f64, j: usize| -> f64 {
            (-r..=r)
                .map(|d| {
                    let src = vigil_shared::mask::reflect_index(j as isize + d, w);
                    k[(d + r) as usize] * f(src)
                })
                .sum()
        };
        for j in 0..w {
            let mx = blur(&|i| row_x[i], j);
            let my = blur(&|i| row_y[i], j);
            let vx = blur(&|i| row_x[i] * row_x[i], j) - mx * mx;
            let vy = blur(&|i| row_y[i] * row_y[i], j) - my * my;
            let cxy = blur(&|i| row_x[i] * row_y[i], j) - mx * my;
            let s = (2.0 * mx * my + SSIM_C1) * (2.0 * cxy + SSIM_C2)
                / ((mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2));
            for i in 0..h {
                let v = f64::from(got[i * w + j]);
                assert!((v - (1.0 - s)).abs() < 1e-4, "col {j}: {v} vs {}", 1.0 - s);
            }
        }
        // The step edges disagree, the flat far ends agree.
        assert!(got[5] > 0.1 && got[w - 1] < 1e-4, "{got:?}");
    }

    /// GMS at one scale by hand: a vertical edge (columns 0..4 at a, 4.. at b) in both images,
    /// with contrast halved in y. Prewitt's horizontal gradient at the edge columns is
    /// (b − a)/1 per the taps [-1, 0, 1] on averaged rows; vertical gradient 0.
    #[test]
    fn gms_of_an_edge_matches_the_formula() {
        let (h, w) = (8usize, 8usize);
        let img = |a: f64, b: f64| {
            let v: Vec<f32> = (0..h * w)
                .map(|i| if i % w < 4 { a } else { b })
                .map(|u| (2.0 * u - 1.0) as f32)
                .collect();
            t(v, &[1, 1, h, w])
        };
        let (x, y) = (img(0.2, 0.8), img(0.35, 0.65));
        let pair = Tensor::cat(
            &[
                unit(&x).unwrap().mean_keepdim(1).unwrap(),
                unit(&y).unwrap().mean_keepdim(1).unwrap(),
            ],
            1,
        )
        .unwrap();
        let g = vals(&gms(&pair).unwrap());
        let (gx, gy) = (0.6f64, 0.3f64); // b − a at columns 3 and 4
        let at_edge = (2.0 * gx * gy + GMS_C) / (gx * gx + gy * gy + GMS_C);
        for r in 0..h {
            for c in 0..w {
                let want = if c == 3 || c == 4 { at_edge } else { 1.0 };
                let v = f64::from(g[r * w + c]);
                assert!((v - want).abs() < 1e-5, "({r},{c}): {v} vs {want}");
            }
        }
    }

    /// MSGMS of the same edge: scale 0 and 1 see it at full strength, and the mean of the four
    /// upsampled GMS maps is below 1 only near the edge.
    #[test]
    fn msgms_lights_the_disagreeing_edge_only() {
        // 32 wide: at the coarsest scale (4 columns) the edge still leaves the outer columns flat.
        let (h, w) = (16usize, 32usize);
        let img = |a: f32, b: f32| {
            let v: Vec<f32> = (0..h * w).map(|i| if i % w < 16 { a } else { b }).collect();
            t(v, &[1, 1, h, w])
        };
        let m = vals(&msgms_residual(&img(-0.6, 0.6), &img(-0.3, 0.3)).unwrap());
        assert!(m.iter().all(|v| *v > -1e-6 && *v < 1.0));
        assert!(m[15] > 0.1 && m[16] > 0.1, "edge {} {}", m[15], m[16]);
        assert!(
            m[0].abs() < 1e-5 && m[31].abs() < 1e-5,
            "far {} {}",
            m[0],
            m[31]
        );
        let odd = img(0.0, 0.0).narrow(3, 0, 12).unwrap();
        assert!(msgms_residual(&odd, &odd).is_err());
        assert!(check_geometry("msgms-max", 12, 16).is_err());
        assert!(check_geometry("ssim-max", 12, 16).is_ok());
    }

    /// Candle's bilinear upsampling is the half-pixel one ONNX `Resize` computes: by 2, an
    /// output pixel is 3/4 of its nearest input and 1/4 of the next, edges clamped.
    #[test]
    fn bilinear_upsampling_is_half_pixel() {
        let x = t(vec![0.0, 4.0], &[1, 1, 1, 2]);
        let up = vals(&x.upsample_bilinear2d(1, 4, false).unwrap());
        for (u, want) in up.iter().zip([0.0, 1.0, 3.0, 4.0]) {
            assert!((u - want).abs() < 1e-6, "{up:?}");
        }
    }

    #[test]
    fn reductions() {
        let v: Vec<f32> = (0..400).map(|i| i as f32).collect();
        let m = t(v, &[1, 1, 20, 20]);
        assert_eq!(vals(&reduce(&m, Reduction::Max).unwrap()), vec![399.0]);
        assert_eq!(vals(&reduce(&m, Reduction::Mean).unwrap()), vec![199.5]);
        // top 1 % of 400 = 4 pixels: 399, 398, 397, 396.
        assert_eq!(vals(&reduce(&m, Reduction::TopK).unwrap()), vec![397.5]);
    }

    /// Every seed detector's own map is the smoothed L1 map of its reconstruction, and the
    /// `l1-*` scores read the L1 map for every detector (`seg` included, whose own map is its
    /// segmentation), so they mean the same for all, as the export's `residual_map` does.
    #[test]
    fn every_detectors_map_is_the_l1_map_of_its_reconstruction() {
        for kind in crate::DetectorKind::ALL {
            let cfg = crate::ModelConfig {
                size: 16,
                channels: 2,
                latent: 4,
                width: 4,
                sigma: 1.0,
                seed: 3,
                decoder: Default::default(),
            };
            let d = crate::build(kind, cfg, &Device::Cpu).unwrap();
            let x = randn(&[2, 2, 16, 16], 5, 0.0).tanh().unwrap();
            let s = infer(d.as_ref(), &x, SCORES).unwrap();
            let rec = &s.inference.reconstruction;
            let l1 = smoothed_map(MapKind::L1, &x, rec, 1.0).unwrap();
            assert!(max_diff(&l1, s.map("l1-max").unwrap()) < 1e-6, "{kind}");
            if kind.map_is_residual() {
                assert!(max_diff(&l1, &s.inference.map) < 1e-6, "{kind}");
            }
            for name in SCORES {
                let v = vals(s.score(name).unwrap());
                assert_eq!(v.len(), 2, "{kind}/{name}");
                assert!(v.iter().all(|x| x.is_finite()), "{kind}/{name}: {v:?}");
                assert_eq!(s.map(name).unwrap().dims(), &[2, 1, 16, 16]);
            }
            let own = kind.scores()[0];
            assert!(s.score(own).is_ok() && s.map(own).is_ok(), "{kind}");
            assert!(s.score("no-such").is_err() && s.map("no-such").is_err());
        }
    }
}
