//! The two phases of a sequence at batch 64, each alone, beside the FMA peak of the same
//! workers: the input projection of a chunk of 640 rows (ten steps of 64) and ten recurrent
//! steps of 64 rows, split over the workers both ways a call splits them: by panels (each
//! worker its panels of every row; a call does so at I = H = 1024) and by rows (each worker
//! every panel of its rows; at I = H = 256 and 512). It says which phase loses how much of the
//! peak in place, where the microkernel bench (`cargo bench -p gru-simd --bench microkernel`)
//! times the tiles alone.
//!
//! ```sh
//! cargo run --release -p gru-simd --example phases            # 2 workers
//! cargo run --release -p gru-simd --example phases -- 1       # 1 worker
//! ```
//!
//! The phases' figures are medians of 15 rounds; within a round the peak, the projection and
//! the steps run one after the other, in an order that rotates from round to round. The peak
//! is measured as `gru bench` measures it: each worker's best run of FMA chains, summed.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use gru_core::{Cell, GruVariant};
use gru_simd::packing::PackedLayer;
use gru_simd::projection::project;
use gru_simd::simd_level::{FMA_CHAINS, fma_chains};
use gru_simd::step::{CellScratch, recurrent_step};
use gru_simd::threading::{SharedVectors, Workers, share};
use gru_simd::tiles::PanelOrder;
use wide::f32x8;

mod common;
use common::{median, packed_layer, values};

const BATCH: usize = 64;
const STEPS: usize = 10;
const ROUNDS: usize = 15;
/// FMA rounds per worker in one peak measurement (about 4 ms).
const PEAK_ROUNDS: u64 = 2_000_000;

/// Seconds of one `work` on every worker at once.
fn timed(workers: &Workers, work: &(dyn Fn(usize) + Sync)) -> f64 {
    let start = Instant::now();
    workers.run(&|worker, _| work(worker));
    start.elapsed().as_secs_f64()
}

fn main() -> gru_core::Result<()> {
    let threads: usize = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| gru_core::Error::Config(format!("not a thread count: {arg}")))?,
        None => 2,
    };
    let workers = Workers::new(threads)?;
    for cell in [Cell::Gru(GruVariant::ResetAfter), Cell::Lstm] {
        for size in [256, 512, 1024] {
            let layer = packed_layer(cell, size)?;
            let (panels, width) = (layer.panels(), layer.gates() * layer.panels());
            let granule = layer.layout().panels_per_row();
            let rows = STEPS * BATCH;
            let x = values(rows * size, 5.0, 1.0);
            let projected = SharedVectors::zeros(rows * width);
            let scratch = CellScratch::new(&layer, BATCH);
            let step_projection = vec![f32x8::splat(0.01); BATCH * width];
            let active = [true; BATCH];
            let h_prev: Vec<f32x8> = (0..BATCH * panels)
                .map(|i| f32x8::splat((i % 17) as f32 * 0.01))
                .collect();
            let h_next = SharedVectors::zeros(BATCH * panels);
            // One worker has all rows and panels either way.
            for by_rows in [false, true].into_iter().take(threads.min(2)) {
                // (chunk rows, step rows, panels) of a worker.
                let part = |worker: usize| {
                    if by_rows {
                        let step_rows = share(BATCH, threads, worker, 2);
                        let chunk_rows = STEPS * step_rows.start..STEPS * step_rows.end;
                        (chunk_rows, step_rows, 0..panels)
                    } else {
                        (0..rows, 0..BATCH, share(panels, threads, worker, granule))
                    }
                };
                let project_chunk = |worker: usize| {
                    let (chunk_rows, _, own_panels) = part(worker);
                    // SAFETY: each worker writes only its own rows × panels of `projected`.
                    unsafe { project(&layer, &x, size, &projected, chunk_rows, own_panels) }
                };
                let run_steps = |worker: usize| {
                    let (_, step_rows, own_panels) = part(worker);
                    let first = step_rows.start;
                    for step in 0..STEPS {
                        // SAFETY: each worker writes only its own rows × panels of `h_next`
                        // and `scratch`; the cells here need no barrier inside a step (no
                        // reset-before), and the steps all read the same `h_prev`.
                        unsafe {
                            recurrent_step(
                                &layer,
                                &scratch,
                                &step_projection[first * width..],
                                &active[first..],
                                &h_prev[first * panels..],
                                &h_next,
                                step_rows.clone(),
                                own_panels.clone(),
                                PanelOrder::alternating(step),
                                &|| {},
                            )
                        }
                    }
                };
                phases(&workers, &layer, &project_chunk, &run_steps, by_rows);
            }
        }
    }
    Ok(())
}

/// Times the peak, `project_chunk` and `run_steps` in rounds and prints the figures.
fn phases(
    workers: &Workers,
    layer: &PackedLayer,
    project_chunk: &(dyn Fn(usize) + Sync),
    run_steps: &(dyn Fn(usize) + Sync),
    by_rows: bool,
) {
    let threads = workers.threads();
    let lanes = 8 * layer.layout().panels_per_row();
    let peak_flops = (PEAK_ROUNDS * (FMA_CHAINS * lanes * 2) as u64) as f64;
    // Each worker's best rate in GFLOP/s, as f64 bits (positive f64s order as their bits do).
    let best: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let peak = |worker: usize| {
        let start = Instant::now();
        black_box(fma_chains(layer.layout(), black_box(PEAK_ROUNDS)));
        let gflops = peak_flops / start.elapsed().as_secs_f64() / 1e9;
        best[worker].fetch_max(gflops.to_bits(), Ordering::Relaxed);
    };

    // Warm-up: the workers start, the weights come into the caches. The peak also runs 100
    // times back to back first (0.4 s): run only between the phases, each worker's best came
    // out some 10 % under `gru bench`'s, which runs the chains for a second.
    timed(workers, project_chunk);
    timed(workers, run_steps);
    for _ in 0..100 {
        timed(workers, &peak);
    }
    let mut seconds = [vec![], vec![], vec![]];
    for round in 0..ROUNDS {
        for i in 0..3 {
            let phase = (round + i) % 3;
            let work: &(dyn Fn(usize) + Sync) = match phase {
                0 => &peak,
                1 => project_chunk,
                _ => run_steps,
            };
            seconds[phase].push(timed(workers, work));
        }
    }
    let [_, projection_s, steps_s] = seconds.map(median);
    let peak_gflops: f64 = best
        .iter()
        .map(|bits| f64::from_bits(bits.load(Ordering::Relaxed)))
        .sum();
    let (size, gates) = (layer.hidden_size(), layer.cell().gate_count());
    let flops = (2 * STEPS * BATCH * size * gates * size) as f64;
    let report = |name: &str, seconds: f64| {
        let gflops = flops / seconds / 1e9;
        format!(
            "{name} {gflops:.0} GFLOP/s ({:.0} %)",
            100.0 * gflops / peak_gflops
        )
    };
    println!(
        "{:?} B = {BATCH}, I = H = {size}, {threads} worker(s) by {}: peak {peak_gflops:.0} \
         GFLOP/s; {}, {}",
        layer.cell().kind(),
        if by_rows { "rows" } else { "panels" },
        report("projection of 640 rows", projection_s),
        report("10 steps", steps_s),
    );
}
