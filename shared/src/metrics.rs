//! Image- and pixel-level anomaly detection metrics, computed the way anomalib / scikit-learn
//! report them so that numbers can be compared with published ones.
//!
//! Conventions: a higher score is more anomalous; label `true` means anomalous (the positive
//! class); an image is flagged when `score >= threshold`. Samples with equal scores are never
//! separated: a threshold puts all of them on the same side, so the curves take one (possibly
//! diagonal) step per distinct score, as scikit-learn's do.

use crate::mask::connected_components;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("no samples: the metrics need at least one normal and one anomalous sample")]
    Empty,
    #[error("{scores} scores but {labels} labels")]
    LengthMismatch { scores: usize, labels: usize },
    #[error(
        "the test set has only {class} images: AUROC, AP and F1 need both normal and \
         anomalous ones"
    )]
    OneClass { class: &'static str },
    #[error("score {index} is not finite (NaN or infinite)")]
    NonFinite { index: usize },
    #[error("image {image}: anomaly map value {pixel} is not finite (NaN or infinite)")]
    NonFinitePixel { image: usize, pixel: usize },
    #[error(
        "image {image}: anomaly map has {map} pixels but its mask has {mask} (expected {expected})"
    )]
    MapSize {
        image: usize,
        map: usize,
        mask: usize,
        expected: usize,
    },
    #[error("{name} must be {must}, found {value}")]
    Argument {
        name: &'static str,
        must: &'static str,
        value: f64,
    },
}

/// Scores split by class, each sorted in descending order, with -0.0 folded into 0.0 so that
/// equal scores are adjacent.
struct Ranked {
    pos: Vec<f32>,
    neg: Vec<f32>,
}

impl Ranked {
    fn new(scores: &[f32], labels: &[bool]) -> Result<Ranked, MetricsError> {
        if scores.len() != labels.len() {
            return Err(MetricsError::LengthMismatch {
                scores: scores.len(),
                labels: labels.len(),
            });
        }
        if scores.is_empty() {
            return Err(MetricsError::Empty);
        }
        if let Some(index) = scores.iter().position(|s| !s.is_finite()) {
            return Err(MetricsError::NonFinite { index });
        }
        let n_pos = labels.iter().filter(|&&l| l).count();
        let mut pos = Vec::with_capacity(n_pos);
        let mut neg = Vec::with_capacity(labels.len() - n_pos);
        for (&s, &l) in scores.iter().zip(labels) {
            if l { &mut pos } else { &mut neg }.push(s + 0.0);
        }
        Ranked::from_parts(pos, neg)
    }

    fn from_parts(mut pos: Vec<f32>, mut neg: Vec<f32>) -> Result<Ranked, MetricsError> {
        if pos.is_empty() {
            return Err(MetricsError::OneClass { class: "normal" });
        }
        if neg.is_empty() {
            return Err(MetricsError::OneClass { class: "anomalous" });
        }
        pos.sort_unstable_by(|a, b| b.total_cmp(a));
        neg.sort_unstable_by(|a, b| b.total_cmp(a));
        Ok(Ranked { pos, neg })
    }

    fn p(&self) -> usize {
        self.pos.len()
    }

    fn n(&self) -> usize {
        self.neg.len()
    }

    /// Distinct scores from high to low, each with how many positives and negatives have it.
    fn groups(&self) -> Groups<'_> {
        Groups {
            pos: &self.pos,
            neg: &self.neg,
        }
    }

    /// Area under the ROC curve with integer arithmetic: each tie group adds a trapezoid of
    /// width fp_g and heights tp_before, tp_before + tp_g (all in counts), i.e.
    /// fp_g * (2 tp_before + tp_g) / 2, normalised by P * N.
    fn auc(&self) -> f64 {
        let (mut tp, mut twice_area) = (0u128, 0u128);
        for (_, dp, dn) in self.groups() {
            twice_area += dn as u128 * (2 * tp + dp as u128);
            tp += dp as u128;
        }
        twice_area as f64 / (2.0 * self.p() as f64 * self.n() as f64)
    }
}

struct Groups<'a> {
    pos: &'a [f32],
    neg: &'a [f32],
}

impl Iterator for Groups<'_> {
    /// (score, positives with that score, negatives with that score)
    type Item = (f32, usize, usize);

    fn next(&mut self) -> Option<Self::Item> {
        let t = match (self.pos.first(), self.neg.first()) {
            (Some(&a), Some(&b)) => a.max(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => return None,
        };
        let dp = self.pos.iter().take_while(|&&s| s == t).count();
        let dn = self.neg.iter().take_while(|&&s| s == t).count();
        self.pos = &self.pos[dp..];
        self.neg = &self.neg[dn..];
        Some((t, dp, dn))
    }
}

/// ROC curve points (fpr, tpr) from (0, 0) to (1, 1), one per distinct score (scikit-learn
/// without `drop_intermediate`). Tied scores make one diagonal step.
pub fn roc_curve(scores: &[f32], labels: &[bool]) -> Result<Vec<(f64, f64)>, MetricsError> {
    let r = Ranked::new(scores, labels)?;
    let (p, n) = (r.p() as f64, r.n() as f64);
    let mut curve = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (_, dp, dn) in r.groups() {
        tp += dp;
        fp += dn;
        curve.push((fp as f64 / n, tp as f64 / p));
    }
    Ok(curve)
}

/// Area under the ROC curve (trapezoids over [`roc_curve`], so a tie between a normal and an
/// anomalous sample counts 0.5, and all-equal scores give 0.5). Exact: computed in integers.
pub fn auroc(scores: &[f32], labels: &[bool]) -> Result<f64, MetricsError> {
    Ok(Ranked::new(scores, labels)?.auc())
}

/// Precision-recall points (recall, precision) in increasing recall: first (0, 1), then one
/// per distinct score from high to low, i.e. for thresholds "score >= s".
pub fn pr_curve(scores: &[f32], labels: &[bool]) -> Result<Vec<(f64, f64)>, MetricsError> {
    let r = Ranked::new(scores, labels)?;
    let p = r.p() as f64;
    let mut curve = vec![(0.0, 1.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (_, dp, dn) in r.groups() {
        tp += dp;
        fp += dn;
        curve.push((tp as f64 / p, tp as f64 / (tp + fp) as f64));
    }
    Ok(curve)
}

/// Average precision, scikit-learn's step-wise definition: sum over thresholds of
/// (R_n - R_{n-1}) * P_n, ties grouped (no interpolation, unlike the trapezoidal AUPRC).
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Result<f64, MetricsError> {
    let r = Ranked::new(scores, labels)?;
    let p = r.p() as f64;
    let (mut tp, mut fp, mut ap) = (0usize, 0usize, 0.0f64);
    for (_, dp, dn) in r.groups() {
        tp += dp;
        fp += dn;
        if dp > 0 {
            ap += dp as f64 / p * (tp as f64 / (tp + fp) as f64);
        }
    }
    Ok(ap)
}

/// F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + P); 0 when nothing is found.
fn f1(tp: usize, fp: usize, p: usize) -> f64 {
    if tp == 0 {
        0.0
    } else {
        2.0 * tp as f64 / (tp + fp + p) as f64
    }
}

/// The best F1 over thresholds "score >= t", t ranging over the observed scores, and that t.
/// Among equal F1 values the highest threshold (fewest alarms) wins.
pub fn best_f1(scores: &[f32], labels: &[bool]) -> Result<(f64, f32), MetricsError> {
    let r = Ranked::new(scores, labels)?;
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut best = (-1.0f64, f32::INFINITY);
    for (t, dp, dn) in r.groups() {
        tp += dp;
        fp += dn;
        let f = f1(tp, fp, r.p());
        if f > best.0 {
            best = (f, t);
        }
    }
    Ok(best)
}

/// F1 when "score >= threshold" is flagged anomalous.
pub fn f1_at(scores: &[f32], labels: &[bool], threshold: f32) -> Result<f64, MetricsError> {
    let r = Ranked::new(scores, labels)?;
    let tp = r.pos.iter().take_while(|&&s| s >= threshold).count();
    let fp = r.neg.iter().take_while(|&&s| s >= threshold).count();
    Ok(f1(tp, fp, r.p()))
}

/// The q-quantile with linear interpolation between order statistics (numpy's default
/// "linear" method: position q * (n - 1)). O(n) by selection; copies `values` once.
pub fn quantile(values: &[f32], q: f64) -> Result<f32, MetricsError> {
    if !(0.0..=1.0).contains(&q) {
        return Err(MetricsError::Argument {
            name: "quantile q",
            must: "in [0, 1]",
            value: q,
        });
    }
    if values.is_empty() {
        return Err(MetricsError::Empty);
    }
    if let Some(index) = values.iter().position(|s| !s.is_finite()) {
        return Err(MetricsError::NonFinite { index });
    }
    let mut v = values.to_vec();
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, &mut a, rest) = v.select_nth_unstable_by(lo, |x, y| x.total_cmp(y));
    if frac == 0.0 {
        return Ok(a);
    }
    // The next order statistic is the smallest of the upper part.
    let b = rest.iter().copied().fold(f32::INFINITY, f32::min);
    Ok((f64::from(a) + (f64::from(b) - f64::from(a)) * frac) as f32)
}

fn check_maps(
    maps: &[&[f32]],
    masks: &[&[bool]],
    expected: Option<usize>,
) -> Result<(), MetricsError> {
    if maps.len() != masks.len() {
        return Err(MetricsError::LengthMismatch {
            scores: maps.len(),
            labels: masks.len(),
        });
    }
    if maps.is_empty() {
        return Err(MetricsError::Empty);
    }
    for (image, (m, k)) in maps.iter().zip(masks).enumerate() {
        let expected = expected.unwrap_or(k.len());
        if m.len() != k.len() || m.len() != expected {
            return Err(MetricsError::MapSize {
                image,
                map: m.len(),
                mask: k.len(),
                expected,
            });
        }
        if let Some(pixel) = m.iter().position(|s| !s.is_finite()) {
            return Err(MetricsError::NonFinitePixel { image, pixel });
        }
    }
    Ok(())
}

/// Pixel-level AUROC over all pixels of all images pooled (anomalib's pixel AUROC). Exact:
/// one sort of the anomalous and one of the normal pixel scores, O(n log n), two allocations.
pub fn pixel_auroc(maps: &[&[f32]], masks: &[&[bool]]) -> Result<f64, MetricsError> {
    check_maps(maps, masks, None)?;
    let n_pos: usize = masks.iter().map(|k| k.iter().filter(|&&b| b).count()).sum();
    let total: usize = masks.iter().map(|k| k.len()).sum();
    let mut pos = Vec::with_capacity(n_pos);
    let mut neg = Vec::with_capacity(total - n_pos);
    for (m, k) in maps.iter().zip(masks) {
        for (&s, &l) in m.iter().zip(k.iter()) {
            if l { &mut pos } else { &mut neg }.push(s + 0.0);
        }
    }
    Ok(Ranked::from_parts(pos, neg)?.auc())
}

/// Area under the per-region-overlap curve up to `fpr_limit` (Bergmann et al., "The MVTec
/// Anomaly Detection Dataset", IJCV 2021), normalised by `fpr_limit` so a perfect map gives 1.
///
/// Regions are the 8-connected components of each ground-truth mask. For a threshold t,
/// PRO(t) is the mean over all regions of all images of |{p in region : map(p) >= t}| /
/// |region| (so a small defect weighs as much as a large one), and FPR(t) is the fraction of
/// normal pixels (mask false, in any image) with map >= t.
///
/// Rather than a finite set of thresholds this sweeps every distinct score exactly, like the
/// MVTec reference script: sort all pixels once (O(n log n)); going down the sorted list a
/// region pixel adds 1 / (|region| * n_regions) to PRO and a normal pixel 1 / n_normal to FPR.
/// Tied scores form one (diagonal) step. The curve is integrated with trapezoids and cut at
/// `fpr_limit` by linear interpolation. Memory: 8 bytes per pixel.
pub fn aupro(
    maps: &[&[f32]],
    masks: &[&[bool]],
    width: usize,
    height: usize,
    fpr_limit: f64,
) -> Result<f64, MetricsError> {
    if !(fpr_limit > 0.0 && fpr_limit <= 1.0) {
        return Err(MetricsError::Argument {
            name: "fpr_limit",
            must: "in (0, 1]",
            value: fpr_limit,
        });
    }
    check_maps(maps, masks, Some(width.saturating_mul(height)))?;
    let (mut pixels, region_size) = tag_pixels(maps, masks, width, height)?;
    let n_regions = region_size.len();
    let n_normal = pixels.iter().filter(|p| p.1 == 0).count();
    if n_regions == 0 {
        return Err(MetricsError::OneClass { class: "normal" });
    }
    if n_normal == 0 {
        return Err(MetricsError::OneClass { class: "anomalous" });
    }
    let region_weight: Vec<f64> = region_size
        .iter()
        .map(|&s| 1.0 / (f64::from(s) * n_regions as f64))
        .collect();
    pixels.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    Ok(pro_area(&pixels, &region_weight, n_normal, fpr_limit))
}

/// A pixel's score and its tag: 0 = normal, r + 1 = region r (numbered across all images).
type TaggedPixel = (f32, u32);

/// Every pixel of every image, tagged; and the size of each region.
fn tag_pixels(
    maps: &[&[f32]],
    masks: &[&[bool]],
    width: usize,
    height: usize,
) -> Result<(Vec<TaggedPixel>, Vec<u32>), MetricsError> {
    let mut pixels: Vec<TaggedPixel> = Vec::with_capacity(maps.len() * width * height);
    let mut region_size: Vec<u32> = Vec::new();
    let mut labels = vec![0u32; width * height];
    for (image, (m, k)) in maps.iter().zip(masks).enumerate() {
        // check_maps made every mask width * height long, so this cannot fail.
        let n = connected_components(k, width, height, &mut labels).map_err(|_| {
            MetricsError::MapSize {
                image,
                map: m.len(),
                mask: k.len(),
                expected: width * height,
            }
        })?;
        let base = region_size.len() as u32;
        region_size.resize(region_size.len() + n as usize, 0);
        for (&s, &l) in m.iter().zip(&labels) {
            let tag = if l == 0 { 0 } else { base + l };
            if l != 0 {
                region_size[(tag - 1) as usize] += 1;
            }
            pixels.push((s + 0.0, tag));
        }
    }
    Ok((pixels, region_size))
}

/// The normalised area under PRO(FPR) up to `fpr_limit`, sweeping `pixels` sorted by
/// descending score.
fn pro_area(pixels: &[(f32, u32)], region_weight: &[f64], n_normal: usize, fpr_limit: f64) -> f64 {
    let (mut fp, mut pro) = (0usize, 0.0f64);
    let (mut prev_fpr, mut prev_pro) = (0.0f64, 0.0f64);
    let mut area = 0.0f64;
    let mut i = 0;
    while i < pixels.len() {
        let t = pixels[i].0;
        while i < pixels.len() && pixels[i].0 == t {
            match pixels[i].1 {
                0 => fp += 1,
                tag => pro += region_weight[(tag - 1) as usize],
            }
            i += 1;
        }
        let fpr = fp as f64 / n_normal as f64;
        // Summing many small weights can overshoot 1 by an ulp.
        let pro_now = pro.min(1.0);
        if fpr >= fpr_limit {
            // Cut the last segment at the limit (linear interpolation).
            let at_limit = if fpr > prev_fpr {
                prev_pro + (pro_now - prev_pro) * (fpr_limit - prev_fpr) / (fpr - prev_fpr)
            } else {
                pro_now
            };
            area += (fpr_limit - prev_fpr) * (prev_pro + at_limit) / 2.0;
            return (area / fpr_limit).min(1.0);
        }
        area += (fpr - prev_fpr) * (prev_pro + pro_now) / 2.0;
        (prev_fpr, prev_pro) = (fpr, pro_now);
    }
    // Unreachable in practice: the sweep ends at FPR 1 >= fpr_limit.
    (area / fpr_limit).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: bool = true;
    const F: bool = false;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auroc_perfect_reversed_and_equal() {
        let labels = [F, F, T, T];
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &labels).unwrap(), 1.0);
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &labels).unwrap(), 0.0);
        assert_eq!(auroc(&[0.5; 4], &labels).unwrap(), 0.5);
        assert_eq!(
            roc_curve(&[0.5; 4], &labels).unwrap(),
            vec![(0.0, 0.0), (1.0, 1.0)]
        );
    }

    #[test]
    fn auroc_with_one_tie_by_hand() {
        // normal: 0.1, 0.5; anomalous: 0.5, 0.9.
        // Descending groups: 0.9 {1 pos} -> (0, 0.5); 0.5 {1 pos, 1 neg} -> (0.5, 1.0);
        // 0.1 {1 neg} -> (1, 1). Trapezoids: 0 * ... + 0.5 * (0.5 + 1) / 2 + 0.5 * (1 + 1) / 2
        // = 0.375 + 0.5 = 0.875. Pairwise check: of the 4 (pos, neg) pairs, 3 are ordered
        // right and one is tied (0.5 vs 0.5, counts 1/2): 3.5 / 4 = 0.875.
        let scores = [0.1, 0.5, 0.5, 0.9];
        let labels = [F, F, T, T];
        assert_eq!(
            roc_curve(&scores, &labels).unwrap(),
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        assert_eq!(auroc(&scores, &labels).unwrap(), 0.875);
    }

    #[test]
    fn negative_zero_ties_with_zero() {
        assert_eq!(auroc(&[-0.0, 0.0], &[F, T]).unwrap(), 0.5);
    }

    #[test]
    fn errors() {
        assert_eq!(
            auroc(&[0.1, 0.2], &[F, F]).unwrap_err(),
            MetricsError::OneClass { class: "normal" }
        );
        let e = auroc(&[0.1, 0.2], &[T, T]).unwrap_err();
        assert_eq!(e, MetricsError::OneClass { class: "anomalous" });
        assert!(e.to_string().contains("only anomalous images"), "{e}");
        assert_eq!(auroc(&[], &[]).unwrap_err(), MetricsError::Empty);
        assert_eq!(
            auroc(&[0.1], &[F, T]).unwrap_err(),
            MetricsError::LengthMismatch {
                scores: 1,
                labels: 2
            }
        );
        assert_eq!(
            auroc(&[0.1, f32::NAN], &[F, T]).unwrap_err(),
            MetricsError::NonFinite { index: 1 }
        );
    }

    #[test]
    fn average_precision_by_hand() {
        // Descending: 0.9 (T), 0.8 (F), 0.7 (T), 0.1 (F). P = 2.
        // Steps where recall grows: 0.9 -> R 0.5, P 1; 0.7 -> R 1, P 2/3.
        // AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
        let scores = [0.1, 0.7, 0.8, 0.9];
        let labels = [F, T, F, T];
        assert!(close(
            average_precision(&scores, &labels).unwrap(),
            5.0 / 6.0
        ));
        let pr = pr_curve(&scores, &labels).unwrap();
        assert_eq!(pr[0], (0.0, 1.0));
        assert_eq!(pr[1], (0.5, 1.0));
        assert_eq!(pr[2], (0.5, 0.5));
        assert!(close(pr[3].1, 2.0 / 3.0) && pr[3].0 == 1.0);
        assert_eq!(pr[4], (1.0, 0.5));
        // A tie of one T and one F at the top: one step R 0 -> 0.5 at P 1/2, then 0.1 (T)
        // -> R 1, P 2/3: AP = 0.25 + 1/3.
        let ap = average_precision(&[0.9, 0.9, 0.1, 0.0], &[T, F, T, F]).unwrap();
        assert!(close(ap, 0.25 + 1.0 / 3.0), "{ap}");
    }

    #[test]
    fn best_f1_and_f1_at() {
        // Descending: 0.9 T, 0.8 F, 0.7 T, 0.6 T, 0.1 F; P = 3.
        // t = 0.9: tp 1 fp 0 -> 2/4 = 0.5; t = 0.8: 1, 1 -> 2/5; t = 0.7: 2, 1 -> 4/6;
        // t = 0.6: 3, 1 -> 6/7 (best); t = 0.1: 3, 2 -> 6/8.
        let scores = [0.9, 0.8, 0.7, 0.6, 0.1];
        let labels = [T, F, T, T, F];
        let (f, t) = best_f1(&scores, &labels).unwrap();
        assert!(close(f, 6.0 / 7.0));
        assert_eq!(t, 0.6);
        assert!(close(f1_at(&scores, &labels, 0.75).unwrap(), 2.0 / 5.0));
        assert!(close(f1_at(&scores, &labels, 0.6).unwrap(), 6.0 / 7.0));
        assert_eq!(f1_at(&scores, &labels, 1.0).unwrap(), 0.0);
        // Perfect separation: the best threshold is the lowest anomalous score.
        let (f, t) = best_f1(&[0.1, 0.2, 0.8, 0.9], &[F, F, T, T]).unwrap();
        assert_eq!((f, t), (1.0, 0.8));
    }

    #[test]
    fn quantile_like_numpy() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.0).unwrap(), 1.0);
        assert_eq!(quantile(&v, 1.0).unwrap(), 4.0);
        // np.quantile([1, 2, 3, 4], 0.5) = 2.5 (position 1.5); 0.9 -> position 2.7 -> 3.7.
        assert_eq!(quantile(&v, 0.5).unwrap(), 2.5);
        assert!((quantile(&v, 0.9).unwrap() - 3.7).abs() < 1e-6);
        assert_eq!(quantile(&[7.0], 0.3).unwrap(), 7.0);
        assert_eq!(quantile(&[], 0.5).unwrap_err(), MetricsError::Empty);
        assert!(matches!(
            quantile(&v, 1.5),
            Err(MetricsError::Argument { .. })
        ));
    }

    #[test]
    fn pixel_auroc_two_maps() {
        // Image 0: map [0.9, 0.1], mask [T, F]; image 1: map [0.5, 0.3], mask [F, T].
        // Positives 0.9, 0.3; negatives 0.5, 0.1. Pairs: 0.9 beats both, 0.3 beats 0.1 only:
        // 3 / 4 = 0.75.
        let maps: [&[f32]; 2] = [&[0.9, 0.1], &[0.5, 0.3]];
        let masks: [&[bool]; 2] = [&[T, F], &[F, T]];
        assert_eq!(pixel_auroc(&maps, &masks).unwrap(), 0.75);
        let short: [&[bool]; 2] = [&[T, F], &[F]];
        assert!(matches!(
            pixel_auroc(&maps, &short),
            Err(MetricsError::MapSize { image: 1, .. })
        ));
    }

    #[test]
    fn aupro_perfect_map_is_one() {
        // 2x3 image with a 2-pixel defect, plus a normal image.
        let mask: &[bool] = &[T, T, F, F, F, F];
        let map: &[f32] = &[0.9, 0.8, 0.1, 0.2, 0.3, 0.1];
        let normal_mask: &[bool] = &[F; 6];
        let normal_map: &[f32] = &[0.5, 0.1, 0.1, 0.2, 0.3, 0.4];
        let a = aupro(&[map, normal_map], &[mask, normal_mask], 3, 2, 0.3).unwrap();
        assert!(close(a, 1.0), "{a}");
    }

    #[test]
    fn aupro_half_overlap_by_hand() {
        // 1x4: region {0, 1}, normal {2, 3}. Descending: 0.9 (region) -> PRO 0.5, FPR 0;
        // 0.5 (normal) -> FPR 0.5; 0.2 (normal) -> FPR 1; 0.1 (region) -> PRO 1.
        // Up to FPR 0.3 the curve sits at PRO 0.5: area 0.15, / 0.3 = 0.5.
        let mask: &[bool] = &[T, T, F, F];
        let map: &[f32] = &[0.9, 0.1, 0.5, 0.2];
        assert!(close(aupro(&[map], &[mask], 4, 1, 0.3).unwrap(), 0.5));
        // Over the whole FPR range: 0.5 * 1 (the final jump to PRO 1 is vertical at FPR 1).
        assert!(close(aupro(&[map], &[mask], 4, 1, 1.0).unwrap(), 0.5));
    }

    #[test]
    fn aupro_averages_regions_not_pixels_and_uses_8_connectivity() {
        // 2x4 mask: (0,0) and (1,1) touch diagonally -> one region of 2 pixels; (0,3) is a
        // second region. Only the single pixel (0,3) scores above all normal pixels, so PRO
        // jumps to (0 + 1) / 2 = 0.5 at FPR 0 (pixel-wise TPR would be 1/3; with
        // 4-connectivity there would be 3 regions and PRO 1/3).
        let mask: &[bool] = &[T, F, F, T, F, T, F, F];
        let map: &[f32] = &[0.0, 0.2, 0.2, 0.9, 0.2, 0.0, 0.2, 0.2];
        // Normals all at 0.2 (one tie group -> FPR 0 to 1 in one step at PRO 0.5), then the
        // two region pixels at 0.0: AUPRO = 0.5 for any limit.
        assert!(close(aupro(&[map], &[mask], 4, 2, 0.3).unwrap(), 0.5));
    }

    #[test]
    fn aupro_interpolates_at_the_limit() {
        // 1x3: region {0}, normal {1, 2}. Tie group 0.5 holds the region pixel and normal 1:
        // (0, 0) -> (0.5, 1) diagonally. At FPR 0.3 PRO is 0.6: area 0.3 * 0.6 / 2 = 0.09,
        // / 0.3 = 0.3.
        let mask: &[bool] = &[T, F, F];
        let map: &[f32] = &[0.5, 0.5, 0.1];
        assert!(close(aupro(&[map], &[mask], 3, 1, 0.3).unwrap(), 0.3));
        assert!(matches!(
            aupro(&[map], &[mask], 3, 1, 0.0),
            Err(MetricsError::Argument { .. })
        ));
        let no_defect: &[bool] = &[F, F, F];
        assert_eq!(
            aupro(&[map], &[no_defect], 3, 1, 0.3).unwrap_err(),
            MetricsError::OneClass { class: "normal" }
        );
    }

    #[test]
    fn pixel_auroc_is_fast_on_ten_million_pixels() {
        // 10k maps of 32x32: must take well under a second or two in release builds.
        let mut rng = crate::rng::Rng::new(7);
        let n = 32 * 32;
        let maps: Vec<Vec<f32>> = (0..10_000)
            .map(|_| (0..n).map(|_| rng.uniform()).collect())
            .collect();
        let masks: Vec<Vec<bool>> = maps
            .iter()
            .map(|m| m.iter().map(|&v| v > 0.9).collect())
            .collect();
        let maps_ref: Vec<&[f32]> = maps.iter().map(|m| m.as_slice()).collect();
        let masks_ref: Vec<&[bool]> = masks.iter().map(|m| m.as_slice()).collect();
        let start = std::time::Instant::now();
        let a = pixel_auroc(&maps_ref, &masks_ref).unwrap();
        let took = start.elapsed();
        assert_eq!(a, 1.0);
        if !cfg!(debug_assertions) {
            assert!(took.as_secs_f64() < 5.0, "pixel_auroc took {took:?}");
        }
    }
}
