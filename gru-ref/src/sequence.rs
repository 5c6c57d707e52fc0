//! Whole sequences: every layer, every direction, one sequence of the batch at a time.

use gru_core::{
    Cell, Direction, Model, ModelConfig, RecurrentKernel, Result, SequenceInput, SequenceOutput,
};

use crate::cell::{gru_cell_step, lstm_cell_step};

/// The reference kernel: runs a [`Model`] step by step with [`gru_cell_step`] and
/// [`lstm_cell_step`].
#[derive(Debug, Clone)]
pub struct ReferenceKernel {
    model: Model,
}

impl ReferenceKernel {
    /// Wraps a model; the reference needs no preparation.
    pub fn new(model: Model) -> Self {
        Self { model }
    }

    /// The model this kernel runs.
    pub fn model(&self) -> &Model {
        &self.model
    }
}

/// The time steps of a sequence of valid length `len`, in the order `direction` visits them.
fn steps(direction: Direction, len: usize) -> Box<dyn Iterator<Item = usize>> {
    match direction {
        Direction::Forward => Box::new(0..len),
        Direction::Reverse => Box::new((0..len).rev()),
    }
}

impl RecurrentKernel for ReferenceKernel {
    fn name(&self) -> &'static str {
        "ref"
    }

    fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    fn forward_into(&mut self, input: &SequenceInput<'_>, out: &mut SequenceOutput) -> Result<()> {
        let config = *self.model.config();
        input.validate(&config)?;
        out.prepare(&config, input);
        let layout = input.layout();
        let hidden = config.hidden_size;
        let directions = config.num_directions();
        let state_len = input.batch * hidden;

        // The sequence fed to the current layer: the input, then each layer's output.
        let mut layer_input = input.data.to_vec();
        for layer in 0..config.num_layers {
            let features_in = config.layer_input_size(layer);
            let features_out = config.output_size();
            let mut layer_output = vec![0.0f32; layout.rows() * features_out];
            for (d, &direction) in Direction::all(directions).iter().enumerate() {
                let weights = self.model.layer(layer, direction);
                let state = layer * directions + d;
                let state_range = state * state_len..(state + 1) * state_len;
                for b in 0..input.batch {
                    let unit_range = b * hidden..(b + 1) * hidden;
                    let initial = |s: Option<&[f32]>| {
                        s.map_or(vec![0.0; hidden], |s| {
                            s[state_range.clone()][unit_range.clone()].to_vec()
                        })
                    };
                    let (mut h, mut c) = (initial(input.h0), initial(input.c0));
                    let (mut h_next, mut c_next) = (vec![0.0; hidden], vec![0.0; hidden]);
                    for t in steps(direction, input.valid_len(b)) {
                        let row = layout.row(t, b);
                        let x = &layer_input[row * features_in..(row + 1) * features_in];
                        match config.cell {
                            Cell::Gru(variant) => {
                                gru_cell_step(weights, variant, x, &h, &mut h_next)
                            }
                            Cell::Lstm => {
                                lstm_cell_step(weights, x, (&h, &c), (&mut h_next, &mut c_next));
                                std::mem::swap(&mut c, &mut c_next);
                            }
                        }
                        std::mem::swap(&mut h, &mut h_next);
                        let out_row =
                            &mut layer_output[row * features_out..(row + 1) * features_out];
                        out_row[d * hidden..(d + 1) * hidden].copy_from_slice(&h);
                    }
                    out.h_n[state_range.clone()][unit_range.clone()].copy_from_slice(&h);
                    if let Some(c_n) = out.c_n.as_mut() {
                        c_n[state_range.clone()][unit_range].copy_from_slice(&c);
                    }
                }
            }
            layer_input = layer_output;
        }
        out.output.copy_from_slice(&layer_input);
        Ok(())
    }
}
