//! The scoring loop and what it shares: [`Pipeline`] (the fixed-budget loop, `scorer`),
//! [`Record`] and its recycled channel to the publisher (`records`), and the latency
//! histograms and counters (`telemetry`).
//!
//! Everything the per-frame path touches is allocated in [`Pipeline::new`] (input tensor,
//! score and map buffers, crop buffer, preprocessor, histograms, a pool of result records):
//! a test with a counting allocator (`scorer.rs`, `alloc_tests`) requires zero allocations
//! across scored frames outside the backend call. Results go to the publisher through a
//! bounded channel of recycled [`Record`]s; when the publisher is behind, the record is
//! dropped and counted instead of stalling the scorer.

mod records;
mod scorer;
mod telemetry;
mod view;

pub use records::{Lease, Record, Results, RESULT_QUEUE};
pub(crate) use scorer::map_scale;
pub use scorer::{Pipeline, PipelineOptions, WARMUP_RUNS};
pub use telemetry::{Hists, Stage, Telemetry, STAGES};
pub use view::{View, ViewTap, HISTORY};

use vigil_shared::preprocess::PreprocessError;

use crate::backend::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("scoring failed: {0}")]
    Backend(#[from] BackendError),
    #[error("warm-up: {0}")]
    Warmup(String),
    #[error("roi {x},{y},{w},{h} lies outside the {width}x{height} source frame")]
    Roi {
        x: usize,
        y: usize,
        w: usize,
        h: usize,
        width: usize,
        height: usize,
    },
    #[error("preprocessing: {0}")]
    Preprocess(#[from] PreprocessError),
}

#[cfg(test)]
pub(crate) mod testing {
    //! A deterministic backend for unit tests of the loop (the real one is tract).
    use std::time::{Duration, Instant};

    use vigil_shared::manifest::Manifest;

    use crate::backend::{Backend, BackendError};

    /// Score = mean of the input; map = the first channel. `delay` simulates inference time.
    pub struct MeanBackend {
        pub manifest: Manifest,
        pub delay: Duration,
    }

    impl Backend for MeanBackend {
        fn manifest(&self) -> &Manifest {
            &self.manifest
        }
        fn max_batch(&self) -> usize {
            1
        }
        fn score(
            &mut self,
            input: &[f32],
            batch: usize,
            scores: &mut [f32],
            maps: &mut [f32],
        ) -> Result<(), BackendError> {
            assert_eq!(batch, 1);
            let t = Instant::now();
            scores[0] = input.iter().sum::<f32>() / input.len() as f32;
            maps.copy_from_slice(&input[..maps.len()]);
            while t.elapsed() < self.delay {
                std::hint::spin_loop();
            }
            Ok(())
        }
    }

    pub fn manifest(c: usize, s: usize) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1,
            "detector": "test",
            "input": {"channels": c, "height": s, "width": s, "range": [-1.0, 1.0]},
            "score": {"name": "mean", "params": {}},
            "normalisation": {"threshold": 0.0, "min": -1.0, "max": 1.0, "quantile": 0.99},
            "training": {"data": "test", "seed": 0, "epochs": 0, "image_size": s, "latent": 0,
                         "batch": 0, "git_commit": null, "created_at": "2026-01-01T00:00:00Z"},
            "files": []
        }))
        .unwrap()
    }
}
