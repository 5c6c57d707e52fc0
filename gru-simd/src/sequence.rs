//! The sequence driver: every layer and direction of a model over a whole sequence, in
//! chunks of time steps: gather the chunk's inputs, project them all at once, then run the
//! fused recurrent steps.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use gru_core::{
    Cell, Direction, GruVariant, LayerWeights, Model, ModelConfig, RecurrentKernel, Result,
    SequenceInput, SequenceLayout, SequenceOutput,
};
use wide::f32x8;

use crate::balance::{Balance, BusyClock, WorkerSplits};
use crate::packing::{LANES, PackedLayer, PanelLayout};
use crate::projection::project;
use crate::step::{CellScratch, recurrent_step};
use crate::threading::{
    ALONE_BELOW_FLOPS, ALONE_BELOW_STEP_FLOPS, JobSize, SharedSlice, SharedVectors, Workers,
};
use crate::tiles::PanelOrder;

/// Upper bound on the projection of one chunk of steps, all rows together, in vectors (1 MiB):
/// memory stays bounded for any sequence length, the buffer stays in cache, and a chunk still
/// has rows enough for the projection's row tiles to reuse each panel of `W_ih` many times.
/// (Split by rows, each worker's buffer keeps the size of the largest share it has had.)
const CHUNK_VECTORS: usize = 1 << 15;

/// Packed weights (in vectors, 1 MiB) above which they are taken not to stay in one core's L2
/// (1 MiB on the AMD EPYC the project began on, 2 MiB on the Intel Xeon, which also holds
/// other data).
const L2_VECTORS: usize = 1 << 15;

/// Upper bound (4 MiB) on the projection of one chunk for layers whose packed `W_ih` is larger
/// than [`L2_VECTORS`]. Such a `W_ih` does not stay in L2 and is streamed from L3 once per
/// chunk, so a longer chunk pays for its larger buffer: at B = 64 a chunk of 1 MiB holds only
/// one or two steps from H = 512 on. Against 1 MiB at
/// B = 64 (alternating rounds in both orders, geometric mean of the two orders' medians), two
/// threads: GRU +2 % at I = H = 512 and +16 % at 1024, LSTM +10 % and +20 %; one thread: GRU
/// −3 and +2 %, LSTM +9 and +13 %. Smaller layers keep 1 MiB, where a longer chunk only moves
/// the buffer out of L2: 4 MiB for every layer measured 0.90× for the LSTM at B = 64,
/// H = 256, and 1.04× for the GRU (one order only). On the Intel Xeon, 8 MiB against 4 at
/// B = 64, 2 threads (6 alternating rounds): GRU 1.024× the time at I = H = 1024 and 1.049× at
/// 512, LSTM 0.987× and 1.045×.
const LONG_CHUNK_VECTORS: usize = 1 << 17;

/// Rows per worker from which a batch splits by rows, by the size of the layer's packed weights,
/// which every worker then streams once per step ([`splits_by_rows`]): weights that stay in one
/// core's L2 ([`L2_VECTORS`]) need few rows to pay for it, weights that come from L3 more.
fn min_rows_per_worker(weight_vectors: usize) -> usize {
    if weight_vectors <= L2_VECTORS {
        4
    } else if weight_vectors <= 4 * L2_VECTORS {
        8
    } else {
        16
    }
}

/// Packed weights (`W_ih` and `W_hh`, in vectors: 16 MiB, half of this machine's 32 MiB L3)
/// beyond which a large batch is split by panels rather than by rows.
const ROW_SPLIT_MAX_WEIGHT_VECTORS: usize = 1 << 19;

/// Whether a step of `batch` rows is split over `threads` workers by rows (each worker all
/// panels of its rows) rather than by panels (each worker its panels of all rows).
///
/// By rows only when every worker has rows enough for the row tiles and the layer's packed
/// weights (`weight_vectors`) take at most half of a 32 MiB L3. Split by rows, every worker
/// streams all of `W_ih` and `W_hh`, so wherever workers do not share an L3 (a virtual
/// machine's vCPUs may sit on different core complexes), each L3 must hold all of them; split
/// by panels, each worker streams only its share. The barrier a step then needs costs little
/// beside a step of many rows. Measured against the row split, 2 threads, alternating rounds
/// in both orders (medians; `gru bench --json`): I = H = 1024 (25 MiB of GRU weights, 34 of
/// LSTM), B = 64: GRU 1.01× and 1.08× in two sets of 8 and 10 rounds, LSTM 1.08× and 1.13×;
/// B = 16: GRU 0.96× and 1.15×, LSTM 1.19× and 1.31×. At I = H = 512 (6 and 8 MiB) it was
/// no better: B = 64 GRU 1.01×, LSTM 0.93×; B = 16 GRU 0.94×, LSTM 0.90× (8 rounds). On the
/// Intel Xeon (2 MiB L2 per core, an L3 the guest reports as 480 MiB), splitting B = 64 at
/// I = H = 1024 by rows took the GRU 1.047× the time of the panel split and the LSTM 0.996×
/// (6 alternating rounds), so the limit stays.
///
/// Split by rows, each worker streams all the weights once per step for its rows, so the rows
/// it needs to pay for that grow as the weights leave L2 ([`min_rows_per_worker`]). On the
/// Intel Xeon, 2 threads, the split by panels against the split by rows from four rows per
/// worker (3 alternating rounds, medians): at I = H = 512 (6 and 8 MiB, streamed from L3) it
/// took 0.44× the time at B = 8 (GRU; LSTM 0.73×), 0.85–0.87× at 16 and 24, and 0.99× at 32;
/// at 384 (3.4 and 4.5 MiB) 0.68–0.74× at B = 8; at 256 (1.5 and 2 MiB) 0.91–0.99× at B = 8,
/// 1.02–1.04× at 12 and 1.07–1.14× at 16; at 128 (within L2) 1.18–1.27× at B = 8 and 16.
///
/// A small layer, whose packed weights stay in one core's L2 ([`L2_VECTORS`]: a GRU up to
/// I = H = 208, an LSTM up to 176), splits by rows from more rows than workers on: each worker then
/// streams all the weights from its own L2, and the workers meet once per chunk of steps instead of
/// after every step. Rows go to workers in pairs ([`ROW_GRANULE`]), each pair one two-row strip of
/// tiles across all the weights, so a worker's time follows its pairs: unless the pairs share out
/// evenly, the worker with more of them takes longer than the whole panel split, and only layers
/// small enough for the meeting to dominate (a quarter of that size: a GRU up to I = H = 104, an
/// LSTM up to 88) gain from the rows regardless. On the Intel Xeon, 2 threads, against the panel
/// split (3 alternating rounds, medians): with even pairs (B = 3, 4, 7) GRU 0.52–0.85× the time at
/// I = H = 32 to 128, LSTM 0.61–0.87×; with uneven ones (B = 5, 6) at 32 and 64 GRU 0.65–0.95×,
/// LSTM 0.76–0.90×, but at 128 GRU 0.92–1.01×, LSTM 0.96–1.06×, and GRU B = 5 at I = H = 200 1.23×
/// (4 rounds). At 256 (1.5 and 2 MiB) the rows won at B = 4 and 7 (0.90–0.95×) and lost at 3, 5 and
/// 6 (1.02–1.35×), at 512 they lost at every B (1.34–2.42×), and with one row per worker (B = 2) at
/// every size (1.00–2.77×).
fn splits_by_rows(threads: usize, batch: usize, weight_vectors: usize) -> bool {
    let even_pairs = batch.div_ceil(ROW_GRANULE).is_multiple_of(threads);
    let small_layer =
        weight_vectors <= L2_VECTORS && (even_pairs || weight_vectors <= L2_VECTORS / 4);
    let rows_enough =
        batch >= min_rows_per_worker(weight_vectors) * threads || (batch > threads && small_layer);
    threads > 1 && rows_enough && weight_vectors <= ROW_SPLIT_MAX_WEIGHT_VECTORS
}

/// [`splits_by_rows`] for `layer`, whose packed `W_ih` and `W_hh` every worker would stream.
fn layer_splits_by_rows(threads: usize, batch: usize, layer: &PackedLayer) -> bool {
    splits_by_rows(
        threads,
        batch,
        layer.input_vectors() + layer.recurrent_vectors(),
    )
}

/// How a job's steps are shared between the workers, for [`SimdModel::tiny_steps`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepSplit {
    /// Always by panels, the workers meeting after every step (a stream).
    Panels,
    /// By rows where [`splits_by_rows`] says so, otherwise by panels (a sequence).
    RowsOrPanels,
}

/// Rows move between workers in pairs: a pair still streams each weight once for two rows.
const ROW_GRANULE: usize = 2;

/// Steps between two splits of the panels at small batches (and in a stream).
pub(crate) const REBALANCE_STEPS: usize = 8;

/// A model packed for the SIMD kernels: GRU (both variants) or LSTM, any number of layers, one
/// or two directions. Implements [`RecurrentKernel`]; see also [`SimdModel::stream`].
///
/// A model owns its packed weights, its workers and the buffers its calls reuse. It is `Send`
/// and `Sync`: [`forward`](RecurrentKernel::forward) takes `&mut self`, and streams borrow the
/// model shared, so several threads may each step their own [`Stream`](crate::Stream) of one
/// model at once. With more than one worker, their steps then take turns on the model's
/// workers; streams that should run side by side are better one stream of a larger batch, or
/// models of their own.
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
///
/// Calls of one shape into the same [`SequenceOutput`]
/// ([`forward_into`](RecurrentKernel::forward_into)) allocate nothing once the first has
/// shaped it and grown the model's buffers: a server or a streaming front end that calls the
/// model in a loop keeps its memory still (as [`Stream::step`](crate::Stream::step) does
/// step by step). It saves little time: against `forward` (new buffers per call) on 2
/// threads, 0.98–0.99× the time at B = 64, I = H = 256–1024, and 0.99–1.00× at B = 1
/// (`cargo run --release -p gru-simd --example reused_buffers`: medians of 20 alternating
/// rounds, three runs).
///
/// ```
/// use gru_core::{CellKind, GruVariant, LayerWeights, RecurrentKernel, SequenceInput, SequenceOutput};
/// let weights = LayerWeights::new(CellKind::Gru, 4, 16, vec![0.01; 3 * 16 * 4], vec![0.02; 3 * 16 * 16], None, None)?;
/// let mut gru = gru_simd::Gru::new(&weights, GruVariant::ResetAfter)?;
/// let mut out = SequenceOutput::empty();
/// for window in vec![1.0f32; 30 * 4].chunks(10 * 4) {
///     gru.forward_into(&SequenceInput::new(window, 10, 1), &mut out)?;
///     assert_eq!(out.output_shape(), [10, 1, 16]);
/// }
/// # Ok::<(), gru_core::Error>(())
/// ```
#[derive(Debug)]
pub struct SimdModel {
    config: ModelConfig,
    layers: Vec<PackedLayer>,
    workers: Workers,
    /// One worker, the caller: for small calls while `workers` have parked
    /// ([`Workers::run_alone`]).
    caller_alone: Workers,
    /// When the last `forward` call began.
    last_call: Option<Instant>,
    /// Calls of fewer FLOPs may run alone after a pause ([`Self::set_alone_below_flops`]).
    alone_below_flops: usize,
    /// Calls and streams whose every step is under this run alone
    /// ([`Self::set_alone_below_step_flops`]).
    alone_below_step_flops: usize,
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
            fn forward_into(
                &mut self,
                input: &SequenceInput<'_>,
                out: &mut SequenceOutput,
            ) -> Result<()> {
                self.0.forward_into(input, out)
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
    ///
    /// The workers meet at every step of small batches, so one worker per free core is
    /// fastest, except for small steps, where the meeting costs more than half of a step
    /// saves: calls whose steps are all under [`ALONE_BELOW_STEP_FLOPS`] (a GRU at B = 1 up to
    /// I = H = 115, a stream of 4 rows up to 57) run on the calling thread alone, unless their
    /// batch splits by rows, whose workers meet only once per chunk of steps
    /// ([`set_alone_below_step_flops`](Self::set_alone_below_step_flops)).
    ///
    /// With more workers than free cores (several models or processes sharing the cores), a
    /// worker that has waited about 25 µs yields its core and then sleeps, so each step costs
    /// about one wake-up more rather than a scheduler time slice; fewer workers per model are
    /// still faster then. Idle workers park after 1.6 ms; a small call after a pause runs on the
    /// calling thread alone rather than wake them ([`Workers::run_alone`]).
    ///
    /// # Errors
    /// [`Config`](gru_core::Error::Config) when `threads` is 0 or above
    /// [`MAX_THREADS`](crate::threading::MAX_THREADS), or
    /// when the threads cannot be started; [`Unsupported`](gru_core::Error::Unsupported) for
    /// more than one without the `rayon` feature.
    pub fn with_threads(model: &Model, threads: usize) -> Result<Self> {
        Self::with_layout(model, threads, PanelLayout::best())
    }

    /// Packs every layer of `model` in `layout`, to run on `threads` workers: as
    /// [`with_threads`](Self::with_threads), which picks [`PanelLayout::best`]. Both layouts
    /// give bitwise the same results in a build with FMA (without target flags the 8-lane tiles
    /// multiply and add unfused); [`PanelLayout::Pairs`] runs 16-lane AVX-512 tiles.
    ///
    /// # Errors
    /// [`Unsupported`](gru_core::Error::Unsupported) when this CPU cannot run `layout`'s tiles, and as
    /// [`with_threads`](Self::with_threads).
    ///
    /// ```
    /// use gru_core::{CellKind, GruVariant, LayerWeights, Model};
    /// use gru_simd::{SimdModel, packing::PanelLayout};
    /// let weights = LayerWeights::new(CellKind::Gru, 4, 16, vec![0.1; 192], vec![0.1; 768], None, None)?;
    /// let model = Model::single_layer(gru_core::Cell::Gru(GruVariant::ResetAfter), weights)?;
    /// let eight_lanes = SimdModel::with_layout(&model, 1, PanelLayout::Contiguous)?;
    /// assert_eq!(eight_lanes.layout(), PanelLayout::Contiguous);
    /// # Ok::<(), gru_core::Error>(())
    /// ```
    pub fn with_layout(model: &Model, threads: usize, layout: PanelLayout) -> Result<Self> {
        let cell = model.cell();
        Ok(Self {
            config: *model.config(),
            layers: model
                .layers()
                .iter()
                .map(|w| PackedLayer::with_layout(w, cell, layout))
                .collect::<Result<_>>()?,
            workers: Workers::new(threads)?,
            caller_alone: Workers::new(1)?,
            last_call: None,
            alone_below_flops: ALONE_BELOW_FLOPS,
            alone_below_step_flops: ALONE_BELOW_STEP_FLOPS,
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

    /// Calls (and streams started later) whose every step is under `flops` run on the calling
    /// thread alone, whatever the number of workers: one step of each layer at the call's
    /// batch, `2·G·H·(I + H)·B` FLOPs. Calls whose batch splits by rows (from four rows per
    /// worker on, or, for layers whose weights stay in one core's L2, from more rows than
    /// workers if they share out evenly in pairs) still use every worker: their workers meet
    /// only once per chunk of steps. By default [`ALONE_BELOW_STEP_FLOPS`], where the workers'
    /// meeting after every step cost more than half of a step saved here; a machine whose
    /// cores are closer (the AMD EPYC the project began on) wants less, one whose cores are
    /// further apart (two sockets) more. 0 puts every call on all workers.
    ///
    /// ```
    /// use gru_core::{CellKind, GruVariant, LayerWeights};
    /// let weights = LayerWeights::new(CellKind::Gru, 4, 16, vec![0.1; 192], vec![0.1; 768], None, None)?;
    /// let mut model = gru_simd::Gru::new(&weights, GruVariant::ResetAfter)?;
    /// // One step here is 2·3·16·(4 + 16) = 1920 FLOPs: with several workers, every call
    /// // would run on the calling thread unless told otherwise.
    /// assert!(model.alone_below_step_flops() > 1920);
    /// model.set_alone_below_step_flops(0);
    /// # Ok::<(), gru_core::Error>(())
    /// ```
    pub fn set_alone_below_step_flops(&mut self, flops: usize) {
        self.alone_below_step_flops = flops;
    }

    /// The FLOPs under which every step of a call runs alone
    /// ([`Self::set_alone_below_step_flops`]).
    pub fn alone_below_step_flops(&self) -> usize {
        self.alone_below_step_flops
    }

    /// Calls (and steps of streams started later) of fewer than `flops` in all (every layer
    /// and step) that come more than
    /// [`IDLE_BEFORE_PARK`](crate::threading::IDLE_BEFORE_PARK) after the last one began run
    /// on the calling thread alone when the workers have parked by then: waking them would
    /// cost more than they save ([`Workers::run_alone`]). By default [`ALONE_BELOW_FLOPS`];
    /// 0 sends every such call to the workers, which then wakes them.
    ///
    /// ```
    /// use gru_core::{CellKind, GruVariant, LayerWeights};
    /// let weights = LayerWeights::new(CellKind::Gru, 4, 16, vec![0.1; 192], vec![0.1; 768], None, None)?;
    /// let mut model = gru_simd::Gru::new(&weights, GruVariant::ResetAfter)?;
    /// assert_eq!(model.alone_below_flops(), gru_simd::threading::ALONE_BELOW_FLOPS);
    /// model.set_alone_below_flops(0);
    /// # Ok::<(), gru_core::Error>(())
    /// ```
    pub fn set_alone_below_flops(&mut self, flops: usize) {
        self.alone_below_flops = flops;
    }

    /// The FLOPs under which a call that comes after a pause may run alone
    /// ([`Self::set_alone_below_flops`]).
    pub fn alone_below_flops(&self) -> usize {
        self.alone_below_flops
    }

    /// Whether every step of every layer at `batch` is under
    /// [`Self::alone_below_step_flops`] and needs the workers to meet after it: split by
    /// panels, as a stream's always are and a sequence's are unless its batch is large enough
    /// to split by rows ([`splits_by_rows`]). Rows split meet only once per chunk of steps, so
    /// small steps gain from the team there (a sequence at B = 8, I = H = 32, 2 threads: 0.71×
    /// the time of one).
    pub(crate) fn tiny_steps(&self, batch: usize, steps: StepSplit) -> bool {
        let threads = self.workers.threads();
        self.layers.iter().all(|layer| {
            let by_rows =
                steps == StepSplit::RowsOrPanels && layer_splits_by_rows(threads, batch, layer);
            !by_rows && layer.flops(batch) < self.alone_below_step_flops
        })
    }

    /// How the weights are packed, which decides the tiles' vector width.
    pub fn layout(&self) -> PanelLayout {
        self.layers
            .first()
            .map_or(PanelLayout::Contiguous, PackedLayer::layout)
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
        ws.state.as_ref().map_or(0, BatchState::bytes)
            + ws.chunks.iter().map(ChunkBuffers::bytes).sum::<usize>()
            + (ws.between[0].capacity() + ws.between[1].capacity()) * 4
    }

    /// Bytes of packed weights of the whole model ([`PackedLayer::packed_bytes`]).
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

    fn forward_into(&mut self, input: &SequenceInput<'_>, out: &mut SequenceOutput) -> Result<()> {
        let config = self.config;
        input.validate(&config)?;
        // Zeroes the rows past each length: the steps below write every other value.
        out.prepare(&config, input);
        let tiny_steps = self.tiny_steps(input.batch, StepSplit::RowsOrPanels);
        let Self {
            layers,
            workers,
            caller_alone,
            last_call,
            alone_below_flops,
            workspace,
            ..
        } = self;
        let flops = layers
            .iter()
            .map(|layer| layer.flops(input.batch * input.seq_len))
            .fold(0, usize::saturating_add);
        let job = JobSize {
            small: flops < *alone_below_flops,
            tiny_steps,
        };
        let workers = if workers.run_alone(job, last_call) {
            &*caller_alone
        } else {
            &*workers
        };
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
                    slot: state,
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
        Ok(())
    }
}

/// Buffers kept between calls, grown to the largest shape seen.
#[derive(Debug, Default)]
struct Workspace {
    /// The state of every row.
    state: Option<BatchState>,
    /// Each worker's buffers for one chunk of steps (split by panels, only the first is used).
    chunks: Vec<Mutex<ChunkBuffers>>,
    /// Outputs of the layers before the last, time-major.
    between: [Vec<f32>; 2],
    /// How each layer direction's work was last split between the workers: on the calling
    /// thread alone (one worker, index 0), and on the team (index 1). Kept apart so that calls
    /// that alternate between the two (small calls after pauses, [`Workers::run_alone`])
    /// neither lose the team's split nor allocate a new one each time.
    splits: Vec<[CarriedSplit; 2]>,
    /// Each worker's busy time in the last chunks, split by rows
    /// ([`DirectionRun::run_split_by_rows`]).
    row_busy: Vec<[AtomicU64; 2]>,
}

/// How a layer direction's work was last split, carried from one call to the next, so that
/// calls shorter than the balancing interval (a chunk of steps for rows, [`REBALANCE_STEPS`]
/// for panels) still follow the workers' measured speeds instead of starting even each time.
/// A split holds one part per worker, so it is carried only to calls with as many workers.
#[derive(Debug, Default)]
struct CarriedSplit {
    /// The number of workers the splits below are for.
    threads: usize,
    /// Split by rows: the batch size and the last split of its rows.
    rows: Option<(usize, Balance)>,
    /// Split by panels.
    panels: Option<PanelSplit>,
}

/// The panels' split, and the steps run so far, which set when the next rebalance comes. A
/// worker adds to its busy total only at a rebalance, and adds again only after the barriers
/// of the following steps, which every worker passes after reading all totals.
#[derive(Debug)]
struct PanelSplit {
    split: WorkerSplits,
    steps: usize,
}

impl PanelSplit {
    /// An even split of `panels`, in units of the panels that share a tile's column
    /// ([`PanelLayout::panels_per_row`]): a split inside a pair of panels would have both
    /// workers stream that pair. Against splits by single panels, 2 threads, B = 1, 6
    /// alternating rounds: GRU streaming steps 0.818× the time at I = H = 256 (6 of 6 rounds
    /// faster) and 0.961× at 512; LSTM sequences 0.93–0.985×; GRU sequences 1.00×.
    fn even(panels: usize, threads: usize, layout: PanelLayout) -> Self {
        Self {
            split: WorkerSplits::even(panels, threads, layout.panels_per_row()),
            steps: 0,
        }
    }
}

/// The state of every row of the batch, whichever worker steps it.
#[derive(Debug)]
struct BatchState {
    /// `h`, double-buffered: step `s` reads slot `s % 2` and writes the other.
    h: [SharedVectors; 2],
    scratch: CellScratch,
}

impl BatchState {
    fn new(layer: &PackedLayer, batch: usize) -> Self {
        let len = batch * layer.panels();
        Self {
            h: [SharedVectors::zeros(len), SharedVectors::zeros(len)],
            scratch: CellScratch::new(layer, batch),
        }
    }

    fn fits(&self, layer: &PackedLayer, batch: usize) -> bool {
        self.h[0].len() == batch * layer.panels() && self.scratch.fits(layer, batch)
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        (self.h[0].len() * 2 + self.scratch.len()) * std::mem::size_of::<f32x8>()
    }
}

/// One chunk of steps of a range of rows, in step order (`[n·rows, ·]`).
#[derive(Debug)]
struct ChunkBuffers {
    /// The inputs, `I` floats per (step, row), zeros past a row's length.
    gathered: Vec<f32>,
    /// Whether each (step, row) is inside its sequence.
    active: Vec<bool>,
    /// The projection, `G·panels` vectors per (step, row).
    projection: SharedVectors,
    /// This worker's copy of the rows' split, when split by rows.
    balance: Option<Balance>,
}

impl ChunkBuffers {
    /// Bytes held.
    fn bytes(mutex: &Mutex<Self>) -> usize {
        let chunk = mutex.lock().unwrap_or_else(|e| e.into_inner());
        chunk.projection.len() * std::mem::size_of::<f32x8>()
            + chunk.gathered.capacity() * 4
            + chunk.active.capacity()
    }
}

impl Default for ChunkBuffers {
    fn default() -> Self {
        Self {
            gathered: Vec::new(),
            active: Vec::new(),
            projection: SharedVectors::zeros(0),
            balance: None,
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
    /// This layer direction's index (`layer · directions + direction`).
    slot: usize,
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

    /// Steps the batch needs: the longest of its rows' lengths.
    fn steps(&self) -> usize {
        (0..self.input.batch)
            .map(|b| self.input.valid_len(b))
            .max()
            .unwrap_or(0)
    }

    /// Steps per chunk for `rows` rows sharing one chunk's projection buffer.
    fn chunk_len(&self, rows: usize, steps: usize) -> usize {
        let layer = self.layer;
        chunk_steps(
            layer.input_vectors(),
            rows * layer.gates() * layer.panels(),
            steps,
        )
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
        if !ws.state.as_ref().is_some_and(|s| s.fits(layer, batch)) {
            ws.state = Some(BatchState::new(layer, batch));
        }
        let state = ws.state.as_mut().expect("just made");
        // Grown only: a call run by the caller alone keeps the other workers' buffers.
        if ws.chunks.len() < threads {
            ws.chunks.resize_with(threads, Mutex::default);
        }
        load_state(state.h[0].get_mut(), self.h0, batch, hidden, panels);
        load_state(state.scratch.c.get_mut(), self.c0, batch, hidden, panels);

        if ws.splits.len() <= self.slot {
            ws.splits.resize_with(self.slot + 1, Default::default);
        }
        let carried = &mut ws.splits[self.slot][usize::from(threads > 1)];
        if carried.threads != threads {
            // Parts for other workers (the model's threads were changed): a worker past their
            // count would index out of them, and parts no worker has now would never run.
            *carried = CarriedSplit {
                threads,
                ..CarriedSplit::default()
            };
        }
        if layer_splits_by_rows(threads, batch, layer) {
            if carried.rows.as_ref().is_none_or(|(rows, _)| *rows != batch) {
                carried.rows = Some((batch, Balance::even(batch, threads, ROW_GRANULE)));
            }
            let (_, split) = carried.rows.as_mut().expect("just set");
            if ws.row_busy.len() < threads {
                ws.row_busy.resize_with(threads, Default::default);
            }
            self.run_split_by_rows(state, &ws.chunks, &ws.row_busy, &dest, split);
        } else {
            let chunk = ws.chunks[0].get_mut().unwrap_or_else(|e| e.into_inner());
            let split = carried
                .panels
                .get_or_insert_with(|| PanelSplit::even(panels, threads, self.layer.layout()));
            self.run_split_by_panels(state, chunk, &dest, split);
        }

        store_state(state.h[self.steps() % 2].get_mut(), h_n, hidden, panels);
        if let Some(c_n) = c_n {
            store_state(state.scratch.c.get_mut(), c_n, hidden, panels);
        }
    }

    /// Large batches of layers up to 16 MiB ([`splits_by_rows`]): each worker gathers,
    /// projects and steps its own rows, chunk by chunk, with no synchronisation inside a chunk
    /// (rows are independent sequences). At the end of each chunk the workers meet, and the
    /// rows are split anew in proportion to how fast each worker went ([`Balance`]): a worker
    /// slowed down by the host hands rows over to the others instead of holding them up.
    /// Against an even split for the whole sequence (B = 64, 2 threads, medians of six
    /// alternating rounds): GRU +11 % (I = H = 256), +15 % (512), +18 % (1024); LSTM +1 %,
    /// +15 %, +24 %. Starts from `split` (the one the previous call of this batch size ended
    /// with, or an even one), and leaves in it the split this call ends with.
    ///
    /// `busy` (one entry per worker at least) holds the nanoseconds each worker spent on its
    /// rows in the last chunks, by chunk parity: a worker overwrites a slot only two chunks
    /// later, after every worker has read it. (Not running totals as in `SplitCopy`: no
    /// barrier separates a worker's next addition from another's late read here.) It and each
    /// worker's copy of the split live in buffers kept between calls, so that a call
    /// allocates nothing once they have grown.
    fn run_split_by_rows(
        &self,
        state: &BatchState,
        chunks: &[Mutex<ChunkBuffers>],
        busy: &[[AtomicU64; 2]],
        dest: &Destination<'_>,
        split: &mut Balance,
    ) {
        let layer = self.layer;
        let (batch, panels, input_size) = (self.input.batch, layer.panels(), layer.input_size());
        let width = layer.gates() * panels;
        let steps = self.steps();
        let chunk_len = self.chunk_len(batch, steps);
        let start = &*split;
        self.workers.run(&|worker, barrier| {
            let mut chunk = chunks[worker].lock().unwrap_or_else(|e| e.into_inner());
            let mut balance = chunk.balance.take().unwrap_or_else(|| start.clone());
            balance.clone_from(start);
            for (c, s0) in (0..steps).step_by(chunk_len).enumerate() {
                let n = chunk_len.min(steps - s0);
                let rows = balance.part(worker);
                let clock = BusyClock::start();
                let in_place = self.inputs_in_place(&rows, s0, n);
                self.fill_chunk(&mut chunk, &rows, s0, n, in_place.is_none());
                // SAFETY: these chunk buffers are this worker's alone (it holds their lock).
                unsafe {
                    project(
                        layer,
                        in_place.unwrap_or(&chunk.gathered),
                        input_size,
                        &chunk.projection,
                        0..n * rows.len(),
                        0..panels,
                    );
                }
                // SAFETY: only this worker touches its chunk buffers, and its writes are done.
                let projection = unsafe { chunk.projection.read(0..n * rows.len() * width) };
                let count = rows.len();
                for (i, step_active) in chunk.active.chunks_exact(count.max(1)).enumerate() {
                    self.step(
                        state,
                        rows.clone(),
                        &projection[i * count * width..(i + 1) * count * width],
                        step_active,
                        s0 + i,
                        0..panels,
                        dest,
                        &|| {},
                    );
                }
                busy[worker][c % 2].store(clock.take_nanos(), Ordering::Relaxed);
                // Also the end of this split: the next chunk may give these rows to others.
                barrier.wait();
                balance.rebalance(|w| busy[w][c % 2].load(Ordering::Relaxed) as f64 * 1e-9);
            }
            chunk.balance = Some(balance);
        });
        // Every worker's copy ends the same; worker 0's is kept for the next call.
        let chunk = chunks[0].lock().unwrap_or_else(|e| e.into_inner());
        if let Some(end) = &chunk.balance {
            split.clone_from(end);
        }
    }

    /// Small batches, and larger layers at any batch ([`splits_by_rows`]): all workers on all
    /// rows, each its own panels (weight-stationary); the caller gathers each chunk, the
    /// workers project their panels of it, then meet at a barrier after every step. Every
    /// [`REBALANCE_STEPS`] steps (counted over calls, in `split`) the panels are split anew by
    /// each worker's measured speed, as rows are for large batches; a moved panel's weights
    /// come from the other core's cache once. Against a fixed split (2 threads, medians of six
    /// alternating rounds, B = 1): GRU +13 % (I = H = 256), +5 % (512), −1 % (1024); LSTM
    /// +10 %, +7 %, −2 %.
    fn run_split_by_panels(
        &self,
        state: &BatchState,
        chunk: &mut ChunkBuffers,
        dest: &Destination<'_>,
        split: &mut PanelSplit,
    ) {
        let layer = self.layer;
        let (batch, panels, input_size) = (self.input.batch, layer.panels(), layer.input_size());
        let width = layer.gates() * panels;
        let threads = self.workers.threads();
        let steps = self.steps();
        let chunk_len = self.chunk_len(batch, steps);
        let (shared, earlier_steps) = (&split.split, split.steps);
        for s0 in (0..steps).step_by(chunk_len) {
            let n = chunk_len.min(steps - s0);
            let in_place = self.inputs_in_place(&(0..batch), s0, n);
            self.fill_chunk(chunk, &(0..batch), s0, n, in_place.is_none());
            let chunk = &*chunk;
            let inputs = in_place.unwrap_or(&chunk.gathered);
            self.workers.run(&|worker, barrier| {
                let mut split = shared.copy(worker);
                // SAFETY: the workers' copies of the split are alike (each rebalances its own
                // from the same totals, after the same barrier), so each projects its own
                // panels; nobody reads the projection before the barrier below.
                unsafe {
                    project(
                        layer,
                        inputs,
                        input_size,
                        &chunk.projection,
                        0..n * batch,
                        split.part(worker),
                    );
                }
                barrier.wait();
                // SAFETY: every worker's panels were written before the barrier; nothing
                // writes the projection again in this run.
                let projection = unsafe { chunk.projection.read(0..n * batch * width) };
                // One worker has nothing to balance (and no one to wait for): no clock reads.
                let clock = (threads > 1).then(BusyClock::start);
                let sync = || {
                    if let Some(clock) = &clock {
                        clock.wait(barrier);
                    }
                };
                for (i, step_active) in chunk.active.chunks_exact(batch).enumerate() {
                    let s = s0 + i;
                    self.step(
                        state,
                        0..batch,
                        &projection[i * batch * width..(i + 1) * batch * width],
                        step_active,
                        s,
                        split.part(worker),
                        dest,
                        &sync,
                    );
                    if let Some(clock) = &clock
                        && (earlier_steps + s + 1).is_multiple_of(REBALANCE_STEPS)
                    {
                        shared.add_busy(worker, clock.take_nanos());
                        clock.wait(barrier);
                        split.rebalance(shared.busy());
                    }
                }
            });
        }
        split.steps += steps;
    }

    /// Step `s` of `rows × panels`: the recurrent product and epilogue, then the new state of
    /// those rows and panels to the output. `projection` and `active` hold those rows' entries.
    /// `sync` is called inside a reset-before step and at the end; with panels split over
    /// workers it must be a barrier.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        state: &BatchState,
        rows: Range<usize>,
        projection: &[f32x8],
        active: &[bool],
        s: usize,
        panels: Range<usize>,
        dest: &Destination<'_>,
        sync: &dyn Fn(),
    ) {
        let layer = self.layer;
        let (hidden, all_panels) = (layer.hidden_size(), layer.panels());
        let units = (panels.start * LANES).min(hidden)..(panels.end * LANES).min(hidden);
        let (prev, next) = (&state.h[s % 2], &state.h[(s + 1) % 2]);
        // SAFETY: these rows of `prev` were completed before this step began, by the previous
        // step of this worker (rows split: its rows stay its own for the whole chunk, and the
        // barrier that ended the last chunk orders the steps of whoever had them before) or
        // before the barrier that ended the previous step (panels split). Nobody writes them
        // during this step: this step writes `next`, and a worker on other rows that is a step
        // ahead or behind writes only its own rows.
        let h_prev = unsafe { prev.read(rows.start * all_panels..rows.end * all_panels) };
        // SAFETY: split by rows, no other worker has these rows for the whole chunk; split by
        // panels, every worker steps all rows, each its own part of one split, `sync` is a
        // barrier of all of them, and the step ends with it (below) before anyone touches
        // `next` or the scratch again.
        unsafe {
            recurrent_step(
                layer,
                &state.scratch,
                projection,
                active,
                h_prev,
                next,
                rows.clone(),
                panels.clone(),
                PanelOrder::alternating(s),
                sync,
            );
        }
        // This worker's rows and units of the new state, to the output.
        for b in rows {
            if s < self.input.valid_len(b) && !units.is_empty() {
                let own = b * all_panels + panels.start..b * all_panels + panels.end;
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

    /// The inputs of steps `s0..s0 + n` of `rows` as one slice of the source, in the order
    /// [`Self::fill_chunk`] gathers them, when they lie there so already: a forward direction
    /// over every row of a time-major input (or over a single row), each row inside its
    /// length for the whole chunk (past it the caller's data are unused, and the gathered
    /// zeros are cheaper to project than whatever they hold). The projection then reads the
    /// caller's input itself, without a copy by the caller's thread while the other workers
    /// wait: B = 64, I = H = 1024, T = 50, 2 threads (13 MB per call), 6 alternating rounds:
    /// GRU 0.988× the time (4 of 6 rounds faster).
    fn inputs_in_place(&self, rows: &Range<usize>, s0: usize, n: usize) -> Option<&[f32]> {
        let batch = self.input.batch;
        let in_order = self.direction == Direction::Forward
            && *rows == (0..batch)
            && (!self.source_layout.batch_first || batch == 1);
        let all_active = rows.clone().all(|b| s0 + n <= self.input.valid_len(b));
        (in_order && all_active).then(|| {
            let (width, first) = (self.source_width, self.source_layout.row(s0, 0));
            &self.source[first * width..(first + n * rows.len()) * width]
        })
    }

    /// Fills `chunk` for steps `s0..s0 + n` of `rows`, in step order: whether each is active,
    /// room for their projection, and, unless `gather` is false (the inputs are used in place,
    /// [`Self::inputs_in_place`]), their inputs (zeros past a row's length). One projection
    /// then serves batch-first inputs, reverse directions and ragged lengths alike.
    ///
    /// The buffers are sized for the whole batch on their first use, however many rows the
    /// worker has now: the rows move between workers as they are rebalanced, and a worker
    /// handed more rows than it ever had would otherwise allocate in the middle of a call.
    fn fill_chunk(
        &self,
        chunk: &mut ChunkBuffers,
        rows: &Range<usize>,
        s0: usize,
        n: usize,
        gather: bool,
    ) {
        let width = self.source_width;
        let count = rows.len();
        let most_rows = n * self.input.batch;
        chunk.active.clear();
        chunk.active.reserve(most_rows);
        chunk.active.extend(
            (0..n * count)
                .map(|slot| s0 + slot / count < self.input.valid_len(rows.start + slot % count)),
        );
        if gather {
            // Each row written once: zero-filling the whole buffer first, then copying over
            // it, wrote every active row twice.
            chunk.gathered.clear();
            chunk.gathered.reserve(most_rows * width);
            for slot in 0..n * count {
                let (s, b) = (s0 + slot / count, rows.start + slot % count);
                if chunk.active[slot] {
                    let source_row = self.source_layout.row(self.time_of(s, b), b);
                    chunk
                        .gathered
                        .extend_from_slice(&self.source[source_row * width..][..width]);
                } else {
                    let len = chunk.gathered.len();
                    chunk.gathered.resize(len + width, 0.0);
                }
            }
        }
        let row_vectors = self.layer.gates() * self.layer.panels();
        if chunk.projection.len() < n * count * row_vectors {
            chunk.projection = SharedVectors::zeros(most_rows * row_vectors);
        }
    }
}

/// Steps per chunk of a sequence of `steps` steps, for a layer whose packed `W_ih` has
/// `input_vectors` vectors and whose projection takes `step_vectors` vectors per step (all
/// rows): as many as fit the chunk budget ([`CHUNK_VECTORS`], or [`LONG_CHUNK_VECTORS`] for a
/// `W_ih` larger than [`L2_VECTORS`]), at least one, at most the whole sequence.
fn chunk_steps(input_vectors: usize, step_vectors: usize, steps: usize) -> usize {
    let budget = if input_vectors > L2_VECTORS {
        LONG_CHUNK_VECTORS
    } else {
        CHUNK_VECTORS
    };
    (budget / step_vectors.max(1)).clamp(1, steps.max(1))
}

/// Writes a `[B, H]` state (zeros when absent) into padded `[B, Hp]` vectors.
fn load_state(
    dest: &mut [f32x8],
    source: Option<&[f32]>,
    batch: usize,
    hidden: usize,
    panels: usize,
) {
    let dest: &mut [f32] = wide::bytemuck::cast_slice_mut(dest);
    dest.fill(0.0);
    if let Some(source) = source {
        for b in 0..batch {
            dest[b * panels * LANES..][..hidden]
                .copy_from_slice(&source[b * hidden..(b + 1) * hidden]);
        }
    }
}

/// Copies padded `[B, Hp]` vectors back into a `[B, H]` state.
fn store_state(source: &mut [f32x8], dest: &mut [f32], hidden: usize, panels: usize) {
    let source: &[f32] = wide::bytemuck::cast_slice(source);
    for (b, row) in dest.chunks_exact_mut(hidden.max(1)).enumerate() {
        row.copy_from_slice(&source[b * panels * LANES..][..hidden]);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A model of two layers with smooth deterministic weights (and input biases only).
    #[cfg(feature = "rayon")]
    pub(crate) fn two_layer_model(
        cell: Cell,
        input: usize,
        hidden: usize,
        bidirectional: bool,
    ) -> Model {
        let wave = |n: usize, phase: f32| {
            (0..n)
                .map(|k| (k as f32 * 0.61 + phase).sin() * 0.3)
                .collect::<Vec<_>>()
        };
        let rows = cell.gate_count() * hidden;
        let inputs: &[usize] = if bidirectional {
            // The second layer reads both directions of the first.
            &[input, input, 2 * hidden, 2 * hidden]
        } else {
            &[input, hidden]
        };
        let weights = inputs
            .iter()
            .enumerate()
            .map(|(k, &inputs)| {
                let phase = k as f32;
                LayerWeights::new(
                    cell.kind(),
                    inputs,
                    hidden,
                    wave(rows * inputs, phase),
                    wave(rows * hidden, phase + 0.5),
                    Some(wave(rows, phase + 0.25)),
                    None,
                )
                .unwrap()
            })
            .collect();
        Model::new(cell, bidirectional, weights).unwrap()
    }

    #[test]
    fn chunks_are_longer_only_for_input_weights_beyond_the_budget() {
        // GRU, B = 64, I = H = 256: `W_ih` is 24 576 vectors, within 1 MiB; a step is 6144.
        assert_eq!(chunk_steps(256 * 3 * 32, 64 * 3 * 32, 100), 5);
        // Exactly at the budget still counts as small.
        assert_eq!(chunk_steps(L2_VECTORS, 64 * 3 * 32, 100), 5);
        // GRU, B = 64, I = H = 1024: one step per chunk at 1 MiB, five at 4 MiB.
        assert_eq!(chunk_steps(1024 * 3 * 128, 64 * 3 * 128, 50), 5);
        // A step larger than the budget still makes a chunk of one step.
        assert_eq!(chunk_steps(1, CHUNK_VECTORS + 1, 50), 1);
        // Never more steps than the sequence has, and one for an empty sequence.
        assert_eq!(chunk_steps(1, 8, 3), 3);
        assert_eq!(chunk_steps(1, 8, 0), 1);
    }

    #[test]
    fn rows_split_needs_rows_enough_and_weights_within_half_an_l3() {
        // GRU, I = H = 512: 6 MiB of packed weights. B = 64 on 2 threads splits by rows.
        let gru_512 = 2 * 512 * 3 * 64;
        assert!(splits_by_rows(2, 64, gru_512));
        // Exactly 16 MiB still splits by rows.
        assert!(splits_by_rows(2, 64, ROW_SPLIT_MAX_WEIGHT_VECTORS));
        // GRU, I = H = 1024: 24 MiB, by panels.
        assert!(!splits_by_rows(2, 64, 2 * 1024 * 3 * 128));
        // Weights from L3 need 16 rows per worker, up to 4 MiB 8, within L2 4.
        let (gru_128, gru_256) = (2 * 128 * 3 * 16, 2 * 256 * 3 * 32);
        assert!(splits_by_rows(2, 32, gru_512) && !splits_by_rows(2, 31, gru_512));
        assert!(splits_by_rows(2, 16, gru_256) && !splits_by_rows(2, 15, gru_256));
        assert!(splits_by_rows(2, 32, 4 * L2_VECTORS + 1));
        assert!(!splits_by_rows(2, 31, 4 * L2_VECTORS + 1));
        assert!(splits_by_rows(2, 16, 4 * L2_VECTORS));
        assert!(splits_by_rows(2, 8, gru_128) && splits_by_rows(2, 8, L2_VECTORS));
        // Fewer than four rows per worker: by rows only while the weights stay in one core's
        // L2, and only with more rows than workers. One worker: never by rows.
        assert!(splits_by_rows(2, 3, gru_128) && splits_by_rows(2, 3, L2_VECTORS));
        assert!(!splits_by_rows(2, 3, L2_VECTORS + 1));
        assert!(!splits_by_rows(2, 2, gru_128));
        // Row pairs that do not share out evenly (3 among 2 workers): by rows only for
        // layers of a quarter of that size.
        let gru_96 = 2 * 96 * 3 * 12;
        assert!(!splits_by_rows(2, 5, gru_128) && !splits_by_rows(2, 6, gru_128));
        assert!(splits_by_rows(2, 5, gru_96) && splits_by_rows(2, 5, L2_VECTORS / 4));
        assert!(splits_by_rows(2, 7, gru_128) && splits_by_rows(3, 5, gru_128));
        assert!(!splits_by_rows(1, 64, 1));
    }

    #[test]
    #[cfg(feature = "rayon")]
    fn the_split_is_carried_from_call_to_call() {
        let weights = LayerWeights::new(
            gru_core::CellKind::Gru,
            3,
            16,
            vec![0.1; 3 * 16 * 3],
            vec![0.05; 3 * 16 * 16],
            None,
            None,
        )
        .unwrap();
        let model = Model::single_layer(Cell::Gru(GruVariant::ResetAfter), weights).unwrap();
        let mut gru = SimdModel::with_threads(&model, 2).unwrap();
        // Every call on the team, even if it has parked in between (a slow run).
        gru.set_alone_below_flops(0);
        gru.set_alone_below_step_flops(0);
        let call = |gru: &mut SimdModel, t: usize, b: usize| {
            let x = vec![0.5; t * b * 3];
            gru.forward(&SequenceInput::new(&x, t, b)).unwrap();
        };
        // B = 1, split by panels: the steps that time the next rebalance add up over calls.
        call(&mut gru, 3, 1);
        call(&mut gru, 7, 1);
        let [alone, team] = &gru.workspace.splits[0];
        assert_eq!(team.panels.as_ref().unwrap().steps, 10);
        assert!(alone.panels.is_none(), "no call ran alone");
        // B = 8, split by rows: the last split is kept for the next call of that batch size.
        call(&mut gru, 3, 8);
        let (rows, balance) = gru.workspace.splits[0][1].rows.as_ref().unwrap();
        assert_eq!(*rows, 8);
        assert_eq!(balance.part(0).start, 0);
        assert_eq!(balance.part(1).end, 8);
    }

    /// Steps the first layer direction has run on the calling thread alone, all calls
    /// together: counted by its split for one worker, which only those calls use.
    #[cfg(feature = "rayon")]
    fn steps_alone(model: &SimdModel) -> usize {
        model
            .workspace
            .splits
            .first()
            .and_then(|[alone, _]| alone.panels.as_ref())
            .map_or(0, |split| split.steps)
    }

    #[test]
    #[cfg(feature = "rayon")]
    fn small_calls_alone_after_the_workers_park_keep_their_results() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let input = 6;
        for cell in [
            Cell::Gru(GruVariant::ResetAfter),
            Cell::Gru(GruVariant::ResetBefore),
            Cell::Lstm,
        ] {
            let model = two_layer_model(cell, input, 20, true);
            let mut one = SimdModel::new(&model).unwrap();
            let mut two = SimdModel::with_threads(&model, 2).unwrap();
            two.alone_below_step_flops = 0;
            for call in 0..6 {
                let after_a_pause = call % 2 == 0;
                if after_a_pause {
                    let start = Instant::now();
                    while two.workers.awake() {
                        assert!(start.elapsed().as_secs() < 60, "the workers never parked");
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                let (t, b) = (5, 3);
                let x: Vec<f32> = (0..t * b * input)
                    .map(|k| (k as f32 + call as f32).sin())
                    .collect();
                let lengths = [5, 2, 4];
                let input = SequenceInput::new(&x, t, b).lengths(&lengths);
                let want = one.forward(&input).unwrap();
                if !after_a_pause {
                    // As if the last call had begun just now, however slow this run is (under
                    // valgrind a call takes longer than the workers idle before they park).
                    two.last_call = Some(Instant::now() + std::time::Duration::from_secs(60));
                }
                let steps_alone_before = steps_alone(&two);
                let got = two.forward(&input).unwrap();
                assert_eq!(
                    bits(&got.output),
                    bits(&want.output),
                    "{cell:?}, call {call}"
                );
                assert_eq!(bits(&got.h_n), bits(&want.h_n), "{cell:?}, call {call}");
                assert_eq!(got.c_n.map(|c| bits(&c)), want.c_n.map(|c| bits(&c)));
                // The call after a pause ran alone, the next on both workers.
                let ran_alone = steps_alone(&two) == steps_alone_before + t;
                assert_eq!(ran_alone, after_a_pause, "call {call}");
            }
        }
    }

    #[test]
    #[cfg(feature = "rayon")]
    fn calls_of_tiny_steps_run_alone_with_the_same_results() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let input = 6;
        for cell in [Cell::Gru(GruVariant::ResetAfter), Cell::Lstm] {
            // One step of a layer at B = 2: 2·G·20·(6 or 20 + 20)·2 FLOPs, at most 12 800.
            let model = two_layer_model(cell, input, 20, false);
            let mut one = SimdModel::new(&model).unwrap();
            let mut two = SimdModel::with_threads(&model, 2).unwrap();
            assert!(two.tiny_steps(2, StepSplit::RowsOrPanels));
            // A sequence of 3 rows of this small layer splits by rows, whose workers meet once
            // per chunk: never tiny. A stream of 3 is (2·G·20·40·3 ≤ 19 200 FLOPs), and one of
            // 40 not (at least 192 000).
            assert!(!two.tiny_steps(3, StepSplit::RowsOrPanels));
            assert!(two.tiny_steps(3, StepSplit::Panels) && !two.tiny_steps(40, StepSplit::Panels));
            let (t, b) = (7, 2);
            let x: Vec<f32> = (0..t * b * input).map(|k| (k as f32).sin()).collect();
            let input = SequenceInput::new(&x, t, b);
            let want = one.forward(&input).unwrap();
            for (alone_below, workers) in [(ALONE_BELOW_STEP_FLOPS, 1), (0, 2)] {
                two.set_alone_below_step_flops(alone_below);
                // As if the last call had begun just now: no call here is after a pause.
                two.last_call = Some(Instant::now() + std::time::Duration::from_secs(60));
                let steps_alone_before = steps_alone(&two);
                let got = two.forward(&input).unwrap();
                assert_eq!(bits(&got.output), bits(&want.output), "{cell:?}");
                assert_eq!(bits(&got.h_n), bits(&want.h_n), "{cell:?}");
                let ran_alone = steps_alone(&two) == steps_alone_before + t;
                assert_eq!(ran_alone, workers == 1, "{cell:?}");
            }
        }
    }
}
