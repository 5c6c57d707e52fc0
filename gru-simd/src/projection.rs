//! The input projection `x·W_ihᵀ + b` of many rows at once: a chunk of time steps in a whole
//! sequence, or one step of a stream.
//!
//! It runs on the same tiles as the recurrent product, straight from the prepacked `W_ih`
//! panels: nothing is repacked per call, so the projection of a few rows (batch 1, or one
//! streaming step) costs no more per row than that of many. The products are summed in blocks
//! of [`sum_block`](crate::microkernel::sum_block) inputs, since raw features can be large.
//!
//! `matrixmultiply` did this job before. With the same blocked summation (one call per block)
//! it was slower at every shape measured, 1.1–1.5× on one thread
//! (`cargo bench -p gru-simd --bench projection`), and far slower at batch 1 on two threads,
//! where each call repacked all of `W_ih` for a few rows.

use std::ops::Range;

use crate::epilogue::Projection;
use crate::packing::{PackedLayer, PanelPack};
use crate::threading::SharedVectors;
use crate::tiles::{PanelOrder, PanelWeights, run_tiles};

/// Writes `out[r] = bias + x[r]·W_ihᵀ` for the given `rows × panels`, where row `r` of the input
/// is `x[r·x_stride..][..I]` and row `r` of `out` is `G·panels` vectors in panel order.
///
/// # Safety
/// While it runs, no other thread may read or write the vectors of `out` that belong to
/// `rows × panels`.
///
/// # Panics
/// If `x` or `out` is too short for `rows`.
pub unsafe fn project(
    layer: &PackedLayer,
    x: &[f32],
    x_stride: usize,
    out: &SharedVectors,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let mut first_gate = 0;
    for pack in layer.input() {
        let (rows, panels) = (rows.clone(), panels.clone());
        match pack.gate_count() {
            // SAFETY: the caller's rows and panels, which it has to itself.
            3 => unsafe {
                project_pack::<3, 4, 4, 2>(layer, pack, first_gate, x, x_stride, out, rows, panels)
            },
            // SAFETY: as above.
            2 => unsafe {
                project_pack::<2, 6, 6, 3>(layer, pack, first_gate, x, x_stride, out, rows, panels)
            },
            // The LSTM's one pack, made only in pairs: the 16-lane tiles have six rows and short
            // blocks of four (`tiles::pairs`); the 8-lane sizes here never run.
            // SAFETY: as above.
            4 => unsafe {
                project_pack::<4, 2, 3, 2>(layer, pack, first_gate, x, x_stride, out, rows, panels)
            },
            g => unreachable!("input packs hold 4, 3 or 2 gates, not {g}"),
        }
        first_gate += pack.gate_count();
    }
}

/// [`project`] for one pack of `G` gates starting at `first_gate`, with tiles of `ROWS` rows,
/// of two rows × `PAIR_PANELS` panels, or of one row × `PANELS` panels ([`run_tiles`]).
///
/// An 8-lane tile must fit the 16 vector registers with its `G` weights and the broadcast
/// input: 4 rows × 3 gates and 6 rows × 2 gates do. LSTM's four gates are therefore two packs
/// of two there: one pack of four allowed tiles of only 2 rows (3 × 4 spilled registers): on
/// one thread, best of 30, its projection ran at 38–45 GFLOP/s with 3 × 4 and 62–69 with
/// 2 × 4; the two packs of 6 × 2 then gained another 3–23 % on the whole LSTM. The 16-lane
/// tiles, with 32 registers, have 8 rows of three gates or two, and 6 of the LSTM's four in
/// one pack (`tiles::pairs`).
///
/// # Safety
/// As [`project`].
#[allow(clippy::too_many_arguments)]
unsafe fn project_pack<
    const G: usize,
    const ROWS: usize,
    const PANELS: usize,
    const PAIR_PANELS: usize,
>(
    layer: &PackedLayer,
    pack: &PanelPack,
    first_gate: usize,
    x: &[f32],
    x_stride: usize,
    out: &SharedVectors,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let epilogue = Projection::<G> {
        bias: layer.projection_bias(),
        panels: layer.panels(),
        gates: layer.gates(),
        first_gate,
        out,
    };
    // `run_tiles` takes the inputs from the first row on (empty when there are no rows).
    let x = x.get(rows.start * x_stride..).unwrap_or_default();
    // SAFETY: the caller has these rows and panels of `out`, all that `epilogue` writes.
    unsafe {
        run_tiles::<G, ROWS, PANELS, PAIR_PANELS, _>(
            &epilogue,
            PanelWeights::input(pack),
            x,
            x_stride,
            rows,
            panels,
            PanelOrder::Ascending,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gru_core::{Cell, GruVariant, LayerWeights};
    /// Every input size around the summation blocks, every row count that exercises the row
    /// tiles and the leftover rows, split by rows and by panels, GRU (3 gates) and LSTM (4),
    /// against a plain f64 loop.
    #[test]
    fn projection_matches_a_plain_loop() {
        for cell in [Cell::Gru(GruVariant::ResetAfter), Cell::Lstm] {
            for (input, hidden) in [(5, 11), (16, 8), (17, 3), (37, 20)] {
                let rows = cell.gate_count() * hidden;
                let value = |s: f32, n: usize| {
                    (0..n)
                        .map(|k| ((k as f32 + s) * 0.41).sin())
                        .collect::<Vec<_>>()
                };
                let w = LayerWeights::new(
                    cell.kind(),
                    input,
                    hidden,
                    value(1.0, rows * input),
                    value(2.0, rows * hidden),
                    Some(value(3.0, rows)),
                    Some(value(4.0, rows)),
                )
                .unwrap();
                let layer = PackedLayer::new(&w, cell);
                let (gates, panels) = (layer.gates(), layer.panels());
                for batch in 1..=6 {
                    // Rows padded to a wider stride, to check the stride is honoured.
                    let stride = input + 3;
                    let x: Vec<f32> = value(5.0, batch * stride)
                        .iter()
                        .map(|v| 30.0 * v)
                        .collect();
                    let projection = SharedVectors::zeros(batch * gates * panels);
                    let half_rows = batch / 2;
                    let half_panels = panels / 2;
                    let out = &projection;
                    // SAFETY: single-threaded test.
                    unsafe {
                        if batch % 2 == 0 {
                            project(&layer, &x, stride, out, 0..half_rows, 0..panels);
                            project(&layer, &x, stride, out, half_rows..batch, 0..panels);
                        } else {
                            project(&layer, &x, stride, out, 0..batch, 0..half_panels);
                            project(&layer, &x, stride, out, 0..batch, half_panels..panels);
                        }
                    }
                    // SAFETY: single-threaded test, all writes done.
                    let flat: &[f32] =
                        wide::bytemuck::cast_slice(unsafe { projection.read(0..projection.len()) });
                    for r in 0..batch {
                        for g in 0..gates {
                            for unit in 0..hidden {
                                let (p, u) = (unit / 8, unit % 8);
                                let got = flat[r * gates * panels * 8 + (p * gates + g) * 8 + u];
                                let b_hh_folds =
                                    !(cell == Cell::Gru(GruVariant::ResetAfter) && g == 2);
                                let mut want = f64::from(w.b_ih_at(g, unit))
                                    + if b_hh_folds {
                                        f64::from(w.b_hh_at(g, unit))
                                    } else {
                                        0.0
                                    };
                                let mut magnitude = want.abs();
                                for k in 0..input {
                                    let term = f64::from(w.w_ih_row(g, unit)[k])
                                        * f64::from(x[r * stride + k]);
                                    want += term;
                                    magnitude += term.abs();
                                }
                                assert!(
                                    (f64::from(got) - want).abs() <= 1e-6 * magnitude,
                                    "{cell:?} I={input} B={batch} row {r} gate {g} unit {unit}: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
