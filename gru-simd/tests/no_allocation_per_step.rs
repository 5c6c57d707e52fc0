//! After `stream()` has allocated the state, a streaming step allocates nothing; nor does a
//! whole-sequence call into the buffers of an earlier call of its shape (`forward_into`).
//! Counted by a global allocator that tallies every allocation in the process.
//!
//! Without libtest's harness (`harness = false`): the harness's own thread allocates now and
//! then (for example to report a slow test under valgrind), which would be counted too.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Values, on_workers, random_model};
use gru_core::{Cell, GruVariant, RecurrentKernel, SequenceInput, SequenceOutput};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Steps per measured window: `GRU_ALLOC_STEPS`, default 5000 (the valgrind run uses fewer).
fn steps() -> usize {
    std::env::var("GRU_ALLOC_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

fn main() {
    // Every model stays alive to the end: a dropped model's pool threads exit in the
    // background, and their exit would be counted in a later window (the first test's models,
    // dropped as it returned, once were counted in the second's first window).
    let mut models = Vec::new();
    streaming_steps_do_not_allocate(&mut models);
    calls_into_reused_buffers_do_not_allocate(&mut models);
    drop(models);
    println!("no_allocation_per_step: 2 passed, 0 failed");
}

fn streaming_steps_do_not_allocate(models: &mut Vec<gru_simd::SimdModel>) {
    let steps = steps(); // read before any window: reading the environment allocates
    for cell in [
        Cell::Gru(GruVariant::ResetAfter),
        Cell::Gru(GruVariant::ResetBefore),
        Cell::Lstm,
    ] {
        for threads in [1, 2] {
            let model = random_model(cell, 16, 40, 2, false, true, 11);
            models.push(on_workers(&model, threads));
            let mut stream = models.last().unwrap().stream(3).unwrap();
            let x = Values::new(2).vec(3 * 16, 1.0);
            // Warm-up: the pool's threads start and settle.
            for _ in 0..steps / 2 {
                stream.step(&x).unwrap();
            }
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for _ in 0..steps {
                stream.step(&x).unwrap();
            }
            let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
            assert_eq!(
                during, 0,
                "{cell:?}, {threads} threads: {during} allocations in {steps} steps"
            );
        }
    }
}

fn calls_into_reused_buffers_do_not_allocate(models: &mut Vec<gru_simd::SimdModel>) {
    let calls = steps() / 100 + 2;
    for cell in [
        Cell::Gru(GruVariant::ResetAfter),
        Cell::Gru(GruVariant::ResetBefore),
        Cell::Lstm,
    ] {
        // Batches split by panels (1, 3) and by rows (12); ragged lengths, two layers, both
        // directions.
        for (threads, batch) in [(1, 3), (2, 1), (2, 3), (2, 12)] {
            let model = random_model(cell, 16, 40, 2, true, true, 12);
            models.push(on_workers(&model, threads));
            let simd = models.last_mut().unwrap();
            let t = 7;
            let x = Values::new(3).vec(t * batch * 16, 1.0);
            let lengths: Vec<usize> = (0..batch).map(|b| t - b % 3).collect();
            let input = SequenceInput::new(&x, t, batch).lengths(&lengths);
            let mut out = SequenceOutput::empty();
            // Calls alternate between the workers and the calling thread alone, as small calls
            // that come after pauses may. Chosen here, not left to the pauses (which vary,
            // under valgrind above all): small steps alone, or every call on the workers. A
            // batch split by rows always goes to the workers.
            simd.set_alone_below_flops(0);
            let mut call = |simd: &mut gru_simd::SimdModel, i: usize| {
                simd.set_alone_below_step_flops(if i.is_multiple_of(2) { 0 } else { usize::MAX });
                simd.forward_into(&input, &mut out).unwrap();
            };
            for i in 0..calls {
                call(simd, i);
            }
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for i in 0..calls {
                call(simd, i);
            }
            let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
            assert_eq!(
                during, 0,
                "{cell:?}, {threads} threads, B = {batch}: {during} allocations in {calls} calls"
            );
        }
    }
}
