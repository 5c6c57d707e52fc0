//! Threads: a team of persistent workers per model, a barrier for the per-step
//! synchronisation, and the shared state buffers the workers write between barriers.
//!
//! Two ways to split a step (chosen per call in [`crate::sequence`]):
//! - **batch rows**, for large batches of layers up to 16 MiB of packed weights: each worker
//!   gathers, projects and steps its own rows with no synchronisation inside a chunk of steps;
//!   between chunks the rows are split anew by each worker's measured speed
//!   ([`crate::balance`]);
//! - **hidden units** (panels), for small batches down to 1 and for larger layers at any batch
//!   (so that each worker streams only its share of the weights): each worker owns a
//!   contiguous range of panels and so keeps its slices of the packed `W_ih` and `W_hh` hot in
//!   its own core's cache across steps (weight-stationary); a step ends with one barrier, since
//!   the next step reads every unit of the state (a streaming step, whose job ends with it,
//!   needs none after its last layer).
//!
//! A dot product is never split across workers, so results are bitwise identical for every
//! thread count.

use std::cell::UnsafeCell;
use std::ops::Range;
#[cfg(feature = "rayon")]
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering, fence};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gru_core::{Error, Result};
use wide::f32x8;

/// How a worker waits for the others: it spins while the wait is likely to be short, then
/// yields, then sleeps until woken.
///
/// Spinning alone is right while every worker has a core of its own: a step at batch 1 takes a
/// few microseconds, and a futex wake-up here takes about 27 µs (half a 54 µs condvar round
/// trip between two threads). But when there are more runnable threads than cores (two
/// models, or two processes, each with a worker per core), a spinning worker holds the core
/// that the worker it waits for needs. Measured here, two `gru bench` processes of 2 threads
/// each at B = 1, I = H = 256, with waits that only spun and yielded: 16.8–18.9 ms per call,
/// against 1.25–1.82 ms for two processes of one thread each; with these waits 4.5–5.5 ms.
/// Sleeping after a short spin bounds what a wait can waste to about one wake-up.
///
/// Even the short spin held the shared core for 25 µs a wait, twice a step. So a waiter that
/// finds its core shared (a yield ran another thread) spins an eighth as long next time, and
/// each wait that finds its core free doubles the spins back: two processes of 2 workers went
/// from 4.5–5.1 to 1.5–2.0 ms per call (1 worker each 1.5), 2 workers pinned to one core from
/// 4.5 to 1.9 ms (1 worker 1.2–1.6). With a core per worker the yields return at once and the
/// spins stay as they were (eight paired rounds, 2 threads, B = 1 and 64, GRU and LSTM,
/// sequences and steps: 0.85–1.00× the time).
#[derive(Debug)]
struct Waiter {
    /// Threads asleep (or about to be) in `wait_until`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// Spins before yielding, learnt from the last waits: cut to an eighth when a yield ran
    /// another thread (the core is shared, and spinning holds it from the worker waited for),
    /// doubled back towards `max_spins` by each wait that did not.
    spins: AtomicU32,
    /// [`SPINS`], or none in tests of the sleeping path.
    max_spins: u32,
    /// [`YIELD_BUDGET`], or none in tests of the sleeping path.
    yield_budget: Duration,
}

/// Spins before a waiting worker yields: about 25 µs here (`spin_loop` measured 25 ns), about
/// one wake-up's cost.
const SPINS: u32 = 1024;

/// A yield that took longer than this ran another thread: this core is shared, and the worker
/// waited for may be the one that needs it, so the waiting worker goes to sleep.
const SHARED_CORE_YIELD: Duration = Duration::from_micros(10);

/// How long a worker keeps yielding while its yields return at once, before it sleeps anyway:
/// its core is then its own, and the worker it waits for is running elsewhere or was stopped
/// by the hypervisor (on this machine a vCPU now and then stops for tens of microseconds). A
/// wake-up would add its 27 µs to such a stall.
const YIELD_BUDGET: Duration = Duration::from_millis(1);

impl Waiter {
    fn new() -> Self {
        Self {
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            spins: AtomicU32::new(SPINS),
            max_spins: SPINS,
            yield_budget: YIELD_BUDGET,
        }
    }

    /// A waiter that goes to sleep as soon as it has to wait at all.
    #[cfg(test)]
    fn sleeping_at_once() -> Self {
        Self {
            spins: AtomicU32::new(0),
            max_spins: 0,
            yield_budget: Duration::ZERO,
            ..Self::new()
        }
    }

    /// Returns once `done()` is true; whoever makes it true must then call [`Self::notify`].
    fn wait_until(&self, done: impl Fn() -> bool) {
        let spins = self.spins.load(Ordering::Relaxed);
        for _ in 0..spins {
            if done() {
                self.spin_more(spins);
                return;
            }
            std::hint::spin_loop();
        }
        let yielding_since = Instant::now();
        let mut last = yielding_since;
        let mut shared_core = false;
        while !done() && last - yielding_since < self.yield_budget {
            std::thread::yield_now();
            let now = Instant::now();
            if now - last > SHARED_CORE_YIELD {
                shared_core = true;
                break;
            }
            last = now;
        }
        if shared_core {
            self.spins.store(spins / 8, Ordering::Relaxed);
        } else {
            self.spin_more(spins);
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // With the fence in `notify`: either that `notify` sees this sleeper, or `done()`
        // below sees what was done before it (the store-load pattern that needs both fences).
        fence(Ordering::SeqCst);
        while !done() {
            guard = self
                .wake
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
    }

    /// After a wait that found its core to itself: twice the spins (up to `max_spins`), written
    /// only when that changes them (every worker of a barrier shares this line).
    fn spin_more(&self, spins: u32) {
        let more = spins
            .saturating_mul(2)
            .saturating_add(1)
            .min(self.max_spins);
        if more != spins {
            self.spins.store(more, Ordering::Relaxed);
        }
    }

    /// Wakes the threads asleep in `wait_until`, after what they wait for has been done.
    /// Costs a fence and a load when nobody sleeps.
    fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            // A sleeper holds the lock from before it counts itself until it waits on the
            // condition variable, so once we hold it, every counted sleeper is waiting.
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.wake.notify_all();
        }
    }
}

/// A barrier for the workers of one job: each round opens when all parties have arrived.
/// Waiting spins, then yields, then sleeps. A worker that panics poisons it, so the others
/// stop waiting and panic too instead of waiting forever.
#[derive(Debug)]
pub struct WorkerBarrier {
    parties: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
    waiter: Waiter,
}

impl WorkerBarrier {
    /// A barrier for `parties` workers.
    pub fn new(parties: usize) -> Self {
        Self {
            parties,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
            waiter: Waiter::new(),
        }
    }

    /// Returns once all parties have called `wait` in this round. Everything written before
    /// `wait` by any party is visible to every party after it.
    ///
    /// # Panics
    /// If another party panicked.
    pub fn wait(&self) {
        if self.parties <= 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            self.waiter.notify();
            return;
        }
        let opened = || self.generation.load(Ordering::Acquire) != generation;
        self.waiter
            .wait_until(|| opened() || self.poisoned.load(Ordering::Relaxed));
        assert!(opened(), "another worker panicked");
    }

    #[cfg(feature = "rayon")]
    fn poison(&self) {
        self.poisoned.store(true, Ordering::Relaxed);
        self.waiter.notify();
    }

    /// Back to new, for the next job, while no party is inside `wait`. A job that ended in a
    /// panic can leave arrivals counted (the parties that waited for the one that panicked)
    /// and the poison set; the next job's first round would then open before all its parties
    /// arrived.
    #[cfg(feature = "rayon")]
    fn reset(&self) {
        self.arrived.store(0, Ordering::Relaxed);
        self.poisoned.store(false, Ordering::Relaxed);
    }
}

#[cfg(feature = "rayon")]
/// A job as the team's threads see it: the caller's closure with its lifetime erased. It is
/// dereferenced only between the publishing and the completion of one [`Team::run`], while
/// the closure is alive on the caller's stack.
type ErasedJob = *const (dyn Fn(usize, &WorkerBarrier) + Sync + 'static);

#[cfg(feature = "rayon")]
/// State shared by the caller and the team's threads.
struct TeamShared {
    size: usize,
    /// The team threads' handles, for `unpark`; filled as they start.
    threads: std::sync::Mutex<Vec<std::thread::Thread>>,
    job: UnsafeCell<Option<ErasedJob>>,
    generation: AtomicUsize,
    finished: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Team threads whose loop has returned after `shutdown`.
    exited: AtomicUsize,
    barrier: WorkerBarrier,
    /// Where the caller waits for `finished`.
    all_finished: Waiter,
    /// Team threads that idled past [`IDLE_BEFORE_PARK`] and parked (or are about to).
    parked: AtomicUsize,
}

#[cfg(feature = "rayon")]
// SAFETY: `job` is written only by the caller of `run`, one at a time (`Team::turn`), while no
// team thread reads it (before a generation is published and after every thread reported
// completion); everything else is atomic. The erased closure is `Sync`, so calling it from
// several threads is allowed.
unsafe impl Sync for TeamShared {}
#[cfg(feature = "rayon")]
// SAFETY: as above; the raw pointer is a borrowed reference in disguise.
unsafe impl Send for TeamShared {}

#[cfg(feature = "rayon")]
/// Persistent workers that run one job at a time, all at once, meeting at a barrier. The
/// caller is worker 0; workers 1.. are loops that occupy the threads of a dedicated `rayon`
/// pool for the team's whole life.
///
/// Why not hand each step to `rayon` as tasks: its work stealing allocates now and then
/// (epoch-based reclamation), and the streaming step must not allocate; a task per step costs
/// microseconds of wake-up, as much as a step at batch 1; and a job whose workers meet at
/// barriers needs every worker running at once, which only a dedicated team guarantees.
/// Measured here (`gru bench --shapes 64:100:256:256`, 2 threads): with the projection on
/// rayon tasks beside a spinning team, 108 GFLOP/s; with everything on the team, 174.
///
/// One job runs at a time: `Workers` is `Sync`, so streams started from one shared model may
/// call [`Workers::run`] from several threads at once, and their jobs take turns (`turn`).
/// Two jobs published together would share one `job` slot and one barrier, and deadlock.
struct Team {
    shared: Arc<TeamShared>,
    /// Held for the whole of a run.
    turn: std::sync::Mutex<()>,
    _pool: rayon::ThreadPool,
}

/// A job of fewer FLOPs than this, which comes more than [`IDLE_BEFORE_PARK`] after the last
/// one, runs on the calling thread alone if the team has parked by then
/// ([`Workers::run_alone`]): waking the team cost more than it saved. `paced_calls` example,
/// one streaming step every 10 ms (cold caches), GRU at B = 1, medians in µs, two workers
/// woken against the caller alone: I = H = 256 (0.8 MFLOP) 197 against 88–91; 512
/// (3.1 MFLOP) 489 against 391; 1024 (12.6 MFLOP) 1441 against 1447. Larger jobs (larger
/// batches, longer sequences) gain more from the other cores than the wake-up costs.
pub const ALONE_BELOW_FLOPS: usize = 16_000_000;

/// The most workers a model takes. The workers of a model meet at every step, so workers
/// beyond the cores only wait for each other, and starting them alone grows faster than their
/// number: on the project's 2-core machine 1024 workers started in 0.9 s, 2048 in 5 s, 4096 in
/// 42 s. A count above this is far more likely a mistake than a machine.
pub const MAX_THREADS: usize = 1024;

/// A job whose every step is under this many FLOPs (one step of a layer at the job's batch,
/// `2·G·H·(I + H)·B`), and whose workers would meet after every step (steps split by panels),
/// runs on the calling thread alone, awake team or not ([`Workers::run_alone`]): there the
/// meeting and the smaller tiles each worker is left with cost more than half of such a step
/// saves. About 2 µs of one core's work at the 70–95 GFLOP/s such small steps run at here.
///
/// Measured on the Intel Xeon (2 vCPUs, 2026-11-29; `gru bench --json` with `--threads 1`
/// against `--threads 2`, medians of three rounds, GRU and LSTM, sequences of 100 steps and
/// single steps, B = 1 to 64, I = H = 32 to 160; 80 shapes): two workers were slower up to
/// 2.1× (GRU, B = 1, I = H = 48, 28 kFLOP), 1.73× at 64 (49 kFLOP), 1.25× at B = 4,
/// I = H = 64 (197 kFLOP), and about even at B = 1, I = H = 96 (111 kFLOP), B = 2 at 96
/// (221 kFLOP) and B = 4 at 96 (442 kFLOP); faster from B = 1, I = H = 112 (150 kFLOP, 0.95×)
/// and 128 (197 kFLOP, 0.85–0.93×). Over those shapes, this threshold's choice took 1.013× the
/// time of the better of the two (geometric mean; worst 1.25×, at B = 4, I = H = 64), against
/// 1.108× (worst 2.1×) for the 20 kFLOP the AMD EPYC the project began on had called for
/// (there, two workers were already faster at B = 1, I = H = 64: 1.17–1.29 µs a step against
/// 1.30–1.65). These sequences split by panels below four rows per worker, as all did then;
/// since, sequences of small layers at B = 3 to 7 split by rows instead where that was faster
/// still (`splits_by_rows` in `sequence.rs`; B = 4, I = H = 64 took 0.52× the time of the
/// split by panels), and this rule no longer applies to them.
pub const ALONE_BELOW_STEP_FLOPS: usize = 160_000;

/// The size of a job, for [`Workers::run_alone`].
#[derive(Clone, Copy, Debug)]
pub struct JobSize {
    /// Under [`ALONE_BELOW_FLOPS`]: after a pause it runs alone rather than wake the team.
    pub small: bool,
    /// Every step under [`ALONE_BELOW_STEP_FLOPS`] (or the model's own threshold) with the
    /// workers meeting after each: it always runs alone.
    pub tiny_steps: bool,
}

/// How long an idle team thread waits for the next job before it parks: long enough that
/// back-to-back steps never wait for a wake-up, short enough not to hold a core for long after
/// the last one. It spins for the first 25 µs or so and yields for the rest, so that other
/// threads that need the core get it.
pub const IDLE_BEFORE_PARK: Duration = Duration::from_micros(1600);

#[cfg(feature = "rayon")]
impl Team {
    fn new(size: usize) -> Result<Self> {
        let shared = Arc::new(TeamShared {
            size,
            threads: std::sync::Mutex::new(Vec::with_capacity(size)),
            job: UnsafeCell::new(None),
            generation: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            exited: AtomicUsize::new(0),
            barrier: WorkerBarrier::new(size),
            all_finished: Waiter::new(),
            parked: AtomicUsize::new(0),
        });
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(size - 1)
            .thread_name(|i| format!("gru-simd-{}", i + 1))
            .build()
            .map_err(|e| Error::Config(format!("cannot start {size} threads: {e}")))?;
        for index in 1..size {
            let shared = Arc::clone(&shared);
            pool.spawn(move || {
                shared
                    .threads
                    .lock()
                    .expect("no panic while registering")
                    .push(std::thread::current());
                team_thread(&shared, index);
            });
        }
        while shared
            .threads
            .lock()
            .expect("no panic while registering")
            .len()
            < size - 1
        {
            std::thread::yield_now();
        }
        Ok(Self {
            shared,
            turn: std::sync::Mutex::new(()),
            _pool: pool,
        })
    }

    fn unpark_all(&self) {
        for thread in self
            .shared
            .threads
            .lock()
            .expect("no panic while registering")
            .iter()
        {
            thread.unpark();
        }
    }

    fn run(&self, work: &(dyn Fn(usize, &WorkerBarrier) + Sync)) {
        // A job that panicked poisons the lock; the team itself is consistent again once
        // `WaitForTeam` has returned (declared below, so dropped before this guard).
        let _turn = self
            .turn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shared = &*self.shared;
        // SAFETY: only the lifetime is erased. The pointer is published below and withdrawn
        // before this function returns or unwinds (by `WaitForTeam`), and the team threads
        // dereference it only in between.
        let erased: ErasedJob = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize, &WorkerBarrier) + Sync + '_), ErasedJob>(
                std::ptr::from_ref(work),
            )
        };
        // SAFETY: no team thread reads `job` now: the previous run waited for all of them
        // before releasing `turn`, and no other run can start while this one holds it.
        unsafe { *shared.job.get() = Some(erased) };
        // Also no thread is at the barrier; the generation published below orders this reset
        // before their first `wait`.
        shared.barrier.reset();
        shared.finished.store(0, Ordering::Relaxed);
        shared.generation.fetch_add(1, Ordering::Release);
        self.unpark_all();
        let _wait = WaitForTeam(shared);
        let caller =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(0, &shared.barrier)));
        if caller.is_err() {
            shared.barrier.poison();
            shared.panicked.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(feature = "rayon")]
/// Waits, even while unwinding, until every team thread has finished the current job, then
/// withdraws it; re-raises a panic of any worker.
struct WaitForTeam<'a>(&'a TeamShared);

#[cfg(feature = "rayon")]
impl Drop for WaitForTeam<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        shared
            .all_finished
            .wait_until(|| shared.finished.load(Ordering::Acquire) == shared.size - 1);
        // SAFETY: every team thread has finished with the job.
        unsafe { *shared.job.get() = None };
        if shared.panicked.swap(false, Ordering::Relaxed) && !std::thread::panicking() {
            panic!("a gru-simd worker panicked");
        }
    }
}

#[cfg(feature = "rayon")]
fn team_thread(shared: &TeamShared, index: usize) {
    let mut seen = 0;
    loop {
        let mut spins = 0u32;
        let mut yielding_since = None;
        let mut parked = false;
        loop {
            if shared.shutdown.load(Ordering::Acquire) {
                shared.exited.fetch_add(1, Ordering::Release);
                return;
            }
            let generation = shared.generation.load(Ordering::Acquire);
            if generation != seen {
                seen = generation;
                if parked {
                    shared.parked.fetch_sub(1, Ordering::Relaxed);
                }
                break;
            }
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
            } else if yielding_since.get_or_insert_with(Instant::now).elapsed() < IDLE_BEFORE_PARK {
                std::thread::yield_now();
            } else {
                if !parked {
                    shared.parked.fetch_add(1, Ordering::Relaxed);
                    parked = true;
                }
                // `run` unparks every thread after publishing, so no wake-up is lost. `park`
                // can also return at once, on the token of an `unpark` that came while this
                // thread was awake: it then parks again, still counted as parked.
                std::thread::park();
            }
        }
        // SAFETY: the generation was published after `job` was set, and `job` stays set
        // until this thread reports completion below.
        let job = unsafe { (*shared.job.get()).expect("a published job") };
        // SAFETY: the closure outlives the run (see `Team::run`).
        let work = unsafe { &*job };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            work(index, &shared.barrier)
        }));
        if result.is_err() {
            shared.barrier.poison();
            shared.panicked.store(true, Ordering::Relaxed);
        }
        shared.finished.fetch_add(1, Ordering::Release);
        shared.all_finished.notify();
    }
}

#[cfg(feature = "rayon")]
impl Drop for Team {
    fn drop(&mut self) {
        // The loops return (waited for here); the pool's threads then end when the pool is
        // dropped.
        self.shared.shutdown.store(true, Ordering::Release);
        self.unpark_all();
        while self.shared.exited.load(Ordering::Acquire) < self.shared.size - 1 {
            std::thread::yield_now();
        }
    }
}

/// The workers of one model: the calling thread alone, or (with the `rayon` feature) a team.
pub struct Workers {
    threads: usize,
    #[cfg(feature = "rayon")]
    team: Option<Team>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workers({})", self.threads)
    }
}

impl Workers {
    /// `1 ≤ threads ≤` [`MAX_THREADS`] workers; more than one needs the `rayon` feature.
    pub fn new(threads: usize) -> Result<Self> {
        if !(1..=MAX_THREADS).contains(&threads) {
            return Err(Error::Config(format!(
                "the number of threads must be from 1 to {MAX_THREADS}, not {threads}"
            )));
        }
        #[cfg(feature = "rayon")]
        {
            let team = if threads > 1 {
                Some(Team::new(threads)?)
            } else {
                None
            };
            Ok(Self { threads, team })
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

    /// Whether every worker would start a job at once: false once the team's threads have
    /// idled past 1.6 ms and parked, when a job must first wake them (which took longer here
    /// than a streaming step at batch 1 takes on one thread). Always true for one worker.
    pub fn awake(&self) -> bool {
        #[cfg(feature = "rayon")]
        if let Some(team) = &self.team {
            return team.shared.parked.load(Ordering::Relaxed) == 0;
        }
        true
    }

    /// Whether a job coming now should run on the calling thread alone (as one worker, all
    /// parts its own) rather than on the team: always when its steps are tiny (under
    /// [`ALONE_BELOW_STEP_FLOPS`]); otherwise when it is small (under [`ALONE_BELOW_FLOPS`]),
    /// the last job began more than [`IDLE_BEFORE_PARK`] ago, and the team has parked since.
    /// Jobs that follow each other closely go to the team even if it has parked, so that the
    /// first of them wakes it for the others. `last_job` is when the caller's last job began;
    /// it is set to now.
    pub fn run_alone(&self, job: JobSize, last_job: &mut Option<Instant>) -> bool {
        let now = Instant::now();
        let paced = last_job.is_none_or(|last| now - last > IDLE_BEFORE_PARK);
        *last_job = Some(now);
        self.threads > 1 && (job.tiny_steps || (job.small && paced && !self.awake()))
    }

    /// Runs `work(worker, barrier)` on every worker at once and returns when all are done.
    /// Allocates nothing. Calls from several threads at once run one after the other.
    pub fn run(&self, work: &(dyn Fn(usize, &WorkerBarrier) + Sync)) {
        #[cfg(feature = "rayon")]
        if let Some(team) = &self.team {
            team.run(work);
            return;
        }
        work(0, &WorkerBarrier::new(1));
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
    pub fn get_mut(&mut self) -> &mut [f32x8] {
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
        // SAFETY: same layout (see `get_mut`); the caller rules out concurrent writes.
        unsafe { &*(std::ptr::from_ref::<[UnsafeCell<f32x8>]>(cells) as *const [f32x8]) }
    }

    /// The vectors in `range`, to write.
    ///
    /// # Safety
    /// No other worker may read or write any index in `range` while the returned slice is
    /// alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn write_range(&self, range: Range<usize>) -> &mut [f32x8] {
        let cells = &self.cells[range];
        // SAFETY: `UnsafeCell<T>` has the layout of `T`, and the pointer comes from
        // `UnsafeCell::raw_get`, so writing through it is allowed; the caller guarantees
        // exclusive access to these cells while the slice lives.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), cells.len()) }
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

/// A borrowed slice that several workers write at disjoint indices between barriers (the
/// output sequence, which each worker fills for its own rows or units).
pub struct SharedSlice<'a, T> {
    cells: &'a [UnsafeCell<T>],
}

// SAFETY: access goes through `write`, whose contract rules out data races.
unsafe impl<T: Send> Sync for SharedSlice<'_, T> {}

impl<'a, T: Copy> SharedSlice<'a, T> {
    /// Shares `slice` for the lifetime of the borrow.
    pub fn new(slice: &'a mut [T]) -> Self {
        let len = slice.len();
        let cell: &'a UnsafeCell<[T]> = UnsafeCell::from_mut(slice);
        // SAFETY: `UnsafeCell<[T]>` has the layout of `[T]`, which has the layout of
        // `[UnsafeCell<T>]`; the exclusive borrow is held for `'a`.
        let cells = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(cell).cast::<UnsafeCell<T>>(), len)
        };
        Self { cells }
    }

    /// Copies `values` to `start..start + values.len()`.
    ///
    /// # Safety
    /// No other worker may read or write these indices concurrently.
    pub unsafe fn write(&self, start: usize, values: &[T]) {
        for (cell, &value) in self.cells[start..start + values.len()].iter().zip(values) {
            // SAFETY: the caller guarantees exclusive access to these cells.
            unsafe { *cell.get() = value };
        }
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
                        assert!(r.start % granule == 0 || r.start == len);
                    }
                }
            }
        }
    }

    /// Runs `f` on a thread of its own and fails if it has not returned within `seconds` (a
    /// lost wake-up would otherwise hang the test run); re-raises its panic.
    fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (send, receive) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let result = f();
            let _ = send.send(());
            result
        });
        if receive
            .recv_timeout(Duration::from_secs(seconds))
            .is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Timeout)
        {
            panic!("still waiting after {seconds} s");
        }
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    #[test]
    fn a_long_wait_sleeps_until_notified() {
        let waiter = std::sync::Arc::new(Waiter::new());
        let flag = std::sync::Arc::new(AtomicBool::new(false));
        let (w, f) = (waiter.clone(), flag.clone());
        let sleeper = std::thread::spawn(move || w.wait_until(|| f.load(Ordering::Acquire)));
        // The waiter spins, yields for its budget, then counts itself a sleeper.
        within(300, move || {
            while waiter.sleepers.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            flag.store(true, Ordering::Release);
            waiter.notify();
            sleeper.join().unwrap();
            assert_eq!(waiter.sleepers.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn spins_shrink_on_a_shared_core_and_grow_back() {
        let waiter = std::sync::Arc::new(Waiter::new());
        let spins = || waiter.spins.load(Ordering::Relaxed);
        // Waits that find their core to themselves double the spins back up to the most.
        waiter.spins.store(0, Ordering::Relaxed);
        waiter.wait_until(|| true);
        assert_eq!(spins(), 1);
        for _ in 0..20 {
            waiter.wait_until(|| true);
        }
        assert_eq!(spins(), SPINS);
        // Every core busy with another thread: a yield of the waiting thread runs one of them
        // for a time slice, so the wait cuts its spins.
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let busy: Vec<_> = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let flag = std::sync::Arc::new(AtomicBool::new(false));
        let (w, f) = (waiter.clone(), flag.clone());
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            f.store(true, Ordering::Release);
            w.notify();
        });
        waiter.wait_until(|| flag.load(Ordering::Acquire));
        assert_eq!(spins(), SPINS / 8);
        stop.store(true, Ordering::Relaxed);
        setter.join().unwrap();
        for thread in busy {
            thread.join().unwrap();
        }
    }

    #[test]
    fn sleeping_waiters_never_miss_a_wake_up() {
        // Two threads hand a token back and forth, each going to sleep whenever it has to
        // wait: every hand-over races a `notify` against a thread on its way to sleep.
        let rounds: usize = std::env::var("GRU_WAKE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        within(300, move || {
            let token = AtomicUsize::new(0);
            let waiters = [Waiter::sleeping_at_once(), Waiter::sleeping_at_once()];
            std::thread::scope(|scope| {
                for side in 0..2 {
                    let (token, waiters) = (&token, &waiters);
                    scope.spawn(move || {
                        for round in 0..rounds {
                            let mine = 2 * round + side;
                            waiters[side].wait_until(|| token.load(Ordering::Acquire) == mine);
                            token.store(mine + 1, Ordering::Release);
                            waiters[1 - side].notify();
                        }
                    });
                }
            });
            assert_eq!(token.into_inner(), 2 * rounds);
        });
    }

    #[test]
    #[cfg(feature = "rayon")]
    fn workers_that_wait_long_sleep_and_are_woken() {
        within(300, || {
            let workers = Workers::new(2).unwrap();
            let count = AtomicUsize::new(0);
            // The late worker takes turns, so that both the caller and the team thread sleep
            // at the barrier, and the caller also while it waits for the job to end.
            for late in [0, 1, 1, 0] {
                workers.run(&|worker, barrier| {
                    if worker == late {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    barrier.wait();
                    assert_eq!(count.load(Ordering::Relaxed) % 2, 0);
                });
            }
            workers.run(&|worker, _| {
                if worker == 1 {
                    std::thread::sleep(Duration::from_millis(20));
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
            assert_eq!(count.into_inner(), 9);
        });
    }

    /// Polls `condition` until it holds, for at most a minute.
    #[cfg(feature = "rayon")]
    fn eventually(what: &str, condition: impl Fn() -> bool) {
        let start = Instant::now();
        while !condition() {
            assert!(start.elapsed() < Duration::from_secs(60), "never {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    #[cfg(feature = "rayon")]
    fn idle_workers_park_and_the_next_job_wakes_them() {
        let workers = Workers::new(3).unwrap();
        assert!(Workers::new(1).unwrap().awake());
        let count = AtomicUsize::new(0);
        for _ in 0..2 {
            eventually("parked", || !workers.awake());
            workers.run(&|_, barrier| {
                count.fetch_add(1, Ordering::Relaxed);
                barrier.wait();
            });
        }
        assert_eq!(count.into_inner(), 6);
        let job = |small, tiny_steps| JobSize { small, tiny_steps };
        // The first job of a caller, small: alone while the team is parked.
        eventually("parked again", || !workers.awake());
        assert!(workers.run_alone(job(true, false), &mut None));
        // Right after another (as if the last had begun just now, however slow this run is):
        // to the team, whose job wakes it, unless its steps are tiny.
        let mut just_now = Some(Instant::now() + Duration::from_secs(60));
        assert!(!workers.run_alone(job(true, false), &mut just_now));
        assert!(workers.run_alone(job(true, true), &mut just_now));
        assert!(workers.run_alone(job(false, true), &mut just_now));
        // Large jobs of larger steps never run alone, nor any job of a single worker.
        assert!(!workers.run_alone(job(false, false), &mut None));
        assert!(
            !Workers::new(1)
                .unwrap()
                .run_alone(job(true, true), &mut None)
        );
    }

    #[test]
    #[cfg(feature = "rayon")]
    fn barrier_orders_rounds_within_and_across_jobs() {
        let workers = Workers::new(3).unwrap();
        let counter = AtomicUsize::new(0);
        // Later jobs reuse the barrier the earlier ones left; the workers arrive in a
        // different order in each round.
        for job in 0..3 {
            workers.run(&|worker, barrier| {
                for round in 0..100 {
                    if (round + worker + job) % 3 == 0 {
                        std::hint::spin_loop();
                    }
                    counter.fetch_add(1, Ordering::Relaxed);
                    barrier.wait();
                    assert_eq!(counter.load(Ordering::Relaxed), 3 * (100 * job + round + 1));
                    barrier.wait();
                }
            });
        }
    }

    #[test]
    #[cfg(feature = "rayon")]
    fn a_job_after_a_panic_gets_a_working_barrier() {
        let workers = Workers::new(2).unwrap();
        for _ in 0..20 {
            // Worker 0 waits at the barrier, worker 1 never comes: the run ends in a panic
            // with worker 0's arrival counted and the barrier poisoned.
            let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                workers.run(&|worker, barrier| {
                    if worker == 1 {
                        panic!("worker 1 fails before the barrier");
                    }
                    barrier.wait();
                });
            }));
            assert!(failed.is_err());
            // The next job must find the barrier as new: every round waits for both.
            let count = AtomicUsize::new(0);
            workers.run(&|worker, barrier| {
                for round in 1..=50 {
                    if worker == 1 {
                        std::thread::yield_now();
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    barrier.wait();
                    assert_eq!(count.load(Ordering::Relaxed), 2 * round);
                    barrier.wait();
                }
            });
        }
    }

    #[test]
    #[cfg(feature = "rayon")]
    fn jobs_from_several_threads_at_once_take_turns() {
        let workers = Workers::new(2).unwrap();
        let start = std::sync::Barrier::new(3);
        std::thread::scope(|scope| {
            for caller in 0..3 {
                let (workers, start) = (&workers, &start);
                scope.spawn(move || {
                    start.wait();
                    for job in 0..1000 {
                        // Both workers run each job, and meet only each other at its barrier:
                        // jobs that shared the team would mix their counts.
                        let count = AtomicUsize::new(0);
                        workers.run(&|_, barrier| {
                            for round in 1..=5 {
                                count.fetch_add(1, Ordering::Relaxed);
                                barrier.wait();
                                let seen = count.load(Ordering::Relaxed);
                                assert_eq!(seen, 2 * round, "caller {caller}, job {job}");
                                barrier.wait();
                            }
                        });
                        assert_eq!(count.into_inner(), 10);
                    }
                });
            }
        });
    }

    #[test]
    #[cfg(feature = "rayon")]
    fn a_panicking_worker_releases_the_others() {
        within(300, || {
            let workers = Workers::new(2).unwrap();
            // At once, while worker 0 still spins; and late, once it has gone to sleep.
            for delay in [Duration::ZERO, Duration::from_millis(20)] {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    workers.run(&|worker, barrier| {
                        if worker == 1 {
                            std::thread::sleep(delay);
                            panic!("worker 1 fails before the barrier");
                        }
                        // Without the poison and its wake-up, this would wait forever.
                        barrier.wait();
                    });
                }));
                assert!(run.is_err(), "delay {delay:?}");
            }
        });
    }
}
