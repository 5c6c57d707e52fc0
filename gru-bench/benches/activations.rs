//! Vectorized sigmoid and tanh against the scalar standard-library functions, on 4096-element
//! slices (throughput in elements). Each iteration restores the input first, in both variants.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gru_simd::activation::{sigmoid_slice, tanh_slice};

const LEN: usize = 4096;

fn input() -> Vec<f32> {
    (0..LEN).map(|k| ((k as f32) * 0.618).sin() * 8.0).collect()
}

fn activations(c: &mut Criterion) {
    let input = input();
    let mut buf = input.clone();
    let mut group = c.benchmark_group("activation_4096");
    group.throughput(Throughput::Elements(LEN as u64));
    group.bench_function("sigmoid_simd", |b| {
        b.iter(|| {
            buf.copy_from_slice(&input);
            sigmoid_slice(black_box(&mut buf));
        })
    });
    group.bench_function("sigmoid_scalar_std", |b| {
        b.iter(|| {
            buf.copy_from_slice(&input);
            for x in black_box(&mut buf).iter_mut() {
                *x = 1.0 / (1.0 + (-*x).exp());
            }
        })
    });
    group.bench_function("tanh_simd", |b| {
        b.iter(|| {
            buf.copy_from_slice(&input);
            tanh_slice(black_box(&mut buf));
        })
    });
    group.bench_function("tanh_scalar_std", |b| {
        b.iter(|| {
            buf.copy_from_slice(&input);
            for x in black_box(&mut buf).iter_mut() {
                *x = x.tanh();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, activations);
criterion_main!(benches);
