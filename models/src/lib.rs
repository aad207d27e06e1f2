//! The GAN anomaly detectors in Candle, their scores and anomaly maps.
//!
//! Every detector implements [`Detector`]: a training step, and a scoring pass that gives one
//! or more image scores and a smoothed per-pixel anomaly map. Weights live in a candle
//! `VarMap` named with `VarBuilder::pp`, saved as the bundle's `weights.safetensors`.
//!
//! One file per detector, built from three shared modules: [`nn`] (encoders, decoders, critics,
//! spectral norm), [`loss`] (losses, per-sample distances, the WGAN-GP penalty) and
//! [`train_util`] (seeded init and noise, Adam over a VarMap prefix and its checkpoint state).

pub mod alad;
pub mod anogan;
pub mod conv;
pub mod cpu;
pub mod detector;
pub mod egbad;
pub mod export;
pub mod fanogan;
pub mod fused;
pub mod gaae;
pub mod ganomaly;
pub mod loss;
pub mod maps;
pub mod nn;
pub mod optim;
pub mod seg;
pub mod smoothing;
pub mod synth;
#[cfg(test)]
pub(crate) mod testutil;
pub mod train_util;
pub mod wild;

pub use detector::{build, Detector, DetectorKind, Inference, ModelConfig};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("unknown detector '{0}' (expected one of: anogan, egbad, ganomaly, alad, fanogan, gaae, wild, seg)")]
    UnknownDetector(String),
    #[error("unknown score '{0}' for this detector")]
    UnknownScore(String),
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}
