//! The `gru` command: `gru run` (inference on a safetensors model and a `.npy` input), with
//! `gru bench` and `gru accuracy` alongside.

// The doc comments below are the command's help text, where `[T, B, I]` is a shape, not a link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gru_bench::CliError;
use gru_bench::commands::run::{KernelChoice, RunOptions};
use gru_core::{CellKind, GruVariant};

/// Fast CPU inference for GRU and LSTM models trained in PyTorch.
#[derive(Debug, Parser)]
#[command(name = "gru", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Threads for the sweep [default: all cores].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Skip the speed comparison.
    #[arg(long)]
    no_speed: bool,
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
    /// Worker threads for the simd kernel [default: all cores].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

impl From<RunArgs> for RunOptions {
    fn from(a: RunArgs) -> Self {
        RunOptions {
            weights: a.weights,
            prefix: a.prefix,
            cell: a.cell.map(|c| match c {
                CellArg::Gru => CellKind::Gru,
                CellArg::Lstm => CellKind::Lstm,
            }),
            variant: a.variant.map(|v| match v {
                VariantArg::ResetAfter => GruVariant::ResetAfter,
                VariantArg::ResetBefore => GruVariant::ResetBefore,
            }),
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

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let warning = gru_simd::simd_level().warning();
    // Reports start with the warning; `run` adds it only on success, so that a failure is
    // always exactly one line.
    if let (Some(w), false) = (&warning, matches!(cli.command, Command::Run(_))) {
        eprintln!("{w}");
    }
    let result: Result<(), CliError> = match cli.command {
        Command::Run(args) => gru_bench::commands::run::run(&args.into()).inspect(|()| {
            if let Some(w) = &warning {
                eprintln!("{w}");
            }
        }),
        Command::Accuracy(args) => {
            gru_bench::commands::accuracy::run(&gru_bench::commands::accuracy::AccuracyOptions {
                exhaustive: args.exhaustive,
                stride: args.stride,
                threads: args.threads.unwrap_or_else(available_cores),
                skip_speed: args.no_speed,
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
