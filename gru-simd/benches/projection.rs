//! The input projection `X·W_ihᵀ + b` of a GRU layer (3 gates), one thread, three ways:
//!
//! - `panels`: this crate's projection over the prepacked `W_ih` panels, summed in blocks
//!   ([`sum_block`](gru_simd::microkernel::sum_block)), in the layout this CPU runs fastest
//!   (16-lane pairs with AVX-512);
//! - `panels_8lane`: the same in the 8-lane layout every x86-64-v3 CPU runs;
//! - `matrixmultiply_blocked16`: `matrixmultiply::sgemm` with the same blocked summation (one
//!   call per 16 inputs, each added to the output), which is what the accuracy bound needs;
//! - `matrixmultiply_one_call`: one `sgemm` call over all inputs (less accurate; for scale).
//!
//! Shapes are `rows × I` with `I = H`, rows being steps × batch of one chunk and worker:
//! 64 rows (batch 64) and 50–100 rows (batch 1 over a sequence). Throughput is in FLOPs
//! (`2·rows·I·3H`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gru_core::{Cell, CellKind, GruVariant, LayerWeights};
use gru_simd::packing::{PackedLayer, PanelLayout};
use gru_simd::projection::project;
use gru_simd::threading::SharedVectors;

/// `W_ihᵀ`, `[I, 3H]` row-major: the layout `matrixmultiply` reads fastest (measured faster
/// than reading `W_ih` with a column stride), prepared once like any packing.
fn k_major(w: &LayerWeights) -> Vec<f32> {
    let (input, columns) = (w.input_size(), 3 * w.hidden_size());
    let mut b = vec![0.0; input * columns];
    for (j, row) in w.w_ih().chunks_exact(input).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            b[k * columns + j] = v;
        }
    }
    b
}

/// `c[rows × 3H] += x[rows × I] · b` with `b = W_ihᵀ` from [`k_major`], one `sgemm` call per
/// `block` inputs.
fn sgemm_projection(b: &[f32], x: &[f32], rows: usize, c: &mut [f32], block: usize) {
    let columns = c.len() / rows;
    let input = b.len() / columns;
    assert_eq!(
        (x.len(), c.len(), b.len()),
        (rows * input, rows * columns, input * columns)
    );
    for k0 in (0..input).step_by(block) {
        let k_len = block.min(input - k0);
        // SAFETY: `x` is `rows × input` (row stride `input`), so its columns k0..k0 + k_len
        // are inside it; `b` is `input × columns` (row stride `columns`), so its rows
        // k0..k0 + k_len are inside it; `c` is `rows × columns` and a unique borrow (lengths
        // asserted above).
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k_len,
                columns,
                1.0,
                x.as_ptr().add(k0),
                input as isize,
                1,
                b.as_ptr().add(k0 * columns),
                columns as isize,
                1,
                1.0,
                c.as_mut_ptr(),
                columns as isize,
                1,
            );
        }
    }
}

fn projection(c: &mut Criterion) {
    let mut group = c.benchmark_group("projection_gru");
    group.sample_size(20);
    for (rows, size) in [
        (64, 256),
        (64, 512),
        (64, 1024),
        (100, 256),
        (100, 512),
        (50, 1024),
    ] {
        let value = |seed: f32, n: usize| -> Vec<f32> {
            (0..n)
                .map(|k| ((k as f32 + seed) * 0.37).sin() * 0.05)
                .collect()
        };
        let gates = 3 * size;
        let w = LayerWeights::new(
            CellKind::Gru,
            size,
            size,
            value(1.0, gates * size),
            value(2.0, gates * size),
            None,
            None,
        )
        .expect("consistent shapes");
        let cell = Cell::Gru(GruVariant::ResetAfter);
        let layer = PackedLayer::new(&w, cell);
        let x = value(3.0, rows * size);
        let id = format!("{rows}x{size}");
        group.throughput(Throughput::Elements((2 * rows * size * gates) as u64));

        let eight_lanes = PackedLayer::with_layout(&w, cell, PanelLayout::Contiguous)
            .expect("the 8-lane layout runs everywhere");
        for (name, layer) in [("panels", &layer), ("panels_8lane", &eight_lanes)] {
            let out = SharedVectors::zeros(rows * 3 * layer.panels());
            group.bench_function(BenchmarkId::new(name, &id), |b| {
                // SAFETY: one thread; nothing else touches `out`.
                b.iter(|| unsafe {
                    project(layer, black_box(&x), size, &out, 0..rows, 0..layer.panels())
                })
            });
        }
        let w_t = k_major(&w);
        let mut c = vec![0.0f32; rows * gates];
        for (name, block) in [
            ("matrixmultiply_blocked16", 16),
            ("matrixmultiply_one_call", size),
        ] {
            group.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter(|| sgemm_projection(&w_t, black_box(&x), rows, &mut c, block))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, projection);
criterion_main!(benches);
