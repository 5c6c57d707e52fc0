//! Random models for the integration tests.
#![allow(dead_code, missing_docs)]

use gru_core::{Cell, LayerWeights, Model};

/// A small deterministic generator (xorshift), so tests need no extra dependency.
pub struct Values(u64);

impl Values {
    pub fn new(seed: u64) -> Self {
        Values(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in `[-scale, scale)`.
    pub fn next(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next(scale)).collect()
    }
}

/// A model with PyTorch's initialisation, U(−1/√H, 1/√H).
pub fn random_model(
    cell: Cell,
    input: usize,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    bias: bool,
    seed: u64,
) -> Model {
    let mut values = Values::new(seed);
    let d = if bidirectional { 2 } else { 1 };
    let scale = 1.0 / (hidden as f32).sqrt();
    let rows = cell.gate_count() * hidden;
    let weights = (0..layers * d)
        .map(|k| {
            let layer_input = if k < d { input } else { d * hidden };
            let w_ih = values.vec(rows * layer_input, scale);
            let w_hh = values.vec(rows * hidden, scale);
            let (b_ih, b_hh) = if bias {
                (Some(values.vec(rows, scale)), Some(values.vec(rows, scale)))
            } else {
                (None, None)
            };
            LayerWeights::new(cell.kind(), layer_input, hidden, w_ih, w_hh, b_ih, b_hh).unwrap()
        })
        .collect();
    Model::new(cell, bidirectional, weights).unwrap()
}

/// `threads`, or 1 in a build without the `rayon` feature (which runs on one thread only).
pub fn threads(threads: usize) -> usize {
    if cfg!(feature = "rayon") { threads } else { 1 }
}

/// `model` packed for `threads` workers (1 without the `rayon` feature), with every call on
/// all of them however small its steps: these tests check the multithreaded paths on small
/// shapes, whose calls would otherwise run on the calling thread alone.
pub fn on_workers(model: &Model, workers: usize) -> gru_simd::SimdModel {
    let mut simd = gru_simd::SimdModel::with_threads(model, threads(workers)).unwrap();
    simd.set_alone_below_step_flops(0);
    simd
}
