//! The register-tiled product at the heart of every step: `MR` input rows times `NR` panels of
//! `G` interleaved gates, `MR·NR·G` accumulators of 8 lanes held in registers across the
//! whole k loop.
//!
//! A general GEMM such as `matrixmultiply` repacks its `B` operand on every call and has no
//! prepacked-`B` entry point; at batch 1 that copy costs as much as the product itself. The
//! weights are packed once ([`crate::packing`]) and streamed straight from the packed panels
//! here, by the recurrent product and the input projection alike.
//!
//! Every accumulator adds its products in increasing k, one FMA per k, whatever `MR` and `NR`
//! are: the result for a (row, unit) never depends on the tile it was computed in, so any split
//! of rows or panels over threads gives bitwise identical results.
//!
//! The input projection uses [`accumulate_tile_blocked`], the same product summed in blocks
//! of [`sum_block`] inputs: its inputs are raw features, often far larger than the state
//! `h ∈ (−1, 1)`, and a plain running sum over all of `I` loses too much to rounding.

use wide::f32x8;

#[cfg(target_arch = "x86_64")]
pub mod avx512;

/// A tile's inputs: `MR` rows of `len` floats, row `m` starting at `m·stride` in one slice
/// (consecutive rows of a batch, or of a chunk of steps).
///
/// One slice and a stride rather than `MR` slices, for the blocked kernels: given eight
/// separate rows, the compiler kept their pointers on the stack across the blocks and reloaded
/// each of them every k (`perf`, GRU, B = 64, I = H = 1024: the projection's k loop then took
/// 1.27× the recurrent loop's time for the same FLOPs); reading input `k` of row `m` at
/// `m·stride + k` of the one slice, it computes them in registers.
#[derive(Clone, Copy, Debug)]
pub struct InputRows<'a, const MR: usize> {
    data: &'a [f32],
    stride: usize,
    len: usize,
}

impl<'a, const MR: usize> InputRows<'a, MR> {
    /// Row `m` is `data[m·stride..][..len]`.
    ///
    /// # Panics
    /// If `data` is shorter than `MR` such rows need.
    ///
    /// ```
    /// use gru_simd::microkernel::InputRows;
    /// let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    /// let rows = InputRows::<2>::new(&x, 3, 2); // [1, 2] and [4, 5]
    /// assert_eq!(rows.row(1), &[4.0, 5.0]);
    /// ```
    #[inline(always)]
    pub fn new(data: &'a [f32], stride: usize, len: usize) -> Self {
        if MR > 0 && len > 0 {
            let end = (MR - 1)
                .checked_mul(stride)
                .and_then(|last| last.checked_add(len))
                .expect("the rows' span fits in usize");
            assert!(
                end <= data.len(),
                "{MR} input rows of {len} at stride {stride} need {end} floats, not {}",
                data.len()
            );
        }
        Self { data, stride, len }
    }

    /// Floats per row.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the rows are empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row `m`.
    ///
    /// # Panics
    /// If `m >= MR`.
    pub fn row(&self, m: usize) -> &'a [f32] {
        assert!(m < MR, "row {m} of {MR}");
        &self.data[m * self.stride..][..self.len]
    }

    /// Input `k` of row `m`, unchecked.
    ///
    /// # Safety
    /// `m < MR` and `k < len`: then `m·stride + k < (MR − 1)·stride + len`, which `new`
    /// checked is within the data.
    #[inline(always)]
    pub(crate) unsafe fn get_unchecked(&self, m: usize, k: usize) -> f32 {
        debug_assert!(m < MR && k < self.len);
        // SAFETY: the caller's contract, and `new`'s check.
        unsafe { *self.data.get_unchecked(m * self.stride + k) }
    }

    /// Every row, each cut to its first `k_len` inputs.
    ///
    /// # Panics
    /// If `k_len > len`.
    #[inline(always)]
    pub fn first(&self, k_len: usize) -> [&'a [f32]; MR] {
        assert!(k_len <= self.len, "{k_len} inputs of {}", self.len);
        let mut rows: [&[f32]; MR] = [&[]; MR];
        if k_len == 0 {
            // Rows of nothing need no data, and `new` did not check that any is there.
            return rows;
        }
        for (m, row) in rows.iter_mut().enumerate() {
            // In bounds, as `new` checked; checked anyway, once per row and tile.
            *row = &self.data[m * self.stride..][..k_len];
        }
        rows
    }
}

/// Where a tile's k loop reads its inputs: input `k` of row `m`, unchecked. Two sources: row
/// slices, each already cut to the tile's `k_len` (the running sums, see [`accumulate_tile`]),
/// and [`InputRows`] itself, one slice and a stride (the blocked sums, whose k loop restarts
/// every block: rows computed from the first and the stride stay in registers across blocks).
pub(crate) trait TileInputs<const MR: usize>: Copy {
    /// Input `k` of row `m`.
    ///
    /// # Safety
    /// `m < MR`, and `k` is below the length the rows were checked for.
    unsafe fn at(&self, m: usize, k: usize) -> f32;
}

impl<const MR: usize> TileInputs<MR> for [&[f32]; MR] {
    #[inline(always)]
    unsafe fn at(&self, m: usize, k: usize) -> f32 {
        // SAFETY: m < MR and k is below every row's length (the caller's contract).
        unsafe { *self.get_unchecked(m).get_unchecked(k) }
    }
}

impl<const MR: usize> TileInputs<MR> for InputRows<'_, MR> {
    #[inline(always)]
    unsafe fn at(&self, m: usize, k: usize) -> f32 {
        // SAFETY: the caller's contract is `get_unchecked`'s.
        unsafe { self.get_unchecked(m, k) }
    }
}

/// `rows` as they come back from memory (`black_box`), each cut to `k_len` again: checked
/// here, once per tile, so that the k loop may index within them unchecked.
///
/// # Panics
/// If a row is shorter than `k_len`.
#[inline(always)]
pub(crate) fn cut_rows<const MR: usize>(rows: [&[f32]; MR], k_len: usize) -> [&[f32]; MR] {
    let mut cut: [&[f32]; MR] = [&[]; MR];
    for (cut, row) in cut.iter_mut().zip(rows) {
        *cut = &row[..k_len];
    }
    cut
}

/// Returns `acc` with `acc[m][j][g] += Σ_k inputs[m][k] · weights[panel_starts[j] +
/// k·k_stride + g]` for `k < k_len`.
///
/// # Panics
/// If the input rows are shorter than `k_len` or a panel runs past the end of `weights`.
#[inline(always)]
pub fn accumulate_tile<const G: usize, const MR: usize, const NR: usize>(
    acc: [[[f32x8; G]; NR]; MR],
    inputs: InputRows<'_, MR>,
    weights: &[f32x8],
    panel_starts: [usize; NR],
    k_stride: usize,
    k_len: usize,
) -> [[[f32x8; G]; NR]; MR] {
    // The row slices go through memory (`black_box`), once per tile: the compiler then keeps
    // one register per row. Left to see that row m starts m·stride after row 0, it rebuilt
    // each row's address every k, an add per row and k beside the FMAs (`perf annotate`), and
    // the LSTM, whose 16-lane recurrent tiles then had 12 rows, took 1.02–1.06× the time in
    // whole sequences (alternating rounds, measured with the 16-lane kernel, which does the
    // same).
    let rows = cut_rows(std::hint::black_box(inputs.first(k_len)), k_len);
    if k_len == 0 {
        return acc;
    }
    let panels = panel_spans(weights, panel_starts, k_stride, k_len, G);
    // SAFETY: every row was cut to k_len, and every panel spans k_len k rows.
    unsafe { accumulate_range(acc, rows, &panels, k_stride, 0..k_len) }
}

/// One slice per panel covering exactly its `k_len` strided k rows of `width` vectors
/// (`k_len > 0`), checked here, once per tile, so that the k loop may index within them
/// unchecked. Checked arithmetic: a span that wrapped around would let `k·k_stride` run past
/// the slice.
///
/// # Panics
/// If a panel runs past the end of `weights`.
#[inline(always)]
pub(crate) fn panel_spans<const NR: usize>(
    weights: &[f32x8],
    panel_starts: [usize; NR],
    k_stride: usize,
    k_len: usize,
    width: usize,
) -> [&[f32x8]; NR] {
    let span = (k_len - 1)
        .checked_mul(k_stride)
        .and_then(|last| last.checked_add(width))
        .expect("a panel's span fits in usize");
    // Arrays are filled by plain loops here and below, not `[T; N]::map`: `map` on these
    // arrays was compiled into out-of-line calls and stack copies, a fixed cost per tile and
    // per summation block that was most of a one-row projection's time (see `project`).
    let mut panels: [&[f32x8]; NR] = [&[]; NR];
    for (panel, &start) in panels.iter_mut().zip(&panel_starts) {
        *panel = &weights[start..start + span];
    }
    panels
}

/// `acc` plus the products of the inputs `ks`, one FMA per k in increasing k.
///
/// # Safety
/// `ks.end` is at most the length the rows were checked for and the `k_len` the panels were
/// cut for ([`panel_spans`]).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn accumulate_range<const G: usize, const MR: usize, const NR: usize>(
    mut acc: [[[f32x8; G]; NR]; MR],
    rows: impl TileInputs<MR>,
    panels: &[&[f32x8]; NR],
    k_stride: usize,
    ks: std::ops::Range<usize>,
) -> [[[f32x8; G]; NR]; MR] {
    // `k` walks the inputs one float at a time and the weights `k_stride` vectors at a time.
    for k in ks {
        let offset = k * k_stride;
        for j in 0..NR {
            // SAFETY: k < k_len and g < G, so offset + g <= (k_len − 1)·k_stride + G − 1, which
            // is below the panel's span. The compiler cannot prove this (it would have to
            // rule out overflow in k·k_stride), so checked indexing kept three compare-and-
            // branch pairs per k and panel in the loop, which took the LSTM's 6 × 2 tile past
            // what the core can dispatch beside its FMAs. Unchecked, over B = 1 and 64,
            // I = H = 256 to 1024, alternating rounds in both orders: one thread GRU +2 to +5 %,
            // LSTM +3 to +9 %; two threads GRU +3 to +5 %, LSTM +5 to +17 %.
            let w: [f32x8; G] =
                std::array::from_fn(|g| unsafe { *panels[j].get_unchecked(offset + g) });
            for m in 0..MR {
                // SAFETY: m < MR and k is below the rows' checked length (the caller's
                // contract). Checked indexing here is not hoisted out of the loop. With six
                // rows (LSTM, reset-before GRU) its checks once cost spilled accumulators and
                // half the speed (LSTM, B = 64, H = 512, one thread: 43 → 79 GFLOP/s); since
                // the tile setup stopped using array `map`, they cost 5–10 % (best of four
                // alternating rounds: LSTM 76 → 79 at H = 256, 78 → 86 at 512).
                let x = f32x8::splat(unsafe { rows.at(m, k) });
                for g in 0..G {
                    acc[m][j][g] = x.mul_add(w[g], acc[m][j][g]);
                }
            }
        }
    }
    acc
}

/// Inputs per block when the blocked kernels ([`accumulate_tile_blocked`] and its 16-lane
/// twin) sum `k_len` products: the power of two from 16 up that minimizes the worst-case
/// rounding bound of blocked summation, about `(b − 1 + k_len / b)` roundings for blocks of
/// `b`, and the longer of two that tie. Blocks of `2b` bound it no worse than blocks of `b`
/// once `k_len ≥ 2b²`: 16 below `k_len` = 512, 32 below 2048, 64 below 8192, and so on.
///
/// Measured on the property test's worst case (`I` = 148, inputs of ±50, the f64 reference
/// as judge, bound 2e−5), when the projection was a `matrixmultiply` call per block: one call
/// over all of `I` was 2.04e−5 off; blocks of 64 1.84e−5, of 32 1.12e−5, of 16 7.1e−6. Mean
/// error of 1600 sums of `k_len` products (inputs ±50, weights ±1, uniform) against the exact
/// sum, in units of 1e−5, blocks of 16 / 32 / 64: 1.50 / 1.71 / 2.19 at `k_len` = 148,
/// 3.61 / 3.75 / 4.54 at 512, 6.40 / 6.08 / 6.86 at 1024, 11.8 / 10.4 / 10.3 at 2048,
/// 23.2 / 17.7 / 17.0 at 4096; one running sum 2.98, 10.9, 21.6, 42.2 and 86.0.
///
/// Longer blocks cost less: each block ends in one add per accumulator, and in the 16-lane
/// kernels the running totals, spilled, go through memory once per block. At the tie
/// `k_len` = 512, blocks of 32 rather than 16 took 0.960–0.968× the time of B = 64,
/// I = H = 512, 2 threads (GRU and LSTM, 6 alternating rounds).
///
/// ```
/// use gru_simd::microkernel::sum_block;
/// assert_eq!([sum_block(148), sum_block(511), sum_block(512)], [16, 16, 32]);
/// assert_eq!([sum_block(2047), sum_block(2048), sum_block(8192)], [32, 64, 128]);
/// ```
pub const fn sum_block(k_len: usize) -> usize {
    let mut block: usize = 16;
    // `block·block` cannot overflow before `2·block·block` passes any usize.
    while let Some(bound) = block.checked_mul(2 * block) {
        if k_len < bound {
            break;
        }
        block *= 2;
    }
    block
}

/// [`accumulate_tile`] with blocked summation: the products of each run of
/// [`sum_block`]`(k_len)` consecutive k are summed from zero, then that block's sum is added
/// to `acc`. The rounding error then grows with the block length rather than with `k_len`, for
/// one vector add per accumulator per block.
///
/// # Panics
/// As [`accumulate_tile`].
#[inline(always)]
#[allow(clippy::needless_range_loop)]
pub fn accumulate_tile_blocked<const G: usize, const MR: usize, const NR: usize>(
    mut acc: [[[f32x8; G]; NR]; MR],
    inputs: InputRows<'_, MR>,
    weights: &[f32x8],
    panel_starts: [usize; NR],
    k_stride: usize,
    k_len: usize,
) -> [[[f32x8; G]; NR]; MR] {
    assert!(k_len <= inputs.len(), "{k_len} inputs of {}", inputs.len());
    if k_len == 0 {
        return acc;
    }
    // The rows and panels are checked once per tile, and every block's k loop runs within
    // them. Cut anew for every block (rows sliced, panels from shifted starts), the
    // block's setup and the copies of the running totals around it took some 150 instructions
    // per block beside its 16 or 32 k steps (`perf annotate`); the 16-lane tile then took
    // 1.14× its running sums' time at k = 128 and 1.12× at 1024, and 1.08× and 0.99–1.05×
    // since (`cargo bench -p gru-simd --bench microkernel`).
    let panels = panel_spans(weights, panel_starts, k_stride, k_len, G);
    let block = sum_block(k_len);
    let mut k0 = 0;
    while k0 < k_len {
        let end = k_len.min(k0 + block);
        // SAFETY: end <= k_len, which the rows hold (asserted above) and the panels span.
        let sums = unsafe {
            accumulate_range::<G, MR, NR>(
                [[[f32x8::ZERO; G]; NR]; MR],
                inputs,
                &panels,
                k_stride,
                k0..end,
            )
        };
        for m in 0..MR {
            for j in 0..NR {
                for g in 0..G {
                    acc[m][j][g] += sums[m][j][g];
                }
            }
        }
        k0 = end;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same product with plain scalar loops in f64.
    fn reference(
        inputs: &[Vec<f32>],
        weights: &[f32x8],
        starts: &[usize],
        k_stride: usize,
        g_count: usize,
        k_len: usize,
    ) -> Vec<f64> {
        let w = |i: usize, u: usize| f64::from(weights[i].to_array()[u]);
        let mut out = Vec::new();
        for row in inputs {
            for &start in starts {
                for g in 0..g_count {
                    for u in 0..8 {
                        out.push(
                            (0..k_len)
                                .map(|k| f64::from(row[k]) * w(start + k * k_stride + g, u))
                                .sum(),
                        );
                    }
                }
            }
        }
        out
    }

    /// Both microkernels on one shape, against [`reference`].
    fn check<const G: usize, const MR: usize, const NR: usize>(k_len: usize) {
        let k_stride = G + 1; // a stride wider than the panel, as in the k-major W_ih
        let panels = NR + 1;
        let weights: Vec<f32x8> = (0..panels * k_len.max(1) * k_stride + G)
            .map(|i| f32x8::from(std::array::from_fn(|u| ((i * 8 + u) as f32 * 0.37).sin())))
            .collect();
        // Rows longer than k_len, at a stride longer still, to catch a length or stride
        // mix-up.
        let (row_len, row_stride) = (k_len + 3, k_len + 5);
        let x: Vec<f32> = (0..MR * row_stride)
            .map(|i| ((i / row_stride * 31 + i % row_stride) as f32 * 0.11).cos())
            .collect();
        let inputs: Vec<Vec<f32>> = (0..MR)
            .map(|m| x[m * row_stride..][..row_len].to_vec())
            .collect();
        let starts: [usize; NR] = std::array::from_fn(|j| (j + 1) * k_len.max(1) * k_stride / 2);
        let want = reference(&inputs, &weights, &starts, k_stride, G, k_len);
        let rows = InputRows::<MR>::new(&x, row_stride, row_len);
        let zero = [[[f32x8::ZERO; G]; NR]; MR];
        for (name, acc) in [
            (
                "running",
                accumulate_tile::<G, MR, NR>(zero, rows, &weights, starts, k_stride, k_len),
            ),
            (
                "blocked",
                accumulate_tile_blocked::<G, MR, NR>(zero, rows, &weights, starts, k_stride, k_len),
            ),
        ] {
            let got: Vec<f32> = acc
                .iter()
                .flatten()
                .flatten()
                .flat_map(|v| v.to_array())
                .collect();
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                let tolerance = 1e-5 * (1.0 + k_len as f64);
                assert!(
                    (f64::from(g) - w).abs() <= tolerance,
                    "{name} G={G} MR={MR} NR={NR} k={k_len} [{i}]: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn tiles_match_a_plain_loop_for_every_shape() {
        for k_len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 33, 48, 545] {
            check::<3, 4, 1>(k_len);
            check::<3, 1, 4>(k_len);
            check::<3, 1, 1>(k_len);
            check::<4, 3, 1>(k_len);
            check::<4, 1, 3>(k_len);
            check::<2, 4, 1>(k_len);
            check::<2, 1, 6>(k_len);
            check::<1, 4, 1>(k_len);
            check::<1, 1, 8>(k_len);
            check::<3, 2, 2>(k_len);
            check::<2, 2, 3>(k_len);
            check::<1, 2, 4>(k_len);
        }
    }

    #[test]
    fn input_rows_are_strided_and_first_cuts_every_row() {
        let x: Vec<f32> = (0..11).map(|i| i as f32).collect();
        let rows = InputRows::<3>::new(&x, 4, 3); // the last row ends at 4·2 + 3 = 11
        assert_eq!(rows.row(0), &[0.0, 1.0, 2.0]);
        assert_eq!(rows.row(2), &[8.0, 9.0, 10.0]);
        assert_eq!(rows.first(1), [&[0.0][..], &[4.0], &[8.0]]);
        assert_eq!(
            rows.first(3),
            [&[0.0, 1.0, 2.0][..], &[4.0, 5.0, 6.0], &[8.0, 9.0, 10.0]]
        );
        assert_eq!(rows.first(0), [&[0.0f32; 0][..]; 3]);
        // SAFETY: row 2 < 3 and input 1 < 3.
        assert_eq!(unsafe { rows.get_unchecked(2, 1) }, 9.0);
        // No rows, or rows of nothing, need no data.
        assert_eq!(InputRows::<0>::new(&[], 4, 3).first(2).len(), 0);
        let nothing = InputRows::<2>::new(&[], 4, 0);
        assert!(nothing.is_empty());
        assert_eq!(nothing.first(0), [&[0.0f32; 0][..]; 2]);
    }

    #[test]
    #[should_panic(expected = "4 inputs of 3")]
    fn rows_cut_past_their_length_panic() {
        let x = [0.0f32; 11];
        InputRows::<3>::new(&x, 4, 3).first(4);
    }

    #[test]
    #[should_panic(expected = "need 12 floats, not 11")]
    fn input_rows_past_the_data_panic() {
        let x = [0.0f32; 11];
        InputRows::<3>::new(&x, 4, 4);
    }

    #[test]
    #[should_panic(expected = "fits in usize")]
    fn input_rows_whose_span_overflows_panic() {
        InputRows::<3>::new(&[0.0], usize::MAX / 2 + 1, 1);
    }

    #[test]
    #[should_panic(expected = "5 inputs of 4")]
    fn a_product_longer_than_its_rows_panics() {
        let (x, weights) = ([1.0f32; 4], [f32x8::ONE; 8]);
        let zero = [[[f32x8::ZERO; 1]; 1]; 1];
        accumulate_tile::<1, 1, 1>(zero, InputRows::new(&x, 0, 4), &weights, [0], 1, 5);
    }

    #[test]
    #[should_panic(expected = "5 inputs of 4")]
    fn a_blocked_product_longer_than_its_rows_panics() {
        let (x, weights) = ([1.0f32; 4], [f32x8::ONE; 8]);
        let zero = [[[f32x8::ZERO; 1]; 1]; 1];
        accumulate_tile_blocked::<1, 1, 1>(zero, InputRows::new(&x, 0, 4), &weights, [0], 1, 5);
    }

    /// `(k_len − 1)·k_stride` past `usize::MAX` wrapped around to a short span in a release
    /// build, and the unchecked loads then read far outside `weights`.
    #[test]
    #[should_panic(expected = "span fits in usize")]
    fn a_stride_whose_span_overflows_panics() {
        let weights = [f32x8::ONE; 4];
        let inputs = [1.0f32; 3];
        let zero = [[[f32x8::ZERO; 1]; 1]; 1];
        let rows = InputRows::<1>::new(&inputs, 3, 3);
        accumulate_tile::<1, 1, 1>(zero, rows, &weights, [0], 1 << (usize::BITS - 1), 3);
    }

    #[test]
    fn tile_shape_does_not_change_the_result() {
        // Row 0, panel 0 computed alone and inside larger tiles: bit for bit the same.
        let k_len = 29;
        let weights: Vec<f32x8> = (0..4 * k_len * 3)
            .map(|i| f32x8::splat((i as f32 * 0.7).sin()))
            .collect();
        let x: Vec<f32> = (0..4 * k_len)
            .map(|i| ((i / k_len + i % k_len) as f32 * 0.3).cos())
            .collect();
        let first = InputRows::<1>::new(&x, k_len, k_len);
        let alone =
            accumulate_tile::<3, 1, 1>([[[f32x8::ZERO; 3]; 1]; 1], first, &weights, [0], 3, k_len);
        let tall = accumulate_tile::<3, 4, 1>(
            [[[f32x8::ZERO; 3]; 1]; 4],
            InputRows::new(&x, k_len, k_len),
            &weights,
            [0],
            3,
            k_len,
        );
        let wide_tile = accumulate_tile::<3, 1, 4>(
            [[[f32x8::ZERO; 3]; 4]; 1],
            first,
            &weights,
            [0, k_len * 3, 2 * k_len * 3, 3 * k_len * 3],
            3,
            k_len,
        );
        for g in 0..3 {
            assert_eq!(alone[0][0][g].to_array(), tall[0][0][g].to_array());
            assert_eq!(alone[0][0][g].to_array(), wide_tile[0][0][g].to_array());
        }
    }

    /// The blocked sum is the running sum of each block, started from zero, added to the
    /// total in order, bit for bit: in blocks of 16 (148 inputs) and of 32 (1000).
    #[test]
    fn blocked_sum_is_the_sum_of_block_sums() {
        for (k_len, block_len) in [(148, 16), (1000, 32)] {
            assert_eq!(sum_block(k_len), block_len);
            let weights: Vec<f32x8> = (0..k_len)
                .map(|k| f32x8::from(std::array::from_fn(|u| (((k * 8 + u) as f32) * 0.77).sin())))
                .collect();
            let inputs: Vec<f32> = (0..k_len)
                .map(|k| 50.0 * ((k as f32) * 1.3).cos())
                .collect();
            let start = [[[f32x8::splat(0.25); 1]; 1]; 1];
            let row = InputRows::<1>::new(&inputs, 0, k_len);
            let blocked =
                accumulate_tile_blocked::<1, 1, 1>(start, row, &weights, [0], 1, k_len)[0][0][0];
            let mut by_hand = f32x8::splat(0.25);
            for k0 in (0..k_len).step_by(block_len) {
                let len = block_len.min(k_len - k0);
                let zero = [[[f32x8::ZERO; 1]; 1]; 1];
                let block = InputRows::<1>::new(&inputs[k0..], 0, len);
                by_hand +=
                    accumulate_tile::<1, 1, 1>(zero, block, &weights[k0..], [0], 1, len)[0][0][0];
            }
            assert_eq!(blocked.to_array(), by_hand.to_array(), "k_len {k_len}");
        }
    }

    /// Mean absolute error against the exact sums of `sums` random sums of `k_len` products
    /// (inputs ±50, as in the property test's worst case, weights ±1), 8 lanes each: summed by
    /// [`accumulate_tile_blocked`], in blocks of 16 by hand, and in one running sum.
    fn mean_errors(k_len: usize, sums: usize) -> [f64; 3] {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let mut errors = [0.0f64; 3];
        let zero = [[[f32x8::ZERO; 1]; 1]; 1];
        for _ in 0..sums {
            let weights: Vec<f32x8> = (0..k_len)
                .map(|_| f32x8::from(std::array::from_fn(|_| uniform())))
                .collect();
            let inputs: Vec<f32> = (0..k_len).map(|_| 50.0 * uniform()).collect();
            let row = InputRows::<1>::new(&inputs, 0, k_len);
            let blocked = accumulate_tile_blocked::<1, 1, 1>(zero, row, &weights, [0], 1, k_len);
            let mut blocks_of_16 = f32x8::ZERO;
            for k0 in (0..k_len).step_by(16) {
                let len = 16.min(k_len - k0);
                let block = InputRows::<1>::new(&inputs[k0..], 0, len);
                blocks_of_16 +=
                    accumulate_tile::<1, 1, 1>(zero, block, &weights[k0..], [0], 1, len)[0][0][0];
            }
            let running = accumulate_tile::<1, 1, 1>(zero, row, &weights, [0], 1, k_len);
            let sums = [blocked[0][0][0], blocks_of_16, running[0][0][0]];
            for u in 0..8 {
                let exact: f64 = (0..k_len)
                    .map(|k| f64::from(inputs[k]) * f64::from(weights[k].to_array()[u]))
                    .sum();
                for (error, sum) in errors.iter_mut().zip(sums) {
                    *error += (f64::from(sum.to_array()[u]) - exact).abs();
                }
            }
        }
        errors.map(|e| e / (8 * sums) as f64)
    }

    /// Why the blocked sum exists: over many sums of 148 large products, its mean error
    /// against the exact sum is smaller than one running sum's. One sum alone can go either
    /// way, so the test averages 200 of them (1600 lanes), with and without FMA alike.
    #[test]
    fn blocked_sum_rounds_less_on_average() {
        let [blocked, _, running] = mean_errors(148, 200);
        println!("mean error: blocked {blocked:e}, running {running:e}");
        assert!(
            blocked < running,
            "blocked {blocked:e}, running {running:e}"
        );
    }

    /// Why the blocks grow with `k_len`: over 4096 inputs, blocks of [`sum_block`] (64) round
    /// less on average than blocks of 16 (measured 1.8e−4 against 2.4e−4 with FMA, 1.9e−4
    /// against 2.4e−4 without).
    #[test]
    fn longer_blocks_round_less_over_long_sums() {
        let [blocked, blocks_of_16, _] = mean_errors(4096, 100);
        println!("mean error: blocks of 64 {blocked:e}, of 16 {blocks_of_16:e}");
        assert!(
            blocked < blocks_of_16,
            "blocks of 64 {blocked:e}, of 16 {blocks_of_16:e}"
        );
    }
}
