//! `seg`'s scorer: the restoration network, the segmentation U-Net on (x, G(x)), the
//! segmentation probability smoothed as the anomaly map, and its max / top 1 % mean, or the
//! mean restoration residual, as the score (`Seg::infer` in evaluation mode).

use super::graph::GraphBuilder;
use super::layers::{batch_norm, conv_w};
use super::maps::reduce;
use super::{ExportError, Reconstruction, Weights};
use crate::maps::Reduction;
use crate::seg::{base_width, restoration_plan, Op, DEPTH};
use crate::ModelConfig;

/// What the scorer's heads read: the reconstruction (for the map scores) and the smoothed
/// segmentation map `[N, 1, S, S]`.
pub struct SegGraph {
    pub r: Reconstruction,
    pub map: String,
}

/// `seg::Block`: the layer with its batch norm folded in, then ReLU.
fn block(
    b: &mut GraphBuilder,
    w: &Weights,
    name: &str,
    (op, cin, cout): (Op, usize, usize),
    h: &str,
) -> Result<String, ExportError> {
    let bn = batch_norm(w, &format!("{name}.bn"), cout)?;
    let conv = format!("{name}.conv");
    let y = match op {
        Op::Conv3 => b.conv(
            h,
            &conv_w(w, &conv, [cout, cin, 3, 3])?.fold_bn(&bn, 0),
            1,
            1,
        ),
        Op::Down => b.conv(
            h,
            &conv_w(w, &conv, [cout, cin, 4, 4])?.fold_bn(&bn, 0),
            2,
            1,
        ),
        Op::Up => b.conv_transpose(
            h,
            &conv_w(w, &conv, [cin, cout, 4, 4])?.fold_bn(&bn, 1),
            2,
            1,
        ),
    };
    Ok(b.unary("Relu", &y))
}

/// G, then S, on `image` `[N, C, S, S]`.
pub fn build(
    b: &mut GraphBuilder,
    w: &Weights,
    cfg: &ModelConfig,
    image: &str,
) -> Result<SegGraph, ExportError> {
    let (c, s) = (cfg.channels, cfg.size);
    if !s.is_multiple_of(1 << DEPTH) {
        return Err(ExportError::Unsupported(format!(
            "seg needs an input side divisible by 8, not {s}"
        )));
    }
    let base = base_width(cfg);
    let mut h = image.to_string();
    let mut bottleneck = h.clone();
    for (name, op, cin, cout) in restoration_plan(c, base) {
        h = block(b, w, &format!("g.{name}"), (op, cin, cout), &h)?;
        if name == format!("mid{DEPTH}") {
            bottleneck = h.clone();
        }
    }
    let y = b.conv(&h, &conv_w(w, "g.head", [c, base, 3, 3])?, 1, 1);
    let x_hat = b.unary("Tanh", &y);
    let diff = b.binary("Sub", image, &x_hat);
    let abs = b.unary("Abs", &diff);

    let pair = b.concat(&[image, &x_hat], 1);
    let h = block(b, w, "s.in", (Op::Conv3, 2 * c, base), &pair)?;
    let mut skips = vec![block(b, w, "s.in2", (Op::Conv3, base, base), &h)?];
    for i in 1..=DEPTH {
        let ch = base << (i - 1);
        let last = skips.last().expect("entry").clone();
        let h = block(b, w, &format!("s.down{i}"), (Op::Down, ch, 2 * ch), &last)?;
        skips.push(block(
            b,
            w,
            &format!("s.mid{i}"),
            (Op::Conv3, 2 * ch, 2 * ch),
            &h,
        )?);
    }
    let mut h = skips.pop().expect("bottleneck");
    for i in (1..=DEPTH).rev() {
        let ch = base << (i - 1);
        let skip = skips.pop().expect("one skip per level");
        let up = block(b, w, &format!("s.up{i}"), (Op::Up, 2 * ch, ch), &h)?;
        let cat = b.concat(&[&up, &skip], 1);
        h = block(b, w, &format!("s.fuse{i}"), (Op::Conv3, 2 * ch, ch), &cat)?;
    }
    let mut head = conv_w(w, "s.head", [1, base, 3, 3])?;
    head.bias = Some(w.get("s.head.bias", &[1])?);
    let logits = b.conv(&h, &head, 1, 1);
    let p = b.unary("Sigmoid", &logits);
    let map = b.gaussian_smooth(&p, cfg.sigma, s, s);
    Ok(SegGraph {
        r: Reconstruction {
            x: image.to_string(),
            z: bottleneck,
            x_hat,
            diff,
            abs,
        },
        map,
    })
}

/// The value of `seg`'s own score `score` (`[N]`).
pub fn score(
    b: &mut GraphBuilder,
    g: &SegGraph,
    cfg: &ModelConfig,
    score: &str,
) -> Result<String, ExportError> {
    let s = cfg.size;
    Ok(match score {
        "seg-max" => reduce(b, &g.map, Reduction::Max, s, s),
        "seg-topk" => reduce(b, &g.map, Reduction::TopK, s, s),
        "residual" => b.per_sample_mean(&g.r.abs),
        other => return Err(ExportError::UnknownScore(other.to_string())),
    })
}
