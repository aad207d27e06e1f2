//! Scoring engines. Every backend takes a batch of preprocessed frames in the bundle's input
//! layout (`[N, C, H, W]` f32 in the manifest's range) and fills one score and one anomaly map
//! (`[N, 1, H, W]`) per frame, into buffers the caller owns.

use vigil_shared::manifest::Manifest;

pub mod tract;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Load(String),
    #[error("{0}")]
    Run(String),
    /// A shape that disagrees with the bundle: the graph's input or outputs against the
    /// manifest at load, or the caller's buffers against the batch at scoring. Kept apart from
    /// `Load`/`Run` so callers can tell a wrong frame geometry from a broken model.
    #[error("{0}")]
    Shape(String),
}

pub trait Backend: Send {
    /// The manifest of the loaded bundle (input shape, score, normalisation).
    fn manifest(&self) -> &Manifest;
    /// Largest batch `score` accepts.
    fn max_batch(&self) -> usize;
    /// Score `batch` frames: `input.len() == batch·C·H·W`, `scores.len() == batch`,
    /// `maps.len() == batch·H·W`.
    fn score(
        &mut self,
        input: &[f32],
        batch: usize,
        scores: &mut [f32],
        maps: &mut [f32],
    ) -> Result<(), BackendError>;
}
