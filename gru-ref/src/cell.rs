//! One time step of one cell, for one sequence.

use gru_core::cell::{gru_gate, lstm_gate};
use gru_core::{GruVariant, LayerWeights};

/// `Σ a_k · b_k`, accumulated in `f64`.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

/// `Σ a_k · b_k` with `b` already in `f64`.
fn dot_f64(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| f64::from(a) * b).sum()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `W_i· x + b_i·` for one gate and unit.
fn input_part(w: &LayerWeights, gate: usize, unit: usize, x: &[f32]) -> f64 {
    dot(w.w_ih_row(gate, unit), x) + f64::from(w.b_ih_at(gate, unit))
}

/// `W_h· h + b_h·` for one gate and unit.
fn hidden_part(w: &LayerWeights, gate: usize, unit: usize, h: &[f32]) -> f64 {
    dot(w.w_hh_row(gate, unit), h) + f64::from(w.b_hh_at(gate, unit))
}

/// One GRU step for one sequence: `h_next = GRU(x, h)`.
///
/// `x` has length `I`, `h` and `h_next` length `H`; the equations are in
/// [`gru_core::cell`].
///
/// # Panics
/// If a slice length does not match the weights.
pub fn gru_cell_step(
    w: &LayerWeights,
    variant: GruVariant,
    x: &[f32],
    h: &[f32],
    h_next: &mut [f32],
) {
    let hidden = w.hidden_size();
    assert_eq!(x.len(), w.input_size(), "x");
    assert_eq!(h.len(), hidden, "h");
    assert_eq!(h_next.len(), hidden, "h_next");
    use gru_gate::{N, R, Z};
    let gate = |g, j| sigmoid(input_part(w, g, j, x) + hidden_part(w, g, j, h));
    let r: Vec<f64> = (0..hidden).map(|j| gate(R, j)).collect();
    // ResetBefore multiplies the state by r before the product, so it needs every r first.
    let reset_state: Vec<f64> = match variant {
        GruVariant::ResetAfter => Vec::new(),
        GruVariant::ResetBefore => r.iter().zip(h).map(|(&r, &h)| r * f64::from(h)).collect(),
    };
    for j in 0..hidden {
        let z = gate(Z, j);
        let n = match variant {
            GruVariant::ResetAfter => {
                (input_part(w, N, j, x) + r[j] * hidden_part(w, N, j, h)).tanh()
            }
            GruVariant::ResetBefore => (input_part(w, N, j, x)
                + dot_f64(w.w_hh_row(N, j), &reset_state)
                + f64::from(w.b_hh_at(N, j)))
            .tanh(),
        };
        h_next[j] = ((1.0 - z) * n + z * f64::from(h[j])) as f32;
    }
}

/// One LSTM step for one sequence: `(h_next, c_next) = LSTM(x, h, c)`.
///
/// # Panics
/// If a slice length does not match the weights.
pub fn lstm_cell_step(
    w: &LayerWeights,
    x: &[f32],
    (h, c): (&[f32], &[f32]),
    (h_next, c_next): (&mut [f32], &mut [f32]),
) {
    let hidden = w.hidden_size();
    assert_eq!(x.len(), w.input_size(), "x");
    for (name, len) in [
        ("h", h.len()),
        ("c", c.len()),
        ("h_next", h_next.len()),
        ("c_next", c_next.len()),
    ] {
        assert_eq!(len, hidden, "{name}");
    }
    use lstm_gate::{F, G, I, O};
    let pre = |g, j| input_part(w, g, j, x) + hidden_part(w, g, j, h);
    for j in 0..hidden {
        let i = sigmoid(pre(I, j));
        let f = sigmoid(pre(F, j));
        let g = pre(G, j).tanh();
        let o = sigmoid(pre(O, j));
        let c_new = f * f64::from(c[j]) + i * g;
        c_next[j] = c_new as f32;
        h_next[j] = (o * c_new.tanh()) as f32;
    }
}
