//! The loop nest over a step's tiles: which rows and panels go into each microkernel call,
//! in an order that keeps the weights in cache.

use std::ops::Range;

use wide::f32x8;

use crate::epilogue::TileEpilogue;
use crate::microkernel::{InputRows, accumulate_tile, accumulate_tile_blocked};
use crate::packing::{PanelLayout, PanelPack};

#[cfg(target_arch = "x86_64")]
mod pairs;

/// How a tile sums its products over k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summation {
    /// One running sum ([`accumulate_tile`]): the recurrent products, whose inputs are states
    /// in (−1, 1).
    Running,
    /// Blocks summed from zero, then added ([`accumulate_tile_blocked`]): the input projection,
    /// whose inputs are raw features of any size.
    Blocked,
}

/// Where the panels of a weight matrix are: column `c`'s k-th row of vectors starts at
/// `c·column_stride + k·k_stride`, a column being one panel ([`PanelLayout::Contiguous`]) or
/// a pair of panels ([`PanelLayout::Pairs`]).
#[derive(Clone, Copy)]
pub struct PanelWeights<'a> {
    /// The packed vectors.
    pub data: &'a [f32x8],
    /// How the panels are laid out, which decides the tiles.
    pub layout: PanelLayout,
    /// Vectors from one column to the next.
    pub column_stride: usize,
    /// Vectors from one k to the next.
    pub k_stride: usize,
    /// Length of the k dimension.
    pub k_len: usize,
    /// How products are summed over k.
    pub summation: Summation,
}

impl<'a> PanelWeights<'a> {
    /// A recurrent pack (`W_hh`), summed in one running sum.
    pub fn recurrent(pack: &'a PanelPack) -> Self {
        Self::of(pack, Summation::Running)
    }

    /// The input weights (`W_ih`), summed in blocks.
    pub fn input(pack: &'a PanelPack) -> Self {
        Self::of(pack, Summation::Blocked)
    }

    fn of(pack: &'a PanelPack, summation: Summation) -> Self {
        Self {
            data: pack.data(),
            layout: pack.layout(),
            column_stride: match pack.layout() {
                PanelLayout::Contiguous => pack.panel_start(1),
                PanelLayout::Pairs => pack.pair_stride(),
            },
            k_stride: pack.k_stride(),
            k_len: pack.k_len(),
            summation,
        }
    }
}

/// The order in which [`run_tiles`] visits a step's panels.
///
/// A batch-1 step streams all of its worker's share of `W_hh` once. When that share is larger
/// than L2, visiting the panels in one order every step evicts each panel before its next
/// use, so every step reads the whole share from L3; alternating the order starts each step
/// on the panels the last one touched last, which are still in L2. Results do not depend on
/// the order: each tile's outputs are its own.
///
/// Measured with whole sequences (`gru bench`, alternating rounds, medians of the rounds'
/// time ratios against one order): at B = 1 on 2 threads, where each worker's share of the
/// GRU's `W_hh` is 1.5 MiB at I = H = 512, the GRU took 0.94× and 0.91× the time (two sets of
/// 8 and 14 rounds), the LSTM 0.95× (faster in 8 of 8); at 256 (a share that fits L2) and
/// 1024 (a share six times L2) 0.96–1.04×; the reset-before GRU 0.97× at 512. On one thread
/// 0.93–0.99×, the LSTM at H = 256 (1 MiB of `W_hh`) 0.93× (6 of 6). At B = 64 0.93–1.02×;
/// streaming steps 0.93–1.08× over two sets of 8 and 12 rounds, neither order ahead in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanelOrder {
    /// Lowest panel first.
    Ascending,
    /// Highest panel first.
    Descending,
}

impl PanelOrder {
    /// [`Ascending`](Self::Ascending) on even steps, [`Descending`](Self::Descending) on odd
    /// ones.
    ///
    /// ```
    /// use gru_simd::tiles::PanelOrder;
    /// assert_eq!(PanelOrder::alternating(4), PanelOrder::Ascending);
    /// assert_eq!(PanelOrder::alternating(7), PanelOrder::Descending);
    /// ```
    pub fn alternating(step: usize) -> Self {
        if step.is_multiple_of(2) {
            Self::Ascending
        } else {
            Self::Descending
        }
    }

    /// Which of `count` items, numbered in ascending order, comes `i`-th in this order. Plain
    /// index arithmetic rather than a reversed iterator with a closure: handing the tiles to
    /// a closure cost the LSTM's 6 × 2 tile its registers (B = 64, one thread: 1.25–1.34× the
    /// time).
    #[inline(always)]
    pub(crate) fn position(self, count: usize, i: usize) -> usize {
        match self {
            Self::Ascending => i,
            Self::Descending => count - 1 - i,
        }
    }

    /// `panels` cut into runs of `width` (≥ 1; the last run may be shorter), in this order.
    #[inline(always)]
    pub(crate) fn groups(
        self,
        panels: Range<usize>,
        width: usize,
    ) -> impl Iterator<Item = Range<usize>> {
        let count = panels.len().div_ceil(width);
        (0..count).map(move |i| {
            let start = panels.start + self.position(count, i) * width;
            start..(start + width).min(panels.end)
        })
    }
}

/// One tile: starting values from the epilogue, the product, the epilogue.
///
/// # Safety
/// As [`run_tiles`], for `rows × panels`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const G: usize, const MR: usize, const NR: usize, E: TileEpilogue<G>>(
    epilogue: &E,
    weights: &PanelWeights<'_>,
    inputs: InputRows<'_, MR>,
    rows: [usize; MR],
    panels: [usize; NR],
) {
    // Plain loops rather than `from_fn`/`map` (see the microkernel: fewer stack copies).
    let mut init = [[[f32x8::ZERO; G]; NR]; MR];
    let mut starts = [0; NR];
    for j in 0..NR {
        starts[j] = panels[j] * weights.column_stride;
        for m in 0..MR {
            init[m][j] = epilogue.init(rows[m], panels[j]);
        }
    }
    let (data, k_stride, k_len) = (weights.data, weights.k_stride, weights.k_len);
    let acc = match weights.summation {
        Summation::Running => {
            accumulate_tile::<G, MR, NR>(init, inputs, data, starts, k_stride, k_len)
        }
        Summation::Blocked => {
            accumulate_tile_blocked::<G, MR, NR>(init, inputs, data, starts, k_stride, k_len)
        }
    };
    for m in 0..MR {
        for j in 0..NR {
            // SAFETY: the caller has these rows and panels to itself.
            unsafe { epilogue.finish(rows[m], panels[j], acc[m][j]) };
        }
    }
}

/// The inputs of all the rows of a [`run_tiles`] call: row `r`'s are
/// `data[(r − first_row)·stride..][..k_len]`.
#[derive(Clone, Copy)]
struct CallRows<'x> {
    data: &'x [f32],
    stride: usize,
    first_row: usize,
    k_len: usize,
}

impl<'x> CallRows<'x> {
    /// The inputs of the `MR` rows from `first` on.
    ///
    /// # Panics
    /// If `data` does not hold them.
    #[inline(always)]
    fn rows<const MR: usize>(&self, first: usize) -> InputRows<'x, MR> {
        let start = (first - self.first_row) * self.stride;
        InputRows::new(&self.data[start..], self.stride, self.k_len)
    }
}

/// Inputs of a step's row blocks, in bytes, up to which the rows left over run group by
/// group ([`leftover_group_width`]): a quarter of this machine's 1 MiB L2.
const LEFTOVERS_BY_GROUP_MAX_INPUT_BYTES: usize = 256 << 10;

/// Panels per group in [`run_tiles`]: `per_group` when there are rows left over and the row
/// blocks' inputs take at most [`LEFTOVERS_BY_GROUP_MAX_INPUT_BYTES`], else all `panels` (one
/// group, the leftover rows after every block).
///
/// Each panel's blocks read all the blocks' inputs. When these are large, they push a group's
/// earlier panels out of L2 before the leftover rows come to them, and the leftover rows do
/// better streaming all panels in one pass: by group, the LSTM at B = 64, I = H = 1024 (a
/// projection of 256 rows, 1 MiB of inputs) took 1.02× the time (8 rounds on 2 threads, 6 on
/// one, alternating). Without leftover rows there is nothing to group.
fn leftover_group_width(
    panels: usize,
    per_group: usize,
    rows_left_over: bool,
    block_input_bytes: usize,
) -> usize {
    if rows_left_over && block_input_bytes <= LEFTOVERS_BY_GROUP_MAX_INPUT_BYTES {
        per_group
    } else {
        panels.max(1)
    }
}

/// Runs every tile of `rows × panels`, visiting the panels in `order`. Row `r`'s input is
/// `inputs[(r − rows.start)·input_stride..]`: `inputs` starts at the first row.
///
/// The tiles are 8-lane over panels, or, for weights packed in pairs
/// ([`PanelLayout::Pairs`]), 16-lane over pairs of panels; below, a *column* is either, and the
/// 16-lane tiles' blocks have 8 rows for 3 and 2 gates and 16 for 1 instead of `ROWS`.
///
/// Blocks of `ROWS` rows go column by column, so one column's weights stay in cache while every
/// block uses them. Rows left over (all of them at batch 1) go in pairs with `PAIR_PANELS`
/// columns per tile, then one at a time with `PANELS` columns per tile: enough independent
/// accumulators to hide the FMA latency, and each pair streams the weights once for two rows.
/// The pairs measured on the LSTM (six-row blocks, 8-lane tiles) at B = 64 on one thread,
/// four rows left over: 55 → 78 GFLOP/s at I = H = 256, 53 → 75 at 512 (medians of four
/// alternating rounds).
///
/// When there are both, and the row blocks' inputs take at most a quarter of L2, the panels
/// go in groups of `PANELS`: each group's row blocks, then the leftover rows on the same
/// panels, whose weights are then still in L2. After all the blocks instead, the leftover rows
/// read every panel once more from L3 whenever the weights are larger than L2, in as few
/// streams as their tiles have panels.
/// Projecting 48, 50 and 52 rows at I = H = 1024 (batch 1, 50 steps: 12 blocks and a pair;
/// scratch loop, one thread, medians of 15 calls) ran at 86, 79 and 86 GFLOP/s before, 88, 87
/// and 91 by group. Whole calls at B = 1, I = H = 1024, T = 50, alternating rounds: one thread
/// GRU 0.94× the time (6 of 6 rounds faster) and 0.96× (6 of 8), LSTM 0.97× (6 of 8); two
/// threads, where each worker projects half the panels, GRU 0.99× (13 of 20).
///
/// # Safety
/// While it runs, no other thread may touch the cells of `rows × panels` that `epilogue`
/// writes or reads back (see [`TileEpilogue::finish`]).
///
/// # Panics
/// If `inputs` is too short for `rows` or the weights for `panels`, or if the weights are
/// packed in pairs and this CPU lacks AVX-512F ([`PanelLayout::is_supported`]).
pub unsafe fn run_tiles<
    const G: usize,
    const ROWS: usize,
    const PANELS: usize,
    const PAIR_PANELS: usize,
    E: TileEpilogue<G>,
>(
    epilogue: &E,
    weights: PanelWeights<'_>,
    inputs: &[f32],
    input_stride: usize,
    rows: Range<usize>,
    panels: Range<usize>,
    order: PanelOrder,
) {
    match weights.layout {
        // SAFETY: the caller's rows and panels.
        PanelLayout::Contiguous => unsafe {
            run_columns::<Lanes8, G, ROWS, PANELS, PAIR_PANELS, E>(
                epilogue,
                &weights,
                inputs,
                input_stride,
                rows,
                panels.clone(),
                &panels,
                order,
            );
        },
        PanelLayout::Pairs => {
            #[cfg(target_arch = "x86_64")]
            {
                assert!(
                    PanelLayout::Pairs.is_supported(),
                    "weights packed in pairs need AVX-512F, which this CPU lacks"
                );
                let columns = panels.start / 2..panels.end.div_ceil(2);
                // SAFETY: the caller's rows and panels (a pair tile finishes only the panels
                // of `panels`), on a CPU with AVX-512F, checked above.
                unsafe {
                    run_columns::<pairs::Lanes16, G, ROWS, PANELS, PAIR_PANELS, E>(
                        epilogue,
                        &weights,
                        inputs,
                        input_stride,
                        rows,
                        columns,
                        &panels,
                        order,
                    );
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            panic!("weights packed in pairs need AVX-512F, which this CPU lacks");
        }
    }
}

/// The tiles of one panel layout, which the loop nest ([`run_columns`]) calls one at a time.
///
/// The loop nest walks *columns*, what one tile covers side by side: a panel of 8 units
/// ([`Lanes8`]), or a pair of panels in one 16-lane register (`pairs::Lanes16`). A tile
/// finishes only the panels of `panels`, the caller's; a pair half outside them is computed
/// and dropped.
trait TileKernel {
    /// Rows of a block tile of `G` gates, given `ROWS`, the 8-lane choice.
    fn block_rows<const G: usize, const ROWS: usize>() -> usize;

    /// Rows of the short blocks that take a four-gate tile's remainder of four or more rows
    /// ([`block_ends`]); 0 for none.
    fn short_block_rows<const G: usize, const ROWS: usize>() -> usize;

    /// The block tile of [`block_rows`](Self::block_rows) rows from `first_row` (of
    /// [`short_block_rows`](Self::short_block_rows) when `short`), on `column`, bringing
    /// `prefetch` into L2 meanwhile (where the kind of tile does).
    ///
    /// # Safety
    /// As [`run_tiles`], for those rows × `panels`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const G: usize, const ROWS: usize, E: TileEpilogue<G>>(
        epilogue: &E,
        weights: &PanelWeights<'_>,
        inputs: &CallRows<'_>,
        first_row: usize,
        column: usize,
        panels: &Range<usize>,
        prefetch: Prefetch,
        short: bool,
    );

    /// A tile of `MR` rows × `NR` columns.
    ///
    /// # Safety
    /// As [`run_tiles`], for `rows` × `panels`.
    unsafe fn strip<const G: usize, const MR: usize, const NR: usize, E: TileEpilogue<G>>(
        epilogue: &E,
        weights: &PanelWeights<'_>,
        inputs: InputRows<'_, MR>,
        rows: [usize; MR],
        columns: [usize; NR],
        panels: &Range<usize>,
    );
}

/// Lines of weights to bring into L2 while a block tile runs: `lines` 64-byte lines from vector
/// `start` of [`PanelWeights::data`], one per k from the first.
///
/// While the blocks of one column run, they prefetch the next column's weights, a share each,
/// so that its first block finds them in L2. On the Intel Xeon this was measured on, data
/// beyond L2 streamed at about 29 GB/s per thread, slower than a block of 8 rows consumes a
/// column that was not in L2 (GRU, I = H = 1024: 196 KB per column, about 6.8 µs to stream
/// against 4.4 µs of FMAs). Alternating rounds against no prefetch (`gru bench`, GRU): B = 64
/// on two threads 0.947× the time at I = H = 1024 and 0.958× at 512 (6 of 6 rounds faster
/// each), 0.998× at 256, whose `W_hh` fits L2; on one thread 0.905× and 0.968×; the LSTM
/// 0.96–0.98×; B = 1, whose projection runs in blocks, 0.967×. Only the 16-lane tiles
/// prefetch: software prefetches into the 8-lane tiles measured no gain on the AMD machine
/// the project began on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prefetch {
    start: usize,
    lines: usize,
}

impl Prefetch {
    /// Nothing to prefetch.
    const NONE: Self = Self { start: 0, lines: 0 };

    /// The share of `next`'s weights that block `block` of a column prefetches: lines
    /// `block·k_len ..` of the column, up to `k_len` of them (one per k), none past its end.
    fn share_of(weights: &PanelWeights<'_>, next: usize, block: usize) -> Self {
        let vectors_per_line = 64 / size_of::<f32x8>();
        let column_lines = weights.column_stride / vectors_per_line;
        let first = block.saturating_mul(weights.k_len).min(column_lines);
        Self {
            start: next * weights.column_stride + first * vectors_per_line,
            lines: (column_lines - first).min(weights.k_len),
        }
    }
}

/// Tiles of 8-lane vectors over contiguous panels: a column is a panel.
struct Lanes8;

impl TileKernel for Lanes8 {
    #[inline(always)]
    fn block_rows<const G: usize, const ROWS: usize>() -> usize {
        ROWS
    }

    /// None: the 8-lane tiles run no four-gate packs (the LSTM is two packs of two there).
    #[inline(always)]
    fn short_block_rows<const G: usize, const ROWS: usize>() -> usize {
        0
    }

    #[inline(always)]
    unsafe fn block<const G: usize, const ROWS: usize, E: TileEpilogue<G>>(
        epilogue: &E,
        weights: &PanelWeights<'_>,
        inputs: &CallRows<'_>,
        first_row: usize,
        column: usize,
        _panels: &Range<usize>,
        _prefetch: Prefetch,
        short: bool,
    ) {
        debug_assert!(!short, "no short blocks in 8-lane tiles");
        let block: [usize; ROWS] = std::array::from_fn(|m| first_row + m);
        let inputs = inputs.rows::<ROWS>(first_row);
        // SAFETY: the caller's rows and panel.
        unsafe { tile::<G, ROWS, 1, E>(epilogue, weights, inputs, block, [column]) };
    }

    #[inline(always)]
    unsafe fn strip<const G: usize, const MR: usize, const NR: usize, E: TileEpilogue<G>>(
        epilogue: &E,
        weights: &PanelWeights<'_>,
        inputs: InputRows<'_, MR>,
        rows: [usize; MR],
        columns: [usize; NR],
        _panels: &Range<usize>,
    ) {
        // SAFETY: the caller's rows and panels.
        unsafe { tile::<G, MR, NR, E>(epilogue, weights, inputs, rows, columns) };
    }
}

/// [`run_tiles`] over `columns` of `K`'s layout, finishing the panels of `panels`.
///
/// # Safety
/// As [`run_tiles`]; and the CPU runs `K`'s tiles.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn run_columns<
    K: TileKernel,
    const G: usize,
    const ROWS: usize,
    const PANELS: usize,
    const PAIR_PANELS: usize,
    E: TileEpilogue<G>,
>(
    epilogue: &E,
    weights: &PanelWeights<'_>,
    inputs: &[f32],
    input_stride: usize,
    rows: Range<usize>,
    columns: Range<usize>,
    panels: &Range<usize>,
    order: PanelOrder,
) {
    let inputs = CallRows {
        data: inputs,
        stride: input_stride,
        first_row: rows.start,
        k_len: weights.k_len,
    };
    let block_rows = K::block_rows::<G, ROWS>();
    let short_rows = K::short_block_rows::<G, ROWS>();
    let (full_end, blocked_end) = block_ends(&rows, block_rows, short_rows);
    let leftover = blocked_end..rows.end;
    if blocked_end == rows.start {
        // SAFETY: all of the caller's rows and panels.
        unsafe {
            leftover_rows::<K, G, PANELS, PAIR_PANELS, E>(
                epilogue, weights, &inputs, leftover, &columns, panels, order,
            );
        }
        return;
    }
    let group_width = leftover_group_width(
        columns.len(),
        PANELS,
        !leftover.is_empty(),
        (blocked_end - rows.start) * weights.k_len * size_of::<f32>(),
    );
    let full_blocks = (rows.start..full_end)
        .step_by(block_rows)
        .map(|first| (first, false));
    let short_blocks = (full_end..blocked_end)
        .step_by(short_rows.max(1))
        .map(|first| (first, true));
    for group in order.groups(columns, group_width) {
        for j in 0..group.len() {
            let column = group.start + order.position(group.len(), j);
            let next =
                (j + 1 < group.len()).then(|| group.start + order.position(group.len(), j + 1));
            for (block, (first, short)) in
                full_blocks.clone().chain(short_blocks.clone()).enumerate()
            {
                let prefetch = next.map_or(Prefetch::NONE, |next| {
                    Prefetch::share_of(weights, next, block)
                });
                // SAFETY: these rows and this column are within the caller's.
                unsafe {
                    K::block::<G, ROWS, E>(
                        epilogue, weights, &inputs, first, column, panels, prefetch, short,
                    )
                };
            }
        }
        // SAFETY: rows and columns within the caller's.
        unsafe {
            leftover_rows::<K, G, PANELS, PAIR_PANELS, E>(
                epilogue,
                weights,
                &inputs,
                leftover.clone(),
                &group,
                panels,
                order,
            );
        }
    }
}

/// Where the block tiles of `rows` end: rows `rows.start..full_end` go in blocks of
/// `block_rows`, `full_end..blocked_end` in short blocks of `short_rows` (none when it is 0),
/// the rest to [`leftover_rows`]. Short blocks take a remainder of at least `short_rows`, and
/// one full block more when the remainder alone is too short but both make two short blocks
/// (six-row blocks that would leave 2 rows leave 8: two blocks of 4).
///
/// Left over, rows go in strips of two across every column, each strip streaming the columns'
/// weights again; a short block uses each column while the full blocks have it in cache. Four-
/// gate tiles (six-row blocks) leave two or four rows of the batch sizes that matter (8, 16,
/// 32 rows per worker). With those rows in strips, the LSTM at B = 16 and 32 on 2 threads took
/// 1.03–1.07× the time of two packs of two gates in eight-row blocks; in short blocks (3
/// alternating rounds against the same two packs) 0.94× at B = 32, I = H = 512 and 0.93× at
/// B = 64 (strips: 1.07× and 0.99×), and 1.01–1.04× at eight rows per worker (B = 8 and 16
/// at I = H = 256, in several sets of rounds; strips 1.04× at B = 16). Four-row strips across
/// all columns instead, which stream the weights once per strip, measured 1.02–1.06×.
fn block_ends(rows: &Range<usize>, block_rows: usize, short_rows: usize) -> (usize, usize) {
    let mut full = rows.len() / block_rows;
    let mut rest = rows.len() % block_rows;
    if short_rows == 0 {
        let full_end = rows.start + full * block_rows;
        return (full_end, full_end);
    }
    if rest < short_rows && full > 0 && rest + block_rows >= 2 * short_rows {
        full -= 1;
        rest += block_rows;
    }
    let full_end = rows.start + full * block_rows;
    (full_end, full_end + rest / short_rows * short_rows)
}

/// The tiles of rows left over from the row blocks, on `columns`: in pairs with `PAIR_PANELS`
/// columns per tile, then one row at a time with `PANELS`. Out of line: inlined into
/// [`run_columns`] from its two call sites, the LSTM at B = 64 on one thread, which has leftover
/// rows in every step, took 1.03–1.04× the time (6 alternating rounds); out of line 0.98–1.01×
/// (8 rounds).
///
/// # Safety
/// As [`run_columns`], for `rows × columns`.
#[inline(never)]
unsafe fn leftover_rows<
    K: TileKernel,
    const G: usize,
    const PANELS: usize,
    const PAIR_PANELS: usize,
    E: TileEpilogue<G>,
>(
    epilogue: &E,
    weights: &PanelWeights<'_>,
    inputs: &CallRows<'_>,
    rows: Range<usize>,
    columns: &Range<usize>,
    panels: &Range<usize>,
    order: PanelOrder,
) {
    let paired_end = rows.start + rows.len() / 2 * 2;
    for first in (rows.start..paired_end).step_by(2) {
        // SAFETY: these rows and columns are the caller's.
        unsafe {
            row_strip::<K, G, 2, PAIR_PANELS, E>(
                epilogue,
                weights,
                inputs,
                [first, first + 1],
                columns,
                panels,
                order,
            );
        }
    }
    for r in paired_end..rows.end {
        // SAFETY: as above.
        unsafe {
            row_strip::<K, G, 1, PANELS, E>(epilogue, weights, inputs, [r], columns, panels, order)
        };
    }
}

/// The tiles of `MR` rows across `columns`: `NR` columns at a time, then the columns left over
/// two at a time, then one; in reverse when `order` is descending.
///
/// # Safety
/// As [`run_columns`], for `rows × columns`.
#[inline(always)]
unsafe fn row_strip<
    K: TileKernel,
    const G: usize,
    const MR: usize,
    const NR: usize,
    E: TileEpilogue<G>,
>(
    epilogue: &E,
    weights: &PanelWeights<'_>,
    inputs: &CallRows<'_>,
    rows: [usize; MR],
    columns: &Range<usize>,
    panels: &Range<usize>,
    order: PanelOrder,
) {
    let inputs = inputs.rows::<MR>(rows[0]);
    let grouped_end = columns.start + columns.len() / NR * NR;
    // The columns left over, two at a time where possible: a tile of one column has too few
    // accumulators to hide the FMA latency.
    let paired_end = if NR > 2 {
        grouped_end + (columns.end - grouped_end) / 2 * 2
    } else {
        grouped_end
    };
    let counts = [
        (grouped_end - columns.start) / NR,
        (paired_end - grouped_end) / 2,
        columns.end - paired_end,
    ];
    for segment in 0..3 {
        let segment = order.position(3, segment);
        let count = counts[segment];
        for i in 0..count {
            let i = order.position(count, i);
            match segment {
                0 => {
                    let group = std::array::from_fn(|j| columns.start + i * NR + j);
                    // SAFETY: these columns are within the caller's `columns`, these rows its
                    // `rows`.
                    unsafe {
                        K::strip::<G, MR, NR, E>(epilogue, weights, inputs, rows, group, panels)
                    };
                }
                1 => {
                    let c = grouped_end + 2 * i;
                    // SAFETY: as above.
                    unsafe {
                        K::strip::<G, MR, 2, E>(epilogue, weights, inputs, rows, [c, c + 1], panels)
                    };
                }
                _ => {
                    let c = paired_end + i;
                    // SAFETY: as above.
                    unsafe {
                        K::strip::<G, MR, 1, E>(epilogue, weights, inputs, rows, [c], panels)
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::epilogue::Projection;
    use crate::packing::{LANES, PackedLayer, PanelLayout};
    use crate::threading::SharedVectors;
    use gru_core::{Cell, GruVariant, LayerWeights};

    /// The blocks of a column prefetch the next column's lines once each, in order, one per
    /// k at most, and nothing outside that column.
    #[test]
    fn block_prefetches_cover_the_next_column_once() {
        let data = vec![f32x8::ZERO; 4];
        for (column_stride, k_len) in [(48 * 2, 16), (6 * 2 * 1024, 1024), (6 * 2 * 7, 7), (2, 1)] {
            let weights = PanelWeights {
                data: &data,
                layout: PanelLayout::Pairs,
                column_stride,
                k_stride: 6,
                k_len,
                summation: Summation::Running,
            };
            let next = 3;
            let mut covered = Vec::new();
            for block in 0..20 {
                let share = Prefetch::share_of(&weights, next, block);
                assert!(share.lines <= k_len);
                covered.extend((0..share.lines).map(|line| share.start / 2 + line));
            }
            let column_lines = column_stride / 2;
            let want: Vec<usize> = (next * column_lines..(next + 1) * column_lines).collect();
            assert_eq!(covered, want, "stride {column_stride}, k_len {k_len}");
        }
    }

    #[test]
    fn leftover_rows_go_by_group_only_beside_small_row_blocks() {
        let small = LEFTOVERS_BY_GROUP_MAX_INPUT_BYTES;
        assert_eq!(leftover_group_width(10, 4, true, small), 4);
        assert_eq!(leftover_group_width(10, 4, true, small + 1), 10);
        assert_eq!(leftover_group_width(10, 4, false, 0), 10);
        assert_eq!(
            leftover_group_width(0, 4, false, 0),
            1,
            "never a width of 0"
        );
    }

    /// The recurrent product of every row and unit through `run_tiles` (the tile loop and the
    /// microkernel together), against a plain f64 loop: every tail of the hidden size
    /// (H mod 8 = 0..7) and every batch 1..=9, so that every blocked and leftover path runs,
    /// in both panel orders, which must agree bit for bit; and 5 and 10 panels, so that rows
    /// left over beside row blocks run in several groups of panels, the last one short.
    #[test]
    fn tile_loop_matches_a_plain_loop_for_every_tail() {
        check_every_tail::<3, 4, 4, 2>(Cell::Gru(GruVariant::ResetAfter), 1..=9);
    }

    /// The same for the LSTM's four-gate tiles (16-lane only): six-row blocks, short blocks of
    /// four (8 = 4 + 4, 10 = 6 + 4, 14 = 6 + 4 + 4, 16 = 12 + 4) and what is left after them.
    #[test]
    fn four_gate_tile_loop_matches_a_plain_loop_for_every_tail() {
        check_every_tail::<4, 2, 3, 2>(Cell::Lstm, 1..=17);
    }

    /// Rows of four-gate tiles go in blocks of six, then of four, then in strips.
    #[test]
    fn short_blocks_take_what_six_row_blocks_leave() {
        let ends = |rows: Range<usize>| block_ends(&rows, 6, 4);
        assert_eq!(ends(0..3), (0, 0));
        assert_eq!(ends(0..4), (0, 4));
        assert_eq!(ends(0..5), (0, 4));
        assert_eq!(ends(0..6), (6, 6));
        assert_eq!(ends(0..7), (6, 6));
        assert_eq!(ends(0..8), (0, 8));
        assert_eq!(ends(10..20), (16, 20));
        assert_eq!(ends(0..14), (6, 14));
        assert_eq!(ends(0..32), (24, 32));
        assert_eq!(ends(0..64), (60, 64));
        // Without short blocks, only full ones.
        assert_eq!(block_ends(&(3..24), 8, 0), (19, 19));
    }

    /// [`tile_loop_matches_a_plain_loop_for_every_tail`] for a cell whose recurrent pack has
    /// `G` gates, in the layouts that pack them so, with the tile sizes its step uses.
    fn check_every_tail<
        const G: usize,
        const ROWS: usize,
        const PANELS: usize,
        const PAIR_PANELS: usize,
    >(
        cell: Cell,
        batches: std::ops::RangeInclusive<usize>,
    ) {
        for hidden in (8..16).chain([37, 75]) {
            let rows = cell.gate_count() * hidden;
            let value = |s: f32, n: usize| {
                (0..n)
                    .map(|k| ((k as f32 + s) * 0.29).sin())
                    .collect::<Vec<_>>()
            };
            let w = LayerWeights::new(
                cell.kind(),
                2,
                hidden,
                value(1.0, rows * 2),
                value(2.0, rows * hidden),
                None,
                None,
            )
            .unwrap();
            let layers = [PanelLayout::Contiguous, PanelLayout::Pairs]
                .into_iter()
                .filter(|layout| layout.is_supported())
                .map(|layout| PackedLayer::with_layout(&w, cell, layout).unwrap())
                .filter(|layer| layer.recurrent().gate_count() == G)
                .collect::<Vec<_>>();
            let Some(panels) = layers.first().map(PackedLayer::panels) else {
                return;
            };
            for batch in batches.clone() {
                let stride = panels * LANES;
                let mut h = vec![0.0f32; batch * stride];
                for (b, row) in h.chunks_exact_mut(stride).enumerate() {
                    for (k, v) in row[..hidden].iter_mut().enumerate() {
                        *v = ((b * 31 + k) as f32 * 0.17).cos();
                    }
                }
                let zero_bias = vec![f32x8::ZERO; panels * G];
                // Every layout's tiles (where the CPU runs them), in both orders, and also on
                // a range of panels that starts and ends halfway through a pair.
                let run = |layer: &PackedLayer, order: PanelOrder, part: Range<usize>| {
                    let out = SharedVectors::zeros(batch * panels * G);
                    let epilogue = Projection::<G> {
                        bias: &zero_bias,
                        panels,
                        gates: G,
                        first_gate: 0,
                        out: &out,
                    };
                    // SAFETY: single-threaded test.
                    unsafe {
                        run_tiles::<G, ROWS, PANELS, PAIR_PANELS, _>(
                            &epilogue,
                            PanelWeights::recurrent(layer.recurrent()),
                            &h,
                            stride,
                            0..batch,
                            part,
                            order,
                        );
                    }
                    // SAFETY: single-threaded test, all writes done.
                    let got: &[f32] = wide::bytemuck::cast_slice(unsafe { out.read(0..out.len()) });
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                // The 8-lane tiles fuse their multiply-adds only in builds with FMA (not in a
                // build without target flags); the 16-lane tiles always do.
                let ascending = run(&layers[0], PanelOrder::Ascending, 0..panels);
                for layer in &layers {
                    let ascending = if cfg!(target_feature = "fma") {
                        ascending.clone()
                    } else {
                        run(layer, PanelOrder::Ascending, 0..panels)
                    };
                    let descending = run(layer, PanelOrder::Descending, 0..panels);
                    assert_eq!(
                        ascending,
                        descending,
                        "H={hidden} B={batch} {:?}",
                        layer.layout()
                    );
                    // Panels 1..panels-1 alone, then 0 and the last: the same bits, and
                    // nothing written twice (outputs start at zero, the sums are added).
                    if panels >= 3 {
                        let middle = run(layer, PanelOrder::Ascending, 1..panels - 1);
                        let first = run(layer, PanelOrder::Ascending, 0..1);
                        let last = run(layer, PanelOrder::Ascending, panels - 1..panels);
                        let pieces: Vec<u32> = (0..ascending.len())
                            .map(|i| {
                                let p = i / (G * LANES) % panels;
                                [&first, &middle, &last]
                                    [usize::from(p > 0) + usize::from(p + 1 == panels)][i]
                            })
                            .collect();
                        assert_eq!(
                            ascending,
                            pieces,
                            "H={hidden} B={batch} {:?}",
                            layer.layout()
                        );
                    }
                }

                let got: Vec<f32> = ascending.into_iter().map(f32::from_bits).collect();
                for b in 0..batch {
                    for gate in 0..G {
                        for unit in 0..hidden {
                            let want: f64 = (0..hidden)
                                .map(|k| {
                                    f64::from(w.w_hh_row(gate, unit)[k])
                                        * f64::from(h[b * stride + k])
                                })
                                .sum();
                            let (p, u) = (unit / LANES, unit % LANES);
                            let g = got[((b * panels + p) * G + gate) * LANES + u];
                            assert!(
                                (f64::from(g) - want).abs() < 1e-5,
                                "H={hidden} B={batch} row {b} gate {gate} unit {unit}: {g} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
