//! The `gru` command: `gru bench` (the performance report, the default), `gru run` (inference
//! on a safetensors model and a `.npy` input) and `gru accuracy` (activation error report).

// The doc comments below are the command's help text, where `[T, B, I]` is a shape, not a link.
#![allow(rustdoc::broken_intra_doc_links)]
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gru_bench::CliError;
use gru_bench::commands::run::{KernelChoice, RunOptions};
use gru_core::{CellKind, GruVariant};
use gru_simd::activation::accuracy::Width;
use gru_simd::packing::PanelLayout;

/// Fast CPU inference for GRU and LSTM models trained in PyTorch.
#[derive(Debug, Parser)]
#[command(name = "gru", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand, `gru` runs `gru bench` with these options.
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The performance report (the default): median time, GFLOP/s, sequence-steps/s, share of
    /// the FMA peak and of the roofline floor, GRU/LSTM and simd/ref ratios.
    ///
    /// The FMA peak and the read bandwidths are measured before and after the kernels; the
    /// rooflines use the better of each, and a warning on stderr says when the two disagree by
    /// more than 10 % (the host changed speed during the run).
    Bench(BenchArgs),
    /// Run a model saved as a safetensors state_dict on a .npy input.
    ///
    /// Shapes follow PyTorch: input [T, B, I] (or [B, T, I] with --batch-first), output
    /// [T, B, D·H] (or [B, T, D·H]), h0/c0/hn/cn [L·D, B, H], lengths [B]. All arrays are
    /// float32 little-endian in C order; lengths are int32 or int64. On any error nothing is
    /// written.
    Run(RunArgs),
    /// Error report of the vectorized sigmoid and tanh against f64 references, and their speed
    /// against the scalar std functions. Exits nonzero if an accuracy bound is broken.
    Accuracy(AccuracyArgs),
}

#[derive(Debug, clap::Args)]
struct AccuracyArgs {
    /// Check all 2^32 inputs (tens of seconds on all cores) instead of a sample.
    #[arg(long)]
    exhaustive: bool,
    /// Without --exhaustive, check every S-th bit pattern.
    #[arg(long, value_name = "S", default_value_t = 64)]
    stride: u64,
    /// Threads for the sweep, 1 to 1024 [default: all cores].
    #[arg(long, value_name = "N", value_parser = thread_count)]
    threads: Option<usize>,
    /// Skip the speed comparison.
    #[arg(long)]
    no_speed: bool,
    /// Vector lanes of the form to check: 8 (the public functions, and the 8-lane tiles'
    /// epilogues) or 16 (AVX-512, the 16-lane tiles' epilogues) [default: every width this
    /// CPU runs].
    #[arg(long, value_name = "N", value_parser = activation_width)]
    lanes: Option<Width>,
}

fn activation_width(text: &str) -> Result<Width, String> {
    lanes_option(
        text,
        [Width::Eight, Width::Sixteen],
        |w| w.is_available(),
        "activations",
    )
}

/// A `--lanes` value: `eight` for "8", `sixteen` for "16". Any other text is an error, and so
/// is a choice this CPU cannot run (`runs_here`): sixteen lanes need AVX-512F, and the error
/// says so, naming `what` would run in them.
fn lanes_option<T>(
    text: &str,
    [eight, sixteen]: [T; 2],
    runs_here: impl Fn(&T) -> bool,
    what: &str,
) -> Result<T, String> {
    let choice = match text {
        "8" => eight,
        "16" => sixteen,
        _ => return Err(format!("--lanes must be 8 or 16, not {text:?}")),
    };
    if runs_here(&choice) {
        Ok(choice)
    } else {
        Err(format!(
            "{text}-lane {what} need AVX-512F, which this CPU lacks"
        ))
    }
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Shapes as B:T:I:H, comma-separated, T = 1 in step mode [default: B ∈ {1, 64},
    /// I = H ∈ {128, 256, 512, 1024}, T = 100 (50 at 1024), T = 1 in step mode].
    #[arg(long, value_delimiter = ',', value_name = "B:T:I:H")]
    shapes: Option<Vec<gru_bench::commands::bench::Shape>>,
    /// Worker threads of the simd model, 1 to 1024 [default: all cores]. Shapes whose steps
    /// are under 160 000 FLOPs run on the calling thread alone whatever N is, unless their
    /// batch splits by rows, as they would in an application
    /// (`SimdModel::set_alone_below_step_flops`).
    #[arg(long, value_name = "N", value_parser = thread_count)]
    threads: Option<usize>,
    /// Cells to run, comma-separated [default: gru,lstm].
    #[arg(long, value_delimiter = ',', value_enum)]
    cells: Option<Vec<CellArg>>,
    /// Kernels to run, comma-separated [default: simd,ref; ref only on small shapes unless
    /// --shapes is given].
    #[arg(long, value_delimiter = ',', value_enum)]
    kernels: Option<Vec<KernelArg>>,
    /// GRU variant.
    #[arg(long, value_enum, default_value = "reset-after")]
    variant: VariantArg,
    /// seq: a whole sequence per call; step: one timestep per call with the state carried.
    #[arg(long, value_enum, default_value = "seq")]
    mode: ModeArg,
    /// Print one JSON object per line on stdout and nothing else there.
    #[arg(long)]
    json: bool,
    /// Write a plot of GFLOP/s against hidden size (SVG).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Show peer figures (JSON lines, as written by gru-bench/peers/peers.py) as ratios.
    #[arg(long, value_name = "PEERS.jsonl")]
    compare: Option<PathBuf>,
    /// Seconds of timing per measurement, after a warm-up call.
    #[arg(long, value_name = "S", default_value_t = 0.6)]
    seconds: f64,
    /// Passes over all the shapes, 1 to 1000; each figure is the median of its passes, so a
    /// host that slows down for a few seconds spoils a few passes rather than whole shapes.
    /// The run takes about N times as long.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    passes: u16,
    /// Vector lanes of the simd kernels' tiles: 8 (AVX2 and FMA) or 16 (AVX-512, weights
    /// packed in pairs of panels) [default: 16 where the CPU has AVX-512F, else 8]. The FMA
    /// peak is measured in the same width.
    #[arg(long, value_name = "N", value_parser = lane_count)]
    lanes: Option<PanelLayout>,
}

fn lane_count(text: &str) -> Result<PanelLayout, String> {
    lanes_option(
        text,
        [PanelLayout::Contiguous, PanelLayout::Pairs],
        |layout| layout.is_supported(),
        "tiles",
    )
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Seq,
    Step,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CellArg {
    Gru,
    Lstm,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VariantArg {
    /// PyTorch nn.GRU: n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)).
    ResetAfter,
    /// Cho et al. 2014, ONNX linear_before_reset=0: n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn).
    ResetBefore,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KernelArg {
    /// The scalar reference: slow, f64 accumulation.
    Ref,
    /// The packed, vectorized, multithreaded kernels.
    Simd,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The weights: a PyTorch nn.GRU / nn.LSTM state_dict saved with safetensors
    /// (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, `_reverse` for the
    /// backward direction).
    #[arg(long, value_name = "M.safetensors")]
    weights: PathBuf,
    /// Name prefix of the module inside the file, e.g. `encoder.rnn.`; found automatically
    /// when the file holds only one recurrent module.
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// The cell you expect; an error if the weights say otherwise [default: what the weights
    /// say].
    #[arg(long, value_enum)]
    cell: Option<CellArg>,
    /// How a GRU applies its reset gate [default: reset-after, as PyTorch].
    #[arg(long, value_enum)]
    variant: Option<VariantArg>,
    /// Input sequence, float32 [T, B, I] (or [B, T, I] with --batch-first).
    #[arg(long, value_name = "X.npy")]
    input: PathBuf,
    /// Initial hidden state, float32 [L·D, B, H] [default: zeros].
    #[arg(long, value_name = "H0.npy")]
    h0: Option<PathBuf>,
    /// Initial cell state of an LSTM, float32 [L·D, B, H] [default: zeros].
    #[arg(long, value_name = "C0.npy")]
    c0: Option<PathBuf>,
    /// Valid length of each sequence, int32 or int64 [B], each in 0..=T; outputs past a
    /// sequence's length are zero and its final state is taken at its last valid step.
    #[arg(long, value_name = "L.npy")]
    lengths: Option<PathBuf>,
    /// Input and output are [B, T, ·] instead of [T, B, ·].
    #[arg(long)]
    batch_first: bool,
    /// Where to write the output sequence, float32 [T, B, D·H] (or [B, T, D·H]).
    #[arg(long, value_name = "Y.npy")]
    output: PathBuf,
    /// Where to write the final hidden state, float32 [L·D, B, H].
    #[arg(long, value_name = "HN.npy")]
    hn: Option<PathBuf>,
    /// Where to write the final cell state of an LSTM, float32 [L·D, B, H].
    #[arg(long, value_name = "CN.npy")]
    cn: Option<PathBuf>,
    /// Which kernel runs the model.
    #[arg(long, value_enum, default_value = "simd")]
    kernel: KernelArg,
    /// Worker threads for the simd kernel, 1 to 1024 [default: all cores].
    #[arg(long, value_name = "N", value_parser = thread_count)]
    threads: Option<usize>,
}

impl From<RunArgs> for RunOptions {
    fn from(a: RunArgs) -> Self {
        RunOptions {
            weights: a.weights,
            prefix: a.prefix,
            cell: a.cell.map(cell_kind),
            variant: a.variant.map(gru_variant),
            input: a.input,
            h0: a.h0,
            c0: a.c0,
            lengths: a.lengths,
            batch_first: a.batch_first,
            output: a.output,
            hn: a.hn,
            cn: a.cn,
            kernel: match a.kernel {
                KernelArg::Ref => KernelChoice::Reference,
                KernelArg::Simd => KernelChoice::Simd,
            },
            threads: a.threads.unwrap_or_else(available_cores),
        }
    }
}

fn cell_kind(c: CellArg) -> CellKind {
    match c {
        CellArg::Gru => CellKind::Gru,
        CellArg::Lstm => CellKind::Lstm,
    }
}

fn gru_variant(v: VariantArg) -> GruVariant {
    match v {
        VariantArg::ResetAfter => GruVariant::ResetAfter,
        VariantArg::ResetBefore => GruVariant::ResetBefore,
    }
}

/// The most threads `--threads` accepts: the most workers a model takes. (20 000 workers on
/// this project's 2-core machine had not finished one benchmark of a tiny shape after 100 s.)
const MAX_THREADS: usize = gru_simd::threading::MAX_THREADS;

/// Parses `--threads`: a whole number from 1 to [`MAX_THREADS`].
fn thread_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) if n > MAX_THREADS => Err(format!("must be at most {MAX_THREADS}")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// A warning when a model gets more workers than the machine has cores: they meet at every
/// step, so each step then waits for a worker that is not running.
fn oversubscription_warning(threads: Option<usize>) -> Option<String> {
    let (threads, cores) = (threads?, available_cores());
    (threads > cores).then(|| {
        format!(
            "warning: {threads} worker threads on {cores} cores: the workers meet at every \
             step, so more workers than cores is slower (see the README)"
        )
    })
}

fn bench(a: BenchArgs) -> Result<(), CliError> {
    use gru_bench::commands::bench::{BenchOptions, KernelKind, Mode};
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        return Err(CliError("--seconds must be a positive number".into()));
    }
    let options = BenchOptions {
        shapes: a.shapes,
        threads: a.threads.unwrap_or_else(available_cores),
        cells: a.cells.map_or(vec![CellKind::Gru, CellKind::Lstm], |c| {
            c.into_iter().map(cell_kind).collect()
        }),
        kernels: a
            .kernels
            .map_or(vec![KernelKind::Simd, KernelKind::Ref], |k| {
                k.into_iter()
                    .map(|k| match k {
                        KernelArg::Simd => KernelKind::Simd,
                        KernelArg::Ref => KernelKind::Ref,
                    })
                    .collect()
            }),
        variant: gru_variant(a.variant),
        mode: match a.mode {
            ModeArg::Seq => Mode::Seq,
            ModeArg::Step => Mode::Step,
        },
        json: a.json,
        svg: a.svg,
        compare: a.compare,
        seconds_per_measurement: a.seconds,
        passes: a.passes.into(),
        layout: a.lanes.unwrap_or_else(PanelLayout::best),
    };
    gru_bench::commands::bench::run(&options)
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One plain line, like every other error of the command.
            let message = e.to_string();
            let first = message.lines().next().unwrap_or("invalid arguments");
            eprintln!("gru: {}", first.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let warning = gru_simd::simd_level().warning();
    // Reports start with the warning; `run` adds it only on success, so that a failure is
    // always exactly one line.
    if let (Some(w), false) = (&warning, matches!(cli.command, Some(Command::Run(_)))) {
        eprintln!("{w}");
    }
    let command = cli.command.unwrap_or(Command::Bench(cli.bench));
    let result: Result<(), CliError> = match command {
        Command::Bench(args) => {
            if let Some(w) = oversubscription_warning(args.threads) {
                eprintln!("{w}");
            }
            bench(args)
        }
        Command::Run(args) => {
            let simd_threads = args
                .threads
                .filter(|_| matches!(args.kernel, KernelArg::Simd));
            let warnings = [warning, oversubscription_warning(simd_threads)];
            gru_bench::commands::run::run(&args.into()).inspect(|()| {
                for w in warnings.iter().flatten() {
                    eprintln!("{w}");
                }
            })
        }
        Command::Accuracy(args) => {
            gru_bench::commands::accuracy::run(&gru_bench::commands::accuracy::AccuracyOptions {
                exhaustive: args.exhaustive,
                stride: args.stride,
                threads: args.threads.unwrap_or_else(available_cores),
                skip_speed: args.no_speed,
                widths: match args.lanes {
                    Some(width) => vec![width],
                    None => Width::ALL
                        .into_iter()
                        .filter(|w| w.is_available())
                        .collect(),
                },
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gru: {e}");
            ExitCode::FAILURE
        }
    }
}
