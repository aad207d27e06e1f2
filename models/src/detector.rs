//! What every detector offers the training, evaluation and export code.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::alad::Alad;
use crate::anogan::AnoGan;
use crate::egbad::Egbad;
use crate::fanogan::FAnoGan;
use crate::gaae::Gaae;
use crate::seg::{Seg, SegWeights};
use crate::wild::Wild;
use crate::{ganomaly::Ganomaly, ModelError};

/// The detector family (docs/design.md). Names are what `--detector` and the bundle manifest use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectorKind {
    AnoGan,
    Egbad,
    Ganomaly,
    Alad,
    FAnoGan,
    Gaae,
    Wild,
    Seg,
}

impl DetectorKind {
    pub const ALL: [DetectorKind; 8] = [
        Self::AnoGan,
        Self::Egbad,
        Self::Ganomaly,
        Self::Alad,
        Self::FAnoGan,
        Self::Gaae,
        Self::Wild,
        Self::Seg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::AnoGan => "anogan",
            Self::Egbad => "egbad",
            Self::Ganomaly => "ganomaly",
            Self::Alad => "alad",
            Self::FAnoGan => "fanogan",
            Self::Gaae => "gaae",
            Self::Wild => "wild",
            Self::Seg => "seg",
        }
    }

    /// Scores the detector can produce; the first is its default.
    pub fn scores(self) -> &'static [&'static str] {
        match self {
            Self::AnoGan => AnoGan::SCORES,
            Self::Egbad => Egbad::SCORES,
            Self::Ganomaly => Ganomaly::SCORES,
            Self::Alad => Alad::SCORES,
            Self::FAnoGan => FAnoGan::SCORES,
            Self::Gaae => Gaae::SCORES,
            Self::Wild => Wild::SCORES,
            Self::Seg => Seg::SCORES,
        }
    }

    /// The detector's own scores, then the map scores every detector has (`maps::SCORES`):
    /// every name `--score` accepts.
    pub fn all_scores(self) -> Vec<&'static str> {
        self.scores()
            .iter()
            .chain(crate::maps::SCORES)
            .copied()
            .collect()
    }

    /// Images per step when `--batch` is not given. EGBAD's BiGAN learns its encoder from the
    /// adversarial game alone, which needs more steps than 2 epochs of 64 give: on Fashion-MNIST
    /// class 1 (32², 2 epochs) batch 16 reaches image AUROC 0.910 against 0.376 with 64.
    pub fn default_batch(self) -> usize {
        match self {
            Self::Egbad => 16,
            // DRAEM trains with 8; 16 keeps a 64² patch step short on two cores.
            Self::Seg => 16,
            _ => 64,
        }
    }

    /// Scoring runs an iterative latent search (gradients at test time): slow, and not a
    /// feed-forward graph, so it cannot be exported (AnoGAN).
    pub fn needs_search(self) -> bool {
        matches!(self, Self::AnoGan)
    }

    /// Whether `Inference::map` is the smoothed L1 residual of the reconstruction (every seed
    /// detector) or a map of the detector's own (`seg`: its segmentation probability).
    pub fn map_is_residual(self) -> bool {
        !matches!(self, Self::Seg)
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DetectorKind {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ModelError::UnknownDetector(s.to_string()))
    }
}

/// Shape and hyper-parameters shared by every detector.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub size: usize,
    pub channels: usize,
    pub latent: usize,
    /// Base channel width of the DCGAN pyramids (64 in the papers).
    pub width: usize,
    /// Gaussian σ (pixels) for smoothing the anomaly map.
    pub sigma: f32,
    pub seed: u64,
    /// How the decoders upsample (transposed convolutions, or upsample + conv).
    pub decoder: vigil_shared::manifest::Decoder,
}

/// Everything one scoring pass gives: the reconstruction, one `[N]` tensor per score the detector
/// offers (in `DetectorKind::scores` order), and the smoothed anomaly map `[N, 1, H, W]`.
pub struct Inference {
    pub reconstruction: Tensor,
    pub scores: Vec<(&'static str, Tensor)>,
    pub map: Tensor,
}

impl Inference {
    pub fn score(&self, name: &str) -> Result<&Tensor, ModelError> {
        self.scores
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| ModelError::UnknownScore(name.to_string()))
    }
}

/// Optimiser state for checkpoints: tensors plus one step counter per optimiser.
pub type OptimizerState = (HashMap<String, Tensor>, Vec<u64>);

pub trait Detector {
    fn kind(&self) -> DetectorKind;
    fn config(&self) -> &ModelConfig;
    /// All weights (and batch-norm statistics): what `weights.safetensors` holds.
    fn varmap(&self) -> &VarMap;
    /// One optimisation step on a batch `[N, C, H, W]` in [-1, 1]; returns named losses.
    fn train_step(&mut self, x: &Tensor) -> Result<Vec<(&'static str, f32)>, ModelError>;
    /// Scoring in evaluation mode (batch-norm running statistics, no gradients kept).
    fn infer(&self, x: &Tensor) -> Result<Inference, ModelError>;
    fn optimizer_state(&self) -> Result<OptimizerState, ModelError>;
    fn load_optimizer_state(&mut self, state: &OptimizerState) -> Result<(), ModelError>;
    /// Called by the training loop before epoch `epoch` (0-based) of `total`: detectors that
    /// train in phases (f-AnoGAN) switch here. Default: nothing.
    fn begin_epoch(&mut self, _epoch: usize, _total: usize) {}
}

/// A freshly initialised detector of the given kind.
pub fn build(
    kind: DetectorKind,
    cfg: ModelConfig,
    device: &Device,
) -> Result<Box<dyn Detector>, ModelError> {
    match kind {
        DetectorKind::Ganomaly => Ok(Box::new(Ganomaly::new(cfg, Default::default(), device)?)),
        DetectorKind::AnoGan => Ok(Box::new(AnoGan::new(cfg, device)?)),
        DetectorKind::Egbad => Ok(Box::new(Egbad::new(cfg, device)?)),
        DetectorKind::Alad => Ok(Box::new(Alad::new(cfg, device)?)),
        DetectorKind::FAnoGan => Ok(Box::new(FAnoGan::new(cfg, device)?)),
        DetectorKind::Gaae => Ok(Box::new(Gaae::new(cfg, device)?)),
        DetectorKind::Wild => Ok(Box::new(Wild::new(cfg, device)?)),
        DetectorKind::Seg => Ok(Box::new(Seg::new(cfg, SegWeights::from_env()?, device)?)),
    }
}
