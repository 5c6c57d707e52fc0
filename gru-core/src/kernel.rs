//! The trait every kernel implements, so that tests and benchmarks drive the reference and
//! the fast kernels alike.

use crate::error::Result;
use crate::model::ModelConfig;
use crate::sequence::{SequenceInput, SequenceOutput};

/// A model prepared for one kernel, able to run whole sequences.
///
/// Kernels implement [`forward_into`](Self::forward_into), which writes into buffers the
/// caller keeps; [`forward`](Self::forward) returns new ones. Both take `&mut self` so that a
/// kernel can keep and reuse a workspace between calls.
pub trait RecurrentKernel {
    /// Short name of the kernel, as the `gru` command spells it (`ref`, `simd`).
    fn name(&self) -> &'static str;

    /// The shape of the model this kernel runs.
    fn config(&self) -> &ModelConfig;

    /// Runs the model over a sequence: every layer, every direction, honouring `h0`, `c0`,
    /// lengths and `batch_first` as documented in [`crate::sequence`], into `out`.
    ///
    /// `out` is shaped for this call ([`SequenceOutput::prepare`]); its buffers are reused
    /// when they are large enough, so a caller that keeps one `out` for calls of one shape
    /// allocates nothing per call for the results. An empty one
    /// ([`SequenceOutput::empty`]) is shaped on the first call.
    ///
    /// Errors when a buffer's length does not match the model (see
    /// [`SequenceInput::validate`]), before anything is written: `out` is then as it was.
    /// NaN and infinities in the data propagate through the equations; they are not errors.
    fn forward_into(&mut self, input: &SequenceInput<'_>, out: &mut SequenceOutput) -> Result<()>;

    /// Runs the model over a sequence into new buffers: [`forward_into`](Self::forward_into)
    /// into an empty [`SequenceOutput`].
    ///
    /// ```
    /// use gru_core::{Cell, CellKind, GruVariant, LayerWeights, Model, RecurrentKernel};
    /// use gru_core::{ModelConfig, Result, SequenceInput, SequenceOutput};
    ///
    /// /// A kernel whose output is its input, to show the two calls.
    /// struct Echo(ModelConfig);
    ///
    /// impl RecurrentKernel for Echo {
    ///     fn name(&self) -> &'static str {
    ///         "echo"
    ///     }
    ///     fn config(&self) -> &ModelConfig {
    ///         &self.0
    ///     }
    ///     fn forward_into(&mut self, input: &SequenceInput<'_>, out: &mut SequenceOutput)
    ///     -> Result<()> {
    ///         input.validate(&self.0)?;
    ///         out.prepare(&self.0, input);
    ///         out.output.copy_from_slice(input.data);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let weights = LayerWeights::new(CellKind::Gru, 2, 2, vec![0.0; 12], vec![0.0; 12], None, None)?;
    /// let model = Model::single_layer(Cell::Gru(GruVariant::ResetAfter), weights)?;
    /// let mut echo = Echo(*model.config());
    /// let x = [1.0, 2.0, 3.0, 4.0]; // T = 2, B = 1, I = 2
    /// assert_eq!(echo.forward(&SequenceInput::new(&x, 2, 1))?.output, x);
    /// let mut out = SequenceOutput::empty();
    /// for _ in 0..3 {
    ///     echo.forward_into(&SequenceInput::new(&x, 2, 1), &mut out)?;
    /// }
    /// assert_eq!(out.output, x);
    /// # Ok::<(), gru_core::Error>(())
    /// ```
    fn forward(&mut self, input: &SequenceInput<'_>) -> Result<SequenceOutput> {
        let mut out = SequenceOutput::empty();
        self.forward_into(input, &mut out)?;
        Ok(out)
    }
}
