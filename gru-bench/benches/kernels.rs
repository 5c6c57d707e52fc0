//! The kernels over the shapes of the performance report: whole sequences (throughput in
//! sequence-steps, B·T per call) and single streaming steps. Ids name the shape and threads:
//! `B64_T100_I256_H256_thr2` is batch 64, 100 steps, input and hidden 256, on 2 threads.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gru_bench::commands::bench::{Mode, Shape, default_shapes, synthetic};
use gru_core::{Cell, GruVariant, RecurrentKernel, SequenceInput};
use gru_ref::ReferenceKernel;
use gru_simd::SimdModel;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One thread, and every core when there are more: on a one-core machine the two would be the
/// same benchmark, whose repeated id criterion rejects.
fn thread_counts() -> Vec<usize> {
    let mut counts = vec![1, threads()];
    counts.dedup();
    counts
}

fn id(shape: Shape, threads: usize) -> String {
    format!(
        "B{}_T{}_I{}_H{}_thr{threads}",
        shape.batch, shape.seq_len, shape.input, shape.hidden
    )
}

fn sequences(c: &mut Criterion, group_name: &str, cell: Cell, reference: bool) {
    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for shape in default_shapes(Mode::Seq) {
        // The reference only where a call takes well under a second.
        if reference && (shape.batch > 1 || shape.hidden > 256) {
            continue;
        }
        let (model, x) = synthetic(cell, shape);
        let input = SequenceInput::new(&x, shape.seq_len, shape.batch);
        let threads = if reference { 1 } else { threads() };
        group.throughput(Throughput::Elements((shape.batch * shape.seq_len) as u64));
        let mut kernel: Box<dyn RecurrentKernel> = if reference {
            Box::new(ReferenceKernel::new(model))
        } else {
            Box::new(SimdModel::with_threads(&model, threads).expect("threads"))
        };
        group.bench_function(BenchmarkId::from_parameter(id(shape, threads)), |b| {
            b.iter(|| black_box(kernel.forward(&input).expect("valid input")))
        });
    }
    group.finish();
}

fn gru_simd_reset_after(c: &mut Criterion) {
    sequences(
        c,
        "gru_simd/reset_after",
        Cell::Gru(GruVariant::ResetAfter),
        false,
    );
}

fn gru_simd_reset_before(c: &mut Criterion) {
    sequences(
        c,
        "gru_simd/reset_before",
        Cell::Gru(GruVariant::ResetBefore),
        false,
    );
}

fn lstm_simd(c: &mut Criterion) {
    sequences(c, "lstm_simd", Cell::Lstm, false);
}

fn gru_ref(c: &mut Criterion) {
    sequences(c, "gru_ref", Cell::Gru(GruVariant::ResetAfter), true);
}

/// One timestep per iteration with the state carried (`Stream::step`), B = 1.
fn streaming_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("step_simd");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for cell in [Cell::Gru(GruVariant::ResetAfter), Cell::Lstm] {
        for hidden in [256, 512] {
            for threads in thread_counts() {
                let shape = Shape {
                    batch: 1,
                    seq_len: 1,
                    input: hidden,
                    hidden,
                };
                let (model, x) = synthetic(cell, shape);
                let simd = SimdModel::with_threads(&model, threads).expect("threads");
                let mut stream = simd.stream(1).expect("unidirectional");
                let name = if cell == Cell::Lstm { "lstm" } else { "gru" };
                group.throughput(Throughput::Elements(1));
                group.bench_function(BenchmarkId::new(name, id(shape, threads)), |b| {
                    b.iter(|| black_box(stream.step(&x).expect("valid input")[0]))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    gru_simd_reset_after,
    gru_simd_reset_before,
    lstm_simd,
    gru_ref,
    streaming_step
);
criterion_main!(benches);
