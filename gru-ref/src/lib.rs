//! The scalar reference for GRU and LSTM inference: the oracle the fast kernels are tested
//! against.
//!
//! Plain loops written straight from the equations in [`gru_core::cell`], dot products and
//! gate arithmetic in `f64`, the state stored as `f32` between steps (as every `f32` framework
//! stores it). No SIMD, no blocking, no reordering: each line can be read next to its formula.
//!
//! ```
//! use gru_core::{Cell, CellKind, GruVariant, LayerWeights, Model, RecurrentKernel, SequenceInput};
//! use gru_ref::ReferenceKernel;
//! let weights = LayerWeights::new(CellKind::Gru, 1, 1, vec![1.0; 3], vec![0.0; 3], None, None)?;
//! let model = Model::single_layer(Cell::Gru(GruVariant::ResetAfter), weights)?;
//! let mut kernel = ReferenceKernel::new(model);
//! let out = kernel.forward(&SequenceInput::new(&[0.0], 1, 1))?;
//! // x = 0, h = 0: r = z = 0.5, n = tanh(0) = 0, h' = 0.
//! assert_eq!(out.h_n, vec![0.0]);
//! # Ok::<(), gru_core::Error>(())
//! ```
#![forbid(unsafe_code)]

mod cell;
mod sequence;

pub use cell::{gru_cell_step, lstm_cell_step};
pub use sequence::ReferenceKernel;
