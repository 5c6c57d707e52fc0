//! One time step of one layer and direction, for a range of rows and a range of panels: the
//! projection is already computed, the recurrent product and its epilogue run here.

use std::ops::Range;

use gru_core::{Cell, GruVariant};
use wide::f32x8;

use crate::epilogue::{
    GruResetAfter, GruResetBeforeCandidate, GruResetBeforeGates, LstmCell, LstmInputForget,
    LstmOnePass, StepInputs,
};
use crate::packing::{LANES, PackedLayer};
use crate::threading::SharedVectors;
use crate::tiles::{PanelOrder, PanelWeights, run_tiles};

/// Per-row state besides `h` that a cell carries across steps or between the halves of a
/// step: `c`, `σ(i)` and `σ(f)` (LSTM), `z` and `r ⊙ h` (reset-before GRU). `rows × panels`
/// vectors each.
#[derive(Debug)]
pub struct CellScratch {
    /// The LSTM cell state.
    pub c: SharedVectors,
    /// The update gate between the halves of a reset-before step.
    pub z: SharedVectors,
    /// `r ⊙ h` between the halves of a reset-before step.
    pub reset_state: SharedVectors,
    /// `σ(i)` between the halves of an LSTM step in two passes (8-lane tiles).
    pub input_gate: SharedVectors,
    /// `σ(f)` between the halves of an LSTM step in two passes (8-lane tiles).
    pub forget_gate: SharedVectors,
}

impl CellScratch {
    /// Scratch for `rows` rows of `layer` (only what its cell uses is allocated).
    pub fn new(layer: &PackedLayer, rows: usize) -> Self {
        let len = rows * layer.panels();
        let (lstm, reset_before) = (
            layer.cell() == Cell::Lstm,
            layer.cell() == Cell::Gru(GruVariant::ResetBefore),
        );
        let lstm_in_two_passes = lstm && layer.recurrent_second().is_some();
        Self {
            c: SharedVectors::zeros(if lstm { len } else { 0 }),
            z: SharedVectors::zeros(if reset_before { len } else { 0 }),
            reset_state: SharedVectors::zeros(if reset_before { len } else { 0 }),
            input_gate: SharedVectors::zeros(if lstm_in_two_passes { len } else { 0 }),
            forget_gate: SharedVectors::zeros(if lstm_in_two_passes { len } else { 0 }),
        }
    }

    /// Vectors held, all buffers together.
    pub fn len(&self) -> usize {
        [
            &self.c,
            &self.z,
            &self.reset_state,
            &self.input_gate,
            &self.forget_gate,
        ]
        .iter()
        .map(|b| b.len())
        .sum()
    }

    /// Whether no buffer holds anything (a reset-after GRU).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this scratch fits `rows` rows of `layer`.
    pub fn fits(&self, layer: &PackedLayer, rows: usize) -> bool {
        let fresh_len = |needed: bool| if needed { rows * layer.panels() } else { 0 };
        let lstm = layer.cell() == Cell::Lstm;
        self.c.len() == fresh_len(lstm)
            && self.z.len() == fresh_len(layer.cell() == Cell::Gru(GruVariant::ResetBefore))
            && self.input_gate.len() == fresh_len(lstm && layer.recurrent_second().is_some())
    }
}

/// Panels an LSTM step finishes at a time (its two passes alternate per group): one tile's
/// width at batch 1.
const LSTM_PANEL_GROUP: usize = 6;

/// Panels per group when a step runs group by group ([`panel_groups`]): the width of one
/// batch-1 tile, so a group is one tile at batch 1.
const GRU_PANEL_GROUP: usize = 4;

/// The groups of `panels` that a streaming step runs one after the other, each a complete
/// projection and [`recurrent_step`]: ascending on even steps, descending on odd ones. When a
/// step's weights (`W_ih` and `W_hh`) do not fit in L2, it then starts on the weights the
/// previous step touched last, which are still there; cycling through them in one order evicts
/// every line before its next use. Measured, I = H = 256, one thread (1.57 MB of weights per
/// step): a scratch loop of the two products alone took 20.1–20.3 µs per step in one order and
/// 18.3–18.5 µs alternating (medians of 2000 steps, three rounds); `Stream::step` 23.1–23.4 →
/// 21.3–22.9 µs (four alternating rounds), and `gru bench --mode step` gained 3 % (medians of
/// ten alternating rounds).
///
/// Whole sequences do not use it: there only `W_hh` is streamed per step, and one call per
/// group measured no gain at B = 1, 2 threads (0.85–1.04× over GRU and LSTM at I = H = 256,
/// 512, 1024; medians of six alternating rounds). They alternate the order inside one call
/// instead ([`PanelOrder`]), which costs nothing per group.
///
/// The reset-before GRU's second half needs every unit of the first, so its step stays one
/// group. There is always at least one group, possibly empty: a worker without panels must
/// still reach the barriers inside a step.
pub fn panel_groups(
    cell: Cell,
    panels: Range<usize>,
    step: usize,
) -> impl Iterator<Item = Range<usize>> {
    let width = match cell {
        Cell::Gru(GruVariant::ResetAfter) => GRU_PANEL_GROUP,
        Cell::Lstm => LSTM_PANEL_GROUP,
        Cell::Gru(GruVariant::ResetBefore) => panels.len().max(1),
    };
    let empty = panels.is_empty().then_some(panels.start..panels.start);
    PanelOrder::alternating(step)
        .groups(panels, width)
        .chain(empty)
}

/// The state `h` of all rows as the floats the microkernel broadcasts from.
fn as_floats(h: &[f32x8]) -> &[f32] {
    wide::bytemuck::cast_slice(h)
}

/// States up to this many bytes are prefetched whole at the start of a step
/// ([`prefetch_state`]), when the k loop is at most [`PREFETCHED_STATE_MAX_K`] long.
const PREFETCHED_STATE_BYTES: usize = 4 << 10;

/// See [`PREFETCHED_STATE_BYTES`].
const PREFETCHED_STATE_MAX_K: usize = 256;

/// Asks for every line of `state` at once, when it is small ([`PREFETCHED_STATE_BYTES`]) and
/// the k loop that reads it short (`k_len`, at most [`PREFETCHED_STATE_MAX_K`]).
///
/// Split by panels, each worker's k loop broadcasts the whole state, half of which the other
/// worker has just written: those lines come from the other core as the loop reaches them.
/// Asked for all at once, right after the barrier, their transfers overlap. In a longer loop
/// the hardware's prefetchers have them in time anyway, and a larger state only crowds the
/// line fill buffers the weights need. Measured at 2 threads (alternating rounds): GRU 0.93×
/// the time at B = 1, I = H = 128, 0.94–0.98× at 256, 0.94–0.96× at B = 4, I = H = 256;
/// LSTM 0.97×, 0.97–0.99× and 0.95–0.97×. Without the bound on bytes, B = 8, I = H = 512
/// (16 KiB) took 1.05–1.07× the time. At B = 1 and 2, I = H = 512 it gained nothing
/// (0.98–1.04×, about what those shapes varied by between two builds without it), hence the
/// bound on k.
fn prefetch_state(state: &[f32x8], k_len: usize) {
    if std::mem::size_of_val(state) > PREFETCHED_STATE_BYTES || k_len > PREFETCHED_STATE_MAX_K {
        return;
    }
    // Two vectors of eight floats make a 64-byte line.
    #[cfg(target_arch = "x86_64")]
    for line in state.chunks(2) {
        // SAFETY: a prefetch reads nothing and cannot fault; SSE is part of x86-64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
}

/// Advances `rows × panels` of `layer` by one step, visiting the panels in `order`: reads
/// `h_prev` (every panel of `rows`; nobody writes it during the step), writes `h_next` (and
/// `scratch`) for its own rows and panels. `h_prev`, `projection` and `active` hold the
/// entries of `rows` only, from `rows.start` on; `h_next` and `scratch` hold every row.
/// `sync` is called between the two halves of a reset-before step; with panels split over
/// workers it must be a barrier.
///
/// # Safety
/// While it runs, no other thread may read or write the vectors of `h_next` and `scratch`
/// that belong to `rows × panels`. When several threads step the same `rows`, each on its own
/// `panels`, `sync` must be a barrier of all of them (the second half of a reset-before step
/// reads every panel of `scratch.z` and `scratch.reset_state` in `rows`), and nobody else may
/// touch those rows of `scratch` until the last of them has returned. When no one else steps
/// `rows`, `sync` may do nothing.
#[allow(clippy::too_many_arguments)]
pub unsafe fn recurrent_step(
    layer: &PackedLayer,
    scratch: &CellScratch,
    projection: &[f32x8],
    active: &[bool],
    h_prev: &[f32x8],
    h_next: &SharedVectors,
    rows: Range<usize>,
    panels: Range<usize>,
    order: PanelOrder,
    sync: &dyn Fn(),
) {
    prefetch_state(h_prev, layer.hidden_size());
    let stride = layer.panels() * LANES;
    let step = StepInputs {
        projection,
        active,
        first_row: rows.start,
        h_prev,
        panels: layer.panels(),
        gates: layer.gates(),
    };
    let recurrent = PanelWeights::recurrent(layer.recurrent());
    match layer.cell() {
        Cell::Gru(GruVariant::ResetAfter) => {
            let epilogue = GruResetAfter {
                step,
                hn_bias: layer.hn_bias(),
                h_next,
            };
            // SAFETY: the caller has `rows × panels` of `h_next`.
            unsafe {
                run_tiles::<3, 4, 4, 2, _>(
                    &epilogue,
                    recurrent,
                    as_floats(h_prev),
                    stride,
                    rows,
                    panels,
                    order,
                );
            }
        }
        Cell::Gru(GruVariant::ResetBefore) => {
            let gates = GruResetBeforeGates {
                step,
                z: &scratch.z,
                reset_state: &scratch.reset_state,
            };
            // SAFETY: the caller has `rows × panels` of `scratch`.
            unsafe {
                run_tiles::<2, 6, 6, 3, _>(
                    &gates,
                    recurrent,
                    as_floats(h_prev),
                    stride,
                    rows.clone(),
                    panels.clone(),
                    order,
                );
            }
            sync();
            let own_rows = rows.start * layer.panels()..rows.end * layer.panels();
            // SAFETY: every thread stepping these rows wrote its panels of `z` and `r ⊙ h`
            // before `sync`, and nobody writes them again before all have returned (the
            // caller's contract).
            let (z, reset_state) = unsafe {
                (
                    scratch.z.read(own_rows.clone()),
                    scratch.reset_state.read(own_rows),
                )
            };
            let candidate = GruResetBeforeCandidate { step, z, h_next };
            let n_pack = layer
                .recurrent_second()
                .expect("a reset-before layer has an n pack");
            // SAFETY: the caller has `rows × panels` of `h_next`.
            unsafe {
                run_tiles::<1, 8, 8, 4, _>(
                    &candidate,
                    PanelWeights::recurrent(n_pack),
                    as_floats(reset_state),
                    stride,
                    rows,
                    panels,
                    order,
                );
            }
        }
        // The LSTM packed in one pack of its four gates (the 16-lane tiles): one pass.
        Cell::Lstm if layer.recurrent_second().is_none() => {
            let epilogue = LstmOnePass {
                step,
                c: &scratch.c,
                h_next,
            };
            // SAFETY: the caller has `rows × panels` of `h_next` and `scratch`.
            unsafe {
                run_tiles::<4, 2, 3, 2, _>(
                    &epilogue,
                    recurrent,
                    as_floats(h_prev),
                    stride,
                    rows,
                    panels,
                    order,
                );
            }
        }
        Cell::Lstm => {
            // Two packs of two gates (the 8-lane tiles): two passes, six panels at a time, so
            // that `σ(i)` and `σ(f)` are read back from L1 right after they were written; the
            // second pass needs only this worker's own results of the first, so no
            // synchronisation between them.
            let first = LstmInputForget {
                step,
                input_gate: &scratch.input_gate,
                forget_gate: &scratch.forget_gate,
            };
            let second = LstmCell {
                step,
                input_gate: &scratch.input_gate,
                forget_gate: &scratch.forget_gate,
                c: &scratch.c,
                h_next,
            };
            let pack = layer
                .recurrent_second()
                .expect("an LSTM layer has a second pack");
            let h = as_floats(h_prev);
            for group in order.groups(panels, LSTM_PANEL_GROUP) {
                // SAFETY: the group is within the caller's `panels`; the caller has
                // `rows × panels` of `h_next` and `scratch`.
                unsafe {
                    run_tiles::<2, 6, 6, 3, _>(
                        &first,
                        recurrent,
                        h,
                        stride,
                        rows.clone(),
                        group.clone(),
                        order,
                    );
                    run_tiles::<2, 6, 6, 3, _>(
                        &second,
                        PanelWeights::recurrent(pack),
                        h,
                        stride,
                        rows.clone(),
                        group,
                        order,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_groups_cover_every_panel_once_and_alternate_direction() {
        let cells = [
            Cell::Gru(GruVariant::ResetAfter),
            Cell::Gru(GruVariant::ResetBefore),
            Cell::Lstm,
        ];
        for cell in cells {
            for start in 0..3 {
                for len in 0..20 {
                    let panels = start..start + len;
                    let even: Vec<_> = panel_groups(cell, panels.clone(), 0).collect();
                    let odd: Vec<_> = panel_groups(cell, panels.clone(), 1).collect();
                    assert!(!even.is_empty(), "{cell:?} {panels:?}: no group");
                    let covered: Vec<usize> = even.iter().flat_map(|g| g.clone()).collect();
                    assert_eq!(covered, panels.clone().collect::<Vec<_>>(), "{cell:?}");
                    let reversed: Vec<_> = odd.iter().rev().cloned().collect();
                    assert_eq!(reversed, even, "{cell:?} {panels:?}");
                    if cell == Cell::Gru(GruVariant::ResetBefore) {
                        assert_eq!(
                            even,
                            std::slice::from_ref(&panels),
                            "one group, even when empty"
                        );
                    }
                }
            }
        }
    }
}
