//! `forward` (new result buffers per call) against `forward_into` (one `SequenceOutput` reused
//! by every call), on 2 workers, in alternating rounds: prints the median of the rounds' time
//! ratios and their range. Each round times seven calls of each and keeps their median.
//!
//! ```sh
//! cargo run --release -p gru-simd --example reused_buffers
//! ```

use std::hint::black_box;
use std::time::Instant;

use gru_core::{
    Cell, CellKind, GruVariant, LayerWeights, Model, RecurrentKernel, SequenceInput, SequenceOutput,
};
use gru_simd::SimdModel;

mod common;
use common::values;

/// `(B, T, I = H)` of each measured shape.
const SHAPES: [(usize, usize, usize); 5] = [
    (64, 100, 256),
    (64, 100, 512),
    (64, 50, 1024),
    (1, 100, 256),
    (1, 100, 512),
];

const ROUNDS: usize = 20;

const CALLS_PER_ROUND: usize = 7;

/// The median time of `CALLS_PER_ROUND` calls of `call`.
fn median_call(mut call: impl FnMut() -> gru_core::Result<()>) -> gru_core::Result<f64> {
    let mut seconds = Vec::with_capacity(CALLS_PER_ROUND);
    for _ in 0..CALLS_PER_ROUND {
        let start = Instant::now();
        call()?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(seconds[CALLS_PER_ROUND / 2])
}

fn main() -> gru_core::Result<()> {
    for (batch, seq_len, size) in SHAPES {
        let weights = LayerWeights::new(
            CellKind::Gru,
            size,
            size,
            values(3 * size * size, 1.0, 0.05),
            values(3 * size * size, 2.0, 0.05),
            None,
            None,
        )?;
        let model = Model::single_layer(Cell::Gru(GruVariant::ResetAfter), weights)?;
        let mut gru = SimdModel::with_threads(&model, 2)?;
        let x = values(seq_len * batch * size, 3.0, 1.0);
        let input = SequenceInput::new(&x, seq_len, batch);
        let mut out = SequenceOutput::empty();
        // Warm-up: the model's buffers and `out` grow, the workers start.
        for _ in 0..3 {
            black_box(gru.forward(&input)?);
            gru.forward_into(&input, &mut out)?;
        }
        let mut ratios = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            let fresh =
                |gru: &mut SimdModel| median_call(|| gru.forward(&input).map(black_box).map(drop));
            let mut reused =
                |gru: &mut SimdModel| median_call(|| gru.forward_into(&input, &mut out));
            let (new_buffers, into) = if round % 2 == 0 {
                let a = fresh(&mut gru)?;
                (a, reused(&mut gru)?)
            } else {
                let b = reused(&mut gru)?;
                (fresh(&mut gru)?, b)
            };
            ratios.push(into / new_buffers);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "B = {batch}, T = {seq_len}, I = H = {size}: forward_into / forward time {:.3} \
             (rounds {:.3}–{:.3})",
            ratios[ROUNDS / 2],
            ratios[0],
            ratios[ROUNDS - 1]
        );
    }
    Ok(())
}
