//! Procedural industrial surfaces with defects and exact ground-truth masks.
//!
//! Used by the host (`synthetic:KIND` datasets, `vigil synth`) and by the appliance as a camera
//! stand-in, so it depends on nothing but [`crate::rng`].
//!
//! Each surface kind is one fixed "product" (colour, brushing direction, weave pitch): good parts
//! differ only by what varies on a real line — a few degrees of orientation, texture phase,
//! lighting gradient and sensor noise. The good distribution is therefore the same for every
//! seed, and a detector trained on one seed's images accepts another seed's good parts.
//!
//! Defects are drawn on top of the good texture of the same part; the mask marks every pixel the
//! defect changed by more than [`MASK_THRESHOLD`] grey levels (plus, for a missing piece, the
//! whole area where the texture is absent). Defect sizes scale with the image and never go below
//! a few pixels, so they stay visible at 32×32.

use crate::rng::Rng;
use std::f32::consts::PI;
use std::fmt;
use std::str::FromStr;

/// A pixel belongs to the defect mask when the defect changed one of its channels by more than
/// this many grey levels (out of 255).
pub const MASK_THRESHOLD: u8 = 10;

/// Canonical names of the surface kinds, in [`SurfaceKind::ALL`] order.
pub const KINDS: &[&str] = &["metal", "fabric", "casting"];

/// Which surface the generator renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SurfaceKind {
    /// Fine anisotropic streaks along one direction, low-frequency shading.
    BrushedMetal,
    /// Plain over/under weave with thread-level variation.
    WovenFabric,
    /// Sand-cast / shot-blasted plate: isotropic grain with small pores.
    CastingPlate,
}

impl SurfaceKind {
    pub const ALL: [SurfaceKind; 3] = [
        SurfaceKind::BrushedMetal,
        SurfaceKind::WovenFabric,
        SurfaceKind::CastingPlate,
    ];

    /// Canonical short name (`metal`, `fabric`, `casting`), as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            SurfaceKind::BrushedMetal => "metal",
            SurfaceKind::WovenFabric => "fabric",
            SurfaceKind::CastingPlate => "casting",
        }
    }
}

impl fmt::Display for SurfaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown surface or defect name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`; valid names: {valid}")]
pub struct ParseKindError {
    pub what: &'static str,
    pub value: String,
    pub valid: &'static str,
}

impl FromStr for SurfaceKind {
    type Err = ParseKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "metal" | "brushed-metal" => Ok(SurfaceKind::BrushedMetal),
            "fabric" | "woven-fabric" => Ok(SurfaceKind::WovenFabric),
            "casting" | "casting-plate" => Ok(SurfaceKind::CastingPlate),
            _ => Err(ParseKindError {
                what: "surface kind",
                value: s.to_string(),
                valid: "metal (brushed-metal), fabric (woven-fabric), casting (casting-plate)",
            }),
        }
    }
}

/// The defect drawn on a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DefectKind {
    /// Thin bright or dark line segment / polyline.
    Scratch,
    /// Dark stain with a soft edge.
    Spot,
    /// Dark jagged random-walk line, sometimes branched.
    Crack,
    /// A region where the material is absent (hole).
    Missing,
}

impl DefectKind {
    pub const ALL: [DefectKind; 4] = [
        DefectKind::Scratch,
        DefectKind::Spot,
        DefectKind::Crack,
        DefectKind::Missing,
    ];

    /// Lower-case name, used as the MVTec defect-type directory name.
    pub fn name(self) -> &'static str {
        match self {
            DefectKind::Scratch => "scratch",
            DefectKind::Spot => "spot",
            DefectKind::Crack => "crack",
            DefectKind::Missing => "missing",
        }
    }
}

impl fmt::Display for DefectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DefectKind {
    type Err = ParseKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scratch" => Ok(DefectKind::Scratch),
            "spot" => Ok(DefectKind::Spot),
            "crack" => Ok(DefectKind::Crack),
            "missing" => Ok(DefectKind::Missing),
            _ => Err(ParseKindError {
                what: "defect kind",
                value: s.to_string(),
                valid: "scratch, spot, crack, missing",
            }),
        }
    }
}

/// One generated part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthImage {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// HWC interleaved, `width * height * channels` bytes.
    pub pixels: Vec<u8>,
    /// `width * height`, 0 (good) or 255 (defect).
    pub mask: Vec<u8>,
    pub defect: Option<DefectKind>,
}

impl SynthImage {
    /// Number of mask pixels set.
    pub fn defect_area(&self) -> usize {
        self.mask.iter().filter(|&&m| m != 0).count()
    }
}

/// Invalid generator geometry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SynthError {
    #[error("synthetic image channels must be 1 or 3, got {0}")]
    Channels(usize),
    #[error("synthetic image size must be between 8 and 8192 pixels per side, got {0}x{1}")]
    Size(usize, usize),
}

/// Deterministic generator of good and defective parts of one surface kind.
#[derive(Clone, Debug)]
pub struct Generator {
    kind: SurfaceKind,
    width: usize,
    height: usize,
    channels: usize,
    rng: Rng,
    /// Good texture, RGB f32 in [0, 1] (always 3 channels internally).
    base: Vec<f32>,
    /// Defective copy.
    work: Vec<f32>,
    /// Defect coverage in [0, 1] per pixel.
    alpha: Vec<f32>,
}

impl Generator {
    /// A generator for `width`×`height` images with 1 or 3 channels.
    ///
    /// # Panics
    /// On channels other than 1 or 3 or a side outside 8..=8192; see [`Generator::try_new`].
    pub fn new(kind: SurfaceKind, width: usize, height: usize, channels: usize, seed: u64) -> Self {
        match Self::try_new(kind, width, height, channels, seed) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Generator::new`] but reports bad geometry as an error.
    pub fn try_new(
        kind: SurfaceKind,
        width: usize,
        height: usize,
        channels: usize,
        seed: u64,
    ) -> Result<Self, SynthError> {
        if channels != 1 && channels != 3 {
            return Err(SynthError::Channels(channels));
        }
        if !(8..=8192).contains(&width) || !(8..=8192).contains(&height) {
            return Err(SynthError::Size(width, height));
        }
        let n = width * height;
        Ok(Self {
            kind,
            width,
            height,
            channels,
            rng: Rng::new(seed ^ 0x5EED_0F5A_7FAC_E5E5),
            base: vec![0.0; n * 3],
            work: vec![0.0; n * 3],
            alpha: vec![0.0; n],
        })
    }

    pub fn kind(&self) -> SurfaceKind {
        self.kind
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn height(&self) -> usize {
        self.height
    }
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// A defect-free part.
    pub fn good(&mut self) -> SynthImage {
        self.render_base();
        let pixels = self.quantize(&self.base);
        SynthImage {
            width: self.width,
            height: self.height,
            channels: self.channels,
            pixels,
            mask: vec![0; self.width * self.height],
            defect: None,
        }
    }

    /// A part with one defect of `kind`; the mask is never empty.
    pub fn defective(&mut self, kind: DefectKind) -> SynthImage {
        self.render_base();
        self.work.copy_from_slice(&self.base);
        self.alpha.iter_mut().for_each(|a| *a = 0.0);
        match kind {
            DefectKind::Scratch => self.scratch(),
            DefectKind::Spot => self.spot(),
            DefectKind::Crack => self.crack(),
            DefectKind::Missing => self.missing(),
        }
        let good = self.quantize(&self.base);
        let pixels = self.quantize(&self.work);
        let c = self.channels;
        let mut mask: Vec<u8> = (0..self.width * self.height)
            .map(|i| {
                let changed =
                    (0..c).any(|k| good[i * c + k].abs_diff(pixels[i * c + k]) > MASK_THRESHOLD);
                let raster = kind == DefectKind::Missing && self.alpha[i] >= 0.5;
                if changed || raster {
                    255
                } else {
                    0
                }
            })
            .collect();
        if mask.iter().all(|&m| m == 0) {
            // Cannot happen with the contrasts used below, but an empty mask would break the
            // "defective ⇒ non-empty mask" contract: fall back to the drawn shape itself.
            for (m, &a) in mask.iter_mut().zip(&self.alpha) {
                if a >= 0.5 {
                    *m = 255;
                }
            }
        }
        SynthImage {
            width: self.width,
            height: self.height,
            channels: self.channels,
            pixels,
            mask,
            defect: Some(kind),
        }
    }

    /// Defective with probability `defect_rate` (kind uniform), good otherwise.
    pub fn sample(&mut self, defect_rate: f32) -> SynthImage {
        if self.rng.uniform() < defect_rate {
            let kind = DefectKind::ALL[self.rng.below(DefectKind::ALL.len())];
            self.defective(kind)
        } else {
            self.good()
        }
    }

    // ---------------------------------------------------------------- textures

    fn scale(&self) -> f32 {
        self.width.min(self.height) as f32
    }

    fn render_base(&mut self) {
        let light = Lighting::draw(&mut self.rng, self.width, self.height);
        match self.kind {
            SurfaceKind::BrushedMetal => self.render_metal(&light),
            SurfaceKind::WovenFabric => self.render_fabric(&light),
            SurfaceKind::CastingPlate => self.render_casting(&light),
        }
    }

    fn render_metal(&mut self, light: &Lighting) {
        const TINT: [f32; 3] = [0.97, 1.0, 1.04];
        let s = self.scale();
        let rng = &mut self.rng;
        let theta = rng.range(-0.05, 0.05);
        let (sn, cs) = theta.sin_cos();
        let across = (s / 110.0).max(0.55);
        let along = s * 0.35;
        let seed = rng.next_u64() as u32;
        let (ox, oy) = (rng.range(0.0, 512.0), rng.range(0.0, 512.0));
        let level = 0.57 + 0.015 * rng.normal().clamp(-2.5, 2.5);
        let w = self.width;
        for y in 0..self.height {
            for x in 0..w {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let u = px * cs + py * sn;
                let v = -px * sn + py * cs;
                let mut streak = 0.55 * (value_noise(u / along + ox, v / across + oy, seed) - 0.5)
                    + 0.35
                        * (value_noise(u / (along * 0.2) + oy, v / (across * 2.5) + ox, seed ^ 1)
                            - 0.5);
                let groove_row = ffloor(v / (across * 1.8) + oy);
                let g = hash01(groove_row, 7, seed ^ 2);
                if g > 0.93 {
                    let sign = if hash(groove_row, 11, seed ^ 3) & 1 == 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    let fade = value_noise(u / (along * 0.5) + ox, groove_row as f32, seed ^ 4);
                    streak += sign * 0.6 * ((g - 0.93) / 0.07) * fade;
                }
                let val = level * light.at(px, py) + 0.17 * streak + 0.018 * grain(x, y, seed ^ 5);
                let o = (y * w + x) * 3;
                for (v, t) in self.base[o..o + 3].iter_mut().zip(TINT) {
                    *v = val * t;
                }
            }
        }
    }

    fn render_fabric(&mut self, light: &Lighting) {
        const WARP: [f32; 3] = [0.40, 0.46, 0.62];
        const WEFT: [f32; 3] = [0.66, 0.66, 0.68];
        let s = self.scale();
        let rng = &mut self.rng;
        let pitch = (s / 12.0).max(4.0) * (1.0 + 0.01 * rng.normal().clamp(-2.5, 2.5));
        let theta = rng.range(-0.035, 0.035);
        let (sn, cs) = theta.sin_cos();
        let (u0, v0) = (rng.range(0.0, 2.0 * pitch), rng.range(0.0, 2.0 * pitch));
        let seed = rng.next_u64() as u32;
        // Supersample fine weaves so that pattern phase does not alias into moiré.
        let ss: usize = if pitch < 8.0 { 2 } else { 1 };
        let inv = 1.0 / (ss * ss) as f32;
        let w = self.width;
        let sample = |px: f32, py: f32| -> [f32; 3] {
            let u = px * cs + py * sn + u0;
            let v = -px * sn + py * cs + v0;
            let (a, b) = (u / pitch, v / pitch);
            let (i, j) = (ffloor(a), ffloor(b));
            let (fa, fb) = (a - i as f32, b - j as f32);
            let warp_top = (i.wrapping_add(j)) & 1 == 0;
            let (across, along, tid, colour, cu, cv) = if warp_top {
                (fa, fb, i, WARP, u, v)
            } else {
                (fb, fa, j.wrapping_add(1 << 20), WEFT, v, u)
            };
            let prof = (PI * across).sin().max(0.0).sqrt();
            let dip = 0.72 + 0.28 * (PI * along).sin();
            let var = 1.0 + 0.16 * (hash01(tid, 3, seed) - 0.5);
            let fibre = value_noise(cu / (pitch * 0.15), cv / (pitch * 0.8), seed ^ 1) - 0.5;
            let shade = (0.30 + 0.70 * prof * dip) * var * (1.0 + 0.22 * fibre);
            [colour[0] * shade, colour[1] * shade, colour[2] * shade]
        };
        for y in 0..self.height {
            for x in 0..w {
                let mut acc = [0.0f32; 3];
                for sy in 0..ss {
                    for sx in 0..ss {
                        let px = x as f32 + (sx as f32 + 0.5) / ss as f32;
                        let py = y as f32 + (sy as f32 + 0.5) / ss as f32;
                        let c = sample(px, py);
                        acc[0] += c[0];
                        acc[1] += c[1];
                        acc[2] += c[2];
                    }
                }
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let l = light.at(px, py);
                let n = 0.015 * grain(x, y, seed ^ 2);
                let o = (y * w + x) * 3;
                for (v, a) in self.base[o..o + 3].iter_mut().zip(acc) {
                    *v = a * inv * l + n;
                }
            }
        }
    }

    fn render_casting(&mut self, light: &Lighting) {
        const TINT: [f32; 3] = [1.0, 0.97, 0.92];
        let s = self.scale();
        let rng = &mut self.rng;
        let seed = rng.next_u64() as u32;
        let (ox, oy) = (rng.range(0.0, 512.0), rng.range(0.0, 512.0));
        let level = 0.50 + 0.015 * rng.normal().clamp(-2.5, 2.5);
        let fine = (s / 200.0).max(0.7);
        let mid = (s / 40.0).max(1.5);
        let coarse = s / 8.0;
        let cell = (s / 16.0).max(3.0);
        let pore_r = (s / 90.0).max(0.6);
        let w = self.width;
        for y in 0..self.height {
            for x in 0..w {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let (qx, qy) = (px + ox * cell, py + oy * cell);
                let mut val = level * light.at(px, py)
                    + 0.09 * (value_noise(qx / fine, qy / fine, seed) - 0.5)
                    + 0.08 * (value_noise(qx / mid, qy / mid, seed ^ 1) - 0.5)
                    + 0.06 * (value_noise(qx / coarse, qy / coarse, seed ^ 2) - 0.5);
                // Pores: at most one per cell, well inside it.
                let (ci, cj) = (ffloor(qx / cell), ffloor(qy / cell));
                let h = hash(ci, cj, seed ^ 3);
                if h % 100 < 18 {
                    let cx = (ci as f32 + 0.3 + 0.4 * hash01(ci, cj, seed ^ 4)) * cell;
                    let cy = (cj as f32 + 0.3 + 0.4 * hash01(ci, cj, seed ^ 5)) * cell;
                    let r = pore_r * (0.7 + 0.6 * hash01(ci, cj, seed ^ 6));
                    let d = ((qx - cx).powi(2) + (qy - cy).powi(2)).sqrt();
                    if d < r {
                        val *= 1.0 - 0.35 * (1.0 - d / r);
                    }
                }
                val += 0.02 * grain(x, y, seed ^ 7);
                let o = (y * w + x) * 3;
                for (v, t) in self.base[o..o + 3].iter_mut().zip(TINT) {
                    *v = val * t;
                }
            }
        }
    }

    // ---------------------------------------------------------------- defects

    /// A random point in the central part of the image.
    fn centre_point(&mut self, margin: f32) -> (f32, f32) {
        let (w, h) = (self.width as f32, self.height as f32);
        (
            self.rng.range(margin * w, (1.0 - margin) * w),
            self.rng.range(margin * h, (1.0 - margin) * h),
        )
    }

    fn mean_base(&self) -> f32 {
        self.base.iter().sum::<f32>() / self.base.len() as f32
    }

    fn scratch(&mut self) {
        let s = self.scale();
        let len = s * self.rng.range(0.28, 0.55);
        let nseg = 1 + self.rng.below(3);
        let width = (s * 0.012).max(1.3) * self.rng.range(0.9, 1.25);
        let mut angle = self.rng.range(0.0, PI);
        let c = self.centre_point(0.22);
        let mut p = (c.0 - angle.cos() * len / 2.0, c.1 - angle.sin() * len / 2.0);
        let strength = self.rng.range(0.8, 0.95);
        let mut segs = Vec::with_capacity(nseg);
        for _ in 0..nseg {
            let l = len / nseg as f32;
            let q = (p.0 + angle.cos() * l, p.1 + angle.sin() * l);
            segs.push((p, q, width));
            p = q;
            angle += 0.3 * self.rng.normal().clamp(-2.0, 2.0);
        }
        for &(a, b, wd) in &segs {
            self.segment_alpha(a, b, wd, strength);
        }
        let m = self.mean_base();
        let bright = if m < 0.45 {
            true
        } else if m > 0.72 {
            false
        } else {
            self.rng.uniform() < 0.6
        };
        let target = if bright {
            [0.97, 0.97, 0.98]
        } else {
            [0.08, 0.08, 0.09]
        };
        self.blend_mix(target, 0.0);
    }

    fn crack(&mut self) {
        let s = self.scale();
        let len = s * self.rng.range(0.32, 0.55);
        let step = (s / 48.0).max(1.0);
        let wmax = (s * 0.014).max(1.5);
        let start = self.centre_point(0.3);
        let heading = self.rng.range(0.0, 2.0 * PI);
        let pts = self.random_walk(start, heading, len, step);
        self.polyline_alpha(&pts, wmax);
        if self.rng.uniform() < 0.5 && pts.len() > 4 {
            let k = pts.len() / 3 + self.rng.below(pts.len() / 3 + 1);
            let turn = self.rng.range(0.5, 1.0) * if self.rng.uniform() < 0.5 { 1.0 } else { -1.0 };
            let branch = self.random_walk(pts[k], heading + turn, len * 0.35, step);
            self.polyline_alpha(&branch, wmax * 0.7);
        }
        self.blend_mix([0.06, 0.05, 0.05], 0.0);
    }

    fn random_walk(
        &mut self,
        start: (f32, f32),
        heading0: f32,
        len: f32,
        step: f32,
    ) -> Vec<(f32, f32)> {
        let n = ((len / step).ceil() as usize).max(4);
        let mut pts = Vec::with_capacity(n + 1);
        let mut p = start;
        let mut h = heading0;
        pts.push(p);
        for _ in 0..n {
            h += 0.5 * self.rng.normal().clamp(-2.5, 2.5);
            h += 0.3 * (heading0 - h);
            p = (p.0 + h.cos() * step, p.1 + h.sin() * step);
            pts.push(p);
        }
        pts
    }

    /// Tapered polyline: full width in the middle, half at the ends.
    fn polyline_alpha(&mut self, pts: &[(f32, f32)], wmax: f32) {
        let n = pts.len().saturating_sub(1).max(1) as f32;
        for (i, pair) in pts.windows(2).enumerate() {
            let t = (i as f32 + 0.5) / n;
            let wd = wmax * (0.55 + 0.45 * (PI * t).sin());
            self.segment_alpha(pair[0], pair[1], wd, 0.92);
        }
    }

    fn spot(&mut self) {
        let s = self.scale();
        let r = (s * self.rng.range(0.055, 0.10)).max(2.5);
        let c = self.centre_point(0.2);
        let shape = BlobShape::draw(&mut self.rng, 0.16, false);
        self.blob_alpha(c, r, &shape, 0.45, 0.92);
        let j = self.rng.range(0.85, 1.15);
        let factor = [0.40 * j, 0.32 * j, 0.24 * j];
        let n = self.width * self.height;
        for i in 0..n {
            let a = self.alpha[i];
            if a > 0.0 {
                for (v, f) in self.work[i * 3..i * 3 + 3].iter_mut().zip(factor) {
                    *v *= 1.0 - a * (1.0 - f);
                }
            }
        }
    }

    fn missing(&mut self) {
        let s = self.scale();
        let r = (s * self.rng.range(0.07, 0.12)).max(3.0);
        let c = self.centre_point(0.2);
        let shape = BlobShape::draw(&mut self.rng, 0.24, true);
        self.blob_alpha(c, r, &shape, 0.0, 1.0);
        self.blend_mix([0.04, 0.04, 0.05], 0.015);
    }

    /// Coverage of a thick segment with a one-pixel anti-aliased edge, max-composited.
    fn segment_alpha(&mut self, a: (f32, f32), b: (f32, f32), width: f32, strength: f32) {
        let half = width / 2.0;
        let pad = half + 1.0;
        let Some((x0, x1, y0, y1)) = self.bbox(
            a.0.min(b.0) - pad,
            a.0.max(b.0) + pad,
            a.1.min(b.1) - pad,
            a.1.max(b.1) + pad,
        ) else {
            return;
        };
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = (dx * dx + dy * dy).max(1e-9);
        for y in y0..y1 {
            for x in x0..x1 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0);
                let (ex, ey) = (px - a.0 - t * dx, py - a.1 - t * dy);
                let d = (ex * ex + ey * ey).sqrt();
                let cov = (half + 0.5 - d).clamp(0.0, 1.0) * strength;
                let al = &mut self.alpha[y * self.width + x];
                *al = al.max(cov);
            }
        }
    }

    /// Coverage of an irregular blob; `soft` is the fraction of the radius used for the fade
    /// (0 = hard edge with one-pixel anti-aliasing).
    fn blob_alpha(&mut self, c: (f32, f32), r: f32, shape: &BlobShape, soft: f32, strength: f32) {
        let reach = r * shape.max_factor() + 1.0;
        let Some((x0, x1, y0, y1)) = self.bbox(c.0 - reach, c.0 + reach, c.1 - reach, c.1 + reach)
        else {
            return;
        };
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f32 + 0.5 - c.0, y as f32 + 0.5 - c.1);
                let d = (dx * dx + dy * dy).sqrt();
                let rr = r * shape.factor(dy.atan2(dx));
                let cov = if soft > 0.0 {
                    let inner = rr * (1.0 - soft);
                    if d <= inner {
                        1.0
                    } else {
                        let t = ((rr - d) / (rr - inner)).clamp(0.0, 1.0);
                        t * t * (3.0 - 2.0 * t)
                    }
                } else {
                    (rr - d + 0.5).clamp(0.0, 1.0)
                };
                let al = &mut self.alpha[y * self.width + x];
                *al = al.max(cov * strength);
            }
        }
    }

    fn bbox(&self, x0: f32, x1: f32, y0: f32, y1: f32) -> Option<(usize, usize, usize, usize)> {
        let cx = |v: f32, n: usize| (v.max(0.0) as usize).min(n);
        let (a, b) = (cx(x0.floor(), self.width), cx(x1.ceil() + 1.0, self.width));
        let (c, d) = (
            cx(y0.floor(), self.height),
            cx(y1.ceil() + 1.0, self.height),
        );
        (a < b && c < d).then_some((a, b, c, d))
    }

    /// work = mix(work, target + noise, alpha).
    fn blend_mix(&mut self, target: [f32; 3], noise: f32) {
        let seed = self.rng.next_u64() as u32;
        let w = self.width;
        for i in 0..w * self.height {
            let a = self.alpha[i];
            if a > 0.0 {
                let n = if noise > 0.0 {
                    noise * grain(i % w, i / w, seed)
                } else {
                    0.0
                };
                for (v, t) in self.work[i * 3..i * 3 + 3].iter_mut().zip(target) {
                    *v = *v * (1.0 - a) + (t + n) * a;
                }
            }
        }
    }

    fn quantize(&self, buf: &[f32]) -> Vec<u8> {
        let q = |v: f32| (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        if self.channels == 3 {
            buf.iter().map(|&v| q(v)).collect()
        } else {
            buf.chunks_exact(3)
                .map(|p| q(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]))
                .collect()
        }
    }
}

/// Linear gradient in a random direction plus a broad smooth bump: the lighting of one part.
/// Smooth at the scale of the part, so it is evaluated on a coarse grid and interpolated.
struct Lighting {
    step: f32,
    grid_w: usize,
    grid: Vec<f32>,
}

impl Lighting {
    fn draw(rng: &mut Rng, width: usize, height: usize) -> Self {
        let s = width.min(height) as f32;
        let phi = rng.range(0.0, 2.0 * PI);
        let dir = (phi.cos(), phi.sin());
        let amp = rng.range(0.0, 0.16);
        let blob_amp = rng.range(0.04, 0.12);
        let blob_scale = s * 0.6;
        let (ox, oy) = (rng.range(0.0, 256.0), rng.range(0.0, 256.0));
        let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
        let seed = rng.next_u64() as u32;
        let exact = |x: f32, y: f32| {
            let g = ((x - cx) * dir.0 + (y - cy) * dir.1) / s;
            let b = value_noise(x / blob_scale + ox, y / blob_scale + oy, seed) - 0.5;
            1.0 + amp * g + blob_amp * b
        };
        let step = (s / 32.0).clamp(1.0, 8.0);
        let grid_w = (width as f32 / step).ceil() as usize + 2;
        let grid_h = (height as f32 / step).ceil() as usize + 2;
        let mut grid = Vec::with_capacity(grid_w * grid_h);
        for gy in 0..grid_h {
            for gx in 0..grid_w {
                grid.push(exact(gx as f32 * step, gy as f32 * step));
            }
        }
        Self { step, grid_w, grid }
    }

    /// Lighting factor at (x, y) in pixel coordinates (within the image).
    #[inline]
    fn at(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x / self.step, y / self.step);
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - ix as f32, fy - iy as f32);
        let o = iy * self.grid_w + ix;
        let g = &self.grid;
        let top = g[o] + (g[o + 1] - g[o]) * tx;
        let bottom = g[o + self.grid_w] + (g[o + self.grid_w + 1] - g[o + self.grid_w]) * tx;
        top + (bottom - top) * ty
    }
}

/// Radius modulation r(θ) = 1 + Σ a_k cos(kθ + φ_k), optionally with angular jags.
struct BlobShape {
    harmonics: [(f32, f32); 4],
    jag: f32,
    jag_seed: u32,
}

impl BlobShape {
    fn draw(rng: &mut Rng, amp: f32, jagged: bool) -> Self {
        let mut harmonics = [(0.0, 0.0); 4];
        for (k, h) in harmonics.iter_mut().enumerate() {
            *h = (
                rng.range(0.0, amp) / (1.0 + k as f32 * 0.5),
                rng.range(0.0, 2.0 * PI),
            );
        }
        Self {
            harmonics,
            jag: if jagged { 0.08 } else { 0.0 },
            jag_seed: rng.next_u64() as u32,
        }
    }

    fn factor(&self, theta: f32) -> f32 {
        let mut f = 1.0;
        for (k, &(a, ph)) in self.harmonics.iter().enumerate() {
            f += a * ((k as f32 + 2.0) * theta + ph).cos();
        }
        if self.jag > 0.0 {
            // 24 angular bins, smoothly interpolated, wrapping at 2π.
            let t = (theta + PI) / (2.0 * PI) * 24.0;
            let i = t.floor();
            let fr = t - i;
            let i = i as i32;
            let a = hash01(i.rem_euclid(24), 0, self.jag_seed);
            let b = hash01((i + 1).rem_euclid(24), 0, self.jag_seed);
            f += self.jag * (2.0 * (a + (b - a) * fr) - 1.0);
        }
        f.max(0.3)
    }

    fn max_factor(&self) -> f32 {
        1.0 + self.harmonics.iter().map(|h| h.0).sum::<f32>() + self.jag
    }
}

// -------------------------------------------------------------------- noise

#[inline]
fn hash(x: i32, y: i32, seed: u32) -> u32 {
    let mut h = (x as u32).wrapping_mul(0x8DA6_B343)
        ^ (y as u32).wrapping_mul(0xD816_3841)
        ^ seed.wrapping_mul(0xCB1A_B31F);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297A_2D39);
    h ^= h >> 15;
    h
}

/// Uniform in [0, 1) from lattice coordinates.
#[inline]
fn hash01(x: i32, y: i32, seed: u32) -> f32 {
    (hash(x, y, seed) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Triangular noise in (-1, 1) per pixel.
#[inline]
fn grain(x: usize, y: usize, seed: u32) -> f32 {
    let h = hash(x as i32, y as i32, seed);
    ((h & 0xFFFF) as f32 + (h >> 16) as f32) * (1.0 / 65_536.0) - 1.0
}

/// `x.floor() as i32` without a libm call (baseline x86-64 has no SSE4.1 `roundss`).
#[inline]
fn ffloor(x: f32) -> i32 {
    let i = x as i32;
    if x < i as f32 {
        i - 1
    } else {
        i
    }
}

/// Smooth value noise in [0, 1].
#[inline]
fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let (ix, iy) = (ffloor(x), ffloor(y));
    let (tx, ty) = (x - ix as f32, y - iy as f32);
    let sx = tx * tx * (3.0 - 2.0 * tx);
    let sy = ty * ty * (3.0 - 2.0 * ty);
    let a = hash01(ix, iy, seed);
    let b = hash01(ix.wrapping_add(1), iy, seed);
    let c = hash01(ix, iy.wrapping_add(1), seed);
    let d = hash01(ix.wrapping_add(1), iy.wrapping_add(1), seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luma(img: &SynthImage, i: usize) -> f32 {
        let c = img.channels;
        img.pixels[i * c..i * c + c]
            .iter()
            .map(|&v| v as f32)
            .sum::<f32>()
            / c as f32
    }

    #[test]
    fn names_parse_and_round_trip() {
        for k in SurfaceKind::ALL {
            assert_eq!(k.name().parse::<SurfaceKind>().unwrap(), k);
        }
        assert_eq!(KINDS.len(), SurfaceKind::ALL.len());
        assert_eq!(
            "brushed-metal".parse::<SurfaceKind>().unwrap(),
            SurfaceKind::BrushedMetal
        );
        assert_eq!(
            "Woven-Fabric".parse::<SurfaceKind>().unwrap(),
            SurfaceKind::WovenFabric
        );
        let e = "wood".parse::<SurfaceKind>().unwrap_err().to_string();
        assert!(
            e.contains("wood") && e.contains("metal") && e.contains("fabric"),
            "{e}"
        );
        for d in DefectKind::ALL {
            assert_eq!(d.name().parse::<DefectKind>().unwrap(), d);
        }
        assert!("dent".parse::<DefectKind>().is_err());
    }

    #[test]
    fn bad_geometry_is_an_error() {
        assert_eq!(
            Generator::try_new(SurfaceKind::BrushedMetal, 32, 32, 2, 0).unwrap_err(),
            SynthError::Channels(2)
        );
        assert!(Generator::try_new(SurfaceKind::BrushedMetal, 4, 32, 1, 0).is_err());
    }

    #[test]
    fn deterministic_for_a_seed() {
        for kind in SurfaceKind::ALL {
            let mut a = Generator::new(kind, 48, 40, 3, 9);
            let mut b = Generator::new(kind, 48, 40, 3, 9);
            for _ in 0..3 {
                assert_eq!(a.sample(0.5), b.sample(0.5));
            }
            assert_eq!(
                a.defective(DefectKind::Crack),
                b.defective(DefectKind::Crack)
            );
            let mut c = Generator::new(kind, 48, 40, 3, 10);
            assert_ne!(
                Generator::new(kind, 48, 40, 3, 9).good().pixels,
                c.good().pixels
            );
        }
    }

    #[test]
    fn masks_empty_for_good_and_set_for_defective() {
        for kind in SurfaceKind::ALL {
            for (size, ch) in [(32, 1), (64, 3), (128, 1)] {
                let mut g = Generator::new(kind, size, size, ch, 1);
                for _ in 0..4 {
                    let img = g.good();
                    assert_eq!(img.pixels.len(), size * size * ch);
                    assert_eq!(img.mask.len(), size * size);
                    assert_eq!(img.defect_area(), 0);
                    assert!(img.defect.is_none());
                }
                for d in DefectKind::ALL {
                    for _ in 0..5 {
                        let img = g.defective(d);
                        assert_eq!(img.defect, Some(d));
                        let area = img.defect_area();
                        // visible: several pixels, but not the whole part
                        assert!(area >= 5, "{kind} {d} at {size}: mask area {area}");
                        assert!(
                            area < size * size / 4,
                            "{kind} {d} at {size}: mask area {area}"
                        );
                        assert!(img.mask.iter().all(|&m| m == 0 || m == 255));
                    }
                }
            }
        }
    }

    /// Defect pixels fall outside the good texture's statistics, and the mask is exactly where
    /// the image changed.
    #[test]
    fn defect_pixels_differ_from_good_texture() {
        for kind in SurfaceKind::ALL {
            for size in [32, 64] {
                for d in DefectKind::ALL {
                    for seed in 0..4 {
                        let mut g = Generator::new(kind, size, size, 1, seed);
                        let mut twin = g.clone();
                        let bad = g.defective(d);
                        let good = twin.good(); // same random stream → the same good part
                        let n = size * size;
                        let (mut inside, mut k_in) = (0.0, 0);
                        for i in 0..n {
                            let diff = (luma(&bad, i) - luma(&good, i)).abs();
                            if bad.mask[i] != 0 {
                                inside += diff;
                                k_in += 1;
                            } else {
                                assert!(
                                    diff <= MASK_THRESHOLD as f32,
                                    "{kind} {d}: unmasked change {diff}"
                                );
                            }
                        }
                        let mean_change = inside / k_in as f32;
                        assert!(
                            mean_change > 30.0,
                            "{kind} {d} {size}: mean change {mean_change}"
                        );
                        // The masked region's mean moves by more than the good texture's own
                        // spread (every defect darkens or brightens consistently).
                        let mean: f32 = (0..n).map(|i| luma(&good, i)).sum::<f32>() / n as f32;
                        let sd = ((0..n).map(|i| (luma(&good, i) - mean).powi(2)).sum::<f32>()
                            / n as f32)
                            .sqrt();
                        let shift: f32 = (0..n)
                            .filter(|&i| bad.mask[i] != 0)
                            .map(|i| luma(&bad, i) - luma(&good, i))
                            .sum::<f32>()
                            / k_in as f32;
                        let dev = shift.abs();
                        assert!(
                            dev > sd,
                            "{kind} {d} {size}: defect deviation {dev} vs texture sd {sd}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn good_parts_vary_but_stay_alike() {
        for kind in SurfaceKind::ALL {
            let mut g = Generator::new(kind, 64, 64, 1, 3);
            let means: Vec<f32> = (0..20)
                .map(|_| {
                    let img = g.good();
                    img.pixels.iter().map(|&v| v as f32).sum::<f32>() / img.pixels.len() as f32
                })
                .collect();
            let lo = means.iter().cloned().fold(f32::MAX, f32::min);
            let hi = means.iter().cloned().fold(f32::MIN, f32::max);
            assert!(hi - lo > 0.3, "{kind}: no variation between parts");
            assert!(hi - lo < 40.0, "{kind}: parts too different ({lo}..{hi})");
        }
    }

    #[test]
    fn sample_respects_rate_extremes() {
        let mut g = Generator::new(SurfaceKind::WovenFabric, 32, 32, 3, 5);
        assert!((0..10).all(|_| g.sample(0.0).defect.is_none()));
        assert!((0..10).all(|_| g.sample(1.0).defect.is_some()));
    }
}
