//! Edge cases of the reference: empty time and batch, zero lengths, non-finite data, and
//! properties that follow from the equations.

use gru_core::{Cell, CellKind, GruVariant, LayerWeights, Model, RecurrentKernel, SequenceInput};
use gru_ref::ReferenceKernel;
use proptest::prelude::*;

fn weights(kind: CellKind, input: usize, hidden: usize, seed: u32) -> LayerWeights {
    let rows = kind.gate_count() * hidden;
    // A small deterministic generator: values in [-0.5, 0.5).
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state as f32 / u32::MAX as f32) - 0.5
    };
    let mut values = |n: usize| (0..n).map(|_| next()).collect::<Vec<f32>>();
    LayerWeights::new(
        kind,
        input,
        hidden,
        values(rows * input),
        values(rows * hidden),
        Some(values(rows)),
        Some(values(rows)),
    )
    .unwrap()
}

fn model(cell: Cell, input: usize, hidden: usize, layers: usize, bidir: bool) -> Model {
    let d = if bidir { 2 } else { 1 };
    let all = (0..layers * d)
        .map(|k| {
            weights(
                cell.kind(),
                if k < d { input } else { d * hidden },
                hidden,
                k as u32 + 1,
            )
        })
        .collect();
    Model::new(cell, bidir, all).unwrap()
}

const CELLS: [Cell; 3] = [
    Cell::Gru(GruVariant::ResetAfter),
    Cell::Gru(GruVariant::ResetBefore),
    Cell::Lstm,
];

#[test]
fn empty_time_returns_initial_state() {
    for cell in CELLS {
        let mut k = ReferenceKernel::new(model(cell, 3, 4, 2, true));
        let h0: Vec<f32> = (0..4 * 2 * 4).map(|v| v as f32 * 0.1).collect();
        let mut input = SequenceInput::new(&[], 0, 2).h0(&h0);
        if cell == Cell::Lstm {
            input = input.c0(&h0);
        }
        let out = k.forward(&input).unwrap();
        assert!(out.output.is_empty());
        assert_eq!(out.output_shape(), [0, 2, 8]);
        assert_eq!(out.h_n, h0);
        assert_eq!(out.c_n.is_some(), cell == Cell::Lstm);
    }
}

#[test]
fn empty_batch_returns_empty_result() {
    for cell in CELLS {
        let mut k = ReferenceKernel::new(model(cell, 3, 4, 1, false));
        let out = k.forward(&SequenceInput::new(&[], 5, 0)).unwrap();
        assert!(out.output.is_empty() && out.h_n.is_empty());
        assert_eq!(out.output_shape(), [5, 0, 4]);
        assert_eq!(out.state_shape(), [1, 0, 4]);
    }
}

#[test]
fn zero_length_sequence_keeps_its_initial_state_and_zero_output() {
    let mut k = ReferenceKernel::new(model(Cell::Gru(GruVariant::ResetAfter), 2, 3, 1, true));
    let x = vec![1.0f32; 4 * 2 * 2];
    let h0: Vec<f32> = (0..2 * 2 * 3).map(|v| v as f32).collect();
    let out = k
        .forward(&SequenceInput::new(&x, 4, 2).h0(&h0).lengths(&[4, 0]))
        .unwrap();
    for t in 0..4 {
        let row = &out.output[(t * 2 + 1) * 6..(t * 2 + 2) * 6];
        assert!(row.iter().all(|&v| v == 0.0), "step {t}: {row:?}");
    }
    for state in 0..2 {
        let h = &out.h_n[(state * 2 + 1) * 3..(state * 2 + 2) * 3];
        assert_eq!(h, &h0[(state * 2 + 1) * 3..(state * 2 + 2) * 3]);
    }
}

#[test]
fn non_finite_inputs_propagate_without_panic() {
    for cell in CELLS {
        let mut k = ReferenceKernel::new(model(cell, 2, 3, 2, false));
        // Batch entry 0 sees NaN at step 1; entry 1 sees +inf and -inf.
        let x = [
            0.5,
            0.5,
            1.0,
            -1.0,
            f32::NAN,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.1,
            0.2,
            0.3,
            0.4,
        ];
        let out = k.forward(&SequenceInput::new(&x, 3, 2)).unwrap();
        let h = |t: usize, b: usize| &out.output[(t * 2 + b) * 3..(t * 2 + b + 1) * 3];
        assert!(h(0, 0).iter().all(|v| v.is_finite()));
        // NaN in x makes every gate NaN from that step on.
        assert!(
            h(1, 0).iter().all(|v| v.is_nan()) && h(2, 0).iter().all(|v| v.is_nan()),
            "{cell:?}"
        );
        // inf · w of mixed signs is inf − inf = NaN as the equations say; whatever the gates
        // become, the computation completes and the state stays NaN or within [-1, 1].
        assert!(
            h(1, 1)
                .iter()
                .chain(h(2, 1))
                .all(|v| v.is_nan() || v.abs() <= 1.0),
            "{cell:?}"
        );
    }
}

#[test]
fn variants_differ_only_through_the_reset_gate() {
    // With h = 0 and no b_hh, r ⊙ (W_hn h + b_hn) = 0 = W_hn (r ⊙ h) + b_hn: the variants
    // agree. With a nonzero h they must not.
    let mut w = weights(CellKind::Gru, 3, 4, 9);
    w = LayerWeights::new(
        CellKind::Gru,
        3,
        4,
        w.w_ih().to_vec(),
        w.w_hh().to_vec(),
        w.b_ih().map(<[f32]>::to_vec),
        None,
    )
    .unwrap();
    let x = [0.3f32, -0.7, 1.1];
    let mut after = vec![0.0; 4];
    let mut before = vec![0.0; 4];
    gru_ref::gru_cell_step(&w, GruVariant::ResetAfter, &x, &[0.0; 4], &mut after);
    gru_ref::gru_cell_step(&w, GruVariant::ResetBefore, &x, &[0.0; 4], &mut before);
    assert_eq!(after, before);
    let h = [0.5f32, -0.5, 0.25, 0.9];
    gru_ref::gru_cell_step(&w, GruVariant::ResetAfter, &x, &h, &mut after);
    gru_ref::gru_cell_step(&w, GruVariant::ResetBefore, &x, &h, &mut before);
    assert_ne!(after, before);
}

proptest! {
    #[test]
    fn batch_first_is_a_transpose(t_len in 0usize..5, batch in 1usize..4, lstm: bool, bidir: bool) {
        let cell = if lstm { Cell::Lstm } else { Cell::Gru(GruVariant::ResetAfter) };
        let mut k = ReferenceKernel::new(model(cell, 2, 3, 2, bidir));
        let x: Vec<f32> = (0..t_len * batch * 2).map(|v| (v as f32 * 0.37).sin()).collect();
        let mut x_bf = vec![0.0; x.len()];
        for t in 0..t_len { for b in 0..batch { for i in 0..2 {
            x_bf[(b * t_len + t) * 2 + i] = x[(t * batch + b) * 2 + i];
        }}}
        let tm = k.forward(&SequenceInput::new(&x, t_len, batch)).unwrap();
        let bf = k.forward(&SequenceInput::new(&x_bf, t_len, batch).batch_first(true)).unwrap();
        prop_assert_eq!(&tm.h_n, &bf.h_n);
        let f = tm.output_size;
        for t in 0..t_len { for b in 0..batch {
            prop_assert_eq!(&tm.output[(t * batch + b) * f..][..f], &bf.output[(b * t_len + t) * f..][..f]);
        }}
    }

    #[test]
    fn lengths_equal_to_truncating_each_sequence(t_len in 1usize..6, lengths in proptest::collection::vec(0usize..6, 1..4)) {
        // A sequence of length ℓ gives the same h_n as running only its first ℓ steps.
        let lengths: Vec<usize> = lengths.iter().map(|&l| l.min(t_len)).collect();
        let batch = lengths.len();
        let mut k = ReferenceKernel::new(model(Cell::Lstm, 2, 3, 1, true));
        let x: Vec<f32> = (0..t_len * batch * 2).map(|v| (v as f32 * 0.91).cos()).collect();
        let packed = k.forward(&SequenceInput::new(&x, t_len, batch).lengths(&lengths)).unwrap();
        for (b, &len) in lengths.iter().enumerate() {
            let xb: Vec<f32> = (0..len).flat_map(|t| x[(t * batch + b) * 2..][..2].to_vec()).collect();
            let alone = k.forward(&SequenceInput::new(&xb, len, 1)).unwrap();
            for state in 0..2 {
                prop_assert_eq!(&packed.h_n[(state * batch + b) * 3..][..3], &alone.h_n[state * 3..][..3]);
            }
        }
    }
}
