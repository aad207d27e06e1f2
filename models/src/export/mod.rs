//! ONNX export: each feed-forward detector's whole scoring path (networks, score head,
//! smoothed anomaly map) as one graph with the interface of docs/design.md —
//! input `image` f32 `[N, C, H, W]`, outputs `score` f32 `[N]` and `anomaly_map` f32
//! `[N, 1, H, W]`, opset 17, symbolic batch `N`, batch norm folded into the convolutions.
//!
//! Each detector describes its graph in its own module here from the shared pieces of
//! [`graph`] (conv, BN folding, activations, smoothing, reductions) and [`layers`] (the DCGAN
//! pyramids), reading weights by the names `weights.safetensors` uses. [`quant`] derives the
//! int8 graph from the f32 one.

pub mod alad;
pub mod egbad;
pub mod fanogan;
pub mod gaae;
pub mod ganomaly;
pub mod graph;
pub mod layers;
pub mod maps;
pub mod quant;
pub mod run;
pub mod seg;
pub mod wild;

use std::collections::HashMap;

use candle_nn::VarMap;
use prost::Message;
use tract_onnx::pb;

use crate::{Detector, DetectorKind, ModelConfig};
use graph::{Dim, GraphBuilder};

pub const INPUT: &str = "image";
pub const SCORE: &str = "score";
pub const MAP: &str = "anomaly_map";
/// Name of the symbolic batch dimension.
pub const BATCH: &str = "N";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{detector} has no feed-forward scorer to export: {reason}")]
    NotExportable {
        detector: &'static str,
        reason: &'static str,
    },
    #[error("unknown score '{0}' for this detector")]
    UnknownScore(String),
    #[error("weights: tensor `{0}` is missing")]
    MissingWeight(String),
    #[error("weights: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    WeightShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("cannot export: {0}")]
    Unsupported(String),
    #[error("quantisation: {0}")]
    Quant(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A detector's weights by variable name, copied out of its `VarMap`.
pub struct Weights {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights {
    pub fn from_varmap(varmap: &VarMap) -> Result<Self, ExportError> {
        let data = varmap.data().lock().expect("varmap lock poisoned");
        let mut tensors = HashMap::with_capacity(data.len());
        for (name, var) in data.iter() {
            let t = var.as_tensor();
            let v = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            tensors.insert(name.clone(), (t.dims().to_vec(), v));
        }
        Ok(Self { tensors })
    }

    /// The values of `name`, checked against the shape the graph expects.
    pub fn get(&self, name: &str, dims: &[usize]) -> Result<Vec<f32>, ExportError> {
        let (found, v) = self
            .tensors
            .get(name)
            .ok_or_else(|| ExportError::MissingWeight(name.to_string()))?;
        if found != dims {
            return Err(ExportError::WeightShape {
                name: name.to_string(),
                expected: dims.to_vec(),
                found: found.clone(),
            });
        }
        Ok(v.clone())
    }
}

/// What every exportable detector scores from, built once before its score head: the image,
/// the E → G reconstruction and its residual (graph value names).
pub struct Reconstruction {
    /// The input image `[N, C, S, S]`.
    pub x: String,
    /// E(x) `[N, latent, 1, 1]`.
    pub z: String,
    /// G(E(x)) `[N, C, S, S]`.
    pub x_hat: String,
    /// x − x̂.
    pub diff: String,
    /// |x − x̂|, which every detector's anomaly map smooths.
    pub abs: String,
}

impl Reconstruction {
    /// Berg et al.'s L_o = −‖E(x)‖₂/√N_z per sample (`loss::origin_score`).
    pub fn origin(&self, b: &mut GraphBuilder, cfg: &ModelConfig) -> String {
        let sq = b.binary("Mul", &self.z, &self.z);
        let ss = b.per_sample_sum(&sq);
        let norm = b.unary("Sqrt", &ss);
        b.scale(&norm, -1.0 / (cfg.latent as f64).sqrt())
    }
}

/// A detector's score head: the value of score `score` (`[N]`) from the reconstruction.
type ScoreHead = fn(
    &mut GraphBuilder,
    &Weights,
    &ModelConfig,
    &Reconstruction,
    &str,
) -> Result<String, ExportError>;

/// Whether `kind` can be exported, and why not.
pub fn check_exportable(kind: DetectorKind) -> Result<(), ExportError> {
    match kind {
        DetectorKind::Ganomaly
        | DetectorKind::Egbad
        | DetectorKind::Alad
        | DetectorKind::FAnoGan
        | DetectorKind::Gaae
        | DetectorKind::Wild
        | DetectorKind::Seg => Ok(()),
        DetectorKind::AnoGan => Err(anogan_refusal()),
    }
}

fn anogan_refusal() -> ExportError {
    ExportError::NotExportable {
        detector: "anogan",
        reason: "AnoGAN scores by optimising a latent code per image (iterative \
                 back-propagation through the generator), which no ONNX graph expresses; \
                 score it on the host or the appliance with the Candle backend \
                 (`vigil eval`, `vigild --backend gpu`) from weights.safetensors",
    }
}

/// The f32 scorer graph of `detector` reporting score `score`.
pub fn scorer_model(detector: &dyn Detector, score: &str) -> Result<pb::ModelProto, ExportError> {
    let kind = detector.kind();
    check_exportable(kind)?;
    let cfg = detector.config();
    let weights = Weights::from_varmap(detector.varmap())?;
    let mut b = GraphBuilder::new(&format!("vigil_{}_scorer", kind.name()));
    let (c, s) = (cfg.channels, cfg.size);
    let image = b.input(
        INPUT,
        &[
            Dim::Param(BATCH),
            Dim::Fixed(c),
            Dim::Fixed(s),
            Dim::Fixed(s),
        ],
    );
    let (score_v, map_v) = match kind {
        DetectorKind::Seg => {
            let g = seg::build(&mut b, &weights, cfg, &image)?;
            match crate::maps::MapScore::parse(score) {
                Some(ms) => maps::score_and_map(&mut b, &g.r, cfg, ms)?,
                None => (seg::score(&mut b, &g, cfg, score)?, g.map.clone()),
            }
        }
        _ => encoder_decoder_scorer(&mut b, &weights, cfg, kind, image, score)?,
    };
    b.output(SCORE, &score_v, &[Dim::Param(BATCH)]);
    b.output(
        MAP,
        &map_v,
        &[
            Dim::Param(BATCH),
            Dim::Fixed(1),
            Dim::Fixed(s),
            Dim::Fixed(s),
        ],
    );
    let doc = format!(
        "Vigil {} scorer: image f32 [N,{c},{s},{s}] -> score ({score}) f32 [N], anomaly_map f32 \
         [N,1,{s},{s}] (Gaussian sigma {}). Batch norm folded into the convolutions.",
        kind.name(),
        cfg.sigma
    );
    Ok(b.into_model(
        &doc,
        &[
            ("vigil.detector", kind.name().to_string()),
            ("vigil.score", score.to_string()),
            ("vigil.sigma", cfg.sigma.to_string()),
            ("vigil.precision", "f32".to_string()),
        ],
    ))
}

/// The scorer of a detector that scores from its E → G reconstruction (all but `seg`):
/// `(score [N], anomaly_map [N, 1, S, S])`.
fn encoder_decoder_scorer(
    b: &mut GraphBuilder,
    weights: &Weights,
    cfg: &ModelConfig,
    kind: DetectorKind,
    image: String,
    score: &str,
) -> Result<(String, String), ExportError> {
    let s = cfg.size;
    // The variable prefixes of each detector's encoder and generator, and its score head.
    let (enc, dec, head): (&str, &str, ScoreHead) = match kind {
        DetectorKind::Ganomaly => ("g.encoder", "g.decoder", ganomaly::score),
        DetectorKind::Egbad => ("e", "g", egbad::score),
        DetectorKind::Alad => ("e", "g", alad::score),
        DetectorKind::FAnoGan => ("e", "g", fanogan::score),
        DetectorKind::Gaae => ("e", "g", gaae::score),
        DetectorKind::Wild => ("e", "g", wild::score),
        DetectorKind::AnoGan => return Err(anogan_refusal()),
        DetectorKind::Seg => return Err(ExportError::Unsupported("seg has its own scorer".into())),
    };
    let (z, x_hat) = layers::encode_decode(b, weights, cfg, &image, enc, dec)?;
    let diff = b.binary("Sub", &image, &x_hat);
    let abs = b.unary("Abs", &diff);
    let r = Reconstruction {
        x: image,
        z,
        x_hat,
        diff,
        abs,
    };
    Ok(match crate::maps::MapScore::parse(score) {
        // A map score: its own map, and the score read from it (`maps`).
        Some(ms) => maps::score_and_map(b, &r, cfg, ms)?,
        // The detector's scores, with every detector's map: the channel mean of |x − x̂|,
        // smoothed.
        None => (
            head(b, weights, cfg, &r, score)?,
            b.residual_map(&r.abs, cfg.sigma, s, s),
        ),
    })
}

/// Protobuf bytes of a model.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tiny(kind: DetectorKind) -> Box<dyn Detector> {
        let cfg = ModelConfig {
            size: 16,
            channels: 1,
            latent: 8,
            width: 4,
            sigma: 1.0,
            seed: 1,
            decoder: Default::default(),
        };
        crate::build(kind, cfg, &Device::Cpu).unwrap()
    }

    #[test]
    fn every_score_of_every_exportable_detector_builds_and_unknown_ones_are_refused() {
        for kind in DetectorKind::ALL {
            if check_exportable(kind).is_err() {
                continue;
            }
            let d = tiny(kind);
            for score in kind.scores() {
                let m = scorer_model(d.as_ref(), score).unwrap_or_else(|e| panic!("{kind}: {e}"));
                let g = m.graph.as_ref().unwrap();
                let outs: Vec<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
                assert_eq!(outs, [SCORE, MAP], "{kind}/{score}");
                // Batch norm is folded away.
                assert!(g.node.iter().all(|n| n.op_type != "BatchNormalization"));
            }
            let e = scorer_model(d.as_ref(), "no-such-score").err().unwrap();
            assert!(matches!(e, ExportError::UnknownScore(_)), "{kind}: {e}");
        }
    }

    #[test]
    fn only_anogan_is_refused() {
        for kind in DetectorKind::ALL {
            let r = check_exportable(kind);
            assert_eq!(r.is_err(), kind == DetectorKind::AnoGan, "{kind}");
        }
        let e = scorer_model(tiny(DetectorKind::AnoGan).as_ref(), "residual").err();
        assert!(
            matches!(e, Some(ExportError::NotExportable { .. })),
            "{e:?}"
        );
    }
}
