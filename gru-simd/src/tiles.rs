//! The loop nest over a step's tiles: which rows and panels go into each microkernel call,
//! in an order that keeps the weights in cache.

use std::ops::Range;

use wide::f32x8;

use crate::epilogue::TileEpilogue;
use crate::microkernel::accumulate_tile;
use crate::packing::{PackedLayer, RecurrentPack};

/// Where the panels of a weight matrix are: panel `p`'s k-th row of `G` vectors starts at
/// `p·panel_stride + k·k_stride`.
#[derive(Clone, Copy)]
pub struct PanelWeights<'a> {
    /// The packed vectors.
    pub data: &'a [f32x8],
    /// Vectors from one panel to the next.
    pub panel_stride: usize,
    /// Vectors from one k to the next.
    pub k_stride: usize,
    /// Length of the k dimension.
    pub k_len: usize,
}

impl<'a> PanelWeights<'a> {
    /// A recurrent pack: panels contiguous, k dimension `H`.
    pub fn recurrent(pack: &'a RecurrentPack) -> Self {
        Self {
            data: pack.data(),
            panel_stride: pack.panel_start(1),
            k_stride: pack.k_stride(),
            k_len: pack.k_len(),
        }
    }

    /// The k-major input weights of `layer`: panels side by side, k dimension `I`.
    pub fn input(layer: &'a PackedLayer) -> Self {
        Self {
            data: layer.w_ih(),
            panel_stride: layer.gates(),
            k_stride: layer.gates() * layer.panels(),
            k_len: layer.input_size(),
        }
    }
}

/// One tile: starting values from the epilogue, the product, the epilogue.
#[inline(always)]
fn tile<const G: usize, const MR: usize, const NR: usize, E: TileEpilogue<G>>(
    epilogue: &E,
    weights: &PanelWeights<'_>,
    inputs: [&[f32]; MR],
    rows: [usize; MR],
    panels: [usize; NR],
) {
    let init: [[[f32x8; G]; NR]; MR] =
        std::array::from_fn(|m| std::array::from_fn(|j| epilogue.init(rows[m], panels[j])));
    let acc = accumulate_tile::<G, MR, NR>(
        init,
        inputs,
        weights.data,
        panels.map(|p| p * weights.panel_stride),
        weights.k_stride,
        weights.k_len,
    );
    for m in 0..MR {
        for j in 0..NR {
            epilogue.finish(rows[m], panels[j], acc[m][j]);
        }
    }
}

/// Runs every tile of `rows × panels`. Row `r`'s input is `inputs[r·input_stride..]`.
///
/// Blocks of `ROWS` rows go panel by panel, so one panel's weights stay in L1 while every
/// block uses them. Rows left over (all of them at batch 1) go one at a time with `PANELS`
/// panels per tile, enough independent accumulators to hide the FMA latency.
pub fn run_tiles<const G: usize, const ROWS: usize, const PANELS: usize, E: TileEpilogue<G>>(
    epilogue: &E,
    weights: PanelWeights<'_>,
    inputs: &[f32],
    input_stride: usize,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let row_of = |r: usize| &inputs[r * input_stride..r * input_stride + weights.k_len];
    let blocked_end = rows.start + rows.len() / ROWS * ROWS;
    for p in panels.clone() {
        for first in (rows.start..blocked_end).step_by(ROWS) {
            let block: [usize; ROWS] = std::array::from_fn(|m| first + m);
            tile::<G, ROWS, 1, E>(epilogue, &weights, block.map(row_of), block, [p]);
        }
    }
    for r in blocked_end..rows.end {
        let mut p = panels.start;
        while p + PANELS <= panels.end {
            let group: [usize; PANELS] = std::array::from_fn(|j| p + j);
            tile::<G, 1, PANELS, E>(epilogue, &weights, [row_of(r)], [r], group);
            p += PANELS;
        }
        for p in p..panels.end {
            tile::<G, 1, 1, E>(epilogue, &weights, [row_of(r)], [r], [p]);
        }
    }
}
