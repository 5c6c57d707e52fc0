//! Streaming: one time step per call with the state carried, for models that run forward in
//! time only. After [`SimdModel::stream`] has allocated the state, a step allocates nothing.

use std::time::Instant;

use gru_core::error::element_count;
use gru_core::{Cell, Error, RecurrentKernel, Result};
use wide::f32x8;

use crate::balance::{BusyClock, WorkerSplits};
use crate::packing::{LANES, PackedLayer};
use crate::projection::project;
use crate::sequence::{REBALANCE_STEPS, SimdModel, StepSplit};
use crate::step::{CellScratch, panel_groups, recurrent_step};
use crate::threading::{JobSize, SharedVectors, WorkerBarrier};
use crate::tiles::PanelOrder;

/// The carried state of one layer.
#[derive(Debug)]
struct LayerState {
    /// `h` before and after the current step; `current` says which is which.
    h: [SharedVectors; 2],
    current: usize,
    scratch: CellScratch,
    /// This step's projection, `rows × G·panels` vectors, one buffer per worker: each worker
    /// projects and then reads back only its own panels, so no barrier is needed between the
    /// projection and the recurrent product.
    projection: Vec<SharedVectors>,
    /// How the panels are split, updated every [`REBALANCE_STEPS`] steps from the
    /// nanoseconds each worker has spent on this layer outside barriers since the stream
    /// began. Against a fixed split (2 threads, medians of eight alternating rounds of
    /// `gru bench --mode step`): GRU +3 % (I = H = 256), +2 % (512); LSTM +6 %, −3 %.
    split: WorkerSplits,
}

/// A batch of sequences advanced one step at a time through a [`SimdModel`].
///
/// Each stream carries its own state; any number of streams may borrow one model, from any
/// threads. A model with one worker runs each step on the thread that calls it; with more,
/// the steps of its streams take turns on its workers.
///
/// Workers that wait more than 1.6 ms for the next step park, and waking them costs more than
/// they save on a small step: a step under 16 MFLOP that comes more than 1.6 ms after the last
/// one (one per audio frame, say) runs on the calling thread alone if they have parked
/// ([`Workers::run_alone`](crate::threading::Workers::run_alone)). The `paced_calls` example
/// measures steps with pauses between them. Steps too small to share (under the model's
/// [`SimdModel::alone_below_step_flops`] in every layer) always run on the calling thread.
///
/// ```
/// use gru_core::{CellKind, GruVariant, LayerWeights};
/// let weights = LayerWeights::new(CellKind::Gru, 3, 8, vec![0.1; 72], vec![0.05; 192], None, None)?;
/// let model = gru_simd::Gru::new(&weights, GruVariant::ResetAfter)?;
/// let mut stream = model.stream(1)?;
/// for t in 0..5 {
///     let h = stream.step(&[t as f32, 0.5, -0.5])?; // [B, H]
///     assert_eq!(h.len(), 8);
/// }
/// # Ok::<(), gru_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Stream<'m> {
    model: &'m SimdModel,
    batch: usize,
    layers: Vec<LayerState>,
    all_active: Vec<bool>,
    output: Vec<f32>,
    /// Steps taken so far.
    steps: usize,
    /// Whether a step of all layers together takes fewer than the model's
    /// [`SimdModel::alone_below_flops`].
    small: bool,
    /// Whether a step of every layer is under the model's
    /// [`SimdModel::alone_below_step_flops`]: then every step runs alone.
    tiny: bool,
    /// When the last step began.
    last_step: Option<Instant>,
}

impl SimdModel {
    /// Starts streaming `batch` sequences from a zero state. Bidirectional models cannot
    /// stream (their reverse direction needs the future).
    pub fn stream(&self, batch: usize) -> Result<Stream<'_>> {
        if self.config().bidirectional {
            return Err(Error::Config(
                "a bidirectional model cannot run one step at a time".into(),
            ));
        }
        let threads = self.threads();
        for layer in self.layers() {
            // The largest buffer below: every worker's projection of the batch.
            let projected = layer.panels() * LANES * layer.gates();
            element_count("stream state", &[threads, batch, projected])?;
        }
        let layers = self
            .layers()
            .iter()
            .map(|layer| {
                let len = batch * layer.panels();
                LayerState {
                    h: [SharedVectors::zeros(len), SharedVectors::zeros(len)],
                    current: 0,
                    scratch: CellScratch::new(layer, batch),
                    projection: (0..threads)
                        .map(|_| SharedVectors::zeros(len * layer.gates()))
                        .collect(),
                    // In columns of the tiles, as a sequence's panel split.
                    split: WorkerSplits::even(
                        layer.panels(),
                        threads,
                        layer.layout().panels_per_row(),
                    ),
                }
            })
            .collect();
        Ok(Stream {
            model: self,
            batch,
            layers,
            all_active: vec![true; batch],
            output: vec![0.0; batch * self.config().hidden_size],
            steps: 0,
            small: self
                .layers()
                .iter()
                .map(|layer| layer.flops(batch))
                .fold(0, usize::saturating_add)
                < self.alone_below_flops(),
            tiny: self.tiny_steps(batch, StepSplit::Panels),
            last_step: None,
        })
    }
}

impl Stream<'_> {
    /// Number of sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Advances every sequence by one step with input `x` (`[B, I]`) and returns the last
    /// layer's new hidden state (`[B, H]`).
    pub fn step(&mut self, x: &[f32]) -> Result<&[f32]> {
        let config = *self.model.config();
        let expected = [self.batch, config.input_size];
        if Some(x.len()) != self.batch.checked_mul(config.input_size) {
            return Err(Error::Shape {
                tensor: "x".into(),
                expected: expected.to_vec(),
                actual: vec![x.len()],
            });
        }
        let (model, layers, all_active, batch) =
            (self.model, &self.layers, &self.all_active, self.batch);
        let workers = model.workers();
        let threads = workers.threads();
        // A step run alone leaves the team parked: waking it from here cost about as much as
        // the step (14 µs at I = H = 256, one step every 2 ms). The next step that follows
        // closely goes to the team, which its job wakes.
        let job = JobSize {
            small: self.small,
            tiny_steps: self.tiny,
        };
        let alone = workers.run_alone(job, &mut self.last_step);
        let rebalance = threads > 1 && !alone && (self.steps + 1).is_multiple_of(REBALANCE_STEPS);
        let step = |worker: usize, barrier: &WorkerBarrier| {
            let mut input: &[f32] = x;
            let mut input_stride = config.input_size;
            let layer_count = model.layers().len();
            for (l, (packed, state)) in model.layers().iter().zip(layers).enumerate() {
                let mut split = state.split.copy(worker);
                let panels = if alone {
                    0..packed.panels()
                } else {
                    split.part(worker)
                };
                // One worker has nothing to balance: no clock reads.
                let clock = (threads > 1 && !alone).then(BusyClock::start);
                let sync = || match &clock {
                    Some(clock) => clock.wait(barrier),
                    None => barrier.wait(),
                };
                let projection = &state.projection[worker];
                let (prev, next) = (&state.h[state.current], &state.h[1 - state.current]);
                // SAFETY: `prev` was completed within the previous step's job (or before this
                // call), which ended before this one began, and is not written during this
                // layer.
                let h_prev = unsafe { prev.read(0..prev.len()) };
                // Each group's projection just before its product: both its panels of `W_ih`
                // and of `W_hh` are then read while the other is still in cache.
                for group in panel_groups(packed.cell(), panels, state.current) {
                    // SAFETY: this worker's projection buffer is touched by this worker only.
                    unsafe {
                        project(
                            packed,
                            input,
                            input_stride,
                            projection,
                            0..batch,
                            group.clone(),
                        );
                    }
                    // SAFETY: as above, and its writes just above are done.
                    let projection = unsafe { projection.read(0..projection.len()) };
                    // SAFETY: run alone, this thread steps every panel and nobody else touches
                    // this stream's state (`step` takes `&mut self`). Otherwise every worker
                    // steps all rows, each the panels of its own part of one split (the copies
                    // are alike: each rebalances its own from the same totals, after the same
                    // barrier); `sync` is a barrier of all of them, and the layer ends with one
                    // (the last layer, with the end of the job) before anyone touches `next` or
                    // the scratch again.
                    unsafe {
                        recurrent_step(
                            packed,
                            &state.scratch,
                            projection,
                            all_active,
                            h_prev,
                            next,
                            0..batch,
                            group,
                            PanelOrder::alternating(state.current),
                            &sync,
                        );
                    }
                }
                if let Some(clock) = &clock {
                    state.split.add_busy(worker, clock.take_nanos());
                }
                // The next layer reads every unit of `next`, and a rebalance every worker's
                // time: both wait for all workers. The caller reads the last layer's `next`
                // once the job is over, so most steps end without a barrier, one round trip
                // between cores fewer.
                let last_layer = l + 1 == layer_count;
                if !last_layer || rebalance {
                    barrier.wait();
                }
                if rebalance {
                    // Every worker added its time before the barrier, and none adds again
                    // before this run is over.
                    split.rebalance(state.split.busy());
                }
                if !last_layer {
                    // SAFETY: every worker finished writing `next` before the barrier above;
                    // it is next written a step later, after the end of this job.
                    input = wide::bytemuck::cast_slice(unsafe { next.read(0..next.len()) });
                    input_stride = packed.panels() * LANES;
                }
            }
        };
        if alone {
            step(0, &WorkerBarrier::new(1));
        } else {
            workers.run(&step);
        }
        for state in &mut self.layers {
            state.current = 1 - state.current;
        }
        self.steps += 1;
        let last = self
            .layers
            .last_mut()
            .expect("a model has at least one layer");
        let panels = self.model.layers().last().map_or(0, PackedLayer::panels);
        copy_out(
            last.h[last.current].get_mut(),
            &mut self.output,
            config.hidden_size,
            panels,
        );
        Ok(&self.output)
    }

    /// Sets the state of every layer: `h0` (and, for an LSTM, `c0`) of shape `[L, B, H]`.
    pub fn set_state(&mut self, h0: &[f32], c0: Option<&[f32]>) -> Result<()> {
        let config = *self.model.config();
        let shape = [config.num_layers, self.batch, config.hidden_size];
        let len = shape.iter().product::<usize>();
        for (name, given) in [("h0", Some(h0)), ("c0", c0)] {
            if let Some(given) = given
                && given.len() != len
            {
                return Err(Error::Shape {
                    tensor: name.into(),
                    expected: shape.to_vec(),
                    actual: vec![given.len()],
                });
            }
        }
        if c0.is_some() && config.cell != Cell::Lstm {
            return Err(Error::Config(
                "c0 is given but a GRU has no cell state".into(),
            ));
        }
        let per_layer = self.batch * config.hidden_size;
        for (l, (state, packed)) in self.layers.iter_mut().zip(self.model.layers()).enumerate() {
            let (layer_h0, panels) = (&h0[l * per_layer..(l + 1) * per_layer], packed.panels());
            copy_in(
                state.h[state.current].get_mut(),
                layer_h0,
                config.hidden_size,
                panels,
            );
            if let Some(c0) = c0 {
                let layer_c0 = &c0[l * per_layer..(l + 1) * per_layer];
                copy_in(
                    state.scratch.c.get_mut(),
                    layer_c0,
                    config.hidden_size,
                    panels,
                );
            }
        }
        Ok(())
    }

    /// The state of every layer: `h` and (LSTM) `c`, each `[L, B, H]`.
    pub fn state(&mut self) -> (Vec<f32>, Option<Vec<f32>>) {
        let config = *self.model.config();
        let per_layer = self.batch * config.hidden_size;
        let mut h = vec![0.0; config.num_layers * per_layer];
        let mut c = (config.cell == Cell::Lstm).then(|| vec![0.0; config.num_layers * per_layer]);
        for (l, (state, packed)) in self.layers.iter_mut().zip(self.model.layers()).enumerate() {
            let panels = packed.panels();
            copy_out(
                state.h[state.current].get_mut(),
                &mut h[l * per_layer..(l + 1) * per_layer],
                config.hidden_size,
                panels,
            );
            if let Some(c) = c.as_mut() {
                copy_out(
                    state.scratch.c.get_mut(),
                    &mut c[l * per_layer..(l + 1) * per_layer],
                    config.hidden_size,
                    panels,
                );
            }
        }
        (h, c)
    }
}

fn copy_in(dest: &mut [f32x8], source: &[f32], hidden: usize, panels: usize) {
    let dest: &mut [f32] = wide::bytemuck::cast_slice_mut(dest);
    for (row, values) in source.chunks_exact(hidden).enumerate() {
        dest[row * panels * LANES..][..hidden].copy_from_slice(values);
    }
}

fn copy_out(source: &mut [f32x8], dest: &mut [f32], hidden: usize, panels: usize) {
    let source: &[f32] = wide::bytemuck::cast_slice(source);
    for (row, values) in dest.chunks_exact_mut(hidden).enumerate() {
        values.copy_from_slice(&source[row * panels * LANES..][..hidden]);
    }
}

/// Only a model with several workers has steps that run alone.
#[cfg(all(test, feature = "rayon"))]
mod tests {
    use super::*;
    use crate::sequence::tests::two_layer_model;
    use gru_core::GruVariant;

    #[test]
    fn steps_alone_after_the_workers_park_keep_their_results() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for cell in [
            Cell::Gru(GruVariant::ResetAfter),
            Cell::Gru(GruVariant::ResetBefore),
            Cell::Lstm,
        ] {
            let model = two_layer_model(cell, 10, 20, false);
            let (one, mut two) = (
                SimdModel::with_threads(&model, 1).unwrap(),
                SimdModel::with_threads(&model, 2).unwrap(),
            );
            two.set_alone_below_step_flops(0);
            let (mut alone, mut team) = (one.stream(3).unwrap(), two.stream(3).unwrap());
            assert!(team.small);
            for step in 0..12 {
                let after_a_pause = step % 4 == 2;
                if after_a_pause {
                    // Long enough for the team to park: this step runs on this thread alone.
                    let start = std::time::Instant::now();
                    while two.workers().awake() {
                        assert!(start.elapsed().as_secs() < 60, "the workers never parked");
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                if !after_a_pause {
                    // As if the last step had begun just now, so that this one goes to the
                    // team however slow this run is. Otherwise, when a step ran alone because
                    // the team had parked before it (a loaded machine), the pause before the
                    // next found the team parked already and did not wait, and that next
                    // step, too soon after the last, went to the team.
                    team.last_step =
                        Some(std::time::Instant::now() + std::time::Duration::from_secs(60));
                }
                let x: Vec<f32> = (0..30).map(|k| ((step * 30 + k) as f32).cos()).collect();
                let want = bits(alone.step(&x).unwrap());
                assert_eq!(bits(team.step(&x).unwrap()), want, "{cell:?}, step {step}");
                if after_a_pause {
                    // A step on the team would have woken it.
                    assert!(
                        !two.workers().awake(),
                        "{cell:?}, step {step} woke the team"
                    );
                }
            }
            let ((h1, c1), (h2, c2)) = (alone.state(), team.state());
            assert_eq!(bits(&h1), bits(&h2));
            assert_eq!(c1.map(|c| bits(&c)), c2.map(|c| bits(&c)));
        }
    }

    #[test]
    fn tiny_steps_run_alone_with_the_same_results() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for cell in [Cell::Gru(GruVariant::ResetAfter), Cell::Lstm] {
            // One step of a layer at B = 3: 2·G·20·(10 or 20 + 20)·3 FLOPs, at most 19 200.
            let model = two_layer_model(cell, 10, 20, false);
            let one = SimdModel::with_threads(&model, 1).unwrap();
            let mut two = SimdModel::with_threads(&model, 2).unwrap();
            for alone_below in [two.alone_below_step_flops(), 0] {
                two.set_alone_below_step_flops(alone_below);
                let (mut alone, mut stream) = (one.stream(3).unwrap(), two.stream(3).unwrap());
                assert_eq!(stream.tiny, alone_below > 0);
                for step in 0..12 {
                    let x: Vec<f32> = (0..30).map(|k| ((step * 30 + k) as f32).cos()).collect();
                    let want = bits(alone.step(&x).unwrap());
                    // As if the last step had begun just now, however slow this run is (under
                    // valgrind a step can take longer than the workers idle before they park).
                    stream.last_step = Some(Instant::now() + std::time::Duration::from_secs(60));
                    assert_eq!(
                        bits(stream.step(&x).unwrap()),
                        want,
                        "{cell:?}, step {step}"
                    );
                }
                // Only steps on the team count the workers' busy time.
                let timed =
                    stream.layers[0].split.busy()[1].load(std::sync::atomic::Ordering::Relaxed) > 0;
                assert_eq!(timed, alone_below == 0, "{cell:?}");
            }
        }
    }
}
