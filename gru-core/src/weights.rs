//! The weights of one layer in one direction, in PyTorch's layout.

use crate::cell::CellKind;
use crate::error::{Error, Result, check_len, element_count};

/// The weights of one layer and one direction, in PyTorch's layout.
///
/// With `G` gates (3 for a GRU, 4 for an LSTM), hidden size `H` and input size `I`, all
/// row-major:
/// - `w_ih`: `[G·H, I]`, `w_hh`: `[G·H, H]`, rows grouped by gate (GRU: r, z, n;
///   LSTM: i, f, g, o);
/// - `b_ih`, `b_hh`: `[G·H]`, each optional (absent means zero).
///
/// ```
/// use gru_core::{CellKind, LayerWeights};
/// let (input, hidden) = (2, 3);
/// let w = LayerWeights::new(
///     CellKind::Gru,
///     input,
///     hidden,
///     vec![0.1; 3 * hidden * input],
///     vec![0.2; 3 * hidden * hidden],
///     Some(vec![0.0; 3 * hidden]),
///     None,
/// )?;
/// assert_eq!(w.w_ih_row(2, 1).len(), input); // gate n, unit 1
/// # Ok::<(), gru_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    kind: CellKind,
    input_size: usize,
    hidden_size: usize,
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Option<Vec<f32>>,
    b_hh: Option<Vec<f32>>,
}

impl LayerWeights {
    /// Checks every length against `kind`, `input_size` and `hidden_size` and takes ownership.
    ///
    /// Errors: [`Error::Config`] for a zero size, [`Error::Shape`] naming the tensor
    /// (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`) whose length is wrong.
    pub fn new(
        kind: CellKind,
        input_size: usize,
        hidden_size: usize,
        w_ih: Vec<f32>,
        w_hh: Vec<f32>,
        b_ih: Option<Vec<f32>>,
        b_hh: Option<Vec<f32>>,
    ) -> Result<Self> {
        Self::with_names(
            kind,
            input_size,
            hidden_size,
            [w_ih, w_hh],
            [b_ih, b_hh],
            &["weight_ih", "weight_hh", "bias_ih", "bias_hh"],
        )
    }

    /// Like [`new`](Self::new), with the names that errors should use for the four tensors
    /// (for example the full names in a checkpoint).
    pub(crate) fn with_names(
        kind: CellKind,
        input_size: usize,
        hidden_size: usize,
        [w_ih, w_hh]: [Vec<f32>; 2],
        [b_ih, b_hh]: [Option<Vec<f32>>; 2],
        names: &[&str; 4],
    ) -> Result<Self> {
        if input_size == 0 || hidden_size == 0 {
            return Err(Error::Config(format!(
                "input size ({input_size}) and hidden size ({hidden_size}) must be at least 1"
            )));
        }
        // W_hh's count bounds G·H and every count below.
        element_count(names[1], &[kind.gate_count(), hidden_size, hidden_size])?;
        element_count(names[0], &[kind.gate_count(), hidden_size, input_size])?;
        let rows = kind.gate_count() * hidden_size;
        check_len(names[0], &[rows, input_size], w_ih.len())?;
        check_len(names[1], &[rows, hidden_size], w_hh.len())?;
        if let Some(b) = &b_ih {
            check_len(names[2], &[rows], b.len())?;
        }
        if let Some(b) = &b_hh {
            check_len(names[3], &[rows], b.len())?;
        }
        Ok(Self {
            kind,
            input_size,
            hidden_size,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        })
    }

    /// The cell family these weights belong to.
    pub fn kind(&self) -> CellKind {
        self.kind
    }
    /// Input size `I`.
    pub fn input_size(&self) -> usize {
        self.input_size
    }
    /// Hidden size `H`.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }
    /// `W_ih`, `[G·H, I]` row-major.
    pub fn w_ih(&self) -> &[f32] {
        &self.w_ih
    }
    /// `W_hh`, `[G·H, H]` row-major.
    pub fn w_hh(&self) -> &[f32] {
        &self.w_hh
    }
    /// `b_ih`, `[G·H]`, if present.
    pub fn b_ih(&self) -> Option<&[f32]> {
        self.b_ih.as_deref()
    }
    /// `b_hh`, `[G·H]`, if present.
    pub fn b_hh(&self) -> Option<&[f32]> {
        self.b_hh.as_deref()
    }

    /// Row `unit` of gate `gate` of `W_ih` (length `I`).
    pub fn w_ih_row(&self, gate: usize, unit: usize) -> &[f32] {
        let row = gate * self.hidden_size + unit;
        &self.w_ih[row * self.input_size..(row + 1) * self.input_size]
    }

    /// Row `unit` of gate `gate` of `W_hh` (length `H`).
    pub fn w_hh_row(&self, gate: usize, unit: usize) -> &[f32] {
        let row = gate * self.hidden_size + unit;
        &self.w_hh[row * self.hidden_size..(row + 1) * self.hidden_size]
    }

    /// `b_ih` of `unit` in `gate`, zero when there is no bias.
    pub fn b_ih_at(&self, gate: usize, unit: usize) -> f32 {
        self.b_ih
            .as_ref()
            .map_or(0.0, |b| b[gate * self.hidden_size + unit])
    }

    /// `b_hh` of `unit` in `gate`, zero when there is no bias.
    pub fn b_hh_at(&self, gate: usize, unit: usize) -> f32 {
        self.b_hh
            .as_ref()
            .map_or(0.0, |b| b[gate * self.hidden_size + unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_overflowing_sizes_are_errors() {
        let new = |i, h| LayerWeights::new(CellKind::Gru, i, h, vec![], vec![], None, None);
        for (i, h) in [(0, 0), (0, 2), (2, 0)] {
            assert!(matches!(new(i, h), Err(Error::Config(_))));
        }
        // Without the checks, G·H wraps to 2 and G·H·H overflows.
        let err = new(1, usize::MAX / 3 + 1).unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge { tensor, .. } if tensor == "weight_hh"),
            "{err}"
        );
        let err = new(usize::MAX, 1).unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge { tensor, .. } if tensor == "weight_ih"),
            "{err}"
        );
        // The sizes alone are fine: the buffers are the wrong length.
        let err = new(3, 2).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
    }
}
