//! Calls as an application paces them, on 1 and 2 workers: streaming steps (one per input
//! frame) and short whole sequences (a window of 10 frames), with the thread idle in between.
//! Prints the median and 90th percentile of one call (the pause between calls is not timed).
//!
//! `cargo bench` and `gru bench` time calls back to back, which keeps the weights in cache
//! and the workers awake. A speech front end calls every 10 ms or so, and then neither holds:
//! the caches lose the weights, and idle workers park (a small call then runs on the calling
//! thread alone rather than wake them).
//!
//! ```sh
//! cargo run --release -p gru-simd --example paced_calls
//! ```

use std::time::{Duration, Instant};

use gru_core::{Cell, CellKind, GruVariant, LayerWeights, Model, RecurrentKernel, SequenceInput};
use gru_simd::SimdModel;

/// Input and hidden size.
const SIZE: usize = 256;

/// Steps in one whole-sequence call.
const WINDOW: usize = 10;

/// Pauses between calls, in microseconds: none, then longer than a worker waits before it
/// parks (1.6 ms), up to a 10 ms speech frame.
const GAPS_US: [u64; 5] = [0, 200, 1000, 2000, 10_000];

/// The median and 90th percentile of `call`'s time in µs, with `gap` between calls.
fn paced(
    gap: Duration,
    mut call: impl FnMut() -> gru_core::Result<()>,
) -> gru_core::Result<(f64, f64)> {
    let calls = if gap >= Duration::from_millis(2) {
        300
    } else {
        2000
    };
    let mut micros = Vec::with_capacity(calls);
    for i in 0..calls {
        let start = Instant::now();
        call()?;
        // The first calls fill the caches and start the workers.
        if i >= 20 {
            micros.push(start.elapsed().as_secs_f64() * 1e6);
        }
        std::thread::sleep(gap);
    }
    micros.sort_by(f64::total_cmp);
    Ok((micros[micros.len() / 2], micros[micros.len() * 9 / 10]))
}

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
    let x = wave(WINDOW * SIZE, 0.5);
    println!("GRU, B = 1, I = H = {SIZE}: µs per call, median / 90th percentile");
    for gap in GAPS_US.map(Duration::from_micros) {
        let mut line = format!("gap {:>6} µs:", gap.as_micros());
        for threads in [1, 2] {
            let simd = SimdModel::with_threads(&model, threads)?;
            let mut stream = simd.stream(1)?;
            let (median, p90) = paced(gap, || {
                std::hint::black_box(stream.step(&x[..SIZE])?);
                Ok(())
            })?;
            line += &format!("   step, {threads} thr {median:7.1} / {p90:7.1}");
        }
        for threads in [1, 2] {
            let mut simd = SimdModel::with_threads(&model, threads)?;
            let (median, p90) = paced(gap, || {
                std::hint::black_box(simd.forward(&SequenceInput::new(&x, WINDOW, 1))?);
                Ok(())
            })?;
            line += &format!("   T = {WINDOW}, {threads} thr {median:7.1} / {p90:7.1}");
        }
        println!("{line}");
    }
    Ok(())
}
