//! Process-wide CPU settings that decide whether Candle training is gemm-bound or not.
//! Binaries call [`tune`] first thing in `main`, before any tensor exists.

/// * Candle 0.11 runs elementwise ops on a barrier pool whose workers spin while they wait;
///   next to rayon's workers (gemm, our im2col) that oversubscribes small machines and the
///   spinning dominated a 2-core profile. One thread for elementwise ops (memory-bound anyway)
///   and rayon for the compute-bound parts measured 3× faster there. An explicit
///   `CANDLE_NUM_THREADS` is respected.
/// * glibc serves allocations above 128 KiB with fresh `mmap`s, so every multi-megabyte
///   activation and im2col buffer is page-faulted and zeroed anew each step. Raising the mmap
///   threshold keeps those buffers in the heap for reuse.
pub fn tune() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called at the start of `main`, before other threads exist.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; valid at any time.
    unsafe {
        // 32 MiB is glibc's ceiling for this knob on 64-bit (a larger value is refused).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
