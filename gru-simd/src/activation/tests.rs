//! The activations tested alone against the f64 references: special values, every tail
//! length, vector and slice forms bit for bit, a dense strided sweep and random slices; the
//! slice tests, the sweep and the random slices in both widths where the CPU runs them.

use super::accuracy::{Activation, Width, from_ordinal, ordinal, sweep};
use super::{sigmoid, sigmoid_slice, tanh, tanh_slice};
use proptest::prelude::*;
use wide::f32x8;

/// Every 256th bit pattern in the release build (the README's test command, 16.7 M inputs per
/// function); a coarser stride in unoptimised builds, where the same sweep would take minutes,
/// or as `GRU_SWEEP_STRIDE` says (the valgrind run).
fn stride() -> u64 {
    std::env::var("GRU_SWEEP_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 4099 } else { 256 })
}

/// The widths this CPU runs (sixteen lanes only with AVX-512F, so not under valgrind).
fn widths() -> impl Iterator<Item = Width> {
    Width::ALL.into_iter().filter(|w| w.is_available())
}

#[test]
fn dense_sweep_meets_the_bounds() {
    for width in Width::ALL.iter().filter(|w| !w.is_available()) {
        println!(
            "no {}-lane activations on this CPU: not checked",
            width.lanes()
        );
    }
    for width in widths() {
        for activation in Activation::ALL {
            let report = sweep(activation, width, stride(), 2, &|_| {}).expect("threads start");
            println!("{report}");
            let violations = report.violations(width.ulp_bound());
            assert!(violations.is_empty(), "{violations:#?}");
            assert!(report.inputs > (1u64 << 32) / stride());
        }
    }
}

#[test]
fn a_width_the_cpu_lacks_is_an_error() {
    let result = sweep(Activation::Tanh, Width::Sixteen, 1 << 24, 1, &|_| {});
    if Width::Sixteen.is_available() {
        assert!(result.is_ok());
    } else {
        let error = result.expect_err("no AVX-512F");
        assert_eq!(error.kind(), std::io::ErrorKind::Unsupported, "{error}");
        let mut xs = [1.0f32; 3];
        assert!(!Activation::Tanh.apply_in(Width::Sixteen, &mut xs));
        assert_eq!(xs, [1.0; 3], "untouched");
    }
}

#[test]
fn special_values_are_exact() {
    let x = f32x8::from([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        1e-30,
        -1e-30,
    ]);
    let s = sigmoid(x).to_array();
    let t = tanh(x).to_array();
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&s[..4]), bits(&[0.5, 0.5, 1.0, 0.0]));
    assert_eq!(bits(&t[..4]), bits(&[0.0, -0.0, 1.0, -1.0]));
    assert!(s[4].is_nan() && s[5].is_nan() && t[4].is_nan() && t[5].is_nan());
    // Tiny arguments: σ(x) = 0.5 and tanh(x) = x to the last bit.
    assert_eq!((s[6], s[7]), (0.5, 0.5));
    assert_eq!((t[6], t[7]), (1e-30, -1e-30));
    // The smallest subnormal keeps its sign and value through tanh.
    let tiny = f32::from_bits(1);
    assert_eq!(tanh(f32x8::splat(-tiny)).to_array()[0], -tiny);
}

#[test]
fn saturated_tails_are_exact() {
    let x = f32x8::from([9.02, 20.0, 100.0, 1e30, -9.02, -20.0, -100.0, -1e30]);
    assert_eq!(
        tanh(x).to_array(),
        [1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0]
    );
    // σ rounds to 1 only from about 17.3 on.
    let s = sigmoid(f32x8::from([
        18.0, 20.0, 100.0, 1e30, -9.02, -20.0, -100.0, -1e30,
    ]))
    .to_array();
    assert_eq!(&s[..4], &[1.0; 4]);
    // σ(−20) ≈ 2.06e−9 is a normal float and must be accurate, not flushed.
    assert!((f64::from(s[5]) - Activation::Sigmoid.reference(-20.0)).abs() < 1e-15);
    assert_eq!((s[6], s[7]), (0.0, 0.0));
}

/// Distinct values covering the interesting regions, for the tail tests.
fn probe(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|k| ((k + seed) as f32 * 1.37).sin() * 12.0)
        .collect()
}

/// Each element of a slice of any length, at any offset, the same bits as the value alone
/// (in the 8-lane vector form, or in 16 lanes a slice of one), nothing outside it touched.
#[test]
fn every_tail_length_touches_only_its_slice() {
    for width in widths() {
        for activation in Activation::ALL {
            for len in 0..=2 * width.lanes() + 1 {
                for offset in 0..3 {
                    // A guard value on both sides, and an unaligned start.
                    let mut buf = vec![7.0f32; len + offset + 1];
                    buf[offset..offset + len].copy_from_slice(&probe(len, offset));
                    let xs = buf[offset..offset + len].to_vec();
                    assert!(activation.apply_in(width, &mut buf[offset..offset + len]));
                    assert!(buf[..offset].iter().all(|&g| g == 7.0), "{len}/{offset}");
                    assert_eq!(buf[offset + len], 7.0, "{len}/{offset}");
                    for (k, &x) in xs.iter().enumerate() {
                        let single = match width {
                            Width::Eight => vector_of(activation, x),
                            Width::Sixteen => {
                                let mut one = [x];
                                assert!(activation.apply_in(width, &mut one));
                                one[0]
                            }
                        };
                        assert_eq!(
                            buf[offset + k].to_bits(),
                            single.to_bits(),
                            "{} in {} lanes, len {len} at {k}",
                            activation.name(),
                            width.lanes()
                        );
                    }
                }
            }
        }
    }
}

/// The vector form on one value (in lane 3, the others zero).
fn vector_of(activation: Activation, x: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    lanes[3] = x;
    let v = f32x8::from(lanes);
    let y = match activation {
        Activation::Sigmoid => sigmoid(v),
        Activation::Tanh => tanh(v),
    };
    y.to_array()[3]
}

#[test]
fn ordinals_walk_the_floats_in_order() {
    assert_eq!(ordinal(0.0), 0);
    assert_eq!(ordinal(-0.0), 0);
    assert_eq!(ordinal(f32::from_bits(1)), 1);
    assert_eq!(ordinal(-f32::from_bits(1)), -1);
    for x in [
        f32::NEG_INFINITY,
        -f32::MAX,
        -1.0,
        -f32::MIN_POSITIVE,
        0.0,
        1e-45,
        1.0,
        f32::MAX,
    ] {
        assert_eq!(from_ordinal(ordinal(x)), x);
        assert!(from_ordinal(ordinal(x) + 1) > x);
    }
}

proptest! {
    #[test]
    fn random_slices_match_the_reference(xs in proptest::collection::vec(-100.0f32..100.0, 0..100)) {
        for (width, activation) in widths().flat_map(|w| Activation::ALL.map(|a| (w, a))) {
            let mut ys = xs.clone();
            prop_assert!(activation.apply_in(width, &mut ys));
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = activation.reference(x);
                if want.abs() >= f64::from(f32::MIN_POSITIVE) {
                    let ulp = (ordinal(y) - ordinal(want as f32)).unsigned_abs();
                    prop_assert!(
                        ulp <= width.ulp_bound(),
                        "{}({x}) = {y} in {} lanes, want {want}",
                        activation.name(),
                        width.lanes()
                    );
                } else {
                    prop_assert!((f64::from(y) - want).abs() <= f64::from(f32::MIN_POSITIVE));
                }
            }
        }
    }

    #[test]
    fn slices_agree_with_the_vector_form(bits in proptest::collection::vec(any::<u32>(), 0..40)) {
        let xs: Vec<f32> = bits.into_iter().map(f32::from_bits).collect();
        let (mut s, mut t) = (xs.clone(), xs.clone());
        sigmoid_slice(&mut s);
        tanh_slice(&mut t);
        for (k, &x) in xs.iter().enumerate() {
            prop_assert_eq!(s[k].to_bits(), vector_of(Activation::Sigmoid, x).to_bits());
            prop_assert_eq!(t[k].to_bits(), vector_of(Activation::Tanh, x).to_bits());
        }
    }
}
