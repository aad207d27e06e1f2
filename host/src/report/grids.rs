//! Image tiles (CHW images, heatmaps, overlays, masks) and the labelled grids they are laid out in.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor;

use super::{ensure_font, prepare_path, FONT, GRID_GAP};

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
    let layout = GridLayout::new(rows, n_cols, column_titles, row_labels, scale as usize);
    let mut buf = vec![255u8; layout.width * layout.height * 3];
    layout.blit(&mut buf, rows);
    if layout.title_h > 0 || layout.label_w > 0 {
        layout.draw_text(&mut buf, column_titles, row_labels, rows.len())?;
    }

    prepare_path(path)?;
    image::save_buffer_with_format(
        path,
        &buf,
        layout.width as u32,
        layout.height as u32,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .with_context(|| format!("writing image grid {}", path.display()))?;
    Ok(())
}

/// Pixel geometry of a grid: cells as large as the largest tile, a title band on top and a label
/// column on the left when there is text for them.
struct GridLayout {
    scale: usize,
    gap: usize,
    cell_w: usize,
    cell_h: usize,
    title_px: u32,
    title_h: usize,
    label_px: u32,
    label_w: usize,
    width: usize,
    height: usize,
}

impl GridLayout {
    fn new(
        rows: &[Vec<Tile>],
        n_cols: usize,
        column_titles: &[&str],
        row_labels: &[&str],
        scale: usize,
    ) -> Self {
        let gap = GRID_GAP as usize;
        let largest = |dim: fn(&Tile) -> usize| {
            rows.iter().flatten().map(dim).max().unwrap_or(1).max(1) * scale
        };
        let (cell_w, cell_h) = (largest(|t| t.width), largest(|t| t.height));

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
        Self {
            scale,
            gap,
            cell_w,
            cell_h,
            title_px,
            title_h,
            label_px,
            label_w,
            width: label_w + gap + n_cols * (cell_w + gap),
            height: title_h + gap + rows.len() * (cell_h + gap),
        }
    }

    /// Copies each tile, upscaled (nearest neighbour), centred in its cell.
    fn blit(&self, buf: &mut [u8], rows: &[Vec<Tile>]) {
        let s = self.scale;
        for (r, row) in rows.iter().enumerate() {
            for (c, tile) in row.iter().enumerate() {
                let (tw, th) = (tile.width * s, tile.height * s);
                let x0 =
                    self.label_w + self.gap + c * (self.cell_w + self.gap) + (self.cell_w - tw) / 2;
                let y0 =
                    self.title_h + self.gap + r * (self.cell_h + self.gap) + (self.cell_h - th) / 2;
                for y in 0..th {
                    let src_row = (y / s) * tile.width;
                    let dst_row = ((y0 + y) * self.width + x0) * 3;
                    for x in 0..tw {
                        let src = (src_row + x / s) * 3;
                        let dst = dst_row + x * 3;
                        buf[dst..dst + 3].copy_from_slice(&tile.rgb[src..src + 3]);
                    }
                }
            }
        }
    }

    /// Column titles (shrunk to fit their column) and right-aligned row labels.
    fn draw_text(
        &self,
        buf: &mut [u8],
        column_titles: &[&str],
        row_labels: &[&str],
        n_rows: usize,
    ) -> Result<()> {
        let (gap, cell_w, cell_h) = (self.gap, self.cell_w, self.cell_h);
        let (label_w, title_h) = (self.label_w, self.title_h);
        let area = BitMapBackend::with_buffer(buf, (self.width as u32, self.height as u32))
            .into_drawing_area();
        let black = RGBColor(20, 20, 20);
        for (c, title) in column_titles
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
        {
            let mut px = self.title_px;
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
        for (r, label) in row_labels.iter().enumerate().take(n_rows) {
            if label.is_empty() {
                continue;
            }
            let style = TextStyle::from((FONT, self.label_px).into_font())
                .color(&black)
                .pos(text_anchor::Pos::new(
                    text_anchor::HPos::Right,
                    text_anchor::VPos::Center,
                ));
            let cy = title_h + gap + r * (cell_h + gap) + cell_h / 2;
            area.draw_text(label, &style, ((label_w - 6) as i32, cy as i32))?;
        }
        area.present()?;
        Ok(())
    }
}
