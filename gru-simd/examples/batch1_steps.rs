//! Where a batch-1 sequence's time goes on two workers split by panels, as a call splits it:
//! the projection of its 100 rows, and 100 recurrent steps run five ways: each worker alone on
//! its panels, both at once without meeting, both with a barrier after every step (as a call
//! runs them), and the same right after the projection (as a call runs them too), its first
//! ten steps apart from the other ninety. `gru-bench/RESULTS.md` quotes its runs for what the
//! projection leaves behind at B = 1, I = H = 512.
//!
//! ```sh
//! cargo run --release -p gru-simd --example batch1_steps
//! ```
//!
//! Every figure is the median of 21 rounds; within a round the six jobs run one after the
//! other, in an order that rotates from round to round. The steps use a fixed projected input:
//! only the recurrent product and the epilogue run in them, as in a call.

use std::sync::Mutex;
use std::time::Instant;

use gru_core::{Cell, GruVariant};
use gru_simd::projection::project;
use gru_simd::step::{CellScratch, recurrent_step};
use gru_simd::threading::{SharedVectors, WorkerBarrier, Workers, share};
use gru_simd::tiles::PanelOrder;
use wide::f32x8;

mod common;
use common::{median, packed_layer, values};

const STEPS: usize = 100;
const ROUNDS: usize = 21;
/// Steps after the projection counted apart: those that find `W_hh` out of L2.
const FIRST_STEPS: usize = 10;

/// The jobs of one round, each timed on its own.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// Worker 0's steps on its panels, worker 1 idle.
    FirstAlone,
    /// Worker 1's steps on its panels, worker 0 idle.
    SecondAlone,
    /// Both workers' steps at once, neither waiting for the other.
    Both,
    /// Both, meeting at a barrier after every step.
    Meeting,
    /// The projection of all 100 rows, each worker its panels.
    Projection,
    /// The projection, a barrier, then the steps as in `Meeting`.
    ProjectionThenMeeting,
}

const JOBS: [Job; 6] = [
    Job::FirstAlone,
    Job::SecondAlone,
    Job::Both,
    Job::Meeting,
    Job::Projection,
    Job::ProjectionThenMeeting,
];

fn main() -> gru_core::Result<()> {
    let workers = Workers::new(2)?;
    for cell in [Cell::Gru(GruVariant::ResetAfter), Cell::Lstm] {
        for size in [256, 512, 1024] {
            measure(&workers, cell, size)?;
        }
    }
    Ok(())
}

/// Times every [`Job`] of one cell and size in rounds and prints the figures.
fn measure(workers: &Workers, cell: Cell, size: usize) -> gru_core::Result<()> {
    let layer = packed_layer(cell, size)?;
    let (panels, width) = (layer.panels(), layer.gates() * layer.panels());
    let granule = layer.layout().panels_per_row();
    let own_panels = |worker: usize| share(panels, 2, worker, granule);
    let x = values(STEPS * size, 5.0, 1.0);
    let projected = SharedVectors::zeros(STEPS * width);
    let scratch = CellScratch::new(&layer, 1);
    let step_projection = vec![f32x8::splat(0.01); width];
    let active = [true];
    // The steps that do not meet all read this state; those that meet alternate between two.
    let fixed_state = vec![f32x8::splat(0.1); panels];
    let states = [SharedVectors::zeros(panels), SharedVectors::zeros(panels)];
    let step = |worker: usize, s: usize, h_prev: &[f32x8], h_next: &SharedVectors| {
        // SAFETY: each worker writes only its own panels of `h_next` and `scratch`; the cells
        // here need no barrier inside a step (no reset-before). `h_prev` is written by no one
        // during the step: the fixed state never, the meeting steps' previous state only
        // before the barrier that ended the last step.
        unsafe {
            recurrent_step(
                &layer,
                &scratch,
                &step_projection,
                &active,
                h_prev,
                h_next,
                0..1,
                own_panels(worker),
                PanelOrder::alternating(s),
                &|| {},
            )
        }
    };
    let steps_apart = |worker: usize| {
        for s in 0..STEPS {
            step(worker, s, &fixed_state, &states[0]);
        }
    };
    // Marks of worker 0 in the steps that meet: when they start and when the first ten end.
    let marks: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    let steps_meeting = |worker: usize, barrier: &WorkerBarrier| {
        for s in 0..STEPS {
            if worker == 0 && (s == 0 || s == FIRST_STEPS) {
                marks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Instant::now());
            }
            // SAFETY: the previous state was completed by both workers before the barrier that
            // ended the last step (or before this job), and nobody writes it in this step.
            let h_prev = unsafe { states[s % 2].read(0..panels) };
            step(worker, s, h_prev, &states[(s + 1) % 2]);
            barrier.wait();
        }
    };
    let project_rows = |worker: usize| {
        // SAFETY: each worker writes only its own panels of `projected`.
        unsafe { project(&layer, &x, size, &projected, 0..STEPS, own_panels(worker)) }
    };
    let run = |job: Job| {
        marks.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let start = Instant::now();
        workers.run(&|worker, barrier| match job {
            Job::FirstAlone if worker == 0 => steps_apart(worker),
            Job::SecondAlone if worker == 1 => steps_apart(worker),
            Job::FirstAlone | Job::SecondAlone => {}
            Job::Both => steps_apart(worker),
            Job::Meeting => steps_meeting(worker, barrier),
            Job::Projection => project_rows(worker),
            Job::ProjectionThenMeeting => {
                project_rows(worker);
                barrier.wait();
                steps_meeting(worker, barrier);
            }
        });
        let end = Instant::now();
        let marks = marks.lock().unwrap_or_else(|e| e.into_inner());
        // (whole job, first ten steps, the rest) in µs; the steps' split only where they met.
        let micros = |from: Instant, to: Instant| (to - from).as_secs_f64() * 1e6;
        match marks[..] {
            [steps_start, tenth] => (
                micros(start, end),
                micros(steps_start, tenth),
                micros(tenth, end),
            ),
            _ => (micros(start, end), f64::NAN, f64::NAN),
        }
    };

    // Warm-up: the workers start, the weights come into the caches.
    for job in JOBS {
        run(job);
    }
    let mut whole = vec![Vec::new(); JOBS.len()];
    let mut first = vec![Vec::new(); JOBS.len()];
    let mut rest = vec![Vec::new(); JOBS.len()];
    for round in 0..ROUNDS {
        for i in 0..JOBS.len() {
            let j = (round + i) % JOBS.len();
            let (all, first_steps, rest_steps) = run(JOBS[j]);
            whole[j].push(all);
            first[j].push(first_steps / FIRST_STEPS as f64);
            rest[j].push(rest_steps / (STEPS - FIRST_STEPS) as f64);
        }
    }
    let per_step = |j: usize| median(whole[j].clone()) / STEPS as f64;
    let projection_flops = (2 * STEPS * cell.gate_count() * size * size) as f64;
    let projection_us = median(whole[4].clone());
    let (meeting, after) = (3, 5);
    println!(
        "{:?} B = 1, I = H = {size}: projection of {STEPS} rows {projection_us:.0} µs \
         ({:.0} GFLOP/s); µs per step: worker 0 alone {:.2}, worker 1 alone {:.2}, both apart \
         {:.2}, meeting {:.2} (first {FIRST_STEPS} {:.2}, the rest {:.2}); after the \
         projection first {FIRST_STEPS} {:.2}, the rest {:.2}",
        cell.kind(),
        projection_flops / projection_us / 1e3,
        per_step(0),
        per_step(1),
        per_step(2),
        per_step(meeting),
        median(first[meeting].clone()),
        median(rest[meeting].clone()),
        median(first[after].clone()),
        median(rest[after].clone()),
    );
    Ok(())
}
