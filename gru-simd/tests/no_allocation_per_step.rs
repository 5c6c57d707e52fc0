//! After `stream()` has allocated the state, a streaming step allocates nothing: counted by a
//! global allocator that tallies every allocation in the process.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Values, random_model};
use gru_core::{Cell, GruVariant};
use gru_simd::SimdModel;

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

#[test]
fn streaming_steps_do_not_allocate() {
    // One test function, so no other test allocates concurrently.
    for cell in [
        Cell::Gru(GruVariant::ResetAfter),
        Cell::Gru(GruVariant::ResetBefore),
        Cell::Lstm,
    ] {
        for threads in [1, 2] {
            let model = random_model(cell, 16, 40, 2, false, true, 11);
            let simd = SimdModel::with_threads(&model, threads).unwrap();
            let mut stream = simd.stream(3).unwrap();
            let x = Values::new(2).vec(3 * 16, 1.0);
            // Warm-up: the pool's threads start and settle.
            for _ in 0..2000 {
                stream.step(&x).unwrap();
            }
            let before = ALLOCATIONS.load(Ordering::SeqCst);
            for _ in 0..5000 {
                stream.step(&x).unwrap();
            }
            let during = ALLOCATIONS.load(Ordering::SeqCst) - before;
            assert_eq!(
                during, 0,
                "{cell:?}, {threads} threads: {during} allocations in 5000 steps"
            );
        }
    }
}
