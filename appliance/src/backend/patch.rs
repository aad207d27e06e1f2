//! Patch mode, the same for every engine: a patch-mode bundle (`patch` in the manifest) has a
//! graph that takes `N`² tiles, while [`super::Backend::score`] still takes whole frames at the
//! manifest's input size. Each frame is cut into its `T` tiles (`vigil_shared::tiles`), the
//! engine runs them as one batch of `T`, the tile maps are stitched into the frame's map and
//! the frame's score is the largest tile score, all in buffers allocated at load.

use vigil_shared::tiles::{max_over_tiles, TileError, Tiling};

use super::BackendError;

/// The tiling of a patch bundle and its per-frame buffers (`T` tiles, their scores and maps).
pub(crate) struct Tiles {
    tiling: Tiling,
    input: Vec<f32>,
    scores: Vec<f32>,
    maps: Vec<f32>,
}

impl Tiles {
    pub fn new(tiling: Tiling) -> Self {
        let (count, n) = (tiling.count(), tiling.spec().size);
        Self {
            input: vec![0.0; count * tiling.tile_len()],
            scores: vec![0.0; count],
            maps: vec![0.0; count * n * n],
            tiling,
        }
    }

    /// `T`, the batch the engine runs per frame.
    pub fn count(&self) -> usize {
        self.tiling.count()
    }

    /// Scores `batch` whole frames: `run(tiles, tile_scores, tile_maps)` scores one frame's
    /// `T` tiles. No allocation.
    pub fn score(
        &mut self,
        input: &[f32],
        batch: usize,
        scores: &mut [f32],
        maps: &mut [f32],
        mut run: impl FnMut(&[f32], &mut [f32], &mut [f32]) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let (frame, plane) = (self.tiling.image_len(), self.tiling.plane());
        let shape = |e: TileError| BackendError::Shape(e.to_string());
        for i in 0..batch {
            self.tiling
                .cut(&input[i * frame..(i + 1) * frame], &mut self.input)
                .map_err(shape)?;
            run(&self.input, &mut self.scores, &mut self.maps)?;
            let map = &mut maps[i * plane..(i + 1) * plane];
            self.tiling.stitch(&self.maps, 1, map).map_err(shape)?;
            // Per-tile scores; a score that reduces the map itself would reduce `map` here.
            scores[i] = max_over_tiles(&self.scores);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_shared::tiles::PatchSpec;

    /// With an engine whose map is its input tile and whose score is the tile's sum, the
    /// stitched map is the frame itself (overlaps average equal values) and the frame's score
    /// is the largest tile sum, for every frame of a batch.
    #[test]
    fn frames_are_cut_run_stitched_and_scored_by_the_largest_tile() {
        let tiling = Tiling::new(1, 12, 20, PatchSpec { size: 8, stride: 4 }).unwrap();
        let (frame, tile) = (tiling.image_len(), tiling.tile_len());
        let mut tiles = Tiles::new(tiling);
        let count = tiles.count();
        let input: Vec<f32> = (0..2 * frame).map(|i| (i % 37) as f32 - 9.0).collect();
        let (mut scores, mut maps) = (vec![0f32; 2], vec![0f32; 2 * frame]);
        let mut runs = 0;
        tiles
            .score(&input, 2, &mut scores, &mut maps, |x, s, m| {
                runs += 1;
                assert_eq!((x.len(), s.len()), (count * tile, count));
                m.copy_from_slice(x);
                for (t, s) in s.iter_mut().enumerate() {
                    *s = x[t * tile..(t + 1) * tile].iter().sum();
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(runs, 2);
        for (a, b) in maps.iter().zip(&input) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        for (i, s) in scores.iter().enumerate() {
            let mut cut = vec![0f32; count * tile];
            tiles
                .tiling
                .cut(&input[i * frame..(i + 1) * frame], &mut cut)
                .unwrap();
            let best = cut
                .chunks_exact(tile)
                .map(|t| t.iter().sum::<f32>())
                .fold(f32::MIN, f32::max);
            assert_eq!(*s, best);
        }
    }
}
