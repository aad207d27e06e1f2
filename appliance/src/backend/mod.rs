//! Scoring engines. Every backend takes a batch of preprocessed frames in the bundle's input
//! layout (`[N, C, H, W]` f32 in the manifest's range) and fills one score and one anomaly map
//! (`[N, 1, H, W]`) per frame, into buffers the caller owns.

use std::fmt;
use std::path::Path;

use vigil_shared::manifest::{InputSpec, Manifest};

mod bundle;
mod patch;
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

/// Checks a `score` call's batch and buffer sizes against the frame geometry `i` (the same
/// messages for every engine).
pub(crate) fn check_call(
    path: &Path,
    max_batch: usize,
    i: &InputSpec,
    batch: usize,
    input: &[f32],
    scores: &[f32],
    maps: &[f32],
) -> Result<(), BackendError> {
    let (c, h, w) = (i.channels, i.height, i.width);
    let (frame, plane) = (c * h * w, h * w);
    if batch == 0 || batch > max_batch {
        return Err(BackendError::Shape(format!(
            "batch {batch} is out of range 1..={max_batch} for {}",
            path.display()
        )));
    }
    if input.len() != batch * frame {
        return Err(BackendError::Shape(format!(
            "{}: input holds {} values, expected {batch}×{c}×{h}×{w} = {} for shape [{batch},{c},{h},{w}]",
            path.display(),
            input.len(),
            batch * frame
        )));
    }
    if scores.len() != batch || maps.len() != batch * plane {
        return Err(BackendError::Shape(format!(
            "{}: output buffers hold {} scores and {} map values, expected {batch} and {}",
            path.display(),
            scores.len(),
            maps.len(),
            batch * plane
        )));
    }
    Ok(())
}

pub(crate) fn load_err(path: &Path, msg: impl fmt::Display) -> BackendError {
    BackendError::Load(format!("{}: {msg}", path.display()))
}
