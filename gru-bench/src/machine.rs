//! What the machine can do, measured in the same run as the kernels: the FMA peak and the read
//! bandwidth for a given working set. These set the roofline every figure is compared with.

use std::hint::black_box;
use std::time::Instant;

use gru_simd::packing::{LANES, PanelLayout};
use gru_simd::simd_level::{FMA_CHAINS, fma_chains};
use wide::f32x8;

/// Runs `body` on `threads` threads at once (at least one) and returns what each returned.
///
/// # Errors
/// When the system refuses to start a thread; the threads already started finish first.
fn on_threads<T: Send>(threads: usize, body: impl Fn() -> T + Sync) -> std::io::Result<Vec<T>> {
    std::thread::scope(|scope| {
        let workers = (0..threads.max(1))
            .map(|_| std::thread::Builder::new().spawn_scoped(scope, &body))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(workers
            .into_iter()
            .map(|w| w.join().expect("measuring thread"))
            .collect())
    })
}

/// FLOP/s of `threads` threads each running independent chains of FMAs, in the vector width
/// of `layout`'s tiles (256-bit, or 512-bit for pairs of panels), for about `seconds`.
///
/// # Errors
/// When the system refuses to start a thread, or this CPU cannot run `layout`'s tiles.
pub fn fma_peak(threads: usize, seconds: f64, layout: PanelLayout) -> std::io::Result<f64> {
    let lanes = LANES * layout.panels_per_row();
    let per_thread = on_threads(threads, || {
        let rounds = 1_000_000u64;
        let mut best = 0.0f64;
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            let t = Instant::now();
            let sink = fma_chains(layout, rounds).ok_or_else(|| {
                std::io::Error::other(format!("this CPU cannot run {layout:?} tiles"))
            })?;
            black_box(sink);
            let flops = (rounds * (FMA_CHAINS * lanes * 2) as u64) as f64;
            best = best.max(flops / t.elapsed().as_secs_f64());
        }
        Ok(best)
    })?;
    per_thread.into_iter().sum()
}

/// Bytes/s one thread reads from a buffer of `bytes` bytes streamed over and over (while
/// `threads − 1` other threads do the same on buffers of their own, as the kernels do).
///
/// The passes alternate direction, as the kernels' batch-1 steps alternate their panel order
/// ([`PanelOrder`](gru_simd::tiles::PanelOrder)): each pass starts on the lines the last one
/// read last, still in cache. Read in one direction, a buffer larger than L2 misses L2 on
/// every line, and the kernels beat that "floor": on the Intel Xeon, the GRU at B = 1,
/// I = H = 1024 (a 6 MiB share of `W_hh` per worker) ran at 107 % of it. Alternating (three
/// runs on 2 threads, against three before), the reads measured 32–33 GB/s per thread at
/// 6 MiB (23–26 before), 107–124 at 1.5 MiB (93–103), 67 at 2 MiB (40–57, one run), the same
/// at 384 KiB (about 149), and that GRU ran at 83–85 % of the floor, at I = H = 512 51–56 %.
///
/// # Errors
/// When the system refuses to start a thread.
pub fn read_bandwidth_per_thread(
    bytes: usize,
    threads: usize,
    seconds: f64,
) -> std::io::Result<f64> {
    let vectors = (bytes / 32).max(1);
    let per_thread = on_threads(threads, || {
        let buffer = vec![f32x8::splat(1.0); vectors];
        let mut best = 0.0f64;
        let start = Instant::now();
        let mut sums = [f32x8::ZERO; 4];
        while start.elapsed().as_secs_f64() < seconds {
            let t = Instant::now();
            let passes = (1 << 24) / vectors + 1;
            for pass in 0..passes {
                let chunks = black_box(&buffer).chunks_exact(4);
                let mut add = |chunk: &[f32x8]| {
                    for (s, &v) in sums.iter_mut().zip(chunk) {
                        *s += v;
                    }
                };
                if pass % 2 == 0 {
                    chunks.for_each(&mut add);
                } else {
                    chunks.rev().for_each(&mut add);
                }
            }
            let read = (passes * vectors / 4 * 4 * 32) as f64;
            best = best.max(read / t.elapsed().as_secs_f64());
        }
        black_box(sums);
        best
    })?;
    Ok(per_thread.iter().copied().fold(f64::INFINITY, f64::min))
}

/// Bytes of memory the system can still give this process without swapping: `MemAvailable`
/// in `/proc/meminfo`. `None` where that is not available (other systems).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
