//! The map scores of [`crate::maps`] as graph pieces, op for op: every exportable detector's
//! scorer can report `ssim-max`, `msgms-topk`, … from its reconstruction, with that score's map
//! as `anomaly_map`.
//!
//! Ops used besides the convolutions: `Gather` (edge-repeating padding), `Reshape` (channels
//! folded into the batch for depthwise filtering), `Slice`, `AveragePool`, `Resize` (linear,
//! `half_pixel`, by `scales` so the batch can stay symbolic), `Sqrt`, `Div`, `ReduceMax` and
//! `TopK` (tract 0.23 and onnxruntime run all of them; `models::export::maps` tests check tract
//! against Candle for every detector, `host/tests/export.rs` both runtimes on trained bundles).
//! The filters are separable `K×1`/`1×K` convolutions, which the int8 export leaves in f32.

use super::graph::{Attr, GraphBuilder};
use super::{ExportError, Reconstruction};
use crate::maps::{
    prewitt_kernels, ssim_kernel, topk_count, MapKind, MapScore, Reduction, GMS_C, MSGMS_SCALES,
    SSIM_C1, SSIM_C2,
};
use crate::ModelConfig;

/// `(score [N], anomaly_map [N, 1, S, S])` of map score `ms`.
pub fn score_and_map(
    b: &mut GraphBuilder,
    r: &Reconstruction,
    cfg: &ModelConfig,
    ms: MapScore,
) -> Result<(String, String), ExportError> {
    let s = cfg.size;
    crate::maps::check_geometry(&ms.to_string(), s, s)
        .map_err(|e| ExportError::Unsupported(e.to_string()))?;
    let raw = match ms.map {
        MapKind::L1 => None,
        MapKind::Ssim => Some(ssim_residual(b, &r.x, &r.x_hat, cfg.channels, s, s)),
        MapKind::Msgms => Some(msgms_residual(b, &r.x, &r.x_hat, s, s)),
    };
    let map = match raw {
        // The detector's own map, as every scorer reports it.
        None => b.residual_map(&r.abs, cfg.sigma, s, s),
        Some(m) => b.gaussian_smooth(&m, cfg.sigma, s, s),
    };
    let score = reduce(b, &map, ms.reduction, s, s);
    Ok((score, map))
}

/// `maps::reduce`: `[N, 1, H, W]` → `[N]`.
pub fn reduce(b: &mut GraphBuilder, map: &str, r: Reduction, h: usize, w: usize) -> String {
    match r {
        Reduction::Mean => b.per_sample_mean(map),
        Reduction::Max => b.node(
            "ReduceMax",
            &[map],
            vec![
                ("axes", Attr::Ints(vec![1, 2, 3])),
                ("keepdims", Attr::Int(0)),
            ],
        ),
        Reduction::TopK => {
            let shape = b.init_i64("shape", &[2], vec![-1, (h * w) as i64]);
            let flat = b.node("Reshape", &[map, &shape], vec![]);
            let k = b.init_i64("k", &[1], vec![topk_count(h, w) as i64]);
            let (values, indices) = (b.fresh("topk"), b.fresh("topk_idx"));
            b.node_outputs(
                "TopK",
                &[&flat, &k],
                vec![
                    ("axis", Attr::Int(1)),
                    ("largest", Attr::Int(1)),
                    ("sorted", Attr::Int(1)),
                ],
                &[&values, &indices],
            );
            b.reduce_mean(&values, &[1], false)
        }
    }
}

/// [-1, 1] → [0, 1]: `x·0.5 + 0.5`, Candle's `affine(0.5, 0.5)`.
fn unit(b: &mut GraphBuilder, x: &str) -> String {
    let h = b.scale(x, 0.5);
    b.offset(&h, 0.5)
}

/// Candle's `affine(k, c)`: `x·k + c`.
fn affine(b: &mut GraphBuilder, x: &str, k: f64, c: f64) -> String {
    let m = b.scale(x, k);
    b.offset(&m, c)
}

/// `maps::separable` on `[M, 1, H, W]`.
fn separable(
    b: &mut GraphBuilder,
    m: &str,
    v: &[f32],
    h: &[f32],
    rows: usize,
    cols: usize,
) -> String {
    let idx = |n: usize, r: usize| -> Vec<i64> {
        crate::smoothing::reflect_indices(n, r)
            .into_iter()
            .map(i64::from)
            .collect()
    };
    let (rv, rh) = (v.len() / 2, h.len() / 2);
    let ri = b.init_i64("reflect_rows", &[rows + 2 * rv], idx(rows, rv));
    let ci = b.init_i64("reflect_cols", &[cols + 2 * rh], idx(cols, rh));
    let kv = b.init_f32("k", &[1, 1, v.len(), 1], v.to_vec());
    let kh = b.init_f32("k", &[1, 1, 1, h.len()], h.to_vec());
    let m = b.node("Gather", &[m, &ri], vec![("axis", Attr::Int(2))]);
    let m = b.node(
        "Conv",
        &[&m, &kv],
        vec![("kernel_shape", Attr::Ints(vec![v.len() as i64, 1]))],
    );
    let m = b.node("Gather", &[&m, &ci], vec![("axis", Attr::Int(3))]);
    b.node(
        "Conv",
        &[&m, &kh],
        vec![("kernel_shape", Attr::Ints(vec![1, h.len() as i64]))],
    )
}

/// `maps::depthwise`: `[N, K, H, W]` filtered per channel.
fn depthwise(
    b: &mut GraphBuilder,
    x: &str,
    k: usize,
    v: &[f32],
    h: &[f32],
    rows: usize,
    cols: usize,
) -> String {
    let (r, c) = (rows as i64, cols as i64);
    let folded = b.init_i64("shape", &[4], vec![-1, 1, r, c]);
    let m = b.node("Reshape", &[x, &folded], vec![]);
    let m = separable(b, &m, v, h, rows, cols);
    let unfolded = b.init_i64("shape", &[4], vec![-1, k as i64, r, c]);
    b.node("Reshape", &[&m, &unfolded], vec![])
}

/// Channels `start .. start + len` of `[N, K, H, W]`.
fn channels(b: &mut GraphBuilder, x: &str, start: usize, len: usize) -> String {
    let starts = b.init_i64("starts", &[1], vec![start as i64]);
    let ends = b.init_i64("ends", &[1], vec![(start + len) as i64]);
    let axes = b.init_i64("axes", &[1], vec![1]);
    b.node("Slice", &[x, &starts, &ends, &axes], vec![])
}

/// `maps::ssim_residual`.
fn ssim_residual(b: &mut GraphBuilder, x: &str, y: &str, c: usize, h: usize, w: usize) -> String {
    let (u, v) = (unit(b, x), unit(b, y));
    let uu_px = b.binary("Mul", &u, &u);
    let vv_px = b.binary("Mul", &v, &v);
    let uv_px = b.binary("Mul", &u, &v);
    let stack = b.concat(&[&u, &v, &uu_px, &vv_px, &uv_px], 1);
    let k = ssim_kernel();
    let blurred = depthwise(b, &stack, 5 * c, &k, &k, h, w);
    let part: Vec<String> = (0..5).map(|i| channels(b, &blurred, i * c, c)).collect();
    let uu = b.binary("Mul", &part[0], &part[0]);
    let vv = b.binary("Mul", &part[1], &part[1]);
    let uv = b.binary("Mul", &part[0], &part[1]);
    let var_u = b.binary("Sub", &part[2], &uu);
    let var_v = b.binary("Sub", &part[3], &vv);
    let cov = b.binary("Sub", &part[4], &uv);
    let l = affine(b, &uv, 2.0, SSIM_C1);
    let cs = affine(b, &cov, 2.0, SSIM_C2);
    let num = b.binary("Mul", &l, &cs);
    let means = b.binary("Add", &uu, &vv);
    let l_den = affine(b, &means, 1.0, SSIM_C1);
    let vars = b.binary("Add", &var_u, &var_v);
    let cs_den = affine(b, &vars, 1.0, SSIM_C2);
    let den = b.binary("Mul", &l_den, &cs_den);
    let ssim = b.binary("Div", &num, &den);
    let mean = b.reduce_mean(&ssim, &[1], true);
    affine(b, &mean, -1.0, 1.0)
}

/// `maps::gms`: `[N, 2, h, w]` → `[N, 1, h, w]`.
fn gms(b: &mut GraphBuilder, pair: &str, h: usize, w: usize) -> String {
    let [(gxv, gxh), (gyv, gyh)] = prewitt_kernels();
    let gx = depthwise(b, pair, 2, &gxv, &gxh, h, w);
    let gy = depthwise(b, pair, 2, &gyv, &gyh, h, w);
    let gx2 = b.binary("Mul", &gx, &gx);
    let gy2 = b.binary("Mul", &gy, &gy);
    let sum = b.binary("Add", &gx2, &gy2);
    let mag = b.unary("Sqrt", &sum);
    let a = channels(b, &mag, 0, 1);
    let m = channels(b, &mag, 1, 1);
    let am = b.binary("Mul", &a, &m);
    let num = affine(b, &am, 2.0, GMS_C);
    let aa = b.binary("Mul", &a, &a);
    let mm = b.binary("Mul", &m, &m);
    let sq = b.binary("Add", &aa, &mm);
    let den = affine(b, &sq, 1.0, GMS_C);
    b.binary("Div", &num, &den)
}

/// `maps::msgms_residual` (`h`, `w` divisible by 8).
fn msgms_residual(b: &mut GraphBuilder, x: &str, y: &str, h: usize, w: usize) -> String {
    let ux = unit(b, x);
    let gx = b.reduce_mean(&ux, &[1], true);
    let uy = unit(b, y);
    let gy = b.reduce_mean(&uy, &[1], true);
    let mut pair = b.concat(&[&gx, &gy], 1);
    let mut total = gms(b, &pair, h, w);
    for scale in 1..MSGMS_SCALES {
        pair = b.node(
            "AveragePool",
            &[&pair],
            vec![
                ("kernel_shape", Attr::Ints(vec![2, 2])),
                ("strides", Attr::Ints(vec![2, 2])),
            ],
        );
        let f = (1usize << scale) as f32;
        let g = gms(b, &pair, h >> scale, w >> scale);
        let scales = b.init_f32("scales", &[4], vec![1.0, 1.0, f, f]);
        // `half_pixel` is the default coordinate transformation: Candle's non-aligned bilinear.
        let up = b.node(
            "Resize",
            &[&g, "", &scales],
            vec![("mode", Attr::Str("linear"))],
        );
        total = b.binary("Add", &total, &up);
    }
    affine(b, &total, -1.0 / MSGMS_SCALES as f64, 1.0)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use tract_onnx::prelude::*;

    use super::super::{check_exportable, encode, scorer_model};
    use crate::maps::{self, SCORES};
    use crate::{DetectorKind, ModelConfig};

    /// Every map score of every exportable detector (untrained, tiny), run by tract, against
    /// Candle's score and map on the same images: the graph computes what `maps` computes.
    #[test]
    fn map_score_graphs_match_candle_in_tract_for_every_detector() {
        let (n, c, s) = (3usize, 2usize, 16usize);
        let cfg = ModelConfig {
            size: s,
            channels: c,
            latent: 8,
            width: 4,
            sigma: 1.0,
            seed: 2,
            decoder: Default::default(),
        };
        let x = crate::testutil::randn(&[n, c, s, s], 7, 0.0)
            .tanh()
            .unwrap();
        let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        for kind in DetectorKind::ALL {
            if check_exportable(kind).is_err() {
                continue;
            }
            let d = crate::build(kind, cfg.clone(), &Device::Cpu).unwrap();
            let cand = maps::infer(d.as_ref(), &x, SCORES).unwrap();
            for name in SCORES {
                let bytes = encode(&scorer_model(d.as_ref(), name).unwrap());
                let plan = tract_onnx::onnx()
                    .model_for_read(&mut &bytes[..])
                    .and_then(|m| m.with_input_fact(0, f32::fact([n, c, s, s]).into()))
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable())
                    .unwrap_or_else(|e| panic!("{kind}/{name}: {e:#}"));
                let input = tract_onnx::prelude::Tensor::from_shape(&[n, c, s, s], &xv).unwrap();
                let out = plan.run(tvec![input.into()]).unwrap();
                let got = |i: usize| -> Vec<f32> {
                    out[i]
                        .try_as_plain_ram()
                        .unwrap()
                        .as_slice::<f32>()
                        .unwrap()
                        .to_vec()
                };
                let want = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
                let (ws, wm) = (
                    want(cand.score(name).unwrap()),
                    want(cand.map(name).unwrap()),
                );
                let diff = |a: &[f32], b: &[f32]| {
                    assert_eq!(a.len(), b.len(), "{kind}/{name}");
                    a.iter()
                        .zip(b)
                        .map(|(p, q)| (p - q).abs())
                        .fold(0f32, f32::max)
                };
                let (ds, dm) = (diff(&got(0), &ws), diff(&got(1), &wm));
                assert!(
                    ds < 1e-5 && dm < 1e-5,
                    "{kind}/{name}: score diff {ds:.2e}, map diff {dm:.2e}"
                );
                // Not trivially equal: the images differ from their reconstructions.
                assert!(ws.iter().all(|v| *v > 1e-4), "{kind}/{name}: {ws:?}");
            }
        }
    }
}
