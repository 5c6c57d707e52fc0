//! Loading a PyTorch `state_dict` of an `nn.GRU` or `nn.LSTM` saved with safetensors.
//!
//! Tensor names are PyTorch's: `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`,
//! `bias_hh_l{k}`, with the suffix `_reverse` for the backward direction, all under an optional
//! prefix (`encoder.rnn.` for a module at that path). The cell family (from the gate count `G`),
//! the number of layers, the directions, the sizes and whether there are biases are all inferred
//! from the names and shapes. Tensors of other modules in the same file are ignored.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::cell::{Cell, CellKind, GruVariant};
use crate::error::{Error, Result};
use crate::model::{Direction, Model};
use crate::weights::LayerWeights;

/// The four parameters of one layer and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Param {
    WeightIh,
    WeightHh,
    BiasIh,
    BiasHh,
}

impl Param {
    const ALL: [Param; 4] = [
        Param::WeightIh,
        Param::WeightHh,
        Param::BiasIh,
        Param::BiasHh,
    ];

    fn stem(self) -> &'static str {
        match self {
            Param::WeightIh => "weight_ih",
            Param::WeightHh => "weight_hh",
            Param::BiasIh => "bias_ih",
            Param::BiasHh => "bias_hh",
        }
    }
}

/// Key of one parameter: (layer, direction is reverse, which parameter).
type ParamKey = (usize, bool, Param);

/// Parses the part of a name after the prefix, such as `weight_ih_l2_reverse`.
fn parse_param(rest: &str) -> Option<ParamKey> {
    let param = Param::ALL
        .into_iter()
        .find(|p| rest.starts_with(p.stem()) && rest[p.stem().len()..].starts_with("_l"))?;
    let tail = &rest[param.stem().len() + 2..];
    let (digits, reverse) = match tail.strip_suffix("_reverse") {
        Some(digits) => (digits, true),
        None => (tail, false),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, reverse, param))
}

/// The full name of a parameter under `prefix`.
fn full_name(prefix: &str, (layer, reverse, param): ParamKey) -> String {
    let suffix = if reverse {
        Direction::Reverse
    } else {
        Direction::Forward
    }
    .suffix();
    format!("{prefix}{}_l{layer}{suffix}", param.stem())
}

/// Picks the prefix: the one given, or the unique name prefix in front of `weight_ih_l0`.
fn resolve_prefix(names: &[&str], prefix: Option<&str>) -> Result<String> {
    if let Some(prefix) = prefix {
        return Ok(prefix.to_owned());
    }
    let candidates: Vec<&str> = names
        .iter()
        .filter_map(|name| name.strip_suffix("weight_ih_l0"))
        .collect();
    match candidates.as_slice() {
        [] => Err(Error::MissingTensor {
            tensor: "weight_ih_l0".into(),
        }),
        [one] => Ok((*one).to_owned()),
        many => Err(Error::Config(format!(
            "the file holds several recurrent modules ({}); choose one with a prefix",
            many.iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Converts a tensor of a floating-point type to `f32` values.
fn to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let bytes = view.data();
    let values = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::DType {
                tensor: name.to_owned(),
                dtype: format!("{other:?}"),
            });
        }
    };
    Ok(values)
}

/// Loads an `nn.GRU` or `nn.LSTM` from the bytes of a safetensors file.
///
/// `prefix` selects the module (for example `"encoder.rnn."`); `None` finds the one module in
/// the file whose tensors end in `weight_ih_l0`. `variant` says how to run GRU weights (the file
/// cannot tell: PyTorch's own GRU is [`GruVariant::ResetAfter`]); it is ignored for an LSTM.
///
/// Errors name the tensor and what is wrong with it: [`Error::Format`] for a file that does not
/// parse, [`Error::MissingTensor`], [`Error::UnexpectedTensor`] (a layer beyond the stack, a
/// lone `_reverse`, projection weights), [`Error::Shape`], [`Error::DType`].
pub fn load_model(bytes: &[u8], prefix: Option<&str>, variant: GruVariant) -> Result<Model> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| Error::Format(e.to_string()))?;
    let names = file.names();
    let prefix = resolve_prefix(&names, prefix)?;

    let mut params: BTreeMap<ParamKey, (&str, TensorView<'_>)> = BTreeMap::new();
    for name in names {
        let Some(rest) = name.strip_prefix(prefix.as_str()) else {
            continue;
        };
        match parse_param(rest) {
            Some(key) => {
                let view = file
                    .tensor(name)
                    .map_err(|e| Error::Format(e.to_string()))?;
                params.insert(key, (name, view));
            }
            None if rest.starts_with("weight_hr_l") => {
                return Err(Error::UnexpectedTensor {
                    tensor: name.to_owned(),
                    reason: "LSTM projections (proj_size > 0) are not supported".into(),
                });
            }
            None => {}
        }
    }

    let name_of = |key: ParamKey| full_name(&prefix, key);
    if params.is_empty() {
        return Err(Error::MissingTensor {
            tensor: name_of((0, false, Param::WeightIh)),
        });
    }
    let weight_hh_0 = (0, false, Param::WeightHh);
    let (_, hh0) = params
        .get(&weight_hh_0)
        .ok_or_else(|| Error::MissingTensor {
            tensor: name_of(weight_hh_0),
        })?;
    let (kind, hidden) = match *hh0.shape() {
        [rows, hidden] if hidden > 0 && rows.is_multiple_of(hidden) => {
            let kind = CellKind::from_gate_count(rows / hidden).ok_or_else(|| {
                Error::UnexpectedTensor {
                    tensor: name_of(weight_hh_0),
                    reason: format!(
                        "{rows} rows is {} times the hidden size {hidden}; a GRU has 3, an LSTM 4",
                        rows / hidden
                    ),
                }
            })?;
            (kind, hidden)
        }
        ref shape => {
            return Err(Error::UnexpectedTensor {
                tensor: name_of(weight_hh_0),
                reason: format!("shape {shape:?} is not [G·H, H] with G = 3 or 4"),
            });
        }
    };

    let num_layers = 1 + params.keys().map(|&(layer, _, _)| layer).max().unwrap_or(0);
    let bidirectional = params.keys().any(|&(_, reverse, _)| reverse);
    let has_bias = params
        .keys()
        .any(|&(_, _, p)| matches!(p, Param::BiasIh | Param::BiasHh));
    let rows = kind.gate_count() * hidden;
    let directions = if bidirectional { 2 } else { 1 };

    let mut layers = Vec::with_capacity(num_layers * directions);
    for layer in 0..num_layers {
        for &direction in Direction::all(directions) {
            let reverse = direction == Direction::Reverse;
            let mut fetch = |param: Param, required: bool| -> Result<Option<Vec<f32>>> {
                let key = (layer, reverse, param);
                let Some((name, view)) = params.remove(&key) else {
                    return if required {
                        Err(Error::MissingTensor {
                            tensor: name_of(key),
                        })
                    } else {
                        Ok(None)
                    };
                };
                let expected: Vec<usize> = match param {
                    Param::WeightIh if layer == 0 => {
                        vec![rows, view.shape().get(1).copied().unwrap_or(0).max(1)]
                    }
                    Param::WeightIh => vec![rows, directions * hidden],
                    Param::WeightHh => vec![rows, hidden],
                    Param::BiasIh | Param::BiasHh => vec![rows],
                };
                if view.shape() != expected.as_slice() {
                    return Err(Error::Shape {
                        tensor: name.to_owned(),
                        expected,
                        actual: view.shape().to_vec(),
                    });
                }
                to_f32(name, &view).map(Some)
            };
            let w_ih = fetch(Param::WeightIh, true)?.expect("required");
            let w_hh = fetch(Param::WeightHh, true)?.expect("required");
            let b_ih = fetch(Param::BiasIh, has_bias)?;
            let b_hh = fetch(Param::BiasHh, has_bias)?;
            let input = w_ih.len() / rows;
            let names = Param::ALL.map(|p| name_of((layer, reverse, p)));
            layers.push(LayerWeights::with_names(
                kind,
                input,
                hidden,
                [w_ih, w_hh],
                [b_ih, b_hh],
                &names.each_ref().map(String::as_str),
            )?);
        }
    }
    // Every parameter of every layer was taken above; what is left has no place in the stack.
    if let Some((name, _)) = params.into_values().next() {
        return Err(Error::UnexpectedTensor {
            tensor: name.to_owned(),
            reason: "its layer or direction has no weight_ih".into(),
        });
    }
    let cell = match kind {
        CellKind::Gru => Cell::Gru(variant),
        CellKind::Lstm => Cell::Lstm,
    };
    Model::new(cell, bidirectional, layers)
}

/// Reads a safetensors file and loads it with [`load_model`].
pub fn load_model_file(
    path: impl AsRef<Path>,
    prefix: Option<&str>,
    variant: GruVariant,
) -> Result<Model> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    load_model(&bytes, prefix, variant)
}
