//! GRU time over LSTM time at the performance goals' sequence shapes, both models in one
//! process, timed in alternating blocks of back-to-back calls.
//!
//! The peer rounds time the GRU and the LSTM in separate processes seconds apart, and on a
//! host whose speed changes within seconds the ratio of two such medians wanders: on
//! 2026-11-30, ten `gru bench` runs at B = 1, I = H = 256 that timed the two one after the
//! other gave 0.69–0.94 (`gru bench` now takes turns too, with the medians of all calls).
//! Here each round times a block of calls of one model, then a block of the other (the order
//! alternating from round to round), and the ratio is the median over rounds of each round's
//! own ratio. A block's first calls bring its model's weights back into the caches and are not
//! counted, so that both models are timed warm, as back-to-back calls run; calls that
//! alternated one by one would each start with the other model's weights in L2.
//!
//! ```sh
//! cargo run --release -p gru-simd --example gru_over_lstm            # 2 workers, 11 rounds
//! cargo run --release -p gru-simd --example gru_over_lstm -- 1 21    # 1 worker, 21 rounds
//! ```

use std::time::Instant;

use gru_core::{Cell, GruVariant, Model, RecurrentKernel, SequenceInput, SequenceOutput};
use gru_simd::SimdModel;

mod common;
use common::{layer_weights, median, values};

/// `(B, T, I = H)` of the goals' sequence shapes.
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 100, 256),
    (1, 100, 512),
    (1, 50, 1024),
    (64, 100, 256),
    (64, 100, 512),
    (64, 50, 1024),
];

/// Calls per block, of which the first [`WARM_UP_CALLS`] are not counted.
const BLOCK_CALLS: usize = 9;

/// Calls that bring a block's weights back into the caches.
const WARM_UP_CALLS: usize = 2;

/// A single-layer model of `cell` with `I = H = size` and smooth weights.
fn model(cell: Cell, size: usize) -> gru_core::Result<Model> {
    Model::single_layer(cell, layer_weights(cell, size)?)
}

/// The median time of a block's counted calls.
fn block(
    model: &mut SimdModel,
    input: &SequenceInput<'_>,
    out: &mut SequenceOutput,
) -> gru_core::Result<f64> {
    let mut seconds = Vec::with_capacity(BLOCK_CALLS);
    for call in 0..BLOCK_CALLS {
        let start = Instant::now();
        model.forward_into(input, out)?;
        if call >= WARM_UP_CALLS {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(median(seconds))
}

/// `[threads, rounds]` from the command line, each a positive integer, or the defaults.
fn arguments() -> Result<[usize; 2], String> {
    let mut parsed = [2, 11];
    for (slot, arg) in parsed.iter_mut().zip(std::env::args().skip(1)) {
        *slot =
            arg.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                format!("expected [threads] [rounds], positive integers; got {arg}")
            })?;
    }
    Ok(parsed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let [threads, rounds] = arguments()?;
    for (batch, seq_len, size) in SHAPES {
        let gru_cell = Cell::Gru(GruVariant::ResetAfter);
        let mut gru = SimdModel::with_threads(&model(gru_cell, size)?, threads)?;
        let mut lstm = SimdModel::with_threads(&model(Cell::Lstm, size)?, threads)?;
        let x = values(seq_len * batch * size, 5.0, 1.0);
        let input = SequenceInput::new(&x, seq_len, batch);
        let (mut gru_out, mut lstm_out) = (SequenceOutput::empty(), SequenceOutput::empty());
        let (mut gru_times, mut lstm_times, mut ratios) = (vec![], vec![], vec![]);
        for round in 0..rounds {
            let (g, l) = if round % 2 == 0 {
                let g = block(&mut gru, &input, &mut gru_out)?;
                (g, block(&mut lstm, &input, &mut lstm_out)?)
            } else {
                let l = block(&mut lstm, &input, &mut lstm_out)?;
                (block(&mut gru, &input, &mut gru_out)?, l)
            };
            gru_times.push(g);
            lstm_times.push(l);
            ratios.push(g / l);
        }
        let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = ratios.iter().copied().fold(0.0, f64::max);
        println!(
            "B = {batch}, T = {seq_len}, I = H = {size}, {threads} thread(s): GRU {:.0} µs, \
             LSTM {:.0} µs per call; GRU/LSTM {:.3} (rounds {lowest:.3}–{highest:.3})",
            median(gru_times) * 1e6,
            median(lstm_times) * 1e6,
            median(ratios),
        );
    }
    Ok(())
}
