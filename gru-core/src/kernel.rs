//! The trait every kernel implements, so that tests and benchmarks drive the reference and
//! the fast kernels alike.

use crate::error::Result;
use crate::model::ModelConfig;
use crate::sequence::{SequenceInput, SequenceOutput};

/// A model prepared for one kernel, able to run whole sequences.
///
/// `forward` takes `&mut self` so that a kernel can keep and reuse a workspace between calls.
pub trait RecurrentKernel {
    /// Short name of the kernel, as the `gru` command spells it (`ref`, `simd`).
    fn name(&self) -> &'static str;

    /// The shape of the model this kernel runs.
    fn config(&self) -> &ModelConfig;

    /// Runs the model over a sequence: every layer, every direction, honouring `h0`, `c0`,
    /// lengths and `batch_first` as documented in [`crate::sequence`].
    ///
    /// Errors when a buffer's length does not match the model (see
    /// [`SequenceInput::validate`]). NaN and infinities in the data propagate through the
    /// equations; they are not errors.
    fn forward(&mut self, input: &SequenceInput<'_>) -> Result<SequenceOutput>;
}
