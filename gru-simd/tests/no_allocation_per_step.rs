//! After `stream()` has allocated the state, a streaming step allocates nothing: counted by a
//! global allocator that tallies every allocation in the process.
//!
//! Without libtest's harness (`harness = false`): the harness's own thread allocates now and
//! then (for example to report a slow test under valgrind), which would be counted too.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Values, on_workers, random_model};
use gru_core::{Cell, GruVariant};

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
    streaming_steps_do_not_allocate();
    println!("no_allocation_per_step: 1 passed, 0 failed");
}

fn streaming_steps_do_not_allocate() {
    // Every model stays alive to the end: a dropped model's pool threads exit in the
    // background, and their exit would be counted in a later window.
    let mut models = Vec::new();
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
