//! Vigil's own anomaly synthesiser: seeded, on `[N, C, H, W]` batches in [-1, 1], for detectors
//! that learn to segment anomalies they never see in the training data (`seg`).
//!
//! Written from the recipe of DRAEM (Zavrtanik et al. 2021): a thresholded Perlin-noise mask at
//! a random scale and rotation, filled with foreign content and blended in at a random opacity;
//! plus thin strokes and small spots, which Perlin blobs rarely look like. Foreign content is
//! another image of the batch (shifted and flipped), procedural noise, or a plain colour,
//! restyled photometrically (inverted, gamma, gain, posterised, solarised) so that it differs
//! from the surface: never anything from outside the training images, and nothing from the
//! defect generator the real-surface benchmark tests with, so training cannot learn that
//! generator's look.

use vigil_shared::rng::Rng;

/// Share of the batch left clean: the segmentation network must also learn to say "nothing".
pub const CLEAN_SHARE: f32 = 0.5;
/// Opacity of the foreign content: DRAEM's 1 − β with β ∈ [0, 0.8].
const OPACITY: (f32, f32) = (0.2, 1.0);

/// One corrupted batch: the images and their masks `[N, 1, H, W]` (1 where content was changed).
pub struct Corrupted {
    pub images: Vec<f32>,
    pub masks: Vec<f32>,
}

/// Corrupts about half of `images` (`[n, c, h, w]`, values in [-1, 1]); each sample is left
/// clean with probability [`CLEAN_SHARE`]. The same `rng` state gives the same batch.
pub fn corrupt(images: &[f32], [n, c, h, w]: [usize; 4], rng: &mut Rng) -> Corrupted {
    assert_eq!(
        images.len(),
        n * c * h * w,
        "corrupt: images are not [n, c, h, w]"
    );
    let plane = h * w;
    let mut out = images.to_vec();
    let mut masks = vec![0f32; n * plane];
    for i in 0..n {
        if rng.uniform() < CLEAN_SHARE {
            continue;
        }
        let mask = &mut masks[i * plane..(i + 1) * plane];
        let kind = rng.uniform();
        let painted = if kind < 0.6 {
            blob(images, [n, c, h, w], i, rng, mask, &mut out)
        } else {
            let strokes = kind < 0.8;
            marks(
                strokes,
                [c, h, w],
                rng,
                mask,
                &mut out[i * c * plane..(i + 1) * c * plane],
            )
        };
        if !painted {
            mask.fill(0.0);
        }
    }
    Corrupted { images: out, masks }
}

/// A Perlin blob filled with foreign content. False if the mask came out empty.
fn blob(
    images: &[f32],
    [n, c, h, w]: [usize; 4],
    i: usize,
    rng: &mut Rng,
    mask: &mut [f32],
    out: &mut [f32],
) -> bool {
    let plane = h * w;
    // A few tries: at high thresholds a coarse noise field can miss the image entirely.
    let mut any = false;
    for _ in 0..4 {
        perlin_mask(h, w, rng, mask);
        if mask.iter().any(|&m| m > 0.0) {
            any = true;
            break;
        }
    }
    if !any {
        return false;
    }
    let mut fill = foreign(images, [n, c, h, w], i, rng);
    restyle(&mut fill, [c, h, w], rng);
    let a = rng.range(OPACITY.0, OPACITY.1);
    let dst = &mut out[i * c * plane..(i + 1) * c * plane];
    for ch in 0..c {
        for p in 0..plane {
            if mask[p] > 0.0 {
                let v = &mut dst[ch * plane + p];
                *v = (*v * (1.0 - a) + fill[ch * plane + p] * a).clamp(-1.0, 1.0);
            }
        }
    }
    true
}

/// Foreign content `[c, h, w]` for sample `i`: another image of the batch (rolled and maybe
/// flipped), procedural noise, or a plain colour.
fn foreign(images: &[f32], [n, c, h, w]: [usize; 4], i: usize, rng: &mut Rng) -> Vec<f32> {
    let plane = h * w;
    let choice = rng.uniform();
    if choice < 0.4 {
        let j = if n > 1 {
            (i + 1 + rng.below(n - 1)) % n
        } else {
            i
        };
        let (dy, dx) = (rng.below(h), rng.below(w));
        let (fy, fx) = (rng.uniform() < 0.5, rng.uniform() < 0.5);
        let src = &images[j * c * plane..(j + 1) * c * plane];
        let mut v = vec![0f32; c * plane];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let sy = (if fy { h - 1 - y } else { y } + dy) % h;
                    let sx = (if fx { w - 1 - x } else { x } + dx) % w;
                    v[ch * plane + y * w + x] = src[ch * plane + sy * w + sx];
                }
            }
        }
        v
    } else if choice < 0.75 {
        let mut v = vec![0f32; c * plane];
        let cells = 2usize << rng.below(4);
        let contrast = rng.range(0.5, 2.5);
        for ch in 0..c {
            let field = Perlin::new(rng, cells as f32 / h.max(w) as f32);
            let base = rng.range(-0.6, 0.6);
            for y in 0..h {
                for x in 0..w {
                    let val = base + contrast * field.at(y as f32, x as f32);
                    v[ch * plane + y * w + x] = val.clamp(-1.0, 1.0);
                }
            }
        }
        v
    } else {
        let mut v = vec![0f32; c * plane];
        for ch in 0..c {
            let colour = rng.range(-1.0, 1.0);
            v[ch * plane..(ch + 1) * plane].fill(colour);
        }
        v
    }
}

/// Restyles foreign content with 1–3 distinct photometric changes (and maybe a quarter turn),
/// as DRAEM augments its anomaly source. Without it a blob filled from another image of the same
/// stochastic surface (gravel) is the surface itself, and the segmenter learns to flag normal
/// stones: the labels must mark content that differs from the surface.
fn restyle(v: &mut [f32], [c, h, w]: [usize; 3], rng: &mut Rng) {
    const KINDS: usize = 5;
    let mut order: Vec<usize> = (0..KINDS).collect();
    rng.shuffle(&mut order);
    for &kind in &order[..1 + rng.below(3)] {
        match kind {
            0 => v.iter_mut().for_each(|x| *x = -*x),
            1 => {
                // Gamma on [0, 1]: darkens or lightens the mid-tones.
                let g = if rng.uniform() < 0.5 {
                    rng.range(0.35, 0.7)
                } else {
                    rng.range(1.5, 3.0)
                };
                v.iter_mut()
                    .for_each(|x| *x = ((*x + 1.0) * 0.5).max(0.0).powf(g) * 2.0 - 1.0);
            }
            2 => {
                let gain = rng.range(0.3, 1.8);
                let shift = rng.range(-0.6, 0.6);
                v.iter_mut()
                    .for_each(|x| *x = (*x * gain + shift).clamp(-1.0, 1.0));
            }
            3 => {
                let levels = (2 + rng.below(3)) as f32;
                v.iter_mut().for_each(|x| {
                    let q = ((*x + 1.0) * 0.5 * levels).floor().min(levels - 1.0);
                    *x = q / (levels - 1.0) * 2.0 - 1.0;
                });
            }
            _ => {
                let t = rng.range(-0.2, 0.6);
                v.iter_mut().for_each(|x| {
                    if *x > t {
                        *x = -*x
                    }
                });
            }
        }
    }
    if h == w && rng.uniform() < 0.5 {
        // A quarter turn: oriented surfaces (wood) then get grain across the grain.
        let plane = h * w;
        for ch in 0..c {
            let src = v[ch * plane..(ch + 1) * plane].to_vec();
            for y in 0..h {
                for x in 0..w {
                    v[ch * plane + y * w + x] = src[x * w + (w - 1 - y)];
                }
            }
        }
    }
}

/// Thin strokes (a polyline, 1–3 px wide) or a few small spots, darker or lighter than the
/// surface, written into `img` `[c, h, w]`. False if nothing was drawn.
fn marks(
    strokes: bool,
    [c, h, w]: [usize; 3],
    rng: &mut Rng,
    mask: &mut [f32],
    img: &mut [f32],
) -> bool {
    let side = h.min(w) as f32;
    if strokes {
        let (mut y, mut x) = (rng.range(0.0, h as f32), rng.range(0.0, w as f32));
        let radius = rng.range(0.5, 1.6);
        for _ in 0..1 + rng.below(3) {
            let angle = rng.range(0.0, std::f32::consts::TAU);
            let len = rng.range(side / 8.0, side / 2.0);
            let (y1, x1) = (y + len * angle.sin(), x + len * angle.cos());
            paint(mask, h, w, |py, px| {
                segment_distance(py, px, (y, x), (y1, x1)) <= radius
            });
            (y, x) = (y1, x1);
        }
    } else {
        for _ in 0..1 + rng.below(3) {
            let r = rng.range(1.0, (side / 12.0).max(1.5));
            let (cy, cx) = (rng.range(0.0, h as f32), rng.range(0.0, w as f32));
            paint(mask, h, w, |py, px| (py - cy).hypot(px - cx) <= r);
        }
    }
    if !mask.iter().any(|&m| m > 0.0) {
        return false;
    }
    let plane = h * w;
    let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
    let shift = sign * rng.range(0.3, 1.0);
    let a = rng.range(0.5, 1.0);
    for ch in 0..c {
        for p in 0..plane {
            if mask[p] > 0.0 {
                let v = &mut img[ch * plane + p];
                *v = (*v + shift * a).clamp(-1.0, 1.0);
            }
        }
    }
    true
}

fn paint(mask: &mut [f32], h: usize, w: usize, inside: impl Fn(f32, f32) -> bool) {
    for y in 0..h {
        for x in 0..w {
            if inside(y as f32 + 0.5, x as f32 + 0.5) {
                mask[y * w + x] = 1.0;
            }
        }
    }
}

fn segment_distance(py: f32, px: f32, (ay, ax): (f32, f32), (by, bx): (f32, f32)) -> f32 {
    let (dy, dx) = (by - ay, bx - ax);
    let len2 = dy * dy + dx * dx;
    let t = if len2 > 0.0 {
        (((py - ay) * dy + (px - ax) * dx) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (py - (ay + t * dy)).hypot(px - (ax + t * dx))
}

/// A thresholded Perlin field at a random scale (1–8 lattice cells across the image) and
/// rotation, written into `mask` as 0/1.
fn perlin_mask(h: usize, w: usize, rng: &mut Rng, mask: &mut [f32]) {
    let cells = 1usize << rng.below(4);
    let field = Perlin::new(rng, cells as f32 / h.max(w) as f32);
    // Single-octave Perlin values lie in about ±0.7; these thresholds keep ~3–25 % of it.
    let threshold = rng.range(0.2, 0.45);
    for y in 0..h {
        for x in 0..w {
            mask[y * w + x] = f32::from(field.at(y as f32, x as f32) > threshold);
        }
    }
}

/// Single-octave 2-D gradient noise (Perlin 2002) with hashed lattice gradients, sampled in
/// pixel coordinates rotated by a random angle and scaled by `freq` lattice cells per pixel.
struct Perlin {
    seed: u64,
    freq: f32,
    cos: f32,
    sin: f32,
    offset: (f32, f32),
}

impl Perlin {
    /// A field at a random rotation and offset.
    fn new(rng: &mut Rng, freq: f32) -> Self {
        let angle = rng.range(0.0, std::f32::consts::TAU);
        Self {
            seed: rng.next_u64(),
            freq,
            cos: angle.cos(),
            sin: angle.sin(),
            offset: (rng.range(0.0, 64.0), rng.range(0.0, 64.0)),
        }
    }

    fn gradient(&self, iy: i64, ix: i64) -> (f32, f32) {
        let mut z = self.seed
            ^ (iy as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (ix as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let angle = (z >> 40) as f32 / (1u64 << 24) as f32 * std::f32::consts::TAU;
        (angle.sin(), angle.cos())
    }

    fn at(&self, y: f32, x: f32) -> f32 {
        let (ry, rx) = (self.cos * y + self.sin * x, self.cos * x - self.sin * y);
        let (fy, fx) = (
            ry * self.freq + self.offset.0,
            rx * self.freq + self.offset.1,
        );
        let (y0, x0) = (fy.floor(), fx.floor());
        let (ty, tx) = (fy - y0, fx - x0);
        let (iy, ix) = (y0 as i64, x0 as i64);
        let dot = |cy: i64, cx: i64| {
            let (gy, gx) = self.gradient(iy + cy, ix + cx);
            gy * (ty - cy as f32) + gx * (tx - cx as f32)
        };
        let fade = |t: f32| t * t * t * (t * (t * 6.0 - 15.0) + 10.0);
        let (uy, ux) = (fade(ty), fade(tx));
        let top = dot(0, 0) + ux * (dot(0, 1) - dot(0, 0));
        let bottom = dot(1, 0) + ux * (dot(1, 1) - dot(1, 0));
        top + uy * (bottom - top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn surface(n: usize, c: usize, s: usize) -> Vec<f32> {
        (0..n * c * s * s)
            .map(|i| ((i % s) as f32 * 0.7).sin() * 0.4)
            .collect()
    }

    #[test]
    fn same_seed_same_batch_and_changes_only_inside_the_mask() {
        let (n, c, s) = (64, 2, 32);
        let x = surface(n, c, s);
        let a = corrupt(&x, [n, c, s, s], &mut Rng::new(5));
        let b = corrupt(&x, [n, c, s, s], &mut Rng::new(5));
        assert_eq!(a.images, b.images);
        assert_eq!(a.masks, b.masks);
        let plane = s * s;
        let mut corrupted = 0;
        for i in 0..n {
            let m = &a.masks[i * plane..(i + 1) * plane];
            let area = m.iter().filter(|&&v| v > 0.0).count();
            if area > 0 {
                corrupted += 1;
                // Masks are regions, not the whole image.
                assert!(area < plane, "sample {i}: the mask covers everything");
            }
            for ch in 0..c {
                for (p, &mp) in m.iter().enumerate() {
                    let k = (i * c + ch) * plane + p;
                    assert!((-1.0..=1.0).contains(&a.images[k]));
                    if mp == 0.0 {
                        assert_eq!(a.images[k], x[k], "sample {i} changed outside its mask");
                    }
                }
            }
        }
        // About half the batch is corrupted (binomial(64, 0.5) lies in 16..48 with
        // overwhelming probability; the seed is fixed anyway).
        assert!(
            (16..48).contains(&corrupted),
            "{corrupted} of {n} corrupted"
        );
        assert_ne!(a.images, corrupt(&x, [n, c, s, s], &mut Rng::new(6)).images);
    }

    #[test]
    fn restyled_content_differs_visibly_from_the_surface() {
        let (c, s) = (1, 32);
        let x = surface(1, c, s);
        let mut rng = Rng::new(3);
        let visible = (0..200)
            .filter(|_| {
                let mut v = x.clone();
                restyle(&mut v, [c, s, s], &mut rng);
                assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)));
                let diff = v.iter().zip(&x).map(|(a, b)| (a - b).abs()).sum::<f32>();
                diff / v.len() as f32 > 0.05
            })
            .count();
        // A near-identity gain is possible, but rare.
        assert!(visible >= 180, "{visible} of 200 restylings are visible");
    }

    #[test]
    fn every_kind_of_anomaly_appears_and_marks_are_small() {
        let (n, s) = (200, 64);
        let x = surface(n, 1, s);
        let out = corrupt(&x, [n, 1, s, s], &mut Rng::new(1));
        let areas: Vec<usize> = out
            .masks
            .chunks(s * s)
            .map(|m| m.iter().filter(|&&v| v > 0.0).count())
            .filter(|&a| a > 0)
            .collect();
        // Strokes and spots give small masks (tens of pixels), blobs larger ones.
        assert!(areas.iter().any(|&a| a < 60), "{areas:?}");
        assert!(areas.iter().any(|&a| a > 400), "{areas:?}");
    }
}
