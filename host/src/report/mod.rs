//! Report figures: training curves, ROC / PR curves, score histograms and image grids.
//!
//! Every figure is a PNG. Text is drawn with DejaVu Sans embedded in the binary
//! (`assets/DejaVuSans.ttf`, see `assets/DejaVuSans-LICENSE.txt`), so no system fonts are
//! needed. Plots are 800×600 with a white background. [`charts`] holds the plotted figures,
//! [`grids`] the image tiles and grids; this module the canvas, font and tick formatting they
//! share.

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

mod charts;
mod grids;

pub use charts::{loss_curves, pr_curve, roc_curve, score_histogram};
pub use grids::{image_grid, image_grid_labeled, Tile};

/// DejaVu Sans (Bitstream Vera derived, permissive licence), embedded.
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");
static FONT_INIT: Once = Once::new();

const FONT: &str = "sans-serif";
const PLOT_SIZE: (u32, u32) = (800, 600);
const CAPTION_PX: u32 = 22;
const AXIS_DESC_PX: u32 = 18;
const TICK_PX: u32 = 15;
const LEGEND_PX: u32 = 16;
const GRID_GAP: u32 = 2;

/// Tableau-10: readable, colour-blind-friendlier than the primaries.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const NORMAL_COLOR: RGBColor = PALETTE[0];
const ANOMALY_COLOR: RGBColor = PALETTE[3];
const GRAY: RGBColor = RGBColor(110, 110, 110);

/// Registers the embedded font under the family `sans-serif` (once per process).
fn ensure_font() {
    FONT_INIT.call_once(|| {
        // The bytes are a valid TTF shipped with the crate; failure would be a build mistake.
        if register_font(FONT, FontStyle::Normal, FONT_BYTES).is_err() {
            panic!("embedded DejaVuSans.ttf could not be parsed");
        }
    });
}

fn prepare_path(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating directory {}", dir.display()))?;
        }
    }
    Ok(())
}

fn new_canvas(path: &Path) -> Result<DrawingArea<BitMapBackend<'_>, Shift>> {
    ensure_font();
    prepare_path(path)?;
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

fn finish(root: &DrawingArea<BitMapBackend<'_>, Shift>, path: &Path) -> Result<()> {
    root.present()
        .with_context(|| format!("writing plot {}", path.display()))?;
    Ok(())
}

/// Formats a tick value compactly: plain decimals in a sane range, scientific otherwise.
fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        // Up to 4 significant digits, trailing zeros trimmed.
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

fn fmt_log_tick(v: f64) -> String {
    if v <= 0.0 {
        return String::new();
    }
    let a = v.abs();
    if (1e-2..1e4).contains(&a) {
        fmt_tick(v)
    } else {
        format!("{v:.0e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes into a temp dir, or into `$VIGIL_KEEP_PLOTS` when set (to look at the figures).
    fn out_dir() -> (Option<tempfile::TempDir>, std::path::PathBuf) {
        match std::env::var_os("VIGIL_KEEP_PLOTS") {
            Some(d) => {
                std::fs::create_dir_all(&d).unwrap();
                (None, d.into())
            }
            None => {
                let t = tempfile::tempdir().unwrap();
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        }
    }

    fn decode(path: &Path) -> image::RgbImage {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(
            &bytes[..8],
            b"\x89PNG\r\n\x1a\n",
            "not a PNG: {}",
            path.display()
        );
        image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8()
    }

    /// Deterministic pseudo-random numbers in [0, 1).
    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32) / (1u64 << 24) as f32
            })
            .collect()
    }

    fn gaussian(seed: u64, n: usize, mean: f32, sd: f32) -> Vec<f32> {
        let u = lcg(seed, 2 * n);
        (0..n)
            .map(|i| {
                let (a, b) = (u[2 * i].max(1e-7), u[2 * i + 1]);
                mean + sd * (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
            })
            .collect()
    }

    #[test]
    fn loss_curves_writes_png() {
        let (_t, dir) = out_dir();
        let noise = lcg(1, 1000);
        let g: Vec<f32> = (0..1000)
            .map(|i| 5.0 * (-(i as f32) / 200.0).exp() + 0.5 + noise[i])
            .collect();
        let d: Vec<f32> = (0..1000)
            .map(|i| 0.7 + 0.1 * (i as f32 / 50.0).sin())
            .collect();
        let p = dir.join("loss_linear.png");
        loss_curves(
            &p,
            "GANomaly training",
            "step",
            &[("generator", &g), ("discriminator", &d)],
        )
        .unwrap();
        assert_eq!(decode(&p).dimensions(), PLOT_SIZE);

        // Spans several decades → log axis; short series with markers; a NaN is skipped.
        let e: Vec<f32> = (0..30).map(|i| 10f32.powf(1.0 - i as f32 / 8.0)).collect();
        let mut v = e.iter().map(|x| x * 1.5).collect::<Vec<_>>();
        v[3] = f32::NAN;
        let p = dir.join("loss_log.png");
        loss_curves(
            &p,
            "Reconstruction loss",
            "epoch",
            &[("train", &e), ("validation", &v)],
        )
        .unwrap();
        assert_eq!(decode(&p).dimensions(), PLOT_SIZE);

        // Degenerate inputs still produce a figure.
        let p = dir.join("loss_empty.png");
        loss_curves(&p, "empty", "step", &[("none", &[]), ("one", &[1.0])]).unwrap();
        assert_eq!(decode(&p).dimensions(), PLOT_SIZE);
    }

    #[test]
    fn roc_and_pr_write_png() {
        let (_t, dir) = out_dir();
        let roc: Vec<(f64, f64)> = (0..=100)
            .map(|i| {
                let f = i as f64 / 100.0;
                (f, f.powf(0.25))
            })
            .collect();
        let p = dir.join("roc.png");
        roc_curve(&p, &roc, 0.8).unwrap();
        assert_eq!(decode(&p).dimensions(), PLOT_SIZE);

        let pr: Vec<(f64, f64)> = (0..=100)
            .map(|i| {
                let r = i as f64 / 100.0;
                (r, 1.0 - 0.6 * r.powi(3))
            })
            .collect();
        let p = dir.join("pr.png");
        pr_curve(&p, &pr, 0.85, 0.9).unwrap();
        assert_eq!(decode(&p).dimensions(), PLOT_SIZE);

        let p = dir.join("pr_empty.png");
        pr_curve(&p, &[], f64::NAN, f64::NAN).unwrap();
        assert_eq!(decode(&p).dimensions(), PLOT_SIZE);
    }

    #[test]
    fn score_histogram_writes_png() {
        let (_t, dir) = out_dir();
        let normal = gaussian(2, 1000, 0.3, 0.1);
        let anomalous = gaussian(3, 9000, 0.6, 0.15);
        let p = dir.join("hist.png");
        score_histogram(&p, &normal, &anomalous, Some(0.45)).unwrap();
        assert_eq!(decode(&p).dimensions(), PLOT_SIZE);

        let p = dir.join("hist_degenerate.png");
        score_histogram(&p, &[1.0; 5], &[], None).unwrap();
        assert_eq!(decode(&p).dimensions(), PLOT_SIZE);
    }

    #[test]
    fn heatmap_colors_run_blue_to_red() {
        let t = Tile::heatmap(&[0.0, 1.0, 0.5, -3.0, 9.0, f32::NAN], 1, 6, 0.0, 1.0);
        assert_eq!((t.height, t.width, t.rgb.len()), (1, 6, 18));
        let px = |i: usize| [t.rgb[3 * i], t.rgb[3 * i + 1], t.rgb[3 * i + 2]];
        let [r, g, b] = px(0);
        assert!(
            b > 100 && r < 30 && g < 30,
            "lo should be blue, got {:?}",
            px(0)
        );
        let [r, g, b] = px(1);
        assert!(
            r > 100 && g < 30 && b < 30,
            "hi should be red, got {:?}",
            px(1)
        );
        let [_, g, _] = px(2);
        assert!(g > 200, "middle should be green-ish, got {:?}", px(2));
        assert_eq!(px(3), px(0), "below lo clips to lo");
        assert_eq!(px(4), px(1), "above hi clips to hi");
    }

    #[test]
    fn from_chw_maps_range_to_bytes() {
        let t = Tile::from_chw(&[-1.0, 1.0, 0.0, 5.0], 1, 2, 2, (-1.0, 1.0));
        assert_eq!(t.channels, 1);
        assert_eq!(
            t.rgb,
            vec![0, 0, 0, 255, 255, 255, 128, 128, 128, 255, 255, 255]
        );

        // 3-channel planar: pixel 0 = (R=-1, G=1, B=0), pixel 1 = (R=1, G=-1, B=1).
        let t = Tile::from_chw(&[-1.0, 1.0, 1.0, -1.0, 0.0, 1.0], 3, 1, 2, (-1.0, 1.0));
        assert_eq!(t.rgb, vec![0, 255, 128, 255, 0, 255]);
    }

    #[test]
    fn overlay_and_mask() {
        let base = Tile::from_chw(&[0.0; 4], 1, 2, 2, (0.0, 1.0));
        let o = Tile::overlay(&base, &[1.0; 4], 0.0, 1.0, 1.0);
        assert_eq!(o.rgb, Tile::heatmap(&[1.0; 4], 2, 2, 0.0, 1.0).rgb);
        let o = Tile::overlay(&base, &[1.0; 4], 0.0, 1.0, 0.0);
        assert_eq!(o.rgb, base.rgb);
        let m = Tile::mask(&[true, false], 1, 2);
        assert_eq!(m.rgb, vec![255, 255, 255, 0, 0, 0]);
    }

    #[test]
    fn image_grid_writes_png() {
        let (_t, dir) = out_dir();
        let (h, w) = (32, 32);
        let mut rows = Vec::new();
        for k in 0..3 {
            let img: Vec<f32> = (0..h * w)
                .map(|i| {
                    let (y, x) = ((i / w) as f32, (i % w) as f32);
                    ((x + y * k as f32) / 20.0).sin()
                })
                .collect();
            let map: Vec<f32> = (0..h * w)
                .map(|i| {
                    let (y, x) = (
                        (i / w) as f32 - 16.0,
                        (i % w) as f32 - 10.0 - 4.0 * k as f32,
                    );
                    (-(x * x + y * y) / 40.0).exp()
                })
                .collect();
            let mask: Vec<bool> = map.iter().map(|&v| v > 0.5).collect();
            let base = Tile::from_chw(&img, 1, h, w, (-1.0, 1.0));
            rows.push(vec![
                base.clone(),
                Tile::heatmap(&map, h, w, 0.0, 1.0),
                Tile::overlay(&base, &map, 0.0, 1.0, 0.5),
                Tile::mask(&mask, h, w),
            ]);
        }
        let titles = ["input", "anomaly map", "overlay", "ground truth"];
        let p = dir.join("grid.png");
        image_grid(&p, &rows, &titles, 4).unwrap();
        let img = decode(&p);
        let cell = 32 * 4;
        assert_eq!(img.width() as usize, 2 + 4 * (cell + 2));
        assert!(img.height() as usize > 2 + 3 * (cell + 2));

        let p = dir.join("grid_labeled.png");
        image_grid_labeled(&p, &rows, &[], &["good", "scratch", "hole"], 3).unwrap();
        let img = decode(&p);
        assert_eq!(img.height() as usize, 2 + 3 * (32 * 3 + 2));

        let bad = vec![vec![Tile {
            channels: 3,
            height: 2,
            width: 2,
            rgb: vec![0; 5],
        }]];
        assert!(image_grid(&dir.join("bad.png"), &bad, &[], 1).is_err());
    }
}
