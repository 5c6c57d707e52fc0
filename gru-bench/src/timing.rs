//! Small timing helpers for the reports: medians of repeated, warmed-up runs.

use std::time::Instant;

/// Runs `f` until about `warmup_secs` have passed, then `samples` times, timing each run; returns
/// the median seconds of one run. Each sample repeats `f` enough times to last at least ~1 ms
/// so that timer resolution does not matter.
pub fn median_seconds(samples: usize, warmup_secs: f64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_secs_f64() < warmup_secs || calls == 0 {
        f();
        calls += 1;
    }
    let per_call = start.elapsed().as_secs_f64() / calls as f64;
    let repeat = ((1e-3 / per_call.max(1e-9)).ceil() as u64).max(1);
    let mut times: Vec<f64> = (0..samples.max(1))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..repeat {
                f();
            }
            t.elapsed().as_secs_f64() / repeat as f64
        })
        .collect();
    median(&mut times)
}

/// The median of `values` (sorts them).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}
