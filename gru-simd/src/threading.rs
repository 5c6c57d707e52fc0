//! Threads: a pool per model, a spinning barrier for the per-step synchronisation, and the
//! shared state buffers the workers write between barriers.
//!
//! Two ways to split a step (chosen per call in [`crate::sequence`]):
//! - **batch rows**, for large batches: each worker owns whole rows for the whole sequence, so
//!   the workers never synchronise inside a chunk of steps;
//! - **hidden units** (panels), for small batches down to 1: each worker owns a contiguous range
//!   of panels and so keeps its slice of the packed `W_hh` hot in its own core's cache across
//!   steps (weight-stationary); a step ends with one barrier, since the next step reads every
//!   unit of the state.
//!
//! A dot product is never split across workers, so results are bitwise identical for every
//! thread count.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use gru_core::{Error, Result};
use wide::f32x8;

/// A sense-counting barrier that spins (then yields) instead of sleeping: a step at batch 1
/// takes a few microseconds, far less than a futex round trip.
#[derive(Debug)]
pub struct SpinBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl SpinBarrier {
    /// A barrier for `parties` workers.
    pub fn new(parties: usize) -> Self {
        Self {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
        }
    }

    /// Returns once all parties have called `wait` in this round. Everything written before
    /// `wait` by any party is visible to every party after it.
    pub fn wait(&self) {
        if self.parties <= 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < 4096 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                // More workers than free cores (tests run in parallel): let the others run.
                std::thread::yield_now();
            }
        }
    }
}

/// The workers of one model: the calling thread alone, or a dedicated pool.
#[derive(Debug)]
pub struct Workers {
    threads: usize,
    #[cfg(feature = "rayon")]
    pool: Option<rayon::ThreadPool>,
}

impl Workers {
    /// `threads ≥ 1` workers. More than one needs the `rayon` feature.
    pub fn new(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::Config(
                "the number of threads must be at least 1".into(),
            ));
        }
        #[cfg(feature = "rayon")]
        {
            let pool = if threads > 1 {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("gru-simd-{i}"))
                    .build()
                    .map_err(|e| Error::Config(format!("cannot start {threads} threads: {e}")))?;
                Some(pool)
            } else {
                None
            };
            Ok(Self { threads, pool })
        }
        #[cfg(not(feature = "rayon"))]
        {
            if threads > 1 {
                return Err(Error::Unsupported(
                    "more than one thread needs the `rayon` feature".into(),
                ));
            }
            Ok(Self { threads })
        }
    }

    /// Number of workers.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `work(worker, barrier)` on every worker at once and returns when all are done.
    ///
    /// The workers are started with nested `rayon::join`s, whose jobs live on the stack: no
    /// heap allocation, so the streaming step stays allocation-free. The pool has exactly as
    /// many threads as workers and runs nothing else, so every worker gets a thread and the
    /// barrier cannot wait forever.
    pub fn run(&self, work: &(dyn Fn(usize, &SpinBarrier) + Sync)) {
        let barrier = SpinBarrier::new(self.threads);
        #[cfg(feature = "rayon")]
        if let Some(pool) = &self.pool {
            pool.install(|| fork(0..self.threads, work, &barrier));
            return;
        }
        work(0, &barrier);
    }
}

impl Workers {
    /// Calls `work(out_chunk, in_chunk)` on matching chunks of `out` and `input` (`out_chunk`
    /// and `in_chunk` elements each), spread over the workers.
    pub fn zip_chunks<T: Send, U: Sync>(
        &self,
        out: &mut [T],
        out_chunk: usize,
        input: &[U],
        in_chunk: usize,
        work: &(dyn Fn(&mut [T], &[U]) + Sync),
    ) {
        #[cfg(feature = "rayon")]
        if let Some(pool) = &self.pool {
            use rayon::prelude::*;
            pool.install(|| {
                out.par_chunks_mut(out_chunk.max(1))
                    .zip(input.par_chunks(in_chunk.max(1)))
                    .for_each(|(o, i)| work(o, i));
            });
            return;
        }
        for (o, i) in out
            .chunks_mut(out_chunk.max(1))
            .zip(input.chunks(in_chunk.max(1)))
        {
            work(o, i);
        }
    }
}

#[cfg(feature = "rayon")]
fn fork(workers: Range<usize>, work: &(dyn Fn(usize, &SpinBarrier) + Sync), barrier: &SpinBarrier) {
    if workers.len() == 1 {
        work(workers.start, barrier);
    } else {
        let mid = workers.start + workers.len() / 2;
        rayon::join(
            || fork(workers.start..mid, work, barrier),
            || fork(mid..workers.end, work, barrier),
        );
    }
}

/// The part `worker` of `parts` gets of `0..len`: contiguous, sizes differing by at most one
/// `granule` (ranges are multiples of `granule`, except possibly the last).
pub fn share(len: usize, parts: usize, worker: usize, granule: usize) -> Range<usize> {
    let granules = len.div_ceil(granule);
    let (base, extra) = (granules / parts, granules % parts);
    let start = worker * base + worker.min(extra);
    let end = start + base + usize::from(worker < extra);
    (start * granule).min(len)..(end * granule).min(len)
}

/// A buffer of vectors that several workers write between barriers.
///
/// Soundness rests on the step protocol, which every caller states at its `unsafe` block:
/// between two barriers, each index is written by at most one worker, and an index written in
/// that interval is read by no other worker in it.
pub struct SharedVectors {
    cells: Box<[UnsafeCell<f32x8>]>,
}

// SAFETY: access goes through the `unsafe` methods below, whose contracts rule out data races.
unsafe impl Sync for SharedVectors {}

impl std::fmt::Debug for SharedVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedVectors({})", self.cells.len())
    }
}

impl SharedVectors {
    /// `len` zero vectors.
    pub fn zeros(len: usize) -> Self {
        Self {
            cells: (0..len).map(|_| UnsafeCell::new(f32x8::ZERO)).collect(),
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The whole buffer, for exclusive use.
    pub fn as_mut(&mut self) -> &mut [f32x8] {
        // SAFETY: `UnsafeCell<T>` has the layout of `T`, and `&mut self` excludes other access.
        unsafe {
            &mut *(std::ptr::from_mut::<[UnsafeCell<f32x8>]>(&mut self.cells) as *mut [f32x8])
        }
    }

    /// The vectors in `range`, to read.
    ///
    /// # Safety
    /// No worker may write any index in `range` while the returned slice is alive.
    pub unsafe fn read(&self, range: Range<usize>) -> &[f32x8] {
        let cells = &self.cells[range];
        // SAFETY: same layout (see `as_mut`); the caller rules out concurrent writes.
        unsafe { &*(std::ptr::from_ref::<[UnsafeCell<f32x8>]>(cells) as *const [f32x8]) }
    }

    /// Writes `value` at `index`.
    ///
    /// # Safety
    /// No other worker may read or write `index` until the next barrier.
    #[inline(always)]
    pub unsafe fn write(&self, index: usize, value: f32x8) {
        // SAFETY: the caller guarantees exclusive access to this cell until the next barrier.
        unsafe { *self.cells[index].get() = value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_range_in_order() {
        for len in 0..40 {
            for parts in 1..5 {
                for granule in [1, 4, 8] {
                    let ranges: Vec<_> =
                        (0..parts).map(|w| share(len, parts, w, granule)).collect();
                    assert_eq!(ranges[0].start, 0);
                    assert_eq!(ranges[parts - 1].end, len);
                    for pair in ranges.windows(2) {
                        assert_eq!(pair[0].end, pair[1].start);
                    }
                    for r in &ranges[..parts - 1] {
                        assert_eq!(r.start % granule, 0);
                    }
                }
            }
        }
    }

    #[test]
    fn barrier_orders_rounds() {
        let workers = Workers::new(3).unwrap();
        let counter = AtomicUsize::new(0);
        workers.run(&|_, barrier| {
            for round in 0..100 {
                counter.fetch_add(1, Ordering::Relaxed);
                barrier.wait();
                assert_eq!(counter.load(Ordering::Relaxed), 3 * (round + 1));
                barrier.wait();
            }
        });
    }
}
