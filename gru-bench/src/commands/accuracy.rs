//! `gru accuracy`: the error report of the vectorized sigmoid and tanh, and their speed against
//! the scalar standard-library functions.

use std::hint::black_box;
use std::io::Write;

use gru_simd::activation::accuracy::{Activation, Width, sweep};

use crate::CliError;
use crate::timing::median_seconds;

/// Options of `gru accuracy`.
#[derive(Debug, Clone)]
pub struct AccuracyOptions {
    /// Every one of the 2^32 inputs instead of every `stride`-th.
    pub exhaustive: bool,
    /// The stride of the sampled sweep.
    pub stride: u64,
    /// Threads for the sweep.
    pub threads: usize,
    /// Skip the speed comparison.
    pub skip_speed: bool,
    /// The vector forms to sweep, each one this CPU runs ([`Width::is_available`]).
    pub widths: Vec<Width>,
}

/// The scalar baseline the speed figures compare against: the standard library per element.
fn scalar_baseline(activation: Activation, xs: &mut [f32]) {
    match activation {
        Activation::Sigmoid => xs.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
        Activation::Tanh => xs.iter_mut().for_each(|x| *x = x.tanh()),
    }
}

/// Median seconds per 4096-element slice for the vectorized function and the scalar baseline,
/// measured alternately in one run. Both restore the input before each call (the same 16 KiB
/// copy in both timings, which makes the ratio slightly conservative).
pub fn speed(activation: Activation) -> (f64, f64) {
    let input: Vec<f32> = (0..4096)
        .map(|k| ((k as f32) * 0.618).sin() * 8.0)
        .collect();
    let mut buf = input.clone();
    let mut simd = Vec::new();
    let mut scalar = Vec::new();
    for _ in 0..5 {
        simd.push(median_seconds(11, 0.05, || {
            buf.copy_from_slice(&input);
            activation.apply(black_box(&mut buf));
        }));
        scalar.push(median_seconds(11, 0.05, || {
            buf.copy_from_slice(&input);
            scalar_baseline(activation, black_box(&mut buf));
        }));
    }
    (
        crate::timing::median(&mut simd),
        crate::timing::median(&mut scalar),
    )
}

/// Runs `gru accuracy`. Fails (nonzero exit) when a bound is broken.
pub fn run(options: &AccuracyOptions) -> Result<(), CliError> {
    if options.threads == 0 {
        return Err(CliError("--threads must be at least 1".into()));
    }
    let support = gru_simd::simd_level();
    let stride = if options.exhaustive {
        1
    } else {
        options.stride.max(1)
    };
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| CliError(format!("cannot write the report: {e}"));
    let bounds: Vec<String> = options
        .widths
        .iter()
        .map(|w| format!("{} ulp in {} lanes", w.ulp_bound(), w.lanes()))
        .collect();
    writeln!(out, "build: {}; bound: {} where the true value is at least f32::MIN_POSITIVE, absolute error at most f32::MIN_POSITIVE below it", support.compiled, bounds.join(", ")).map_err(io)?;
    writeln!(
        out,
        "inputs: {}",
        if options.exhaustive {
            "all 2^32 bit patterns".to_owned()
        } else {
            format!("every {stride}th bit pattern (use --exhaustive for all)")
        }
    )
    .map_err(io)?;
    let mut violations = Vec::new();
    for &width in &options.widths {
        for activation in Activation::ALL {
            let (name, lanes) = (activation.name(), width.lanes());
            let report = sweep(activation, width, stride, options.threads, &|done| {
                if options.exhaustive {
                    eprint!("\r{name} in {lanes} lanes: {:5.1}%", 100.0 * done);
                }
            })
            .map_err(|e| CliError(format!("cannot sweep {name} in {lanes} lanes: {e}")))?;
            if options.exhaustive {
                eprintln!();
            }
            writeln!(out, "{report}").map_err(io)?;
            violations.extend(report.violations(width.ulp_bound()));
        }
    }
    if !options.skip_speed {
        writeln!(
            out,
            "speed of the 8-lane functions on 4096-element slices (median; scalar = std f32::exp / f32::tanh per element):"
        )
        .map_err(io)?;
        for activation in Activation::ALL {
            let (simd, scalar) = speed(activation);
            writeln!(
                out,
                "{:<8} simd {:7.3} µs ({:6.2} Gelem/s)  scalar {:7.3} µs  speedup {:5.1}x",
                activation.name(),
                simd * 1e6,
                4096.0 / simd / 1e9,
                scalar * 1e6,
                scalar / simd
            )
            .map_err(io)?;
        }
    }
    if violations.is_empty() {
        writeln!(out, "all bounds hold").map_err(io)?;
        Ok(())
    } else {
        for v in &violations {
            writeln!(out, "VIOLATION: {v}").map_err(io)?;
        }
        Err(CliError(format!(
            "{} accuracy bound(s) broken",
            violations.len()
        )))
    }
}
