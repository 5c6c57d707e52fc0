//! The reference checked against PyTorch and ONNX Runtime: fixtures written by
//! `fixtures/make_fixtures.py`, compared within 1e-5 · max(1, max |expected|).

mod common;

use common::{Case, fixtures_dir, scaled_error, sequence_cases};
use gru_core::{CellKind, ConcatenatedGru, GruVariant, OnnxWeights};
use gru_ref::ReferenceKernel;

#[test]
fn reference_matches_every_peer_fixture() {
    let mut worst = 0.0f64;
    for case in sequence_cases() {
        let mut kernel = ReferenceKernel::new(case.model());
        let out = case.run(&mut kernel);
        worst = worst.max(case.check(&out, "reference"));
    }
    println!("worst scaled error of the reference against the peers: {worst:e}");
}

#[test]
fn simd_kernels_match_every_peer_fixture() {
    let mut worst = 0.0f64;
    for threads in [1, 2] {
        for case in sequence_cases() {
            let mut kernel = gru_simd::SimdModel::with_threads(&case.model(), threads).unwrap();
            // On every worker, though the fixtures' steps are small enough to run alone.
            kernel.set_alone_below_step_flops(0);
            let out = case.run(&mut kernel);
            worst = worst.max(case.check(&out, "simd"));
        }
    }
    println!("worst scaled error of the simd kernels against the peers: {worst:e}");
}

/// The ONNX cases keep the node's own W, R, B: converting them with `OnnxWeights` must give
/// the tensors that the script's independent conversion wrote.
#[test]
fn onnx_converter_matches_onnx_runtime_weights() {
    for case in sequence_cases().into_iter().filter(|c| c.has("W.npy")) {
        let kind = if case.meta["cell"] == "lstm" {
            CellKind::Lstm
        } else {
            CellKind::Gru
        };
        let model = case.model();
        let (w, r, b) = (case.f32("W.npy"), case.f32("R.npy"), case.f32("B.npy"));
        let d = model.config().num_directions();
        let (wl, rl, bl) = (w.len() / d, r.len() / d, b.len() / d);
        for (k, layer) in model.layers().iter().enumerate() {
            let onnx = OnnxWeights {
                w: w[k * wl..(k + 1) * wl].to_vec(),
                r: r[k * rl..(k + 1) * rl].to_vec(),
                b: Some(b[k * bl..(k + 1) * bl].to_vec()),
            };
            let converted = onnx
                .to_layer_weights(kind, layer.input_size(), layer.hidden_size())
                .unwrap();
            assert_eq!(&converted, layer, "{} direction {k}", case.name);
        }
    }
}

/// The design document's NumPy `GRUCell`, run as written, against (1) one step written directly
/// from the concatenated layout's equations and (2) the reference on the converted weights.
#[test]
fn seed_document_cell_matches_reference_on_converted_weights() {
    let case = Case {
        name: "seed_numpy_cell".into(),
        dir: fixtures_dir().join("seed_numpy_cell"),
        meta: Default::default(),
    };
    let concat = ConcatenatedGru {
        input_size: 10,
        hidden_size: 5,
        w_r: case.f32("W_r.npy"),
        w_z: case.f32("W_z.npy"),
        w: case.f32("W.npy"),
        b_r: case.f32("b_r.npy"),
        b_z: case.f32("b_z.npy"),
        b: case.f32("b.npy"),
    };
    let (x, h) = (case.f32("x.npy"), case.f32("h_prev.npy"));
    let expected = case.f32("expected_h.npy");

    let direct = concatenated_step(&concat, &x, &h);
    assert!(
        scaled_error(&direct, &expected) <= 1e-6,
        "{direct:?} vs {expected:?}"
    );

    let weights = concat.to_layer_weights().unwrap();
    let mut via_reference = vec![0.0; 5];
    gru_ref::gru_cell_step(
        &weights,
        GruVariant::ResetBefore,
        &x,
        &h,
        &mut via_reference,
    );
    let err = scaled_error(&via_reference, &expected);
    assert!(
        err <= 1e-6,
        "reference on converted weights differs by {err:e}"
    );
}

/// One step written straight from the concatenated layout: `[h; x]` and `[r ⊙ h; x]`.
fn concatenated_step(c: &ConcatenatedGru, x: &[f32], h: &[f32]) -> Vec<f32> {
    let hidden = c.hidden_size;
    let width = hidden + c.input_size;
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let affine = |m: &[f32], b: &[f32], j: usize, v: &[f64]| -> f64 {
        m[j * width..(j + 1) * width]
            .iter()
            .zip(v)
            .map(|(&w, &v)| f64::from(w) * v)
            .sum::<f64>()
            + f64::from(b[j])
    };
    let concat: Vec<f64> = h.iter().chain(x).map(|&v| f64::from(v)).collect();
    let r: Vec<f64> = (0..hidden)
        .map(|j| sigmoid(affine(&c.w_r, &c.b_r, j, &concat)))
        .collect();
    let reset: Vec<f64> = (0..hidden)
        .map(|j| r[j] * f64::from(h[j]))
        .chain(x.iter().map(|&v| f64::from(v)))
        .collect();
    (0..hidden)
        .map(|j| {
            let z = sigmoid(affine(&c.w_z, &c.b_z, j, &concat));
            let n = affine(&c.w, &c.b, j, &reset).tanh();
            ((1.0 - z) * n + z * f64::from(h[j])) as f32
        })
        .collect()
}
