//! Tiles of 16-lane AVX-512 vectors over pairs of panels ([`PanelLayout::Pairs`]).
//!
//! [`PanelLayout::Pairs`]: crate::packing::PanelLayout::Pairs

use std::ops::Range;

use crate::epilogue::TileEpilogue;
use crate::microkernel::InputRows;
use crate::microkernel::avx512::{
    PairVector, PrefetchLines, accumulate_pair_tile, accumulate_pair_tile_blocked, join, split,
};

use super::{CallRows, PanelWeights, Prefetch, Summation, TileKernel};

/// Tiles of 16-lane vectors: a column is a pair of panels, `2c` in the low lanes and `2c + 1`
/// in the high ones.
pub(super) struct Lanes16;

impl TileKernel for Lanes16 {
    /// Eight rows for three gates and for two, sixteen for one (ResetBefore's candidate), six
    /// for four (the LSTM: 24 accumulators, as the GRU's eight rows of three), in running and
    /// blocked sums alike. Eight rows of three gates hold 24 of the 32 registers;
    /// of two gates 16, 32 with the blocked sums' running totals, some then spilled as the
    /// GRU's are. Eight divides the row counts that matter, 64 and the 32 a worker takes of
    /// them when the rows are split, where twelve rows of two gates left 4 or 8 rows of every
    /// column to the two-row strips. Against twelve rows running and six blocked (6 alternating
    /// rounds each, 2 threads, LSTM at B = 64): running 0.954–0.972× the time at
    /// I = H = 128–1024, then blocked 0.922× at 1024, 0.948× at 512, 0.985× at 256; both
    /// together (4 rounds) 0.924× at 256 and 0.934× at 1024, on one thread 0.970× and 0.918×;
    /// ResetBefore at B = 64 0.991× and 0.944×; batch 1 0.965–0.990×. (Six rows blocked had
    /// beaten twelve; for three gates four rows blocked measured 0.99–1.02× of eight.)
    #[inline(always)]
    fn block_rows<const G: usize, const ROWS: usize>() -> usize {
        match G {
            1 => 16,
            4 => 6,
            _ => 8,
        }
    }

    /// Four rows for four gates (16 accumulators), for the six-row blocks' remainders.
    #[inline(always)]
    fn short_block_rows<const G: usize, const ROWS: usize>() -> usize {
        if G == 4 { 4 } else { 0 }
    }

    #[inline(always)]
    unsafe fn block<const G: usize, const ROWS: usize, E: TileEpilogue<G>>(
        epilogue: &E,
        weights: &PanelWeights<'_>,
        inputs: &CallRows<'_>,
        first_row: usize,
        column: usize,
        panels: &Range<usize>,
        prefetch: Prefetch,
        short: bool,
    ) {
        // SAFETY: the caller's rows and column, on a CPU with AVX-512F (the caller's
        // contract); `block_rows` and `short_block_rows` say how many rows.
        unsafe {
            if short {
                debug_assert_eq!(G, 4, "short blocks are four-gate tiles'");
                block_of::<G, 4, E>(
                    epilogue, weights, inputs, first_row, column, panels, prefetch,
                )
            } else if G == 1 {
                block_of::<G, 16, E>(
                    epilogue, weights, inputs, first_row, column, panels, prefetch,
                )
            } else if G == 4 {
                block_of::<G, 6, E>(
                    epilogue, weights, inputs, first_row, column, panels, prefetch,
                )
            } else {
                block_of::<G, 8, E>(
                    epilogue, weights, inputs, first_row, column, panels, prefetch,
                )
            }
        }
    }

    #[inline(always)]
    unsafe fn strip<const G: usize, const MR: usize, const NR: usize, E: TileEpilogue<G>>(
        epilogue: &E,
        weights: &PanelWeights<'_>,
        inputs: InputRows<'_, MR>,
        rows: [usize; MR],
        columns: [usize; NR],
        panels: &Range<usize>,
    ) {
        // SAFETY: the caller's rows and columns, on a CPU with AVX-512F.
        unsafe {
            pair_tile::<G, MR, NR, E>(
                epilogue,
                weights,
                inputs,
                rows,
                columns,
                panels,
                Prefetch::NONE,
            )
        };
    }
}

/// The block tile of `MR` rows from `first_row` on one pair.
///
/// # Safety
/// As [`pair_tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_of<const G: usize, const MR: usize, E: TileEpilogue<G>>(
    epilogue: &E,
    weights: &PanelWeights<'_>,
    inputs: &CallRows<'_>,
    first_row: usize,
    pair: usize,
    panels: &Range<usize>,
    prefetch: Prefetch,
) {
    let rows: [usize; MR] = std::array::from_fn(|m| first_row + m);
    let inputs = inputs.rows::<MR>(first_row);
    // SAFETY: the caller's contract.
    unsafe { pair_tile::<G, MR, 1, E>(epilogue, weights, inputs, rows, [pair], panels, prefetch) }
}

/// One tile of `MR` rows × `NP` pairs: starting values from the epilogue, the product, the
/// epilogue, for the panels of each pair that are in `panels`.
///
/// # Safety
/// As [`run_tiles`](super::run_tiles), for `rows` × `panels`; and the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
unsafe fn pair_tile<const G: usize, const MR: usize, const NP: usize, E: TileEpilogue<G>>(
    epilogue: &E,
    weights: &PanelWeights<'_>,
    inputs: InputRows<'_, MR>,
    rows: [usize; MR],
    pairs: [usize; NP],
    panels: &Range<usize>,
    prefetch: Prefetch,
) {
    let zero = wide::f32x8::ZERO;
    // SAFETY: this function is compiled for AVX-512F and runs on a CPU that has it (the
    // caller's contract), and it inlines `join`, `split` and the accumulation, here and below.
    let mut init = [[[unsafe { join(zero, zero) }; G]; NP]; MR];
    let mut starts = [0; NP];
    for j in 0..NP {
        starts[j] = pairs[j] * weights.column_stride;
        let [low, high] = [2 * pairs[j], 2 * pairs[j] + 1];
        let (has_low, has_high) = (panels.contains(&low), panels.contains(&high));
        for m in 0..MR {
            let low = if has_low {
                epilogue.init(rows[m], low)
            } else {
                [zero; G]
            };
            let high = if has_high {
                epilogue.init(rows[m], high)
            } else {
                [zero; G]
            };
            for g in 0..G {
                // SAFETY: as above.
                init[m][j][g] = unsafe { join(low[g], high[g]) };
            }
        }
    }
    let prefetch_lines = PrefetchLines {
        from: weights.data.as_ptr().wrapping_add(prefetch.start).cast(),
        count: prefetch.lines,
    };
    let mut acc = init;
    // SAFETY: as above.
    unsafe { product::<G, MR, NP>(&mut acc, inputs, weights, starts, prefetch_lines) };
    for m in 0..MR {
        for j in 0..NP {
            let [low, high] = [2 * pairs[j], 2 * pairs[j] + 1];
            if panels.contains(&low) && panels.contains(&high) {
                // SAFETY: the caller has this row and both panels to itself; AVX-512F as above.
                unsafe { epilogue.finish_pair(rows[m], pairs[j], acc[m][j]) };
                continue;
            }
            let mut halves = [[zero; G]; 2];
            for g in 0..G {
                // SAFETY: as above.
                let [low, high] = unsafe { split(acc[m][j][g]) };
                halves[0][g] = low;
                halves[1][g] = high;
            }
            for (half, values) in halves.into_iter().enumerate() {
                let panel = 2 * pairs[j] + half;
                if panels.contains(&panel) {
                    // SAFETY: the caller has this row and panel to itself.
                    unsafe { epilogue.finish(rows[m], panel, values) };
                }
            }
        }
    }
}

/// The k loop of a tile: `acc` plus the products of `inputs` and the pairs from `starts`.
///
/// Out of line, so that the k loop has the registers to itself. Inlined into [`pair_tile`], its
/// register allocation followed whatever the code around it needed, and small changes there
/// sent the 24 accumulators of the GRU's recurrent tile to the stack: the summation made known
/// at compile time (so the recurrent tiles lost the projection's blocked path) took the GRU at
/// B = 64 to 1.13–1.19× the time, and the rows passed as [`InputRows`] to 1.26–1.32×
/// (alternating rounds, 2 threads). Out of line, before that change: 0.98× at I = H = 1024,
/// 0.97× at 256, 1.01× at 512 against inlined (4 rounds). Passing the accumulators through
/// memory costs two moves each per tile, beside `k_len` FMAs each. (The outlining that
/// [`accumulate_pair_tile`] warns of, which cost a quarter of the time at B = 64, was the
/// compiler's own, in an older loop nest; this one, deliberate, measured as above.)
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn product<const G: usize, const MR: usize, const NP: usize>(
    acc: &mut [[[PairVector; G]; NP]; MR],
    inputs: InputRows<'_, MR>,
    weights: &PanelWeights<'_>,
    starts: [usize; NP],
    prefetch: PrefetchLines,
) {
    let (data, k_stride, k_len) = (weights.data, weights.k_stride, weights.k_len);
    // SAFETY: AVX-512F, the caller's contract; the accumulation is inlined here.
    *acc = unsafe {
        match weights.summation {
            Summation::Running => accumulate_pair_tile::<G, MR, NP>(
                *acc, inputs, data, starts, k_stride, k_len, prefetch,
            ),
            Summation::Blocked => accumulate_pair_tile_blocked::<G, MR, NP>(
                *acc, inputs, data, starts, k_stride, k_len, prefetch,
            ),
        }
    };
}
