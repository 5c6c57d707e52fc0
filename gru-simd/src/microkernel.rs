//! The register-tiled product at the heart of every step: `MR` input rows times `NR` panels of
//! `G` interleaved gates, `MR·NR·G` accumulators of 8 lanes held in registers across the
//! whole k loop.
//!
//! `matrixmultiply` repacks its `B` operand on every call and has no prepacked-`B` entry point;
//! at batch 1 that copy costs as much as the product itself. The recurrent weights are packed
//! once ([`crate::packing`]) and streamed straight from the packed panels here.
//!
//! Every accumulator adds its products in increasing k, one FMA per k, whatever `MR` and `NR`
//! are: the result for a (row, unit) never depends on the tile it was computed in, so any split
//! of rows or panels over threads gives bitwise identical results.

use wide::f32x8;

/// Returns `acc` with `acc[m][j][g] += Σ_k inputs[m][k] · weights[panel_starts[j] +
/// k·k_stride + g]` for `k < k_len`.
///
/// # Panics
/// If an input row is shorter than `k_len` or a panel runs past the end of `weights`.
#[inline(always)]
pub fn accumulate_tile<const G: usize, const MR: usize, const NR: usize>(
    mut acc: [[[f32x8; G]; NR]; MR],
    inputs: [&[f32]; MR],
    weights: &[f32x8],
    panel_starts: [usize; NR],
    k_stride: usize,
    k_len: usize,
) -> [[[f32x8; G]; NR]; MR] {
    if k_len == 0 {
        return acc;
    }
    let inputs = inputs.map(|row| &row[..k_len]);
    // One slice per panel covering exactly its k_len strided rows, so the loop below indexes
    // within bounds the compiler can see.
    let span = (k_len - 1) * k_stride + G;
    let panels = panel_starts.map(|start| &weights[start..start + span]);
    // `k` walks the inputs one float at a time and the weights `k_stride` vectors at a time.
    #[allow(clippy::needless_range_loop)]
    for k in 0..k_len {
        let offset = k * k_stride;
        for j in 0..NR {
            let w: [f32x8; G] = std::array::from_fn(|g| panels[j][offset + g]);
            for m in 0..MR {
                let x = f32x8::splat(inputs[m][k]);
                for g in 0..G {
                    acc[m][j][g] = x.mul_add(w[g], acc[m][j][g]);
                }
            }
        }
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

    fn check<const G: usize, const MR: usize, const NR: usize>(k_len: usize) {
        let k_stride = G + 1; // a stride wider than the panel, as in the k-major W_ih
        let panels = NR + 1;
        let weights: Vec<f32x8> = (0..panels * k_len.max(1) * k_stride + G)
            .map(|i| f32x8::from(std::array::from_fn(|u| ((i * 8 + u) as f32 * 0.37).sin())))
            .collect();
        let inputs: Vec<Vec<f32>> = (0..MR)
            .map(|m| {
                (0..k_len + 3)
                    .map(|k| ((m * 31 + k) as f32 * 0.11).cos())
                    .collect()
            })
            .collect();
        let starts: [usize; NR] = std::array::from_fn(|j| (j + 1) * k_len.max(1) * k_stride / 2);
        let acc = accumulate_tile::<G, MR, NR>(
            [[[f32x8::ZERO; G]; NR]; MR],
            std::array::from_fn(|m| inputs[m].as_slice()),
            &weights,
            starts,
            k_stride,
            k_len,
        );
        let want = reference(&inputs, &weights, &starts, k_stride, G, k_len);
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
                "G={G} MR={MR} NR={NR} k={k_len} [{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn tiles_match_a_plain_loop_for_every_shape() {
        for k_len in [0, 1, 2, 7, 8, 9, 33] {
            check::<3, 4, 1>(k_len);
            check::<3, 1, 4>(k_len);
            check::<3, 1, 1>(k_len);
            check::<4, 3, 1>(k_len);
            check::<4, 1, 3>(k_len);
            check::<2, 4, 1>(k_len);
            check::<2, 1, 6>(k_len);
            check::<1, 4, 1>(k_len);
            check::<1, 1, 8>(k_len);
        }
    }

    #[test]
    fn tile_shape_does_not_change_the_result() {
        // Row 0, panel 0 computed alone and inside larger tiles: bit for bit the same.
        let k_len = 29;
        let weights: Vec<f32x8> = (0..4 * k_len * 3)
            .map(|i| f32x8::splat((i as f32 * 0.7).sin()))
            .collect();
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|m| (0..k_len).map(|k| ((m + k) as f32 * 0.3).cos()).collect())
            .collect();
        let r = |m: usize| rows[m].as_slice();
        let alone =
            accumulate_tile::<3, 1, 1>([[[f32x8::ZERO; 3]; 1]; 1], [r(0)], &weights, [0], 3, k_len);
        let tall = accumulate_tile::<3, 4, 1>(
            [[[f32x8::ZERO; 3]; 1]; 4],
            [r(0), r(1), r(2), r(3)],
            &weights,
            [0],
            3,
            k_len,
        );
        let wide_tile = accumulate_tile::<3, 1, 4>(
            [[[f32x8::ZERO; 3]; 4]; 1],
            [r(0)],
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
}
