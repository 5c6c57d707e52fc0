//! Loading state_dicts: inference of the model's shape from names and shapes, dtype
//! conversion, and a typed error naming the tensor for every way a file can be wrong.

use gru_core::{Cell, CellKind, Error, GruVariant, load_model};
use safetensors::tensor::{Dtype, TensorView};

/// A tensor to write: name, dtype, shape and raw little-endian bytes.
struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_tensor(name: &str, shape: &[usize], seed: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let bytes = (0..n)
        .flat_map(|k| (seed + k as f32 * 0.001).to_le_bytes())
        .collect();
    Tensor {
        name: name.into(),
        dtype: Dtype::F32,
        shape: shape.to_vec(),
        bytes,
    }
}

fn serialize(tensors: &[Tensor]) -> Vec<u8> {
    let views = tensors.iter().map(|t| {
        (
            t.name.clone(),
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
        )
    });
    safetensors::serialize(views, None).unwrap()
}

/// A PyTorch-named stack: `gates` gates, hidden `h`, input `i`.
fn stack(
    prefix: &str,
    gates: usize,
    i: usize,
    h: usize,
    layers: usize,
    bidir: bool,
    bias: bool,
) -> Vec<Tensor> {
    let mut out = Vec::new();
    for layer in 0..layers {
        for suffix in if bidir {
            &["", "_reverse"][..]
        } else {
            &[""][..]
        } {
            let input = if layer == 0 {
                i
            } else {
                h * if bidir { 2 } else { 1 }
            };
            let name = |stem: &str| format!("{prefix}{stem}_l{layer}{suffix}");
            out.push(f32_tensor(&name("weight_ih"), &[gates * h, input], 0.1));
            out.push(f32_tensor(&name("weight_hh"), &[gates * h, h], 0.2));
            if bias {
                out.push(f32_tensor(&name("bias_ih"), &[gates * h], 0.3));
                out.push(f32_tensor(&name("bias_hh"), &[gates * h], 0.4));
            }
        }
    }
    out
}

fn load(tensors: &[Tensor], prefix: Option<&str>) -> Result<gru_core::Model, Error> {
    load_model(&serialize(tensors), prefix, GruVariant::ResetAfter)
}

#[test]
fn infers_cell_layers_directions_sizes_and_bias() {
    let model = load(&stack("", 3, 5, 7, 2, true, true), None).unwrap();
    let c = model.config();
    assert_eq!(
        (
            c.cell,
            c.input_size,
            c.hidden_size,
            c.num_layers,
            c.bidirectional
        ),
        (Cell::Gru(GruVariant::ResetAfter), 5, 7, 2, true)
    );
    assert!(
        model
            .layers()
            .iter()
            .all(|l| l.b_ih().is_some() && l.b_hh().is_some())
    );

    let model = load(&stack("enc.rnn.", 4, 1, 3, 3, false, false), None).unwrap();
    let c = model.config();
    assert_eq!(
        (
            c.cell,
            c.input_size,
            c.hidden_size,
            c.num_layers,
            c.bidirectional
        ),
        (Cell::Lstm, 1, 3, 3, false)
    );
    assert!(model.layers().iter().all(|l| l.b_ih().is_none()));
    assert_eq!(
        model.layer(2, gru_core::Direction::Forward).kind(),
        CellKind::Lstm
    );
}

#[test]
fn prefix_selects_a_module_and_other_tensors_are_ignored() {
    let mut tensors = stack("a.", 3, 2, 2, 1, false, true);
    tensors.extend(stack("b.", 4, 3, 2, 1, false, true));
    tensors.push(f32_tensor("head.weight", &[4, 4], 0.0));
    let err = load(&tensors, None).unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains("`a.`") && m.contains("`b.`")),
        "{err}"
    );
    assert_eq!(load(&tensors, Some("b.")).unwrap().kind(), CellKind::Lstm);
    assert_eq!(load(&tensors, Some("a.")).unwrap().kind(), CellKind::Gru);
    assert_eq!(
        load(&tensors, Some("c.")).unwrap_err(),
        Error::MissingTensor {
            tensor: "c.weight_ih_l0".into()
        }
    );
}

#[test]
fn half_bfloat_and_double_are_converted() {
    for (dtype, width) in [(Dtype::F16, 2), (Dtype::BF16, 2), (Dtype::F64, 8)] {
        let mut tensors = stack("", 3, 2, 2, 1, false, false);
        let encode = |v: f32| -> Vec<u8> {
            match dtype {
                Dtype::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
                Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
                _ => f64::from(v).to_le_bytes().to_vec(),
            }
        };
        // 0.5, -1.25 and 3.0 are exact in every one of these types.
        let values = [
            0.5f32, -1.25, 3.0, 0.5, -1.25, 3.0, 0.5, -1.25, 3.0, 0.5, -1.25, 3.0,
        ];
        tensors[0] = Tensor {
            name: "weight_ih_l0".into(),
            dtype,
            shape: vec![6, 2],
            bytes: values.iter().flat_map(|&v| encode(v)).collect(),
        };
        assert_eq!(tensors[0].bytes.len(), 12 * width);
        let model = load(&tensors, None).unwrap();
        assert_eq!(model.layers()[0].w_ih(), &values, "{dtype:?}");
    }
}

#[test]
fn every_bad_file_gives_a_typed_error_naming_the_tensor() {
    let good = stack("m.", 3, 4, 5, 2, true, true);
    assert!(load(&good, None).is_ok());
    let without = |name: &str| -> Vec<Tensor> {
        stack("m.", 3, 4, 5, 2, true, true)
            .into_iter()
            .filter(|t| t.name != name)
            .collect()
    };
    let replaced = |name: &str, t: Tensor| -> Vec<Tensor> {
        stack("m.", 3, 4, 5, 2, true, true)
            .into_iter()
            .map(|o| {
                if o.name == name {
                    Tensor {
                        name: name.into(),
                        ..t_clone(&t)
                    }
                } else {
                    o
                }
            })
            .collect()
    };

    for missing in [
        "m.weight_hh_l1_reverse",
        "m.bias_ih_l0",
        "m.weight_ih_l1",
        "m.weight_hh_l0",
    ] {
        assert_eq!(
            load(&without(missing), None).unwrap_err(),
            Error::MissingTensor {
                tensor: missing.into()
            },
            "{missing}"
        );
    }

    let err = load(
        &replaced("m.weight_hh_l1", f32_tensor("", &[15, 4], 0.0)),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::Shape {
            tensor: "m.weight_hh_l1".into(),
            expected: vec![15, 5],
            actual: vec![15, 4]
        }
    );
    let err = load(
        &replaced("m.weight_ih_l1_reverse", f32_tensor("", &[15, 4], 0.0)),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Error::Shape {
            tensor: "m.weight_ih_l1_reverse".into(),
            expected: vec![15, 10],
            actual: vec![15, 4]
        }
    );
    let err = load(&replaced("m.bias_hh_l0", f32_tensor("", &[14], 0.0)), None).unwrap_err();
    assert_eq!(
        err,
        Error::Shape {
            tensor: "m.bias_hh_l0".into(),
            expected: vec![15],
            actual: vec![14]
        }
    );
    let err = load(
        &replaced("m.weight_hh_l0", f32_tensor("", &[10, 5], 0.0)),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::UnexpectedTensor { ref tensor, .. } if tensor == "m.weight_hh_l0"),
        "{err}"
    );
    let err = load(
        &replaced("m.weight_hh_l0", f32_tensor("", &[15], 0.0)),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::UnexpectedTensor { ref tensor, .. } if tensor == "m.weight_hh_l0"),
        "{err}"
    );

    let int = Tensor {
        name: String::new(),
        dtype: Dtype::I32,
        shape: vec![15],
        bytes: vec![0; 60],
    };
    let err = load(&replaced("m.bias_ih_l1", int), None).unwrap_err();
    assert_eq!(
        err,
        Error::DType {
            tensor: "m.bias_ih_l1".into(),
            dtype: "I32".into()
        }
    );

    // A layer beyond the stack that has no weight_ih, a stray bias, a projection.
    let mut extra = stack("m.", 3, 4, 5, 2, true, true);
    extra.push(f32_tensor("m.bias_ih_l5", &[15], 0.0));
    let err = load(&extra, None).unwrap_err();
    assert!(
        matches!(err, Error::MissingTensor { ref tensor } if tensor == "m.weight_ih_l2"),
        "{err}"
    );
    let mut lone_reverse = stack("m.", 3, 4, 5, 1, false, false);
    lone_reverse.push(f32_tensor("m.weight_hh_l0_reverse", &[15, 5], 0.0));
    let err = load(&lone_reverse, None).unwrap_err();
    assert_eq!(
        err,
        Error::MissingTensor {
            tensor: "m.weight_ih_l0_reverse".into()
        }
    );
    let mut projection = stack("m.", 4, 4, 5, 1, false, false);
    projection.push(f32_tensor("m.weight_hr_l0", &[3, 5], 0.0));
    assert!(
        matches!(load(&projection, None).unwrap_err(), Error::UnexpectedTensor { ref tensor, .. } if tensor == "m.weight_hr_l0")
    );
}

fn t_clone(t: &Tensor) -> Tensor {
    Tensor {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        bytes: t.bytes.clone(),
    }
}

#[test]
fn truncated_and_corrupt_files_are_format_errors() {
    let bytes = serialize(&stack("", 3, 4, 5, 1, false, true));
    for cut in [0, 1, 7, 8, 9, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = load_model(&bytes[..cut], None, GruVariant::ResetAfter).unwrap_err();
        assert!(matches!(err, Error::Format(_)), "cut at {cut}: {err}");
    }
    // Flip every byte of the header in turn: never a panic, and an error or a valid model.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for k in 0..8 + header_len {
        let mut corrupt = bytes.clone();
        corrupt[k] ^= 0x5a;
        let _ = load_model(&corrupt, None, GruVariant::ResetAfter);
    }
    // A header claiming an enormous size.
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        load_model(&huge, None, GruVariant::ResetAfter),
        Err(Error::Format(_))
    ));
}

#[test]
fn unreadable_path_is_an_io_error() {
    let err = gru_core::load_model_file(
        "/nonexistent/model.safetensors",
        None,
        GruVariant::ResetAfter,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Io { ref path, .. } if path.contains("nonexistent")),
        "{err}"
    );
}
