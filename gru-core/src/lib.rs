//! The shared vocabulary of the GRU kernels workspace.
//!
//! - [`cell`]: what a GRU (two variants) and an LSTM compute, with the equations;
//! - [`LayerWeights`]: one layer's weights in PyTorch's layout, and [`layout`]: converters from
//!   ONNX's layout and the design document's concatenated layout;
//! - [`Model`]: a stack of layers, one or two directions;
//! - [`sequence`]: inputs, outputs and PyTorch's shape conventions;
//! - [`checkpoint`]: loading a PyTorch `state_dict` saved with safetensors;
//! - [`RecurrentKernel`]: the trait every kernel (reference, SIMD) implements;
//! - [`Error`]: what can go wrong, always naming the tensor or argument at fault.
//!
//! ```
//! use gru_core::{Cell, CellKind, GruVariant, LayerWeights, Model, SequenceInput};
//! let weights = LayerWeights::new(CellKind::Gru, 2, 3, vec![0.5; 18], vec![0.1; 27], None, None)?;
//! let model = Model::single_layer(Cell::Gru(GruVariant::ResetAfter), weights)?;
//! let x = [1.0f32, 2.0, 3.0, 4.0]; // T = 2, B = 1, I = 2
//! SequenceInput::new(&x, 2, 1).validate(model.config())?;
//! # Ok::<(), gru_core::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod cell;
pub mod checkpoint;
pub mod error;
pub mod kernel;
pub mod layout;
pub mod model;
pub mod sequence;
pub mod weights;

pub use cell::{Cell, CellKind, GruVariant};
pub use checkpoint::{load_model, load_model_file};
pub use error::{Error, Result};
pub use kernel::RecurrentKernel;
pub use layout::{ConcatenatedGru, OnnxWeights};
pub use model::{Direction, Model, ModelConfig};
pub use sequence::{SequenceInput, SequenceLayout, SequenceOutput};
pub use weights::LayerWeights;
