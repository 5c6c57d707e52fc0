//! What the measuring examples share: their smooth test values and their medians.
#![allow(dead_code)]

/// Smooth values in (−scale, scale), the same for every run.
pub fn values(len: usize, seed: f32, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as f32 + seed) * 0.37).sin() * scale)
        .collect()
}

/// The median of `samples` (the upper one of an even count).
///
/// # Panics
/// If `samples` is empty.
pub fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The weights of a layer of `cell` with `I = H = size`: smooth weights and biases.
pub fn layer_weights(
    cell: gru_core::Cell,
    size: usize,
) -> gru_core::Result<gru_core::LayerWeights> {
    let gates = cell.gate_count();
    gru_core::LayerWeights::new(
        cell.kind(),
        size,
        size,
        values(gates * size * size, 1.0, 0.05),
        values(gates * size * size, 2.0, 0.05),
        Some(values(gates * size, 3.0, 0.1)),
        Some(values(gates * size, 4.0, 0.1)),
    )
}

/// A layer of `cell` with `I = H = size` ([`layer_weights`]), packed for this CPU.
pub fn packed_layer(
    cell: gru_core::Cell,
    size: usize,
) -> gru_core::Result<gru_simd::packing::PackedLayer> {
    Ok(gru_simd::packing::PackedLayer::new(
        &layer_weights(cell, size)?,
        cell,
    ))
}
