//! The activations' vector operations in 16-lane AVX-512 registers, so that the 16-lane tiles'
//! epilogues apply sigmoid and tanh to a whole pair of panels at once.
//!
//! Each operation is the one [`f32x8`](wide::f32x8) uses in the x86-64-v3 build (`vfmadd`,
//! `vminps`, `vmaxps`, a correctly rounded `vdivps`, the same bit operations), so each lane's
//! result is bitwise the 8-lane one there.

use std::arch::x86_64::{
    __m512, _CMP_LT_OQ, _mm512_add_ps, _mm512_and_si512, _mm512_castps_si512, _mm512_castsi512_ps,
    _mm512_cmp_ps_mask, _mm512_div_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_loadu_ps,
    _mm512_mask_blend_ps, _mm512_max_ps, _mm512_min_ps, _mm512_mul_ps, _mm512_or_si512,
    _mm512_set1_ps, _mm512_slli_epi32, _mm512_storeu_ps, _mm512_sub_ps, _mm512_xor_si512,
};
use std::ops::{Add, BitAnd, BitOr, BitXor, Div, Mul, Sub};

use super::accuracy::Activation;
use super::{Lanes, for_each_vector, sigmoid_lanes, tanh_lanes};

/// Sixteen f32 lanes in an AVX-512 register.
///
/// A value exists only on a CPU with AVX-512F: the one constructor is `unsafe` and says so,
/// which is what lets the operations below be safe. They are `#[inline(always)]` and meant to
/// be inlined into a `#[target_feature(enable = "avx512f")]` function (the 16-lane tiles);
/// called elsewhere they would still be correct, only slower.
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32x16(__m512);

impl F32x16 {
    /// Wraps `v`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[inline(always)]
    pub(crate) unsafe fn new(v: __m512) -> Self {
        Self(v)
    }

    /// The register.
    #[inline(always)]
    pub(crate) fn get(self) -> __m512 {
        self.0
    }
}

/// Implements a binary operator with one AVX-512F intrinsic.
macro_rules! binary {
    ($trait:ident, $method:ident, $intrinsic:ident) => {
        impl $trait for F32x16 {
            type Output = Self;
            #[inline(always)]
            fn $method(self, other: Self) -> Self {
                // SAFETY: a `F32x16` exists only on a CPU with AVX-512F (see `new`).
                Self(unsafe { $intrinsic(self.0, other.0) })
            }
        }
    };
}

/// Implements a bitwise operator with one AVX-512F integer intrinsic on the lanes' bits.
macro_rules! bitwise {
    ($trait:ident, $method:ident, $intrinsic:ident) => {
        impl $trait for F32x16 {
            type Output = Self;
            #[inline(always)]
            fn $method(self, other: Self) -> Self {
                // SAFETY: a `F32x16` exists only on a CPU with AVX-512F (see `new`).
                Self(unsafe {
                    _mm512_castsi512_ps($intrinsic(
                        _mm512_castps_si512(self.0),
                        _mm512_castps_si512(other.0),
                    ))
                })
            }
        }
    };
}

binary!(Add, add, _mm512_add_ps);
binary!(Sub, sub, _mm512_sub_ps);
binary!(Mul, mul, _mm512_mul_ps);
binary!(Div, div, _mm512_div_ps);
bitwise!(BitAnd, bitand, _mm512_and_si512);
bitwise!(BitOr, bitor, _mm512_or_si512);
bitwise!(BitXor, bitxor, _mm512_xor_si512);

impl Lanes for F32x16 {
    #[inline(always)]
    fn splat(self, value: f32) -> Self {
        // SAFETY: a `F32x16` exists only on a CPU with AVX-512F (see `new`).
        Self(unsafe { _mm512_set1_ps(value) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm512_fmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn mul_neg_add(self, b: Self, c: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm512_fnmadd_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn fast_min(self, other: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm512_min_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn fast_max(self, other: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm512_max_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn select_less(self, bound: Self, if_less: Self, otherwise: Self) -> Self {
        // SAFETY: as above.
        Self(unsafe {
            let less = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, bound.0);
            _mm512_mask_blend_ps(less, otherwise.0, if_less.0)
        })
    }
    #[inline(always)]
    fn shift_into_exponent(self) -> Self {
        // SAFETY: as above.
        Self(unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_castps_si512(self.0))) })
    }
}

/// `activation` of every element of `xs`, in place, sixteen lanes at a time as the 16-lane
/// epilogues apply it; the tail goes through a zero-padded register, so nothing outside `xs` is
/// read or written. For the accuracy sweep ([`Activation::apply_in`]).
///
/// # Safety
/// The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn apply_in_place(activation: Activation, xs: &mut [f32]) {
    for_each_vector(xs, |lanes: &mut [f32; 16]| {
        // SAFETY: the caller's CPU supports AVX-512F; `lanes` holds 16 floats.
        unsafe {
            let x = F32x16::new(_mm512_loadu_ps(lanes.as_ptr()));
            let y = match activation {
                Activation::Sigmoid => sigmoid_lanes(x),
                Activation::Tanh => tanh_lanes(x),
            };
            _mm512_storeu_ps(lanes.as_mut_ptr(), y.get());
        }
    });
}

#[cfg(test)]
mod tests {
    use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};

    use wide::f32x8;

    use super::F32x16;
    use crate::activation::accuracy::{Activation, Report, Width, from_ordinal, ordinal};
    use crate::activation::{sigmoid, sigmoid_lanes, tanh, tanh_lanes};

    /// Both activations of 16 inputs in 16 lanes and, beside, in two 8-lane halves.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn both_widths(x: &[f32; 16]) -> [[[f32; 16]; 2]; 2] {
        let mut wide16 = [[0.0; 16]; 2];
        let mut wide8 = [[0.0; 16]; 2];
        // SAFETY: the caller's CPU supports AVX-512F; `x` and the outputs hold 16 lanes.
        unsafe {
            let v = F32x16::new(_mm512_loadu_ps(x.as_ptr()));
            _mm512_storeu_ps(wide16[0].as_mut_ptr(), sigmoid_lanes(v).get());
            _mm512_storeu_ps(wide16[1].as_mut_ptr(), tanh_lanes(v).get());
        }
        for half in 0..2 {
            let lanes = f32x8::from(<[f32; 8]>::try_from(&x[8 * half..8 * half + 8]).unwrap());
            wide8[0][8 * half..8 * half + 8].copy_from_slice(&sigmoid(lanes).to_array());
            wide8[1][8 * half..8 * half + 8].copy_from_slice(&tanh(lanes).to_array());
        }
        [wide16, wide8]
    }

    /// Sixteen lanes against eight: every lane the same bits in a build with FMA, where both
    /// widths fuse `mul_add`. Without it (the portable build) the 8-lane `mul_add` rounds twice
    /// and the 16-lane one once, so there the 16 lanes are held to the FMA build's guarantee
    /// against the f64 reference instead (2 ulp, exact special values, ranges, monotone).
    #[test]
    fn sixteen_lanes_compute_what_eight_do() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            println!("no AVX-512F on this CPU: nothing to check");
            return;
        }
        let mut inputs: Vec<f32> = Activation::ALL
            .iter()
            .flat_map(|a| a.special_values().iter().map(|&(x, _)| x))
            .chain([
                0.0,
                -0.0,
                f32::NAN,
                -f32::NAN,
                f32::from_bits(1),
                0.549_316_4,
            ])
            .collect();
        // Every 65537th bit pattern (65 536 inputs over the whole line), and the
        // neighbourhoods of the switch points.
        let (first, last) = (ordinal(f32::NEG_INFINITY), ordinal(f32::INFINITY));
        inputs.extend((first..=last).step_by(65_537).map(from_ordinal));
        for centre in [
            0.549_316_4f32,
            -0.549_316_4,
            9.01,
            -9.01,
            87.33,
            -87.33,
            88.38,
        ] {
            inputs.extend((-40..40).map(|d| from_ordinal(ordinal(centre) + d)));
        }
        while !inputs.len().is_multiple_of(16) {
            inputs.push(1.0);
        }
        // In increasing order, which the reports' monotonicity check needs.
        inputs.sort_by(f32::total_cmp);
        let mut reports = Activation::ALL.map(|a| Report::new(a, Width::Sixteen));
        for chunk in inputs.chunks_exact(16) {
            let x: &[f32; 16] = chunk.try_into().unwrap();
            // SAFETY: the CPU supports AVX-512F, checked above.
            let [wide16, wide8] = unsafe { both_widths(x) };
            for (f, activation) in Activation::ALL.into_iter().enumerate() {
                for lane in 0..16 {
                    let (got, eight) = (wide16[f][lane], wide8[f][lane]);
                    let input = x[lane];
                    if cfg!(target_feature = "fma") {
                        assert!(
                            got.to_bits() == eight.to_bits() || (got.is_nan() && eight.is_nan()),
                            "{} of {input:e}: 16 lanes {got:e}, 8 lanes {eight:e}",
                            activation.name()
                        );
                    } else {
                        reports[f].record(input, got);
                    }
                }
            }
        }
        for report in reports {
            let violations = report.violations(2);
            assert!(violations.is_empty(), "{report}: {violations:#?}");
        }
    }
}
