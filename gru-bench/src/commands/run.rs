//! `gru run`: inference on a safetensors model and a `.npy` input.

use std::path::{Path, PathBuf};

use gru_core::{Cell, CellKind, GruVariant, Model, ModelConfig, RecurrentKernel, SequenceInput};

use crate::CliError;
use crate::npy_io::{Array, PendingOutputs, read_f32, read_lengths};

/// Which kernel runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelChoice {
    /// The scalar reference (`gru-ref`).
    Reference,
    /// The packed SIMD kernels (`gru-simd`).
    Simd,
}

/// Everything `gru run` needs, as parsed from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The safetensors file.
    pub weights: PathBuf,
    /// Name prefix of the module in the file; `None` finds the only one.
    pub prefix: Option<String>,
    /// The cell the user expects; a mismatch with the weights is an error.
    pub cell: Option<CellKind>,
    /// How to run GRU weights; `None` means reset-after (PyTorch).
    pub variant: Option<GruVariant>,
    /// The input sequence, `[T, B, I]` or `[B, T, I]`.
    pub input: PathBuf,
    /// Initial hidden state `[L·D, B, H]`.
    pub h0: Option<PathBuf>,
    /// Initial cell state `[L·D, B, H]` (LSTM).
    pub c0: Option<PathBuf>,
    /// Sequence lengths `[B]`.
    pub lengths: Option<PathBuf>,
    /// Whether input and output are batch-major.
    pub batch_first: bool,
    /// Where to write the output sequence.
    pub output: PathBuf,
    /// Where to write `h_n`.
    pub hn: Option<PathBuf>,
    /// Where to write `c_n` (LSTM).
    pub cn: Option<PathBuf>,
    /// Which kernel to use.
    pub kernel: KernelChoice,
    /// Worker threads for the SIMD kernel.
    pub threads: usize,
}

/// Loads the model and checks it against what the user asked for.
fn load(options: &RunOptions) -> Result<Model, CliError> {
    let variant = options.variant.unwrap_or_default();
    let model = gru_core::load_model_file(&options.weights, options.prefix.as_deref(), variant)
        .map_err(|e| CliError::file(&options.weights, e))?;
    let found = model.kind();
    if let Some(cell) = options.cell.filter(|&cell| cell != found) {
        return Err(CliError::file(
            &options.weights,
            format!(
                "holds {} weights but --cell {} was given",
                found.name(),
                cell.name()
            ),
        ));
    }
    if found == CellKind::Lstm && options.variant.is_some() {
        return Err(CliError(
            "--variant applies to GRU models only; these weights are an LSTM".into(),
        ));
    }
    Ok(model)
}

/// Reads a state file and checks its shape `[L·D, B, H]`.
fn read_state(path: &Path, expected: [usize; 3]) -> Result<Array<f32>, CliError> {
    let state = read_f32(path, 3)?;
    if state.shape != expected {
        return Err(CliError::file(
            path,
            format!(
                "has shape {:?}; expected [L·D, B, H] = {expected:?}",
                state.shape
            ),
        ));
    }
    Ok(state)
}

/// Builds the kernel the options name.
fn kernel(model: Model, options: &RunOptions) -> Result<Box<dyn RecurrentKernel>, CliError> {
    if options.threads == 0 {
        return Err(CliError("--threads must be at least 1".into()));
    }
    match options.kernel {
        KernelChoice::Reference => Ok(Box::new(gru_ref::ReferenceKernel::new(model))),
        KernelChoice::Simd => Ok(Box::new(gru_simd::SimdModel::with_threads(
            &model,
            options.threads,
        )?)),
    }
}

/// An error if the run would need more than `available` bytes beyond what is already loaded:
/// the output (`T·B·output_size` floats), as much again twice between layers of a deeper
/// model, the final states (`L·D·B·H` floats, twice for an LSTM) and the packed copy of the
/// weights (about the size of their file). An input of a few rows can ask for an output of
/// many gigabytes when the model is wide, and an empty one (`T = 0`) for states of any size;
/// this reports it as an error before the allocation would abort the process.
fn check_memory(
    seq_len: usize,
    batch: usize,
    config: &ModelConfig,
    weights_bytes: u64,
    available: Option<u64>,
) -> Result<(), CliError> {
    let output_size = config.output_size();
    let output_copies = if config.num_layers > 1 { 3 } else { 1 };
    let state_copies = if config.cell.has_cell_state() { 2 } else { 1 };
    let bytes = |dims: [usize; 4]| {
        dims.into_iter()
            .try_fold(4u64, |n, k| n.checked_mul(u64::try_from(k).ok()?))
    };
    let output = bytes([seq_len, batch, output_size, output_copies]);
    let states = bytes([config.num_states(), batch, config.hidden_size, state_copies]);
    let needed = output
        .zip(states)
        .and_then(|(output, states)| output.checked_add(states)?.checked_add(weights_bytes));
    let gb = |bytes: u64| bytes as f64 / 1e9;
    let what =
        format!("the output ({seq_len} steps × {batch} rows × {output_size}) and the final states");
    match (needed, available) {
        (None, _) => Err(CliError(format!("{what} are too large to allocate"))),
        (Some(needed), Some(available)) if needed > available => Err(CliError(format!(
            "{what} with the packed weights need about {:.1} GB, but {:.1} GB of memory are \
             available",
            gb(needed),
            gb(available)
        ))),
        _ => Ok(()),
    }
}

/// Runs `gru run`: reads, checks, runs and writes. On any error nothing is written.
pub fn run(options: &RunOptions) -> Result<(), CliError> {
    let model = load(options)?;
    let config = *model.config();
    if config.cell == Cell::Lstm {
        // Nothing to check: c0 and --cn are allowed.
    } else if let Some(path) = options.c0.as_ref().or(options.cn.as_ref()) {
        return Err(CliError::file(
            path,
            "a GRU has no cell state; --c0 and --cn need an LSTM",
        ));
    }

    let input = read_f32(&options.input, 3)?;
    let (seq_len, batch) = if options.batch_first {
        (input.shape[1], input.shape[0])
    } else {
        (input.shape[0], input.shape[1])
    };
    if input.shape[2] != config.input_size {
        let order = if options.batch_first {
            "[B, T, I]"
        } else {
            "[T, B, I]"
        };
        return Err(CliError::file(
            &options.input,
            format!(
                "has shape {:?}; expected {order} with I = {} (the model's input size)",
                input.shape, config.input_size
            ),
        ));
    }
    let state_shape = [config.num_states(), batch, config.hidden_size];
    let h0 = options
        .h0
        .as_deref()
        .map(|p| read_state(p, state_shape))
        .transpose()?;
    let c0 = options
        .c0
        .as_deref()
        .map(|p| read_state(p, state_shape))
        .transpose()?;
    let lengths =
        match options.lengths.as_deref() {
            None => None,
            Some(path) => {
                let lengths = read_lengths(path)?;
                if lengths.shape != [batch] {
                    return Err(CliError::file(
                        path,
                        format!("has shape {:?}; expected [B] = [{batch}]", lengths.shape),
                    ));
                }
                let checked: Result<Vec<usize>, CliError> =
                    lengths
                        .data
                        .iter()
                        .enumerate()
                        .map(|(b, &len)| {
                            usize::try_from(len).ok().filter(|&l| l <= seq_len).ok_or_else(|| {
                        CliError::file(
                            path,
                            format!("length {len} of batch entry {b} is outside 0..={seq_len}"),
                        )
                    })
                        })
                        .collect();
                Some(checked?)
            }
        };

    let weights_bytes = std::fs::metadata(&options.weights).map_or(0, |m| m.len());
    check_memory(
        seq_len,
        batch,
        &config,
        weights_bytes,
        crate::machine::available_memory(),
    )?;

    let mut sequence =
        SequenceInput::new(&input.data, seq_len, batch).batch_first(options.batch_first);
    sequence.h0 = h0.as_ref().map(|a| a.data.as_slice());
    sequence.c0 = c0.as_ref().map(|a| a.data.as_slice());
    sequence.lengths = lengths.as_deref();
    let result = kernel(model, options)?.forward(&sequence)?;

    let mut outputs = PendingOutputs::default();
    outputs.write_f32(&options.output, &result.output_shape(), &result.output)?;
    if let Some(path) = &options.hn {
        outputs.write_f32(path, &result.state_shape(), &result.h_n)?;
    }
    if let (Some(path), Some(c_n)) = (&options.cn, &result.c_n) {
        outputs.write_f32(path, &result.state_shape(), c_n)?;
    }
    outputs.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cell: Cell, num_layers: usize) -> ModelConfig {
        ModelConfig {
            cell,
            input_size: 3,
            hidden_size: 8,
            num_layers,
            bidirectional: false,
        }
    }

    #[test]
    fn outputs_that_do_not_fit_in_memory_are_errors() {
        let gru = config(Cell::Gru(GruVariant::ResetAfter), 1);
        // [100, 2, 8] floats once, 6400 bytes, [1, 2, 8] of h_n, 64, and 1000 of weights.
        assert!(check_memory(100, 2, &gru, 1000, Some(7464)).is_ok());
        assert!(check_memory(100, 2, &gru, 1000, Some(7463)).is_err());
        // Two layers keep the buffers between them too: three outputs' worth, and two states.
        let deep = config(gru.cell, 2);
        assert!(check_memory(100, 2, &deep, 1000, Some(7464)).is_err());
        assert!(check_memory(100, 2, &deep, 1000, Some(20_328)).is_ok());
        assert!(check_memory(100, 2, &deep, 1000, Some(20_327)).is_err());
        // An LSTM's cell state as well.
        let lstm = config(Cell::Lstm, 1);
        assert!(check_memory(100, 2, &lstm, 1000, Some(7528)).is_ok());
        assert!(check_memory(100, 2, &lstm, 1000, Some(7527)).is_err());
        // No steps: the states alone.
        assert!(check_memory(0, 1 << 40, &gru, 0, Some(1 << 40)).is_err());
        // Unknown available memory: only overflow is an error.
        assert!(check_memory(100, 2, &deep, 1000, None).is_ok());
        assert!(check_memory(usize::MAX, 2, &gru, 0, None).is_err());
        assert!(check_memory(0, usize::MAX, &gru, 0, None).is_err());
    }
}
