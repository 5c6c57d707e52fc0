//! `gru bench`: the performance report. Every figure is a median of repeated calls after a
//! warm-up, set against the machine's FMA peak and read bandwidth measured in the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use gru_core::{Cell, CellKind, GruVariant, LayerWeights, Model, RecurrentKernel, SequenceInput};
use gru_ref::ReferenceKernel;
use gru_simd::SimdModel;
use gru_simd::packing::{LANES, PanelLayout};

use crate::CliError;
use crate::machine::{BeforeAndAfter, MachineLimits, available_memory};
use crate::npy_io::PendingOutputs;
use crate::timing::median;

/// One benchmark shape: batch `B`, sequence length `T`, input `I`, hidden `H`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Shape {
    /// Batch size `B`.
    pub batch: usize,
    /// Sequence length `T` (1 in step mode).
    pub seq_len: usize,
    /// Input size `I`.
    pub input: usize,
    /// Hidden size `H`.
    pub hidden: usize,
}

impl FromStr for Shape {
    type Err = String;

    /// Parses `B:T:I:H`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<usize> = s
            .split(':')
            .map(|p| {
                p.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("`{s}` is not B:T:I:H with whole numbers"))
            })
            .collect::<Result<_, _>>()?;
        match parts.as_slice() {
            &[batch, seq_len, input, hidden]
                if batch > 0 && seq_len > 0 && input > 0 && hidden > 0 =>
            {
                Ok(Shape {
                    batch,
                    seq_len,
                    input,
                    hidden,
                })
            }
            [_, _, _, _] => Err(format!("`{s}`: every size must be at least 1")),
            _ => Err(format!("`{s}` is not B:T:I:H")),
        }
    }
}

impl Shape {
    /// Bytes a call of this shape keeps live for a cell of `gates` gates: the weights twice
    /// (as given and packed), the input sequence and the output. `None` if that does not fit
    /// in a `u64`.
    pub fn bytes_needed(&self, gates: usize) -> Option<u64> {
        let size = |n: usize| u64::try_from(n).ok();
        let (b, t, i, h, g) = (
            size(self.batch)?,
            size(self.seq_len)?,
            size(self.input)?,
            size(self.hidden)?,
            size(gates)?,
        );
        let weights = g
            .checked_mul(h)?
            .checked_mul(i.checked_add(h)?.checked_add(2)?)?;
        let rows = t.checked_mul(b)?;
        let sequences = rows.checked_mul(i.checked_add(h)?)?;
        weights
            .checked_mul(2)?
            .checked_add(sequences)?
            .checked_mul(4)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.batch, self.seq_len, self.input, self.hidden
        )
    }
}

/// Whole sequences per call, or one step per call with the state carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// A whole sequence per call.
    Seq,
    /// One step per call.
    Step,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Seq => "seq",
            Mode::Step => "step",
        }
    }
}

/// Which kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelKind {
    /// `gru-simd`.
    Simd,
    /// `gru-ref`.
    Ref,
}

impl KernelKind {
    fn name(self) -> &'static str {
        match self {
            KernelKind::Simd => "simd",
            KernelKind::Ref => "ref",
        }
    }
}

/// Options of `gru bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Shapes to run; `None` for the embedded default set.
    pub shapes: Option<Vec<Shape>>,
    /// Worker threads.
    pub threads: usize,
    /// Cells to run.
    pub cells: Vec<CellKind>,
    /// Kernels to run.
    pub kernels: Vec<KernelKind>,
    /// GRU variant.
    pub variant: GruVariant,
    /// Sequence or step mode.
    pub mode: Mode,
    /// JSON lines on stdout instead of the table.
    pub json: bool,
    /// Where to write the plot.
    pub svg: Option<PathBuf>,
    /// Peer figures (JSON lines) to show beside ours.
    pub compare: Option<PathBuf>,
    /// Seconds of timing per measurement (after warm-up).
    pub seconds_per_measurement: f64,
    /// Passes over every shape, cell and kernel; each measurement reports the median of its
    /// passes. At least 1.
    pub passes: usize,
    /// How the simd kernels' weights are packed, which decides their vector width; the FMA
    /// peak is measured in that width.
    pub layout: PanelLayout,
}

/// The keys of a `--json` line, in the order they are printed.
pub const JSON_KEYS: [&str; 12] = [
    "kernel",
    "cell",
    "variant",
    "mode",
    "batch",
    "seq_len",
    "input",
    "hidden",
    "threads",
    "seconds",
    "gflops",
    "steps_per_s",
];

/// One measured configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// `simd`, `ref`, or a peer's name.
    pub kernel: String,
    /// `gru` or `lstm`.
    pub cell: CellKind,
    /// The GRU variant (`None` for LSTM).
    pub variant: Option<GruVariant>,
    /// Sequence or step mode.
    pub mode: Mode,
    /// The shape.
    pub shape: Shape,
    /// Threads used.
    pub threads: usize,
    /// Median seconds per call.
    pub seconds: f64,
}

fn variant_name(v: GruVariant) -> &'static str {
    match v {
        GruVariant::ResetAfter => "reset-after",
        GruVariant::ResetBefore => "reset-before",
    }
}

impl Measurement {
    /// `2·G·H·(I+H)·B·T`: the multiply-adds of the gate products, counted twice.
    pub fn flops(&self) -> f64 {
        let s = self.shape;
        2.0 * self.cell.gate_count() as f64
            * s.hidden as f64
            * (s.input + s.hidden) as f64
            * s.batch as f64
            * s.seq_len as f64
    }

    /// GFLOP/s.
    pub fn gflops(&self) -> f64 {
        self.flops() / self.seconds / 1e9
    }

    /// Sequence-steps (`B·T`) per second.
    pub fn steps_per_s(&self) -> f64 {
        (self.shape.batch * self.shape.seq_len) as f64 / self.seconds
    }

    /// The JSON line `gru bench --json` prints.
    pub fn json(&self) -> String {
        let variant = self
            .variant
            .map_or("null".to_owned(), |v| format!("\"{}\"", variant_name(v)));
        format!(
            "{{\"kernel\":\"{}\",\"cell\":\"{}\",\"variant\":{variant},\"mode\":\"{}\",\"batch\":{},\"seq_len\":{},\"input\":{},\"hidden\":{},\"threads\":{},\"seconds\":{:e},\"gflops\":{:.3},\"steps_per_s\":{:.3}}}",
            self.kernel,
            self.cell.name(),
            self.mode.name(),
            self.shape.batch,
            self.shape.seq_len,
            self.shape.input,
            self.shape.hidden,
            self.threads,
            self.seconds,
            self.gflops(),
            self.steps_per_s()
        )
    }

    /// Parses a line as printed by [`json`](Self::json) (or by the peers script).
    pub fn parse_json(line: &str) -> Result<Self, String> {
        let fields = parse_flat_json(line)?;
        let get = |k: &str| fields.get(k).ok_or_else(|| format!("missing key `{k}`"));
        let number = |k: &str| -> Result<f64, String> {
            get(k)?
                .parse::<f64>()
                .map_err(|_| format!("`{k}` is not a number"))
        };
        let size = |k: &str| -> Result<usize, String> {
            let n = number(k)?;
            if n >= 1.0 && n.fract() == 0.0 && n <= u32::MAX as f64 {
                Ok(n as usize)
            } else {
                Err(format!(
                    "`{k}` must be a whole number from 1 to 2^32 − 1, not {n}"
                ))
            }
        };
        let cell = match get("cell")?.as_str() {
            "gru" => CellKind::Gru,
            "lstm" => CellKind::Lstm,
            other => return Err(format!("unknown cell `{other}`")),
        };
        let variant = match get("variant")?.as_str() {
            "null" => None,
            "reset-after" => Some(GruVariant::ResetAfter),
            "reset-before" => Some(GruVariant::ResetBefore),
            other => return Err(format!("unknown variant `{other}`")),
        };
        let mode = match get("mode")?.as_str() {
            "seq" => Mode::Seq,
            "step" => Mode::Step,
            other => return Err(format!("unknown mode `{other}`")),
        };
        Ok(Measurement {
            kernel: get("kernel")?.clone(),
            cell,
            variant,
            mode,
            shape: Shape {
                batch: size("batch")?,
                seq_len: size("seq_len")?,
                input: size("input")?,
                hidden: size("hidden")?,
            },
            threads: size("threads")?,
            seconds: match number("seconds")? {
                s if s.is_finite() && s > 0.0 => s,
                s => return Err(format!("`seconds` must be a positive number, not {s}")),
            },
        })
    }

    /// What identifies a row apart from the kernel: cell, variant, mode, shape, threads.
    fn key(&self) -> (CellKind, Option<GruVariant>, Mode, Shape, usize) {
        (self.cell, self.variant, self.mode, self.shape, self.threads)
    }
}

/// Parses one flat JSON object of strings, numbers and nulls (all this report exchanges);
/// values come back as text (`null` as `"null"`).
fn parse_flat_json(line: &str) -> Result<BTreeMap<String, String>, String> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or("not a JSON object")?;
    let mut fields = BTreeMap::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let after_quote = rest.strip_prefix('"').ok_or("expected a key")?;
        let end = after_quote.find('"').ok_or("unterminated key")?;
        let key = after_quote[..end].to_owned();
        rest = after_quote[end + 1..]
            .trim_start()
            .strip_prefix(':')
            .ok_or("expected `:`")?
            .trim_start();
        let (value, tail) = if let Some(s) = rest.strip_prefix('"') {
            let end = s.find('"').ok_or("unterminated string")?;
            (s[..end].to_owned(), &s[end + 1..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (rest[..end].trim().to_owned(), &rest[end..])
        };
        fields.insert(key, value);
        rest = tail.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(fields)
}

/// The embedded default set: B ∈ {1, 64}, I = H ∈ {128, 256, 512, 1024}, T = 100 (50 at
/// H = 1024); one step per call in step mode.
pub fn default_shapes(mode: Mode) -> Vec<Shape> {
    let mut shapes = Vec::new();
    for batch in [1, 64] {
        for hidden in [128, 256, 512, 1024] {
            let seq_len = match mode {
                Mode::Step => 1,
                Mode::Seq if hidden == 1024 => 50,
                Mode::Seq => 100,
            };
            shapes.push(Shape {
                batch,
                seq_len,
                input: hidden,
                hidden,
            });
        }
    }
    shapes
}

/// The reference is slow: the default set runs it only where a call takes well under a second.
fn reference_is_affordable(shape: Shape) -> bool {
    shape.batch * shape.seq_len * shape.hidden * (shape.input + shape.hidden) <= 100 * 256 * 512
}

/// A one-layer model of `shape` with deterministic weights in PyTorch's initialisation range,
/// and an input sequence for it (`[T, B, I]`): what `gru bench` and the criterion benches time.
pub fn synthetic(cell: Cell, shape: Shape) -> (Model, Vec<f32>) {
    let model = Model::single_layer(cell, weights(cell.kind(), shape.input, shape.hidden))
        .expect("consistent sizes");
    let x = (0..shape.seq_len * shape.batch * shape.input)
        .map(|k| (k as f32 * 0.37).sin())
        .collect();
    (model, x)
}

/// Deterministic weights in PyTorch's initialisation range.
fn weights(kind: CellKind, input: usize, hidden: usize) -> LayerWeights {
    let rows = kind.gate_count() * hidden;
    let scale = 1.0 / (hidden as f32).sqrt();
    let fill = |n: usize, seed: f32| {
        (0..n)
            .map(|k| ((k as f32 * 0.618 + seed).sin()) * scale)
            .collect::<Vec<_>>()
    };
    LayerWeights::new(
        kind,
        input,
        hidden,
        fill(rows * input, 0.1),
        fill(rows * hidden, 0.2),
        Some(fill(rows, 0.3)),
        Some(fill(rows, 0.4)),
    )
    .expect("consistent sizes")
}

/// Rounds of blocks in which [`interleaved_medians`] alternates the cells it times: as many as
/// give blocks of about [`CALLS_PER_BLOCK`] calls, within these bounds.
const INTERLEAVED_ROUNDS: std::ops::RangeInclusive<usize> = 5..=40;

/// Calls a block should hold, where the time allows.
const CALLS_PER_BLOCK: f64 = 4.0;

/// Times each of `calls` for about `seconds` and returns each one's median call.
///
/// Each is called once to warm up. One alone is then called until `seconds` have passed (at
/// least 5 and at most 10 000 times). Several (the GRU and the LSTM of one shape) take turns in
/// rounds of blocks ([`INTERLEAVED_ROUNDS`]), each block `seconds / rounds` of one's calls (at
/// least one), the order reversed from round to round: the host's speed changes within
/// seconds, and timed one after the other, GRU time over LSTM time at B = 1, I = H = 256 came
/// out anywhere from 0.69 to 0.94 in ten runs (2026-11-30). Taking turns, both see the same
/// moments.
fn interleaved_medians(seconds: f64, calls: &mut [Box<dyn FnMut() + '_>]) -> Vec<f64> {
    let mut slowest_call = 0.0f64;
    for call in calls.iter_mut() {
        let start = Instant::now();
        call();
        slowest_call = slowest_call.max(start.elapsed().as_secs_f64());
    }
    let (rounds, min_per_block) = if calls.len() > 1 {
        let fitting = (seconds / (CALLS_PER_BLOCK * slowest_call)) as usize;
        (
            fitting.clamp(*INTERLEAVED_ROUNDS.start(), *INTERLEAVED_ROUNDS.end()),
            1,
        )
    } else {
        (1, 5)
    };
    let max_per_block = 10_000 / rounds;
    let block_seconds = seconds / rounds as f64;
    let mut samples = vec![Vec::new(); calls.len()];
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..calls.len()).collect()
        } else {
            (0..calls.len()).rev().collect()
        };
        for i in order {
            let start = Instant::now();
            let mut count = 0;
            while count < max_per_block
                && (count < min_per_block || start.elapsed().as_secs_f64() < block_seconds)
            {
                let t = Instant::now();
                calls[i]();
                samples[i].push(t.elapsed().as_secs_f64());
                count += 1;
            }
        }
    }
    samples.iter_mut().map(|s| median(s)).collect()
}

/// Times `cells` on one kernel, mode and shape, taking turns ([`interleaved_medians`]), and
/// returns a measurement for each, in the order of `cells`.
#[allow(clippy::too_many_arguments)]
fn measure_cells(
    kernel: KernelKind,
    cells: &[Cell],
    mode: Mode,
    shape: Shape,
    threads: usize,
    seconds: f64,
    layout: PanelLayout,
) -> Result<Vec<Measurement>, CliError> {
    let models = cells
        .iter()
        .map(|&cell| Model::single_layer(cell, weights(cell.kind(), shape.input, shape.hidden)))
        .collect::<Result<Vec<_>, _>>()?;
    let x: Vec<f32> = (0..shape.seq_len * shape.batch * shape.input)
        .map(|k| (k as f32 * 0.37).sin())
        .collect();
    let medians = match (kernel, mode) {
        (KernelKind::Simd, mode) => {
            let mut simds = models
                .iter()
                .map(|model| SimdModel::with_layout(model, threads, layout))
                .collect::<Result<Vec<_>, _>>()?;
            if mode == Mode::Seq {
                let input = &SequenceInput::new(&x, shape.seq_len, shape.batch);
                let mut calls: Vec<Box<dyn FnMut() + '_>> = simds
                    .iter_mut()
                    .map(|simd| {
                        Box::new(move || {
                            std::hint::black_box(simd.forward(input).expect("valid input"));
                        }) as Box<dyn FnMut()>
                    })
                    .collect();
                interleaved_medians(seconds, &mut calls)
            } else {
                let mut streams = simds
                    .iter()
                    .map(|simd| simd.stream(shape.batch))
                    .collect::<Result<Vec<_>, _>>()?;
                let step_x = &x[..shape.batch * shape.input];
                let mut calls: Vec<Box<dyn FnMut() + '_>> = streams
                    .iter_mut()
                    .map(|stream| {
                        Box::new(move || {
                            std::hint::black_box(stream.step(step_x).expect("valid input"));
                        }) as Box<dyn FnMut()>
                    })
                    .collect();
                interleaved_medians(seconds, &mut calls)
            }
        }
        (KernelKind::Ref, mode) => {
            let t = if mode == Mode::Step { 1 } else { shape.seq_len };
            let x = &x[..t * shape.batch * shape.input];
            let state_len = shape.batch * shape.hidden;
            let mut references: Vec<(ReferenceKernel, bool, Vec<f32>, Vec<f32>)> = models
                .into_iter()
                .zip(cells)
                .map(|(model, &cell)| {
                    let lstm = cell == Cell::Lstm;
                    (
                        ReferenceKernel::new(model),
                        lstm,
                        vec![0.0; state_len],
                        vec![0.0; state_len],
                    )
                })
                .collect();
            let mut calls: Vec<Box<dyn FnMut() + '_>> = references
                .iter_mut()
                .map(|(reference, lstm, h, c)| {
                    Box::new(move || {
                        let mut input = SequenceInput::new(x, t, shape.batch).h0(h);
                        if *lstm {
                            input = input.c0(c);
                        }
                        let out = reference.forward(&input).expect("valid input");
                        if mode == Mode::Step {
                            h.copy_from_slice(&out.h_n);
                            if let Some(c_n) = out.c_n {
                                c.copy_from_slice(&c_n);
                            }
                        }
                    }) as Box<dyn FnMut()>
                })
                .collect();
            interleaved_medians(seconds, &mut calls)
        }
    };
    Ok(cells
        .iter()
        .zip(medians)
        .map(|(&cell, seconds)| Measurement {
            kernel: kernel.name().to_owned(),
            cell: cell.kind(),
            variant: match cell {
                Cell::Gru(v) => Some(v),
                Cell::Lstm => None,
            },
            mode,
            shape,
            threads,
            seconds,
        })
        .collect())
}

/// The roofline of one measurement: the time the FMA peak alone allows, and the time the
/// weights' reads alone allow.
struct Roofline {
    peak_flops: f64,
    floor_seconds: f64,
}

/// Bytes of weights one call of `cell` on `shape` must stream (`W_hh` once per step and `W_ih`
/// once per call), and the working set each of `threads` threads streams them from: its share
/// of `W_hh` in a sequence, of both matrices in a step.
fn weight_traffic(cell: CellKind, mode: Mode, shape: Shape, threads: usize) -> (f64, usize) {
    let g = cell.gate_count();
    let w_hh = g * shape.hidden * shape.hidden * 4;
    let w_ih = g * shape.hidden * shape.input * 4;
    let per_thread_working_set = match mode {
        Mode::Seq => w_hh,
        Mode::Step => w_hh + w_ih,
    } / threads.max(1);
    ((shape.seq_len * w_hh + w_ih) as f64, per_thread_working_set)
}

/// Runs `gru bench`.
pub fn run(options: &BenchOptions) -> Result<(), CliError> {
    // Read the peers first: a bad file should fail before minutes of measuring.
    let peers = match &options.compare {
        Some(path) => read_peers(path)?,
        None => Vec::new(),
    };
    let shapes = options
        .shapes
        .clone()
        .unwrap_or_else(|| default_shapes(options.mode));
    // A step is one timestep per call: a longer T would be counted as FLOPs never done.
    if options.mode == Mode::Step
        && let Some(shape) = shapes.iter().find(|s| s.seq_len != 1)
    {
        return Err(CliError(format!(
            "--mode step times one timestep per call, so T must be 1 (got {shape})"
        )));
    }
    // Also before measuring: a shape that does not fit in memory is an error, not an abort
    // at its first allocation minutes later.
    check_memory(&shapes, &options.cells, available_memory())?;
    // And a plot that could not be written fails now, not after the measuring.
    let mut plot_file = PendingOutputs::default();
    if let Some(path) = &options.svg {
        plot_file.write_bytes(path, b"")?;
    }
    let threads = options.threads.max(1);
    let working_sets: BTreeSet<usize> = shapes
        .iter()
        .flat_map(|&shape| {
            let mode = options.mode;
            options
                .cells
                .iter()
                .map(move |&cell| weight_traffic(cell, mode, shape, threads).1)
        })
        .collect();
    let cannot_measure =
        |e: std::io::Error| CliError(format!("cannot start {threads} measuring threads: {e}"));
    eprintln!("measuring the FMA peak and read bandwidth on {threads} thread(s)...");
    let (results, limits) = MachineLimits::around(
        threads,
        options.layout,
        &working_sets,
        cannot_measure,
        || {
            let passes = (1..=options.passes.max(1))
                .map(|pass| {
                    if options.passes > 1 {
                        eprintln!("pass {pass} of {}", options.passes);
                    }
                    measure_all(options, &shapes, threads)
                })
                .collect::<Result<Vec<_>, _>>()?;
            eprintln!("measuring the FMA peak and read bandwidth again...");
            Ok(median_over_passes(passes))
        },
    )?;
    let drift = limits.largest_drift();
    if drift > DRIFT_WARNING {
        eprintln!(
            "warning: the machine's limits measured up to {:.0} % apart before and after the \
             kernels; the host's speed changed during the run, so its figures compare poorly",
            100.0 * drift
        );
    }
    let peak = limits.peak.best();
    let rooflines: Vec<Roofline> = results
        .iter()
        .map(|m| {
            let (bytes, working_set) = weight_traffic(m.cell, m.mode, m.shape, m.threads);
            let bandwidth = limits.bandwidth[&working_set].best();
            Roofline {
                peak_flops: peak,
                floor_seconds: (m.flops() / peak).max(bytes / (bandwidth * m.threads as f64)),
            }
        })
        .collect();
    if options.json {
        for m in &results {
            println!("{}", m.json());
        }
    } else {
        print_table(&results, &rooflines, &peers, &limits, options.layout);
    }
    if let Some(path) = &options.svg {
        let svg = crate::plot::render_svg(&results, peak).map_err(|e| CliError::file(path, e))?;
        plot_file.write_bytes(path, svg.as_bytes())?;
        plot_file.commit()?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Times every shape, cell and kernel `options` ask for, with progress on stderr; the cells of
/// one shape and kernel take turns ([`measure_cells`]). Returned by shape, then cell, then
/// kernel. The reference runs only on affordable shapes unless the shapes were given.
fn measure_all(
    options: &BenchOptions,
    shapes: &[Shape],
    threads: usize,
) -> Result<Vec<Measurement>, CliError> {
    let mut results = Vec::new();
    let explicit_shapes = options.shapes.is_some();
    let cells: Vec<Cell> = options
        .cells
        .iter()
        .map(|kind| match kind {
            CellKind::Gru => Cell::Gru(options.variant),
            CellKind::Lstm => Cell::Lstm,
        })
        .collect();
    let cell_names: Vec<&str> = options.cells.iter().map(|c| c.name()).collect();
    let total = shapes.len() * options.kernels.len();
    let mut done = 0;
    for &shape in shapes {
        let mut of_shape = Vec::new();
        for &kernel in &options.kernels {
            done += 1;
            if kernel == KernelKind::Ref && !explicit_shapes && !reference_is_affordable(shape) {
                continue;
            }
            eprintln!(
                "[{done}/{total}] {} {} {} {shape} ...",
                kernel.name(),
                cell_names.join(","),
                options.mode.name()
            );
            of_shape.extend(measure_cells(
                kernel,
                &cells,
                options.mode,
                shape,
                threads,
                options.seconds_per_measurement,
                options.layout,
            )?);
        }
        // The table's order: each cell's kernels together.
        of_shape.sort_by_key(|m| options.cells.iter().position(|&c| c == m.cell));
        results.extend(of_shape);
    }
    Ok(results)
}

/// The measurements of the first pass, each with its median seconds over all `passes`, which
/// measured the same things in the same order (as every pass of [`measure_all`] does).
///
/// Passes spread each measurement over the whole run. This host slows down for a few seconds
/// at a time (a 40-second run of one GRU call after another at B = 64, I = H = 256 went from
/// about 131 to about 91 GFLOP/s for 3 to 4 seconds, twice): one pass times a shape within
/// about a second, so such a slowdown spoils every call of the shapes it falls on, while over
/// several passes it spoils only the passes it falls on, and the median leaves them out.
fn median_over_passes(passes: Vec<Vec<Measurement>>) -> Vec<Measurement> {
    let mut passes = passes.into_iter();
    let Some(mut merged) = passes.next() else {
        return Vec::new();
    };
    let mut seconds: Vec<Vec<f64>> = merged.iter().map(|m| vec![m.seconds]).collect();
    for pass in passes {
        assert_eq!(pass.len(), merged.len(), "passes measure the same things");
        for ((m, of_m), again) in merged.iter().zip(&mut seconds).zip(pass) {
            debug_assert!(m.kernel == again.kernel && m.key() == again.key());
            of_m.push(again.seconds);
        }
    }
    for (m, mut of_m) in merged.iter_mut().zip(seconds) {
        m.seconds = median(&mut of_m);
    }
    merged
}

/// Past this [`MachineLimits::largest_drift`], `gru bench` warns that the host changed speed.
const DRIFT_WARNING: f64 = 0.1;

/// An error for the first shape whose cells need more than `available` bytes together (see
/// [`Shape::bytes_needed`]; the cells of a shape are timed side by side, each with its own
/// model, input and output), or more than can be counted.
fn check_memory(
    shapes: &[Shape],
    cells: &[CellKind],
    available: Option<u64>,
) -> Result<(), CliError> {
    let names: Vec<&str> = cells.iter().map(|c| c.name()).collect();
    let names = names.join(" and the ");
    for shape in shapes {
        let needed = cells.iter().try_fold(0u64, |total, cell| {
            total.checked_add(shape.bytes_needed(cell.gate_count())?)
        });
        let gb = |bytes: u64| bytes as f64 / 1e9;
        match (needed, available) {
            (None, _) => {
                return Err(CliError(format!(
                    "shape {shape} is too large: the bytes of the {names} overflow 64 bits"
                )));
            }
            (Some(needed), Some(available)) if needed > available => {
                return Err(CliError(format!(
                    "shape {shape} needs about {:.1} GB for the {names} (weights as given and \
                     packed, input and output, each), but {:.1} GB of memory are available",
                    gb(needed),
                    gb(available)
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn read_peers(path: &PathBuf) -> Result<Vec<Measurement>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            Measurement::parse_json(l)
                .map_err(|e| CliError::file(path, format!("line {}: {e}", n + 1)))
        })
        .collect()
}

fn print_table(
    results: &[Measurement],
    rooflines: &[Roofline],
    peers: &[Measurement],
    limits: &MachineLimits,
    layout: PanelLayout,
) {
    let threads = results.first().map_or(1, |m| m.threads);
    let lanes = LANES * layout.panels_per_row();
    // Each limit as the roofline uses it (the better of two measurements), then both.
    let both = |l: BeforeAndAfter, unit: f64| {
        format!(
            "{:.1} (before the kernels {:.1}, after {:.1})",
            l.best() / unit,
            l.before / unit,
            l.after / unit
        )
    };
    println!(
        "simd tiles of {lanes}-lane vectors; FMA peak on {threads} thread(s) with {}-bit FMAs, GFLOP/s: {}",
        lanes * 32,
        both(limits.peak, 1e9)
    );
    for (working_set, &bw) in &limits.bandwidth {
        println!(
            "read bandwidth per thread, {} KiB working set, GB/s: {}",
            working_set / 1024,
            both(bw, 1e9)
        );
    }
    println!(
        "{:<6} {:<5} {:<12} {:<5} {:>16} {:>3} {:>12} {:>9} {:>12} {:>6} {:>10} {:>6} {:>8} {:>8}",
        "kernel",
        "cell",
        "variant",
        "mode",
        "B:T:I:H",
        "thr",
        "median s",
        "GFLOP/s",
        "steps/s",
        "%peak",
        "floor s",
        "eff",
        "GRU/LSTM",
        "simd/ref"
    );
    for (m, roof) in results.iter().zip(rooflines) {
        let partner = |kernel: &str, cell: CellKind| {
            results.iter().find(|o| {
                o.kernel == kernel
                    && o.cell == cell
                    && o.mode == m.mode
                    && o.shape == m.shape
                    && o.threads == m.threads
            })
        };
        let gru_lstm = match (
            partner(&m.kernel, CellKind::Gru),
            partner(&m.kernel, CellKind::Lstm),
        ) {
            (Some(g), Some(l)) if m.cell == CellKind::Gru => {
                format!("{:.2}", g.seconds / l.seconds)
            }
            _ => "".to_owned(),
        };
        let simd_ref = match (m.kernel.as_str(), partner("ref", m.cell)) {
            ("simd", Some(r)) => format!("{:.0}x", r.seconds / m.seconds),
            _ => "".to_owned(),
        };
        println!(
            "{:<6} {:<5} {:<12} {:<5} {:>16} {:>3} {:>12.4e} {:>9.1} {:>12.0} {:>5.0}% {:>10.3e} {:>5.0}% {:>8} {:>8}",
            m.kernel,
            m.cell.name(),
            m.variant.map_or("-", variant_name),
            m.mode.name(),
            m.shape.to_string(),
            m.threads,
            m.seconds,
            m.gflops(),
            m.steps_per_s(),
            100.0 * m.flops() / m.seconds / roof.peak_flops,
            roof.floor_seconds,
            100.0 * roof.floor_seconds / m.seconds,
            gru_lstm,
            simd_ref
        );
    }
    if !peers.is_empty() {
        println!();
        println!("against peers (peer seconds / our seconds; above 1 means we are faster):");
        for m in results.iter().filter(|m| m.kernel == "simd") {
            let against: Vec<String> = peers
                .iter()
                .filter(|p| {
                    p.key() == m.key()
                        || (p.cell == m.cell
                            && p.mode == m.mode
                            && p.shape == m.shape
                            && p.threads == m.threads
                            && p.variant.is_none() == m.variant.is_none())
                })
                .map(|p| {
                    format!(
                        "{} {:.2}x ({:.1} GFLOP/s)",
                        p.kernel,
                        p.seconds / m.seconds,
                        p.gflops()
                    )
                })
                .collect();
            if !against.is_empty() {
                println!(
                    "{:<5} {:>16} {:>9.1} GFLOP/s  vs  {}",
                    m.cell.name(),
                    m.shape.to_string(),
                    m.gflops(),
                    against.join(", ")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_timed_together_take_turns_in_blocks() {
        let log = std::cell::RefCell::new(Vec::new());
        let log_ref = &log;
        let mut calls: Vec<Box<dyn FnMut() + '_>> = (0..2)
            .map(|i| Box::new(move || log_ref.borrow_mut().push(i)) as Box<dyn FnMut()>)
            .collect();
        let medians = interleaved_medians(0.002, &mut calls);
        drop(calls);
        assert_eq!(medians.len(), 2);
        assert!(medians.iter().all(|m| m.is_finite() && *m >= 0.0));
        let log = log.into_inner();
        // One warm-up call each, in order, then blocks whose owner changes once a round at
        // least (rounds alternate the order, so a round's last block and the next round's
        // first belong to the same cell).
        assert_eq!(log[..2], [0, 1]);
        let turns = log[2..].windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            turns >= *INTERLEAVED_ROUNDS.start(),
            "{turns} turns in {log:?}"
        );
        for cell in 0..2 {
            let timed = log[2..].iter().filter(|&&c| c == cell).count();
            assert!(
                timed >= *INTERLEAVED_ROUNDS.start(),
                "cell {cell} timed {timed} times"
            );
        }
        // Alone, one block of at least five calls after the warm-up.
        let mut count = 0;
        let mut alone: Vec<Box<dyn FnMut() + '_>> = vec![Box::new(|| count += 1)];
        assert_eq!(interleaved_medians(0.0, &mut alone).len(), 1);
        drop(alone);
        assert_eq!(count, 6);
    }

    /// The example line.
    fn sample() -> Measurement {
        Measurement {
            kernel: "simd".into(),
            cell: CellKind::Gru,
            variant: Some(GruVariant::ResetAfter),
            mode: Mode::Seq,
            shape: Shape {
                batch: 1,
                seq_len: 100,
                input: 256,
                hidden: 256,
            },
            threads: 2,
            seconds: 0.00123,
        }
    }

    #[test]
    fn passes_give_each_measurement_its_own_median() {
        let measured = |seconds: [f64; 2]| {
            let mut lstm = sample();
            lstm.cell = CellKind::Lstm;
            lstm.variant = None;
            [sample(), lstm]
                .into_iter()
                .zip(seconds)
                .map(|(m, seconds)| Measurement { seconds, ..m })
                .collect::<Vec<_>>()
        };
        // The GRU's third pass and the LSTM's first ran while the host was slow.
        let passes = vec![
            measured([1.0, 9.0]),
            measured([1.2, 2.0]),
            measured([5.0, 2.2]),
        ];
        let merged = median_over_passes(passes.clone());
        assert_eq!(merged, measured([1.2, 2.2]));
        assert_eq!(median_over_passes(passes[..1].to_vec()), passes[0]);
        assert_eq!(median_over_passes(Vec::new()), Vec::new());
    }

    #[test]
    fn json_lines_round_trip_with_exactly_the_documented_keys() {
        let m = sample();
        let line = m.json();
        let keys: Vec<String> = parse_flat_json(&line).unwrap().into_keys().collect();
        let mut want = JSON_KEYS;
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(Measurement::parse_json(&line).unwrap(), m);
        // 2·3·256·512·100 flops in 1.23 ms.
        assert!((m.gflops() - 63.9).abs() < 0.1, "{}", m.gflops());
        let lstm = Measurement {
            cell: CellKind::Lstm,
            variant: None,
            ..m
        };
        assert!(lstm.json().contains("\"variant\":null"));
        assert_eq!(Measurement::parse_json(&lstm.json()).unwrap(), lstm);
    }

    #[test]
    fn shapes_that_do_not_fit_in_memory_are_errors() {
        let shape: Shape = "2:3:5:7".parse().unwrap();
        // GRU: 3·7·(5 + 7 + 2) = 294 weights, twice; 2·3·(5 + 7) = 72 sequence values.
        assert_eq!(shape.bytes_needed(3), Some((2 * 294 + 72) * 4));
        let huge: Shape = format!("{}:2:1:1", usize::MAX).parse().unwrap();
        assert_eq!(huge.bytes_needed(3), None);
        let cells = [CellKind::Gru, CellKind::Lstm];
        let needed_by_lstm = shape.bytes_needed(4).unwrap();
        assert!(check_memory(&[shape], &cells[1..], Some(needed_by_lstm)).is_ok());
        let error = check_memory(&[shape], &cells[1..], Some(needed_by_lstm - 1)).unwrap_err();
        assert!(
            error.0.contains("2:3:5:7") && error.0.contains("lstm"),
            "{error}"
        );
        // Both cells of a shape are timed side by side, so both must fit at once.
        let needed_by_both = needed_by_lstm + shape.bytes_needed(3).unwrap();
        assert!(check_memory(&[shape], &cells, Some(needed_by_both)).is_ok());
        let error = check_memory(&[shape], &cells, Some(needed_by_both - 1)).unwrap_err();
        assert!(error.0.contains("gru and the lstm"), "{error}");
        // Where the available memory is unknown, only overflow is an error.
        assert!(check_memory(&[shape], &cells, None).is_ok());
        assert!(check_memory(&[huge], &cells, None).is_err());
    }

    #[test]
    fn peer_lines_with_impossible_numbers_are_errors() {
        let line = sample().json();
        assert!(Measurement::parse_json(&line).is_ok());
        // `line` with the value of `key` replaced by `value`.
        let with = |key: &str, value: &str| {
            let start = line.find(&format!("\"{key}\":")).expect("key in line") + key.len() + 3;
            let end = start + line[start..].find([',', '}']).expect("value ends");
            format!("{}{value}{}", &line[..start], &line[end..])
        };
        for (key, value) in [
            ("seconds", "-1"),
            ("seconds", "0"),
            ("seconds", "NaN"),
            ("batch", "0"),
            ("batch", "1.5"),
            ("threads", "-2"),
        ] {
            let bad = with(key, value);
            assert!(Measurement::parse_json(&bad).is_err(), "{bad}");
        }
        // The helper itself: a good value still parses.
        assert!(Measurement::parse_json(&with("seconds", "0.5")).is_ok());
    }

    #[test]
    fn shapes_parse_and_reject_nonsense() {
        assert_eq!(
            "64:100:256:512".parse::<Shape>().unwrap(),
            Shape {
                batch: 64,
                seq_len: 100,
                input: 256,
                hidden: 512
            }
        );
        for bad in ["1:2:3", "1:2:3:x", "0:1:1:1", "", "1:2:3:4:5"] {
            assert!(bad.parse::<Shape>().is_err(), "{bad}");
        }
    }
}
