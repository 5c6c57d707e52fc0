//! The SIMD kernels against the scalar reference over random configurations, bitwise
//! determinism across thread counts, and streaming against whole sequences.

mod common;

use std::sync::Mutex;

use common::{Values, on_workers, random_model, threads as available};
use gru_core::{Cell, GruVariant, Model, RecurrentKernel, SequenceInput, SequenceOutput};
use gru_ref::ReferenceKernel;
use gru_simd::SimdModel;
use gru_simd::packing::PanelLayout;
use proptest::prelude::*;

const CELLS: [Cell; 3] = [
    Cell::Gru(GruVariant::ResetAfter),
    Cell::Gru(GruVariant::ResetBefore),
    Cell::Lstm,
];

/// Worst scaled error seen by the property test, printed at the end of each run.
static WORST: Mutex<(f64, String)> = Mutex::new((0.0, String::new()));

/// `max_i |got_i − want_i| / max(1, |want_i|)`; NaN if NaN-ness differs.
fn scaled_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).fold(0.0f64, |worst, (&g, &w)| {
        if g.is_nan() != w.is_nan() {
            return f64::NAN;
        }
        if g.is_nan() {
            return worst;
        }
        let e = (f64::from(g) - f64::from(w)).abs() / f64::from(w).abs().max(1.0);
        worst.max(e)
    })
}

/// The scaled error of each tensor a call returns (`c_n` for an LSTM).
fn errors(simd: &SequenceOutput, reference: &SequenceOutput) -> Vec<(&'static str, f64)> {
    let mut errors = vec![
        ("output", scaled_error(&simd.output, &reference.output)),
        ("h_n", scaled_error(&simd.h_n, &reference.h_n)),
    ];
    if let (Some(a), Some(b)) = (&simd.c_n, &reference.c_n) {
        errors.push(("c_n", scaled_error(a, b)));
    }
    errors
}

/// Every value a call returns (output, `h_n`, `c_n`), as bits.
fn output_bits(out: &SequenceOutput) -> Vec<u32> {
    let all = out
        .output
        .iter()
        .chain(&out.h_n)
        .chain(out.c_n.iter().flatten());
    all.map(|v| v.to_bits()).collect()
}

#[derive(Debug, Clone)]
struct Case {
    cell: Cell,
    input: usize,
    hidden: usize,
    seq_len: usize,
    batch: usize,
    layers: usize,
    bidirectional: bool,
    bias: bool,
    with_h0: bool,
    with_lengths: bool,
    batch_first: bool,
    threads: usize,
    scale: f32,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            0usize..3,
            1usize..=150,
            1usize..=150,
            0usize..=40,
            1usize..=20,
            1usize..=3,
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (1usize..=4, 0.1f32..50.0, any::<u64>()),
    )
        .prop_map(
            |(
                (c, input, hidden, seq_len, batch, layers),
                (bidirectional, bias, with_h0, with_lengths, batch_first),
                (threads, scale, seed),
            )| Case {
                cell: CELLS[c],
                input,
                hidden,
                seq_len,
                batch,
                layers,
                bidirectional,
                bias,
                with_h0,
                with_lengths,
                batch_first,
                threads,
                scale,
                seed,
            },
        )
}

/// Runs a case through both kernels.
fn run(case: &Case) -> (SequenceOutput, SequenceOutput) {
    with_case_input(case, |model, input| {
        let mut simd = on_workers(model, case.threads);
        let mut reference = ReferenceKernel::new(model.clone());
        (
            simd.forward(input).unwrap(),
            reference.forward(input).unwrap(),
        )
    })
}

/// Calls `f` with a case's model and input.
fn with_case_input<R>(case: &Case, f: impl FnOnce(&Model, &SequenceInput) -> R) -> R {
    let model = random_model(
        case.cell,
        case.input,
        case.hidden,
        case.layers,
        case.bidirectional,
        case.bias,
        case.seed,
    );
    let mut values = Values::new(case.seed ^ 0xabcdef);
    let x = values.vec(case.seq_len * case.batch * case.input, case.scale);
    let states = model.config().num_states() * case.batch * case.hidden;
    let h0 = values.vec(states, 1.0);
    let c0 = values.vec(states, 2.0);
    let lengths: Vec<usize> = (0..case.batch)
        .map(|_| {
            ((values.next(1.0) + 1.0) * 0.5 * (case.seq_len + 1) as f32) as usize
                % (case.seq_len + 1)
        })
        .collect();
    let mut input = SequenceInput::new(&x, case.seq_len, case.batch).batch_first(case.batch_first);
    if case.with_h0 {
        input = input.h0(&h0);
        if case.cell == Cell::Lstm {
            input = input.c0(&c0);
        }
    }
    if case.with_lengths {
        input = input.lengths(&lengths);
    }
    f(&model, &input)
}

proptest! {
    // PROPTEST_CASES overrides the count (the valgrind run uses a few).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(if cfg!(debug_assertions) { 12 } else { 96 }),
        ..ProptestConfig::default()
    })]

    #[test]
    fn simd_agrees_with_reference(case in case()) {
        let (simd, reference) = run(&case);
        for (name, error) in errors(&simd, &reference) {
            {
                let mut worst = WORST.lock().unwrap();
                if error > worst.0 {
                    *worst = (error, format!("{name} in {case:?}"));
                }
                println!("worst scaled error so far: {:e} ({})", worst.0, worst.1);
            }
            prop_assert!(error <= 2e-5, "{name}: scaled error {error:e} > 2e-5");
        }
    }

    /// The 16-lane tiles (weights in pairs of panels, AVX-512) and the 8-lane ones give the
    /// same bits: each lane does the same FMAs in the same order. Where the CPU has no
    /// AVX-512F (and under valgrind, which hides it), only the 8-lane tiles run, and this
    /// checks nothing; nor in a build without FMA (no target flags), whose 8-lane tiles
    /// multiply and add unfused.
    #[test]
    fn both_panel_layouts_give_bitwise_the_same_results(case in case()) {
        if !PanelLayout::Pairs.is_supported() || !cfg!(target_feature = "fma") {
            return Ok(());
        }
        let [eight, sixteen] = [PanelLayout::Contiguous, PanelLayout::Pairs].map(|layout| {
            with_case_input(&case, |model, input| {
                let threads = common::threads(case.threads);
                let mut simd = SimdModel::with_layout(model, threads, layout).unwrap();
                simd.set_alone_below_step_flops(0);
                assert_eq!(simd.layout(), layout);
                output_bits(&simd.forward(input).unwrap())
            })
        });
        prop_assert!(eight == sixteen, "8 and 16 lanes differ: {case:?}");
    }

    /// `forward_into` buffers left by a call of another shape and model, every value dirtied
    /// (NaN), give bitwise what `forward` gives into fresh zeroed buffers: the padding rows
    /// are zeroed, every other value is written.
    #[test]
    fn forward_into_reused_dirty_buffers_gives_what_forward_gives(
        case in case(),
        earlier in case(),
    ) {
        let mut out = with_case_input(&earlier, |model, input| {
            on_workers(model, earlier.threads).forward(input).unwrap()
        });
        let dirty = |out: &mut SequenceOutput| {
            out.output.fill(f32::NAN);
            out.h_n.fill(f32::NAN);
            if let Some(c) = out.c_n.as_mut() {
                c.fill(f32::NAN);
            }
        };
        with_case_input(&case, |model, input| {
            let mut simd = on_workers(model, case.threads);
            let fresh_out = simd.forward(input).unwrap();
            let fresh = output_bits(&fresh_out);
            for call in 0..2 {
                dirty(&mut out);
                simd.forward_into(input, &mut out).unwrap();
                prop_assert!(output_bits(&out) == fresh, "call {call}: {case:?}");
                let width = out.output_size;
                for b in 0..input.batch {
                    for t in input.valid_len(b)..input.seq_len {
                        let row = &out.output[input.layout().row(t, b) * width..][..width];
                        prop_assert!(row.iter().all(|v| v.to_bits() == 0), "t {t}, b {b}");
                    }
                }
                prop_assert_eq!(out.output_shape(), fresh_out.output_shape());
                prop_assert_eq!(out.state_shape(), fresh_out.state_shape());
            }
            Ok(())
        })?;
    }
}

#[test]
fn reference_forward_into_reused_dirty_buffers_gives_what_forward_gives() {
    for (k, &cell) in CELLS.iter().enumerate() {
        let model = random_model(cell, 5, 7, 2, true, true, 80 + k as u64);
        let mut reference = ReferenceKernel::new(model);
        let mut values = Values::new(81);
        let mut out = SequenceOutput::empty();
        for (t, b) in [(6, 3), (4, 2), (6, 3)] {
            let x = values.vec(t * b * 5, 2.0);
            let lengths: Vec<usize> = (0..b).map(|i| (i * 3) % (t + 1)).collect();
            let input = SequenceInput::new(&x, t, b).lengths(&lengths);
            let fresh = output_bits(&reference.forward(&input).unwrap());
            out.output.fill(f32::NAN);
            out.h_n.fill(f32::NAN);
            reference.forward_into(&input, &mut out).unwrap();
            assert!(output_bits(&out) == fresh, "{cell:?} T={t} B={b}");
        }
    }
}

#[test]
fn large_batches_with_large_weights_agree_split_by_panels() {
    // I = H = 840: every cell's packed weights exceed 16 MiB, so B = 8 on 2 workers (or 3) is
    // split by panels; smaller layers at this batch split by rows. Ragged lengths and h0.
    let (input, hidden, t, b) = (840, 840, 2, 8);
    for (k, &cell) in CELLS.iter().enumerate() {
        let model = random_model(cell, input, hidden, 1, false, true, 840 + k as u64);
        let mut values = Values::new(841);
        let x = values.vec(t * b * input, 3.0);
        let h0 = values.vec(b * hidden, 1.0);
        let lengths: Vec<usize> = (0..b).map(|i| i % (t + 1)).collect();
        let sequence = SequenceInput::new(&x, t, b).lengths(&lengths).h0(&h0);
        let reference = ReferenceKernel::new(model.clone())
            .forward(&sequence)
            .unwrap();
        let one = SimdModel::new(&model).unwrap().forward(&sequence).unwrap();
        let errors = errors(&one, &reference);
        assert!(
            errors.iter().all(|(_, e)| *e <= 2e-5),
            "{cell:?}: {errors:?}"
        );
        for threads in [2, 3] {
            let split = on_workers(&model, threads).forward(&sequence).unwrap();
            assert!(
                output_bits(&split) == output_bits(&one),
                "{cell:?} threads {threads}"
            );
        }
    }
}

#[test]
fn results_are_bitwise_identical_for_every_thread_count() {
    for (k, &cell) in CELLS.iter().enumerate() {
        // Batches that split by panels (1, 3) and by rows (12, 13), uneven panel counts.
        for (batch, hidden) in [(1, 37), (3, 64), (12, 45), (13, 129)] {
            let model = random_model(cell, 19, hidden, 2, true, true, 7 + k as u64);
            let mut values = Values::new(99);
            let (t, b) = (9, batch);
            let x = values.vec(t * b * 19, 3.0);
            let lengths: Vec<usize> = (0..b).map(|i| (i * 5) % (t + 1)).collect();
            let input = SequenceInput::new(&x, t, b).lengths(&lengths);
            let outputs: Vec<SequenceOutput> = (1..=3)
                .map(|threads| on_workers(&model, threads).forward(&input).unwrap())
                .collect();
            for other in &outputs[1..] {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&outputs[0].output),
                    bits(&other.output),
                    "{cell:?} B={b} H={hidden}"
                );
                assert_eq!(
                    bits(&outputs[0].h_n),
                    bits(&other.h_n),
                    "{cell:?} B={b} H={hidden}"
                );
            }
        }
    }
}

#[test]
fn work_that_moves_between_workers_keeps_its_results() {
    // Work is split anew by how fast each worker went: a large batch's rows between chunks of
    // steps (B = 64 here: 16–21 steps per chunk), a small batch's panels every eight steps
    // (B = 1, 3). So rows and panels change workers mid-sequence whenever the workers'
    // timings differ. Ragged lengths, so that rows end while others go on. Every thread count
    // must give the one-thread bits.
    for (k, &cell) in CELLS.iter().enumerate() {
        let model = random_model(cell, 19, 64, 1, false, true, 60 + k as u64);
        for b in [1, 3, 64] {
            let mut values = Values::new(61);
            let t = 60;
            let x = values.vec(t * b * 19, 3.0);
            let lengths: Vec<usize> = (0..b).map(|i| t - (i * 7) % 40).collect();
            let input = SequenceInput::new(&x, t, b).lengths(&lengths);
            let one = output_bits(&SimdModel::new(&model).unwrap().forward(&input).unwrap());
            for threads in [2, 3] {
                let mut simd = on_workers(&model, threads);
                for call in 0..2 {
                    let out = simd.forward(&input).unwrap();
                    assert!(
                        output_bits(&out) == one,
                        "{cell:?} B={b} threads {threads} call {call}"
                    );
                }
            }
        }
    }
}

#[test]
fn short_calls_that_carry_the_split_keep_their_results() {
    // Calls of three steps: the split each call ends with is where the next starts, and a
    // small batch's panels are split anew every eight steps counted over calls, so splits
    // change between and inside calls. Every call must give the one-thread bits.
    for (k, &cell) in CELLS.iter().enumerate() {
        let model = random_model(cell, 19, 64, 1, true, true, 70 + k as u64);
        for b in [1, 64] {
            let mut one = SimdModel::new(&model).unwrap();
            let mut two = on_workers(&model, 2);
            let mut values = Values::new(71);
            // Five calls: 15 steps, past the first rebalance of the panels (after step 8).
            for call in 0..5 {
                let t = 3;
                let x = values.vec(t * b * 19, 3.0);
                let input = SequenceInput::new(&x, t, b);
                let (a, c) = (one.forward(&input).unwrap(), two.forward(&input).unwrap());
                assert!(
                    output_bits(&a) == output_bits(&c),
                    "{cell:?} B={b} call {call}"
                );
            }
        }
    }
}

#[test]
fn calls_after_the_threads_change_keep_their_results() {
    // The split carried from the last call has one part per worker: after `set_threads` it
    // must not be reused. (It was: 3 → 2 and 2 → 1 threads silently left the parts of the
    // missing workers unrun, 2 → 3 panicked.) Panels split (B = 1) and rows (B = 16).
    if available(3) < 3 {
        return;
    }
    for (k, &cell) in CELLS.iter().enumerate() {
        let model = random_model(cell, 19, 40, 1, false, true, 80 + k as u64);
        for b in [1, 16] {
            let mut values = Values::new(81);
            let t = 10;
            let x = values.vec(t * b * 19, 3.0);
            let input = SequenceInput::new(&x, t, b);
            let one = output_bits(&SimdModel::new(&model).unwrap().forward(&input).unwrap());
            let mut simd = on_workers(&model, 2);
            for threads in [2, 3, 2, 1, 2] {
                simd.set_threads(threads).unwrap();
                let out = simd.forward(&input).unwrap();
                assert!(output_bits(&out) == one, "{cell:?} B={b} threads {threads}");
            }
        }
    }
}

#[test]
fn streaming_matches_the_sequence_forward() {
    for (k, &cell) in CELLS.iter().enumerate() {
        for threads in [1, 2] {
            // Nine panels: several panel groups per worker, so that the streaming step's
            // alternating group order runs both ways.
            let (input_size, hidden, t, b) = (7, 70, 12, 3);
            let model = random_model(cell, input_size, hidden, 2, false, true, 40 + k as u64);
            let mut values = Values::new(5);
            let x = values.vec(t * b * input_size, 2.0);
            let h0 = values.vec(2 * b * hidden, 1.0);
            let c0 = values.vec(2 * b * hidden, 1.0);
            let mut input = SequenceInput::new(&x, t, b).h0(&h0);
            if cell == Cell::Lstm {
                input = input.c0(&c0);
            }
            let mut simd = on_workers(&model, threads);
            let whole = ReferenceKernel::new(model).forward(&input).unwrap();
            // The same tiles and the same summation order one step at a time as over the
            // whole sequence: bit for bit the same outputs.
            let sequence = simd.forward(&input).unwrap();
            let mut stream = simd.stream(b).unwrap();
            stream
                .set_state(&h0, (cell == Cell::Lstm).then_some(c0.as_slice()))
                .unwrap();
            for step in 0..t {
                let h = stream
                    .step(&x[step * b * input_size..(step + 1) * b * input_size])
                    .unwrap();
                let rows = step * b * hidden..(step + 1) * b * hidden;
                assert!(
                    scaled_error(h, &whole.output[rows.clone()]) <= 2e-5,
                    "{cell:?} threads {threads} step {step}"
                );
                assert_eq!(
                    h, &sequence.output[rows],
                    "{cell:?} threads {threads} step {step}"
                );
            }
            let (h_n, c_n) = stream.state();
            assert!(scaled_error(&h_n, &whole.h_n) <= 2e-5);
            assert_eq!(h_n, sequence.h_n);
            if let (Some(a), Some(b)) = (c_n, &whole.c_n) {
                assert!(scaled_error(&a, b) <= 2e-5);
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors() {
    let model = random_model(Cell::Lstm, 3, 5, 1, true, true, 1);
    let simd = SimdModel::new(&model).unwrap();
    assert!(
        simd.stream(2).is_err(),
        "bidirectional models cannot stream"
    );
    for threads in [0, gru_simd::threading::MAX_THREADS + 1, usize::MAX] {
        let err = SimdModel::with_threads(&model, threads).unwrap_err();
        assert!(matches!(err, gru_core::Error::Config(_)), "{err}");
    }
    // Weights in pairs of panels on a CPU without AVX-512F (as under valgrind): an error, not
    // a panic later.
    match SimdModel::with_layout(&model, 1, PanelLayout::Pairs) {
        Ok(simd) => {
            assert!(PanelLayout::Pairs.is_supported());
            assert_eq!(simd.layout(), PanelLayout::Pairs);
        }
        Err(e) => {
            assert!(!PanelLayout::Pairs.is_supported());
            assert!(matches!(e, gru_core::Error::Unsupported(_)), "{e}");
        }
    }
    let model = random_model(Cell::Gru(GruVariant::ResetAfter), 3, 5, 2, false, true, 1);
    let mut simd = SimdModel::new(&model).unwrap();
    let err = simd.stream(usize::MAX / 2).unwrap_err();
    assert!(matches!(err, gru_core::Error::TooLarge { .. }), "{err}");
    let mut stream = simd.stream(2).unwrap();
    assert!(stream.step(&[0.0; 5]).is_err());
    assert!(stream.set_state(&[0.0; 3], None).is_err());
    assert!(stream.set_state(&[0.0; 20], Some(&[0.0; 20])).is_err());
    let err = simd
        .forward(&SequenceInput::new(&[0.0; 5], 1, 2))
        .unwrap_err();
    assert!(err.to_string().contains("input"), "{err}");
}

#[test]
fn edge_shapes_and_non_finite_inputs() {
    for &cell in &CELLS {
        let model = random_model(cell, 4, 9, 2, true, true, 3);
        let mut simd = SimdModel::new(&model).unwrap();
        let mut reference = ReferenceKernel::new(model);
        // T = 0: h_n = h0. B = 0: empty.
        let h0: Vec<f32> = (0..4 * 2 * 9).map(|v| v as f32 * 0.01).collect();
        let mut input = SequenceInput::new(&[], 0, 2).h0(&h0);
        if cell == Cell::Lstm {
            input = input.c0(&h0);
        }
        let out = simd.forward(&input).unwrap();
        assert_eq!(out.h_n, h0);
        assert!(
            simd.forward(&SequenceInput::new(&[], 3, 0))
                .unwrap()
                .output
                .is_empty()
        );
        // NaN and infinities propagate as in the reference.
        let mut x: Vec<f32> = (0..5 * 2 * 4).map(|v| (v as f32 * 0.3).sin()).collect();
        x[4] = f32::NAN;
        x[13] = f32::INFINITY;
        x[14] = f32::NEG_INFINITY;
        let input = SequenceInput::new(&x, 5, 2);
        let (a, b) = (
            simd.forward(&input).unwrap(),
            reference.forward(&input).unwrap(),
        );
        for (s, r) in a.output.iter().zip(&b.output) {
            assert_eq!(s.is_nan(), r.is_nan(), "{cell:?}");
        }
    }
}

#[test]
fn memory_does_not_grow_with_the_sequence() {
    // 20 000 and then 100 000 steps through one layer (a fifth and all of `GRU_LONG_STEPS`,
    // which the valgrind run lowers): the workspace is that of one chunk of steps either way (about 1 MiB
    // of projection), whatever the length.
    let long_steps: usize = std::env::var("GRU_LONG_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for &cell in &CELLS {
        let model = random_model(cell, 8, 16, 1, false, true, 21);
        let mut simd = on_workers(&model, 2);
        // Both lengths are longer than one chunk (5461 steps here).
        let short = Values::new(1).vec(long_steps / 5 * 8, 1.0);
        simd.forward(&SequenceInput::new(&short, long_steps / 5, 1))
            .unwrap();
        let after_short = simd.workspace_bytes();
        let long = Values::new(2).vec(long_steps * 8, 1.0);
        let out = simd
            .forward(&SequenceInput::new(&long, long_steps, 1))
            .unwrap();
        assert!(out.output.iter().all(|v| v.is_finite()));
        assert_eq!(simd.workspace_bytes(), after_short, "{cell:?}");
        assert!(after_short < 2 << 20, "{cell:?}: {after_short} bytes");
    }
}
