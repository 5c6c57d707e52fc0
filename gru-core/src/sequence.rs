//! Sequence inputs and outputs, with PyTorch's shape conventions.
//!
//! - input `[T, B, I]`, or `[B, T, I]` with `batch_first`;
//! - output `[T, B, D·H]`, or `[B, T, D·H]` with `batch_first`;
//! - `h0`, `h_n` (and for an LSTM `c0`, `c_n`) `[L·D, B, H]`, whatever `batch_first` says;
//! - optional per-sequence lengths `[B]` (PyTorch packed sequences, ONNX `sequence_lens`):
//!   sequence `b` of length `ℓ` has outputs zero at steps `≥ ℓ`, its `h_n` is the state after
//!   its last valid step, and the reverse direction starts at step `ℓ − 1`.

use crate::error::{Error, Result, check_len, element_count};
use crate::model::ModelConfig;

/// Where step `t` of sequence `b` lives in a `[T, B, F]` or `[B, T, F]` buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceLayout {
    /// Padded sequence length `T`.
    pub seq_len: usize,
    /// Batch size `B`.
    pub batch: usize,
    /// `[B, T, F]` when true, `[T, B, F]` when false.
    pub batch_first: bool,
}

impl SequenceLayout {
    /// Index of the row (of `F` features) holding step `t` of sequence `b`.
    ///
    /// ```
    /// use gru_core::SequenceLayout;
    /// let time_major = SequenceLayout { seq_len: 5, batch: 3, batch_first: false };
    /// assert_eq!(time_major.row(2, 1), 2 * 3 + 1);
    /// let batch_major = SequenceLayout { batch_first: true, ..time_major };
    /// assert_eq!(batch_major.row(2, 1), 5 + 2);
    /// ```
    #[inline]
    pub fn row(&self, t: usize, b: usize) -> usize {
        if self.batch_first {
            b * self.seq_len + t
        } else {
            t * self.batch + b
        }
    }

    /// Number of rows, `T·B`.
    pub fn rows(&self) -> usize {
        self.seq_len * self.batch
    }

    /// The shape of a buffer of `features` per row, in this layout's order.
    pub fn shape(&self, features: usize) -> [usize; 3] {
        if self.batch_first {
            [self.batch, self.seq_len, features]
        } else {
            [self.seq_len, self.batch, features]
        }
    }
}

/// One call's worth of input: the sequence and its options. Borrowed, so that nothing is
/// copied before a kernel reads it.
///
/// ```
/// use gru_core::SequenceInput;
/// let x = vec![0.0f32; 4 * 2 * 3]; // T = 4, B = 2, I = 3
/// let lengths = [4, 2];
/// let input = SequenceInput::new(&x, 4, 2).lengths(&lengths);
/// assert_eq!(input.valid_len(1), 2);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SequenceInput<'a> {
    /// The input values, `[T, B, I]` (or `[B, T, I]` with `batch_first`).
    pub data: &'a [f32],
    /// Padded sequence length `T`.
    pub seq_len: usize,
    /// Batch size `B`.
    pub batch: usize,
    /// Whether `data` (and the output) is batch-major.
    pub batch_first: bool,
    /// Initial hidden state `[L·D, B, H]`; zeros when absent.
    pub h0: Option<&'a [f32]>,
    /// Initial cell state `[L·D, B, H]` (LSTM only); zeros when absent.
    pub c0: Option<&'a [f32]>,
    /// Valid length of each sequence, `[B]`, each in `0..=T`; all `T` when absent.
    pub lengths: Option<&'a [usize]>,
}

impl<'a> SequenceInput<'a> {
    /// A time-major input with no initial state and no lengths.
    pub fn new(data: &'a [f32], seq_len: usize, batch: usize) -> Self {
        Self {
            data,
            seq_len,
            batch,
            batch_first: false,
            h0: None,
            c0: None,
            lengths: None,
        }
    }

    /// Sets whether `data` is `[B, T, I]` (true) or `[T, B, I]` (false).
    pub fn batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }

    /// Sets the initial hidden state `[L·D, B, H]`.
    pub fn h0(mut self, h0: &'a [f32]) -> Self {
        self.h0 = Some(h0);
        self
    }

    /// Sets the initial cell state `[L·D, B, H]` (LSTM only).
    pub fn c0(mut self, c0: &'a [f32]) -> Self {
        self.c0 = Some(c0);
        self
    }

    /// Sets the valid length of each sequence.
    pub fn lengths(mut self, lengths: &'a [usize]) -> Self {
        self.lengths = Some(lengths);
        self
    }

    /// The layout of `data` and of the output.
    pub fn layout(&self) -> SequenceLayout {
        SequenceLayout {
            seq_len: self.seq_len,
            batch: self.batch,
            batch_first: self.batch_first,
        }
    }

    /// Valid length of sequence `b` (`T` when no lengths were given).
    #[inline]
    pub fn valid_len(&self, b: usize) -> usize {
        self.lengths.map_or(self.seq_len, |lengths| lengths[b])
    }

    /// Checks every buffer against the model's shape, and that the output and final states
    /// the call returns have sizes a buffer can hold ([`Error::TooLarge`] otherwise);
    /// kernels call this first.
    pub fn validate(&self, config: &ModelConfig) -> Result<()> {
        let layout = self.layout();
        check_len("input", &layout.shape(config.input_size), self.data.len())?;
        let state_shape = [config.num_states(), self.batch, config.hidden_size];
        // What the call will allocate; with T = 0 the input bounds no other size.
        element_count("output", &layout.shape(config.output_size()))?;
        element_count("h_n", &state_shape)?;
        if let Some(h0) = self.h0 {
            check_len("h0", &state_shape, h0.len())?;
        }
        match (self.c0, config.cell.has_cell_state()) {
            (Some(c0), true) => check_len("c0", &state_shape, c0.len())?,
            (Some(_), false) => {
                return Err(Error::Config(
                    "c0 is given but a GRU has no cell state".into(),
                ));
            }
            (None, _) => {}
        }
        if let Some(lengths) = self.lengths {
            check_len("lengths", &[self.batch], lengths.len())?;
            if let Some((batch_index, &length)) =
                lengths.iter().enumerate().find(|(_, l)| **l > self.seq_len)
            {
                return Err(Error::SequenceLength {
                    batch_index,
                    length: i64::try_from(length).unwrap_or(i64::MAX),
                    seq_len: self.seq_len,
                });
            }
        }
        Ok(())
    }
}

/// What a forward pass returns.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceOutput {
    /// The last layer's output, `[T, B, D·H]` (or `[B, T, D·H]`), zero past each length.
    pub output: Vec<f32>,
    /// Final hidden state of every layer and direction, `[L·D, B, H]`.
    pub h_n: Vec<f32>,
    /// Final cell state `[L·D, B, H]` (LSTM only).
    pub c_n: Option<Vec<f32>>,
    /// Layout of `output`.
    pub layout: SequenceLayout,
    /// Features per output row, `D·H`.
    pub output_size: usize,
    /// Leading dimension of `h_n`, `L·D`.
    pub num_states: usize,
    /// Hidden size `H`.
    pub hidden_size: usize,
}

impl SequenceOutput {
    /// Zero-filled output buffers for `input` run through a model of shape `config`.
    pub fn zeros(config: &ModelConfig, input: &SequenceInput<'_>) -> Self {
        let mut out = Self::empty();
        out.prepare(config, input);
        out
    }

    /// No buffers yet: a place for [`RecurrentKernel::forward_into`] to write into, which
    /// shapes it on the first call and reuses its buffers on later ones.
    ///
    /// [`RecurrentKernel::forward_into`]: crate::RecurrentKernel::forward_into
    pub fn empty() -> Self {
        Self {
            output: Vec::new(),
            h_n: Vec::new(),
            c_n: None,
            layout: SequenceLayout {
                seq_len: 0,
                batch: 0,
                batch_first: false,
            },
            output_size: 0,
            num_states: 0,
            hidden_size: 0,
        }
    }

    /// Shapes these buffers for `input` run through a model of shape `config`, keeping their
    /// allocations where they are large enough, and zeroes the output rows past each
    /// sequence's length. Every other value is left as it was, for the kernel to overwrite:
    /// kernels call this at the start of [`RecurrentKernel::forward_into`], after
    /// [`SequenceInput::validate`], whose checks it does not repeat: it sizes the buffers
    /// from `input`'s `T` and `B`, whatever its data holds.
    ///
    /// A buffer that must grow is allocated anew, zero-filled by the allocator, rather than
    /// grown in place: there is nothing in it to keep, and fresh zeroed memory costs no pass
    /// over it.
    ///
    /// ```
    /// use gru_core::{Cell, GruVariant, ModelConfig, SequenceInput, SequenceOutput};
    /// let config = ModelConfig {
    ///     cell: Cell::Gru(GruVariant::ResetAfter),
    ///     input_size: 1,
    ///     hidden_size: 2,
    ///     num_layers: 1,
    ///     bidirectional: false,
    /// };
    /// let x = [0.0f32; 3 * 2]; // T = 3, B = 2, I = 1
    /// let mut out = SequenceOutput::empty();
    /// out.prepare(&config, &SequenceInput::new(&x, 3, 2));
    /// assert_eq!(out.output_shape(), [3, 2, 2]);
    /// out.output.fill(1.0);
    /// // Sequence 1 has one valid step: its rows at steps 1 and 2 are zeroed.
    /// out.prepare(&config, &SequenceInput::new(&x, 3, 2).lengths(&[3, 1]));
    /// assert_eq!(out.output, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    /// ```
    ///
    /// [`RecurrentKernel::forward_into`]: crate::RecurrentKernel::forward_into
    pub fn prepare(&mut self, config: &ModelConfig, input: &SequenceInput<'_>) {
        let layout = input.layout();
        let state_len = config.num_states() * input.batch * config.hidden_size;
        fit(&mut self.output, layout.rows() * config.output_size());
        fit(&mut self.h_n, state_len);
        if config.cell.has_cell_state() {
            fit(self.c_n.get_or_insert_with(Vec::new), state_len);
        } else {
            self.c_n = None;
        }
        self.layout = layout;
        self.output_size = config.output_size();
        self.num_states = config.num_states();
        self.hidden_size = config.hidden_size;
        let width = self.output_size;
        for b in 0..input.batch {
            // Not `valid_len`, which would panic on an unvalidated input with too few lengths.
            let valid = input.lengths.and_then(|l| l.get(b).copied());
            for t in valid.unwrap_or(input.seq_len)..input.seq_len {
                let row = layout.row(t, b);
                self.output[row * width..(row + 1) * width].fill(0.0);
            }
        }
    }

    /// Shape of [`output`](Self::output).
    pub fn output_shape(&self) -> [usize; 3] {
        self.layout.shape(self.output_size)
    }

    /// Shape of [`h_n`](Self::h_n) and [`c_n`](Self::c_n).
    pub fn state_shape(&self) -> [usize; 3] {
        [self.num_states, self.layout.batch, self.hidden_size]
    }
}

impl Default for SequenceOutput {
    /// [`SequenceOutput::empty`].
    fn default() -> Self {
        Self::empty()
    }
}

/// `buffer` at `len` values: truncated or grown in place when its allocation holds them,
/// else a fresh zeroed allocation.
fn fit(buffer: &mut Vec<f32>, len: usize) {
    if buffer.capacity() < len {
        *buffer = vec![0.0; len];
    } else {
        buffer.resize(len, 0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cell, GruVariant};
    use proptest::prelude::*;

    fn config(cell: Cell, layers: usize, bidirectional: bool) -> ModelConfig {
        ModelConfig {
            cell,
            input_size: 3,
            hidden_size: 4,
            num_layers: layers,
            bidirectional,
        }
    }

    #[test]
    fn validate_names_the_bad_buffer() {
        let gru = config(Cell::Gru(GruVariant::ResetAfter), 2, true);
        let x = vec![0.0; 5 * 2 * 3];
        let good_h0 = vec![0.0; 4 * 2 * 4];
        assert!(
            SequenceInput::new(&x, 5, 2)
                .h0(&good_h0)
                .validate(&gru)
                .is_ok()
        );
        let err = SequenceInput::new(&x[1..], 5, 2)
            .validate(&gru)
            .unwrap_err();
        assert!(err.to_string().contains("`input`"), "{err}");
        let err = SequenceInput::new(&x, 5, 2)
            .h0(&good_h0[1..])
            .validate(&gru)
            .unwrap_err();
        assert!(
            err.to_string().contains("`h0`") && err.to_string().contains("[4, 2, 4]"),
            "{err}"
        );
        let err = SequenceInput::new(&x, 5, 2)
            .c0(&good_h0)
            .validate(&gru)
            .unwrap_err();
        assert!(err.to_string().contains("c0"), "{err}");
        let err = SequenceInput::new(&x, 5, 2)
            .lengths(&[5])
            .validate(&gru)
            .unwrap_err();
        assert!(err.to_string().contains("`lengths`"), "{err}");
        let err = SequenceInput::new(&x, 5, 2)
            .lengths(&[5, 6])
            .validate(&gru)
            .unwrap_err();
        assert_eq!(
            err,
            Error::SequenceLength {
                batch_index: 1,
                length: 6,
                seq_len: 5
            }
        );
        let lstm = config(Cell::Lstm, 2, true);
        let err = SequenceInput::new(&x, 5, 2)
            .c0(&good_h0[2..])
            .validate(&lstm)
            .unwrap_err();
        assert!(err.to_string().contains("`c0`"), "{err}");
    }

    #[test]
    fn sizes_past_memory_are_errors_not_overflows() {
        let gru = config(Cell::Gru(GruVariant::ResetAfter), 2, true);
        // T·B·I wraps to 0 = the data's length: a mismatch, not a pass.
        let half = 1usize << (usize::BITS / 2);
        let err = SequenceInput::new(&[], half, half)
            .validate(&gru)
            .unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        // With T = 0 the input bounds nothing: the final states' size is checked itself.
        let err = SequenceInput::new(&[], 0, usize::MAX / 4)
            .validate(&gru)
            .unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge { tensor, .. } if tensor == "h_n"),
            "{err}"
        );
        // A count that fits usize but whose f32s would pass isize::MAX bytes.
        let one_state = config(Cell::Gru(GruVariant::ResetAfter), 1, false);
        let batch_past_limit = (isize::MAX as usize / 4 + 1).div_ceil(4);
        let err = SequenceInput::new(&[], 0, batch_past_limit)
            .validate(&one_state)
            .unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        assert!(
            SequenceInput::new(&[], 0, batch_past_limit - 1)
                .validate(&one_state)
                .is_ok()
        );
    }

    #[test]
    fn empty_time_and_batch_are_valid() {
        let gru = config(Cell::Gru(GruVariant::ResetBefore), 1, false);
        assert!(SequenceInput::new(&[], 0, 3).validate(&gru).is_ok());
        assert!(SequenceInput::new(&[], 7, 0).validate(&gru).is_ok());
    }

    proptest! {
        #[test]
        fn layout_rows_are_a_bijection(t_len in 0usize..6, batch in 0usize..6, batch_first: bool) {
            let layout = SequenceLayout { seq_len: t_len, batch, batch_first };
            let mut seen = vec![false; layout.rows()];
            for t in 0..t_len {
                for b in 0..batch {
                    let row = layout.row(t, b);
                    prop_assert!(row < layout.rows() && !seen[row]);
                    seen[row] = true;
                }
            }
            prop_assert_eq!(layout.shape(7).iter().product::<usize>(), layout.rows() * 7);
        }

        #[test]
        fn output_shapes_follow_the_config(
            layers in 1usize..4, bidirectional: bool, lstm: bool,
            t_len in 0usize..5, batch in 0usize..5, batch_first: bool,
        ) {
            let cell = if lstm { Cell::Lstm } else { Cell::Gru(GruVariant::ResetAfter) };
            let cfg = config(cell, layers, bidirectional);
            let x = vec![0.0; t_len * batch * cfg.input_size];
            let input = SequenceInput::new(&x, t_len, batch).batch_first(batch_first);
            prop_assert!(input.validate(&cfg).is_ok());
            let out = SequenceOutput::zeros(&cfg, &input);
            let d = cfg.num_directions();
            let expected = if batch_first { [batch, t_len, d * 4] } else { [t_len, batch, d * 4] };
            prop_assert_eq!(out.output_shape(), expected);
            prop_assert_eq!(out.state_shape(), [layers * d, batch, 4]);
            prop_assert_eq!(out.output.len(), expected.iter().product::<usize>());
            prop_assert_eq!(out.c_n.is_some(), lstm);
        }

        #[test]
        fn prepared_buffers_match_fresh_ones_in_shape_and_padding(
            layers in 1usize..3, bidirectional: bool, lstm: bool, before_lstm: bool,
            t_len in 0usize..5, batch in 0usize..5, batch_first: bool,
            before_t in 0usize..6, before_batch in 0usize..6,
            lengths in proptest::collection::vec(0usize..5, 5),
        ) {
            let cell = |lstm| if lstm { Cell::Lstm } else { Cell::Gru(GruVariant::ResetAfter) };
            let cfg = config(cell(lstm), layers, bidirectional);
            let lengths: Vec<usize> = lengths[..batch].iter().map(|&l| l.min(t_len)).collect();
            let x = vec![0.0; t_len * batch * cfg.input_size];
            let input = SequenceInput::new(&x, t_len, batch)
                .batch_first(batch_first)
                .lengths(&lengths);
            // Buffers from an earlier call of another shape, every value dirty.
            let before_cfg = config(cell(before_lstm), 2, true);
            let before_x = vec![0.0; before_t * before_batch * 3];
            let mut out = SequenceOutput::zeros(
                &before_cfg,
                &SequenceInput::new(&before_x, before_t, before_batch),
            );
            out.output.fill(f32::NAN);
            out.h_n.fill(f32::NAN);
            let capacity = out.output.capacity();
            out.prepare(&cfg, &input);
            let fresh = SequenceOutput::zeros(&cfg, &input);
            prop_assert_eq!(out.output_shape(), fresh.output_shape());
            prop_assert_eq!(out.state_shape(), fresh.state_shape());
            prop_assert_eq!(out.output.len(), fresh.output.len());
            prop_assert_eq!(out.h_n.len(), fresh.h_n.len());
            prop_assert_eq!(out.c_n.as_ref().map(Vec::len), fresh.c_n.as_ref().map(Vec::len));
            prop_assert_eq!(out.layout, fresh.layout);
            if fresh.output.len() <= capacity {
                prop_assert_eq!(out.output.capacity(), capacity, "the allocation is reused");
            }
            let width = fresh.output_size;
            for (b, &length) in lengths.iter().enumerate() {
                for t in length..t_len {
                    let row = &out.output[input.layout().row(t, b) * width..][..width];
                    prop_assert!(row.iter().all(|&v| v.to_bits() == 0), "t {t} b {b}");
                }
            }
        }
    }
}
