//! Gate epilogues: what each cell does with a finished tile while it is still in registers —
//! add the projected input and biases, apply sigmoid and tanh, blend into the new state.
//!
//! An epilogue also chooses each accumulator's starting value, so that additions which do not
//! depend on the product (the projected input, `b_hn`) cost nothing inside the k loop.
//! Rows that are past their sequence length keep their state.
//!
//! The 16-lane tiles finish a whole pair of panels at once ([`TileEpilogue::finish_pair`]):
//! the cells with activations apply them in 16 lanes, with the same operations per lane as in
//! 8, so the results are the same bits wherever both widths fuse `mul_add`.

use wide::f32x8;

#[cfg(target_arch = "x86_64")]
use crate::activation::avx512::F32x16;
use crate::activation::{Lanes, sigmoid_lanes, tanh_lanes};
#[cfg(target_arch = "x86_64")]
use crate::microkernel::avx512::{PairVector, join, split};
use crate::threading::SharedVectors;

/// What a tile of `G` interleaved gates starts from and how it is finished.
///
/// An epilogue writes its results into [`SharedVectors`] that several workers share, each
/// cell by one worker between two barriers; `finish` is `unsafe` because only its caller can
/// know that no one else touches those cells meanwhile.
pub trait TileEpilogue<const G: usize>: Sync {
    /// The accumulators' starting values for (`row`, `panel`).
    fn init(&self, row: usize, panel: usize) -> [f32x8; G];
    /// Finishes (`row`, `panel`) from its accumulators and stores the results.
    ///
    /// # Safety
    /// While it runs, no other thread may read or write the cells of (`row`, `panel`) in the
    /// shared buffers this epilogue writes or reads back (`h_next`, `c`, the gates kept
    /// between the halves of a step, the projection's `out`).
    unsafe fn finish(&self, row: usize, panel: usize, acc: [f32x8; G]);

    /// Finishes both panels of `pair` (`2·pair` from the low lanes, `2·pair + 1` from the
    /// high ones) from 16-lane accumulators. By default each half goes through
    /// [`finish`](Self::finish); the cells with activations apply them in 16 lanes instead.
    ///
    /// # Safety
    /// As [`finish`](Self::finish), for both panels; and the CPU supports AVX-512F. Meant to
    /// be inlined into a function compiled with it (the 16-lane tiles).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn finish_pair(&self, row: usize, pair: usize, acc: [PairVector; G]) {
        let mut halves = [[f32x8::ZERO; G]; 2];
        for g in 0..G {
            // SAFETY: the caller's CPU supports AVX-512F.
            let [low, high] = unsafe { split(acc[g]) };
            halves[0][g] = low;
            halves[1][g] = high;
        }
        // SAFETY: the caller has both panels of this row to itself.
        unsafe {
            self.finish(row, 2 * pair, halves[0]);
            self.finish(row, 2 * pair + 1, halves[1]);
        }
    }
}

/// One tile column as an epilogue sees it: where its vectors are and how wide its lanes are.
/// A [`Panel`] of 8 units in an [`f32x8`], or, for the 16-lane tiles, a [`Pair`] of panels in
/// one AVX-512 register. Each cell's math is written once over it, so both widths do the same
/// operations on every lane.
trait Column: Copy {
    /// The lanes of one gate of the column.
    type Lanes: Lanes;
    /// Vectors of a buffer the column spans in one row.
    const VECTORS: usize;
    /// The column's first vector of `row` in buffers of `panels` vectors per row.
    fn index(self, row: usize, panels: usize) -> usize;
    /// The column's lanes from `vectors[index..index + VECTORS]`.
    fn load(self, vectors: &[f32x8], index: usize) -> Self::Lanes;
    /// The column's projected input of `gate` in `row`.
    fn projected(self, step: &StepInputs<'_>, row: usize, gate: usize) -> Self::Lanes;
    /// Writes `value` to `dest[index..index + VECTORS]`.
    ///
    /// # Safety
    /// As [`SharedVectors::write`], for those indices.
    unsafe fn store(self, dest: &SharedVectors, index: usize, value: Self::Lanes);

    /// The column's lanes from the shared `vectors` at `index`.
    ///
    /// # Safety
    /// As [`SharedVectors::read`], for `index..index + VECTORS`.
    #[inline(always)]
    unsafe fn read(self, vectors: &SharedVectors, index: usize) -> Self::Lanes {
        // SAFETY: the caller's contract.
        self.load(unsafe { vectors.read(index..index + Self::VECTORS) }, 0)
    }
}

/// A panel: the column of the 8-lane tiles.
#[derive(Clone, Copy)]
struct Panel(usize);

impl Column for Panel {
    type Lanes = f32x8;
    const VECTORS: usize = 1;

    #[inline(always)]
    fn index(self, row: usize, panels: usize) -> usize {
        row * panels + self.0
    }

    #[inline(always)]
    fn load(self, vectors: &[f32x8], index: usize) -> f32x8 {
        vectors[index]
    }

    #[inline(always)]
    fn projected(self, step: &StepInputs<'_>, row: usize, gate: usize) -> f32x8 {
        step.projected(row, self.0, gate)
    }

    #[inline(always)]
    unsafe fn store(self, dest: &SharedVectors, index: usize, value: f32x8) {
        // SAFETY: the caller's contract.
        unsafe { dest.write(index, value) };
    }
}

/// A pair of panels, `2·q` in the low lanes and `2·q + 1` in the high ones: the column of the
/// 16-lane tiles. Made only on a CPU with AVX-512F ([`Pair::new`]), which is what makes its
/// intrinsics sound.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Pair(usize);

#[cfg(target_arch = "x86_64")]
impl Pair {
    /// Pair `q`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[inline(always)]
    unsafe fn new(q: usize) -> Self {
        Self(q)
    }

    /// `acc` as 16-lane vectors.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn lanes<const G: usize>(self, acc: [PairVector; G]) -> [F32x16; G] {
        // SAFETY: a `Pair` exists only on a CPU with AVX-512F (see `new`).
        let mut lanes = [unsafe { F32x16::new(acc[0]) }; G];
        for g in 1..G {
            // SAFETY: as above.
            lanes[g] = unsafe { F32x16::new(acc[g]) };
        }
        lanes
    }
}

#[cfg(target_arch = "x86_64")]
impl Column for Pair {
    type Lanes = F32x16;
    const VECTORS: usize = 2;

    #[inline(always)]
    fn index(self, row: usize, panels: usize) -> usize {
        row * panels + 2 * self.0
    }

    #[inline(always)]
    fn load(self, vectors: &[f32x8], index: usize) -> F32x16 {
        // SAFETY: a `Pair` exists only on a CPU with AVX-512F (see `new`).
        unsafe { F32x16::new(join(vectors[index], vectors[index + 1])) }
    }

    #[inline(always)]
    fn projected(self, step: &StepInputs<'_>, row: usize, gate: usize) -> F32x16 {
        let (low, high) = (
            step.projected(row, 2 * self.0, gate),
            step.projected(row, 2 * self.0 + 1, gate),
        );
        // SAFETY: as above.
        unsafe { F32x16::new(join(low, high)) }
    }

    #[inline(always)]
    unsafe fn store(self, dest: &SharedVectors, index: usize, value: F32x16) {
        // SAFETY: AVX-512F as above; the writes are the caller's to make.
        unsafe {
            let [low, high] = split(value.get());
            dest.write(index, low);
            dest.write(index + 1, high);
        }
    }
}

/// `finish` and `finish_pair` of a cell's epilogue of `$gates` gates, both through its
/// `finish_column`, so that the cell's math is written once for both widths of column.
macro_rules! finish_through_columns {
    ($gates:literal) => {
        #[inline(always)]
        unsafe fn finish(&self, row: usize, panel: usize, acc: [f32x8; $gates]) {
            // SAFETY: the caller's contract.
            unsafe { self.finish_column(row, Panel(panel), acc) };
        }

        #[cfg(target_arch = "x86_64")]
        #[inline(always)]
        unsafe fn finish_pair(&self, row: usize, pair: usize, acc: [PairVector; $gates]) {
            // SAFETY: the caller's CPU supports AVX-512F; the rest is the caller's contract.
            unsafe {
                let pair = Pair::new(pair);
                self.finish_column(row, pair, pair.lanes(acc));
            }
        }
    };
}

/// Buffers every epilogue of one step reads. Rows are `panels` vectors apart in the states
/// and `gates·panels` apart in the projection. `h_prev`, `projection` and `active` hold only
/// the rows from `first_row` on, the ones this step's caller works on; the buffers the
/// epilogues write hold every row.
#[derive(Clone, Copy)]
pub struct StepInputs<'a> {
    /// The projected input of rows `first_row..` (biases folded in).
    pub projection: &'a [f32x8],
    /// Whether each of rows `first_row..` is inside its sequence at this step.
    pub active: &'a [bool],
    /// The row that `projection` and `active` start at.
    pub first_row: usize,
    /// The state of rows `first_row..` before this step.
    pub h_prev: &'a [f32x8],
    /// Panels per row.
    pub panels: usize,
    /// Gates per unit in the projection.
    pub gates: usize,
}

impl StepInputs<'_> {
    #[inline(always)]
    fn projected(&self, row: usize, panel: usize, gate: usize) -> f32x8 {
        self.projection[((row - self.first_row) * self.panels + panel) * self.gates + gate]
    }

    #[inline(always)]
    fn is_active(&self, row: usize) -> bool {
        self.active[row - self.first_row]
    }

    /// The index of (`row`, `column`) in the buffers that hold every row, and its state.
    #[inline(always)]
    fn state<C: Column>(&self, row: usize, column: C) -> (usize, C::Lanes) {
        let index = column.index(row, self.panels);
        (index, column.load(self.h_prev, self.own_rows_index(index)))
    }

    /// `index` (in the buffers that hold every row) in a buffer of rows `first_row..`.
    #[inline(always)]
    fn own_rows_index(&self, index: usize) -> usize {
        index - self.first_row * self.panels
    }
}

/// `h' = (1 − z) ⊙ n + z ⊙ h = n + z ⊙ (h − n)`.
#[inline(always)]
fn blend<V: Lanes>(z: V, n: V, h: V) -> V {
    (h - n).mul_add(z, n)
}

/// GRU, reset-after: gates r, z, n; `n = tanh(x_n + r ⊙ (W_hn h + b_hn))`.
pub struct GruResetAfter<'a> {
    /// The step's inputs.
    pub step: StepInputs<'a>,
    /// `b_hn` per panel.
    pub hn_bias: &'a [f32x8],
    /// Where the new state goes.
    pub h_next: &'a SharedVectors,
}

impl GruResetAfter<'_> {
    /// [`TileEpilogue::finish`] for either width of column.
    ///
    /// # Safety
    /// As [`TileEpilogue::finish`], for the column's panels.
    #[inline(always)]
    unsafe fn finish_column<C: Column>(&self, row: usize, column: C, [r, z, hn]: [C::Lanes; 3]) {
        let (index, h) = self.step.state(row, column);
        let h_new = if self.step.is_active(row) {
            let x_n = column.projected(&self.step, row, 2);
            let n = tanh_lanes(sigmoid_lanes(r).mul_add(hn, x_n));
            blend(sigmoid_lanes(z), n, h)
        } else {
            h
        };
        // SAFETY: the caller has (row, column) to itself.
        unsafe { column.store(self.h_next, index, h_new) };
    }
}

impl TileEpilogue<3> for GruResetAfter<'_> {
    #[inline(always)]
    fn init(&self, row: usize, panel: usize) -> [f32x8; 3] {
        [
            self.step.projected(row, panel, 0),
            self.step.projected(row, panel, 1),
            self.hn_bias[panel],
        ]
    }

    finish_through_columns!(3);
}

/// GRU, reset-before, first half: gates r and z; stores `z` and `r ⊙ h` for the second half.
pub struct GruResetBeforeGates<'a> {
    /// The step's inputs.
    pub step: StepInputs<'a>,
    /// Where `z` goes.
    pub z: &'a SharedVectors,
    /// Where `r ⊙ h` goes: the input of the `n` product.
    pub reset_state: &'a SharedVectors,
}

impl GruResetBeforeGates<'_> {
    /// [`TileEpilogue::finish`] for either width of column.
    ///
    /// # Safety
    /// As [`TileEpilogue::finish`], for the column's panels.
    #[inline(always)]
    unsafe fn finish_column<C: Column>(&self, row: usize, column: C, [r, z]: [C::Lanes; 2]) {
        let (index, h) = self.step.state(row, column);
        // SAFETY: the caller has (row, column) to itself.
        unsafe {
            column.store(self.z, index, sigmoid_lanes(z));
            column.store(self.reset_state, index, sigmoid_lanes(r) * h);
        }
    }
}

impl TileEpilogue<2> for GruResetBeforeGates<'_> {
    #[inline(always)]
    fn init(&self, row: usize, panel: usize) -> [f32x8; 2] {
        [
            self.step.projected(row, panel, 0),
            self.step.projected(row, panel, 1),
        ]
    }

    finish_through_columns!(2);
}

/// GRU, reset-before, second half: `n = tanh(x_n + W_hn (r ⊙ h) + b_hn)` and the blend.
pub struct GruResetBeforeCandidate<'a> {
    /// The step's inputs.
    pub step: StepInputs<'a>,
    /// `z` from the first half, of rows `step.first_row..`.
    pub z: &'a [f32x8],
    /// Where the new state goes.
    pub h_next: &'a SharedVectors,
}

impl GruResetBeforeCandidate<'_> {
    /// [`TileEpilogue::finish`] for either width of column.
    ///
    /// # Safety
    /// As [`TileEpilogue::finish`], for the column's panels.
    #[inline(always)]
    unsafe fn finish_column<C: Column>(&self, row: usize, column: C, [n]: [C::Lanes; 1]) {
        let (index, h) = self.step.state(row, column);
        let h_new = if self.step.is_active(row) {
            let z = column.load(self.z, self.step.own_rows_index(index));
            blend(z, tanh_lanes(n), h)
        } else {
            h
        };
        // SAFETY: the caller has (row, column) to itself.
        unsafe { column.store(self.h_next, index, h_new) };
    }
}

impl TileEpilogue<1> for GruResetBeforeCandidate<'_> {
    #[inline(always)]
    fn init(&self, row: usize, panel: usize) -> [f32x8; 1] {
        [self.step.projected(row, panel, 2)]
    }

    finish_through_columns!(1);
}

/// LSTM in one pass, all four gates i, f, g, o in one tile (the 16-lane tiles, whose 32
/// registers hold six rows of four gates): `c' = f ⊙ c + i ⊙ g`, `h' = o ⊙ tanh(c')`, `c`
/// updated in place. The same operations on every lane as [`LstmInputForget`] then
/// [`LstmCell`], so the same results, without storing `σ(i)` and `σ(f)` in between.
pub struct LstmOnePass<'a> {
    /// The step's inputs.
    pub step: StepInputs<'a>,
    /// The cell state, read and written by the tile that owns each (row, panel).
    pub c: &'a SharedVectors,
    /// Where the new hidden state goes.
    pub h_next: &'a SharedVectors,
}

impl LstmOnePass<'_> {
    /// [`TileEpilogue::finish`] for either width of column.
    ///
    /// # Safety
    /// As [`TileEpilogue::finish`], for the column's panels.
    #[inline(always)]
    unsafe fn finish_column<C: Column>(&self, row: usize, column: C, [i, f, g, o]: [C::Lanes; 4]) {
        let (index, h) = self.step.state(row, column);
        if !self.step.is_active(row) {
            // SAFETY: the caller has (row, column) to itself.
            unsafe { column.store(self.h_next, index, h) };
            return;
        }
        let gates = [sigmoid_lanes(i), sigmoid_lanes(f), g, o];
        // SAFETY: the caller has (row, column) to itself.
        unsafe { update_lstm_state(self.c, self.h_next, index, column, gates) };
    }
}

/// The LSTM's new state of the column at `index` from `[σ(i), σ(f), g, o]`:
/// `c' = f ⊙ c + i ⊙ tanh(g)`, `h' = σ(o) ⊙ tanh(c')`. One function for both LSTM
/// epilogues, so that one pass and two give the same bits.
///
/// # Safety
/// As [`TileEpilogue::finish`], for the column's cells of `c` and `h_next`.
#[inline(always)]
unsafe fn update_lstm_state<C: Column>(
    c: &SharedVectors,
    h_next: &SharedVectors,
    index: usize,
    column: C,
    [i, f, g, o]: [C::Lanes; 4],
) {
    // SAFETY: the caller's contract.
    unsafe {
        let c_new = f.mul_add(column.read(c, index), i * tanh_lanes(g));
        column.store(c, index, c_new);
        column.store(h_next, index, sigmoid_lanes(o) * tanh_lanes(c_new));
    }
}

impl TileEpilogue<4> for LstmOnePass<'_> {
    #[inline(always)]
    fn init(&self, row: usize, panel: usize) -> [f32x8; 4] {
        std::array::from_fn(|gate| self.step.projected(row, panel, gate))
    }

    finish_through_columns!(4);
}

/// LSTM, first half: gates i and f, stored (after the sigmoid) for the second half.
pub struct LstmInputForget<'a> {
    /// The step's inputs.
    pub step: StepInputs<'a>,
    /// Where `σ(i)` goes.
    pub input_gate: &'a SharedVectors,
    /// Where `σ(f)` goes.
    pub forget_gate: &'a SharedVectors,
}

impl LstmInputForget<'_> {
    /// [`TileEpilogue::finish`] for either width of column.
    ///
    /// # Safety
    /// As [`TileEpilogue::finish`], for the column's panels.
    #[inline(always)]
    unsafe fn finish_column<C: Column>(&self, row: usize, column: C, [i, f]: [C::Lanes; 2]) {
        let index = column.index(row, self.step.panels);
        // SAFETY: the caller has (row, column) to itself.
        unsafe {
            column.store(self.input_gate, index, sigmoid_lanes(i));
            column.store(self.forget_gate, index, sigmoid_lanes(f));
        }
    }
}

impl TileEpilogue<2> for LstmInputForget<'_> {
    #[inline(always)]
    fn init(&self, row: usize, panel: usize) -> [f32x8; 2] {
        [
            self.step.projected(row, panel, 0),
            self.step.projected(row, panel, 1),
        ]
    }

    finish_through_columns!(2);
}

/// LSTM, second half: gates g and o; `c' = f ⊙ c + i ⊙ g`, `h' = o ⊙ tanh(c')`, `c` updated
/// in place.
pub struct LstmCell<'a> {
    /// The step's inputs.
    pub step: StepInputs<'a>,
    /// `σ(i)` from the first half.
    pub input_gate: &'a SharedVectors,
    /// `σ(f)` from the first half.
    pub forget_gate: &'a SharedVectors,
    /// The cell state, read and written by the tile that owns each (row, panel).
    pub c: &'a SharedVectors,
    /// Where the new hidden state goes.
    pub h_next: &'a SharedVectors,
}

impl LstmCell<'_> {
    /// [`TileEpilogue::finish`] for either width of column.
    ///
    /// # Safety
    /// As [`TileEpilogue::finish`], for the column's panels.
    #[inline(always)]
    unsafe fn finish_column<C: Column>(&self, row: usize, column: C, [g, o]: [C::Lanes; 2]) {
        let (index, h) = self.step.state(row, column);
        // SAFETY: the caller has (row, column) to itself, in these buffers too.
        unsafe {
            if !self.step.is_active(row) {
                column.store(self.h_next, index, h);
                return;
            }
            let i = column.read(self.input_gate, index);
            let f = column.read(self.forget_gate, index);
            update_lstm_state(self.c, self.h_next, index, column, [i, f, g, o]);
        }
    }
}

impl TileEpilogue<2> for LstmCell<'_> {
    #[inline(always)]
    fn init(&self, row: usize, panel: usize) -> [f32x8; 2] {
        [
            self.step.projected(row, panel, 2),
            self.step.projected(row, panel, 3),
        ]
    }

    finish_through_columns!(2);
}

/// The input projection of `G` of a cell's gates, `first_gate..first_gate + G`: stores
/// `b + W_ih x` for them.
pub struct Projection<'a, const G: usize> {
    /// The projection's bias, `gates·panels` vectors.
    pub bias: &'a [f32x8],
    /// Panels per row.
    pub panels: usize,
    /// All the cell's gates (a row of the projection has `gates·panels` vectors).
    pub gates: usize,
    /// The first of the `G` gates this tile computes.
    pub first_gate: usize,
    /// Where the projection goes, `gates·panels` vectors per row, gates interleaved per panel.
    pub out: &'a SharedVectors,
}

impl<const G: usize> TileEpilogue<G> for Projection<'_, G> {
    #[inline(always)]
    fn init(&self, _row: usize, panel: usize) -> [f32x8; G] {
        std::array::from_fn(|g| self.bias[panel * self.gates + self.first_gate + g])
    }

    #[inline(always)]
    unsafe fn finish(&self, row: usize, panel: usize, acc: [f32x8; G]) {
        let base = (row * self.panels + panel) * self.gates + self.first_gate;
        // Indexed, not `acc.into_iter()`: the array iterator was compiled into stack copies
        // with overlapping unaligned reloads, which cost a one-row projection (B = 1,
        // I = 8, H = 256) 2.2 µs.
        #[allow(clippy::needless_range_loop)]
        for g in 0..G {
            // SAFETY: the caller has (row, panel) to itself (see `finish`).
            unsafe { self.out.write(base + g, acc[g]) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn lanes(f: impl Fn(usize) -> f32) -> f32x8 {
        f32x8::from(std::array::from_fn(f))
    }

    fn close(got: f32x8, want: impl Fn(usize) -> f64) {
        for (u, &g) in got.to_array().iter().enumerate() {
            assert!(
                (f64::from(g) - want(u)).abs() < 1e-6,
                "lane {u}: {g} vs {}",
                want(u)
            );
        }
    }

    #[test]
    fn reset_after_follows_the_equations() {
        let v = |s: f32| lanes(move |u| ((u as f32 + s) * 0.77).sin() * 2.0);
        let (x_r, x_z, x_n, hr, hz, hn, h, b_hn) = (
            v(1.0),
            v(2.0),
            v(3.0),
            v(4.0),
            v(5.0),
            v(6.0),
            v(7.0),
            v(8.0),
        );
        let projection = [x_r, x_z, x_n];
        let h_next = SharedVectors::zeros(1);
        let epi = GruResetAfter {
            step: StepInputs {
                projection: &projection,
                active: &[true],
                first_row: 0,
                h_prev: &[h],
                panels: 1,
                gates: 3,
            },
            hn_bias: &[b_hn],
            h_next: &h_next,
        };
        let [r0, z0, n0] = epi.init(0, 0);
        assert_eq!(
            (r0.to_array(), z0.to_array(), n0.to_array()),
            (x_r.to_array(), x_z.to_array(), b_hn.to_array())
        );
        // SAFETY: single-threaded test.
        unsafe { epi.finish(0, 0, [r0 + hr, z0 + hz, n0 + hn]) };
        let f = |a: f32x8, u: usize| f64::from(a.to_array()[u]);
        // SAFETY: single-threaded test.
        let got = unsafe { h_next.read(0..1)[0] };
        close(got, |u| {
            let r = sig(f(x_r, u) + f(hr, u));
            let z = sig(f(x_z, u) + f(hz, u));
            let n = (f(x_n, u) + r * (f(hn, u) + f(b_hn, u))).tanh();
            (1.0 - z) * n + z * f(h, u)
        });
    }

    #[test]
    fn lstm_follows_the_equations_and_inactive_rows_keep_state() {
        let v = |s: f32| lanes(move |u| ((u as f32 + s) * 0.53).cos() * 3.0);
        let projection = [
            v(1.0),
            v(2.0),
            v(3.0),
            v(4.0),
            v(1.5),
            v(2.5),
            v(3.5),
            v(4.5),
        ];
        let h_prev = [v(5.0), v(6.0)];
        let (c, h_next) = (SharedVectors::zeros(2), SharedVectors::zeros(2));
        let (input_gate, forget_gate) = (SharedVectors::zeros(2), SharedVectors::zeros(2));
        let step = StepInputs {
            projection: &projection,
            active: &[true, false],
            first_row: 0,
            h_prev: &h_prev,
            panels: 1,
            gates: 4,
        };
        let first = LstmInputForget {
            step,
            input_gate: &input_gate,
            forget_gate: &forget_gate,
        };
        let second = LstmCell {
            step,
            input_gate: &input_gate,
            forget_gate: &forget_gate,
            c: &c,
            h_next: &h_next,
        };
        for row in 0..2 {
            // SAFETY: single-threaded test.
            unsafe {
                first.finish(row, 0, first.init(row, 0));
                second.finish(row, 0, second.init(row, 0));
            }
        }
        let f = |a: f32x8, u: usize| f64::from(a.to_array()[u]);
        // SAFETY: single-threaded test.
        let (h, c_now) = unsafe { (h_next.read(0..2), c.read(0..2)) };
        close(c_now[0], |u| {
            sig(f(projection[0], u)) * (f(projection[2], u)).tanh()
        });
        close(h[0], |u| {
            sig(f(projection[3], u))
                * (sig(f(projection[0], u)) * f(projection[2], u).tanh()).tanh()
        });
        assert_eq!(h[1].to_array(), h_prev[1].to_array());
        assert_eq!(c_now[1].to_array(), [0.0; 8]);

        // One pass, from a nonzero cell state: the same bits as the two passes.
        let c_start = [v(7.0), v(8.0)];
        let (mut c_two, h_two) = (SharedVectors::zeros(2), SharedVectors::zeros(2));
        let (mut c_one, h_one) = (SharedVectors::zeros(2), SharedVectors::zeros(2));
        c_two.get_mut().copy_from_slice(&c_start);
        c_one.get_mut().copy_from_slice(&c_start);
        let second = LstmCell {
            c: &c_two,
            h_next: &h_two,
            ..second
        };
        let one_pass = LstmOnePass {
            step,
            c: &c_one,
            h_next: &h_one,
        };
        for row in 0..2 {
            // SAFETY: single-threaded test.
            unsafe {
                first.finish(row, 0, first.init(row, 0));
                second.finish(row, 0, second.init(row, 0));
                one_pass.finish(row, 0, one_pass.init(row, 0));
            }
        }
        // SAFETY: single-threaded test.
        unsafe {
            for (two, one) in [(&c_two, &c_one), (&h_two, &h_one)] {
                let bits = |v: &SharedVectors| {
                    v.read(0..2)
                        .iter()
                        .flat_map(|x| x.to_array())
                        .map(f32::to_bits)
                        .collect::<Vec<_>>()
                };
                assert_eq!(bits(two), bits(one));
            }
        }
    }

    #[test]
    fn reset_before_halves_compose() {
        let v = |s: f32| lanes(move |u| ((u as f32 + s) * 0.31).sin());
        let (x_r, x_z, x_n, h) = (v(1.0), v(2.0), v(3.0), v(4.0));
        let projection = [x_r, x_z, x_n];
        let (z, reset_state, h_next) = (
            SharedVectors::zeros(1),
            SharedVectors::zeros(1),
            SharedVectors::zeros(1),
        );
        let step = StepInputs {
            projection: &projection,
            active: &[true],
            first_row: 0,
            h_prev: &[h],
            panels: 1,
            gates: 3,
        };
        let gates = GruResetBeforeGates {
            step,
            z: &z,
            reset_state: &reset_state,
        };
        // SAFETY: single-threaded test. W_hr h = W_hz h = 0.
        unsafe { gates.finish(0, 0, gates.init(0, 0)) };
        // SAFETY: single-threaded test.
        let z_now = unsafe { z.read(0..1) };
        let candidate = GruResetBeforeCandidate {
            step,
            z: z_now,
            h_next: &h_next,
        };
        // SAFETY: single-threaded test. W_hn (r ⊙ h) = 0.
        unsafe { candidate.finish(0, 0, candidate.init(0, 0)) };
        let f = |a: f32x8, u: usize| f64::from(a.to_array()[u]);
        // SAFETY: single-threaded test.
        let (got, rh) = unsafe { (h_next.read(0..1)[0], reset_state.read(0..1)[0]) };
        close(rh, |u| sig(f(x_r, u)) * f(h, u));
        close(got, |u| {
            let zz = sig(f(x_z, u));
            (1.0 - zz) * f(x_n, u).tanh() + zz * f(h, u)
        });
    }
}
