//! vigild cuts and stitches every frame of a patch bundle: after `Tiling::new`, cutting,
//! stitching and reducing must not allocate. A counting global allocator (per thread, so the
//! test harness's other threads do not disturb the count) around the per-frame calls.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vigil_shared::tiles::{max_over_tiles, PatchSpec, Tiling};

struct Counting;
thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        System.realloc(p, l, n)
    }
}
#[global_allocator]
static A: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

#[test]
fn cut_stitch_and_max_do_not_allocate() {
    let t = Tiling::new(3, 100, 90, PatchSpec::with_default_stride(32)).unwrap();
    let image: Vec<f32> = (0..t.image_len()).map(|i| (i % 251) as f32).collect();
    let mut tiles = vec![0f32; t.count() * t.tile_len()];
    let mut maps = vec![0f32; t.count() * 32 * 32];
    let mut scores = vec![0f32; t.count()];
    let mut out = vec![0f32; t.plane()];
    let before = allocs();
    let mut best = 0.0;
    for k in 0..50 {
        t.cut(&image, &mut tiles).unwrap();
        // The tiles' first channel stands in for the model's maps.
        for (m, tile) in maps
            .chunks_exact_mut(32 * 32)
            .zip(tiles.chunks_exact(t.tile_len()))
        {
            m.copy_from_slice(&tile[..32 * 32]);
        }
        scores
            .iter_mut()
            .enumerate()
            .for_each(|(i, s)| *s = (i + k) as f32);
        t.stitch(&maps, 1, &mut out).unwrap();
        best = max_over_tiles(&scores);
    }
    let n = allocs() - before;
    assert_eq!(n, 0, "{n} allocation(s) in 50 frames");
    assert_eq!(best, (t.count() - 1 + 49) as f32);
    // The stitched first channel is the image's first channel.
    assert!(out.iter().zip(&image).all(|(a, b)| (a - b).abs() < 1e-3));
}

#[test]
fn counter_sees_allocations() {
    let before = allocs();
    let v = std::hint::black_box(vec![1u8; 100]);
    assert!(allocs() > before);
    drop(v);
}
