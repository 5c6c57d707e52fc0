//! The one error type of the workspace.

use std::fmt;

/// Everything that can go wrong when building a model, loading weights or running a kernel.
///
/// Every variant names the thing that is wrong (a tensor, an argument) so that the message
/// alone is enough to fix the input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A tensor or buffer has the wrong shape (or, for flat buffers, the wrong length).
    Shape {
        /// Which tensor or argument, e.g. `"weight_ih_l0"` or `"h0"`.
        tensor: String,
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was given.
        actual: Vec<usize>,
    },
    /// A tensor the model needs is not in the file.
    MissingTensor {
        /// Full name of the tensor that was looked for.
        tensor: String,
    },
    /// A tensor looks like part of the model but does not fit it
    /// (a layer beyond the others, a projection weight, a stray direction).
    UnexpectedTensor {
        /// Full name of the tensor.
        tensor: String,
        /// Why it does not fit.
        reason: String,
    },
    /// A tensor has an element type that cannot be converted to `f32`.
    DType {
        /// Full name of the tensor.
        tensor: String,
        /// The element type found, as the file names it.
        dtype: String,
    },
    /// The file is not a valid safetensors file (truncated, corrupt header, bad offsets).
    Format(String),
    /// A sequence length is outside `0..=seq_len`.
    SequenceLength {
        /// Index of the sequence in the batch.
        batch_index: usize,
        /// The length given.
        length: i64,
        /// The padded sequence length `T`.
        seq_len: usize,
    },
    /// A configuration that makes no sense (zero hidden size, zero layers, a mismatched cell,
    /// an argument that does not apply to this cell).
    Config(String),
    /// A feature that is not available in this build or this kernel.
    Unsupported(String),
    /// A file could not be read.
    Io {
        /// The file.
        path: String,
        /// What the operating system said.
        message: String,
    },
}

/// Shorthand for `Result<T, gru_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape {
                tensor,
                expected,
                actual,
            } => write!(
                f,
                "tensor `{tensor}` has shape {actual:?}, expected {expected:?}"
            ),
            Error::MissingTensor { tensor } => write!(f, "tensor `{tensor}` is missing"),
            Error::UnexpectedTensor { tensor, reason } => {
                write!(f, "tensor `{tensor}` does not fit the model: {reason}")
            }
            Error::DType { tensor, dtype } => write!(
                f,
                "tensor `{tensor}` has element type {dtype}; expected F32, F16, BF16 or F64"
            ),
            Error::Format(message) => write!(f, "not a valid safetensors file: {message}"),
            Error::SequenceLength {
                batch_index,
                length,
                seq_len,
            } => write!(
                f,
                "sequence length {length} of batch entry {batch_index} is outside 0..={seq_len}"
            ),
            Error::Config(message) => write!(f, "invalid configuration: {message}"),
            Error::Unsupported(message) => write!(f, "unsupported: {message}"),
            Error::Io { path, message } => write!(f, "cannot read {path}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// Returns a [`Error::Shape`] unless `actual_len` equals the product of `expected`.
///
/// Flat buffers carry no shape of their own, so a wrong length is reported as the flat length
/// against the expected shape.
pub(crate) fn check_len(tensor: &str, expected: &[usize], actual_len: usize) -> Result<()> {
    if expected.iter().product::<usize>() == actual_len {
        Ok(())
    } else {
        Err(Error::Shape {
            tensor: tensor.to_owned(),
            expected: expected.to_vec(),
            actual: vec![actual_len],
        })
    }
}
