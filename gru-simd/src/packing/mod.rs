//! Packing a layer's weights, once, into the layouts the kernels stream.
//!
//! Hidden units are grouped in *panels* of 8 (one `f32x8` lane each); the hidden size is padded
//! to `Hp = 8·⌈H/8⌉` with zero weights. Within a panel the gates are interleaved, so that one
//! register tile holds every gate of its 8 units and the epilogue can finish them at once:
//!
//! - **input weights** (`W_ih`), panel-contiguous: panel `p` is `[I, G, 8]` (k, gate, unit);
//!   LSTM's, for the 8-lane tiles, in two packs, `[i, f]` and `[g, o]`, for the same reason as
//!   its recurrent weights below. The input projection streams them straight from the packed
//!   panels, a chunk of steps at a time or one step at a time, so they are never repacked.
//! - **recurrent weights** (`W_hh`), panel-contiguous: panel `p` is `[H, G', 8]` (k, gate, unit),
//!   one unbroken stream per panel so each thread's share stays hot in its own cache.
//!   ResetAfter GRU uses one pack of all gates; ResetBefore GRU uses two, `[r, z]` and `[n]`,
//!   because its `n` product needs `r ⊙ h` of every unit first; LSTM uses two, `[i, f]` and
//!   `[g, o]`, for the 8-lane tiles, so that a tile of two gates can cover six rows in the 16
//!   vector registers (four gates allow only two), and one of all four for the 16-lane tiles,
//!   whose 32 registers hold six rows of four gates: one pass per step, no `σ(i)` and `σ(f)`
//!   stored between two (see `LstmOnePass` in the epilogues).
//! - **biases**: every bias that is simply added is folded into the projection's bias
//!   (`b_ih + b_hh`); only ResetAfter's `b_hn` stays apart, since `r` multiplies it.
//!
//! Packed weights take the original weights' memory plus the padding to 8 units (16 in
//! pairs). A layer's packs share one block (`storage.rs`): on Linux, a block of at least
//! three quarters of a transparent huge page gets a mapping of its own, advised into 2 MiB
//! pages and rounded up to whole ones where that leaves at most a third of the block unused.
//! Streamed on 4 KiB pages, large weights miss the TLB on every page; on 2 MiB pages, batch 1
//! at I = H = 512 took 0.81–0.90× the time on the Intel Xeon (a KVM guest), batch 64 0.98–1.00×
//! (2 threads; more in `storage.rs`).
//!
//! **Pairs** ([`PanelLayout::Pairs`], chosen where the CPU has AVX-512F): panels `2q` and
//! `2q + 1` share their k rows, `[k, gate, 2, 8]`, so that each gate of 16 units is one
//! 64-byte line, one load into a 16-lane register. Every lane still sums the same products in
//! the same order, so the results are bitwise those of the contiguous layout in a build with
//! FMA, as this workspace's x86-64-v3 (without target flags the 8-lane tiles multiply and add
//! unfused). On the Intel Xeon (two 512-bit FMA units per core) where this was written, the
//! 16-lane tiles took the GRU at B = 64, I = H = 256 and 512 from 93–99 to 145–152 GFLOP/s on
//! one thread, and from 192–194 to 285–289 on two (one run each).
//!
//! Why panels are not interleaved further: batch 1 runs tiles of one row across a few panels
//! (four for three gates), which read one stream per panel. Interleaving those panels
//! (`[k, panel, gate, 8]` per group of four) makes that one stream, and from L3 one stream was
//! read faster (scratch loop, one thread: 3.1 MB at 100 GB/s against 86 as four streams); in
//! the kernels a streaming step on one thread gained 9–13 % (GRU, H = 256 and 512). But the
//! tiles of four rows (large batches, the projection of a chunk) then read 96 bytes in every
//! 384, spread over four times as many pages: at H = 1024 they lost 17–22 % in the scratch loop
//! and B = 64 lost 28 % in the kernels. Which tiles run depends on the call, the layout on the
//! model, so the panels stay contiguous.

use std::sync::Arc;

use gru_core::cell::{gru_gate, lstm_gate};
use gru_core::{Cell, Error, GruVariant, LayerWeights, Result};
use wide::f32x8;

mod storage;
use storage::PackStorage;

/// Lanes per SIMD vector: the width of a panel.
pub const LANES: usize = 8;

/// How a [`PanelPack`] lays out its panels, which decides the tiles that stream it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PanelLayout {
    /// Each 8-unit panel contiguous, `[k_len, gates, 8]`: tiles of 8-lane vectors (AVX2 and
    /// FMA, or whatever `wide` compiles `f32x8` to).
    Contiguous,
    /// Panels in pairs, `[k_len, gates, 2, 8]` per pair, so that one 64-byte line holds a
    /// gate of 16 units: tiles of 16-lane vectors (AVX-512). The panel count is padded to
    /// even with zero weights, and each pair starts on a 64-byte boundary.
    Pairs,
}

impl PanelLayout {
    /// The layout whose tiles run fastest on this CPU: [`Pairs`](Self::Pairs) where AVX-512F
    /// is available at run time, else [`Contiguous`](Self::Contiguous).
    pub fn best() -> Self {
        if Self::Pairs.is_supported() {
            Self::Pairs
        } else {
            Self::Contiguous
        }
    }

    /// Whether this CPU can run this layout's tiles. Under valgrind, which does not emulate
    /// AVX-512, [`Pairs`](Self::Pairs) is not.
    pub fn is_supported(self) -> bool {
        match self {
            Self::Contiguous => true,
            #[cfg(target_arch = "x86_64")]
            Self::Pairs => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Pairs => false,
        }
    }

    /// Panels whose vectors share one k row: 1 or 2.
    pub fn panels_per_row(self) -> usize {
        match self {
            Self::Contiguous => 1,
            Self::Pairs => 2,
        }
    }
}

/// One weight matrix (`W_ih` or some gates of `W_hh`) in panels of 8 units laid out as
/// [`layout`](Self::layout) says: gate `slot` of unit `8p + u` at `k` is lane `u` of vector
/// `panel_start(p) + k·k_stride() + slot·gate_stride()` of [`data`](Self::data).
///
/// The packs of one layer share one block of memory (on Linux, on huge pages where the system
/// has them; see the [module docs](self)); cloning a pack shares it too (packed weights are
/// never written again).
#[derive(Debug, Clone)]
pub struct PanelPack {
    /// Gates in this pack, as PyTorch gate indices, in interleaved order.
    gates: Vec<usize>,
    /// The layer's block, of which this pack is `len` vectors from `start` (a line boundary):
    /// `panels × k_len × gates` (panels padded to even for [`PanelLayout::Pairs`]).
    storage: Arc<PackStorage>,
    start: usize,
    len: usize,
    /// The length of each panel's k dimension (`I` or `H`).
    k_len: usize,
    layout: PanelLayout,
}

impl PanelPack {
    /// A pack of `gates` of a matrix with `hidden` units per gate and `k_len` columns, not yet
    /// placed in a block nor filled ([`PackedLayer`] does both).
    fn unplaced(hidden: usize, k_len: usize, gates: &[usize], layout: PanelLayout) -> Self {
        let per_row = layout.panels_per_row();
        let panels = hidden.div_ceil(LANES).div_ceil(per_row) * per_row;
        Self {
            gates: gates.to_vec(),
            storage: Arc::new(PackStorage::zeroed(0)),
            start: 0,
            len: panels * k_len * gates.len(),
            k_len,
            layout,
        }
    }

    /// Writes the pack into `dest` (its `len` vectors, zeroed), whose weight at
    /// (gate, unit, k) is `row(gate, unit)[k]`; units past `hidden` stay zero.
    fn fill<'w>(&self, dest: &mut [f32x8], hidden: usize, row: impl Fn(usize, usize) -> &'w [f32]) {
        let panels = self.len / (self.k_len * self.gates.len()).max(1);
        for p in 0..panels {
            for (slot, &gate) in self.gates.iter().enumerate() {
                let rows: [Option<&[f32]>; LANES] = std::array::from_fn(|u| {
                    let unit = p * LANES + u;
                    (unit < hidden).then(|| row(gate, unit))
                });
                for k in 0..self.k_len {
                    let lanes = rows.map(|r| r.map_or(0.0, |r| r[k]));
                    let at = self.panel_start(p) + k * self.k_stride() + slot * self.gate_stride();
                    dest[at] = f32x8::from(lanes);
                }
            }
        }
    }

    /// How the panels are laid out.
    pub fn layout(&self) -> PanelLayout {
        self.layout
    }

    /// Number of gates `G'` interleaved in each panel.
    pub fn gate_count(&self) -> usize {
        self.gates.len()
    }

    /// The packed vectors, starting on a 64-byte line.
    pub fn data(&self) -> &[f32x8] {
        &self.storage.vectors()[self.start..self.start + self.len]
    }

    /// Index of the first vector of panel `p`.
    pub fn panel_start(&self, p: usize) -> usize {
        match self.layout {
            PanelLayout::Contiguous => p * self.k_len * self.gates.len(),
            PanelLayout::Pairs => p / 2 * self.pair_stride() + p % 2,
        }
    }

    /// Vectors from one pair of panels to the next ([`PanelLayout::Pairs`]).
    pub fn pair_stride(&self) -> usize {
        2 * self.k_len * self.gates.len()
    }

    /// Length of each panel's k dimension (`I` for `W_ih`, `H` for `W_hh`).
    pub fn k_len(&self) -> usize {
        self.k_len
    }

    /// Vectors from one k to the next within a panel.
    pub fn k_stride(&self) -> usize {
        self.gates.len() * self.layout.panels_per_row()
    }

    /// Vectors from one gate to the next within a panel's k row.
    pub fn gate_stride(&self) -> usize {
        self.layout.panels_per_row()
    }
}

/// Which weights a pack holds.
#[derive(Clone, Copy)]
enum Matrix {
    /// `W_ih`.
    Input,
    /// `W_hh`.
    Recurrent,
}

/// Gives a layer's `packs` one block of memory (see [`storage`]), each pack from a line
/// boundary, and fills them from `w`.
fn place_in_one_block(mut packs: Vec<(&mut PanelPack, Matrix)>, w: &LayerWeights) {
    let total = packs
        .iter()
        .map(|(pack, _)| pack.len.next_multiple_of(2))
        .sum();
    let mut block = PackStorage::zeroed(total);
    let mut start = 0;
    for (pack, matrix) in &mut packs {
        pack.start = start;
        let dest = &mut block.vectors_mut()[start..start + pack.len];
        match matrix {
            Matrix::Input => pack.fill(dest, w.hidden_size(), |g, unit| w.w_ih_row(g, unit)),
            Matrix::Recurrent => pack.fill(dest, w.hidden_size(), |g, unit| w.w_hh_row(g, unit)),
        }
        start += pack.len.next_multiple_of(2);
    }
    let block = Arc::new(block);
    for (pack, _) in packs {
        pack.storage = Arc::clone(&block);
    }
}

/// One layer and direction, packed for the SIMD kernels.
#[derive(Debug, Clone)]
pub struct PackedLayer {
    cell: Cell,
    input_size: usize,
    hidden_size: usize,
    /// `W_ih`: all gates, or (LSTM, 8-lane tiles) `[i, f]` and `[g, o]`.
    input: Vec<PanelPack>,
    /// Bias of the projection, `[G·Hp]` interleaved (`G·panels` vectors).
    projection_bias: Vec<f32x8>,
    /// ResetAfter's `b_hn` per panel; empty for the other cells.
    hn_bias: Vec<f32x8>,
    /// All gates (ResetAfter; LSTM, 16-lane tiles), `[r, z]` (ResetBefore) or `[i, f]`
    /// (LSTM, 8-lane tiles).
    recurrent: PanelPack,
    /// `[n]` (ResetBefore) or `[g, o]` (LSTM, 8-lane tiles).
    recurrent_second: Option<PanelPack>,
}

impl PackedLayer {
    /// Packs `w` for `cell` (whose family must match the weights') in the layout that runs
    /// fastest on this CPU ([`PanelLayout::best`]).
    pub fn new(w: &LayerWeights, cell: Cell) -> Self {
        Self::packed(w, cell, PanelLayout::best())
    }

    /// Packs `w` for `cell` in `layout`. The kernels give bitwise the same results in either
    /// layout (in a build with FMA; see the module docs).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when this CPU cannot run `layout`'s tiles
    /// ([`PanelLayout::is_supported`]).
    pub fn with_layout(w: &LayerWeights, cell: Cell, layout: PanelLayout) -> Result<Self> {
        if !layout.is_supported() {
            return Err(Error::Unsupported(format!(
                "{layout:?} panels need AVX-512F, which this CPU lacks"
            )));
        }
        Ok(Self::packed(w, cell, layout))
    }

    /// Packs `w` for `cell` in `layout`, supported or not (the tests check any layout's
    /// packing on any CPU).
    fn packed(w: &LayerWeights, cell: Cell, layout: PanelLayout) -> Self {
        debug_assert_eq!(w.kind(), cell.kind());
        let (input, hidden) = (w.input_size(), w.hidden_size());
        let gates = cell.gate_count();
        let panels = hidden.div_ceil(LANES);
        let unit_lanes = |p: usize, f: &dyn Fn(usize) -> f32| -> f32x8 {
            f32x8::from(std::array::from_fn::<f32, LANES, _>(|u| {
                let unit = p * LANES + u;
                if unit < hidden { f(unit) } else { 0.0 }
            }))
        };
        let all_gates: Vec<usize> = (0..gates).collect();
        let input_pack = |gates: &[usize]| PanelPack::unplaced(hidden, input, gates, layout);
        // The 8-lane tiles fit six rows of the LSTM's gates in their 16 registers two gates at
        // a time; the 16-lane tiles, with 32, six rows of all four.
        let lstm_in_two_packs = cell == Cell::Lstm && layout == PanelLayout::Contiguous;
        let mut input_packs = if lstm_in_two_packs {
            vec![
                input_pack(&[lstm_gate::I, lstm_gate::F]),
                input_pack(&[lstm_gate::G, lstm_gate::O]),
            ]
        } else {
            vec![input_pack(&all_gates)]
        };
        let recurrent_pack = |gates: &[usize]| PanelPack::unplaced(hidden, hidden, gates, layout);
        let reset_after = cell == Cell::Gru(GruVariant::ResetAfter);
        let mut projection_bias = Vec::with_capacity(gates * panels);
        for p in 0..panels {
            for g in 0..gates {
                let b_hh_folds = !(reset_after && g == gru_gate::N);
                projection_bias.push(unit_lanes(p, &|unit| {
                    w.b_ih_at(g, unit) + if b_hh_folds { w.b_hh_at(g, unit) } else { 0.0 }
                }));
            }
        }
        let hn_bias = if reset_after {
            (0..panels)
                .map(|p| unit_lanes(p, &|unit| w.b_hh_at(gru_gate::N, unit)))
                .collect()
        } else {
            Vec::new()
        };
        let (mut recurrent, mut recurrent_second) = match cell {
            Cell::Gru(GruVariant::ResetBefore) => (
                recurrent_pack(&[gru_gate::R, gru_gate::Z]),
                Some(recurrent_pack(&[gru_gate::N])),
            ),
            Cell::Lstm if lstm_in_two_packs => (
                recurrent_pack(&[lstm_gate::I, lstm_gate::F]),
                Some(recurrent_pack(&[lstm_gate::G, lstm_gate::O])),
            ),
            _ => (recurrent_pack(&all_gates), None),
        };
        let inputs = input_packs.iter_mut().map(|pack| (pack, Matrix::Input));
        let recurrents = std::iter::once(&mut recurrent)
            .chain(recurrent_second.as_mut())
            .map(|pack| (pack, Matrix::Recurrent));
        place_in_one_block(inputs.chain(recurrents).collect(), w);
        Self {
            cell,
            input_size: input,
            hidden_size: hidden,
            input: input_packs,
            projection_bias,
            hn_bias,
            recurrent,
            recurrent_second,
        }
    }

    /// The cell this layer runs.
    pub fn cell(&self) -> Cell {
        self.cell
    }
    /// Input size `I`.
    pub fn input_size(&self) -> usize {
        self.input_size
    }
    /// Hidden size `H`.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }
    /// Number of 8-unit panels, `Hp / 8`.
    pub fn panels(&self) -> usize {
        self.hidden_size.div_ceil(LANES)
    }
    /// Gates `G` of the cell (the projection has `G·Hp` columns).
    pub fn gates(&self) -> usize {
        self.cell.gate_count()
    }
    /// FLOPs of `steps` row-steps (one row of the batch, one time step each), both products:
    /// `2·G·H·(I + H)` each, saturating.
    pub fn flops(&self, steps: usize) -> usize {
        [
            2,
            self.gates(),
            self.hidden_size,
            self.input_size + self.hidden_size,
            steps,
        ]
        .into_iter()
        .fold(1, usize::saturating_mul)
    }
    /// `W_ih`: one pack of all gates, or (LSTM, 8-lane tiles) `[i, f]` then `[g, o]`. The
    /// packs' gates, in order, are the projection's gates in order.
    pub fn input(&self) -> &[PanelPack] {
        &self.input
    }
    /// The projection's bias, `G·panels` vectors.
    pub fn projection_bias(&self) -> &[f32x8] {
        &self.projection_bias
    }
    /// ResetAfter's `b_hn`, one vector per panel.
    pub fn hn_bias(&self) -> &[f32x8] {
        &self.hn_bias
    }
    /// The main recurrent pack.
    pub fn recurrent(&self) -> &PanelPack {
        &self.recurrent
    }
    /// The second recurrent pack: ResetBefore's `[n]`, LSTM's `[g, o]` (8-lane tiles).
    pub fn recurrent_second(&self) -> Option<&PanelPack> {
        self.recurrent_second.as_ref()
    }
    /// The layout of every pack.
    pub fn layout(&self) -> PanelLayout {
        self.recurrent.layout
    }
    /// Vectors of packed `W_ih` (all its packs).
    pub fn input_vectors(&self) -> usize {
        self.input.iter().map(|p| p.data().len()).sum()
    }
    /// Vectors of packed `W_hh` (both packs where there are two): what every step reads.
    pub fn recurrent_vectors(&self) -> usize {
        self.recurrent.data().len() + self.recurrent_second.as_ref().map_or(0, |n| n.data().len())
    }
    /// Bytes of packed weights and biases. The memory they occupy can be up to a third more
    /// where the weights are rounded up to whole huge pages (on Linux; see the module docs).
    pub fn packed_bytes(&self) -> usize {
        let vectors = self.input_vectors()
            + self.projection_bias.len()
            + self.hn_bias.len()
            + self.recurrent_vectors();
        vectors * std::mem::size_of::<f32x8>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gru_core::CellKind;

    fn layer(kind: CellKind, input: usize, hidden: usize) -> LayerWeights {
        let rows = kind.gate_count() * hidden;
        let value = |tag: f32, n: usize| (0..n).map(|k| tag + k as f32 * 1e-3).collect::<Vec<_>>();
        LayerWeights::new(
            kind,
            input,
            hidden,
            value(1.0, rows * input),
            value(2.0, rows * hidden),
            Some(value(3.0, rows)),
            Some(value(4.0, rows)),
        )
        .unwrap()
    }

    fn lane(v: f32x8, u: usize) -> f32 {
        v.to_array()[u]
    }

    #[test]
    fn every_weight_lands_where_the_layout_says() {
        for layout in [PanelLayout::Contiguous, PanelLayout::Pairs] {
            for cell in [
                Cell::Gru(GruVariant::ResetAfter),
                Cell::Gru(GruVariant::ResetBefore),
                Cell::Lstm,
            ] {
                for (input, hidden) in [(1, 1), (3, 8), (5, 13), (2, 17)] {
                    check_layout(&layer(cell.kind(), input, hidden), cell, layout);
                }
            }
        }
    }

    fn check_layout(w: &LayerWeights, cell: Cell, layout: PanelLayout) {
        let (input, hidden) = (w.input_size(), w.hidden_size());
        let packed = PackedLayer::packed(w, cell, layout);
        assert_eq!(packed.layout(), layout);
        let (g_count, panels) = (cell.gate_count(), hidden.div_ceil(8));
        // The input packs hold the projection's gates in order.
        let input_gates: Vec<usize> = packed
            .input()
            .iter()
            .flat_map(|pack| pack.gates.iter().copied())
            .collect();
        assert_eq!(input_gates, (0..g_count).collect::<Vec<_>>());
        // LSTM in two packs of two gates only for the 8-lane tiles; ResetBefore always in two.
        let lstm_in_two = cell == Cell::Lstm && layout == PanelLayout::Contiguous;
        let recurrent_in_two = lstm_in_two || cell == Cell::Gru(GruVariant::ResetBefore);
        assert_eq!(packed.input().len(), if lstm_in_two { 2 } else { 1 });
        assert_eq!(packed.recurrent_second().is_some(), recurrent_in_two);
        let input_packs = packed.input().iter().map(|pack| (pack, input, true));
        let recurrent_packs = std::iter::once(packed.recurrent())
            .chain(packed.recurrent_second())
            .map(|pack| (pack, hidden, false));
        // Pairs are padded to an even number of panels, with zeros.
        let stored_panels = panels.div_ceil(layout.panels_per_row()) * layout.panels_per_row();
        for (pack, k_len, is_input) in input_packs.chain(recurrent_packs) {
            assert_eq!(pack.k_len(), k_len);
            assert_eq!(pack.data().as_ptr() as usize % 64, 0, "on a cache line");
            let mut seen = vec![false; pack.data().len()];
            for unit in 0..stored_panels * 8 {
                let (p, u) = (unit / 8, unit % 8);
                for (slot, &g) in pack.gates.iter().enumerate() {
                    for k in 0..k_len {
                        let at =
                            pack.panel_start(p) + k * pack.k_stride() + slot * pack.gate_stride();
                        seen[at] = true;
                        let want = match (unit < hidden, is_input) {
                            (false, _) => 0.0,
                            (true, true) => w.w_ih_row(g, unit)[k],
                            (true, false) => w.w_hh_row(g, unit)[k],
                        };
                        assert_eq!(lane(pack.data()[at], u), want, "{layout:?} {cell:?}");
                    }
                }
            }
            assert!(seen.iter().all(|&s| s), "every vector is some panel's");
            if layout == PanelLayout::Pairs {
                // A pair's k row is one run of 2·G vectors, gate by gate, low panel first.
                assert_eq!(pack.panel_start(1), pack.panel_start(0) + 1);
                assert_eq!(pack.panel_start(2), pack.pair_stride());
            }
        }
        // Memory: the original weights plus padding, nothing more.
        let hp = stored_panels * 8;
        let padded = g_count * hp * (input + hidden)
            + g_count * panels * 8
            + if cell == Cell::Gru(GruVariant::ResetAfter) {
                panels * 8
            } else {
                0
            };
        assert_eq!(packed.packed_bytes(), padded * 4, "{layout:?} {cell:?}");
    }

    #[test]
    fn biases_fold_except_reset_after_candidate() {
        let w = layer(CellKind::Gru, 2, 3);
        let after = PackedLayer::new(&w, Cell::Gru(GruVariant::ResetAfter));
        let before = PackedLayer::new(&w, Cell::Gru(GruVariant::ResetBefore));
        for g in 0..3 {
            let unit = 1;
            let folded = w.b_ih_at(g, unit) + w.b_hh_at(g, unit);
            assert_eq!(lane(before.projection_bias()[g], unit), folded);
            let want_after = if g == 2 { w.b_ih_at(g, unit) } else { folded };
            assert_eq!(lane(after.projection_bias()[g], unit), want_after);
        }
        assert_eq!(lane(after.hn_bias()[0], 1), w.b_hh_at(2, 1));
        assert!(before.hn_bias().is_empty());
    }
}
