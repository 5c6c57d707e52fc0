//! Vectorized logistic sigmoid and hyperbolic tangent on [`f32x8`], branch-free, for the gate
//! epilogues of every kernel.
//!
//! # Method
//!
//! Both functions are built on one exponential, [`exp_bounded`]:
//! `e^x = 2^k · e^r` with `k = round(x · log2 e)` and `r = x − k·ln 2 ∈ [−ln2/2, ln2/2]`,
//! reduced in two steps (Cody–Waite): `LN2_HI = 355/512` has 9 significant bits, so `k·LN2_HI`
//! and `x − k·LN2_HI` are exact, and `LN2_LO = ln 2 − LN2_HI` rounded to f32 carries the rest.
//! `e^r = 1 + (r + r²·Q(r))` where `Q(r) = Σ_{n=2..7} r^(n−2)/n!` is the Taylor series cut
//! after `r^7/7!`: the remainder is at most `|r|^8/8! · e^|r| ≤ 7.3e−9`, a relative error of
//! 0.17 ulp at `e^r ≥ 0.707`. Evaluating `r + r²·Q` before adding 1 keeps the rounding noise of
//! `Q` far below the step between neighbouring inputs, which is what makes the result monotone.
//! `2^k` is assembled in the exponent bits (`k ∈ [−126, 127]`, guaranteed by the callers' clamps).
//!
//! **sigmoid**: with `t = e^−|x|` (so `t ∈ (0, 1]`, never overflowing),
//! `σ(x) = n / (1 + t)` with `n = 1` for `x ≥ 0` and `n = t` for `x < 0`. The sum `1 + t` is
//! kept exactly as `d + d_lo` (Fast2Sum), the quotient `q = n · (1/d)` is corrected once with
//! the exact residual `n − q·d − q·d_lo` (two FMAs), so the division contributes about half an
//! ulp and the result is a monotone function of `t`. Inputs below −87.5 give 0: their true
//! value is below `f32::MIN_POSITIVE` (1.0e−38 at −87.5).
//!
//! **tanh**: odd, so computed on `a = |x|` and given the sign of `x` (exact ±0).
//! For `a < 0.5493164` (just above atanh ½) `tanh a = a + a³·P(a²)` with `P` a degree-4
//! polynomial fitted for minimal maximum relative error by `tools/fit_tanh_polynomial.py`
//! (Lawson's reweighted least squares on 20001 Chebyshev points; 0.09 ulp after rounding the
//! coefficients to f32). Above it, `tanh a = 1 − 2/(1 + e^(2a))` with `a` clamped to 9.5 (tanh
//! rounds to 1 from 9.01 on); there `tanh a ≥ ½` so the subtraction loses nothing.
//!
//! # Accuracy
//!
//! Measured by `gru accuracy --exhaustive` over all 2^32 inputs against f64 `exp`/`tanh`
//! rounded to f32 (see the README for the figures of the current build). Guaranteed by tests:
//! at most 2 ulp in the x86-64-v3 build (AVX2 + FMA) and 4 ulp in a build without target
//! features (where `mul_add` rounds twice), exact special values, outputs in `[0, 1]` and
//! `[−1, 1]`, monotone.
//!
//! ```
//! use gru_simd::activation::{sigmoid, sigmoid_slice, tanh};
//! use wide::f32x8;
//! let x = f32x8::from([0.0, 1.0, -1.0, 20.0, -20.0, f32::INFINITY, f32::NEG_INFINITY, -0.0]);
//! let s = sigmoid(x).to_array();
//! assert_eq!((s[0], s[5], s[6]), (0.5, 1.0, 0.0));
//! assert_eq!(tanh(x).to_array()[7].to_bits(), (-0.0f32).to_bits());
//! let mut v = vec![0.0f32; 11];
//! sigmoid_slice(&mut v);
//! assert!(v.iter().all(|&y| y == 0.5));
//! ```

pub mod accuracy;

use wide::{f32x8, i32x8};

const LN2_HI: f32 = 0.693_359_4; // 355/512 exactly
const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − 355/512, rounded to f32

/// `1/n!` for n = 2..=7: the Taylor coefficients of `Q(r) = (e^r − 1 − r) / r²`.
const INV_FACTORIAL: [f32; 6] = [
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
];

/// The sigmoid's argument clamp: `σ(−87.5) ≈ 1.0e−38 < f32::MIN_POSITIVE`, and `k` stays
/// at least −126 in [`exp_bounded`].
const SIGMOID_CUTOFF: f32 = 87.5;
/// Where tanh switches from the polynomial to the exponential form.
const TANH_SWITCH: f32 = 0.549_316_4;
/// tanh(x) rounds to 1 in f32 for x ≥ 9.01; clamping keeps `e^(2a)` finite.
const TANH_CLAMP: f32 = 9.5;
/// The polynomial `P(s)` of the small-argument tanh, `tanh a ≈ a + a³·P(a²)`, lowest first.
const TANH_P: [f32; 5] = [
    -0.333_333_16,
    0.133_325_93,
    -0.053_853_083,
    0.021_075_102,
    -0.006_279_393_6,
];

/// `e^x` for `x ∈ [−87.5, 88.7]` (callers clamp): `k ∈ [−126, 127]` keeps `2^k` normal.
#[inline(always)]
fn exp_bounded(x: f32x8) -> f32x8 {
    let k = (x * f32x8::splat(std::f32::consts::LOG2_E)).round_ties_even();
    let r = k.mul_neg_add(f32x8::splat(LN2_HI), x);
    let r = k.mul_neg_add(f32x8::splat(LN2_LO), r);
    let mut q = f32x8::splat(INV_FACTORIAL[5]);
    for &c in INV_FACTORIAL[..5].iter().rev() {
        q = q.mul_add(r, f32x8::splat(c));
    }
    let expm1_r = (r * r).mul_add(q, r);
    let scale: f32x8 = wide::bytemuck::cast((k.fast_round_int() + i32x8::splat(127)) << 23);
    (expm1_r + f32x8::ONE) * scale
}

/// The logistic sigmoid `1 / (1 + e^−x)` of eight lanes. See the [module docs](self).
#[inline(always)]
pub fn sigmoid(x: f32x8) -> f32x8 {
    let t = exp_bounded(-x.abs().fast_min(f32x8::splat(SIGMOID_CUTOFF)));
    let d = f32x8::ONE + t;
    let d_lo = (f32x8::ONE - d) + t; // exact: 1 ≥ t (Fast2Sum)
    let n = x.simd_ge(f32x8::ZERO).select(f32x8::ONE, t);
    let recip = f32x8::ONE / d;
    let q = n * recip;
    let residual = q.mul_neg_add(d, n);
    let residual = q.mul_neg_add(d_lo, residual);
    let y = residual.mul_add(recip, q);
    let y = x
        .simd_lt(f32x8::splat(-SIGMOID_CUTOFF))
        .select(f32x8::ZERO, y);
    x.is_nan().select(x, y)
}

/// The hyperbolic tangent of eight lanes. See the [module docs](self).
#[inline(always)]
pub fn tanh(x: f32x8) -> f32x8 {
    let a = x.abs();
    let s = a * a;
    let mut p = f32x8::splat(TANH_P[4]);
    for &c in TANH_P[..4].iter().rev() {
        p = p.mul_add(s, f32x8::splat(c));
    }
    let small = (a * s).mul_add(p, a);
    let e = exp_bounded(f32x8::splat(2.0) * a.fast_min(f32x8::splat(TANH_CLAMP)));
    let large = f32x8::ONE - f32x8::splat(2.0) / (f32x8::ONE + e);
    let magnitude = a.simd_lt(f32x8::splat(TANH_SWITCH)).select(small, large);
    let y = magnitude | (x & f32x8::splat(-0.0));
    x.is_nan().select(x, y)
}

/// Applies `f` to every element of `xs` in place, eight at a time; the tail goes through a
/// zero-padded register so nothing outside `xs` is read or written.
#[inline(always)]
fn map_in_place(xs: &mut [f32], f: impl Fn(f32x8) -> f32x8) {
    let mut chunks = xs.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let lanes: [f32; 8] = (*chunk).try_into().expect("chunk of 8");
        chunk.copy_from_slice(&f(f32x8::from(lanes)).to_array());
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut lanes = [0.0f32; 8];
        lanes[..tail.len()].copy_from_slice(tail);
        let len = tail.len();
        tail.copy_from_slice(&f(f32x8::from(lanes)).to_array()[..len]);
    }
}

/// [`sigmoid`] of every element, in place; any length, any alignment.
pub fn sigmoid_slice(xs: &mut [f32]) {
    map_in_place(xs, sigmoid);
}

/// [`tanh`] of every element, in place; any length, any alignment.
pub fn tanh_slice(xs: &mut [f32]) {
    map_in_place(xs, tanh);
}

#[cfg(test)]
mod tests;
