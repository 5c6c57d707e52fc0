//! Stacks of layers, one or two directions, with PyTorch's shape rules.

use crate::cell::{Cell, CellKind};
use crate::error::{Error, Result};
use crate::weights::LayerWeights;

/// The shape of a model: everything but the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelConfig {
    /// The cell every layer runs.
    pub cell: Cell,
    /// Input size `I` of the first layer.
    pub input_size: usize,
    /// Hidden size `H` of every layer.
    pub hidden_size: usize,
    /// Number of stacked layers `L ≥ 1`.
    pub num_layers: usize,
    /// Whether each layer also runs backward in time (`D = 2`).
    pub bidirectional: bool,
}

impl ModelConfig {
    /// `D`: 2 for a bidirectional model, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Input size of layer `layer`: `I` for the first, `D·H` for the others.
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.num_directions() * self.hidden_size
        }
    }

    /// Feature size of the sequence output, `D·H`.
    pub fn output_size(&self) -> usize {
        self.num_directions() * self.hidden_size
    }

    /// Number of (layer, direction) pairs, `L·D`: the leading dimension of `h0` and `h_n`.
    pub fn num_states(&self) -> usize {
        self.num_layers * self.num_directions()
    }
}

/// Direction of time in which a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From step 0 to step T − 1.
    Forward,
    /// From the last valid step back to step 0.
    Reverse,
}

impl Direction {
    /// The directions of a model with `num_directions` (1 or 2) directions, in PyTorch's order.
    pub fn all(num_directions: usize) -> &'static [Direction] {
        &[Direction::Forward, Direction::Reverse][..num_directions]
    }

    /// The suffix PyTorch appends to parameter names of this direction.
    pub fn suffix(self) -> &'static str {
        match self {
            Direction::Forward => "",
            Direction::Reverse => "_reverse",
        }
    }
}

/// A complete model: a stack of layers, each with one or two directions.
///
/// ```
/// use gru_core::{Cell, CellKind, GruVariant, LayerWeights, Model};
/// let layer = |input| {
///     LayerWeights::new(CellKind::Gru, input, 4, vec![0.0; 12 * input], vec![0.0; 48], None, None)
/// };
/// // Two bidirectional layers: the second takes 2·H = 8 inputs.
/// let model = Model::new(
///     Cell::Gru(GruVariant::ResetAfter),
///     true,
///     vec![layer(3)?, layer(3)?, layer(8)?, layer(8)?],
/// )?;
/// assert_eq!(model.config().num_layers, 2);
/// assert_eq!(model.config().output_size(), 8);
/// # Ok::<(), gru_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    config: ModelConfig,
    layers: Vec<LayerWeights>,
}

impl Model {
    /// Builds a model from its layers in PyTorch's order (layer 0 forward, layer 0 reverse if
    /// bidirectional, layer 1 forward, …).
    ///
    /// Checks that there is at least one layer, that the count is a multiple of the number of
    /// directions, that every layer is of the cell's family with one hidden size, and that
    /// layer k > 0 takes `D·H` inputs.
    pub fn new(cell: Cell, bidirectional: bool, layers: Vec<LayerWeights>) -> Result<Self> {
        let directions = if bidirectional { 2 } else { 1 };
        let first = layers
            .first()
            .ok_or_else(|| Error::Config("a model needs at least one layer".into()))?;
        if !layers.len().is_multiple_of(directions) {
            return Err(Error::Config(format!(
                "a bidirectional model needs two weight sets per layer, got {}",
                layers.len()
            )));
        }
        let config = ModelConfig {
            cell,
            input_size: first.input_size(),
            hidden_size: first.hidden_size(),
            num_layers: layers.len() / directions,
            bidirectional,
        };
        for (index, w) in layers.iter().enumerate() {
            let (layer, direction) = (
                index / directions,
                Direction::all(directions)[index % directions],
            );
            let name = format!("layer {layer}{}", direction.suffix());
            if w.kind() != cell.kind() {
                return Err(Error::Config(format!(
                    "{name} holds {} weights but the model is a {}",
                    w.kind().name(),
                    cell.kind().name()
                )));
            }
            let expected_input = config.layer_input_size(layer);
            if w.hidden_size() != config.hidden_size || w.input_size() != expected_input {
                let rows = cell.gate_count() * config.hidden_size;
                return Err(Error::Shape {
                    tensor: format!("{name} weight_ih"),
                    expected: vec![rows, expected_input],
                    actual: vec![w.kind().gate_count() * w.hidden_size(), w.input_size()],
                });
            }
        }
        Ok(Self { config, layers })
    }

    /// A one-layer, one-direction model.
    pub fn single_layer(cell: Cell, weights: LayerWeights) -> Result<Self> {
        Self::new(cell, false, vec![weights])
    }

    /// The shape of the model.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The cell every layer runs.
    pub fn cell(&self) -> Cell {
        self.config.cell
    }

    /// The weights of `layer` in `direction`.
    ///
    /// # Panics
    /// If `layer ≥ num_layers`, or `direction` is `Reverse` in a one-direction model.
    pub fn layer(&self, layer: usize, direction: Direction) -> &LayerWeights {
        let d = self.config.num_directions();
        let offset = match direction {
            Direction::Forward => 0,
            Direction::Reverse => {
                assert!(d == 2, "a one-direction model has no reverse layer");
                1
            }
        };
        &self.layers[layer * d + offset]
    }

    /// All layer weights in PyTorch's order (the order of `h0` and `h_n`).
    pub fn layers(&self) -> &[LayerWeights] {
        &self.layers
    }

    /// Replaces the cell; fails if the family changes. Used to run GRU weights with the other
    /// [`GruVariant`](crate::GruVariant).
    pub fn with_cell(mut self, cell: Cell) -> Result<Self> {
        if cell.kind() != self.config.cell.kind() {
            return Err(Error::Config(format!(
                "cannot run {} weights as a {}",
                self.config.cell.kind().name(),
                cell.kind().name()
            )));
        }
        self.config.cell = cell;
        Ok(self)
    }

    /// The family of the model's cell.
    pub fn kind(&self) -> CellKind {
        self.config.cell.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GruVariant;

    fn zeros(kind: CellKind, input: usize, hidden: usize) -> LayerWeights {
        let rows = kind.gate_count() * hidden;
        LayerWeights::new(
            kind,
            input,
            hidden,
            vec![0.0; rows * input],
            vec![0.0; rows * hidden],
            None,
            None,
        )
        .unwrap()
    }

    #[test]
    fn second_layer_must_take_directions_times_hidden() {
        let gru = Cell::Gru(GruVariant::ResetAfter);
        let ok = Model::new(
            gru,
            false,
            vec![zeros(CellKind::Gru, 3, 5), zeros(CellKind::Gru, 5, 5)],
        );
        assert_eq!(ok.unwrap().config().num_layers, 2);
        let err = Model::new(
            gru,
            false,
            vec![zeros(CellKind::Gru, 3, 5), zeros(CellKind::Gru, 3, 5)],
        )
        .unwrap_err();
        assert!(err.to_string().contains("layer 1 weight_ih"), "{err}");
        let err = Model::new(
            gru,
            true,
            vec![
                zeros(CellKind::Gru, 3, 5),
                zeros(CellKind::Gru, 3, 5),
                zeros(CellKind::Gru, 5, 5),
                zeros(CellKind::Gru, 10, 5),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("layer 1 weight_ih"), "{err}");
    }

    #[test]
    fn rejects_empty_odd_and_mixed_stacks() {
        let gru = Cell::Gru(GruVariant::ResetAfter);
        assert!(matches!(
            Model::new(gru, false, vec![]),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Model::new(gru, true, vec![zeros(CellKind::Gru, 3, 5)]),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Model::new(Cell::Lstm, false, vec![zeros(CellKind::Gru, 3, 5)]),
            Err(Error::Config(_))
        ));
        assert!(
            Model::new(gru, false, vec![zeros(CellKind::Gru, 3, 5)])
                .unwrap()
                .with_cell(Cell::Lstm)
                .is_err()
        );
    }
}
