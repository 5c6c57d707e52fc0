//! Fast CPU kernels for GRU and LSTM inference.
//!
//! - [`activation`]: vectorized sigmoid and tanh on `wide::f32x8`, with their accuracy
//!   measurement;
//! - [`simd_level()`](simd_level()): the instruction set this build targets and what the CPU offers.

pub mod activation;
pub mod simd_level;

pub use simd_level::{SimdLevel, SimdSupport, simd_level};
