//! Load balancing: each worker's share of the rows (large batches) or of the panels (small
//! ones) follows how fast it went lately.
//!
//! The cores of a shared machine do not run at the same speed, and which one is slower changes
//! from second to second. Measured on this project's 2-vCPU machine, B = 64, I = H = 512, rows
//! split evenly: the two workers' times for one call differed by up to 1.88× (11 calls:
//! 0.89–1.88), so the call took as long as the slower half. Rows are independent sequences, so
//! they can move between workers at any chunk boundary (the state of every row lives in one
//! buffer); panels can move at any step boundary, at the price of the moved panels' weights
//! coming from the other core's cache once.

use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::threading::{WorkerBarrier, share};

/// Weight of the newest chunk's speed in the running estimate: recent enough to follow a core
/// that slows down within a call, smooth enough that one interrupted chunk does not swing the
/// split.
const NEWEST_WEIGHT: f64 = 0.5;

/// The items `0..len` (rows or panels) split over workers in contiguous ranges of whole
/// `granule`s (the last range takes any remainder), each worker's range proportional to its
/// estimated speed.
///
/// Every worker keeps its own copy and updates it with the same timings in the same order, so
/// all copies agree without talking to each other.
///
/// ```
/// use gru_simd::balance::Balance;
/// let mut split = Balance::even(64, 2, 2);
/// assert_eq!((split.part(0), split.part(1)), (0..32, 32..64));
/// // Worker 1 took twice as long for as many rows: it gets half as many as worker 0.
/// split.rebalance(|worker| [1.0, 2.0][worker]);
/// assert_eq!((split.part(0), split.part(1)), (0..42, 42..64));
/// ```
#[derive(Debug)]
pub struct Balance {
    len: usize,
    granule: usize,
    /// Worker `w` has items `bounds[w]..bounds[w + 1]`.
    bounds: Vec<usize>,
    /// Items per second of each worker, smoothed; `None` before its first measurement.
    speed: Vec<Option<f64>>,
}

impl Clone for Balance {
    fn clone(&self) -> Self {
        Self {
            len: self.len,
            granule: self.granule,
            bounds: self.bounds.clone(),
            speed: self.speed.clone(),
        }
    }

    /// Reuses this split's buffers (the derived `clone_from` would allocate new ones): each
    /// worker copies the split at the start of every call.
    fn clone_from(&mut self, source: &Self) {
        self.len = source.len;
        self.granule = source.granule;
        self.bounds.clone_from(&source.bounds);
        self.speed.clone_from(&source.speed);
    }
}

impl Balance {
    /// An even split of `len` items over `workers`.
    pub fn even(len: usize, workers: usize, granule: usize) -> Self {
        let workers = workers.max(1);
        let granule = granule.max(1);
        let mut bounds: Vec<usize> = (0..workers)
            .map(|w| share(len, workers, w, granule).start)
            .collect();
        bounds.push(len);
        Self {
            len,
            granule,
            bounds,
            speed: vec![None; workers],
        }
    }

    /// The items of `worker`.
    pub fn part(&self, worker: usize) -> Range<usize> {
        self.bounds[worker]..self.bounds[worker + 1]
    }

    /// Takes the seconds each worker spent on its items since the last call, and moves the
    /// bounds so that, at the estimated speeds, every worker would take the same time. Every
    /// worker keeps at least one granule while there are enough, so that its speed is still
    /// measured.
    pub fn rebalance(&mut self, seconds: impl Fn(usize) -> f64) {
        let workers = self.speed.len();
        for w in 0..workers {
            let (items, time) = (self.part(w).len(), seconds(w));
            if items > 0 && time > 0.0 && time.is_finite() {
                let newest = items as f64 / time;
                self.speed[w] = Some(match self.speed[w] {
                    Some(old) => old + NEWEST_WEIGHT * (newest - old),
                    None => newest,
                });
            }
        }
        let Some(total) = self.speed.iter().copied().sum::<Option<f64>>() else {
            return;
        };
        if total <= 0.0 {
            return;
        }
        let granules = self.len.div_ceil(self.granule);
        let reserve = usize::from(granules >= workers);
        let mut cumulative = 0.0;
        for w in 0..workers - 1 {
            cumulative += self.speed[w].unwrap_or(0.0) / total;
            let ideal = (cumulative * granules as f64).round() as usize;
            let lowest = self.bounds[w].div_ceil(self.granule) + reserve;
            let highest = granules.saturating_sub(reserve * (workers - 1 - w));
            let bound = ideal.clamp(lowest.min(highest), highest);
            self.bounds[w + 1] = (bound * self.granule).min(self.len);
        }
    }
}

/// One worker's copy of a [`Balance`] that is updated while the workers run, from running
/// totals of each worker's busy nanoseconds (each worker adds to its own total only).
///
/// [`SplitCopy::rebalance`] reads every total, so it must run where no worker can add to
/// them: after a barrier that follows every worker's last addition, with the next additions
/// behind a later barrier (or the end of the run). Every copy then reads the same totals and
/// makes the same split.
#[derive(Debug)]
pub struct SplitCopy {
    balance: Balance,
    /// Each worker's total at the last update.
    seen: Vec<u64>,
}

impl SplitCopy {
    /// An even split of `len` items over `workers`, as [`Balance::even`].
    pub fn even(len: usize, workers: usize, granule: usize) -> Self {
        Self {
            balance: Balance::even(len, workers, granule),
            seen: vec![0; workers.max(1)],
        }
    }

    /// The items of `worker`.
    pub fn part(&self, worker: usize) -> Range<usize> {
        self.balance.part(worker)
    }

    /// Splits anew from what each worker's total grew by since the last update.
    pub fn rebalance(&mut self, totals: &[AtomicU64]) {
        let seen = &self.seen;
        self.balance
            .rebalance(|w| totals[w].load(Ordering::Relaxed).saturating_sub(seen[w]) as f64 * 1e-9);
        for (seen, total) in self.seen.iter_mut().zip(totals) {
            *seen = total.load(Ordering::Relaxed);
        }
    }
}

/// One split shared by a team: each worker's [`SplitCopy`], and the busy totals the copies
/// follow (each worker adds to its own only). Whole sequences keep one per layer direction,
/// streams one per layer.
#[derive(Debug)]
pub struct WorkerSplits {
    copies: Vec<Mutex<SplitCopy>>,
    busy: Vec<AtomicU64>,
}

impl WorkerSplits {
    /// An even split of `len` items over `workers`, as [`Balance::even`].
    pub fn even(len: usize, workers: usize, granule: usize) -> Self {
        let workers = workers.max(1);
        Self {
            copies: (0..workers)
                .map(|_| Mutex::new(SplitCopy::even(len, workers, granule)))
                .collect(),
            busy: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// `worker`'s copy; only that worker takes it while the team runs.
    pub fn copy(&self, worker: usize) -> MutexGuard<'_, SplitCopy> {
        self.copies[worker]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `nanos` to `worker`'s busy total.
    pub fn add_busy(&self, worker: usize, nanos: u64) {
        self.busy[worker].fetch_add(nanos, Ordering::Relaxed);
    }

    /// Every worker's busy total, for [`SplitCopy::rebalance`] (under its rules on when).
    pub fn busy(&self) -> &[AtomicU64] {
        &self.busy
    }
}

/// The time one worker spends outside barriers: what [`Balance::rebalance`] needs, since
/// time spent waiting for others says nothing about a worker's own speed.
#[derive(Debug)]
pub struct BusyClock {
    since: Cell<Instant>,
    busy: Cell<Duration>,
}

impl BusyClock {
    /// A clock that counts from now.
    pub fn start() -> Self {
        Self {
            since: Cell::new(Instant::now()),
            busy: Cell::new(Duration::ZERO),
        }
    }

    /// Waits at `barrier` without counting the wait.
    pub fn wait(&self, barrier: &WorkerBarrier) {
        self.busy.set(self.busy.get() + self.since.get().elapsed());
        barrier.wait();
        self.since.set(Instant::now());
    }

    /// The time counted so far, in whole nanoseconds; counting starts again from zero.
    pub fn take_nanos(&self) -> u64 {
        let now = Instant::now();
        let busy = self.busy.take() + (now - self.since.replace(now));
        u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_partition(balance: &Balance, rows: usize, workers: usize) {
        let mut next = 0;
        for w in 0..workers {
            let range = balance.part(w);
            assert_eq!(range.start, next, "{balance:?}");
            next = range.end;
        }
        assert_eq!(next, rows, "{balance:?}");
    }

    #[test]
    fn starts_even() {
        let balance = Balance::even(64, 2, 2);
        assert_eq!((balance.part(0), balance.part(1)), (0..32, 32..64));
        let balance = Balance::even(9, 3, 2);
        assert_partition(&balance, 9, 3);
    }

    #[test]
    fn the_faster_worker_gets_more_rows() {
        let mut balance = Balance::even(64, 2, 2);
        // Worker 1 took twice as long for the same rows: it is half as fast.
        balance.rebalance(|w| [1.0, 2.0][w]);
        assert_partition(&balance, 64, 2);
        assert_eq!(balance.part(0).len(), 42, "{balance:?}");
        // At the new split both take about the same time at the same speeds (32 and 16 rows
        // per second): the split stays.
        let seconds = [42.0 / 32.0, 22.0 / 16.0];
        balance.rebalance(|w| seconds[w]);
        assert_eq!(balance.part(0).len(), 42, "{balance:?}");
    }

    #[test]
    fn every_worker_keeps_a_granule_and_the_ranges_stay_a_partition() {
        for workers in 1..=4 {
            for rows in [1, 2, 7, 8, 9, 64, 65] {
                let mut balance = Balance::even(rows, workers, 2);
                assert_partition(&balance, rows, workers);
                for round in 0..6 {
                    // One worker a thousand times slower than the others, in turn.
                    balance.rebalance(|w| if w == round % workers { 1000.0 } else { 1.0 });
                    assert_partition(&balance, rows, workers);
                    if rows.div_ceil(2) >= workers {
                        for w in 0..workers {
                            assert!(!balance.part(w).is_empty(), "{balance:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn timings_without_information_change_nothing() {
        let mut balance = Balance::even(64, 2, 2);
        balance.rebalance(|_| 0.0);
        balance.rebalance(|_| f64::NAN);
        assert_eq!((balance.part(0), balance.part(1)), (0..32, 32..64));
    }

    #[test]
    fn busy_clock_counts_work_and_leaves_out_waits() {
        let barrier = WorkerBarrier::new(2);
        std::thread::scope(|scope| {
            // The other party arrives 300 ms late: this worker waits most of that.
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                barrier.wait();
            });
            let clock = BusyClock::start();
            std::thread::sleep(Duration::from_millis(5));
            clock.wait(&barrier);
            let taking = Instant::now();
            let busy = clock.take_nanos();
            assert!((5_000_000..150_000_000).contains(&busy), "{busy} ns");
            // Taking restarts the count: what it counts next began after `taking`. (Compared
            // with `busy` instead, this failed under valgrind, whose thread switches can stop
            // this thread for longer than the 5 ms slept above.)
            let again = clock.take_nanos();
            assert!(
                u128::from(again) <= taking.elapsed().as_nanos(),
                "{again} ns after {busy} ns"
            );
        });
    }

    #[test]
    fn split_copy_follows_what_the_totals_grew_by() {
        let totals = [AtomicU64::new(0), AtomicU64::new(0)];
        let mut copy = SplitCopy::even(64, 2, 2);
        // First window: worker 1 twice as slow.
        totals[0].store(1_000, Ordering::Relaxed);
        totals[1].store(2_000, Ordering::Relaxed);
        copy.rebalance(&totals);
        assert_eq!(copy.part(0), 0..42);
        // Second window: 42 rows in 4200 ns against 22 rows in 550 ns, so worker 1 is now
        // four times as fast per row and gets most rows (27 to worker 0). Had the totals since
        // the start been taken for the window, worker 0 would still look faster (about 40).
        totals[0].fetch_add(4_200, Ordering::Relaxed);
        totals[1].fetch_add(550, Ordering::Relaxed);
        copy.rebalance(&totals);
        assert!(copy.part(0).len() < 32, "{copy:?}");
    }
}
