//! Converters between PyTorch's weight layout (the one [`LayerWeights`] holds) and the
//! other layouts GRU and LSTM weights come in.
//!
//! - ONNX (`GRU` and `LSTM` operators): per direction `W [G·H, I]`, `R [G·H, H]` and
//!   `B [2·G·H]` (`W`'s biases, then `R`'s), with the gates in another order: GRU z, r, h;
//!   LSTM i, o, f, c.
//! - The design document's concatenated layout: three matrices `W_r`, `W_z`, `W` of shape
//!   `[H, H + I]` acting on the concatenation `[h_prev; x]` (h_prev first), and biases
//!   `b_r`, `b_z`, `b` of length `H`, with the [`ResetBefore`](crate::GruVariant::ResetBefore)
//!   formula.

use crate::cell::CellKind;
use crate::error::{Error, Result, check_len, element_count};
use crate::weights::LayerWeights;

/// ONNX GRU gate order (z, r, h) listed by PyTorch gate (r, z, n): PyTorch gate `g` is ONNX
/// block `ONNX_GRU_BLOCK_OF[g]`.
const ONNX_GRU_BLOCK_OF: [usize; 3] = [1, 0, 2];
/// ONNX LSTM gate order (i, o, f, c) listed by PyTorch gate (i, f, g, o).
const ONNX_LSTM_BLOCK_OF: [usize; 4] = [0, 2, 3, 1];

fn onnx_block_of(kind: CellKind) -> &'static [usize] {
    match kind {
        CellKind::Gru => &ONNX_GRU_BLOCK_OF,
        CellKind::Lstm => &ONNX_LSTM_BLOCK_OF,
    }
}

/// Gathers gate blocks of `block_len` elements: output block `g` is input block `order[g]`.
fn permute_blocks(src: &[f32], block_len: usize, order: &[usize]) -> Vec<f32> {
    order
        .iter()
        .flat_map(|&from| &src[from * block_len..(from + 1) * block_len])
        .copied()
        .collect()
}

/// Scatters gate blocks: output block `order[g]` is input block `g` (the inverse of
/// [`permute_blocks`] with the same `order`).
fn unpermute_blocks(src: &[f32], block_len: usize, order: &[usize]) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    for (g, &to) in order.iter().enumerate() {
        out[to * block_len..(to + 1) * block_len]
            .copy_from_slice(&src[g * block_len..(g + 1) * block_len]);
    }
    out
}

/// One direction of an ONNX `GRU` or `LSTM` node's weights.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxWeights {
    /// `W`, `[G·H, I]`, gates in ONNX order.
    pub w: Vec<f32>,
    /// `R`, `[G·H, H]`, gates in ONNX order.
    pub r: Vec<f32>,
    /// `B`, `[2·G·H]` (`Wb` then `Rb`, each in ONNX gate order), if the node has one.
    pub b: Option<Vec<f32>>,
}

impl OnnxWeights {
    /// Converts one direction of an ONNX node's weights to PyTorch's layout.
    ///
    /// `kind` picks the gate order (GRU z, r, h; LSTM i, o, f, c). ONNX LSTM peepholes
    /// (`P`) have no PyTorch counterpart and are not accepted here. Whether the GRU node had
    /// `linear_before_reset` set decides the [`GruVariant`](crate::GruVariant) to run with;
    /// the weights are the same either way.
    ///
    /// ```
    /// use gru_core::{CellKind, OnnxWeights};
    /// let (i, h) = (1, 1);
    /// // z, r, h blocks of W hold 1, 2, 3; PyTorch's r, z, n order holds 2, 1, 3.
    /// let onnx = OnnxWeights { w: vec![1.0, 2.0, 3.0], r: vec![0.0; 3], b: None };
    /// let torch = onnx.to_layer_weights(CellKind::Gru, i, h)?;
    /// assert_eq!(torch.w_ih(), &[2.0, 1.0, 3.0]);
    /// # Ok::<(), gru_core::Error>(())
    /// ```
    pub fn to_layer_weights(
        &self,
        kind: CellKind,
        input_size: usize,
        hidden_size: usize,
    ) -> Result<LayerWeights> {
        // R's count bounds G·H and 2·G·H.
        element_count("R", &[kind.gate_count(), hidden_size, hidden_size])?;
        let rows = kind.gate_count() * hidden_size;
        check_len("W", &[rows, input_size], self.w.len())?;
        check_len("R", &[rows, hidden_size], self.r.len())?;
        let order = onnx_block_of(kind);
        let (b_ih, b_hh) = match &self.b {
            Some(b) => {
                check_len("B", &[2 * rows], b.len())?;
                (
                    Some(permute_blocks(&b[..rows], hidden_size, order)),
                    Some(permute_blocks(&b[rows..], hidden_size, order)),
                )
            }
            None => (None, None),
        };
        LayerWeights::new(
            kind,
            input_size,
            hidden_size,
            permute_blocks(&self.w, hidden_size * input_size, order),
            permute_blocks(&self.r, hidden_size * hidden_size, order),
            b_ih,
            b_hh,
        )
    }

    /// Converts PyTorch-layout weights to one direction of an ONNX node's weights.
    ///
    /// A missing bias of one side is written as zeros when the other side has one.
    pub fn from_layer_weights(weights: &LayerWeights) -> OnnxWeights {
        let (h, i) = (weights.hidden_size(), weights.input_size());
        let order = onnx_block_of(weights.kind());
        let rows = weights.kind().gate_count() * h;
        let b = match (weights.b_ih(), weights.b_hh()) {
            (None, None) => None,
            (b_ih, b_hh) => {
                let zeros = vec![0.0; rows];
                let mut b = unpermute_blocks(b_ih.unwrap_or(&zeros), h, order);
                b.extend(unpermute_blocks(b_hh.unwrap_or(&zeros), h, order));
                Some(b)
            }
        };
        OnnxWeights {
            w: unpermute_blocks(weights.w_ih(), h * i, order),
            r: unpermute_blocks(weights.w_hh(), h * h, order),
            b,
        }
    }
}

/// A GRU in the design document's concatenated layout, with the
/// [`ResetBefore`](crate::GruVariant::ResetBefore) formula:
/// ```text
/// r  = σ(W_r [h; x] + b_r)
/// z  = σ(W_z [h; x] + b_z)
/// n  = tanh(W [r ⊙ h; x] + b)
/// h' = (1 − z) ⊙ n + z ⊙ h
/// ```
/// Each matrix is `[H, H + I]` row-major; its first `H` columns act on the state.
#[derive(Debug, Clone, PartialEq)]
pub struct ConcatenatedGru {
    /// Input size `I`.
    pub input_size: usize,
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// Reset gate weights `[H, H + I]`.
    pub w_r: Vec<f32>,
    /// Update gate weights `[H, H + I]`.
    pub w_z: Vec<f32>,
    /// Candidate weights `[H, H + I]`.
    pub w: Vec<f32>,
    /// Reset gate bias `[H]`.
    pub b_r: Vec<f32>,
    /// Update gate bias `[H]`.
    pub b_z: Vec<f32>,
    /// Candidate bias `[H]`.
    pub b: Vec<f32>,
}

impl ConcatenatedGru {
    /// Converts to PyTorch's layout: `W_i· = W_·[:, H..]`, `W_h· = W_·[:, ..H]`,
    /// `b_i· = b_·`, no `b_hh`. Run the result with
    /// [`GruVariant::ResetBefore`](crate::GruVariant::ResetBefore).
    pub fn to_layer_weights(&self) -> Result<LayerWeights> {
        let (h, i) = (self.hidden_size, self.input_size);
        if h == 0 || i == 0 {
            return Err(Error::Config(format!(
                "input size ({i}) and hidden size ({h}) must be at least 1"
            )));
        }
        let matrices = [("W_r", &self.w_r), ("W_z", &self.w_z), ("W", &self.w)];
        // Both halves' counts bound H + I and every count below.
        element_count("W_r", &[h, h])?;
        element_count("W_r", &[h, i])?;
        for (name, m) in matrices {
            check_len(name, &[h, h + i], m.len())?;
        }
        for (name, b) in [("b_r", &self.b_r), ("b_z", &self.b_z), ("b", &self.b)] {
            check_len(name, &[h], b.len())?;
        }
        let mut w_ih = Vec::with_capacity(3 * h * i);
        let mut w_hh = Vec::with_capacity(3 * h * h);
        for (_, m) in matrices {
            for row in m.chunks_exact(h + i) {
                w_hh.extend_from_slice(&row[..h]);
                w_ih.extend_from_slice(&row[h..]);
            }
        }
        let b_ih = [&self.b_r, &self.b_z, &self.b]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        LayerWeights::new(CellKind::Gru, i, h, w_ih, w_hh, Some(b_ih), None)
    }

    /// Converts GRU weights in PyTorch's layout to the concatenated layout. The concatenated
    /// layout has one bias per gate, so `b_i· + b_h·` is stored; this is exact for weights
    /// without `b_hh`, and for the ResetBefore formula it computes the same function.
    pub fn from_layer_weights(weights: &LayerWeights) -> Result<ConcatenatedGru> {
        if weights.kind() != CellKind::Gru {
            return Err(Error::Config(
                "the concatenated layout exists only for GRU weights".into(),
            ));
        }
        let (h, i) = (weights.hidden_size(), weights.input_size());
        let matrix = |gate: usize| -> Vec<f32> {
            (0..h)
                .flat_map(|unit| {
                    let hh = weights.w_hh_row(gate, unit).iter();
                    hh.chain(weights.w_ih_row(gate, unit)).copied()
                })
                .collect()
        };
        let bias = |gate: usize| -> Vec<f32> {
            (0..h)
                .map(|unit| weights.b_ih_at(gate, unit) + weights.b_hh_at(gate, unit))
                .collect()
        };
        Ok(ConcatenatedGru {
            input_size: i,
            hidden_size: h,
            w_r: matrix(0),
            w_z: matrix(1),
            w: matrix(2),
            b_r: bias(0),
            b_z: bias(1),
            b: bias(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(len: usize) -> impl Strategy<Value = Vec<f32>> {
        proptest::collection::vec(-4.0f32..4.0, len)
    }

    fn layer(kind: CellKind, with_bias: bool) -> impl Strategy<Value = LayerWeights> {
        (1usize..7, 1usize..7).prop_flat_map(move |(i, h)| {
            let rows = kind.gate_count() * h;
            (
                values(rows * i),
                values(rows * h),
                values(rows),
                values(rows),
            )
                .prop_map(move |(w_ih, w_hh, b_ih, b_hh)| {
                    let (b_ih, b_hh) = if with_bias {
                        (Some(b_ih), Some(b_hh))
                    } else {
                        (None, None)
                    };
                    LayerWeights::new(kind, i, h, w_ih, w_hh, b_ih, b_hh).unwrap()
                })
        })
    }

    proptest! {
        #[test]
        fn onnx_round_trip_gru(w in layer(CellKind::Gru, true)) {
            let onnx = OnnxWeights::from_layer_weights(&w);
            let back = onnx.to_layer_weights(CellKind::Gru, w.input_size(), w.hidden_size()).unwrap();
            prop_assert_eq!(back, w);
        }

        #[test]
        fn onnx_round_trip_lstm(w in layer(CellKind::Lstm, true)) {
            let onnx = OnnxWeights::from_layer_weights(&w);
            let back = onnx.to_layer_weights(CellKind::Lstm, w.input_size(), w.hidden_size()).unwrap();
            prop_assert_eq!(back, w);
        }

        #[test]
        fn onnx_round_trip_without_bias(w in layer(CellKind::Lstm, false)) {
            let onnx = OnnxWeights::from_layer_weights(&w);
            prop_assert!(onnx.b.is_none());
            let back = onnx.to_layer_weights(CellKind::Lstm, w.input_size(), w.hidden_size()).unwrap();
            prop_assert_eq!(back, w);
        }

        #[test]
        fn concatenated_round_trip(w in layer(CellKind::Gru, true)) {
            // Start from the concatenated layout, where the round trip is exact.
            let concat = ConcatenatedGru::from_layer_weights(&w).unwrap();
            let torch = concat.to_layer_weights().unwrap();
            prop_assert!(torch.b_hh().is_none());
            prop_assert_eq!(ConcatenatedGru::from_layer_weights(&torch).unwrap(), concat);
        }
    }

    #[test]
    fn onnx_gate_order_is_zrh_and_iofc() {
        // One hidden unit, one input: each gate's single weight names its ONNX block.
        let onnx = OnnxWeights {
            w: vec![10.0, 11.0, 12.0],
            r: vec![20.0, 21.0, 22.0],
            b: Some(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        };
        let w = onnx.to_layer_weights(CellKind::Gru, 1, 1).unwrap();
        assert_eq!(w.w_ih(), &[11.0, 10.0, 12.0]); // r, z, n
        assert_eq!(w.w_hh(), &[21.0, 20.0, 22.0]);
        assert_eq!(w.b_ih().unwrap(), &[2.0, 1.0, 3.0]);
        assert_eq!(w.b_hh().unwrap(), &[5.0, 4.0, 6.0]);

        let onnx = OnnxWeights {
            w: vec![0.0, 1.0, 2.0, 3.0], // i, o, f, c
            r: vec![0.0; 4],
            b: None,
        };
        let w = onnx.to_layer_weights(CellKind::Lstm, 1, 1).unwrap();
        assert_eq!(w.w_ih(), &[0.0, 2.0, 3.0, 1.0]); // i, f, g(=c), o
    }

    #[test]
    fn concatenated_columns_split_state_first() {
        // H = 1, I = 2: each row is [h, x0, x1].
        let concat = ConcatenatedGru {
            input_size: 2,
            hidden_size: 1,
            w_r: vec![1.0, 2.0, 3.0],
            w_z: vec![4.0, 5.0, 6.0],
            w: vec![7.0, 8.0, 9.0],
            b_r: vec![0.1],
            b_z: vec![0.2],
            b: vec![0.3],
        };
        let w = concat.to_layer_weights().unwrap();
        assert_eq!(w.w_hh(), &[1.0, 4.0, 7.0]);
        assert_eq!(w.w_ih(), &[2.0, 3.0, 5.0, 6.0, 8.0, 9.0]);
        assert_eq!(w.b_ih().unwrap(), &[0.1, 0.2, 0.3]);
    }

    #[test]
    fn converters_report_the_wrong_tensor() {
        let onnx = OnnxWeights {
            w: vec![0.0; 6],
            r: vec![0.0; 5],
            b: None,
        };
        let err = onnx.to_layer_weights(CellKind::Gru, 2, 1).unwrap_err();
        assert!(err.to_string().contains("`R`"), "{err}");
        let mut concat = ConcatenatedGru::from_layer_weights(
            &LayerWeights::new(CellKind::Gru, 1, 1, vec![0.0; 3], vec![0.0; 3], None, None)
                .unwrap(),
        )
        .unwrap();
        concat.b_z.push(1.0);
        let err = concat.to_layer_weights().unwrap_err();
        assert!(err.to_string().contains("`b_z`"), "{err}");
    }

    #[test]
    fn sizes_past_memory_and_zero_sizes_are_errors() {
        let onnx = OnnxWeights {
            w: vec![],
            r: vec![],
            b: Some(vec![]),
        };
        // G·H·H overflows (and G·H wraps to 2 without the check).
        let huge = usize::MAX / 3 + 1;
        let err = onnx.to_layer_weights(CellKind::Gru, 1, huge).unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge { tensor, .. } if tensor == "R"),
            "{err}"
        );
        let empty = |h, i| ConcatenatedGru {
            input_size: i,
            hidden_size: h,
            w_r: vec![],
            w_z: vec![],
            w: vec![],
            b_r: vec![],
            b_z: vec![],
            b: vec![],
        };
        for (h, i) in [(0, 0), (0, 3), (2, 0)] {
            let err = empty(h, i).to_layer_weights().unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{err}");
        }
        // H + I overflows.
        let err = empty(usize::MAX, 1).to_layer_weights().unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        let err = empty(1, usize::MAX).to_layer_weights().unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }
}
