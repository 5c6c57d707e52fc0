//! Vectorized logistic sigmoid and hyperbolic tangent on [`f32x8`], branch-free, for the gate
//! epilogues of every kernel.
//!
//! The algorithm is written once over a small trait of lane vectors, implemented for
//! [`f32x8`] and, on x86-64, for 16-lane AVX-512 registers (`avx512.rs`, used by the 16-lane
//! tiles' epilogues): every width does the same operations on each lane in the same order.
//!
//! # Method
//!
//! Both functions are built on one exponential:
//! `e^u = 2^k · e^r` with `k = round(u · log2 e)` and `r = u − k·ln 2 ∈ [−ln2/2, ln2/2]`.
//! The rounding adds `1.5·2^23 + 127` (one FMA): the sum's low mantissa bits are then `k + 127`,
//! which shifted into the exponent field give `2^k` with no float-to-int conversion. The
//! reduction is Cody–Waite in two steps: `LN2_HI = 355/512` has 9 significant bits, so
//! `k·LN2_HI` and `u − k·LN2_HI` are exact, and `LN2_LO = ln 2 − LN2_HI` (f32) carries the rest.
//! `e^r = 1 + (r + r²·Q(r))` with `Q` of degree 4, fitted for minimal maximum relative error by
//! `tools/fit_exp_polynomial.py` (Lawson's reweighted least squares on 20001 Chebyshev points):
//! 0.064 ulp after rounding the coefficients to f32. Adding `r + r²·Q` to 1 last keeps the
//! rounding noise of `Q` far below the step between neighbouring inputs, which keeps the
//! result monotone.
//!
//! **sigmoid**: `σ(x) = 1 / (1 + e^−x)`, one correctly rounded division. Each step is monotone
//! (the exponential, the rounded sum, the rounded quotient), so σ is. The argument `−x` is
//! clamped to `[−87.33, 89]`: at −87.33 the exponential is still normal and σ already rounds
//! to 1; from 88.38 on `2^k` is `+∞`, so `e^−x = ∞` and σ = 0 exactly (the true value there is
//! below `f32::MIN_POSITIVE`, where the bound is absolute).
//!
//! **tanh**: odd, so computed on `a = |x|` and given the sign of `x` (exact ±0).
//! For `a < 0.5493164` (just above atanh ½) `tanh a = a + a³·P(a²)` with `P` of degree 4,
//! fitted the same way by `tools/fit_tanh_polynomial.py` (0.09 ulp with f32 coefficients).
//! Above it `tanh a = 1 − 2/(1 + e^(2a))` with `2a` clamped to 19 (tanh rounds to 1 from 9.01
//! on); there `tanh a ≥ ½`, so the subtraction loses nothing, and each step is monotone.
//!
//! NaN flows through unaided: `minps`/`maxps` return their second operand when either is NaN,
//! and the clamps put the data there.
//!
//! # Accuracy
//!
//! Measured by `gru accuracy --exhaustive` over all 2^32 inputs against f64 `exp`/`tanh`
//! rounded to f32 (see the README for the figures of the current build). Guaranteed by tests:
//! at most 2 ulp in the x86-64-v3 build (AVX2 + FMA) and 4 ulp in a build without target
//! features (where `mul_add` rounds twice), exact special values, outputs in `[0, 1]` and
//! `[−1, 1]`, monotone; the 16-lane form bit for bit the 8-lane one in a build with FMA (and
//! within the FMA build's bounds otherwise, since its `mul_add` is always fused).
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
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

use std::ops::{Add, BitAnd, BitOr, BitXor, Div, Mul, Sub};

use wide::{f32x8, i32x8};

const LN2_HI: f32 = 0.693_359_4; // 355/512 exactly
const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − 355/512, rounded to f32
/// `1.5·2^23 + 127`: adding it rounds to an integer and leaves `k + 127` in the low bits.
const ROUND_AND_BIAS: f32 = 12_582_912.0 + 127.0;

/// `Q(r) ≈ (e^r − 1 − r) / r²` on `[−ln2/2, ln2/2]`, lowest degree first.
const EXP_Q: [f32; 5] = [
    0.499_999_94,
    0.166_665_21,
    0.041_668_39,
    0.008_368_71,
    0.001_381_461_3,
];

/// `−x` is clamped to `[SIGMOID_ARG_MIN, SIGMOID_ARG_MAX]` (see the module docs).
const SIGMOID_ARG_MIN: f32 = -87.33;
const SIGMOID_ARG_MAX: f32 = 89.0;
/// Where tanh switches from the polynomial to the exponential form.
const TANH_SWITCH: f32 = 0.549_316_4;
/// tanh(x) rounds to 1 in f32 for x ≥ 9.01; clamping `2a` keeps `e^(2a)` finite.
const TANH_TWICE_ARG_MAX: f32 = 19.0;
/// `P(s) ≈ (tanh a − a) / a³` with `s = a²`, on `[0, TANH_SWITCH)`, lowest degree first.
const TANH_P: [f32; 5] = [
    -0.333_333_16,
    0.133_325_93,
    -0.053_853_083,
    0.021_075_102,
    -0.006_279_393_6,
];

/// A vector of f32 lanes, as the activations need it: the one algorithm is written once over
/// this trait, so that every width computes each lane with the same operations in the same
/// order (bit for bit the same results wherever both widths fuse `mul_add`).
pub(crate) trait Lanes:
    Copy
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + BitAnd<Output = Self>
    + BitOr<Output = Self>
    + BitXor<Output = Self>
{
    /// Every lane `value`, in the width of `self` (a method, so that only code that already
    /// holds a vector of some width can make another).
    fn splat(self, value: f32) -> Self;
    /// `self · b + c`, fused where the build has FMA.
    fn mul_add(self, b: Self, c: Self) -> Self;
    /// `c − self · b`, fused where the build has FMA.
    fn mul_neg_add(self, b: Self, c: Self) -> Self;
    /// `minps`: `other` wherever either lane is NaN.
    fn fast_min(self, other: Self) -> Self;
    /// `maxps`: `other` wherever either lane is NaN.
    fn fast_max(self, other: Self) -> Self;
    /// `if_less` where `self < bound`, else `otherwise` (NaN compares false).
    fn select_less(self, bound: Self, if_less: Self, otherwise: Self) -> Self;
    /// Each lane's bits as an `i32`, shifted left by 23, as bits of an f32: the low bits of a
    /// biased exponent moved into the exponent field.
    fn shift_into_exponent(self) -> Self;
}

impl Lanes for f32x8 {
    #[inline(always)]
    fn splat(self, value: f32) -> Self {
        f32x8::splat(value)
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        f32x8::mul_add(self, b, c)
    }
    #[inline(always)]
    fn mul_neg_add(self, b: Self, c: Self) -> Self {
        f32x8::mul_neg_add(self, b, c)
    }
    #[inline(always)]
    fn fast_min(self, other: Self) -> Self {
        f32x8::fast_min(self, other)
    }
    #[inline(always)]
    fn fast_max(self, other: Self) -> Self {
        f32x8::fast_max(self, other)
    }
    #[inline(always)]
    fn select_less(self, bound: Self, if_less: Self, otherwise: Self) -> Self {
        self.simd_lt(bound).select(if_less, otherwise)
    }
    #[inline(always)]
    fn shift_into_exponent(self) -> Self {
        let bits: i32x8 = wide::bytemuck::cast(self);
        wide::bytemuck::cast(bits << 23)
    }
}

/// Horner's scheme: `c[0] + x·(c[1] + x·(…))`.
#[inline(always)]
fn polynomial<V: Lanes>(x: V, coefficients: &[f32]) -> V {
    let (last, rest) = coefficients.split_last().expect("at least one coefficient");
    rest.iter()
        .rev()
        .fold(x.splat(*last), |acc, &c| acc.mul_add(x, x.splat(c)))
}

/// `e^u` for `u ∈ [−87.33, 89]` (callers clamp): `k ∈ [−126, 128]`, where `k = 128` gives
/// `2^k = +∞`.
#[inline(always)]
fn exp_bounded<V: Lanes>(u: V) -> V {
    let k_biased = u.mul_add(u.splat(std::f32::consts::LOG2_E), u.splat(ROUND_AND_BIAS));
    let k = k_biased - u.splat(ROUND_AND_BIAS);
    let r = k.mul_neg_add(u.splat(LN2_HI), u);
    let r = k.mul_neg_add(u.splat(LN2_LO), r);
    let expm1_r = (r * r).mul_add(polynomial(r, &EXP_Q), r);
    (expm1_r + u.splat(1.0)) * k_biased.shift_into_exponent()
}

/// [`sigmoid`] in any width.
#[inline(always)]
pub(crate) fn sigmoid_lanes<V: Lanes>(x: V) -> V {
    let one = x.splat(1.0);
    let minus_x = x ^ x.splat(-0.0);
    // Operand order matters: a NaN `x` must be the second operand of both clamps.
    let arg = x
        .splat(SIGMOID_ARG_MAX)
        .fast_min(x.splat(SIGMOID_ARG_MIN).fast_max(minus_x));
    one / (one + exp_bounded(arg))
}

/// [`tanh`] in any width.
#[inline(always)]
pub(crate) fn tanh_lanes<V: Lanes>(x: V) -> V {
    let one = x.splat(1.0);
    let sign = x & x.splat(-0.0);
    let a = x & x.splat(f32::from_bits(0x7fff_ffff));
    let s = a * a;
    let small = (a * s).mul_add(polynomial(s, &TANH_P), a);
    let e = exp_bounded(x.splat(TANH_TWICE_ARG_MAX).fast_min(a + a));
    let large = one - x.splat(2.0) / (one + e);
    a.select_less(x.splat(TANH_SWITCH), small, large) | sign
}

/// The logistic sigmoid `1 / (1 + e^−x)` of eight lanes. See the [module docs](self).
#[inline(always)]
pub fn sigmoid(x: f32x8) -> f32x8 {
    sigmoid_lanes(x)
}

/// The hyperbolic tangent of eight lanes. See the [module docs](self).
#[inline(always)]
pub fn tanh(x: f32x8) -> f32x8 {
    tanh_lanes(x)
}

/// Calls `f` on every run of `N` consecutive elements of `xs` in place, the last, shorter run
/// zero-padded to `N` (and the padding dropped after), so that nothing outside `xs` is read or
/// written: the slice forms of either width.
#[inline(always)]
pub(crate) fn for_each_vector<const N: usize>(xs: &mut [f32], mut f: impl FnMut(&mut [f32; N])) {
    let mut chunks = xs.chunks_exact_mut(N);
    for chunk in &mut chunks {
        f(chunk.try_into().expect("a chunk of N"));
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut lanes = [0.0f32; N];
        lanes[..tail.len()].copy_from_slice(tail);
        f(&mut lanes);
        let len = tail.len();
        tail.copy_from_slice(&lanes[..len]);
    }
}

/// Applies `f` to every element of `xs` in place, eight at a time.
#[inline(always)]
fn map_in_place(xs: &mut [f32], f: impl Fn(f32x8) -> f32x8) {
    for_each_vector(xs, |lanes: &mut [f32; 8]| {
        *lanes = f(f32x8::from(*lanes)).to_array();
    });
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
