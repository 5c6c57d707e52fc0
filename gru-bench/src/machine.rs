//! What the machine can do, measured in the same run as the kernels: the FMA peak and the read
//! bandwidth for a given working set. These set the roofline every figure is compared with.

use std::collections::{BTreeMap, BTreeSet};
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

/// One limit of the machine measured twice in a run: before the kernels and after them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeforeAndAfter {
    /// Measured before the kernels ran.
    pub before: f64,
    /// Measured after the kernels ran.
    pub after: f64,
}

impl BeforeAndAfter {
    /// The better of the two: a roofline is the best the machine did, so that a kernel's time
    /// is not compared with a limit measured while the host was slower.
    pub fn best(self) -> f64 {
        self.before.max(self.after)
    }

    /// How far the worse of the two fell below the better, as a fraction of the better
    /// (0 when they agree). A host that changed speed during the run shows here.
    ///
    /// ```
    /// use gru_bench::machine::BeforeAndAfter;
    /// let peak = BeforeAndAfter { before: 400e9, after: 300e9 };
    /// assert_eq!(peak.best(), 400e9);
    /// assert!((peak.drift() - 0.25).abs() < 1e-12);
    /// ```
    pub fn drift(self) -> f64 {
        let best = self.best();
        if best > 0.0 {
            1.0 - self.before.min(self.after) / best
        } else {
            0.0
        }
    }
}

/// The limits a run's rooflines are drawn from: the FMA peak on the run's threads, and the
/// read bandwidth per thread for each working set (bytes per thread) the kernels stream.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineLimits {
    /// FLOP/s of all threads together.
    pub peak: BeforeAndAfter,
    /// Bytes/s per thread, by working set in bytes per thread.
    pub bandwidth: BTreeMap<usize, BeforeAndAfter>,
}

/// What [`MachineLimits`] are measured from, once.
#[derive(Debug, Clone, PartialEq)]
struct LimitsOnce {
    peak: f64,
    bandwidth: BTreeMap<usize, f64>,
}

/// Measures the FMA peak (about `peak_seconds`) and the read bandwidth for every working set
/// (about `bandwidth_seconds` each) on `threads` threads.
fn measure_limits_once(
    threads: usize,
    layout: PanelLayout,
    working_sets: &BTreeSet<usize>,
    peak_seconds: f64,
    bandwidth_seconds: f64,
) -> std::io::Result<LimitsOnce> {
    let peak = fma_peak(threads, peak_seconds, layout)?;
    let bandwidth = working_sets
        .iter()
        .map(|&bytes| {
            Ok((
                bytes,
                read_bandwidth_per_thread(bytes, threads, bandwidth_seconds)?,
            ))
        })
        .collect::<std::io::Result<_>>()?;
    Ok(LimitsOnce { peak, bandwidth })
}

impl MachineLimits {
    /// Measures the limits, runs `kernels`, measures them again, and returns both what
    /// `kernels` returned and the limits. The host under a virtual machine can change speed
    /// within minutes (on the project's machine, one 20-second run of `gru bench` read 75 GB/s
    /// per thread from a 2 MiB working set before its kernels and 37 after them); measured on
    /// both sides, the limits keep the better figure and show how far the two disagree
    /// ([`BeforeAndAfter::drift`]).
    ///
    /// # Errors
    /// When the system refuses to start a measuring thread (`map_err` turns that into `E`), or
    /// whatever `kernels` returns.
    pub fn around<T, E>(
        threads: usize,
        layout: PanelLayout,
        working_sets: &BTreeSet<usize>,
        map_err: impl Fn(std::io::Error) -> E,
        kernels: impl FnOnce() -> Result<T, E>,
    ) -> Result<(T, Self), E> {
        let measure = || measure_limits_once(threads, layout, working_sets, 0.3, 0.2);
        let before = measure().map_err(&map_err)?;
        let result = kernels()?;
        let after = measure().map_err(&map_err)?;
        let limits = MachineLimits {
            peak: BeforeAndAfter {
                before: before.peak,
                after: after.peak,
            },
            bandwidth: before
                .bandwidth
                .iter()
                .map(|(&bytes, &b)| {
                    let after = after.bandwidth[&bytes];
                    (bytes, BeforeAndAfter { before: b, after })
                })
                .collect(),
        };
        Ok((result, limits))
    }

    /// The largest [`BeforeAndAfter::drift`] of any limit.
    pub fn largest_drift(&self) -> f64 {
        self.bandwidth
            .values()
            .chain([&self.peak])
            .map(|l| l.drift())
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_keep_the_better_figure_and_report_the_widest_disagreement() {
        let limits = MachineLimits {
            peak: BeforeAndAfter {
                before: 480e9,
                after: 456e9,
            },
            bandwidth: BTreeMap::from([
                (
                    1 << 20,
                    BeforeAndAfter {
                        before: 80e9,
                        after: 120e9,
                    },
                ),
                (
                    4 << 20,
                    BeforeAndAfter {
                        before: 30e9,
                        after: 30e9,
                    },
                ),
            ]),
        };
        assert_eq!(limits.peak.best(), 480e9);
        assert_eq!(limits.bandwidth[&(1 << 20)].best(), 120e9);
        assert_eq!(limits.bandwidth[&(4 << 20)].drift(), 0.0);
        assert!((limits.peak.drift() - 0.05).abs() < 1e-12);
        assert!((limits.largest_drift() - 1.0 / 3.0).abs() < 1e-12);
        let nothing = BeforeAndAfter {
            before: 0.0,
            after: 0.0,
        };
        assert_eq!(nothing.drift(), 0.0);
    }

    #[test]
    fn limits_are_measured_on_both_sides_of_the_kernels() {
        let working_sets = BTreeSet::from([64 << 10]);
        let (ran, limits) = MachineLimits::around(
            1,
            PanelLayout::Contiguous,
            &working_sets,
            |e| e.to_string(),
            || Ok::<_, String>("ran"),
        )
        .expect("one thread starts");
        assert_eq!(ran, "ran");
        assert!(limits.peak.before > 0.0 && limits.peak.after > 0.0);
        assert_eq!(
            limits.bandwidth.keys().copied().collect::<Vec<_>>(),
            vec![64 << 10]
        );
        let what_the_kernels_return = MachineLimits::around(
            1,
            PanelLayout::Contiguous,
            &working_sets,
            |e| e.to_string(),
            || Err::<(), _>("no kernel".to_owned()),
        );
        assert_eq!(what_the_kernels_return, Err("no kernel".to_owned()));
    }
}
