//! The 16-lane AVX-512 microkernel alone, one thread, beside the FMA peak it is measured
//! against, so that how close the tile's k loop comes to the peak is read off one run.
//!
//! - `fma_peak_512`: [`fma_chains`] with 512-bit FMAs, the peak `gru bench` reports;
//! - `gru_tile_8x3/k{128,1024}`: the GRU's recurrent tile, 8 rows × 1 pair × 3 gates of
//!   running sums (24 accumulators), over `k` steps of k: 128 (24 KiB of weights, in L1) and
//!   1024 (192 KiB, in L2). Each call runs the tile over 8 blocks of 8 rows, as a batch of 64
//!   does on one pair.
//! - `gru_projection_tile_8x3/k{128,1024}`: the same tile summed in blocks, as the input
//!   projection sums ([`sum_block`](gru_simd::microkernel::sum_block): 16 inputs at k = 128,
//!   32 at k = 1024).
//! - `lstm_tile_6x4/k{128,1024}` and `lstm_projection_tile_6x4/k{128,1024}`: the same for
//!   the LSTM's tiles, 6 rows × 1 pair × 4 gates (24 accumulators), with 32 and 256 KiB of
//!   weights; `lstm_tile_4x4` its short blocks of four rows.
//! - `reset_before_gates_tile_8x2`: the reset-before GRU's `[r, z]` tiles, 8 rows × 2 gates
//!   (the LSTM's until its four gates went into one pack: 0.90–0.99× the GRU tile's rate).
//!
//! Throughput is in FLOPs (`2·16·G·R·k` per tile of `G` gates and `R` rows), so that the
//! tiles compare directly. Nothing runs on a CPU without AVX-512F.

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use std::hint::black_box;

    use criterion::measurement::WallTime;
    use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group};
    use gru_simd::microkernel::InputRows;
    use gru_simd::microkernel::avx512::{
        PrefetchLines, accumulate_pair_tile, accumulate_pair_tile_blocked, zero,
    };
    use gru_simd::packing::PanelLayout;
    use gru_simd::simd_level::{FMA_CHAINS, fma_chains};
    use wide::f32x8;

    const BLOCKS: usize = 8;

    /// Every block's tile over `weights` (one pair, `k_len` rows of `2·GATES` vectors), in
    /// running sums or (`blocked`) in blocks as the projection sums, all accumulators
    /// handed to `black_box`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn tiles<const GATES: usize, const ROWS: usize>(
        weights: &[f32x8],
        inputs: &[f32],
        k_len: usize,
        blocked: bool,
    ) -> f32 {
        let mut sum = 0.0;
        for block in inputs.chunks_exact(ROWS * k_len) {
            let rows = InputRows::<ROWS>::new(block, k_len, k_len);
            // SAFETY: AVX-512F (the caller's contract); the weights hold `k_len` rows of a pair
            // and every input row `k_len` values.
            let acc = unsafe {
                let start = [[[zero(); GATES]; 1]; ROWS];
                let none = PrefetchLines::NONE;
                if blocked {
                    accumulate_pair_tile_blocked::<GATES, ROWS, 1>(
                        start,
                        rows,
                        weights,
                        [0],
                        2 * GATES,
                        k_len,
                        none,
                    )
                } else {
                    accumulate_pair_tile::<GATES, ROWS, 1>(
                        start,
                        rows,
                        weights,
                        [0],
                        2 * GATES,
                        k_len,
                        none,
                    )
                }
            };
            // Every accumulator used, or the compiler drops the products nobody reads.
            let acc = black_box(acc);
            // SAFETY: a `__m512` is 16 plain f32 lanes.
            let lanes: [f32; 16] = unsafe { std::mem::transmute(acc[ROWS - 1][0][GATES - 1]) };
            sum += lanes[0];
        }
        sum
    }

    fn microkernel(c: &mut Criterion) {
        if !PanelLayout::Pairs.is_supported() {
            eprintln!("no AVX-512F on this CPU: no 16-lane microkernel to measure");
            return;
        }
        let mut group = c.benchmark_group("microkernel_avx512");
        let rounds = 100_000u64;
        group.throughput(Throughput::Elements(rounds * FMA_CHAINS as u64 * 16 * 2));
        group.bench_function("fma_peak_512", |b| {
            b.iter(|| fma_chains(PanelLayout::Pairs, black_box(rounds)))
        });
        for k_len in [128, 1024] {
            // SAFETY: the CPU supports AVX-512F, checked above.
            unsafe {
                tile_benches::<3, 8>(&mut group, "gru", k_len);
                tile_benches::<4, 6>(&mut group, "lstm", k_len);
                tile_benches::<4, 4>(&mut group, "lstm", k_len);
                tile_benches::<2, 8>(&mut group, "reset_before_gates", k_len);
            }
        }
        group.finish();
    }

    /// `{cell}_tile_{ROWS}x{GATES}` and `{cell}_projection_tile_{ROWS}x{GATES}` over `k_len`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    unsafe fn tile_benches<const GATES: usize, const ROWS: usize>(
        group: &mut BenchmarkGroup<'_, WallTime>,
        cell: &str,
        k_len: usize,
    ) {
        let weights: Vec<f32x8> = (0..k_len * 2 * GATES)
            .map(|i| f32x8::splat((i % 13) as f32 * 1e-3))
            .collect();
        // ROWS · BLOCKS rows of k_len, one after the other.
        let inputs: Vec<f32> = (0..ROWS * BLOCKS * k_len)
            .map(|i| ((i / k_len + i % k_len) % 7) as f32 * 0.1)
            .collect();
        let flops = 2 * 16 * GATES * ROWS * BLOCKS * k_len;
        group.throughput(Throughput::Elements(flops as u64));
        for (kind, blocked) in [("tile", false), ("projection_tile", true)] {
            let name = format!("{cell}_{kind}_{ROWS}x{GATES}");
            group.bench_function(BenchmarkId::new(name, format!("k{k_len}")), |b| {
                // SAFETY: the CPU supports AVX-512F (the caller's contract).
                b.iter(|| unsafe {
                    tiles::<GATES, ROWS>(black_box(&weights), black_box(&inputs), k_len, blocked)
                })
            });
        }
    }

    criterion_group!(benches, microkernel);
}

#[cfg(target_arch = "x86_64")]
criterion::criterion_main!(x86_64::benches);

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("the 16-lane microkernel is x86-64 only");
}
