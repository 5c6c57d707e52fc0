//! Fast CPU kernels for GRU and LSTM inference.
//!
//! The shape of the code follows the algorithm:
//! - [`packing`]: weights packed once into 8-unit panels with the gates interleaved, each
//!   panel contiguous, or in pairs for 16-lane tiles ([`packing::PanelLayout`]);
//! - [`projection`]: the input projection of a whole chunk of steps (or of one streaming step);
//! - [`microkernel`]: the register-tiled product over prepacked panels, in 8-lane vectors
//!   (`wide`), and in 16-lane AVX-512 registers over pairs of panels
//!   (`microkernel::avx512`, x86-64 only, chosen at run time);
//! - [`epilogue`]: each cell's gate math applied to a tile still in registers;
//! - [`tiles`]: the loop nest that feeds tiles to the microkernel, one loop nest for both
//!   vector widths;
//! - [`step`]: one step of one layer for a range of rows and panels;
//! - [`sequence`]: the driver over layers, directions and chunks of time ([`SimdModel`]);
//! - [`stream`]: one step at a time with the state carried ([`Stream`]);
//! - [`threading`]: the worker pool, the barrier, and how work is split;
//! - [`balance`]: how a large batch's rows follow the workers' measured speeds;
//! - [`activation`]: vectorized sigmoid and tanh, with their accuracy measurement;
//! - [`simd_level()`](simd_level()): the instruction set this build targets and what the CPU
//!   offers.

pub mod activation;
pub mod balance;
pub mod epilogue;
pub mod microkernel;
pub mod packing;
pub mod projection;
pub mod sequence;
pub mod simd_level;
pub mod step;
pub mod stream;
pub mod threading;
pub mod tiles;

pub use sequence::{Gru, Lstm, SimdModel};
pub use simd_level::{SimdLevel, SimdSupport, simd_level};
pub use stream::Stream;
