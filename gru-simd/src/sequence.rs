//! The sequence driver: every layer and direction of a model over a whole sequence, in
//! chunks of time steps: gather the chunk's inputs, project them all at once, then run the
//! fused recurrent steps.

use std::ops::Range;
use std::sync::Mutex;

use gru_core::{
    Cell, Direction, GruVariant, LayerWeights, Model, ModelConfig, RecurrentKernel, Result,
    SequenceInput, SequenceLayout, SequenceOutput,
};
use wide::f32x8;

use crate::packing::{LANES, PackedLayer};
use crate::projection::project;
use crate::step::{CellScratch, recurrent_step};
use crate::threading::{SharedSlice, SharedVectors, Workers, share};

/// Upper bound on the projection buffer of one chunk, in vectors (1 MiB): memory stays bounded
/// for any sequence length, the buffer stays in cache, and a chunk still has rows enough for
/// the projection's row tiles to reuse each panel of `W_ih` many times.
const CHUNK_VECTORS: usize = 1 << 15;

/// Rows per worker below which the batch is not split by rows.
const MIN_ROWS_PER_WORKER: usize = 4;

/// A model packed for the SIMD kernels: GRU (both variants) or LSTM, any number of layers, one
/// or two directions. Implements [`RecurrentKernel`]; see also [`SimdModel::stream`].
///
/// ```
/// use gru_core::{CellKind, GruVariant, LayerWeights, RecurrentKernel, SequenceInput};
/// let weights = LayerWeights::new(CellKind::Gru, 4, 16, vec![0.01; 3 * 16 * 4], vec![0.02; 3 * 16 * 16], None, None)?;
/// let mut gru = gru_simd::Gru::new(&weights, GruVariant::ResetAfter)?;
/// let x = vec![1.0f32; 10 * 2 * 4]; // T = 10, B = 2, I = 4
/// let out = gru.forward(&SequenceInput::new(&x, 10, 2))?;
/// assert_eq!(out.output_shape(), [10, 2, 16]);
/// # Ok::<(), gru_core::Error>(())
/// ```
#[derive(Debug)]
pub struct SimdModel {
    config: ModelConfig,
    layers: Vec<PackedLayer>,
    workers: Workers,
    workspace: Workspace,
}

/// A one-layer GRU packed for the SIMD kernels; everything else is [`SimdModel`]'s.
///
/// ```
/// use gru_core::{CellKind, GruVariant, LayerWeights, RecurrentKernel, SequenceInput};
/// let w = LayerWeights::new(CellKind::Gru, 2, 8, vec![0.1; 48], vec![0.1; 192], None, None)?;
/// let mut gru = gru_simd::Gru::new(&w, GruVariant::ResetBefore)?;
/// assert_eq!(gru.forward(&SequenceInput::new(&[1.0, 2.0], 1, 1))?.h_n.len(), 8);
/// # Ok::<(), gru_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Gru(SimdModel);

impl Gru {
    /// Packs one GRU layer to run as `variant`.
    pub fn new(weights: &LayerWeights, variant: GruVariant) -> Result<Self> {
        Ok(Self(SimdModel::new(&Model::single_layer(
            Cell::Gru(variant),
            weights.clone(),
        )?)?))
    }
}

/// A one-layer LSTM packed for the SIMD kernels; everything else is [`SimdModel`]'s.
#[derive(Debug)]
pub struct Lstm(SimdModel);

impl Lstm {
    /// Packs one LSTM layer.
    pub fn new(weights: &LayerWeights) -> Result<Self> {
        Ok(Self(SimdModel::new(&Model::single_layer(
            Cell::Lstm,
            weights.clone(),
        )?)?))
    }
}

macro_rules! single_layer_model {
    ($name:ident) => {
        impl std::ops::Deref for $name {
            type Target = SimdModel;
            fn deref(&self) -> &SimdModel {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut SimdModel {
                &mut self.0
            }
        }

        impl RecurrentKernel for $name {
            fn name(&self) -> &'static str {
                self.0.name()
            }
            fn config(&self) -> &ModelConfig {
                self.0.config()
            }
            fn forward(&mut self, input: &SequenceInput<'_>) -> Result<SequenceOutput> {
                self.0.forward(input)
            }
        }
    };
}

single_layer_model!(Gru);
single_layer_model!(Lstm);

impl SimdModel {
    /// Packs every layer of `model`, to run on the calling thread.
    pub fn new(model: &Model) -> Result<Self> {
        Self::with_threads(model, 1)
    }

    /// Packs every layer of `model`, to run on `threads` workers (a pool of its own).
    pub fn with_threads(model: &Model, threads: usize) -> Result<Self> {
        let cell = model.cell();
        Ok(Self {
            config: *model.config(),
            layers: model
                .layers()
                .iter()
                .map(|w| PackedLayer::new(w, cell))
                .collect(),
            workers: Workers::new(threads)?,
            workspace: Workspace::default(),
        })
    }

    /// Changes the number of workers.
    pub fn set_threads(&mut self, threads: usize) -> Result<()> {
        if threads != self.workers.threads() {
            self.workers = Workers::new(threads)?;
        }
        Ok(())
    }

    /// Number of workers.
    pub fn threads(&self) -> usize {
        self.workers.threads()
    }

    /// The packed weights of `layer` in `direction`.
    pub fn packed_layer(&self, layer: usize, direction: Direction) -> &PackedLayer {
        let d = self.config.num_directions();
        &self.layers[layer * d + usize::from(direction == Direction::Reverse)]
    }

    /// Bytes of the workspace kept between calls (inputs gathered and projected for one chunk
    /// of steps, states, intermediate layer outputs). Apart from the intermediate layer
    /// outputs, which are as long as the sequence like the output itself, it does not grow
    /// with the sequence length.
    pub fn workspace_bytes(&self) -> usize {
        let ws = &self.workspace;
        ws.groups.iter().map(RowGroup::bytes).sum::<usize>()
            + (ws.between[0].capacity() + ws.between[1].capacity()) * 4
    }

    /// Bytes of packed weights of the whole model.
    pub fn packed_bytes(&self) -> usize {
        self.layers.iter().map(PackedLayer::packed_bytes).sum()
    }

    pub(crate) fn layers(&self) -> &[PackedLayer] {
        &self.layers
    }

    pub(crate) fn workers(&self) -> &Workers {
        &self.workers
    }
}

impl RecurrentKernel for SimdModel {
    fn name(&self) -> &'static str {
        "simd"
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn forward(&mut self, input: &SequenceInput<'_>) -> Result<SequenceOutput> {
        let config = self.config;
        input.validate(&config)?;
        let mut out = SequenceOutput::zeros(&config, input);
        let Self {
            layers,
            workers,
            workspace,
            ..
        } = self;
        let (batch, hidden) = (input.batch, config.hidden_size);
        let directions = config.num_directions();
        let state_len = batch * hidden;
        let time_major = SequenceLayout {
            seq_len: input.seq_len,
            batch,
            batch_first: false,
        };
        let mut between = std::mem::take(&mut workspace.between);
        for layer in 0..config.num_layers {
            let last = layer + 1 == config.num_layers;
            // Layer k reads buffer (k + 1) % 2 and writes buffer k % 2.
            let [even, odd] = &mut between;
            let (written, read) = if layer % 2 == 0 {
                (even, &*odd)
            } else {
                (odd, &*even)
            };
            let (source, source_layout) = if layer == 0 {
                (input.data, input.layout())
            } else {
                (read.as_slice(), time_major)
            };
            let (source_width, dest_width) = (config.layer_input_size(layer), config.output_size());
            let (dest, dest_layout) = if last {
                (&mut out.output, input.layout())
            } else {
                written.clear();
                written.resize(time_major.rows() * dest_width, 0.0);
                (written, time_major)
            };
            for (d, &direction) in Direction::all(directions).iter().enumerate() {
                let state = layer * directions + d;
                let state_range = state * state_len..(state + 1) * state_len;
                let run = DirectionRun {
                    layer: &layers[state],
                    workers,
                    direction,
                    input,
                    source,
                    source_layout,
                    source_width,
                    h0: input.h0.map(|h| &h[state_range.clone()]),
                    c0: input.c0.map(|c| &c[state_range.clone()]),
                };
                let c_n = out.c_n.as_mut().map(|c| &mut c[state_range.clone()]);
                run.run(
                    workspace,
                    Destination {
                        cells: SharedSlice::new(&mut dest[..]),
                        layout: dest_layout,
                        width: dest_width,
                        offset: d * hidden,
                    },
                    &mut out.h_n[state_range],
                    c_n,
                );
            }
        }
        workspace.between = between;
        Ok(out)
    }
}

/// Buffers kept between calls, grown to the largest shape seen.
#[derive(Debug, Default)]
struct Workspace {
    /// The state and chunk buffers of each group of rows.
    groups: Vec<RowGroup>,
    /// Outputs of the layers before the last, time-major.
    between: [Vec<f32>; 2],
}

/// Rows whose state lives together: all rows (split by panels over workers), or one worker's
/// rows (split by rows).
#[derive(Debug)]
struct RowGroup {
    rows: Range<usize>,
    /// `h`, double-buffered: step `s` reads slot `s % 2` and writes the other.
    h: [SharedVectors; 2],
    scratch: CellScratch,
    /// The inputs and projection of the current chunk of steps. Split by rows, the group's own
    /// worker holds the lock for the whole run; split by panels, the caller fills it between
    /// runs and the workers only read it.
    chunk: Mutex<ChunkBuffers>,
}

impl RowGroup {
    fn new(layer: &PackedLayer, rows: Range<usize>) -> Self {
        let len = rows.len() * layer.panels();
        Self {
            h: [SharedVectors::zeros(len), SharedVectors::zeros(len)],
            scratch: CellScratch::new(layer, rows.len()),
            rows,
            chunk: Mutex::new(ChunkBuffers::default()),
        }
    }

    fn fits(&self, layer: &PackedLayer, rows: &Range<usize>) -> bool {
        self.rows == *rows
            && self.h[0].len() == rows.len() * layer.panels()
            && self.scratch.fits(layer, rows.len())
    }

    /// Vectors and bytes held.
    fn bytes(&self) -> usize {
        let chunk = self.chunk.lock().unwrap_or_else(|e| e.into_inner());
        (self.h[0].len() * 2 + self.scratch.len() + chunk.projection.len())
            * std::mem::size_of::<f32x8>()
            + chunk.gathered.capacity() * 4
            + chunk.active.capacity()
    }
}

/// One chunk of steps of a group's rows, in step order (`[n·rows, ·]`).
#[derive(Debug)]
struct ChunkBuffers {
    /// The inputs, `I` floats per (step, row), zeros past a row's length.
    gathered: Vec<f32>,
    /// Whether each (step, row) is inside its sequence.
    active: Vec<bool>,
    /// The projection, `G·panels` vectors per (step, row).
    projection: SharedVectors,
}

impl Default for ChunkBuffers {
    fn default() -> Self {
        Self {
            gathered: Vec::new(),
            active: Vec::new(),
            projection: SharedVectors::zeros(0),
        }
    }
}

/// Where a direction writes its outputs: `width` floats per row, its own at `offset`; the
/// workers write their own rows or units of it.
struct Destination<'a> {
    cells: SharedSlice<'a, f32>,
    layout: SequenceLayout,
    width: usize,
    offset: usize,
}

/// One layer and direction over the whole sequence.
struct DirectionRun<'a> {
    layer: &'a PackedLayer,
    workers: &'a Workers,
    direction: Direction,
    input: &'a SequenceInput<'a>,
    source: &'a [f32],
    source_layout: SequenceLayout,
    source_width: usize,
    h0: Option<&'a [f32]>,
    c0: Option<&'a [f32]>,
}

impl DirectionRun<'_> {
    /// The time index of step `s` of row `b`.
    fn time_of(&self, s: usize, b: usize) -> usize {
        match self.direction {
            Direction::Forward => s,
            Direction::Reverse => self.input.valid_len(b) - 1 - s,
        }
    }

    /// Steps the rows need: the longest of their lengths.
    fn steps(&self, rows: &Range<usize>) -> usize {
        rows.clone()
            .map(|b| self.input.valid_len(b))
            .max()
            .unwrap_or(0)
    }

    /// Steps per chunk for `rows` rows sharing `budget` vectors of projection.
    fn chunk_len(&self, rows: usize, budget: usize, steps: usize) -> usize {
        let width = self.layer.gates() * self.layer.panels();
        (budget / (rows * width).max(1)).clamp(1, steps.max(1))
    }

    fn run(
        &self,
        ws: &mut Workspace,
        dest: Destination<'_>,
        h_n: &mut [f32],
        c_n: Option<&mut [f32]>,
    ) {
        let layer = self.layer;
        let (batch, hidden, panels) = (self.input.batch, layer.hidden_size(), layer.panels());
        let threads = self.workers.threads();
        let split_rows = threads > 1 && batch >= MIN_ROWS_PER_WORKER * threads;
        let group_rows: Vec<Range<usize>> = if split_rows {
            (0..threads).map(|w| share(batch, threads, w, 1)).collect()
        } else {
            std::iter::once(0..batch).collect()
        };
        let fits = ws.groups.len() == group_rows.len()
            && ws
                .groups
                .iter()
                .zip(&group_rows)
                .all(|(g, r)| g.fits(layer, r));
        if !fits {
            ws.groups = group_rows
                .iter()
                .map(|r| RowGroup::new(layer, r.clone()))
                .collect();
        }
        for group in &mut ws.groups {
            load_state(group.h[0].get_mut(), self.h0, &group.rows, hidden, panels);
            load_state(
                group.scratch.c.get_mut(),
                self.c0,
                &group.rows,
                hidden,
                panels,
            );
        }

        if split_rows {
            self.run_split_by_rows(&ws.groups, &dest);
        } else {
            self.run_split_by_panels(&mut ws.groups[0], &dest);
        }

        for group in &mut ws.groups {
            let steps = self.steps(&group.rows);
            store_state(
                group.h[steps % 2].get_mut(),
                h_n,
                &group.rows,
                hidden,
                panels,
            );
        }
        if let Some(c_n) = c_n {
            for group in &mut ws.groups {
                store_state(group.scratch.c.get_mut(), c_n, &group.rows, hidden, panels);
            }
        }
    }

    /// Large batches: each worker runs its own rows through the whole sequence, gathering,
    /// projecting and stepping chunk by chunk, and never waits for another. Against a barrier
    /// after each chunk's projection (medians of six alternating rounds, B = 64, 2 threads):
    /// 165 → 179 GFLOP/s at I = H = 256, 180 → 188 at 512; the spread of the rounds narrowed
    /// too, since a worker delayed by the host no longer holds the other up.
    fn run_split_by_rows(&self, groups: &[RowGroup], dest: &Destination<'_>) {
        let layer = self.layer;
        let (panels, input_size) = (layer.panels(), layer.input_size());
        let width = layer.gates() * panels;
        let budget = CHUNK_VECTORS / groups.len();
        self.workers.run(&|worker, _barrier| {
            let group = &groups[worker];
            let mut chunk = group.chunk.lock().unwrap_or_else(|e| e.into_inner());
            let rows = group.rows.len();
            let steps = self.steps(&group.rows);
            let chunk_len = self.chunk_len(rows, budget, steps);
            for s0 in (0..steps).step_by(chunk_len) {
                let n = chunk_len.min(steps - s0);
                self.fill_chunk(&mut chunk, &group.rows, s0, n);
                project(
                    layer,
                    &chunk.gathered,
                    input_size,
                    &chunk.projection,
                    0..n * rows,
                    0..panels,
                );
                // SAFETY: only this worker touches its group's chunk, and its writes are done.
                let projection = unsafe { chunk.projection.read(0..n * rows * width) };
                self.step_chunk(
                    group,
                    projection,
                    &chunk.active,
                    s0,
                    0..panels,
                    dest,
                    &|| {},
                );
            }
        });
    }

    /// Small batches: all workers on all rows, each its own panels (weight-stationary); the
    /// caller gathers each chunk, the workers project their panels of it, then meet at a
    /// barrier after every step.
    fn run_split_by_panels(&self, group: &mut RowGroup, dest: &Destination<'_>) {
        let layer = self.layer;
        let (batch, panels, input_size) = (self.input.batch, layer.panels(), layer.input_size());
        let width = layer.gates() * panels;
        let threads = self.workers.threads();
        let steps = self.steps(&group.rows);
        let chunk_len = self.chunk_len(batch, CHUNK_VECTORS, steps);
        for s0 in (0..steps).step_by(chunk_len) {
            let n = chunk_len.min(steps - s0);
            let rows = group.rows.clone();
            self.fill_chunk(
                group.chunk.get_mut().unwrap_or_else(|e| e.into_inner()),
                &rows,
                s0,
                n,
            );
            let group = &*group;
            let chunk = group.chunk.lock().unwrap_or_else(|e| e.into_inner());
            let chunk = &*chunk;
            self.workers.run(&|worker, barrier| {
                let own_panels = share(panels, threads, worker, 1);
                project(
                    layer,
                    &chunk.gathered,
                    input_size,
                    &chunk.projection,
                    0..n * batch,
                    own_panels.clone(),
                );
                barrier.wait();
                // SAFETY: every worker's panels were written before the barrier; nothing
                // writes the projection again in this run.
                let projection = unsafe { chunk.projection.read(0..n * batch * width) };
                let sync = || barrier.wait();
                self.step_chunk(
                    group,
                    projection,
                    &chunk.active,
                    s0,
                    own_panels,
                    dest,
                    &sync,
                );
            });
        }
    }

    /// The steps `s0..` of one chunk, one after the other: `projection` and `active` hold
    /// the chunk's (step, row) entries in step order, `group.rows.len()` rows per step.
    #[allow(clippy::too_many_arguments)]
    fn step_chunk(
        &self,
        group: &RowGroup,
        projection: &[f32x8],
        active: &[bool],
        s0: usize,
        panels: Range<usize>,
        dest: &Destination<'_>,
        sync: &dyn Fn(),
    ) {
        let rows = group.rows.len();
        let width = self.layer.gates() * self.layer.panels();
        for (i, step_active) in active.chunks_exact(rows.max(1)).enumerate() {
            let step_projection = &projection[i * rows * width..(i + 1) * rows * width];
            self.step(
                group,
                step_projection,
                step_active,
                s0 + i,
                panels.clone(),
                dest,
                sync,
            );
        }
    }

    /// Step `s` of `group`'s rows over `panels`: the recurrent product and epilogue, then the
    /// new state of those rows and panels to the output. `sync` is called inside a
    /// reset-before step and at the end; with panels split over workers it must be a barrier.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        group: &RowGroup,
        projection: &[f32x8],
        active: &[bool],
        s: usize,
        panels: Range<usize>,
        dest: &Destination<'_>,
        sync: &dyn Fn(),
    ) {
        let layer = self.layer;
        let (hidden, all_panels) = (layer.hidden_size(), layer.panels());
        let rows = group.rows.clone();
        let units = (panels.start * LANES).min(hidden)..(panels.end * LANES).min(hidden);
        let (prev, next) = (&group.h[s % 2], &group.h[(s + 1) % 2]);
        // SAFETY: `prev` was completed before this step began: by the previous step of this
        // worker (rows split) or before the barrier that ended the previous step (panels
        // split); this step writes only `next`.
        let h_prev = unsafe { prev.read(0..prev.len()) };
        recurrent_step(
            layer,
            &group.scratch,
            projection,
            active,
            h_prev,
            next,
            0..rows.len(),
            panels.clone(),
            sync,
        );
        // This worker's rows and units of the new state, to the output.
        for (rel, b) in rows.enumerate() {
            if s < self.input.valid_len(b) && !units.is_empty() {
                let own = rel * all_panels + panels.start..rel * all_panels + panels.end;
                // SAFETY: these vectors were written by this worker in this step (its rows or
                // its panels); no one else touches them until the next barrier.
                let state: &[f32] = wide::bytemuck::cast_slice(unsafe { next.read(own) });
                let first = panels.start * LANES;
                let row = dest.layout.row(self.time_of(s, b), b);
                // SAFETY: (row, offset + units) is written by this worker only: rows are split
                // by worker, or units are.
                unsafe {
                    dest.cells.write(
                        row * dest.width + dest.offset + units.start,
                        &state[units.start - first..units.end - first],
                    );
                }
            }
        }
        sync();
    }

    /// Fills `chunk` with steps `s0..s0 + n` of `rows`, in step order: their inputs (zeros past
    /// a row's length), whether each is active, and room for their projection. One projection
    /// then serves batch-first inputs, reverse directions and ragged lengths alike.
    fn fill_chunk(&self, chunk: &mut ChunkBuffers, rows: &Range<usize>, s0: usize, n: usize) {
        let width = self.source_width;
        let count = rows.len();
        chunk.gathered.clear();
        chunk.gathered.resize(n * count * width, 0.0);
        chunk.active.clear();
        for (slot, row) in chunk.gathered.chunks_exact_mut(width.max(1)).enumerate() {
            let (s, b) = (s0 + slot / count, rows.start + slot % count);
            let active = s < self.input.valid_len(b);
            chunk.active.push(active);
            if active {
                let source_row = self.source_layout.row(self.time_of(s, b), b);
                row.copy_from_slice(&self.source[source_row * width..(source_row + 1) * width]);
            }
        }
        chunk.active.resize(n * count, false);
        let vectors = n * count * self.layer.gates() * self.layer.panels();
        if chunk.projection.len() < vectors {
            chunk.projection = SharedVectors::zeros(vectors);
        }
    }
}

/// Writes `rows` of a `[B, H]` state (zeros when absent) into padded `[rows, Hp]` vectors.
fn load_state(
    dest: &mut [f32x8],
    source: Option<&[f32]>,
    rows: &Range<usize>,
    hidden: usize,
    panels: usize,
) {
    let dest: &mut [f32] = wide::bytemuck::cast_slice_mut(dest);
    dest.fill(0.0);
    if let Some(source) = source {
        for (rel, b) in rows.clone().enumerate() {
            dest[rel * panels * LANES..][..hidden]
                .copy_from_slice(&source[b * hidden..(b + 1) * hidden]);
        }
    }
}

/// Copies padded `[rows, Hp]` vectors back into `rows` of a `[B, H]` state.
fn store_state(
    source: &mut [f32x8],
    dest: &mut [f32],
    rows: &Range<usize>,
    hidden: usize,
    panels: usize,
) {
    let source: &[f32] = wide::bytemuck::cast_slice(source);
    for (rel, b) in rows.clone().enumerate() {
        dest[b * hidden..(b + 1) * hidden]
            .copy_from_slice(&source[rel * panels * LANES..][..hidden]);
    }
}
