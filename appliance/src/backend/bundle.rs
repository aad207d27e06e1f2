//! What every engine checks before it builds anything: the manifest, the graph file against
//! the manifest's sha256, and the graph's input and outputs against the geometry the manifest
//! implies (its input, or in patch mode one tile). tract's ONNX parser reads the file for the
//! check, so an engine that loads the file itself (onnxruntime) is held to the same rules.

use std::path::{Path, PathBuf};

use tract_onnx::pb;
use tract_onnx::prelude::Framework;
use vigil_shared::manifest::Manifest;
use vigil_shared::tiles::Tiling;

use super::tract::Precision;
use super::{load_err, BackendError};

/// A bundle's graph file, checked.
pub(crate) struct CheckedFile {
    pub manifest: Manifest,
    pub path: PathBuf,
    pub sha256: String,
    pub proto: pb::ModelProto,
    /// Patch mode's grid; `None` for whole-image bundles.
    pub tiling: Option<Tiling>,
    /// `[C, H, W]` the graph takes: the frame, or in patch mode one tile.
    pub graph: [usize; 3],
}

impl CheckedFile {
    /// The batch sizes an engine prepares for: 1 and `max_batch`, or in patch mode only `T`
    /// (each frame's tiles run as one batch).
    pub fn batch_sizes(&self, max_batch: usize) -> Vec<usize> {
        let mut sizes = match &self.tiling {
            Some(t) => vec![t.count()],
            None => vec![1, max_batch],
        };
        sizes.dedup();
        sizes
    }
}

/// Loads the manifest of `dir`, verifies `model.onnx` (or `model.int8.onnx`) against it and
/// checks the graph's interface.
pub(crate) fn check_file(dir: &Path, precision: Precision) -> Result<CheckedFile, BackendError> {
    let manifest = Manifest::load(dir).map_err(|e| BackendError::Load(e.to_string()))?;
    let name = precision.file();
    let path = manifest.verify_file(dir, name).map_err(|e| {
        BackendError::Load(match e {
            vigil_shared::manifest::BundleError::MissingEntry { .. } => format!(
                "{}: the manifest lists no {name} (run `vigil export --model {}{}`)",
                dir.join("manifest.json").display(),
                dir.display(),
                if precision == Precision::Int8 {
                    " --quantize int8"
                } else {
                    ""
                }
            ),
            other => other.to_string(),
        })
    })?;
    let sha256 = manifest
        .file(name)
        .map(|f| f.sha256.clone())
        .unwrap_or_default();
    let proto = tract_onnx::onnx()
        .proto_model_for_path(&path)
        .map_err(|e| load_err(&path, format!("not a valid ONNX model ({e})")))?;
    let i = &manifest.input;
    let (c, fh, fw) = (i.channels, i.height, i.width);
    let tiling = manifest
        .patch
        .map(|p| Tiling::new(c, fh, fw, p))
        .transpose()
        .map_err(|e| load_err(&dir.join("manifest.json"), e))?;
    let (h, w) = tiling
        .as_ref()
        .map_or((fh, fw), |t| (t.spec().size, t.spec().size));
    check_interface(&path, &proto, [c, h, w])?;
    Ok(CheckedFile {
        manifest,
        path,
        sha256,
        proto,
        tiling,
        graph: [c, h, w],
    })
}

/// Dims of a graph input or output as written in the file: `None` for a symbolic dimension.
fn proto_dims(v: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use pb::tensor_shape_proto::dimension::Value;
    let pb::type_proto::Value::TensorType(t) = v.r#type.as_ref()?.value.as_ref()?;
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(n)) => Some(*n),
                _ => None,
            })
            .collect(),
    )
}

fn fmt_dims(d: &[Option<i64>]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|x| x.map_or_else(|| "N".to_string(), |n| n.to_string()))
        .collect();
    format!("[{}]", parts.join(","))
}
/// Checks that the graph has `image` → `score`, `anomaly_map` with the geometry `[c, h, w]`
/// the manifest implies (its input, or in patch mode its tile).
fn check_interface(
    path: &Path,
    proto: &pb::ModelProto,
    [c, h, w]: [usize; 3],
) -> Result<(), BackendError> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| load_err(path, "the ONNX file holds no graph"))?;
    let (c, h, w) = (c as i64, h as i64, w as i64);
    let initialisers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initialisers.contains(&i.name.as_str()))
        .collect();
    let expect = |kind: &str, name: &str, list: &[&pb::ValueInfoProto], want: Vec<Option<i64>>| {
        let v = list.iter().find(|v| v.name == name).ok_or_else(|| {
            let names: Vec<&str> = list.iter().map(|v| v.name.as_str()).collect();
            load_err(
                path,
                format!("the graph has no {kind} `{name}` (found {names:?})"),
            )
        })?;
        let found = proto_dims(v).ok_or_else(|| {
            load_err(
                path,
                format!("{kind} `{name}` is not a tensor with a known rank"),
            )
        })?;
        // The batch dimension may be symbolic or fixed; every other dimension must match.
        let ok = found.len() == want.len() && found.iter().zip(&want).skip(1).all(|(f, w)| f == w);
        if !ok {
            return Err(BackendError::Shape(format!(
                "{}: {kind} `{name}` has shape {}, the manifest expects {}",
                path.display(),
                fmt_dims(&found),
                fmt_dims(&want)
            )));
        }
        Ok(())
    };
    expect(
        "input",
        "image",
        &inputs,
        vec![None, Some(c), Some(h), Some(w)],
    )?;
    let outputs: Vec<&pb::ValueInfoProto> = graph.output.iter().collect();
    expect("output", "score", &outputs, vec![None])?;
    expect(
        "output",
        "anomaly_map",
        &outputs,
        vec![None, Some(1), Some(h), Some(w)],
    )?;
    Ok(())
}
