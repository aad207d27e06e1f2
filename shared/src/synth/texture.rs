//! The good surface of each kind: brushed metal, woven fabric, casting plate, under the
//! lighting of one part.

use std::f32::consts::PI;

use super::noise::{ffloor, grain, hash, hash01, value_noise};
use super::{Generator, SurfaceKind};
use crate::rng::Rng;

impl Generator {
    pub(super) fn render_base(&mut self) {
        let light = Lighting::draw(&mut self.rng, self.width, self.height);
        match self.kind {
            SurfaceKind::BrushedMetal => self.render_metal(&light),
            SurfaceKind::WovenFabric => self.render_fabric(&light),
            SurfaceKind::CastingPlate => self.render_casting(&light),
        }
    }

    fn render_metal(&mut self, light: &Lighting) {
        const TINT: [f32; 3] = [0.97, 1.0, 1.04];
        let s = self.scale();
        let rng = &mut self.rng;
        let theta = rng.range(-0.05, 0.05);
        let (sn, cs) = theta.sin_cos();
        let across = (s / 110.0).max(0.55);
        let along = s * 0.35;
        let seed = rng.next_u64() as u32;
        let (ox, oy) = (rng.range(0.0, 512.0), rng.range(0.0, 512.0));
        let level = 0.57 + 0.015 * rng.normal().clamp(-2.5, 2.5);
        let w = self.width;
        for y in 0..self.height {
            for x in 0..w {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let u = px * cs + py * sn;
                let v = -px * sn + py * cs;
                let mut streak = 0.55 * (value_noise(u / along + ox, v / across + oy, seed) - 0.5)
                    + 0.35
                        * (value_noise(u / (along * 0.2) + oy, v / (across * 2.5) + ox, seed ^ 1)
                            - 0.5);
                let groove_row = ffloor(v / (across * 1.8) + oy);
                let g = hash01(groove_row, 7, seed ^ 2);
                if g > 0.93 {
                    let sign = if hash(groove_row, 11, seed ^ 3) & 1 == 0 {
                        1.0
                    } else {
                        -1.0
                    };
                    let fade = value_noise(u / (along * 0.5) + ox, groove_row as f32, seed ^ 4);
                    streak += sign * 0.6 * ((g - 0.93) / 0.07) * fade;
                }
                let val = level * light.at(px, py) + 0.17 * streak + 0.018 * grain(x, y, seed ^ 5);
                let o = (y * w + x) * 3;
                for (v, t) in self.base[o..o + 3].iter_mut().zip(TINT) {
                    *v = val * t;
                }
            }
        }
    }

    fn render_fabric(&mut self, light: &Lighting) {
        const WARP: [f32; 3] = [0.40, 0.46, 0.62];
        const WEFT: [f32; 3] = [0.66, 0.66, 0.68];
        let s = self.scale();
        let rng = &mut self.rng;
        let pitch = (s / 12.0).max(4.0) * (1.0 + 0.01 * rng.normal().clamp(-2.5, 2.5));
        let theta = rng.range(-0.035, 0.035);
        let (sn, cs) = theta.sin_cos();
        let (u0, v0) = (rng.range(0.0, 2.0 * pitch), rng.range(0.0, 2.0 * pitch));
        let seed = rng.next_u64() as u32;
        // Supersample fine weaves so that pattern phase does not alias into moiré.
        let ss: usize = if pitch < 8.0 { 2 } else { 1 };
        let inv = 1.0 / (ss * ss) as f32;
        let w = self.width;
        let sample = |px: f32, py: f32| -> [f32; 3] {
            let u = px * cs + py * sn + u0;
            let v = -px * sn + py * cs + v0;
            let (a, b) = (u / pitch, v / pitch);
            let (i, j) = (ffloor(a), ffloor(b));
            let (fa, fb) = (a - i as f32, b - j as f32);
            let warp_top = (i.wrapping_add(j)) & 1 == 0;
            let (across, along, tid, colour, cu, cv) = if warp_top {
                (fa, fb, i, WARP, u, v)
            } else {
                (fb, fa, j.wrapping_add(1 << 20), WEFT, v, u)
            };
            let prof = (PI * across).sin().max(0.0).sqrt();
            let dip = 0.72 + 0.28 * (PI * along).sin();
            let var = 1.0 + 0.16 * (hash01(tid, 3, seed) - 0.5);
            let fibre = value_noise(cu / (pitch * 0.15), cv / (pitch * 0.8), seed ^ 1) - 0.5;
            let shade = (0.30 + 0.70 * prof * dip) * var * (1.0 + 0.22 * fibre);
            [colour[0] * shade, colour[1] * shade, colour[2] * shade]
        };
        for y in 0..self.height {
            for x in 0..w {
                let mut acc = [0.0f32; 3];
                for sy in 0..ss {
                    for sx in 0..ss {
                        let px = x as f32 + (sx as f32 + 0.5) / ss as f32;
                        let py = y as f32 + (sy as f32 + 0.5) / ss as f32;
                        let c = sample(px, py);
                        acc[0] += c[0];
                        acc[1] += c[1];
                        acc[2] += c[2];
                    }
                }
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let l = light.at(px, py);
                let n = 0.015 * grain(x, y, seed ^ 2);
                let o = (y * w + x) * 3;
                for (v, a) in self.base[o..o + 3].iter_mut().zip(acc) {
                    *v = a * inv * l + n;
                }
            }
        }
    }

    fn render_casting(&mut self, light: &Lighting) {
        const TINT: [f32; 3] = [1.0, 0.97, 0.92];
        let s = self.scale();
        let rng = &mut self.rng;
        let seed = rng.next_u64() as u32;
        let (ox, oy) = (rng.range(0.0, 512.0), rng.range(0.0, 512.0));
        let level = 0.50 + 0.015 * rng.normal().clamp(-2.5, 2.5);
        let fine = (s / 200.0).max(0.7);
        let mid = (s / 40.0).max(1.5);
        let coarse = s / 8.0;
        let cell = (s / 16.0).max(3.0);
        let pore_r = (s / 90.0).max(0.6);
        let w = self.width;
        for y in 0..self.height {
            for x in 0..w {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let (qx, qy) = (px + ox * cell, py + oy * cell);
                let mut val = level * light.at(px, py)
                    + 0.09 * (value_noise(qx / fine, qy / fine, seed) - 0.5)
                    + 0.08 * (value_noise(qx / mid, qy / mid, seed ^ 1) - 0.5)
                    + 0.06 * (value_noise(qx / coarse, qy / coarse, seed ^ 2) - 0.5);
                // Pores: at most one per cell, well inside it.
                let (ci, cj) = (ffloor(qx / cell), ffloor(qy / cell));
                let h = hash(ci, cj, seed ^ 3);
                if h % 100 < 18 {
                    let cx = (ci as f32 + 0.3 + 0.4 * hash01(ci, cj, seed ^ 4)) * cell;
                    let cy = (cj as f32 + 0.3 + 0.4 * hash01(ci, cj, seed ^ 5)) * cell;
                    let r = pore_r * (0.7 + 0.6 * hash01(ci, cj, seed ^ 6));
                    let d = ((qx - cx).powi(2) + (qy - cy).powi(2)).sqrt();
                    if d < r {
                        val *= 1.0 - 0.35 * (1.0 - d / r);
                    }
                }
                val += 0.02 * grain(x, y, seed ^ 7);
                let o = (y * w + x) * 3;
                for (v, t) in self.base[o..o + 3].iter_mut().zip(TINT) {
                    *v = val * t;
                }
            }
        }
    }
}

/// Linear gradient in a random direction plus a broad smooth bump: the lighting of one part.
/// Smooth at the scale of the part, so it is evaluated on a coarse grid and interpolated.
struct Lighting {
    step: f32,
    grid_w: usize,
    grid: Vec<f32>,
}

impl Lighting {
    fn draw(rng: &mut Rng, width: usize, height: usize) -> Self {
        let s = width.min(height) as f32;
        let phi = rng.range(0.0, 2.0 * PI);
        let dir = (phi.cos(), phi.sin());
        let amp = rng.range(0.0, 0.16);
        let blob_amp = rng.range(0.04, 0.12);
        let blob_scale = s * 0.6;
        let (ox, oy) = (rng.range(0.0, 256.0), rng.range(0.0, 256.0));
        let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
        let seed = rng.next_u64() as u32;
        let exact = |x: f32, y: f32| {
            let g = ((x - cx) * dir.0 + (y - cy) * dir.1) / s;
            let b = value_noise(x / blob_scale + ox, y / blob_scale + oy, seed) - 0.5;
            1.0 + amp * g + blob_amp * b
        };
        let step = (s / 32.0).clamp(1.0, 8.0);
        let grid_w = (width as f32 / step).ceil() as usize + 2;
        let grid_h = (height as f32 / step).ceil() as usize + 2;
        let mut grid = Vec::with_capacity(grid_w * grid_h);
        for gy in 0..grid_h {
            for gx in 0..grid_w {
                grid.push(exact(gx as f32 * step, gy as f32 * step));
            }
        }
        Self { step, grid_w, grid }
    }

    /// Lighting factor at (x, y) in pixel coordinates (within the image).
    #[inline]
    fn at(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x / self.step, y / self.step);
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - ix as f32, fy - iy as f32);
        let o = iy * self.grid_w + ix;
        let g = &self.grid;
        let top = g[o] + (g[o + 1] - g[o]) * tx;
        let bottom = g[o + self.grid_w] + (g[o + self.grid_w + 1] - g[o + self.grid_w]) * tx;
        top + (bottom - top) * ty
    }
}
