//! Report figures: training curves, ROC / PR curves, score histograms and image grids.
//!
//! Every figure is a PNG. Text is drawn with DejaVu Sans embedded in the binary
//! (`assets/DejaVuSans.ttf`, see `assets/DejaVuSans-LICENSE.txt`), so no system fonts are
//! needed. Plots are 800×600 with a white background.

use std::path::Path;
use std::sync::Once;

use anyhow::{bail, ensure, Context, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, text_anchor, FontStyle};

/// DejaVu Sans (Bitstream Vera derived, permissive licence), embedded.
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
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

/// Exponential moving average used to draw a readable trend over noisy per-step losses.
fn ema(values: &[(f64, f64)], span: f64) -> Vec<(f64, f64)> {
    let alpha = 2.0 / (span + 1.0);
    let mut out = Vec::with_capacity(values.len());
    let mut acc: Option<f64> = None;
    for &(x, y) in values {
        let next = match acc {
            None => y,
            Some(prev) => prev + alpha * (y - prev),
        };
        acc = Some(next);
        out.push((x, next));
    }
    out
}

/// Shared body of [`loss_curves`] for linear and log y axes (their coordinate types differ).
macro_rules! draw_loss_chart {
    ($chart:expr, $x_label:expr, $y_fmt:expr, $lines:expr, $smooth:expr) => {{
        let chart = &mut $chart;
        chart
            .configure_mesh()
            .x_desc($x_label)
            .y_desc("loss")
            .axis_desc_style((FONT, AXIS_DESC_PX))
            .label_style((FONT, TICK_PX))
            .x_label_formatter(&|v: &f64| fmt_tick(*v))
            .y_label_formatter($y_fmt)
            .bold_line_style(BLACK.mix(0.10))
            .light_line_style(BLACK.mix(0.04))
            .max_light_lines(4)
            .max_light_lines(4)
            .axis_style(BLACK.mix(0.6))
            .draw()?;
        for (i, (name, pts)) in $lines.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if pts.is_empty() {
                continue;
            }
            if $smooth {
                chart.draw_series(LineSeries::new(pts.iter().copied(), color.mix(0.22)))?;
                let span = (pts.len() as f64 / 50.0).max(5.0);
                chart
                    .draw_series(LineSeries::new(ema(pts, span), color.stroke_width(2)))?
                    .label(format!("{name} (smoothed)"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                    });
            } else {
                let marker = pts.len() <= 40;
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                    .label(name.to_string())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                    });
                if marker {
                    chart.draw_series(
                        pts.iter()
                            .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
                    )?;
                }
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, LEGEND_PX))
            .background_style(WHITE.mix(0.88))
            .border_style(BLACK.mix(0.35))
            .margin(10)
            .draw()?;
    }};
}

/// Plots one line per series over steps or epochs (x = 1, 2, …), with a legend.
///
/// Non-finite values are skipped. The y axis is logarithmic when every value is positive
/// and they span more than two decades. Series longer than 200 points are drawn faintly
/// with an exponential-moving-average trend on top.
pub fn loss_curves(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[(&str, &[f32])],
) -> Result<()> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, vals)| {
            let pts = vals
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| ((i + 1) as f64, v as f64))
                .collect();
            (*name, pts)
        })
        .collect();
    let n_max = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let ys = || lines.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    let (mut y_min, mut y_max) = ys().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let log_y = y_min > 0.0 && y_max / y_min > 100.0;
    let smooth = n_max > 200;
    let x_range = if n_max == 1 {
        0.5..1.5
    } else {
        1.0..n_max as f64
    };

    let root = new_canvas(path)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, (FONT, CAPTION_PX))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80);
    if log_y {
        let lo = 10f64.powf(y_min.log10().floor());
        let hi = 10f64.powf(y_max.log10().ceil());
        let mut chart = builder.build_cartesian_2d(x_range, (lo..hi).log_scale())?;
        draw_loss_chart!(chart, x_label, &|v: &f64| fmt_log_tick(*v), lines, smooth);
    } else {
        let span = (y_max - y_min).max(y_max.abs() * 0.1).max(1e-6);
        let lo = if y_min >= 0.0 && y_min - 0.05 * span < 0.0 {
            0.0
        } else {
            y_min - 0.05 * span
        };
        let hi = y_max + 0.08 * span;
        let mut chart = builder.build_cartesian_2d(x_range, lo..hi)?;
        draw_loss_chart!(chart, x_label, &|v: &f64| fmt_tick(*v), lines, smooth);
    }
    finish(&root, path)
}

/// Shared frame for the unit-square ROC and PR charts.
fn unit_square_chart<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, CAPTION_PX))
        .margin(20)
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..1.0f64, 0.0..1.02f64)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style((FONT, AXIS_DESC_PX))
        .label_style((FONT, TICK_PX))
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .bold_line_style(BLACK.mix(0.10))
        .light_line_style(BLACK.mix(0.04))
        .max_light_lines(4)
        .axis_style(BLACK.mix(0.6))
        .draw()?;
    Ok(chart)
}

fn finite_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)))
        .collect()
}

fn draw_legend<'a, 'b: 'a>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, LEGEND_PX))
        .background_style(WHITE.mix(0.88))
        .border_style(BLACK.mix(0.35))
        .margin(12)
        .draw()?;
    Ok(())
}

/// ROC curve from `(false positive rate, true positive rate)` points, with the chance diagonal.
pub fn roc_curve(path: &Path, points: &[(f64, f64)], auroc: f64) -> Result<()> {
    let pts = finite_points(points);
    let root = new_canvas(path)?;
    let title = format!("ROC curve (AUROC = {auroc:.4})");
    let mut chart = unit_square_chart(&root, &title, "False positive rate", "True positive rate")?;
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            8,
            6,
            GRAY.stroke_width(2),
        ))?
        .label("chance (0.5)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], GRAY.stroke_width(2)));
    if !pts.is_empty() {
        let mut area = pts.clone();
        area.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        chart.draw_series(AreaSeries::new(area, 0.0, NORMAL_COLOR.mix(0.12)))?;
        chart
            .draw_series(LineSeries::new(pts, NORMAL_COLOR.stroke_width(3)))?
            .label(format!("detector (AUROC {auroc:.3})"))
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], NORMAL_COLOR.stroke_width(3))
            });
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    finish(&root, path)
}

/// Precision–recall curve from `(recall, precision)` points, with the chance level
/// (`positive_rate`, the fraction of anomalous samples) as a dashed line.
pub fn pr_curve(path: &Path, points: &[(f64, f64)], ap: f64, positive_rate: f64) -> Result<()> {
    let pts = finite_points(points);
    let root = new_canvas(path)?;
    let title = format!("Precision–recall curve (AP = {ap:.4})");
    let mut chart = unit_square_chart(&root, &title, "Recall", "Precision")?;
    if positive_rate.is_finite() {
        let p = positive_rate.clamp(0.0, 1.0);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, p), (1.0, p)],
                8,
                6,
                GRAY.stroke_width(2),
            ))?
            .label(format!("chance ({p:.3})"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], GRAY.stroke_width(2)));
    }
    if !pts.is_empty() {
        chart
            .draw_series(LineSeries::new(pts, ANOMALY_COLOR.stroke_width(3)))?
            .label(format!("detector (AP {ap:.3})"))
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], ANOMALY_COLOR.stroke_width(3))
            });
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)?;
    finish(&root, path)
}

/// Fraction of `values` falling in each of `bins` equal bins over `[lo, hi]`.
fn bin_fractions(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let mut counts = vec![0usize; bins];
    let width = (hi - lo) / bins as f64;
    for &v in values {
        let i = (((v - lo) / width).floor() as isize).clamp(0, bins as isize - 1) as usize;
        counts[i] += 1;
    }
    let n = values.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / n).collect()
}

/// Overlaid, translucent histograms of normal and anomalous scores on shared bins.
///
/// Each class is normalised to fractions of its own size so that imbalanced test sets stay
/// comparable; the legend gives the counts. `threshold`, when given, is a vertical dashed line.
pub fn score_histogram(
    path: &Path,
    normal: &[f32],
    anomalous: &[f32],
    threshold: Option<f32>,
) -> Result<()> {
    let finite = |v: &[f32]| -> Vec<f64> {
        v.iter()
            .filter(|x| x.is_finite())
            .map(|&x| x as f64)
            .collect()
    };
    let (normal, anomalous) = (finite(normal), finite(anomalous));
    let threshold = threshold.filter(|t| t.is_finite()).map(f64::from);

    let all = normal
        .iter()
        .chain(anomalous.iter())
        .copied()
        .chain(threshold);
    let (mut lo, mut hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        let pad = (lo.abs() * 0.05).max(0.5);
        (lo, hi) = (lo - pad, hi + pad);
    }
    let n = normal.len().max(anomalous.len());
    let bins = ((n as f64).sqrt().round() as usize).clamp(10, 60);
    let width = (hi - lo) / bins as f64;
    let f_normal = bin_fractions(&normal, lo, hi, bins);
    let f_anom = bin_fractions(&anomalous, lo, hi, bins);
    let y_max = f_normal
        .iter()
        .chain(f_anom.iter())
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.12;

    let root = new_canvas(path)?;
    let x_pad = width * 0.5;
    let mut chart = ChartBuilder::on(&root)
        .caption("Anomaly score distribution", (FONT, CAPTION_PX))
        .margin(20)
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((lo - x_pad)..(hi + x_pad), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("Anomaly score")
        .y_desc("Fraction of class")
        .axis_desc_style((FONT, AXIS_DESC_PX))
        .label_style((FONT, TICK_PX))
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .disable_x_mesh()
        .bold_line_style(BLACK.mix(0.10))
        .light_line_style(BLACK.mix(0.04))
        .max_light_lines(4)
        .axis_style(BLACK.mix(0.6))
        .draw()?;

    for (fractions, color, name, count) in [
        (&f_normal, NORMAL_COLOR, "normal", normal.len()),
        (&f_anom, ANOMALY_COLOR, "anomalous", anomalous.len()),
    ] {
        if count == 0 {
            continue;
        }
        let bars = fractions
            .iter()
            .enumerate()
            .filter(|(_, f)| **f > 0.0)
            .map(|(i, &f)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, f)], color.mix(0.45).filled())
            });
        chart
            .draw_series(bars)?
            .label(format!("{name} (n = {count})"))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.mix(0.6).filled())
            });
        // Crisp outlines so overlapping bars stay readable.
        let outlines = fractions
            .iter()
            .enumerate()
            .filter(|(_, f)| **f > 0.0)
            .map(|(i, &f)| {
                let x0 = lo + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, f)], color.mix(0.9).stroke_width(1))
            });
        chart.draw_series(outlines)?;
    }
    if let Some(t) = threshold {
        chart
            .draw_series(DashedLineSeries::new(
                [(t, 0.0), (t, y_max)],
                10,
                6,
                BLACK.stroke_width(2),
            ))?
            .label(format!("threshold = {}", fmt_tick(t)))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], BLACK.stroke_width(2)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    finish(&root, path)
}

/// An RGB image tile for [`image_grid`]: `rgb` is HWC, 3 bytes per pixel, always.
/// `channels` records how many channels the source had (1 for gray and masks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub rgb: Vec<u8>,
}

fn to_unit(v: f32, lo: f32, hi: f32) -> f32 {
    if !v.is_finite() {
        return 0.0;
    }
    let span = hi - lo;
    // Degenerate (or NaN) range: a step at `lo`.
    if span.is_nan() || span <= 0.0 {
        return if v > lo { 1.0 } else { 0.0 };
    }
    ((v - lo) / span).clamp(0.0, 1.0)
}

fn to_byte(t: f32) -> u8 {
    (t.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Jet colormap: 0 → dark blue, 0.5 → green/yellow, 1 → dark red.
fn jet(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0);
    let c = |d: f32| (1.5 - (4.0 * t - d).abs()).clamp(0.0, 1.0);
    [to_byte(c(3.0)), to_byte(c(2.0)), to_byte(c(1.0))]
}

impl Tile {
    /// Converts a CHW planar image (1 or 3 channels) whose values lie in `range` to an RGB
    /// tile; gray is replicated to the three channels, values outside `range` are clipped.
    ///
    /// # Panics
    /// If `channels` is not 1 or 3, or `data` is shorter than `channels * h * w`.
    pub fn from_chw(data: &[f32], channels: usize, h: usize, w: usize, range: (f32, f32)) -> Tile {
        assert!(
            channels == 1 || channels == 3,
            "Tile::from_chw: channels must be 1 or 3, got {channels}"
        );
        let plane = h * w;
        assert!(
            data.len() >= channels * plane,
            "Tile::from_chw: {} values for {channels}x{h}x{w}",
            data.len()
        );
        let (lo, hi) = range;
        let mut rgb = Vec::with_capacity(plane * 3);
        for p in 0..plane {
            for c in 0..3 {
                let ch = if channels == 1 { 0 } else { c };
                rgb.push(to_byte(to_unit(data[ch * plane + p], lo, hi)));
            }
        }
        Tile {
            channels,
            height: h,
            width: w,
            rgb,
        }
    }

    /// Colours an `h × w` map with a jet colormap over `[lo, hi]` (lo → blue, hi → red).
    ///
    /// # Panics
    /// If `map` is shorter than `h * w`.
    pub fn heatmap(map: &[f32], h: usize, w: usize, lo: f32, hi: f32) -> Tile {
        assert!(
            map.len() >= h * w,
            "Tile::heatmap: {} values for {h}x{w}",
            map.len()
        );
        let rgb = map[..h * w]
            .iter()
            .flat_map(|&v| jet(to_unit(v, lo, hi)))
            .collect();
        Tile {
            channels: 3,
            height: h,
            width: w,
            rgb,
        }
    }

    /// Blends the heatmap of `map` (same size as `base`) over `base`; `alpha` is the
    /// heatmap's weight in `[0, 1]`.
    ///
    /// # Panics
    /// If `map` is shorter than `base.height * base.width`.
    pub fn overlay(base: &Tile, map: &[f32], lo: f32, hi: f32, alpha: f32) -> Tile {
        let heat = Tile::heatmap(map, base.height, base.width, lo, hi);
        let a = if alpha.is_finite() {
            alpha.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let rgb = base
            .rgb
            .iter()
            .zip(heat.rgb.iter())
            .map(|(&b, &m)| (b as f32 * (1.0 - a) + m as f32 * a).round() as u8)
            .collect();
        Tile {
            channels: 3,
            height: base.height,
            width: base.width,
            rgb,
        }
    }

    /// A binary mask as white (true) on black (false).
    ///
    /// # Panics
    /// If `mask` is shorter than `h * w`.
    pub fn mask(mask: &[bool], h: usize, w: usize) -> Tile {
        assert!(
            mask.len() >= h * w,
            "Tile::mask: {} values for {h}x{w}",
            mask.len()
        );
        let rgb = mask[..h * w]
            .iter()
            .flat_map(|&m| if m { [255u8; 3] } else { [0u8; 3] })
            .collect();
        Tile {
            channels: 1,
            height: h,
            width: w,
            rgb,
        }
    }
}

/// Writes a grid of tiles as a PNG: each tile upscaled `scale`× (nearest neighbour), 2 px
/// gaps, column titles on top (pass `&[]` for none).
pub fn image_grid(
    path: &Path,
    rows: &[Vec<Tile>],
    column_titles: &[&str],
    scale: u32,
) -> Result<()> {
    image_grid_labeled(path, rows, column_titles, &[], scale)
}

/// [`image_grid`] with optional row labels drawn to the left of each row.
pub fn image_grid_labeled(
    path: &Path,
    rows: &[Vec<Tile>],
    column_titles: &[&str],
    row_labels: &[&str],
    scale: u32,
) -> Result<()> {
    ensure_font();
    ensure!(scale >= 1, "image_grid: scale must be at least 1");
    let n_cols = rows
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .max(column_titles.len());
    ensure!(!rows.is_empty() && n_cols > 0, "image_grid: no tiles");
    for (r, row) in rows.iter().enumerate() {
        for (c, t) in row.iter().enumerate() {
            if t.rgb.len() != t.height * t.width * 3 {
                bail!(
                    "image_grid: tile ({r},{c}) has {} bytes for {}x{} RGB",
                    t.rgb.len(),
                    t.height,
                    t.width
                );
            }
        }
    }
    let s = scale as usize;
    let gap = GRID_GAP as usize;
    let cell_w = rows
        .iter()
        .flatten()
        .map(|t| t.width)
        .max()
        .unwrap_or(1)
        .max(1)
        * s;
    let cell_h = rows
        .iter()
        .flatten()
        .map(|t| t.height)
        .max()
        .unwrap_or(1)
        .max(1)
        * s;

    let has_titles = column_titles.iter().any(|t| !t.is_empty());
    let has_labels = row_labels.iter().any(|t| !t.is_empty());
    let font_px = |avail: usize| -> u32 { (avail as f64 / 7.0).clamp(10.0, 16.0) as u32 };
    let title_px = font_px(cell_w.max(80));
    let title_h = if has_titles {
        title_px as usize + 12
    } else {
        0
    };
    let label_px = 14u32;
    let label_w = if has_labels {
        let longest = row_labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0);
        (longest * label_px as usize * 6 / 10 + 14).min(240)
    } else {
        0
    };

    let width = label_w + gap + n_cols * (cell_w + gap);
    let height = title_h + gap + rows.len() * (cell_h + gap);
    let mut buf = vec![255u8; width * height * 3];

    for (r, row) in rows.iter().enumerate() {
        for (c, tile) in row.iter().enumerate() {
            let (tw, th) = (tile.width * s, tile.height * s);
            let x0 = label_w + gap + c * (cell_w + gap) + (cell_w - tw) / 2;
            let y0 = title_h + gap + r * (cell_h + gap) + (cell_h - th) / 2;
            for y in 0..th {
                let src_row = (y / s) * tile.width;
                let dst_row = ((y0 + y) * width + x0) * 3;
                for x in 0..tw {
                    let src = (src_row + x / s) * 3;
                    let dst = dst_row + x * 3;
                    buf[dst..dst + 3].copy_from_slice(&tile.rgb[src..src + 3]);
                }
            }
        }
    }

    if has_titles || has_labels {
        let area =
            BitMapBackend::with_buffer(&mut buf, (width as u32, height as u32)).into_drawing_area();
        let black = RGBColor(20, 20, 20);
        for (c, title) in column_titles
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
        {
            let mut px = title_px;
            let mut style = TextStyle::from((FONT, px).into_font()).color(&black);
            // Shrink long titles to fit their column.
            while px > 9 && area.estimate_text_size(title, &style)?.0 as usize > cell_w {
                px -= 1;
                style = TextStyle::from((FONT, px).into_font()).color(&black);
            }
            let cx = label_w + gap + c * (cell_w + gap) + cell_w / 2;
            let style = style.pos(text_anchor::Pos::new(
                text_anchor::HPos::Center,
                text_anchor::VPos::Center,
            ));
            area.draw_text(title, &style, (cx as i32, (title_h / 2) as i32 + 1))?;
        }
        for (r, label) in row_labels.iter().enumerate().take(rows.len()) {
            if label.is_empty() {
                continue;
            }
            let style = TextStyle::from((FONT, label_px).into_font())
                .color(&black)
                .pos(text_anchor::Pos::new(
                    text_anchor::HPos::Right,
                    text_anchor::VPos::Center,
                ));
            let cy = title_h + gap + r * (cell_h + gap) + cell_h / 2;
            area.draw_text(label, &style, ((label_w - 6) as i32, cy as i32))?;
        }
        area.present()?;
    }

    prepare_path(path)?;
    image::save_buffer_with_format(
        path,
        &buf,
        width as u32,
        height as u32,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .with_context(|| format!("writing image grid {}", path.display()))?;
    Ok(())
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
