//! Data-parallel training over a kissing-spheres system.
//!
//! A step takes `gradient_accumulation_steps` batches. Every non-empty row
//! of those batches is one unit of work; the spheres' workers compute each
//! unit's gradient into a slot of its own. The slots are then summed
//! element by element in unit order, the sum split into chunks that the
//! workers share, and the optimizer updates the same chunks. Nothing in
//! that order depends on which worker ran what or on how many workers
//! there are, so parameters are bit-identical run after run and for every
//! thread count.

use super::batch::{Batch, BatchIterator};
use super::model::{GradientModel, ModelWorker, Sequence};
use super::ops::multiversion;
use super::optim::{apply_update, clip_scale, LrSchedule, OptimizerKind, ScheduleKind, UpdateParams};
use crate::error::{invalid, Error, Result};
use crate::spheres::{hierarchy_levels, Shape, SphereOptions, SphereSystem, WorkerProbe, MAX_THREADS};
use parking_lot::{Mutex, RwLock};
use std::cell::UnsafeCell;
use std::fmt::Write as _;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parameters per reduction/update chunk: large enough to amortise a
/// queue operation, small enough to spread over the workers.
const CHUNK: usize = 1 << 14;
/// Default memory the per-micro-batch gradient buffers may take together.
pub const DEFAULT_GRADIENT_MEMORY: usize = 1 << 30;

/// Training hyper-parameters, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingConfig {
    /// Peak learning rate.
    pub learning_rate: f32,
    /// Update rule.
    pub optimizer: OptimizerKind,
    /// Decay after warm-up.
    pub schedule: ScheduleKind,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Floor of the decays.
    pub min_lr: f32,
    /// Factor of the step decay.
    pub lr_decay_factor: f32,
    /// Interval of the step decay.
    pub lr_decay_steps: u64,
    /// Weight decay (matrices and embeddings only for the transformer).
    pub weight_decay: f32,
    /// Global-norm clipping threshold; 0 = off.
    pub gradient_clip: f32,
    /// Batches per optimizer step.
    pub accumulation_steps: usize,
    /// Stop after this many optimizer steps; 0 = no limit.
    pub max_steps: u64,
    /// Planned epochs, which sets the length of linear and cosine decay
    /// when `max_steps` is 0.
    pub num_epochs: u64,
    /// Memory for the per-micro-batch gradient buffers. A step whose
    /// micro-batches need more is computed in rounds (same result, less
    /// parallel); at least one buffer per worker is always allocated.
    pub gradient_memory_bytes: usize,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            learning_rate: 1e-3,
            optimizer: OptimizerKind::AdamW,
            schedule: ScheduleKind::Constant,
            warmup_steps: 0,
            min_lr: 0.0,
            lr_decay_factor: 0.1,
            lr_decay_steps: 1000,
            weight_decay: 0.0,
            gradient_clip: 1.0,
            accumulation_steps: 1,
            max_steps: 0,
            num_epochs: 0,
            gradient_memory_bytes: DEFAULT_GRADIENT_MEMORY,
        }
    }
}

impl TrainingConfig {
    /// The schedule for a data set of `steps_per_epoch` steps per epoch.
    pub fn schedule(&self, steps_per_epoch: u64) -> LrSchedule {
        let total = if self.max_steps > 0 { self.max_steps } else { self.num_epochs.saturating_mul(steps_per_epoch) };
        LrSchedule {
            base_lr: self.learning_rate,
            min_lr: self.min_lr,
            warmup_steps: self.warmup_steps,
            kind: self.schedule,
            total_steps: total,
            decay_factor: self.lr_decay_factor,
            decay_steps: self.lr_decay_steps,
        }
    }

    /// Checks the values that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        if self.accumulation_steps == 0 {
            return Err(invalid!("gradient_accumulation_steps must be at least 1"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid!("weight_decay must be finite and >= 0, got {}", self.weight_decay));
        }
        if !(self.gradient_clip.is_finite() && self.gradient_clip >= 0.0) {
            return Err(invalid!("gradient_clip must be finite and >= 0 (0 = off), got {}", self.gradient_clip));
        }
        // The length is max_steps, or num_epochs times the steps of an
        // epoch (at least 1): zero only when both are 0.
        self.schedule(1).validate()
    }
}

/// Optimizer state that travels with the parameters (and checkpoints).
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// Optimizer steps taken.
    pub step: u64,
    /// First moment (Adam) or momentum (SGD).
    pub m: Vec<f32>,
    /// Second moment (Adam); empty for SGD.
    pub v: Vec<f32>,
}

impl OptimizerState {
    /// Zeroed state for `n` parameters.
    pub fn new(kind: OptimizerKind, n: usize) -> Self {
        OptimizerState {
            step: 0,
            m: vec![0.0; n],
            v: if kind.state_vectors() == 2 { vec![0.0; n] } else { Vec::new() },
        }
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Steps taken so far (this one included).
    pub step: u64,
    /// Mean loss of the step's batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Valid tokens in the step.
    pub tokens: u64,
}

/// What one epoch did.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// Mean of the batches' mean losses.
    pub mean_loss: f64,
    /// Batches trained on.
    pub batches: usize,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Valid tokens trained on.
    pub tokens: u64,
    /// Global gradient norm (before clipping) of the last step.
    pub grad_norm: f64,
    /// Wall time of the epoch.
    pub elapsed: Duration,
}

/// Counters of one worker, since the trainer was created.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerStats {
    /// Micro-batches (batch rows) this worker computed.
    pub micro_batches: u64,
    /// Valid tokens in them.
    pub tokens: u64,
    /// Sum of their per-token losses.
    pub loss_sum: f64,
    /// Time spent computing them.
    pub busy: Duration,
}

impl WorkerStats {
    /// Mean per-token loss over everything this worker computed (0 if none).
    pub fn mean_loss(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.loss_sum / self.tokens as f64
        }
    }
}

/// A float buffer that the caller and the workers share under the
/// trainer's phase discipline: in a compute phase the parameters are only
/// read and each unit writes only its own slot; in a reduce or update
/// phase each chunk item writes only its own range; between phases only
/// the caller (holding `&mut ThreadedTrainer`) touches anything.
/// `SphereSystem::wait` returning ends a phase and orders its writes
/// before whatever the caller does next.
struct PhasedBuffer(UnsafeCell<Vec<f32>>);

// SAFETY: access follows the phase discipline above: no range is written
// while anything else reads or writes it.
unsafe impl Sync for PhasedBuffer {}

impl PhasedBuffer {
    fn new(v: Vec<f32>) -> Self {
        PhasedBuffer(UnsafeCell::new(v))
    }

    /// Length of the buffer. Reads only the `Vec` header, which changes
    /// only between phases (in [`PhasedBuffer::whole`]).
    fn len(&self) -> usize {
        // SAFETY: no `&mut Vec` exists while a phase runs; the element
        // data, which items may be writing, is not touched.
        unsafe { (*self.0.get()).len() }
    }

    /// Raw start of the elements of `range`, bounds-checked; no reference
    /// to the `Vec` or to its elements is created, so views that other
    /// items hold of other ranges stay valid.
    fn range_ptr(&self, range: &Range<usize>) -> *mut f32 {
        assert!(range.start <= range.end && range.end <= self.len(), "range {range:?} outside {}", self.len());
        // SAFETY: as in `len`, only the header is read.
        let base = unsafe { (*self.0.get()).as_ptr() }.cast_mut();
        // SAFETY: `range.start <= len`, so the offset stays in (or one past) the allocation.
        unsafe { base.add(range.start) }
    }

    /// # Safety
    /// No mutable view overlapping `range` may exist for the returned lifetime.
    unsafe fn read(&self, range: Range<usize>) -> &[f32] {
        let p = self.range_ptr(&range);
        // SAFETY: in bounds (checked); nothing writes the range (caller).
        unsafe { std::slice::from_raw_parts(p, range.len()) }
    }

    /// # Safety
    /// No other view overlapping `range` may exist for the returned lifetime.
    #[allow(clippy::mut_from_ref)]
    unsafe fn write(&self, range: Range<usize>) -> &mut [f32] {
        let p = self.range_ptr(&range);
        // SAFETY: in bounds (checked); exclusive for the lifetime (caller).
        unsafe { std::slice::from_raw_parts_mut(p, range.len()) }
    }

    /// # Safety
    /// No phase may be running: no other view of the buffer exists.
    #[allow(clippy::mut_from_ref)]
    unsafe fn whole(&self) -> &mut Vec<f32> {
        // SAFETY: guaranteed by the caller.
        unsafe { &mut *self.0.get() }
    }
}

/// One unit of a compute phase: row `row` of batch `batch`.
#[derive(Debug, Clone, Copy)]
struct Unit {
    batch: usize,
    row: usize,
    /// Positions up to the last valid one.
    len: usize,
    /// Valid positions.
    valid: usize,
    /// Loss weight of each valid position.
    weight: f32,
}

/// What the workers are asked to do right now.
enum Phase {
    Idle,
    /// Units `first..first + n` of `units`: gradients (or only losses).
    Compute {
        batches: Arc<Vec<Batch>>,
        units: Arc<Vec<Unit>>,
        first: usize,
        backward: bool,
    },
    /// Sum `units` slots into the step gradient; `fresh` starts it at 0,
    /// `last` also measures each chunk's squared norm.
    Reduce {
        units: usize,
        fresh: bool,
        last: bool,
    },
    /// Apply the optimizer to every chunk.
    Update {
        params: UpdateParams,
    },
}

/// A range of the parameters that one reduce or update item handles,
/// with its pieces and whether each takes weight decay.
type Chunk = (Range<usize>, Vec<(Range<usize>, bool)>);

/// A worker's private state. Two locks, so that reading the counters never
/// waits for a micro-batch.
struct WorkerState {
    model: Mutex<Box<dyn ModelWorker>>,
    stats: Mutex<WorkerStats>,
}

/// Everything the work function needs.
struct Shared {
    model: Arc<dyn GradientModel>,
    n: usize,
    params: PhasedBuffer,
    grads: PhasedBuffer,
    m: PhasedBuffer,
    v: PhasedBuffer,
    slots: Vec<PhasedBuffer>,
    chunks: Vec<Chunk>,
    /// Per chunk: squared norm of the step gradient (f64 bits).
    chunk_sumsq: Vec<AtomicU64>,
    /// Per unit of the current compute phase: its loss (f64 bits).
    unit_loss: Vec<AtomicU64>,
    phase: RwLock<Phase>,
    workers: Vec<WorkerState>,
    probe: WorkerProbe,
    /// Items of the current phase that completed.
    completed: AtomicUsize,
    /// First error of the current phase.
    error: Mutex<Option<Error>>,
    /// Global gradient norm of the last step (f64 bits).
    grad_norm: AtomicU64,
}

impl Shared {
    fn run_item(&self, item: usize) {
        let phase = self.phase.read();
        // Caught here rather than by the sphere system, to keep the message.
        let run = catch_unwind(AssertUnwindSafe(|| match &*phase {
            Phase::Idle => Err(Error::WrongState("work arrived with no phase running".into())),
            Phase::Compute { batches, units, first, backward } => {
                self.compute(&batches[..], &units[first + item], item, *backward)
            }
            Phase::Reduce { units, fresh, last } => {
                self.reduce(item, *units, *fresh, *last);
                Ok(())
            }
            Phase::Update { params } => {
                self.update(item, params);
                Ok(())
            }
        }));
        let result = run.unwrap_or_else(|panic| {
            Err(Error::System(format!("panic in a training work item: {}", panic_text(&*panic))))
        });
        match result {
            Ok(()) => {
                self.completed.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                self.error.lock().get_or_insert(e);
            }
        }
    }

    /// Computes `unit` as item `item` of its round: gradient into slot
    /// `item`, loss into `unit_loss[item]`.
    fn compute(&self, batches: &[Batch], unit: &Unit, item: usize, backward: bool) -> Result<()> {
        let worker = self.probe.current().ok_or_else(|| Error::WrongState("unit computed outside a worker".into()))?;
        let mut model = self.workers[worker].model.lock();
        let b = &batches[unit.batch];
        let row = unit.row * b.seq_len..unit.row * b.seq_len + unit.len;
        let seq = Sequence {
            inputs: &b.input_ids[row.clone()],
            targets: &b.target_ids[row.clone()],
            mask: &b.attention_mask[row],
            weight: unit.weight,
        };
        let t0 = Instant::now();
        // SAFETY: compute phase: parameters are only read, and slot `item`
        // belongs to this unit alone.
        let loss = unsafe {
            let params = self.params.read(0..self.n);
            if backward {
                model.forward_backward(params, &seq, self.slots[item].write(0..self.n))?
            } else {
                model.loss(params, &seq)?
            }
        };
        drop(model);
        if !loss.is_finite() {
            return Err(Error::System(format!(
                "the loss of batch {} row {} is not finite ({loss})",
                unit.batch, unit.row
            )));
        }
        self.unit_loss[item].store(loss.to_bits(), Ordering::Relaxed);
        let mut s = self.workers[worker].stats.lock();
        s.micro_batches += 1;
        s.tokens += unit.valid as u64;
        s.loss_sum += loss / unit.weight as f64;
        s.busy += t0.elapsed();
        Ok(())
    }

    fn reduce(&self, chunk: usize, units: usize, fresh: bool, last: bool) {
        let range = self.chunks[chunk].0.clone();
        // SAFETY: reduce phase: this chunk's range of the step gradient is
        // written by this item alone; slots are only read.
        let acc = unsafe { self.grads.write(range.clone()) };
        if fresh {
            acc.fill(0.0);
        }
        for slot in &self.slots[..units] {
            // SAFETY: as above.
            add_assign(acc, unsafe { slot.read(range.clone()) });
        }
        if last {
            self.chunk_sumsq[chunk].store(sum_of_squares(acc).to_bits(), Ordering::Relaxed);
        }
    }

    fn update(&self, chunk: usize, p: &UpdateParams) {
        for (range, decay) in &self.chunks[chunk].1 {
            // SAFETY: update phase: this chunk's ranges of the parameters
            // and optimizer state are touched by this item alone.
            unsafe {
                let v = if self.v.len() == 0 { &mut [][..] } else { self.v.write(range.clone()) };
                apply_update(
                    p,
                    self.params.write(range.clone()),
                    self.grads.read(range.clone()),
                    self.m.write(range.clone()),
                    v,
                    *decay,
                );
            }
        }
    }
}

/// Data-parallel trainer: a kissing-spheres system whose workers compute
/// the gradients, reduce them and apply the optimizer.
pub struct ThreadedTrainer {
    system: SphereSystem,
    shared: Arc<Shared>,
    config: TrainingConfig,
    schedule: LrSchedule,
    data: BatchIterator,
    epochs: u64,
}

/// Read-only access to a trainer's counters from any thread, also while
/// an epoch runs.
#[derive(Clone)]
pub struct TrainerMonitor {
    shared: Arc<Shared>,
}

impl TrainerMonitor {
    /// Worker threads.
    pub fn num_workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Global gradient norm, before clipping, of the last step.
    pub fn gradient_norm(&self) -> f64 {
        f64::from_bits(self.shared.grad_norm.load(Ordering::Relaxed))
    }

    /// Whether the calling thread is one of the trainer's workers (that
    /// is, inside a model's forward or backward pass), where training,
    /// evaluation and parameter access would wait on themselves.
    pub fn on_worker_thread(&self) -> bool {
        self.shared.probe.current().is_some()
    }

    /// Counters of worker `worker` (0-based).
    pub fn worker_stats(&self, worker: usize) -> Result<WorkerStats> {
        let w = self
            .shared
            .workers
            .get(worker)
            .ok_or_else(|| invalid!("worker id {worker} out of range 0..{}", self.shared.workers.len()))?;
        Ok(*w.stats.lock())
    }
}

impl ThreadedTrainer {
    /// Builds the trainer: a sphere tree with `threads` workers (0 = the
    /// CPUs this process may use), each with its activation buffers, and
    /// one gradient slot per unit a round computes. Fails on a bad
    /// configuration, an empty data set, tokens outside the model's
    /// vocabulary or rows longer than the model's context.
    pub fn new(
        model: Arc<dyn GradientModel>,
        config: &TrainingConfig,
        data: BatchIterator,
        threads: usize,
    ) -> Result<Self> {
        config.validate()?;
        if threads > MAX_THREADS {
            return Err(invalid!("num_threads must be at most {MAX_THREADS}, got {threads}"));
        }
        if let Some(max) = model.max_seq_len() {
            if data.seq_len() > max {
                return Err(invalid!("sequence length {} exceeds the model's max_seq_len {max}", data.seq_len()));
            }
        }
        check_tokens(model.as_ref(), &data)?;
        let steps_per_epoch = data.num_batches().div_ceil(config.accumulation_steps) as u64;
        let schedule = config.schedule(steps_per_epoch);
        schedule.validate()?;

        let threads = if threads == 0 { crate::sys::usable_cpus() } else { threads };
        let system = SphereSystem::new(&SphereOptions {
            shape: Shape::Levels(hierarchy_levels(threads).max(2)),
            threads,
            ..Default::default()
        })?;
        let n = model.num_params();
        let slots = slot_count(n, data.batch_size().saturating_mul(config.accumulation_steps), threads, config)?;
        let workers = (0..system.worker_threads())
            .map(|_| {
                Ok(WorkerState {
                    model: Mutex::new(model.new_worker(data.seq_len())?),
                    stats: Mutex::new(WorkerStats::default()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            chunks: chunk_plan(n, &decay_ranges(model.as_ref())),
            chunk_sumsq: (0..n.div_ceil(CHUNK)).map(|_| AtomicU64::new(0)).collect(),
            unit_loss: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            params: PhasedBuffer::new(Vec::new()),
            grads: PhasedBuffer::new(zeroed(n)?),
            m: PhasedBuffer::new(Vec::new()),
            v: PhasedBuffer::new(Vec::new()),
            slots: (0..slots).map(|_| Ok(PhasedBuffer::new(zeroed(n)?))).collect::<Result<_>>()?,
            phase: RwLock::new(Phase::Idle),
            workers,
            probe: system.worker_probe(),
            completed: AtomicUsize::new(0),
            error: Mutex::new(None),
            grad_norm: AtomicU64::new(0),
            model,
            n,
        });
        let work = Arc::clone(&shared);
        system.set_work_fn(Some(Arc::new(move |item, _sphere| work.run_item(item as usize))))?;
        system.start()?;
        Ok(ThreadedTrainer { system, shared, config: config.clone(), schedule, data, epochs: 0 })
    }

    /// Worker threads.
    pub fn num_workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Global gradient norm, before clipping, of the last step.
    pub fn gradient_norm(&self) -> f64 {
        self.monitor().gradient_norm()
    }

    /// A handle for reading the counters from other threads.
    pub fn monitor(&self) -> TrainerMonitor {
        TrainerMonitor { shared: Arc::clone(&self.shared) }
    }

    /// Epochs completed.
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    /// The learning-rate schedule in use.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// The training data.
    pub fn data(&self) -> &BatchIterator {
        &self.data
    }

    /// Counters of worker `worker` (0-based).
    pub fn worker_stats(&self, worker: usize) -> Result<WorkerStats> {
        self.monitor().worker_stats(worker)
    }

    /// A table of the workers' counters and the sphere system's totals.
    pub fn stats_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "worker  micro-batches      tokens   mean loss     busy");
        for w in 0..self.num_workers() {
            let st = *self.shared.workers[w].stats.lock();
            let _ = writeln!(
                s,
                "{w:>6}  {:>13}  {:>10}  {:>10.4}  {:>7.2}s",
                st.micro_batches,
                st.tokens,
                st.mean_loss(),
                st.busy.as_secs_f64()
            );
        }
        let sum = self.system.summary();
        let _ = writeln!(
            s,
            "spheres {} on {} levels, {} items run, {} stolen; last gradient norm {:.4}",
            sum.spheres,
            sum.levels,
            sum.items_processed,
            sum.items_stolen,
            self.gradient_norm()
        );
        s
    }

    /// Trains one pass over the data.
    pub fn train_epoch(&mut self, params: &mut Vec<f32>, state: &mut OptimizerState) -> Result<EpochReport> {
        self.train_epoch_with(params, state, &mut |_| {})
    }

    /// Trains one pass over the data, calling `on_step` after each step.
    /// `params` and `state` must belong to this trainer's model; they are
    /// moved in for the epoch (no copy) and handed back even on failure.
    pub fn train_epoch_with(
        &mut self,
        params: &mut Vec<f32>,
        state: &mut OptimizerState,
        on_step: &mut dyn FnMut(&StepReport),
    ) -> Result<EpochReport> {
        let n = self.shared.n;
        let v_len = if self.config.optimizer.state_vectors() == 2 { n } else { 0 };
        if params.len() != n || state.m.len() != n || state.v.len() != v_len {
            return Err(invalid!(
                "parameters ({}) or optimizer state ({}, {}) do not match the model's {n} parameters",
                params.len(),
                state.m.len(),
                state.v.len()
            ));
        }
        if self.config.max_steps > 0 && state.step >= self.config.max_steps {
            return Err(Error::WrongState(format!("max_steps ({}) reached", self.config.max_steps)));
        }
        self.swap_state(params, state);
        // A panic (from `on_step`, say) must still hand the buffers back.
        let result = catch_unwind(AssertUnwindSafe(|| self.run_epoch(state, on_step)));
        self.swap_state(params, state);
        let result = result.unwrap_or_else(|panic| resume_unwind(panic));
        if result.is_ok() {
            self.epochs += 1;
        }
        result
    }

    /// Mean loss over every batch of `data`, without training.
    pub fn evaluate(&mut self, params: &mut Vec<f32>, data: &BatchIterator) -> Result<f64> {
        if params.len() != self.shared.n {
            return Err(invalid!("{} parameters given, the model has {}", params.len(), self.shared.n));
        }
        if data.seq_len() > self.data.seq_len() {
            return Err(invalid!(
                "evaluation rows of {} tokens exceed the trainer's {}",
                data.seq_len(),
                self.data.seq_len()
            ));
        }
        check_tokens(self.shared.model.as_ref(), data)?;
        // SAFETY: no phase runs while the caller holds `&mut self`.
        std::mem::swap(unsafe { self.shared.params.whole() }, params);
        let result = catch_unwind(AssertUnwindSafe(|| self.evaluate_inner(data)));
        // SAFETY: as above; the phases of evaluate_inner have ended.
        std::mem::swap(unsafe { self.shared.params.whole() }, params);
        result.unwrap_or_else(|panic| resume_unwind(panic))
    }

    fn evaluate_inner(&mut self, data: &BatchIterator) -> Result<f64> {
        let per_round = self.shared.unit_loss.len();
        let mut total = 0.0;
        let mut count = 0usize;
        for index in 0..data.num_batches() {
            let batch = data.batch_at(index)?;
            let units = Arc::new(plan_units(std::slice::from_ref(&batch)));
            let batches = Arc::new(vec![batch]);
            let mut sum = 0.0;
            for first in (0..units.len()).step_by(per_round.max(1)) {
                let len = per_round.min(units.len() - first);
                self.run_phase(
                    Phase::Compute { batches: Arc::clone(&batches), units: Arc::clone(&units), first, backward: false },
                    len,
                )?;
                self.add_unit_losses(&mut sum, len);
            }
            total += sum;
            count += 1;
        }
        Ok(total / count.max(1) as f64)
    }

    fn swap_state(&mut self, params: &mut Vec<f32>, state: &mut OptimizerState) {
        let sh = &self.shared;
        // SAFETY: no phase runs while the caller holds `&mut self`.
        unsafe {
            std::mem::swap(sh.params.whole(), params);
            std::mem::swap(sh.m.whole(), &mut state.m);
            std::mem::swap(sh.v.whole(), &mut state.v);
        }
    }

    /// Adds the losses of the first `len` units of the last compute phase
    /// to `sum` one by one, so that the total does not depend on how the
    /// units were cut into rounds.
    fn add_unit_losses(&self, sum: &mut f64, len: usize) {
        for l in &self.shared.unit_loss[..len] {
            *sum += f64::from_bits(l.load(Ordering::Relaxed));
        }
    }

    /// Runs one phase of `items` items and waits for all of them.
    fn run_phase(&self, phase: Phase, items: usize) -> Result<()> {
        if items == 0 {
            return Ok(());
        }
        *self.shared.error.lock() = None;
        *self.shared.phase.write() = phase;
        self.shared.completed.store(0, Ordering::SeqCst);
        let outcome = self.system.distribute_range(0, items as u64).and_then(|()| self.system.wait(None).map(|_| ()));
        *self.shared.phase.write() = Phase::Idle;
        outcome?;
        if let Some(e) = self.shared.error.lock().take() {
            return Err(e);
        }
        let done = self.shared.completed.load(Ordering::SeqCst);
        if done != items {
            return Err(Error::System(format!("{} of {items} work items did not complete", items - done)));
        }
        Ok(())
    }

    fn run_epoch(&mut self, state: &mut OptimizerState, on_step: &mut dyn FnMut(&StepReport)) -> Result<EpochReport> {
        let t0 = Instant::now();
        self.data.reset();
        let mut batch_losses = 0.0;
        let mut batches_done = 0usize;
        let mut steps = 0;
        let mut tokens = 0u64;
        loop {
            if self.config.max_steps > 0 && state.step >= self.config.max_steps {
                break;
            }
            let batches: Vec<Batch> = self.data.by_ref().take(self.config.accumulation_steps).collect();
            if batches.is_empty() {
                break;
            }
            let k = batches.len();
            let report = self.step(batches, state)?;
            batch_losses += report.loss * k as f64;
            batches_done += k;
            tokens += report.tokens;
            steps += 1;
            on_step(&report);
        }
        if batches_done == 0 {
            return Err(Error::WrongState("the epoch had no batch to train on".into()));
        }
        Ok(EpochReport {
            mean_loss: batch_losses / batches_done as f64,
            batches: batches_done,
            steps,
            tokens,
            grad_norm: self.gradient_norm(),
            elapsed: t0.elapsed(),
        })
    }

    /// One optimizer step over `batches`.
    fn step(&mut self, batches: Vec<Batch>, state: &mut OptimizerState) -> Result<StepReport> {
        let units = Arc::new(plan_units(&batches));
        let tokens: u64 = batches.iter().map(|b| b.num_valid_tokens as u64).sum();
        let batches = Arc::new(batches);
        let slots = self.shared.slots.len();
        let mut loss = 0.0;
        let rounds = units.len().div_ceil(slots).max(1);
        for r in 0..rounds {
            let first = r * slots;
            let len = slots.min(units.len().saturating_sub(first));
            self.run_phase(
                Phase::Compute { batches: Arc::clone(&batches), units: Arc::clone(&units), first, backward: true },
                len,
            )?;
            self.add_unit_losses(&mut loss, len);
            let chunks = self.shared.chunks.len();
            self.run_phase(Phase::Reduce { units: len, fresh: r == 0, last: r + 1 == rounds }, chunks)?;
        }
        let sumsq: f64 = self.shared.chunk_sumsq.iter().map(|c| f64::from_bits(c.load(Ordering::Relaxed))).sum();
        let norm = sumsq.sqrt();
        self.shared.grad_norm.store(norm.to_bits(), Ordering::Relaxed);
        if !norm.is_finite() {
            return Err(Error::System(format!("the gradient norm of step {} is not finite", state.step + 1)));
        }
        let lr = self.schedule.lr(state.step);
        let params = UpdateParams {
            kind: self.config.optimizer,
            lr,
            weight_decay: self.config.weight_decay,
            grad_scale: clip_scale(norm, self.config.gradient_clip),
            step: state.step + 1,
        };
        self.run_phase(Phase::Update { params }, self.shared.chunks.len())?;
        state.step += 1;
        // Unit weights are 1/(valid tokens · k): the weighted sum is the
        // mean over batches of each batch's mean loss.
        Ok(StepReport { step: state.step, loss, lr, grad_norm: norm, tokens })
    }
}

impl Drop for ThreadedTrainer {
    fn drop(&mut self) {
        // Workers are idle between calls; stop joins them. A system that
        // is already stopped has nothing to join.
        let _ = self.system.stop();
    }
}

multiversion! {
    /// `acc[i] += src[i]`: one rounding per element, in any vector width.
    fn add_assign(acc: &mut [f32], src: &[f32]) {
        for (a, &s) in acc.iter_mut().zip(src) {
            *a += s;
        }
    }
}

/// Partial sums of [`sum_of_squares`]: a fixed count, so the result does
/// not depend on the vector width.
const SUMSQ_LANES: usize = 8;

multiversion! {
    /// Σ x² in f64, over 8 interleaved partial sums added in a fixed order.
    fn sum_of_squares(x: &[f32]) -> f64 {
        let mut lanes = [0.0f64; SUMSQ_LANES];
        let mut blocks = x.chunks_exact(SUMSQ_LANES);
        for b in &mut blocks {
            for (l, &v) in lanes.iter_mut().zip(b) {
                *l += v as f64 * v as f64;
            }
        }
        for (l, &v) in lanes.iter_mut().zip(blocks.remainder()) {
            *l += v as f64 * v as f64;
        }
        lanes.iter().sum()
    }
}

/// Gradient buffers for a step of `units` micro-batches of a model of `n`
/// parameters: one per micro-batch, within `gradient_memory_bytes` but at
/// least one per worker, and never more than the process may allocate
/// beside the parameters, gradient and optimizer state.
fn slot_count(n: usize, units: usize, threads: usize, config: &TrainingConfig) -> Result<usize> {
    let slot_bytes = n.saturating_mul(4).max(1);
    let limit = usize::try_from(crate::sys::memory_limit_bytes()).unwrap_or(usize::MAX);
    let fixed = slot_bytes.saturating_mul(4);
    let fit = limit.saturating_sub(fixed) / slot_bytes;
    if fit == 0 {
        return Err(Error::System(format!(
            "a model of {n} parameters needs at least {} bytes to train; this process may use {limit}",
            slot_bytes.saturating_mul(5)
        )));
    }
    Ok(units.min((config.gradient_memory_bytes / slot_bytes).max(threads)).min(fit).max(1))
}

/// Every token of `data` within the model's vocabulary, if it has one.
fn check_tokens(model: &dyn GradientModel, data: &BatchIterator) -> Result<()> {
    let Some(vocab) = model.vocab_size() else { return Ok(()) };
    match data.tokens().iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
        Some((i, t)) => Err(invalid!("token {t} at position {i} is outside the vocabulary of {vocab}")),
        None => Ok(()),
    }
}

/// `n` zeros, or an error instead of an abort when memory runs out.
fn zeroed(n: usize) -> Result<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::System(format!("out of memory for {n} floats")))?;
    v.resize(n, 0.0);
    Ok(v)
}

/// The text of a panic payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// The non-empty rows of `batches`, in order, with their loss weights.
fn plan_units(batches: &[Batch]) -> Vec<Unit> {
    let k = batches.len() as f64;
    let mut units = Vec::new();
    for (bi, b) in batches.iter().enumerate() {
        if b.num_valid_tokens == 0 {
            continue;
        }
        let weight = (1.0 / (b.num_valid_tokens as f64 * k)) as f32;
        for row in 0..b.batch_size {
            let mask = &b.attention_mask[row * b.seq_len..(row + 1) * b.seq_len];
            let valid = mask.iter().filter(|&&m| m != 0.0).count();
            if valid == 0 {
                continue;
            }
            let len = mask.iter().rposition(|&m| m != 0.0).map_or(0, |p| p + 1);
            units.push(Unit { batch: bi, row, len, valid, weight });
        }
    }
    units
}

/// The model's parameter ranges with their weight-decay flags; ranges the
/// tensors do not cover decay.
fn decay_ranges(model: &dyn GradientModel) -> Vec<(Range<usize>, bool)> {
    let mut out: Vec<(Range<usize>, bool)> = Vec::new();
    let mut covered = 0;
    let mut tensors = model.tensors();
    tensors.sort_by_key(|t| t.offset);
    for t in tensors {
        if t.offset > covered {
            out.push((covered..t.offset, true));
        }
        let end = (t.offset + t.len).min(model.num_params());
        if end > t.offset.max(covered) {
            out.push((t.offset.max(covered)..end, t.decay));
            covered = end;
        }
    }
    if covered < model.num_params() {
        out.push((covered..model.num_params(), true));
    }
    out
}

/// Cuts `0..n` into chunks of [`CHUNK`] with the decay ranges inside each.
fn chunk_plan(n: usize, decay: &[(Range<usize>, bool)]) -> Vec<Chunk> {
    (0..n)
        .step_by(CHUNK)
        .map(|a| {
            let b = (a + CHUNK).min(n);
            let parts = decay
                .iter()
                .filter_map(|(r, d)| {
                    let (s, e) = (r.start.max(a), r.end.min(b));
                    (s < e).then_some((s..e, *d))
                })
                .collect();
            (a..b, parts)
        })
        .collect()
}
