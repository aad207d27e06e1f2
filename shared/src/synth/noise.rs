//! Lattice hashes and smooth value noise: deterministic in the coordinates and a seed, so a
//! texture is a pure function of its parameters.

#[inline]
pub(super) fn hash(x: i32, y: i32, seed: u32) -> u32 {
    let mut h = (x as u32).wrapping_mul(0x8DA6_B343)
        ^ (y as u32).wrapping_mul(0xD816_3841)
        ^ seed.wrapping_mul(0xCB1A_B31F);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297A_2D39);
    h ^= h >> 15;
    h
}

/// Uniform in [0, 1) from lattice coordinates.
#[inline]
pub(super) fn hash01(x: i32, y: i32, seed: u32) -> f32 {
    (hash(x, y, seed) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Triangular noise in (-1, 1) per pixel.
#[inline]
pub(super) fn grain(x: usize, y: usize, seed: u32) -> f32 {
    let h = hash(x as i32, y as i32, seed);
    ((h & 0xFFFF) as f32 + (h >> 16) as f32) * (1.0 / 65_536.0) - 1.0
}

/// `x.floor() as i32` without a libm call (baseline x86-64 has no SSE4.1 `roundss`).
#[inline]
pub(super) fn ffloor(x: f32) -> i32 {
    let i = x as i32;
    if x < i as f32 {
        i - 1
    } else {
        i
    }
}

/// Smooth value noise in [0, 1].
#[inline]
pub(super) fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let (ix, iy) = (ffloor(x), ffloor(y));
    let (tx, ty) = (x - ix as f32, y - iy as f32);
    let sx = tx * tx * (3.0 - 2.0 * tx);
    let sy = ty * ty * (3.0 - 2.0 * ty);
    let a = hash01(ix, iy, seed);
    let b = hash01(ix.wrapping_add(1), iy, seed);
    let c = hash01(ix, iy.wrapping_add(1), seed);
    let d = hash01(ix.wrapping_add(1), iy.wrapping_add(1), seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}
