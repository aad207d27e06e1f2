//! int8 scorer graphs derived from the f32 one.
//!
//! Every square-kernel `Conv` of the networks becomes `QuantizeLinear → QLinearConv →
//! DequantizeLinear`: activations uint8 with a per-tensor scale and zero point calibrated
//! (min/max) on normal images, weights int8 symmetric with one per-tensor scale (tract reads only
//! per-tensor scales), bias int32 at scale `s_x·s_w`. `ConvTranspose` stays f32 (tract has no
//! int8 transposed convolution), and so do the score reductions and the Gaussian smoothing, which
//! are cheap and set the map's precision. QLinearConv rather than QDQ around a float Conv because
//! tract runs QDQ convolutions in float: only QLinearConv reaches its integer kernels
//! (measurements in docs/benchmarks.md, "Inference").

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::*;

use super::ExportError;

fn qerr(e: impl std::fmt::Display) -> ExportError {
    ExportError::Quant(e.to_string())
}

fn f32_values(t: &pb::TensorProto) -> Result<Vec<f32>, ExportError> {
    if !t.float_data.is_empty() {
        return Ok(t.float_data.clone());
    }
    if !t.raw_data.len().is_multiple_of(4) {
        return Err(qerr(format!("initializer {} is not f32", t.name)));
    }
    Ok(t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn attr_ints(n: &pb::NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

/// The convolutions worth quantising: square kernels of the networks (the smoothing kernels
/// are `K×1` and `1×K`).
fn targets(graph: &pb::GraphProto) -> Vec<usize> {
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            n.op_type == "Conv" && n.input.len() >= 2 && inits.contains(n.input[1].as_str())
        })
        .filter(|(_, n)| {
            attr_ints(n, "kernel_shape").is_some_and(|k| k.len() == 2 && k[0] == k[1] && k[0] > 1)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Running min/max of named values over the calibration images.
fn calibrate(
    model: &pb::ModelProto,
    names: &[String],
    images: &[f32],
    chw: &[usize; 3],
) -> Result<HashMap<String, (f32, f32)>, ExportError> {
    let frame: usize = chw.iter().product();
    if images.is_empty() || !images.len().is_multiple_of(frame) {
        return Err(qerr(format!(
            "calibration data holds {} values, not a whole number of {}×{}×{} images",
            images.len(),
            chw[0],
            chw[1],
            chw[2]
        )));
    }
    let mut probe = model.clone();
    let graph = probe.graph.as_mut().expect("scorer models have a graph");
    graph.output = names
        .iter()
        .map(|n| pb::ValueInfoProto {
            name: n.clone(),
            ..Default::default()
        })
        .collect();
    const BATCH: usize = 16;
    let plan = tract_onnx::onnx()
        .model_for_proto_model(&probe)
        .and_then(|m| m.with_input_fact(0, f32::fact([BATCH, chw[0], chw[1], chw[2]]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| qerr(format!("preparing the calibration graph: {e:#}")))?;
    let mut ranges: HashMap<String, (f32, f32)> = names
        .iter()
        .map(|n| (n.clone(), (f32::INFINITY, f32::NEG_INFINITY)))
        .collect();
    for chunk in images.chunks(BATCH * frame) {
        // Pad the last batch by repeating its first image: duplicates do not move min/max.
        let mut buf = chunk.to_vec();
        while buf.len() < BATCH * frame {
            buf.extend_from_slice(&chunk[..frame]);
        }
        let input = Tensor::from_shape(&[BATCH, chw[0], chw[1], chw[2]], &buf).map_err(qerr)?;
        let out = plan
            .run(tvec![input.into()])
            .map_err(|e| qerr(format!("calibration run: {e:#}")))?;
        for (name, t) in names.iter().zip(out.iter()) {
            let view = t.try_as_plain_ram().map_err(qerr)?;
            let v = view.as_slice::<f32>().map_err(qerr)?;
            let r = ranges.get_mut(name).expect("every name has a range");
            for &x in v {
                r.0 = r.0.min(x);
                r.1 = r.1.max(x);
            }
        }
    }
    Ok(ranges)
}

/// uint8 affine parameters covering `[lo, hi]` and zero.
fn u8_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0).max(1e-8);
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

struct Inits<'a> {
    graph: &'a mut pb::GraphProto,
}

impl Inits<'_> {
    fn push(&mut self, name: String, dt: DataType, dims: &[usize], raw: Vec<u8>) -> String {
        self.graph.initializer.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: dt as i32,
            name: name.clone(),
            raw_data: raw,
            ..Default::default()
        });
        name
    }
    fn scalar_f32(&mut self, name: String, v: f32) -> String {
        self.push(name, DataType::Float, &[], v.to_le_bytes().to_vec())
    }
    fn scalar_u8(&mut self, name: String, v: u8) -> String {
        self.push(name, DataType::Uint8, &[], vec![v])
    }
    fn scalar_i8(&mut self, name: String, v: i8) -> String {
        self.push(name, DataType::Int8, &[], vec![v as u8])
    }
}

fn node(
    op: &str,
    inputs: Vec<String>,
    output: String,
    attribute: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        name: format!("n_{output}"),
        input: inputs,
        output: vec![output],
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// Conv node `n` as QuantizeLinear → QLinearConv → DequantizeLinear: int8 symmetric weights,
/// uint8 activations with the calibrated `ranges` of its input and output, int32 bias.
fn quantised_conv(
    ini: &mut Inits<'_>,
    n: &pb::NodeProto,
    inits: &HashMap<String, pb::TensorProto>,
    ranges: &HashMap<String, (f32, f32)>,
) -> Result<[pb::NodeProto; 3], ExportError> {
    let (x, y) = (n.input[0].clone(), n.output[0].clone());
    let w = &inits[&n.input[1]];
    let wv = f32_values(w)?;
    let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
    let amax = wv.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let sw = amax / 127.0;
    let wq: Vec<u8> = wv
        .iter()
        .map(|v| ((v / sw).round().clamp(-127.0, 127.0) as i8) as u8)
        .collect();
    let (lx, hx) = ranges[&x];
    let (ly, hy) = ranges[&y];
    let (sx, zx) = u8_params(lx, hx);
    let (sy, zy) = u8_params(ly, hy);
    let p = |s: &str| format!("{y}_{s}");
    let sx_n = ini.scalar_f32(p("x_scale"), sx);
    let zx_n = ini.scalar_u8(p("x_zero"), zx);
    let wq_n = ini.push(p("w_q"), DataType::Int8, &dims, wq);
    let sw_n = ini.scalar_f32(p("w_scale"), sw);
    let zw_n = ini.scalar_i8(p("w_zero"), 0);
    let sy_n = ini.scalar_f32(p("y_scale"), sy);
    let zy_n = ini.scalar_u8(p("y_zero"), zy);
    let mut qinputs = vec![
        p("xq"),
        sx_n.clone(),
        zx_n.clone(),
        wq_n,
        sw_n,
        zw_n,
        sy_n.clone(),
        zy_n.clone(),
    ];
    if n.input.len() > 2 {
        let b = f32_values(&inits[&n.input[2]])?;
        let bq: Vec<u8> = b
            .iter()
            .flat_map(|v| ((v / (sx * sw)).round() as i32).to_le_bytes())
            .collect();
        qinputs.push(ini.push(p("b_q"), DataType::Int32, &[b.len()], bq));
    }
    Ok([
        node("QuantizeLinear", vec![x, sx_n, zx_n], p("xq"), vec![]),
        node("QLinearConv", qinputs, p("yq"), n.attribute.clone()),
        node("DequantizeLinear", vec![p("yq"), sy_n, zy_n], y, vec![]),
    ])
}

/// The int8 version of an f32 scorer model from [`super::scorer_model`], calibrated on
/// `images` (flattened `[n, C, H, W]` in the model's input range).
pub fn quantize(
    model: &pb::ModelProto,
    images: &[f32],
    chw: &[usize; 3],
) -> Result<pb::ModelProto, ExportError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| qerr("the model has no graph"))?;
    let convs = targets(graph);
    if convs.is_empty() {
        return Err(qerr("no convolution to quantise"));
    }
    let mut names: Vec<String> = Vec::new();
    for &i in &convs {
        for v in [&graph.node[i].input[0], &graph.node[i].output[0]] {
            if !names.contains(v) {
                names.push(v.clone());
            }
        }
    }
    let ranges = calibrate(model, &names, images, chw)?;

    let mut out = model.clone();
    let g = out.graph.as_mut().expect("checked above");
    let inits: HashMap<String, pb::TensorProto> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let old_nodes = std::mem::take(&mut g.node);
    let mut used_f32_inits: HashSet<String> = HashSet::new();
    let mut new_nodes = Vec::with_capacity(old_nodes.len() + 2 * convs.len());
    let mut ini = Inits { graph: g };
    for (i, n) in old_nodes.into_iter().enumerate() {
        if !convs.contains(&i) {
            for x in &n.input {
                used_f32_inits.insert(x.clone());
            }
            new_nodes.push(n);
            continue;
        }
        new_nodes.extend(quantised_conv(&mut ini, &n, &inits, &ranges)?);
    }
    // Drop the f32 weights and biases only the quantised convolutions used.
    let quantised_inputs: HashSet<String> = new_nodes
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    g.initializer
        .retain(|t| quantised_inputs.contains(&t.name) || used_f32_inits.contains(&t.name));
    g.node = new_nodes;
    for p in &mut out.metadata_props {
        if p.key == "vigil.precision" {
            p.value = "int8".into();
        }
    }
    out.doc_string = format!(
        "{} int8: square-kernel convolutions as QLinearConv (uint8 activations calibrated on {} \
         normal images, int8 per-tensor weights).",
        out.doc_string,
        images.len() / chw.iter().product::<usize>()
    );
    Ok(out)
}
