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
    /// A tensor or buffer would hold more elements than any buffer can (its element count
    /// overflows, or its `f32`s would take more than `isize::MAX` bytes): a dimension is wrong.
    TooLarge {
        /// Which tensor or buffer, e.g. `"output"` or `"weight_hh"`.
        tensor: String,
        /// The shape that was asked for.
        shape: Vec<usize>,
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
            Error::TooLarge { tensor, shape } => write!(
                f,
                "tensor `{tensor}` of shape {shape:?} would be larger than memory can address"
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

/// The number of elements of a tensor of shape `shape`, or [`Error::TooLarge`] naming `tensor`
/// when that number overflows `usize` or its `f32`s would take more than `isize::MAX` bytes,
/// more than any buffer can hold.
///
/// Kernels call this before they size their buffers from dimensions they were given, so that
/// a wrong dimension is an error rather than an overflow.
///
/// ```
/// use gru_core::error::element_count;
/// assert_eq!(element_count("h_n", &[2, 3, 4])?, 24);
/// assert!(element_count("h_n", &[usize::MAX, 2, 1]).is_err());
/// # Ok::<(), gru_core::Error>(())
/// ```
pub fn element_count(tensor: &str, shape: &[usize]) -> Result<usize> {
    checked_product(shape)
        .filter(|&count| count <= isize::MAX as usize / std::mem::size_of::<f32>())
        .ok_or_else(|| Error::TooLarge {
            tensor: tensor.to_owned(),
            shape: shape.to_vec(),
        })
}

fn checked_product(shape: &[usize]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |count, &dim| count.checked_mul(dim))
}

/// Returns a [`Error::Shape`] unless `actual_len` equals the product of `expected`.
///
/// Flat buffers carry no shape of their own, so a wrong length is reported as the flat length
/// against the expected shape. A product that overflows matches no length.
pub(crate) fn check_len(tensor: &str, expected: &[usize], actual_len: usize) -> Result<()> {
    if checked_product(expected) == Some(actual_len) {
        Ok(())
    } else {
        Err(Error::Shape {
            tensor: tensor.to_owned(),
            expected: expected.to_vec(),
            actual: vec![actual_len],
        })
    }
}
