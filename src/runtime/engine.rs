//! The engine: tensors, SRAM, validation, and the two ways to run a
//! schedule.

use super::kernels::KernelImpl;
use super::lanes::{Interval, Pipeline, RunRecord, SramPtr};
use super::memory::{AlignedFloats, TensorStore};
use super::plan::{Layout, Planner, Step, MAX_COMPUTE_LANES, RUNAHEAD_TILES};
use super::schedule::Op;
use super::step::run_step;
use super::trace::{self, CallTimes};
use crate::error::{invalid, Error, Result};
use std::time::Instant;

/// Largest SRAM: schedule addresses are 32-bit.
pub const MAX_SRAM_BYTES: usize = 1 << 32;

/// How an engine is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// SRAM size in bytes (default 256 KiB; 4096 ..= 4 GiB).
    pub sram_bytes: usize,
    /// Record per-op start/end for [`Engine::write_trace`].
    pub trace: bool,
    /// Pipelined mode: a DMA thread and compute threads instead of the
    /// calling thread.
    pub threaded: bool,
    /// Compute threads in pipelined mode (default 1, at most 8).
    pub compute_threads: usize,
    /// Tile kernel; `None` picks the fastest this CPU supports.
    pub kernel: Option<KernelImpl>,
    /// Pin each pipeline thread to its own CPU (physical cores first) when
    /// the process may use enough CPUs. Without it the OS may put both
    /// lanes on one CPU, where they take turns instead of overlapping.
    pub pin_threads: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            sram_bytes: 256 * 1024,
            trace: false,
            threaded: false,
            compute_threads: 1,
            kernel: None,
            pin_threads: true,
        }
    }
}

/// Counters and timings, accumulated over every `execute` since creation
/// or the last [`Engine::reset_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// LOAD operations run.
    pub loads: u64,
    /// EXEC operations run.
    pub executes: u64,
    /// STORE operations run.
    pub stores: u64,
    /// Time spent running LOADs and STOREs.
    pub dma_busy_ns: u64,
    /// Time spent running EXECs (summed over compute threads).
    pub compute_busy_ns: u64,
    /// Time during which DMA work and compute work ran at the same time
    /// (always 0 in sequential mode).
    pub overlap_ns: u64,
    /// Wall time of the `execute` calls, validation included.
    pub total_ns: u64,
    /// Times a DMA op had to wait for a compute op.
    pub dma_stalls: u64,
    /// Times an EXEC had to wait for another lane.
    pub compute_stalls: u64,
}

/// A tiled matmul "virtual accelerator": simulated DRAM tensors, a
/// simulated SRAM scratchpad, and a schedule executor.
pub struct Engine {
    config: EngineConfig,
    kernel: KernelImpl,
    tensors: TensorStore,
    sram: AlignedFloats,
    planner: Planner,
    /// Tiles of the SRAM buffer when it is larger than the configured SRAM
    /// for renaming (pipelined mode), else 0.
    physical_tiles: usize,
    // Declared after `sram` is irrelevant for drop order; `Drop` below
    // stops the lanes before any field is freed.
    pipeline: Option<Pipeline>,
    stats: EngineStats,
    epoch: Instant,
    record: RunRecord,
    /// Ops and intervals of the last traced `execute`.
    trace_ops: Vec<Op>,
    trace_intervals: Vec<Interval>,
    trace_call: CallTimes,
    /// Phases of the last `execute`.
    call: CallTimes,
    /// The ops `planner.plan` was made for, when `plan_valid`.
    planned_ops: Vec<Op>,
    plan_valid: bool,
    /// Scratch for the overlap computation.
    dma_busy: Vec<(u64, u64)>,
    compute_busy: Vec<(u64, u64)>,
    fault: Option<u32>,
}

impl Engine {
    /// Creates an engine; in pipelined mode its threads start here.
    pub fn new(config: EngineConfig) -> Result<Self> {
        if config.sram_bytes < super::TILE_BYTES || config.sram_bytes > MAX_SRAM_BYTES {
            return Err(invalid!(
                "sram_bytes must be between {} and {MAX_SRAM_BYTES}, got {}",
                super::TILE_BYTES,
                config.sram_bytes
            ));
        }
        if config.compute_threads == 0 || config.compute_threads > MAX_COMPUTE_LANES {
            return Err(invalid!(
                "compute_threads must be between 1 and {MAX_COMPUTE_LANES}, got {}",
                config.compute_threads
            ));
        }
        let kernel = match config.kernel {
            None => KernelImpl::best(),
            Some(k) if k.is_available() => k,
            Some(k) => return Err(invalid!("kernel {} is not available on this CPU", k.name())),
        };
        // A pipelined engine renames tiles (see plan.rs): it needs spare
        // tiles beyond the SRAM the schedule addresses, plus a zero tile.
        let physical_tiles =
            if config.threaded { config.sram_bytes.div_ceil(super::TILE_BYTES) + RUNAHEAD_TILES + 1 } else { 0 };
        let floats = (config.sram_bytes / 4).max(physical_tiles * super::TILE_FLOATS);
        let mut sram = AlignedFloats::zeroed(floats)?;
        let epoch = Instant::now();
        let pipeline = if config.threaded {
            let threads = 1 + config.compute_threads;
            let cpus = if config.pin_threads && threads <= crate::sys::usable_cpus() {
                crate::sys::CpuTopology::detect().pinning_order().into_iter().take(threads).collect()
            } else {
                Vec::new()
            };
            Some(Pipeline::start(config.compute_threads, SramPtr(sram.as_mut_ptr()), kernel, epoch, &cpus)?)
        } else {
            None
        };
        Ok(Self {
            config,
            kernel,
            tensors: TensorStore::default(),
            sram,
            planner: Planner::default(),
            physical_tiles,
            pipeline,
            stats: EngineStats::default(),
            epoch,
            record: RunRecord::default(),
            trace_ops: Vec::new(),
            trace_intervals: Vec::new(),
            trace_call: CallTimes::default(),
            call: CallTimes::default(),
            planned_ops: Vec::new(),
            plan_valid: false,
            dma_busy: Vec::new(),
            compute_busy: Vec::new(),
            fault: None,
        })
    }

    /// The configuration the engine was created with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The tile kernel in use.
    pub fn kernel(&self) -> KernelImpl {
        self.kernel
    }

    /// SRAM size in bytes.
    pub fn sram_bytes(&self) -> usize {
        self.config.sram_bytes
    }

    /// Registers a zero-filled `rows × cols` tensor (stored padded to
    /// multiples of 32); ids are 0, 1, 2, … in registration order.
    pub fn register_tensor(&mut self, name: &str, rows: usize, cols: usize) -> Result<u32> {
        self.tensors.register(name, rows, cols)
    }

    /// Id of a registered tensor.
    pub fn tensor_id(&self, name: &str) -> Option<u32> {
        self.tensors.id(name)
    }

    /// Registered (unpadded) shape of tensor `id`.
    pub fn tensor_shape(&self, id: u32) -> Option<(usize, usize)> {
        self.tensors.get(id).map(|t| (t.rows, t.cols))
    }

    /// Number of registered tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Copies row-major `data` of the registered shape into the tensor.
    pub fn set_tensor(&mut self, name: &str, data: &[f32], rows: usize, cols: usize) -> Result<()> {
        self.tensors.set(name, data, rows, cols)
    }

    /// Copies the tensor (registered shape, no padding) into `out`.
    pub fn get_tensor(&self, name: &str, out: &mut [f32], rows: usize, cols: usize) -> Result<()> {
        self.tensors.get_into(name, out, rows, cols)
    }

    /// The stats so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Zeroes the stats.
    pub fn reset_stats(&mut self) {
        self.stats = EngineStats::default();
    }

    /// Makes the op at schedule index `index` fail while it runs, to
    /// exercise the error path of both modes; `None` clears it.
    #[doc(hidden)]
    pub fn inject_fault(&mut self, index: Option<u32>) {
        self.fault = index;
        if let Some(p) = &self.pipeline {
            p.inject_fault(index);
        }
    }

    /// Validates and runs `ops`. An invalid schedule returns an error that
    /// names the op and the reason and changes no tensor. SRAM reads as
    /// zero wherever the schedule reads it before writing it.
    pub fn execute(&mut self, ops: &[Op]) -> Result<()> {
        if self.pipeline.as_ref().is_some_and(Pipeline::is_broken) {
            return Err(Error::System("a pipeline thread died earlier; this engine cannot run again".into()));
        }
        let t0 = Instant::now();
        let start = self.now();
        // Running the same schedule again (the usual loop) reuses its plan:
        // tensors never move or change shape, so it is still valid.
        if !(self.plan_valid && self.planned_ops == ops) {
            self.plan_valid = false;
            let compute_lanes = if self.pipeline.is_some() { self.config.compute_threads } else { 0 };
            let layout = Layout { compute_lanes, physical_tiles: self.physical_tiles };
            self.planner.plan(ops, self.config.sram_bytes, &mut self.tensors, layout)?;
            self.planned_ops.clear();
            self.planned_ops.extend_from_slice(ops);
            self.plan_valid = true;
        }
        let planned = self.now();
        let plan = &self.planner.plan;
        let sram = self.sram.as_mut_slice();
        for &(off, len) in &plan.zero {
            sram[off..off + len].fill(0.0);
        }
        let base = self.sram.as_mut_ptr();
        let result = match &mut self.pipeline {
            Some(p) => {
                let r = p.run(plan, &mut self.record);
                if p.is_broken() {
                    // Surviving lanes may still read the plan: keep its
                    // memory alive for good rather than free it under them.
                    std::mem::forget(std::mem::take(&mut self.planner.plan.ops));
                    self.plan_valid = false;
                }
                r
            }
            None => {
                let rec = &mut self.record;
                rec.dispatched = planned;
                rec.intervals.clear();
                rec.dma_stalls = 0;
                rec.compute_stalls = 0;
                let mut r = Ok(());
                let mut now = self.epoch.elapsed().as_nanos() as u64;
                for op in &plan.ops {
                    if Some(op.index) == self.fault {
                        r = Err(Error::System(format!("injected fault at op {}", op.index)));
                        break;
                    }
                    // SAFETY: the plan validated every range against this
                    // SRAM and the tensors, which `&mut self` keeps alive
                    // and unshared.
                    unsafe { run_step(&op.step, base, self.kernel) };
                    let end = self.epoch.elapsed().as_nanos() as u64;
                    let thread = u8::from(matches!(op.step, Step::Exec { .. }));
                    rec.intervals.push(Interval { start: now, end, index: op.index, thread });
                    now = end;
                }
                r
            }
        };
        self.call = CallTimes { start, planned, dispatched: self.record.dispatched, end: self.now() };
        self.account(ops, t0);
        result
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Adds the last run's counts and timings to the stats and keeps its
    /// trace.
    fn account(&mut self, ops: &[Op], t0: Instant) {
        let s = &mut self.stats;
        let (dma, compute) = (&mut self.dma_busy, &mut self.compute_busy);
        dma.clear();
        compute.clear();
        for iv in &self.record.intervals {
            let d = iv.end.saturating_sub(iv.start);
            match ops[iv.index as usize] {
                Op::Load(_) => s.loads += 1,
                Op::Exec(_) => s.executes += 1,
                Op::Store(_) => s.stores += 1,
            }
            if iv.thread == 0 && !matches!(ops[iv.index as usize], Op::Exec(_)) {
                s.dma_busy_ns += d;
                dma.push((iv.start, iv.end));
            } else {
                s.compute_busy_ns += d;
                compute.push((iv.start, iv.end));
            }
        }
        if self.pipeline.is_some() {
            s.overlap_ns += trace::overlap_ns(dma, compute);
        }
        s.dma_stalls += self.record.dma_stalls;
        s.compute_stalls += self.record.compute_stalls;
        s.total_ns += t0.elapsed().as_nanos() as u64;
        if self.config.trace {
            self.trace_ops.clear();
            self.trace_ops.extend_from_slice(ops);
            self.trace_intervals.clear();
            self.trace_intervals.extend_from_slice(&self.record.intervals);
            self.trace_call = self.call;
        }
    }

    /// The trace of the last `execute` as Chrome trace-event JSON (one
    /// lane per thread; opens in Perfetto or chrome://tracing). Errors when
    /// the engine was created without `trace`.
    pub fn trace_json(&self) -> Result<String> {
        if !self.config.trace {
            return Err(Error::WrongState("tracing is off: create the engine with trace = true".into()));
        }
        Ok(trace::chrome_json(&self.trace_ops, &self.trace_intervals, self.pipeline.is_some(), &self.trace_call))
    }

    /// Writes [`Engine::trace_json`] to `path`.
    pub fn write_trace(&self, path: &std::path::Path) -> Result<()> {
        let json = self.trace_json()?;
        std::fs::write(path, json).map_err(|e| Error::System(format!("cannot write {}: {e}", path.display())))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The lanes hold raw pointers into the SRAM: stop them first.
        self.pipeline = None;
    }
}
