//! The input projection `X·W_ihᵀ + b` of many rows at once, as one GEMM (`matrixmultiply`).
//!
//! Over a whole chunk of time steps the product is large, so the GEMM's own packing of its
//! operands is amortised; the result comes out in the interleaved panel order the step
//! epilogues read, with the foldable biases already added.

use wide::f32x8;

use crate::packing::PackedLayer;

/// Inputs summed per GEMM call. With the whole of `I` in one call, a sequence with inputs of
/// ±50 and `I = 148` came out 2.04e−5 from the f64 reference (the bound is 2e−5); blocks of 64
/// gave 1.84e−5, of 32 1.12e−5. The cost is one more pass over the output per block.
const K_BLOCK: usize = 16;

/// `projection[r] = bias + x[r]·W_ihᵀ` for every row `r` of `x` (`I` values each, row-major).
///
/// # Panics
/// If `x` and `projection` do not hold the same number of rows.
pub fn project_rows(layer: &PackedLayer, x: &[f32], projection: &mut [f32x8]) {
    let width = layer.gates() * layer.panels();
    let input = layer.input_size();
    let rows = projection.len() / width;
    assert_eq!(
        projection.len(),
        rows * width,
        "projection holds whole rows"
    );
    assert_eq!(
        x.len(),
        rows * input,
        "x holds as many rows as the projection"
    );
    for row in projection.chunks_exact_mut(width) {
        row.copy_from_slice(layer.projection_bias());
    }
    if rows == 0 {
        return;
    }
    let columns = width * 8;
    let b: &[f32] = wide::bytemuck::cast_slice(layer.w_ih());
    let c: &mut [f32] = wide::bytemuck::cast_slice_mut(projection);
    assert_eq!(b.len(), input * columns);
    // One GEMM per block of at most `K_BLOCK` inputs: each call sums its block from zero and
    // adds the result to `c`, a blocked summation whose rounding error grows with the block
    // length rather than with `I`.
    for k0 in (0..input).step_by(K_BLOCK) {
        let k_len = K_BLOCK.min(input - k0);
        // SAFETY: `x` is `rows × input` with row stride `input`, so columns `k0..k0 + k_len`
        // of every row are inside it; `b` is `input × columns` with row stride `columns`, so
        // rows `k0..k0 + k_len` are inside it; `c` is `rows × columns` with row stride
        // `columns` (all three lengths checked above); `c` is a unique borrow, so it overlaps
        // neither input.
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

#[cfg(test)]
mod tests {
    use super::*;
    use gru_core::{Cell, CellKind, GruVariant, LayerWeights};

    #[test]
    fn projection_matches_a_plain_loop() {
        let (input, hidden) = (5, 11);
        let rows = 3 * hidden;
        let value = |s: f32, n: usize| {
            (0..n)
                .map(|k| ((k as f32 + s) * 0.41).sin())
                .collect::<Vec<_>>()
        };
        let w = LayerWeights::new(
            CellKind::Gru,
            input,
            hidden,
            value(1.0, rows * input),
            value(2.0, rows * hidden),
            Some(value(3.0, rows)),
            Some(value(4.0, rows)),
        )
        .unwrap();
        let layer = PackedLayer::new(&w, Cell::Gru(GruVariant::ResetAfter));
        let x = value(5.0, 4 * input);
        let mut projection = vec![f32x8::ZERO; 4 * layer.gates() * layer.panels()];
        project_rows(&layer, &x, &mut projection);
        let flat: &[f32] = wide::bytemuck::cast_slice(&projection);
        for r in 0..4 {
            for g in 0..3 {
                for unit in 0..hidden {
                    let (p, u) = (unit / 8, unit % 8);
                    let got = flat[r * 3 * layer.panels() * 8 + (p * 3 + g) * 8 + u];
                    let mut want = f64::from(w.b_ih_at(g, unit))
                        + if g < 2 {
                            f64::from(w.b_hh_at(g, unit))
                        } else {
                            0.0
                        };
                    for k in 0..input {
                        want += f64::from(w.w_ih_row(g, unit)[k]) * f64::from(x[r * input + k]);
                    }
                    assert!(
                        (f64::from(got) - want).abs() < 1e-5,
                        "row {r} gate {g} unit {unit}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
