//! Streaming as an application paces it: one step per input frame, with the thread idle in
//! between, on 1 and 2 workers. Prints the median and 90th percentile of one `Stream::step`
//! (the sleep between steps is not timed).
//!
//! `cargo bench` and `gru bench --mode step` time steps back to back, which keeps the weights
//! in cache and the workers awake. A speech front end calls `step` every 10 ms or so, and then
//! neither holds: the caches lose the weights, and idle workers park (a small step then runs
//! on the calling thread alone rather than wake them).
//!
//! ```sh
//! cargo run --release -p gru-simd --example paced_stream
//! ```

use std::time::{Duration, Instant};

use gru_core::{Cell, CellKind, GruVariant, LayerWeights, Model};
use gru_simd::SimdModel;

/// Input and hidden size.
const SIZE: usize = 256;

/// Pauses between steps, in microseconds: none, then longer than a worker waits before it
/// parks (1.6 ms), up to a 10 ms speech frame.
const GAPS_US: [u64; 5] = [0, 200, 1000, 2000, 10_000];

fn main() -> gru_core::Result<()> {
    let wave = |n: usize, phase: f32| {
        (0..n)
            .map(|k| (k as f32 * 0.618 + phase).sin() / 16.0)
            .collect::<Vec<_>>()
    };
    let rows = 3 * SIZE;
    let weights = LayerWeights::new(
        CellKind::Gru,
        SIZE,
        SIZE,
        wave(rows * SIZE, 0.1),
        wave(rows * SIZE, 0.2),
        Some(wave(rows, 0.3)),
        Some(wave(rows, 0.4)),
    )?;
    let model = Model::single_layer(Cell::Gru(GruVariant::ResetAfter), weights)?;
    let x = wave(SIZE, 0.5);
    println!("GRU, B = 1, I = H = {SIZE}: µs per step, median / 90th percentile");
    for gap in GAPS_US.map(Duration::from_micros) {
        let mut line = format!("gap {:>6} µs:", gap.as_micros());
        for threads in [1, 2] {
            let simd = SimdModel::with_threads(&model, threads)?;
            let mut stream = simd.stream(1)?;
            let steps = if gap >= Duration::from_millis(2) {
                300
            } else {
                2000
            };
            let mut micros = Vec::with_capacity(steps);
            for step in 0..steps {
                let start = Instant::now();
                std::hint::black_box(stream.step(&x)?);
                // The first steps fill the caches and start the workers.
                if step >= 20 {
                    micros.push(start.elapsed().as_secs_f64() * 1e6);
                }
                std::thread::sleep(gap);
            }
            micros.sort_by(f64::total_cmp);
            let (median, p90) = (micros[micros.len() / 2], micros[micros.len() * 9 / 10]);
            line += &format!("   {threads} thread(s) {median:7.1} / {p90:7.1}");
        }
        println!("{line}");
    }
    Ok(())
}
