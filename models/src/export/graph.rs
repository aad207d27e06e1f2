//! A small builder over tract-onnx's prost-generated ONNX types, and the graph pieces every
//! detector's scorer is made of: convolutions with batch norm folded in, activations, the
//! Gaussian smoothing of the anomaly map and the per-sample score reductions.

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

/// ONNX operator set the graphs are written for (ReduceMean still takes `axes` as an attribute).
pub const OPSET: i64 = 17;
/// IR version 8 goes with opset 17.
pub const IR_VERSION: i64 = 8;

/// One dimension of a graph input or output: fixed, or symbolic (the batch).
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(usize),
    Param(&'static str),
}

/// An ONNX attribute value.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(&'static str),
}

/// Builds one `GraphProto`: names are made unique with a running counter.
pub struct GraphBuilder {
    graph: pb::GraphProto,
    counter: usize,
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(n) => Value::DimValue(*n as i64),
                Dim::Param(p) => Value::DimParam((*p).to_string()),
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self {
            graph: pb::GraphProto {
                name: name.to_string(),
                ..Default::default()
            },
            counter: 0,
        }
    }

    pub fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.graph
            .input
            .push(value_info(name, DataType::Float, dims));
        name.to_string()
    }

    /// Declares graph output `name`, produced by the value `from` (renamed with an Identity
    /// only when the names differ).
    pub fn output(&mut self, name: &str, from: &str, dims: &[Dim]) {
        if from != name {
            self.graph.node.push(pb::NodeProto {
                input: vec![from.to_string()],
                output: vec![name.to_string()],
                name: format!("{name}_out"),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        self.graph
            .output
            .push(value_info(name, DataType::Float, dims));
    }

    pub fn init_f32(&mut self, prefix: &str, dims: &[usize], data: Vec<f32>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(prefix);
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.graph.initializer.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            name: name.clone(),
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    pub fn init_i64(&mut self, prefix: &str, dims: &[usize], data: Vec<i64>) -> String {
        let name = self.fresh(prefix);
        self.graph.initializer.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Int64 as i32,
            name: name.clone(),
            int64_data: data,
            ..Default::default()
        });
        name
    }

    /// Appends a single-output node and returns the output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.node_named(op, inputs, attrs, &out);
        out
    }

    pub fn node_named(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>, out: &str) {
        self.node_outputs(op, inputs, attrs, &[out]);
    }

    /// Appends a node with several outputs (e.g. `TopK`'s values and indices).
    pub fn node_outputs(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
        outs: &[&str],
    ) {
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                use pb::attribute_proto::AttributeType as T;
                let mut p = pb::AttributeProto {
                    name: name.to_string(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(i) => {
                        p.i = i;
                        p.r#type = T::Int as i32;
                    }
                    Attr::Ints(v) => {
                        p.ints = v;
                        p.r#type = T::Ints as i32;
                    }
                    Attr::Float(f) => {
                        p.f = f;
                        p.r#type = T::Float as i32;
                    }
                    Attr::Str(v) => {
                        p.s = v.as_bytes().to_vec();
                        p.r#type = T::String as i32;
                    }
                }
                p
            })
            .collect();
        self.graph.node.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.iter().map(|s| s.to_string()).collect(),
            name: format!("n_{}", outs[0]),
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
    }

    pub fn into_model(self, doc: &str, metadata: &[(&str, String)]) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "vigil".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.to_string(),
            graph: Some(self.graph),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: k.to_string(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }

    // ----- pieces -----

    /// `Conv` with square kernel, weight `[Cout, Cin, K, K]`, optional bias `[Cout]`.
    pub fn conv(&mut self, x: &str, w: &ConvWeights, stride: usize, pad: usize) -> String {
        let k = w.dims[2];
        let wn = self.init_f32("w", &w.dims, w.weight.clone());
        let mut inputs = vec![x.to_string(), wn];
        if let Some(b) = &w.bias {
            inputs.push(self.init_f32("b", &[b.len()], b.clone()));
        }
        let refs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
        let p = pad as i64;
        self.node(
            "Conv",
            &refs,
            vec![
                ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
                ("strides", Attr::Ints(vec![stride as i64, stride as i64])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
            ],
        )
    }

    /// `ConvTranspose`, weight `[Cin, Cout, K, K]`, optional bias `[Cout]`, no output padding.
    pub fn conv_transpose(
        &mut self,
        x: &str,
        w: &ConvWeights,
        stride: usize,
        pad: usize,
    ) -> String {
        let k = w.dims[2];
        let wn = self.init_f32("wt", &w.dims, w.weight.clone());
        let mut inputs = vec![x.to_string(), wn];
        if let Some(b) = &w.bias {
            inputs.push(self.init_f32("b", &[b.len()], b.clone()));
        }
        let refs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
        let p = pad as i64;
        self.node(
            "ConvTranspose",
            &refs,
            vec![
                ("kernel_shape", Attr::Ints(vec![k as i64, k as i64])),
                ("strides", Attr::Ints(vec![stride as i64, stride as i64])),
                ("pads", Attr::Ints(vec![p, p, p, p])),
            ],
        )
    }

    /// Nearest-neighbour ×2 of `[N, C, H, W]` (`Resize`, each output pixel the input pixel
    /// it falls in, as `nn::upsample2`).
    pub fn upsample2(&mut self, x: &str) -> String {
        let scales = self.init_f32("scales", &[4], vec![1.0, 1.0, 2.0, 2.0]);
        self.node(
            "Resize",
            &[x, "", &scales],
            vec![
                ("mode", Attr::Str("nearest")),
                ("coordinate_transformation_mode", Attr::Str("asymmetric")),
                ("nearest_mode", Attr::Str("floor")),
            ],
        )
    }

    pub fn leaky_relu(&mut self, x: &str, alpha: f32) -> String {
        self.node("LeakyRelu", &[x], vec![("alpha", Attr::Float(alpha))])
    }

    pub fn unary(&mut self, op: &str, x: &str) -> String {
        self.node(op, &[x], vec![])
    }

    pub fn binary(&mut self, op: &str, a: &str, b: &str) -> String {
        self.node(op, &[a, b], vec![])
    }

    pub fn reduce_mean(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        self.node(
            "ReduceMean",
            &[x],
            vec![
                ("axes", Attr::Ints(axes.to_vec())),
                ("keepdims", Attr::Int(keepdims as i64)),
            ],
        )
    }

    /// Per-sample mean over every axis but the batch of a rank-4 tensor: `[N, …]` → `[N]`.
    pub fn per_sample_mean(&mut self, x: &str) -> String {
        self.reduce_mean(x, &[1, 2, 3], false)
    }

    /// Per-sample sum over every axis but the batch of a rank-4 tensor: `[N, …]` → `[N]`
    /// (`loss::per_sample_sum`). From opset 13 ReduceSum takes its axes as an input.
    pub fn per_sample_sum(&mut self, x: &str) -> String {
        let axes = self.init_i64("axes", &[3], vec![1, 2, 3]);
        self.node("ReduceSum", &[x, &axes], vec![("keepdims", Attr::Int(0))])
    }

    /// Per-sample `Σ|a − b|` over every axis but the batch (`loss::l1_per_sample`).
    pub fn l1_per_sample(&mut self, a: &str, b: &str) -> String {
        let d = self.binary("Sub", a, b);
        let abs = self.unary("Abs", &d);
        self.per_sample_sum(&abs)
    }

    /// `x · k` for a constant `k`: Candle's `tensor * f64` (an affine map with the factor
    /// rounded to f32, and no offset).
    pub fn scale(&mut self, x: &str, k: f64) -> String {
        let c = self.init_f32("k", &[], vec![k as f32]);
        self.binary("Mul", x, &c)
    }

    /// `x + k` for a constant `k`, rounded to f32 as Candle's affine map rounds it.
    pub fn offset(&mut self, x: &str, k: f64) -> String {
        let c = self.init_f32("c", &[], vec![k as f32]);
        self.binary("Add", x, &c)
    }

    /// Concatenation along `axis`.
    pub fn concat(&mut self, xs: &[&str], axis: i64) -> String {
        self.node("Concat", xs, vec![("axis", Attr::Int(axis))])
    }

    /// `[N, 1, 1, 1]` → `[N]` (Candle's `flatten_all` on one value per sample).
    pub fn flatten_to_batch(&mut self, x: &str) -> String {
        let shape = self.init_i64("shape", &[1], vec![-1]);
        self.node("Reshape", &[x, &shape], vec![])
    }

    /// The map every detector reports: the channel mean of the residual `|x − x̂|`
    /// `[N, C, H, W]`, Gaussian-smoothed to `[N, 1, H, W]`.
    pub fn residual_map(&mut self, abs: &str, sigma: f32, h: usize, w: usize) -> String {
        let mean = self.reduce_mean(abs, &[1], true);
        self.gaussian_smooth(&mean, sigma, h, w)
    }

    /// The Gaussian smoothing of [`crate::smoothing::GaussianSmoother`] on `[N, 1, H, W]`:
    /// reflect padding as a Gather with the same index table (ONNX `Pad` mode `reflect` does
    /// not repeat the edge sample, scipy's and ours does), then the separable kernel.
    pub fn gaussian_smooth(&mut self, map: &str, sigma: f32, h: usize, w: usize) -> String {
        let k = crate::smoothing::kernel1d(sigma);
        let radius = k.len() / 2;
        if radius == 0 {
            return map.to_string();
        }
        let idx = |n: usize| -> Vec<i64> {
            crate::smoothing::reflect_indices(n, radius)
                .into_iter()
                .map(i64::from)
                .collect()
        };
        let rows = self.init_i64("reflect_rows", &[h + 2 * radius], idx(h));
        let cols = self.init_i64("reflect_cols", &[w + 2 * radius], idx(w));
        let n = k.len();
        let kv = ConvWeights {
            dims: [1, 1, n, 1],
            weight: k.clone(),
            bias: None,
        };
        let kh = ConvWeights {
            dims: [1, 1, 1, n],
            weight: k,
            bias: None,
        };
        let m = self.node("Gather", &[map, &rows], vec![("axis", Attr::Int(2))]);
        let m = self.conv_rect(&m, &kv);
        let m = self.node("Gather", &[&m, &cols], vec![("axis", Attr::Int(3))]);
        self.conv_rect(&m, &kh)
    }

    /// Stride-1, unpadded `Conv` with a rectangular kernel.
    fn conv_rect(&mut self, x: &str, w: &ConvWeights) -> String {
        let wn = self.init_f32("k", &w.dims, w.weight.clone());
        self.node(
            "Conv",
            &[x, &wn],
            vec![(
                "kernel_shape",
                Attr::Ints(vec![w.dims[2] as i64, w.dims[3] as i64]),
            )],
        )
    }
}

/// Convolution weights (either layout: `[Cout, Cin, K, K]` for Conv, `[Cin, Cout, K, K]` for
/// ConvTranspose) and an optional bias.
#[derive(Clone, Debug)]
pub struct ConvWeights {
    pub dims: [usize; 4],
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// Batch-norm parameters in evaluation mode (running statistics).
pub struct BatchNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub eps: f32,
}

impl BatchNorm {
    /// Per-channel (scale, shift) with `bn(y) = y·scale + shift`, computed the way
    /// `nn::BatchNorm2d` does in evaluation mode so the fold rounds the same.
    pub fn scale_shift(&self) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = self
            .gamma
            .iter()
            .zip(&self.var)
            .map(|(g, v)| g * (1.0 / (v + self.eps).sqrt()))
            .collect();
        let shift = self
            .beta
            .iter()
            .zip(&self.mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        (scale, shift)
    }
}

impl ConvWeights {
    /// Folds a following batch norm into the weights and bias. `out_axis` is the axis of the
    /// output channels in the weight layout: 0 for Conv, 1 for ConvTranspose.
    pub fn fold_bn(mut self, bn: &BatchNorm, out_axis: usize) -> Self {
        let (scale, shift) = bn.scale_shift();
        let [d0, d1, kh, kw] = self.dims;
        let plane = kh * kw;
        for a in 0..d0 {
            for b in 0..d1 {
                let co = if out_axis == 0 { a } else { b };
                let s = scale[co];
                let start = (a * d1 + b) * plane;
                for v in &mut self.weight[start..start + plane] {
                    *v *= s;
                }
            }
        }
        let bias = match self.bias.take() {
            Some(b) => b
                .iter()
                .zip(&scale)
                .zip(&shift)
                .map(|((b, s), t)| b * s + t)
                .collect(),
            None => shift,
        };
        self.bias = Some(bias);
        self
    }
}
