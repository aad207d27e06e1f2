//! Defects drawn onto a good part: a coverage map (`alpha`) per defect, blended into the
//! defective copy of the texture.

use std::f32::consts::PI;

use super::noise::{grain, hash01};
use super::Generator;
use crate::rng::Rng;

impl Generator {
    /// A random point in the central part of the image.
    fn centre_point(&mut self, margin: f32) -> (f32, f32) {
        let (w, h) = (self.width as f32, self.height as f32);
        (
            self.rng.range(margin * w, (1.0 - margin) * w),
            self.rng.range(margin * h, (1.0 - margin) * h),
        )
    }

    fn mean_base(&self) -> f32 {
        self.base.iter().sum::<f32>() / self.base.len() as f32
    }

    pub(super) fn scratch(&mut self) {
        let s = self.scale();
        let len = s * self.rng.range(0.28, 0.55);
        let nseg = 1 + self.rng.below(3);
        let width = (s * 0.012).max(1.3) * self.rng.range(0.9, 1.25);
        let mut angle = self.rng.range(0.0, PI);
        let c = self.centre_point(0.22);
        let mut p = (c.0 - angle.cos() * len / 2.0, c.1 - angle.sin() * len / 2.0);
        let strength = self.rng.range(0.8, 0.95);
        let mut segs = Vec::with_capacity(nseg);
        for _ in 0..nseg {
            let l = len / nseg as f32;
            let q = (p.0 + angle.cos() * l, p.1 + angle.sin() * l);
            segs.push((p, q, width));
            p = q;
            angle += 0.3 * self.rng.normal().clamp(-2.0, 2.0);
        }
        for &(a, b, wd) in &segs {
            self.segment_alpha(a, b, wd, strength);
        }
        let m = self.mean_base();
        let bright = if m < 0.45 {
            true
        } else if m > 0.72 {
            false
        } else {
            self.rng.uniform() < 0.6
        };
        let target = if bright {
            [0.97, 0.97, 0.98]
        } else {
            [0.08, 0.08, 0.09]
        };
        self.blend_mix(target, 0.0);
    }

    pub(super) fn crack(&mut self) {
        let s = self.scale();
        let len = s * self.rng.range(0.32, 0.55);
        let step = (s / 48.0).max(1.0);
        let wmax = (s * 0.014).max(1.5);
        let start = self.centre_point(0.3);
        let heading = self.rng.range(0.0, 2.0 * PI);
        let pts = self.random_walk(start, heading, len, step);
        self.polyline_alpha(&pts, wmax);
        if self.rng.uniform() < 0.5 && pts.len() > 4 {
            let k = pts.len() / 3 + self.rng.below(pts.len() / 3 + 1);
            let turn = self.rng.range(0.5, 1.0) * if self.rng.uniform() < 0.5 { 1.0 } else { -1.0 };
            let branch = self.random_walk(pts[k], heading + turn, len * 0.35, step);
            self.polyline_alpha(&branch, wmax * 0.7);
        }
        self.blend_mix([0.06, 0.05, 0.05], 0.0);
    }

    fn random_walk(
        &mut self,
        start: (f32, f32),
        heading0: f32,
        len: f32,
        step: f32,
    ) -> Vec<(f32, f32)> {
        let n = ((len / step).ceil() as usize).max(4);
        let mut pts = Vec::with_capacity(n + 1);
        let mut p = start;
        let mut h = heading0;
        pts.push(p);
        for _ in 0..n {
            h += 0.5 * self.rng.normal().clamp(-2.5, 2.5);
            h += 0.3 * (heading0 - h);
            p = (p.0 + h.cos() * step, p.1 + h.sin() * step);
            pts.push(p);
        }
        pts
    }

    /// Tapered polyline: full width in the middle, half at the ends.
    fn polyline_alpha(&mut self, pts: &[(f32, f32)], wmax: f32) {
        let n = pts.len().saturating_sub(1).max(1) as f32;
        for (i, pair) in pts.windows(2).enumerate() {
            let t = (i as f32 + 0.5) / n;
            let wd = wmax * (0.55 + 0.45 * (PI * t).sin());
            self.segment_alpha(pair[0], pair[1], wd, 0.92);
        }
    }

    pub(super) fn spot(&mut self) {
        let s = self.scale();
        let r = (s * self.rng.range(0.055, 0.10)).max(2.5);
        let c = self.centre_point(0.2);
        let shape = BlobShape::draw(&mut self.rng, 0.16, false);
        self.blob_alpha(c, r, &shape, 0.45, 0.92);
        let j = self.rng.range(0.85, 1.15);
        let factor = [0.40 * j, 0.32 * j, 0.24 * j];
        let n = self.width * self.height;
        for i in 0..n {
            let a = self.alpha[i];
            if a > 0.0 {
                for (v, f) in self.work[i * 3..i * 3 + 3].iter_mut().zip(factor) {
                    *v *= 1.0 - a * (1.0 - f);
                }
            }
        }
    }

    pub(super) fn missing(&mut self) {
        let s = self.scale();
        let r = (s * self.rng.range(0.07, 0.12)).max(3.0);
        let c = self.centre_point(0.2);
        let shape = BlobShape::draw(&mut self.rng, 0.24, true);
        self.blob_alpha(c, r, &shape, 0.0, 1.0);
        self.blend_mix([0.04, 0.04, 0.05], 0.015);
    }

    /// Coverage of a thick segment with a one-pixel anti-aliased edge, max-composited.
    fn segment_alpha(&mut self, a: (f32, f32), b: (f32, f32), width: f32, strength: f32) {
        let half = width / 2.0;
        let pad = half + 1.0;
        let Some((x0, x1, y0, y1)) = self.bbox(
            a.0.min(b.0) - pad,
            a.0.max(b.0) + pad,
            a.1.min(b.1) - pad,
            a.1.max(b.1) + pad,
        ) else {
            return;
        };
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = (dx * dx + dy * dy).max(1e-9);
        for y in y0..y1 {
            for x in x0..x1 {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0);
                let (ex, ey) = (px - a.0 - t * dx, py - a.1 - t * dy);
                let d = (ex * ex + ey * ey).sqrt();
                let cov = (half + 0.5 - d).clamp(0.0, 1.0) * strength;
                let al = &mut self.alpha[y * self.width + x];
                *al = al.max(cov);
            }
        }
    }

    /// Coverage of an irregular blob; `soft` is the fraction of the radius used for the fade
    /// (0 = hard edge with one-pixel anti-aliasing).
    fn blob_alpha(&mut self, c: (f32, f32), r: f32, shape: &BlobShape, soft: f32, strength: f32) {
        let reach = r * shape.max_factor() + 1.0;
        let Some((x0, x1, y0, y1)) = self.bbox(c.0 - reach, c.0 + reach, c.1 - reach, c.1 + reach)
        else {
            return;
        };
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f32 + 0.5 - c.0, y as f32 + 0.5 - c.1);
                let d = (dx * dx + dy * dy).sqrt();
                let rr = r * shape.factor(dy.atan2(dx));
                let cov = if soft > 0.0 {
                    let inner = rr * (1.0 - soft);
                    if d <= inner {
                        1.0
                    } else {
                        let t = ((rr - d) / (rr - inner)).clamp(0.0, 1.0);
                        t * t * (3.0 - 2.0 * t)
                    }
                } else {
                    (rr - d + 0.5).clamp(0.0, 1.0)
                };
                let al = &mut self.alpha[y * self.width + x];
                *al = al.max(cov * strength);
            }
        }
    }

    fn bbox(&self, x0: f32, x1: f32, y0: f32, y1: f32) -> Option<(usize, usize, usize, usize)> {
        let cx = |v: f32, n: usize| (v.max(0.0) as usize).min(n);
        let (a, b) = (cx(x0.floor(), self.width), cx(x1.ceil() + 1.0, self.width));
        let (c, d) = (
            cx(y0.floor(), self.height),
            cx(y1.ceil() + 1.0, self.height),
        );
        (a < b && c < d).then_some((a, b, c, d))
    }

    /// work = mix(work, target + noise, alpha).
    fn blend_mix(&mut self, target: [f32; 3], noise: f32) {
        let seed = self.rng.next_u64() as u32;
        let w = self.width;
        for i in 0..w * self.height {
            let a = self.alpha[i];
            if a > 0.0 {
                let n = if noise > 0.0 {
                    noise * grain(i % w, i / w, seed)
                } else {
                    0.0
                };
                for (v, t) in self.work[i * 3..i * 3 + 3].iter_mut().zip(target) {
                    *v = *v * (1.0 - a) + (t + n) * a;
                }
            }
        }
    }
}

/// Radius modulation r(θ) = 1 + Σ a_k cos(kθ + φ_k), optionally with angular jags.
struct BlobShape {
    harmonics: [(f32, f32); 4],
    jag: f32,
    jag_seed: u32,
}

impl BlobShape {
    fn draw(rng: &mut Rng, amp: f32, jagged: bool) -> Self {
        let mut harmonics = [(0.0, 0.0); 4];
        for (k, h) in harmonics.iter_mut().enumerate() {
            *h = (
                rng.range(0.0, amp) / (1.0 + k as f32 * 0.5),
                rng.range(0.0, 2.0 * PI),
            );
        }
        Self {
            harmonics,
            jag: if jagged { 0.08 } else { 0.0 },
            jag_seed: rng.next_u64() as u32,
        }
    }

    fn factor(&self, theta: f32) -> f32 {
        let mut f = 1.0;
        for (k, &(a, ph)) in self.harmonics.iter().enumerate() {
            f += a * ((k as f32 + 2.0) * theta + ph).cos();
        }
        if self.jag > 0.0 {
            // 24 angular bins, smoothly interpolated, wrapping at 2π.
            let t = (theta + PI) / (2.0 * PI) * 24.0;
            let i = t.floor();
            let fr = t - i;
            let i = i as i32;
            let a = hash01(i.rem_euclid(24), 0, self.jag_seed);
            let b = hash01((i + 1).rem_euclid(24), 0, self.jag_seed);
            f += self.jag * (2.0 * (a + (b - a) * fr) - 1.0);
        }
        f.max(0.3)
    }

    fn max_factor(&self) -> f32 {
        1.0 + self.harmonics.iter().map(|h| h.0).sum::<f32>() + self.jag
    }
}
