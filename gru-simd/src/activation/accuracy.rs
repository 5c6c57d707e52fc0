//! Measuring [`sigmoid`](super::sigmoid) and [`tanh`](super::tanh) against f64 references
//! over all (or an evenly strided subset of) f32 inputs, in either vector width ([`Width`]):
//! ulp error, absolute error, range, monotonicity and special values. Used by the tests and by
//! `gru accuracy`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Largest ordinal of a non-NaN float: `+∞`.
const MAX_ORDINAL: i64 = 0x7f80_0000;

/// The function under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// [`sigmoid`](super::sigmoid) against `1 / (1 + exp(−x))` in f64.
    Sigmoid,
    /// [`tanh`](super::tanh) against `f64::tanh`.
    Tanh,
}

impl Activation {
    /// Both functions.
    pub const ALL: [Activation; 2] = [Activation::Sigmoid, Activation::Tanh];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        }
    }

    /// The f64 reference value.
    pub fn reference(self, x: f32) -> f64 {
        let x = f64::from(x);
        match self {
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
        }
    }

    /// The vectorized function applied to a slice in place.
    pub fn apply(self, xs: &mut [f32]) {
        match self {
            Activation::Sigmoid => super::sigmoid_slice(xs),
            Activation::Tanh => super::tanh_slice(xs),
        }
    }

    /// The function in `width` applied to a slice in place; `false`, with `xs` untouched, where
    /// this CPU does not run `width` ([`Width::is_available`]).
    ///
    /// ```
    /// use gru_simd::activation::accuracy::{Activation, Width};
    /// let mut xs = [0.0f32; 19];
    /// if Activation::Tanh.apply_in(Width::Sixteen, &mut xs) {
    ///     assert!(xs.iter().all(|&y| y == 0.0));
    /// }
    /// ```
    pub fn apply_in(self, width: Width, xs: &mut [f32]) -> bool {
        match width {
            Width::Eight => {
                self.apply(xs);
                true
            }
            #[cfg(target_arch = "x86_64")]
            Width::Sixteen if width.is_available() => {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                unsafe { super::avx512::apply_in_place(self, xs) };
                true
            }
            Width::Sixteen => false,
        }
    }

    /// The range every output must lie in.
    pub fn range(self) -> (f32, f32) {
        match self {
            Activation::Sigmoid => (0.0, 1.0),
            Activation::Tanh => (-1.0, 1.0),
        }
    }

    /// Inputs and the exact outputs they must give.
    pub fn special_values(self) -> &'static [(f32, f32)] {
        match self {
            Activation::Sigmoid => &[
                (0.0, 0.5),
                (-0.0, 0.5),
                (f32::INFINITY, 1.0),
                (f32::NEG_INFINITY, 0.0),
            ],
            Activation::Tanh => &[
                (0.0, 0.0),
                (-0.0, -0.0),
                (f32::INFINITY, 1.0),
                (f32::NEG_INFINITY, -1.0),
            ],
        }
    }
}

/// Which vector form of the activations a sweep measures: the same algorithm in either width,
/// compiled apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// Eight lanes: the public functions ([`sigmoid_slice`](super::sigmoid_slice) and
    /// [`tanh_slice`](super::tanh_slice), on `wide::f32x8`), which the 8-lane tiles' epilogues
    /// apply too.
    Eight,
    /// Sixteen lanes in AVX-512 registers: what the 16-lane tiles' epilogues apply, on a CPU
    /// with AVX-512F ([`Width::is_available`]).
    Sixteen,
}

impl Width {
    /// Both widths, narrower first.
    pub const ALL: [Width; 2] = [Width::Eight, Width::Sixteen];

    /// Lanes per vector.
    pub fn lanes(self) -> usize {
        match self {
            Width::Eight => 8,
            Width::Sixteen => 16,
        }
    }

    /// Whether this CPU runs this width: eight lanes everywhere, sixteen with AVX-512F.
    ///
    /// ```
    /// use gru_simd::activation::accuracy::Width;
    /// assert!(Width::Eight.is_available());
    /// ```
    pub fn is_available(self) -> bool {
        match self {
            Width::Eight => true,
            #[cfg(target_arch = "x86_64")]
            Width::Sixteen => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Width::Sixteen => false,
        }
    }

    /// The error bound in ulp this width is held to in this build: 2 where `mul_add` is fused,
    /// which is always so in sixteen lanes and in eight with AVX2 and FMA (the workspace's
    /// x86-64-v3 build); 4 in eight lanes otherwise, where `mul_add` rounds twice.
    ///
    /// ```
    /// use gru_simd::activation::accuracy::Width;
    /// assert_eq!(Width::Sixteen.ulp_bound(), 2);
    /// ```
    pub fn ulp_bound(self) -> u64 {
        match self {
            Width::Eight => ulp_bound(),
            Width::Sixteen => 2,
        }
    }
}

/// The error bound in ulp the 8-lane functions are held to in this build: 2 with AVX2 and FMA
/// (the workspace's x86-64-v3 build), 4 otherwise.
pub fn ulp_bound() -> u64 {
    if cfg!(all(target_feature = "avx2", target_feature = "fma")) {
        2
    } else {
        4
    }
}

/// Position of `x` in the ordered sequence of floats (both zeros at 0).
pub fn ordinal(x: f32) -> i64 {
    let bits = x.to_bits();
    let magnitude = i64::from(bits & 0x7fff_ffff);
    if bits >> 31 == 1 {
        -magnitude
    } else {
        magnitude
    }
}

/// The float at `ordinal` (0 gives +0).
pub fn from_ordinal(ordinal: i64) -> f32 {
    let magnitude = ordinal.unsigned_abs() as u32;
    f32::from_bits(if ordinal < 0 {
        magnitude | 0x8000_0000
    } else {
        magnitude
    })
}

/// What a sweep found. Partial reports of consecutive ranges merge into one.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The function measured.
    pub activation: Activation,
    /// Its vector form.
    pub width: Width,
    /// Inputs evaluated (NaNs included).
    pub inputs: u64,
    /// Largest ulp distance to the rounded reference where the true value is at least
    /// `f32::MIN_POSITIVE`.
    pub max_ulp: u64,
    /// Where `max_ulp` occurs.
    pub max_ulp_at: f32,
    /// Largest absolute error over all inputs.
    pub max_abs: f64,
    /// Where `max_abs` occurs.
    pub max_abs_at: f32,
    /// Largest absolute error where the true value is below `f32::MIN_POSITIVE`.
    pub max_tiny_abs: f64,
    /// Inputs with an output outside the range, or NaN for a non-NaN input, or not NaN for NaN
    /// (first few).
    pub range_violations: Vec<f32>,
    /// Consecutive inputs `x₁ < x₂` with `f(x₁) > f(x₂)` (first few).
    pub monotonicity_violations: Vec<(f32, f32)>,
    /// Special values with a wrong result (first few).
    pub special_value_violations: Vec<(f32, f32)>,
    /// First and last (input, output) of the swept range, to check monotonicity across merges.
    ends: Option<((f32, f32), (f32, f32))>,
}

impl std::fmt::Display for Report {
    /// One line: the function and its width, inputs, worst ulp and where, worst absolute error
    /// and where, and the worst absolute error among results below `f32::MIN_POSITIVE`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<8} {:>2} lanes {:>14} inputs: {} ulp at x = {:e}; max abs {:.3e} at x = {:e}; below MIN_POSITIVE abs {:.3e}",
            self.activation.name(),
            self.width.lanes(),
            self.inputs,
            self.max_ulp,
            self.max_ulp_at,
            self.max_abs,
            self.max_abs_at,
            self.max_tiny_abs
        )
    }
}

const KEEP: usize = 8;

fn push_limited<T>(v: &mut Vec<T>, item: T) {
    if v.len() < KEEP {
        v.push(item);
    }
}

impl Report {
    /// An empty report for `activation` in `width`.
    pub(crate) fn new(activation: Activation, width: Width) -> Self {
        Report {
            activation,
            width,
            inputs: 0,
            max_ulp: 0,
            max_ulp_at: 0.0,
            max_abs: 0.0,
            max_abs_at: 0.0,
            max_tiny_abs: 0.0,
            range_violations: Vec::new(),
            monotonicity_violations: Vec::new(),
            special_value_violations: Vec::new(),
            ends: None,
        }
    }

    /// Records one input and its computed output (ordered sweeps call this in increasing `x`).
    pub(crate) fn record(&mut self, x: f32, y: f32) {
        self.inputs += 1;
        let (lo, hi) = self.activation.range();
        if x.is_nan() {
            if !y.is_nan() {
                push_limited(&mut self.range_violations, x);
            }
            return;
        }
        if !(lo..=hi).contains(&y) {
            push_limited(&mut self.range_violations, x);
        }
        let want = self.activation.reference(x);
        let abs = (f64::from(y) - want).abs();
        if abs > self.max_abs {
            (self.max_abs, self.max_abs_at) = (abs, x);
        }
        if want.abs() >= f64::from(f32::MIN_POSITIVE) {
            let ulp = (ordinal(y) - ordinal(want as f32)).unsigned_abs();
            if ulp > self.max_ulp {
                (self.max_ulp, self.max_ulp_at) = (ulp, x);
            }
        } else if abs > self.max_tiny_abs {
            self.max_tiny_abs = abs;
        }
        match &mut self.ends {
            None => self.ends = Some(((x, y), (x, y))),
            Some((_, last)) => {
                if y < last.1 {
                    push_limited(&mut self.monotonicity_violations, (last.0, x));
                }
                *last = (x, y);
            }
        }
    }

    /// Combines the report of the range just after this one.
    fn merge(mut self, next: Report) -> Report {
        self.inputs += next.inputs;
        if next.max_ulp > self.max_ulp {
            (self.max_ulp, self.max_ulp_at) = (next.max_ulp, next.max_ulp_at);
        }
        if next.max_abs > self.max_abs {
            (self.max_abs, self.max_abs_at) = (next.max_abs, next.max_abs_at);
        }
        self.max_tiny_abs = self.max_tiny_abs.max(next.max_tiny_abs);
        for x in next.range_violations {
            push_limited(&mut self.range_violations, x);
        }
        if let (Some((_, last)), Some((first, _))) = (self.ends, next.ends)
            && first.1 < last.1
        {
            push_limited(&mut self.monotonicity_violations, (last.0, first.0));
        }
        for v in next.monotonicity_violations {
            push_limited(&mut self.monotonicity_violations, v);
        }
        for v in next.special_value_violations {
            push_limited(&mut self.special_value_violations, v);
        }
        self.ends = match (self.ends, next.ends) {
            (Some((first, _)), Some((_, last))) => Some((first, last)),
            (a, b) => a.or(b),
        };
        self
    }

    /// Every bound this report breaks, one sentence each; empty when all hold.
    pub fn violations(&self, ulp_bound: u64) -> Vec<String> {
        let name = self.activation.name();
        let mut out = Vec::new();
        if self.max_ulp > ulp_bound {
            out.push(format!(
                "{name}: {} ulp at x = {:e} exceeds the bound of {ulp_bound}",
                self.max_ulp, self.max_ulp_at
            ));
        }
        if self.max_tiny_abs > f64::from(f32::MIN_POSITIVE) {
            out.push(format!(
                "{name}: absolute error {:e} below f32::MIN_POSITIVE exceeds it",
                self.max_tiny_abs
            ));
        }
        for x in &self.range_violations {
            out.push(format!(
                "{name}: output out of range (or NaN-ness changed) at x = {x:e}"
            ));
        }
        for (a, b) in &self.monotonicity_violations {
            out.push(format!("{name}: decreases between x = {a:e} and x = {b:e}"));
        }
        for (x, y) in &self.special_value_violations {
            out.push(format!(
                "{name}({x:e}) = {y:e} is not the exact special value"
            ));
        }
        out
    }
}

/// Evaluates `activation` in `width` (which this CPU runs) on the ordinals `start, start +
/// stride, …` below `end` in increasing order, in blocks through the slice form.
fn sweep_range(
    activation: Activation,
    width: Width,
    start: i64,
    end: i64,
    stride: i64,
    progress: &AtomicU64,
) -> Report {
    const BLOCK: usize = 4096;
    let mut report = Report::new(activation, width);
    let mut xs = Vec::with_capacity(BLOCK);
    let mut ys = Vec::with_capacity(BLOCK);
    let mut next = start;
    while next < end {
        xs.clear();
        while xs.len() < BLOCK && next < end {
            xs.push(from_ordinal(next));
            next += stride;
        }
        ys.clear();
        ys.extend_from_slice(&xs);
        activation.apply_in(width, &mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            report.record(x, y);
        }
        progress.fetch_add(xs.len() as u64, Ordering::Relaxed);
    }
    report
}

/// Sweeps `activation` in `width` over every `stride`-th non-NaN input from −∞ to +∞ (stride
/// 1: all of them), plus the NaN inputs at the same stride and the special values, on
/// `threads` threads (0 counts as 1). `progress` is called now and then with the fraction done.
///
/// # Errors
/// [`std::io::ErrorKind::Unsupported`] where this CPU does not run `width`
/// ([`Width::is_available`]); and when the system refuses to start a thread, after the threads
/// already started finish.
///
/// ```
/// use gru_simd::activation::accuracy::{Activation, Width, sweep};
/// // Every 2^20-th bit pattern, on one thread.
/// let report = sweep(Activation::Sigmoid, Width::Eight, 1 << 20, 1, &|_| {})?;
/// assert!(report.violations(Width::Eight.ulp_bound()).is_empty(), "{report}");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn sweep(
    activation: Activation,
    width: Width,
    stride: u64,
    threads: usize,
    progress: &(dyn Fn(f64) + Sync),
) -> std::io::Result<Report> {
    if !width.is_available() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "this CPU does not run the {}-lane activations",
                width.lanes()
            ),
        ));
    }
    let stride = stride.max(1) as i64;
    let threads = threads.max(1) as i64;
    let total = 2 * MAX_ORDINAL + 1;
    // Chunks a multiple of the stride long, so that the merged walk is one strided walk.
    let chunk = (total / threads / stride + 1) * stride;
    let done = AtomicU64::new(0);
    let expected = (total / stride + 1) as f64;
    let finished = std::sync::atomic::AtomicBool::new(false);
    let mut report = std::thread::scope(|scope| {
        // Stops the progress thread however this scope ends, so that the scope can join it.
        struct Finish<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _finish = Finish(&finished);
        std::thread::Builder::new().spawn_scoped(scope, || {
            while !finished.load(Ordering::Relaxed) {
                progress(done.load(Ordering::Relaxed) as f64 / expected);
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })?;
        let workers = (0..threads)
            .map(|t| {
                let (lo, hi) = (
                    -MAX_ORDINAL + t * chunk,
                    (-MAX_ORDINAL + (t + 1) * chunk).min(MAX_ORDINAL + 1),
                );
                let done = &done;
                std::thread::Builder::new().spawn_scoped(scope, move || {
                    sweep_range(activation, width, lo, hi, stride, done)
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok::<_, std::io::Error>(
            workers
                .into_iter()
                .map(|w| w.join().expect("sweep worker"))
                .reduce(Report::merge)
                .expect("at least one thread"),
        )
    })?;
    // NaNs: every quiet and signalling payload of both signs at this stride.
    let mut nans: Vec<f32> = (0x7f80_0001u32..=0x7fff_ffff)
        .step_by(stride as usize)
        .flat_map(|bits| [f32::from_bits(bits), f32::from_bits(bits | 0x8000_0000)])
        .collect();
    let inputs = nans.clone();
    activation.apply_in(width, &mut nans);
    for (x, y) in inputs.into_iter().zip(nans) {
        report.inputs += 1;
        if !y.is_nan() {
            push_limited(&mut report.range_violations, x);
        }
    }
    for &(x, want) in activation.special_values() {
        let mut y = [x];
        activation.apply_in(width, &mut y);
        if y[0].to_bits() != want.to_bits() {
            push_limited(&mut report.special_value_violations, (x, y[0]));
        }
    }
    progress(1.0);
    Ok(report)
}
