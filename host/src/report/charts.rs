//! Plotted figures: training curves, ROC / PR curves and score histograms.

use std::path::Path;

use anyhow::Result;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    finish, fmt_log_tick, fmt_tick, new_canvas, ANOMALY_COLOR, AXIS_DESC_PX, CAPTION_PX, FONT,
    GRAY, LEGEND_PX, NORMAL_COLOR, PALETTE, TICK_PX,
};

/// A chart on an f64 × f64 plane, drawn into a bitmap.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

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
) -> Result<Chart<'a, 'b>> {
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

fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> Result<()> {
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

/// Shared bins of the normal and anomalous scores: `[lo, hi]` covers both and the threshold.
struct Bins {
    lo: f64,
    hi: f64,
    width: f64,
    normal: Vec<f64>,
    anomalous: Vec<f64>,
    /// Top of the y axis: the largest fraction plus headroom for the legend.
    y_max: f64,
}

impl Bins {
    fn new(normal: &[f64], anomalous: &[f64], threshold: Option<f64>) -> Self {
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
        let f_normal = bin_fractions(normal, lo, hi, bins);
        let f_anom = bin_fractions(anomalous, lo, hi, bins);
        let y_max = f_normal
            .iter()
            .chain(f_anom.iter())
            .copied()
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.12;
        Self {
            lo,
            hi,
            width,
            normal: f_normal,
            anomalous: f_anom,
            y_max,
        }
    }
}

/// One class's translucent bars, with crisp outlines so overlapping bars stay readable.
fn draw_bars(
    chart: &mut Chart<'_, '_>,
    bins: &Bins,
    fractions: &[f64],
    color: RGBColor,
    label: String,
) -> Result<()> {
    let (lo, width) = (bins.lo, bins.width);
    let rect = move |(i, &f): (usize, &f64)| {
        let x0 = lo + i as f64 * width;
        [(x0, 0.0), (x0 + width, f)]
    };
    let nonzero = || fractions.iter().enumerate().filter(|(_, f)| **f > 0.0);
    chart
        .draw_series(nonzero().map(|b| Rectangle::new(rect(b), color.mix(0.45).filled())))?
        .label(label)
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 6), (x + 18, y + 6)], color.mix(0.6).filled())
        });
    chart
        .draw_series(nonzero().map(|b| Rectangle::new(rect(b), color.mix(0.9).stroke_width(1))))?;
    Ok(())
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
    let bins = Bins::new(&normal, &anomalous, threshold);

    let root = new_canvas(path)?;
    let x_pad = bins.width * 0.5;
    let mut chart = ChartBuilder::on(&root)
        .caption("Anomaly score distribution", (FONT, CAPTION_PX))
        .margin(20)
        .margin_right(30)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((bins.lo - x_pad)..(bins.hi + x_pad), 0.0..bins.y_max)?;
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
        (&bins.normal, NORMAL_COLOR, "normal", normal.len()),
        (&bins.anomalous, ANOMALY_COLOR, "anomalous", anomalous.len()),
    ] {
        if count > 0 {
            let label = format!("{name} (n = {count})");
            draw_bars(&mut chart, &bins, fractions, color, label)?;
        }
    }
    if let Some(t) = threshold {
        chart
            .draw_series(DashedLineSeries::new(
                [(t, 0.0), (t, bins.y_max)],
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
