//! Patch mode: a whole image scored as overlapping square tiles.
//!
//! Every detector has a fixed-size latent bottleneck, so a model trained on `N`² crops of
//! full-resolution images scores a larger image as a grid of `N`² tiles, `stride` apart, with
//! the last row and column clamped to the border (so every pixel is covered even when
//! `H − N` is not a multiple of the stride). The per-tile anomaly maps are stitched back into one
//! map at input resolution, overlaps averaged; the image score is the largest tile score.
//!
//! The host (`vigil eval`, calibration, export) and the appliance (`vigild`, once per frame)
//! share this module, so tiles are cut in the same order and stitched the same way on both.
//! [`Tiling::cut`] and [`Tiling::stitch`] write into caller-owned buffers and never allocate.

use serde::{Deserialize, Serialize};

/// The geometry of patch mode as the bundle manifest records it (`patch {size, stride}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSpec {
    /// Side of the square tile the model takes, in pixels of the (preprocessed) input.
    pub size: usize,
    /// Step between tile origins when scoring a whole image.
    pub stride: usize,
}

impl PatchSpec {
    /// `size` with the default stride `size / 2` (each interior pixel seen by four tiles).
    pub fn with_default_stride(size: usize) -> Self {
        Self {
            size,
            stride: (size / 2).max(1),
        }
    }

    /// Checks the spec against an input of `height`×`width`; the error names the field
    /// (`patch.size` or `patch.stride`) and says what is wrong.
    pub fn check(&self, height: usize, width: usize) -> Result<(), (&'static str, String)> {
        if self.size == 0 {
            return Err(("patch.size", "must be > 0, found 0".into()));
        }
        if self.size > height || self.size > width {
            return Err((
                "patch.size",
                format!("{} does not fit in the {height}×{width} input", self.size),
            ));
        }
        // A stride above the size would leave pixels that no tile covers.
        if self.stride == 0 || self.stride > self.size {
            return Err((
                "patch.stride",
                format!("must be in 1..={}, found {}", self.size, self.stride),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TileError {
    #[error("patch geometry: {field}: {msg}")]
    Geometry { field: &'static str, msg: String },
    #[error("{what}: expected {expected} values, found {found}")]
    Buffer {
        what: &'static str,
        expected: usize,
        found: usize,
    },
}

/// The tile grid of one input geometry, with the per-pixel overlap weights precomputed.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiling {
    channels: usize,
    height: usize,
    width: usize,
    spec: PatchSpec,
    /// Tile origins along y and x; tiles are ordered row-major (y outer, x inner).
    ys: Vec<usize>,
    xs: Vec<usize>,
    /// 1 / (number of tiles covering the pixel), `H·W`.
    inv_cover: Vec<f32>,
}

/// Origins along one axis: `0, stride, 2·stride, …` while the tile fits, then one clamped to
/// the border if the last one stops short of it.
fn origins(extent: usize, size: usize, stride: usize) -> Vec<usize> {
    let last = extent - size;
    let mut v: Vec<usize> = (0..=last).step_by(stride).collect();
    if v.last() != Some(&last) {
        v.push(last);
    }
    v
}

impl Tiling {
    /// The grid for `channels`×`height`×`width` inputs cut into `spec.size`² tiles.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        spec: PatchSpec,
    ) -> Result<Self, TileError> {
        if channels == 0 {
            return Err(TileError::Geometry {
                field: "channels",
                msg: "must be > 0, found 0".into(),
            });
        }
        spec.check(height, width)
            .map_err(|(field, msg)| TileError::Geometry { field, msg })?;
        let ys = origins(height, spec.size, spec.stride);
        let xs = origins(width, spec.size, spec.stride);
        let mut cover = vec![0u32; height * width];
        for &y in &ys {
            for &x in &xs {
                for row in &mut cover[y * width..(y + spec.size) * width].chunks_exact_mut(width) {
                    for c in &mut row[x..x + spec.size] {
                        *c += 1;
                    }
                }
            }
        }
        let inv_cover = cover.iter().map(|&c| 1.0 / c as f32).collect();
        Ok(Self {
            channels,
            height,
            width,
            spec,
            ys,
            xs,
            inv_cover,
        })
    }

    pub fn spec(&self) -> PatchSpec {
        self.spec
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of tiles `T` per image.
    pub fn count(&self) -> usize {
        self.ys.len() * self.xs.len()
    }

    /// `(y, x)` of tile `t`'s top-left corner (row-major order).
    pub fn origin(&self, t: usize) -> (usize, usize) {
        (self.ys[t / self.xs.len()], self.xs[t % self.xs.len()])
    }

    /// Values of one input image, `C·H·W`.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Values of one tile, `C·N·N`.
    pub fn tile_len(&self) -> usize {
        self.channels * self.spec.size * self.spec.size
    }

    /// Values of the stitched map of one image, `H·W`.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Cuts one CHW `image` into `tiles`, `[T, C, N, N]` in [`Tiling::origin`] order.
    pub fn cut(&self, image: &[f32], tiles: &mut [f32]) -> Result<(), TileError> {
        check_len("image", self.image_len(), image.len())?;
        check_len("tiles", self.count() * self.tile_len(), tiles.len())?;
        let (n, h, w) = (self.spec.size, self.height, self.width);
        for (t, tile) in tiles.chunks_exact_mut(self.tile_len()).enumerate() {
            let (y, x) = self.origin(t);
            for (c, dst) in tile.chunks_exact_mut(n * n).enumerate() {
                let src = &image[c * h * w..(c + 1) * h * w];
                for (r, row) in dst.chunks_exact_mut(n).enumerate() {
                    let start = (y + r) * w + x;
                    row.copy_from_slice(&src[start..start + n]);
                }
            }
        }
        Ok(())
    }

    /// Stitches `tiles` (`[T, channels, N, N]`, e.g. anomaly maps with `channels` 1 or
    /// reconstructions with the input's channels) into `out` (`[channels, H, W]`), each pixel
    /// the mean of the tiles that cover it.
    pub fn stitch(&self, tiles: &[f32], channels: usize, out: &mut [f32]) -> Result<(), TileError> {
        let (n, w, plane) = (self.spec.size, self.width, self.plane());
        check_len("tiles", self.count() * channels * n * n, tiles.len())?;
        check_len("stitched output", channels * plane, out.len())?;
        out.fill(0.0);
        for (t, tile) in tiles.chunks_exact(channels * n * n).enumerate() {
            let (y, x) = self.origin(t);
            for (c, src) in tile.chunks_exact(n * n).enumerate() {
                let dst = &mut out[c * plane..(c + 1) * plane];
                for (r, row) in src.chunks_exact(n).enumerate() {
                    let start = (y + r) * w + x;
                    for (d, s) in dst[start..start + n].iter_mut().zip(row) {
                        *d += s;
                    }
                }
            }
        }
        for dst in out.chunks_exact_mut(plane) {
            for (d, k) in dst.iter_mut().zip(&self.inv_cover) {
                *d *= k;
            }
        }
        Ok(())
    }
}

fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), TileError> {
    if expected == found {
        Ok(())
    } else {
        Err(TileError::Buffer {
            what,
            expected,
            found,
        })
    }
}

/// The image score of patch mode for a per-tile score: the largest tile score (the most
/// anomalous tile decides, so a small defect is not averaged away by good tiles). NaN in any
/// tile gives NaN, which the normalisation turns into an alarm rather than hiding it.
///
/// Scores computed from the anomaly map itself (a reduction of the map such as its maximum or
/// top-k mean) are not per-tile scores: reduce the stitched map instead.
pub fn max_over_tiles(scores: &[f32]) -> f32 {
    let mut best = f32::NEG_INFINITY;
    for &s in scores {
        if s.is_nan() {
            return f32::NAN;
        }
        best = best.max(s);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: usize, stride: usize) -> PatchSpec {
        PatchSpec { size, stride }
    }

    #[test]
    fn origins_cover_the_border_when_the_stride_does_not_divide() {
        assert_eq!(origins(128, 32, 16), [0, 16, 32, 48, 64, 80, 96]);
        assert_eq!(origins(32, 32, 16), [0]);
        // 50 − 32 = 18 is not a multiple of 16: the last tile is clamped to start at 18.
        assert_eq!(origins(50, 32, 16), [0, 16, 18]);
        assert_eq!(origins(40, 32, 32), [0, 8]);
    }

    #[test]
    fn geometry_errors_name_the_field() {
        let e = Tiling::new(1, 16, 16, spec(32, 16)).unwrap_err();
        assert!(
            matches!(
                e,
                TileError::Geometry {
                    field: "patch.size",
                    ..
                }
            ),
            "{e}"
        );
        let e = Tiling::new(1, 64, 64, spec(32, 33)).unwrap_err();
        assert!(
            matches!(
                e,
                TileError::Geometry {
                    field: "patch.stride",
                    ..
                }
            ),
            "{e}"
        );
        let e = Tiling::new(1, 64, 64, spec(32, 0)).unwrap_err();
        assert!(
            matches!(
                e,
                TileError::Geometry {
                    field: "patch.stride",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(PatchSpec::with_default_stride(32), spec(32, 16));
        assert_eq!(PatchSpec::with_default_stride(1), spec(1, 1));
    }

    #[test]
    fn stitching_constant_maps_gives_the_constant() {
        for (h, w, s) in [(128, 128, 16), (50, 70, 16), (40, 33, 7), (32, 32, 16)] {
            let t = Tiling::new(1, h, w, spec(32, s)).unwrap();
            let tiles = vec![0.37f32; t.count() * 32 * 32];
            let mut out = vec![f32::NAN; h * w];
            t.stitch(&tiles, 1, &mut out).unwrap();
            assert!(
                out.iter().all(|v| (v - 0.37).abs() < 1e-6),
                "{h}×{w} stride {s}"
            );
        }
    }

    #[test]
    fn cut_then_stitch_returns_the_image_and_a_tile_holds_its_own_pixels() {
        // A ramp image, 3 channels, odd size: every pixel's value is unique.
        let (c, h, w) = (3, 50, 45);
        let image: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let t = Tiling::new(c, h, w, spec(16, 8)).unwrap();
        let mut tiles = vec![0f32; t.count() * t.tile_len()];
        t.cut(&image, &mut tiles).unwrap();
        for k in 0..t.count() {
            let (y, x) = t.origin(k);
            assert!(y + 16 <= h && x + 16 <= w);
            let tile = &tiles[k * t.tile_len()..(k + 1) * t.tile_len()];
            for ch in 0..c {
                for r in [0, 7, 15] {
                    for col in [0, 9, 15] {
                        assert_eq!(
                            tile[ch * 256 + r * 16 + col],
                            image[ch * h * w + (y + r) * w + x + col]
                        );
                    }
                }
            }
        }
        // Overlaps hold the same values, so their mean is the image itself.
        let mut back = vec![0f32; c * h * w];
        t.stitch(&tiles, c, &mut back).unwrap();
        assert!(image.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-3));
    }

    #[test]
    fn a_lit_tile_lands_where_it_came_from_and_overlaps_are_averaged() {
        let t = Tiling::new(1, 64, 64, spec(32, 16)).unwrap();
        assert_eq!(t.count(), 9);
        // Only the centre tile (origin 16, 16) is 1.
        let mut tiles = vec![0f32; 9 * 32 * 32];
        assert_eq!(t.origin(4), (16, 16));
        tiles[4 * 1024..5 * 1024].fill(1.0);
        let mut out = vec![0f32; 64 * 64];
        t.stitch(&tiles, 1, &mut out).unwrap();
        let at = |y: usize, x: usize| out[y * 64 + x];
        // Outside the centre tile: nothing.
        assert_eq!(at(0, 0), 0.0);
        assert_eq!(at(15, 40), 0.0);
        assert_eq!(at(48, 48), 0.0);
        // The image centre is covered by 4 tiles (stride 16), one of them lit.
        assert!((at(32, 32) - 0.25).abs() < 1e-6);
        // (20, 20) lies in tiles (0,0), (0,16), (16,0), (16,16): 1 lit of 4.
        assert!((at(20, 20) - 0.25).abs() < 1e-6);
        // (16, 40) lies in tiles with y0 ∈ {0, 16} and x0 ∈ {16, 32}: 1 lit of 4.
        assert!((at(16, 40) - 0.25).abs() < 1e-6);
    }

    #[test]
    fn buffers_of_the_wrong_size_are_refused() {
        let t = Tiling::new(1, 64, 64, spec(32, 32)).unwrap();
        let mut tiles = vec![0f32; 4 * 1024];
        let e = t.cut(&[0.0; 10], &mut tiles).unwrap_err();
        assert_eq!(
            e,
            TileError::Buffer {
                what: "image",
                expected: 4096,
                found: 10
            }
        );
        let mut out = vec![0f32; 100];
        assert!(t.stitch(&tiles, 1, &mut out).is_err());
        assert!(t.stitch(&tiles[..1024], 1, &mut vec![0f32; 4096]).is_err());
    }

    #[test]
    fn max_over_tiles_takes_the_largest_and_keeps_nan() {
        assert_eq!(max_over_tiles(&[0.1, -3.0, 0.7, 0.2]), 0.7);
        assert_eq!(max_over_tiles(&[-2.0, -1.0]), -1.0);
        assert!(max_over_tiles(&[0.1, f32::NAN, 9.0]).is_nan());
    }
}
