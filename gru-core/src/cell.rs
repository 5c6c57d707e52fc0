//! What a recurrent cell computes: the GRU in its two variants and the LSTM.
//!
//! Notation: σ is the logistic sigmoid, ⊙ the elementwise product, `x` the input of this step,
//! `h` (and `c`) the state of the previous step.
//!
//! **GRU, [`GruVariant::ResetAfter`]** (PyTorch `nn.GRU`, cuDNN, ONNX `linear_before_reset=1`,
//! Keras `reset_after=True`):
//! ```text
//! r  = σ(W_ir x + b_ir + W_hr h + b_hr)
//! z  = σ(W_iz x + b_iz + W_hz h + b_hz)
//! n  = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//! h' = (1 − z) ⊙ n + z ⊙ h
//! ```
//! **GRU, [`GruVariant::ResetBefore`]** (Cho et al. 2014, ONNX `linear_before_reset=0`,
//! Keras `reset_after=False`): `r`, `z` and `h'` as above, but
//! ```text
//! n  = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
//! ```
//! **LSTM** (PyTorch gate order i, f, g, o):
//! ```text
//! i  = σ(W_ii x + b_ii + W_hi h + b_hi)      f = σ(W_if x + b_if + W_hf h + b_hf)
//! g  = tanh(W_ig x + b_ig + W_hg h + b_hg)   o = σ(W_io x + b_io + W_ho h + b_ho)
//! c' = f ⊙ c + i ⊙ g
//! h' = o ⊙ tanh(c')
//! ```

/// Where a GRU applies its reset gate. See the [module docs](self) for the equations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GruVariant {
    /// `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`: PyTorch, cuDNN, ONNX
    /// `linear_before_reset=1`. The default, since it is what trained PyTorch models use.
    #[default]
    ResetAfter,
    /// `n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)`: the original formulation, ONNX
    /// `linear_before_reset=0`.
    ResetBefore,
}

/// The family of a cell, which fixes how many gates its weight matrices stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// Gated recurrent unit: three gates (r, z, n).
    Gru,
    /// Long short-term memory: four gates (i, f, g, o) and a cell state.
    Lstm,
}

impl CellKind {
    /// Number of gates `G` stacked in `W_ih`, `W_hh` and the biases.
    ///
    /// ```
    /// use gru_core::CellKind;
    /// assert_eq!(CellKind::Gru.gate_count(), 3);
    /// assert_eq!(CellKind::Lstm.gate_count(), 4);
    /// ```
    pub const fn gate_count(self) -> usize {
        match self {
            CellKind::Gru => 3,
            CellKind::Lstm => 4,
        }
    }

    /// The cell family whose weights stack `gates` gates, if any.
    pub const fn from_gate_count(gates: usize) -> Option<CellKind> {
        match gates {
            3 => Some(CellKind::Gru),
            4 => Some(CellKind::Lstm),
            _ => None,
        }
    }

    /// Lower-case name, as used on the command line (`gru`, `lstm`).
    pub const fn name(self) -> &'static str {
        match self {
            CellKind::Gru => "gru",
            CellKind::Lstm => "lstm",
        }
    }
}

/// A fully specified cell: the family and, for a GRU, the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cell {
    /// A GRU of the given variant.
    Gru(GruVariant),
    /// An LSTM.
    Lstm,
}

impl Cell {
    /// The family of this cell.
    pub const fn kind(self) -> CellKind {
        match self {
            Cell::Gru(_) => CellKind::Gru,
            Cell::Lstm => CellKind::Lstm,
        }
    }

    /// Number of gates `G` (3 for a GRU, 4 for an LSTM).
    pub const fn gate_count(self) -> usize {
        self.kind().gate_count()
    }

    /// Whether the cell carries a cell state `c` besides `h`.
    pub const fn has_cell_state(self) -> bool {
        matches!(self, Cell::Lstm)
    }
}

/// Gate indices of a GRU in PyTorch's order: the row block `g` of `W_ih` is `[g·H, (g+1)·H)`.
pub mod gru_gate {
    /// Reset gate.
    pub const R: usize = 0;
    /// Update gate.
    pub const Z: usize = 1;
    /// Candidate ("new") state.
    pub const N: usize = 2;
}

/// Gate indices of an LSTM in PyTorch's order.
pub mod lstm_gate {
    /// Input gate.
    pub const I: usize = 0;
    /// Forget gate.
    pub const F: usize = 1;
    /// Cell candidate.
    pub const G: usize = 2;
    /// Output gate.
    pub const O: usize = 3;
}
