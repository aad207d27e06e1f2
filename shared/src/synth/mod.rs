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
//!
//! The part types and [`Generator`] are here; [`texture`] renders the good surfaces, [`defect`]
//! draws the defects onto them, [`noise`] holds the lattice hashes and value noise both use.

use crate::rng::Rng;
use std::fmt;
use std::str::FromStr;

mod defect;
mod noise;
mod texture;

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

    /// The shorter side: what texture and defect sizes scale with.
    fn scale(&self) -> f32 {
        self.width.min(self.height) as f32
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
