//! The microkernel in 16-lane AVX-512 registers, over pairs of panels
//! ([`PanelLayout::Pairs`](crate::packing::PanelLayout::Pairs)): one register holds a gate of
//! 16 units, two 8-unit panels side by side.
//!
//! Each lane does exactly what it does in the 8-lane kernel: the same FMAs in the same order
//! (increasing k, one per k, summed in blocks of [`sum_block`] for the projection), from the
//! same starting values. Only the register width changes, so the results are bitwise those of
//! [`accumulate_tile`](super::accumulate_tile) and
//! [`accumulate_tile_blocked`](super::accumulate_tile_blocked) in a build with FMA (without
//! target flags, the 8-lane kernel's `mul_add` is an unfused multiply and add).
//!
//! With 32 registers, a tile of 8 rows × 3 gates keeps 24 accumulators: on the Intel Xeon this
//! was written on (two 512-bit FMA units per core), a scratch loop of such tiles over
//! `W_hh`-sized panels ran at 176–189 GFLOP/s on one thread at H = 256 and 512, where the
//! 8-lane 4 × 3 tile ran at 73–80 and 256-bit FMA chains peak at 131.

use std::arch::x86_64::{
    __m256, __m512, _MM_HINT_T1, _mm_prefetch, _mm256_castpd_ps, _mm256_castps_pd, _mm512_add_ps,
    _mm512_castpd_ps, _mm512_castpd256_pd512, _mm512_castps_pd, _mm512_castps512_ps256,
    _mm512_extractf64x4_pd, _mm512_fmadd_ps, _mm512_insertf64x4, _mm512_loadu_ps, _mm512_set1_ps,
    _mm512_setzero_ps,
};

use std::ops::Range;

use wide::f32x8;

use super::{InputRows, TileInputs, cut_rows, panel_spans, sum_block};

/// A register of 16 lanes: panel `2q`'s vector in the low half, `2q + 1`'s in the high half.
pub type PairVector = __m512;

/// `[low, high]` as one register.
///
/// # Safety
/// As [`accumulate_pair_tile`].
#[inline(always)]
pub unsafe fn join(low: f32x8, high: f32x8) -> PairVector {
    let (low, high): (__m256, __m256) = (wide::bytemuck::cast(low), wide::bytemuck::cast(high));
    // SAFETY: the caller's CPU supports AVX-512F.
    unsafe {
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(low)),
            _mm256_castps_pd(high),
        ))
    }
}

/// The two halves of `v`, low first.
///
/// # Safety
/// As [`accumulate_pair_tile`].
#[inline(always)]
pub unsafe fn split(v: PairVector) -> [f32x8; 2] {
    // SAFETY: the caller's CPU supports AVX-512F.
    let (low, high) = unsafe {
        (
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
        )
    };
    [wide::bytemuck::cast(low), wide::bytemuck::cast(high)]
}

/// A zeroed register.
///
/// # Safety
/// As [`accumulate_pair_tile`].
#[inline(always)]
pub unsafe fn zero() -> PairVector {
    // SAFETY: the caller's CPU supports AVX-512F.
    unsafe { _mm512_setzero_ps() }
}

/// Lines to bring into L2 while a tile runs, one per k from the first: the next column's
/// weights, so that its first row block does not wait for them from memory.
#[derive(Clone, Copy, Debug)]
pub struct PrefetchLines {
    /// The first line. Any address: a prefetch does not fault.
    pub from: *const i8,
    /// How many lines, at most the tile's `k_len`.
    pub count: usize,
}

impl PrefetchLines {
    /// None.
    pub const NONE: Self = Self {
        from: std::ptr::null(),
        count: 0,
    };
}

/// Returns `acc` with `acc[m][j][g] += Σ_k inputs[m][k] · w(j, k, g)` for `k < k_len`, where
/// `w(j, k, g)` is the 16 lanes of `weights[pair_starts[j] + k·k_stride + 2g ..][..2]`.
///
/// # Safety
/// The CPU must support AVX-512F, and the caller must be compiled with it
/// (`#[target_feature(enable = "avx512f")]`). These functions are not themselves: a function
/// with a target feature cannot be `#[inline(always)]`, and left to itself the compiler called
/// this one out of line, with its 24 accumulators passed through memory (a quarter of the time
/// of B = 64 on one thread in `perf`).
///
/// # Panics
/// If the input rows are shorter than `k_len` or a pair runs past the end of `weights`.
#[inline(always)]
pub unsafe fn accumulate_pair_tile<const G: usize, const MR: usize, const NP: usize>(
    acc: [[[PairVector; G]; NP]; MR],
    inputs: InputRows<'_, MR>,
    weights: &[f32x8],
    pair_starts: [usize; NP],
    k_stride: usize,
    k_len: usize,
    prefetch: PrefetchLines,
) -> [[[PairVector; G]; NP]; MR] {
    // Through memory, as in the 8-lane kernel (see `accumulate_tile`).
    let rows = cut_rows(std::hint::black_box(inputs.first(k_len)), k_len);
    if k_len == 0 {
        return acc;
    }
    let pairs = panel_spans(weights, pair_starts, k_stride, k_len, 2 * G);
    // SAFETY: the caller's contract; every row was cut to k_len, and every pair spans k_len
    // k rows.
    unsafe { accumulate_pair_range(acc, rows, &pairs, k_stride, 0..k_len, prefetch) }
}

/// [`accumulate_pair_tile`] summed in blocks of [`sum_block`]`(k_len)` inputs, each from
/// zero, then added to `acc`, as [`accumulate_tile_blocked`](super::accumulate_tile_blocked) does.
///
/// # Safety
/// As [`accumulate_pair_tile`].
///
/// # Panics
/// As [`accumulate_pair_tile`].
#[inline(always)]
pub unsafe fn accumulate_pair_tile_blocked<const G: usize, const MR: usize, const NP: usize>(
    mut acc: [[[PairVector; G]; NP]; MR],
    inputs: InputRows<'_, MR>,
    weights: &[f32x8],
    pair_starts: [usize; NP],
    k_stride: usize,
    k_len: usize,
    prefetch: PrefetchLines,
) -> [[[PairVector; G]; NP]; MR] {
    assert!(k_len <= inputs.len(), "{k_len} inputs of {}", inputs.len());
    if k_len == 0 {
        return acc;
    }
    // As in the 8-lane kernel (see `accumulate_tile_blocked`): checked once per tile.
    let pairs = panel_spans(weights, pair_starts, k_stride, k_len, 2 * G);
    let block = sum_block(k_len);
    let mut k0 = 0;
    while k0 < k_len {
        let end = k_len.min(k0 + block);
        // SAFETY: the caller's CPU supports AVX-512F, and it inlines this; k0..end is within
        // k_len, which the inputs hold (asserted above) and the pairs span (`panel_spans`).
        let sums = unsafe {
            accumulate_pair_range::<G, MR, NP>(
                [[[zero(); G]; NP]; MR],
                inputs,
                &pairs,
                k_stride,
                k0..end,
                prefetch,
            )
        };
        for m in 0..MR {
            for j in 0..NP {
                for g in 0..G {
                    // SAFETY: as above.
                    acc[m][j][g] = unsafe { _mm512_add_ps(acc[m][j][g], sums[m][j][g]) };
                }
            }
        }
        k0 = end;
    }
    acc
}

/// `acc` plus the products of `ks`, one FMA per k in increasing k.
///
/// # Safety
/// As [`accumulate_pair_tile`], and `ks.end` must be at most the rows' length and the `k_len`
/// the pairs were cut for ([`panel_spans`] of `2·G` vectors per k).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn accumulate_pair_range<const G: usize, const MR: usize, const NP: usize>(
    mut acc: [[[PairVector; G]; NP]; MR],
    inputs: impl TileInputs<MR>,
    pairs: &[&[f32x8]; NP],
    k_stride: usize,
    ks: Range<usize>,
    prefetch: PrefetchLines,
) -> [[[PairVector; G]; NP]; MR] {
    for k in ks {
        if k < prefetch.count {
            // SAFETY: a prefetch reads nothing and cannot fault, whatever the address (the
            // pointer is only offset with wrapping arithmetic); SSE is part of x86-64.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(prefetch.from.wrapping_add(k * 64)) };
        }
        let offset = k * k_stride;
        for j in 0..NP {
            // SAFETY: the caller's CPU supports AVX-512F (for every intrinsic below).
            let mut w = [unsafe { zero() }; G];
            for g in 0..G {
                // SAFETY: k < k_len, the length the pair was cut for, and g < G, so the two
                // vectors at offset + 2g end within the pair (see `panel_spans`).
                w[g] = unsafe { _mm512_loadu_ps(pairs[j].as_ptr().add(offset + 2 * g).cast()) };
            }
            for m in 0..MR {
                // SAFETY: m < MR and k < the rows' length (the caller's contract).
                let x = unsafe { _mm512_set1_ps(inputs.at(m, k)) };
                for g in 0..G {
                    // SAFETY: the caller's CPU supports AVX-512F.
                    acc[m][j][g] = unsafe { _mm512_fmadd_ps(x, w[g], acc[m][j][g]) };
                }
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every lane must compute: from `start`, one `f32::mul_add` per k in increasing k;
    /// in blocks of [`sum_block`] from zero, each then added, when `blocked`.
    fn scalar_lane(
        start: f32,
        inputs: &[f32],
        weights: impl Fn(usize) -> f32,
        blocked: bool,
    ) -> f32 {
        if !blocked {
            return (0..inputs.len()).fold(start, |acc, k| inputs[k].mul_add(weights(k), acc));
        }
        let block = sum_block(inputs.len());
        (0..inputs.len()).step_by(block).fold(start, |acc, k0| {
            let end = (k0 + block).min(inputs.len());
            acc + (k0..end).fold(0.0, |block, k| inputs[k].mul_add(weights(k), block))
        })
    }

    /// Both kernels on one shape, from nonzero starting values.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)]
    unsafe fn check<const G: usize, const MR: usize, const NP: usize>(k_len: usize) {
        let k_stride = 2 * G + 2; // wider than a pair's k row, to catch a stride mix-up
        let lane_value = |i: usize| match i % 97 {
            // Special values in a few lanes: ±0, ±inf and NaN must go through as FMAs say.
            3 => 0.0,
            5 => -0.0,
            7 if k_len > 20 => f32::INFINITY,
            11 if k_len > 30 => f32::NEG_INFINITY,
            13 if k_len > 40 => f32::NAN,
            _ => (i as f32 * 0.37).sin(),
        };
        let weights: Vec<f32x8> = (0..(NP + 1) * (k_len.max(1) * k_stride + 2 * G))
            .map(|i| f32x8::from(std::array::from_fn(|u| lane_value(i * 8 + u))))
            .collect();
        // Rows longer than k_len, at a stride longer still.
        let (row_len, row_stride) = (k_len + 3, k_len + 5);
        let x: Vec<f32> = (0..MR * row_stride)
            .map(|i| ((i / row_stride * 31 + i % row_stride) as f32 * 0.11).cos())
            .collect();
        let rows = InputRows::<MR>::new(&x, row_stride, row_len);
        let starts: [usize; NP] = std::array::from_fn(|j| j * (k_len.max(1) * k_stride + 2 * G));
        let start_value =
            |m: usize, j: usize, g: usize, lane: usize| (m + j + g + lane) as f32 * 0.5;
        // SAFETY: this function runs with AVX-512F (its caller's contract).
        let mut init = [[[unsafe { zero() }; G]; NP]; MR];
        for (m, row) in init.iter_mut().enumerate() {
            for (j, pair) in row.iter_mut().enumerate() {
                for (g, v) in pair.iter_mut().enumerate() {
                    let half = |h: usize| {
                        f32x8::from(std::array::from_fn(|u| start_value(m, j, g, 8 * h + u)))
                    };
                    // SAFETY: as above.
                    *v = unsafe { join(half(0), half(1)) };
                }
            }
        }
        for blocked in [false, true] {
            // SAFETY: as above; the accumulation is inlined into this function.
            let acc = unsafe {
                if blocked {
                    accumulate_pair_tile_blocked::<G, MR, NP>(
                        init,
                        rows,
                        &weights,
                        starts,
                        k_stride,
                        k_len,
                        PrefetchLines::NONE,
                    )
                } else {
                    accumulate_pair_tile::<G, MR, NP>(
                        init,
                        rows,
                        &weights,
                        starts,
                        k_stride,
                        k_len,
                        PrefetchLines::NONE,
                    )
                }
            };
            for m in 0..MR {
                for j in 0..NP {
                    for g in 0..G {
                        // SAFETY: as above.
                        let halves = unsafe { split(acc[m][j][g]) };
                        for lane in 0..16 {
                            let got = halves[lane / 8].to_array()[lane % 8];
                            let weight = |k: usize| {
                                let vector = starts[j] + k * k_stride + 2 * g + lane / 8;
                                weights[vector].to_array()[lane % 8]
                            };
                            let want = scalar_lane(
                                start_value(m, j, g, lane),
                                &rows.row(m)[..k_len],
                                weight,
                                blocked,
                            );
                            assert!(
                                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                                "blocked={blocked} G={G} MR={MR} NP={NP} k={k_len} row {m} pair {j} gate {g} lane {lane}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pair_tiles_match_scalar_fmas_bit_for_bit_for_every_shape() {
        if !crate::packing::PanelLayout::Pairs.is_supported() {
            println!("no AVX-512F on this CPU: nothing to check");
            return;
        }
        // 545: blocks of 32 (`sum_block`), the last of one input.
        for k_len in [0, 1, 2, 7, 15, 16, 17, 31, 32, 33, 47, 48, 49, 545] {
            // SAFETY: the CPU supports AVX-512F, checked above.
            unsafe {
                check::<3, 8, 1>(k_len);
                check::<3, 2, 2>(k_len);
                check::<3, 1, 4>(k_len);
                check::<3, 1, 1>(k_len);
                check::<4, 6, 1>(k_len);
                check::<4, 4, 1>(k_len);
                check::<4, 2, 2>(k_len);
                check::<4, 1, 3>(k_len);
                check::<4, 1, 1>(k_len);
                check::<2, 8, 1>(k_len);
                check::<2, 2, 3>(k_len);
                check::<2, 1, 6>(k_len);
                check::<1, 16, 1>(k_len);
                check::<1, 2, 4>(k_len);
                check::<1, 1, 8>(k_len);
            }
        }
    }
}
