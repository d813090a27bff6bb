//! `echobeats.h`: the Echobeats 3-stream, 12-step cognitive task pool.
//!
//! Return values: ids are > 0 (0 = error); functions returning `int` give
//! `ECHOBEATS_OK` (0) or `ECHOBEATS_ERROR` (-1) unless documented otherwise;
//! `cllm_last_error()` explains every error. Enum arguments use the values
//! of the `ECHOBEATS_STREAM_*`, `_PHASE_*`, `_MODE_*`, `_LAYER_*` constants.
//! Timeouts are milliseconds; negative waits without limit. Deadlines are
//! absolute `CLOCK_MONOTONIC` nanoseconds (as `std::chrono::steady_clock`
//! on Linux; `echobeats_now_ns()` reads that clock); 0 = none. A manager may
//! be used from any number of threads.
//!
//! Task context ownership: once `echobeats_submit` has a non-NULL manager,
//! task and work function, `destroy_context` (if not NULL) is called
//! exactly once with `context` — after the task ran, or when it is dropped
//! without running (expired, cancelled, failed dependency, or the submit
//! itself failed). Work functions return 0 for success; anything else
//! marks the task failed. They run on pool threads and must not unwind.

use super::{deref, guard, timeout};
use crate::echobeats::{
    self as eb, Backpressure, CognitivePhase, CognitiveStream, EchobeatsPool, LogLevel, PoolConfig, PoolLayer,
    TaskContext, TaskSpec, TaskStatus,
};
use crate::error::{invalid, Result};
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_void};
use std::time::{Duration, Instant};

/// Success.
pub const ECHOBEATS_OK: c_int = 0;
/// Bad argument or wrong state; see `cllm_last_error()`.
pub const ECHOBEATS_ERROR: c_int = -1;
/// A timed wait ran out (barriers).
pub const ECHOBEATS_TIMEOUT: c_int = 1;

/// Stream: Cerebral (steps 1, 4, 7, 10).
pub const ECHOBEATS_STREAM_CEREBRAL: c_int = 0;
/// Stream: Somatic (steps 2, 5, 8, 11).
pub const ECHOBEATS_STREAM_SOMATIC: c_int = 1;
/// Stream: Autonomic (steps 3, 6, 9, 12).
pub const ECHOBEATS_STREAM_AUTONOMIC: c_int = 2;
/// Phase: Perception.
pub const ECHOBEATS_PHASE_PERCEPTION: c_int = 0;
/// Phase: Action.
pub const ECHOBEATS_PHASE_ACTION: c_int = 1;
/// Phase: Simulation.
pub const ECHOBEATS_PHASE_SIMULATION: c_int = 2;
/// Phase: Integration.
pub const ECHOBEATS_PHASE_INTEGRATION: c_int = 3;
/// Mode: Expressive.
pub const ECHOBEATS_MODE_EXPRESSIVE: c_int = 0;
/// Mode: Reflective.
pub const ECHOBEATS_MODE_REFLECTIVE: c_int = 1;
/// Layer: data-loader pool.
pub const ECHOBEATS_LAYER_DATA_LOADER: c_int = 0;
/// Layer: main thread (runs on the stream's workers).
pub const ECHOBEATS_LAYER_MAIN_THREAD: c_int = 1;
/// Layer: inter-op (the stream's workers).
pub const ECHOBEATS_LAYER_INTER_OP: c_int = 2;
/// Layer: intra-op (the stream's workers, with the intra-op pool).
pub const ECHOBEATS_LAYER_INTRA_OP: c_int = 3;
/// Layer: the stream's ordered lane ("CUDA stream").
pub const ECHOBEATS_LAYER_CUDA_STREAM: c_int = 4;

/// Task status: ran and succeeded.
pub const ECHOBEATS_TASK_COMPLETED: c_int = 0;
/// Task status: ran and failed, or a dependency did not succeed.
pub const ECHOBEATS_TASK_FAILED: c_int = 1;
/// Task status: not started before its deadline.
pub const ECHOBEATS_TASK_EXPIRED: c_int = 2;
/// Task status: cancelled by shutdown.
pub const ECHOBEATS_TASK_CANCELLED: c_int = 3;
/// Task status: the wait timed out; the task is still queued or running.
pub const ECHOBEATS_TASK_TIMEOUT: c_int = 4;
/// Task status: no such task (or its result is no longer retained).
pub const ECHOBEATS_TASK_UNKNOWN: c_int = 5;

/// Ordered lanes run on CPU threads.
pub const ECHOBEATS_LANE_CPU: c_int = 0;
/// Ordered lanes run on CUDA streams.
pub const ECHOBEATS_LANE_CUDA: c_int = 1;

/// Log levels passed to `EchobeatsLogFn`.
pub const ECHOBEATS_LOG_DEBUG: c_int = 0;
/// Log level: information.
pub const ECHOBEATS_LOG_INFO: c_int = 1;
/// Log level: warning.
pub const ECHOBEATS_LOG_WARNING: c_int = 2;

/// A task's work: return 0 on success.
pub type EchobeatsTaskFn = Option<unsafe extern "C" fn(context: *mut c_void) -> c_int>;
/// Releases a task's context.
pub type EchobeatsDestroyFn = Option<unsafe extern "C" fn(context: *mut c_void)>;
/// Receives log messages (the pool prints nothing itself).
pub type EchobeatsLogFn = Option<unsafe extern "C" fn(level: c_int, message: *const c_char, user_data: *mut c_void)>;

/// Pool configuration; start from `echobeats_config_default()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EchobeatsConfig {
    /// Workers per stream (0 = auto from the usable CPUs).
    pub threads_per_stream: i32,
    /// Data-loader workers (0 = auto).
    pub data_loader_workers: i32,
    /// Inter-op threads in total (used when threads_per_stream is 0).
    pub inter_op_threads: i32,
    /// Intra-op pool threads (0 = auto).
    pub intra_op_threads: i32,
    /// Ordered lanes, 1..3 (0 = auto).
    pub cuda_streams: i32,
    /// Nonzero: pin stream workers per NUMA node at start.
    pub enable_numa_affinity: u8,
    /// Nonzero: try real-time priority at start.
    pub enable_realtime_priority: u8,
    /// Nonzero: shutdown runs queued tasks; zero: it cancels them.
    pub drain_on_shutdown: u8,
    /// Nonzero: submit to a full stream fails at once; zero: it waits up
    /// to `submit_timeout_ms` for room.
    pub reject_when_full: u8,
    /// `echobeats_run_cycle` paces to this (0 = no pacing).
    pub target_cycle_time_ms: f32,
    /// Queued + pending tasks per stream at most.
    pub max_queue_depth: i32,
    /// How long a submit to a full stream waits (negative: no limit).
    pub submit_timeout_ms: i64,
    /// Finished results kept for waiting.
    pub result_retention: i64,
    /// Log sink, or NULL for silence.
    pub log: EchobeatsLogFn,
    /// Passed to `log`.
    pub log_user_data: *mut c_void,
}

/// A task to submit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EchobeatsTask {
    /// The work (required).
    pub work: EchobeatsTaskFn,
    /// Passed to `work` and `destroy_context`.
    pub context: *mut c_void,
    /// Releases `context` (see the ownership rule above), or NULL.
    pub destroy_context: EchobeatsDestroyFn,
    /// `ECHOBEATS_STREAM_*`.
    pub stream: c_int,
    /// `ECHOBEATS_PHASE_*`.
    pub phase: c_int,
    /// 1..12.
    pub step: i32,
    /// Higher first; finite.
    pub priority: f32,
    /// `ECHOBEATS_LAYER_*`.
    pub layer: c_int,
    /// Absolute CLOCK_MONOTONIC ns; 0 = none.
    pub deadline_ns: i64,
    /// Ids that must complete first (may be NULL when the count is 0).
    pub dependencies: *const u64,
    /// Number of dependencies.
    pub dependency_count: usize,
}

/// What a finished task reports.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct EchobeatsTaskResult {
    /// Task id.
    pub id: u64,
    /// `ECHOBEATS_TASK_*`.
    pub status: c_int,
    /// The task's stream.
    pub stream: c_int,
    /// The task's step.
    pub step: i32,
    /// The task's phase.
    pub phase: c_int,
    /// Running time, µs.
    pub execution_us: u64,
    /// Time from submission (or release of its dependencies) to start, µs.
    pub queue_wait_us: u64,
}

/// One stream's counters.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct EchobeatsStreamMetrics {
    /// Tasks accepted.
    pub tasks_submitted: u64,
    /// Tasks that succeeded.
    pub tasks_completed: u64,
    /// Tasks that failed, expired or were cancelled.
    pub tasks_failed: u64,
    /// Of the failed: expired.
    pub tasks_expired: u64,
    /// Of the failed: cancelled.
    pub tasks_cancelled: u64,
    /// Tasks that started running.
    pub tasks_run: u64,
    /// Sum of execution times, µs.
    pub total_execution_us: u64,
    /// Longest execution, µs.
    pub max_execution_us: u64,
    /// Shortest execution, µs (UINT64_MAX until a task ran).
    pub min_execution_us: u64,
    /// Sum of queue waits, µs.
    pub queue_wait_us: u64,
    /// Times a lock was found taken.
    pub contention_events: u64,
    /// Tasks queued or pending now.
    pub current_queue_depth: u32,
    /// Highest queue depth seen.
    pub max_queue_depth: u32,
}

/// The pool's counters.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct EchobeatsMetrics {
    /// By `ECHOBEATS_STREAM_*`.
    pub streams: [EchobeatsStreamMetrics; 3],
    /// Full 12-step cycles.
    pub cycles_completed: u64,
    /// Sum of cycle times, µs.
    pub total_cycle_us: u64,
    /// Successful stream synchronisations.
    pub sync_events: u64,
    /// Time spent in them, µs.
    pub sync_wait_us: u64,
}

/// The recommended thread configuration for this machine.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct EchobeatsRecommendedConfig {
    /// Inter-op threads (3 × per-stream workers).
    pub inter_op_threads: i32,
    /// Intra-op threads.
    pub intra_op_threads: i32,
    /// Data-loader workers.
    pub data_loader_workers: i32,
    /// Ordered lanes.
    pub cuda_streams: i32,
    /// Usable CPUs the numbers are scaled to.
    pub usable_cpus: i32,
}

/// What a shutdown did.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct EchobeatsShutdownReport {
    /// Tasks that ran (or failed/expired) during the shutdown.
    pub drained: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Threads joined.
    pub threads_joined: u64,
    /// 1 for the first shutdown call, 0 for later ones.
    pub first_call: u8,
    /// 0 only when called from one of the pool's own tasks (nothing waited).
    pub complete: u8,
}

/// A pool (opaque).
pub struct EchobeatsManager {
    pool: EchobeatsPool,
    /// The log sink given at creation, for `echobeats_get_config`.
    log: EchobeatsLogFn,
    log_user_data: *mut c_void,
}

fn manager<'a>(m: *const EchobeatsManager) -> Result<&'a EchobeatsPool> {
    // SAFETY: every exported function documents that a non-NULL manager
    // comes from echobeats_create and is not freed.
    Ok(&unsafe { deref(m, "manager") }?.pool)
}

fn count(v: i32, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| invalid!("{what} must not be negative, got {v}"))
}

fn stream_from(v: c_int) -> Result<CognitiveStream> {
    CognitiveStream::from_index(i64::from(v)).ok_or_else(|| invalid!("stream must be 0..2, got {v}"))
}

fn status_code(s: TaskStatus) -> c_int {
    s as u8 as c_int
}

/// The C context of a task: calls `destroy` exactly once when dropped,
/// whether or not the work ran.
struct CTask {
    work: unsafe extern "C" fn(*mut c_void) -> c_int,
    context: *mut c_void,
    destroy: EchobeatsDestroyFn,
}

// SAFETY: the C caller hands `context` to the pool to be used from a pool
// thread (documented in the header); the library never touches it itself.
unsafe impl Send for CTask {}

impl CTask {
    fn run(&self) -> std::result::Result<(), String> {
        // SAFETY: `work` is the caller's function for this context.
        match unsafe { (self.work)(self.context) } {
            0 => Ok(()),
            rc => Err(format!("work function returned {rc}")),
        }
    }
}

impl Drop for CTask {
    fn drop(&mut self) {
        if let Some(destroy) = self.destroy {
            // SAFETY: the caller's destructor for its context, called once.
            unsafe { destroy(self.context) };
        }
    }
}

/// CLOCK_MONOTONIC now, in ns.
fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec behind a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec.saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec)
}

/// An absolute CLOCK_MONOTONIC deadline as an `Instant` (0 = none).
fn deadline_from(ns: i64) -> Option<Instant> {
    if ns == 0 {
        return None;
    }
    let now = Instant::now();
    let ahead = ns.saturating_sub(monotonic_ns());
    Some(if ahead >= 0 {
        now + Duration::from_nanos(ahead as u64)
    } else {
        now.checked_sub(Duration::from_nanos(ahead.unsigned_abs())).unwrap_or(now)
    })
}

/// Builds a core task from a C task; `ctask` owns the context from here on.
fn task_from(t: &EchobeatsTask, ctask: CTask) -> Result<TaskSpec> {
    let stream = stream_from(t.stream)?;
    let phase = CognitivePhase::from_index(i64::from(t.phase))
        .ok_or_else(|| invalid!("phase must be 0..3, got {}", t.phase))?;
    let layer =
        PoolLayer::from_index(i64::from(t.layer)).ok_or_else(|| invalid!("layer must be 0..4, got {}", t.layer))?;
    let dependencies = if t.dependency_count == 0 {
        Vec::new()
    } else if t.dependencies.is_null() {
        return Err(invalid!("dependencies is NULL but dependency_count is {}", t.dependency_count));
    } else if t.dependency_count > (isize::MAX as usize) / 8 {
        return Err(invalid!("dependency_count {} is too large", t.dependency_count));
    } else {
        // SAFETY: non-NULL and valid for dependency_count ids (header contract).
        unsafe { std::slice::from_raw_parts(t.dependencies, t.dependency_count) }.to_vec()
    };
    Ok(TaskSpec {
        work: Box::new(move |_: &TaskContext<'_>| ctask.run()),
        stream,
        phase,
        step: t.step,
        priority: t.priority,
        layer,
        deadline: deadline_from(t.deadline_ns),
        dependencies,
    })
}

/// The C form of a core configuration, with the log sink given at creation.
fn config_to_c(c: &PoolConfig, log: EchobeatsLogFn, log_user_data: *mut c_void) -> EchobeatsConfig {
    let (reject, wait) = match c.backpressure {
        Backpressure::Reject => (1, 0),
        Backpressure::Wait(w) => (0, i64::try_from(w.as_millis()).unwrap_or(-1)),
    };
    let n = |v: usize| v.min(i32::MAX as usize) as i32;
    EchobeatsConfig {
        threads_per_stream: n(c.threads_per_stream),
        data_loader_workers: n(c.data_loader_workers),
        inter_op_threads: n(c.inter_op_threads),
        intra_op_threads: n(c.intra_op_threads),
        cuda_streams: n(c.cuda_streams),
        enable_numa_affinity: u8::from(c.enable_numa_affinity),
        enable_realtime_priority: u8::from(c.enable_realtime_priority),
        drain_on_shutdown: u8::from(c.drain_on_shutdown),
        reject_when_full: reject,
        target_cycle_time_ms: c.target_cycle_time_ms,
        max_queue_depth: n(c.max_queue_depth),
        submit_timeout_ms: wait,
        result_retention: i64::try_from(c.result_retention).unwrap_or(i64::MAX),
        log,
        log_user_data,
    }
}

/// Fills `out` with the defaults: auto thread counts, 3 ordered lanes, no
/// NUMA pinning, 100 ms cycles, queues of 1000 (submit waits up to 1 s for
/// room), 65536 retained results, drain on shutdown, silent.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn echobeats_config_default(out: *mut EchobeatsConfig) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        if out.is_null() {
            return Err(invalid!("out is NULL"));
        }
        let c = config_to_c(&PoolConfig::default(), None, std::ptr::null_mut());
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out.write(c) };
        Ok(ECHOBEATS_OK)
    })
}

/// The C log sink with its user data.
struct CLog {
    f: unsafe extern "C" fn(c_int, *const c_char, *mut c_void),
    user_data: *mut c_void,
}

impl CLog {
    fn emit(&self, level: LogLevel, msg: &str) {
        let level = match level {
            LogLevel::Debug => ECHOBEATS_LOG_DEBUG,
            LogLevel::Info => ECHOBEATS_LOG_INFO,
            LogLevel::Warning => ECHOBEATS_LOG_WARNING,
        };
        let text = CString::new(msg.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the caller's log function with its user data.
        unsafe { (self.f)(level, text.as_ptr(), self.user_data) };
    }
}

// SAFETY: the caller registers a log function that may be called from pool
// threads with its user data (documented); the library only passes it on.
unsafe impl Send for CLog {}
// SAFETY: as above.
unsafe impl Sync for CLog {}

/// Creates a pool; NULL on a bad config (e.g. negative counts, NaN cycle
/// time) or when threads cannot be started.
///
/// # Safety
/// `config` must be NULL (the defaults) or point to a valid config.
#[no_mangle]
pub unsafe extern "C" fn echobeats_create(config: *const EchobeatsConfig) -> *mut EchobeatsManager {
    guard(std::ptr::null_mut(), || {
        let mut cfg = PoolConfig::default();
        let (mut log, mut log_user_data): (EchobeatsLogFn, *mut c_void) = (None, std::ptr::null_mut());
        // SAFETY: NULL or valid per the contract.
        if let Some(c) = unsafe { config.as_ref() } {
            (log, log_user_data) = (c.log, c.log_user_data);
            cfg.threads_per_stream = count(c.threads_per_stream, "threads_per_stream")?;
            cfg.data_loader_workers = count(c.data_loader_workers, "data_loader_workers")?;
            cfg.inter_op_threads = count(c.inter_op_threads, "inter_op_threads")?;
            cfg.intra_op_threads = count(c.intra_op_threads, "intra_op_threads")?;
            cfg.cuda_streams = count(c.cuda_streams, "cuda_streams")?;
            cfg.enable_numa_affinity = c.enable_numa_affinity != 0;
            cfg.enable_realtime_priority = c.enable_realtime_priority != 0;
            cfg.drain_on_shutdown = c.drain_on_shutdown != 0;
            cfg.target_cycle_time_ms = c.target_cycle_time_ms;
            cfg.max_queue_depth = count(c.max_queue_depth, "max_queue_depth")?;
            cfg.backpressure = if c.reject_when_full != 0 {
                Backpressure::Reject
            } else {
                Backpressure::Wait(timeout(c.submit_timeout_ms).unwrap_or(Duration::MAX))
            };
            cfg.result_retention = usize::try_from(c.result_retention)
                .map_err(|_| invalid!("result_retention must not be negative, got {}", c.result_retention))?;
            if let Some(f) = c.log {
                let sink = CLog { f, user_data: c.log_user_data };
                cfg.log = Some(std::sync::Arc::new(move |level: LogLevel, msg: &str| sink.emit(level, msg)));
            }
        }
        let pool = EchobeatsPool::new(cfg)?;
        Ok(Box::into_raw(Box::new(EchobeatsManager { pool, log, log_user_data })))
    })
}

/// Shuts the pool down (per `drain_on_shutdown`) and frees it. NULL is a
/// no-op. Must not be called from one of the pool's own tasks.
///
/// # Safety
/// `m` must be NULL or from `echobeats_create`, not yet freed, and unused
/// by other threads from now on.
#[no_mangle]
pub unsafe extern "C" fn echobeats_free(m: *mut EchobeatsManager) {
    if !m.is_null() {
        guard((), || {
            // SAFETY: created by Box::into_raw and handed back once.
            drop(unsafe { Box::from_raw(m) });
            Ok(())
        })
    }
}

/// Shuts the pool down without freeing it: afterwards submits fail, waits
/// still work. Idempotent. `out` may be NULL.
///
/// # Safety
/// `m` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn echobeats_shutdown(m: *mut EchobeatsManager, out: *mut EchobeatsShutdownReport) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        let r = manager(m)?.shutdown();
        if !out.is_null() {
            let v = EchobeatsShutdownReport {
                drained: r.drained,
                cancelled: r.cancelled,
                threads_joined: r.threads_joined as u64,
                first_call: u8::from(r.first_call),
                complete: u8::from(r.complete),
            };
            // SAFETY: non-NULL and writable per the contract.
            unsafe { out.write(v) };
        }
        Ok(ECHOBEATS_OK)
    })
}

/// Submits a task; returns its id (from 1) or 0 on error (NULL manager,
/// task or work function; stream, phase or layer out of range; step
/// outside 1..12; non-finite priority; unknown dependency; a full stream
/// after the configured wait; a shut-down pool).
///
/// # Safety
/// `m` NULL or live; `task` NULL or valid, its `dependencies` valid for
/// `dependency_count` ids.
#[no_mangle]
pub unsafe extern "C" fn echobeats_submit(m: *mut EchobeatsManager, task: *const EchobeatsTask) -> u64 {
    guard(0, || {
        let pool = manager(m)?;
        // SAFETY: NULL or valid per the contract.
        let t = unsafe { deref(task, "task") }?;
        let work = t.work.ok_or_else(|| invalid!("task.work is NULL"))?;
        // From here the context is owned: dropping `ctask` (on any error
        // below) runs destroy_context.
        let ctask = CTask { work, context: t.context, destroy: t.destroy_context };
        pool.submit(task_from(t, ctask)?)
    })
}

/// Submits `count` tasks, all or nothing: on success writes their ids
/// (consecutive, in order) to `ids_out` and returns `ECHOBEATS_OK`; on
/// error nothing was queued. A task may depend only on ids issued before
/// the batch. Every task's `destroy_context` follows the rule above once
/// the arguments pass the NULL checks (each task's work must be non-NULL).
///
/// # Safety
/// `m` NULL or live; `tasks` NULL or valid for `count` tasks; `ids_out`
/// NULL or writable for `count` ids.
#[no_mangle]
pub unsafe extern "C" fn echobeats_submit_batch(
    m: *mut EchobeatsManager,
    tasks: *const EchobeatsTask,
    count: usize,
    ids_out: *mut u64,
) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        let pool = manager(m)?;
        if count == 0 {
            return Ok(ECHOBEATS_OK);
        }
        if tasks.is_null() || ids_out.is_null() {
            return Err(invalid!("tasks and ids_out must not be NULL when count is {count}"));
        }
        if count > isize::MAX as usize / std::mem::size_of::<EchobeatsTask>() {
            return Err(invalid!("count {count} is too large"));
        }
        // SAFETY: non-NULL and valid for count tasks per the contract.
        let tasks = unsafe { std::slice::from_raw_parts(tasks, count) };
        if let Some(i) = tasks.iter().position(|t| t.work.is_none()) {
            return Err(invalid!("tasks[{i}].work is NULL"));
        }
        // Own every context first, so that any error below releases them all.
        let mut owned: Vec<(CTask, &EchobeatsTask)> = tasks
            .iter()
            .map(|t| (CTask { work: t.work.expect("checked"), context: t.context, destroy: t.destroy_context }, t))
            .collect();
        let specs = owned.drain(..).map(|(c, t)| task_from(t, c)).collect::<Result<Vec<_>>>()?;
        let ids = pool.submit_batch(specs)?;
        // SAFETY: writable for count ids per the contract; ids.len() == count.
        unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), ids_out, ids.len().min(count)) };
        Ok(ECHOBEATS_OK)
    })
}

/// Writes the configuration in effect (every auto value resolved) to `out`;
/// `log` and `log_user_data` are returned as given at creation.
///
/// # Safety
/// `m` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn echobeats_get_config(m: *const EchobeatsManager, out: *mut EchobeatsConfig) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        let mgr = {
            // SAFETY: NULL or live per the contract.
            unsafe { deref(m, "manager") }?
        };
        if out.is_null() {
            return Err(invalid!("out is NULL"));
        }
        let v = config_to_c(mgr.pool.config(), mgr.log, mgr.log_user_data);
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out.write(v) };
        Ok(ECHOBEATS_OK)
    })
}

/// Submits `work(context)` for `step` with stream, phase and layer from the
/// step tables; 0 on error (as `echobeats_submit`).
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_submit_for_step(
    m: *mut EchobeatsManager,
    work: EchobeatsTaskFn,
    context: *mut c_void,
    destroy_context: EchobeatsDestroyFn,
    step: i32,
    priority: f32,
) -> u64 {
    guard(0, || {
        let pool = manager(m)?;
        let work = work.ok_or_else(|| invalid!("work is NULL"))?;
        let ctask = CTask { work, context, destroy: destroy_context };
        pool.submit_for_step(Box::new(move |_: &TaskContext<'_>| ctask.run()), step, priority)
    })
}

/// Waits for task `id` up to `timeout_ms` (negative: no limit) and returns
/// its `ECHOBEATS_TASK_*` status: COMPLETED, FAILED, EXPIRED or CANCELLED
/// when it finished (and fills `out` if not NULL), TIMEOUT, or UNKNOWN at
/// once for an id never issued. Any number of waits from any threads.
/// `ECHOBEATS_ERROR` for a NULL manager.
///
/// # Safety
/// `m` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn echobeats_wait_task(
    m: *mut EchobeatsManager,
    id: u64,
    timeout_ms: i64,
    out: *mut EchobeatsTaskResult,
) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        let (status, result) = manager(m)?.wait_task(id, timeout(timeout_ms));
        if let (Some(r), false) = (result, out.is_null()) {
            let v = EchobeatsTaskResult {
                id: r.id,
                status: status_code(r.status),
                stream: r.stream as u8 as c_int,
                step: r.step,
                phase: r.phase as u8 as c_int,
                execution_us: r.execution_time.as_micros() as u64,
                queue_wait_us: r.queue_wait.as_micros() as u64,
            };
            // SAFETY: non-NULL and writable per the contract.
            unsafe { out.write(v) };
        }
        Ok(status_code(status))
    })
}

/// True when `stream` has nothing queued, pending or running within
/// `timeout_ms`; false on timeout or error.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_wait_stream(m: *mut EchobeatsManager, stream: c_int, timeout_ms: i64) -> bool {
    guard(false, || Ok(manager(m)?.wait_stream(stream_from(stream)?, timeout(timeout_ms))))
}

/// A quiescence barrier of the three streams: true when all were idle at
/// once within `timeout_ms`.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_synchronize(m: *mut EchobeatsManager, timeout_ms: i64) -> bool {
    guard(false, || Ok(manager(m)?.synchronize_streams(timeout(timeout_ms))))
}

/// Advances to the next step (synchronising when leaving 4, 8 and 12);
/// returns the new step, or -1 on error.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_advance_step(m: *mut EchobeatsManager) -> i32 {
    guard(-1, || Ok(manager(m)?.advance_step()))
}

/// Runs steps 1..12, paced to the target cycle time; returns the cycle's
/// µs (0 on error).
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_run_cycle(m: *mut EchobeatsManager) -> u64 {
    guard(0, || Ok(manager(m)?.run_cycle()))
}

/// The current step (1..12); -1 on error.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_current_step(m: *const EchobeatsManager) -> i32 {
    guard(-1, || Ok(manager(m)?.current_step()))
}

/// The current step's stream; -1 on error.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_current_stream(m: *const EchobeatsManager) -> c_int {
    guard(-1, || Ok(manager(m)?.current_stream() as u8 as c_int))
}

/// The current step's phase; -1 on error.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_current_phase(m: *const EchobeatsManager) -> c_int {
    guard(-1, || Ok(manager(m)?.current_phase() as u8 as c_int))
}

/// The current step's mode; -1 on error.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_current_mode(m: *const EchobeatsManager) -> c_int {
    guard(-1, || Ok(manager(m)?.current_mode() as u8 as c_int))
}

/// Whether `step` is 1..12.
#[no_mangle]
pub extern "C" fn echobeats_is_valid_step(step: i32) -> bool {
    eb::is_valid_step(step)
}

/// `step` wrapped into 1..12: ((step − 1) mod 12) + 1 with a non-negative
/// modulo, for any int (0 → 12, −1 → 11, 13 → 1). The step-table
/// functions below wrap their argument this way.
#[no_mangle]
pub extern "C" fn echobeats_wrap_step(step: i32) -> i32 {
    eb::wrap_step(step)
}

/// The stream of a step (wrapped).
#[no_mangle]
pub extern "C" fn echobeats_stream_for_step(step: i32) -> c_int {
    eb::stream_for_step(step) as u8 as c_int
}

/// The phase of a step (wrapped).
#[no_mangle]
pub extern "C" fn echobeats_phase_for_step(step: i32) -> c_int {
    eb::phase_for_step(step) as u8 as c_int
}

/// The mode of a step (wrapped).
#[no_mangle]
pub extern "C" fn echobeats_mode_for_step(step: i32) -> c_int {
    eb::mode_for_step(step) as u8 as c_int
}

/// The triad (0..3) of a step (wrapped).
#[no_mangle]
pub extern "C" fn echobeats_triad_for_step(step: i32) -> i32 {
    eb::triad_for_step(step)
}

/// The thread-pool layer of a step (wrapped).
#[no_mangle]
pub extern "C" fn echobeats_layer_for_step(step: i32) -> c_int {
    eb::layer_for_step(step) as u8 as c_int
}

/// Writes the three vertices of tetrahedral face `index` (0..3) to `out`;
/// `ECHOBEATS_ERROR` (and {0,0,0}) for another index or a NULL `out`.
///
/// # Safety
/// `out` NULL or writable for 3 ints.
#[no_mangle]
pub unsafe extern "C" fn echobeats_triadic_face(index: i32, out: *mut i32) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        if out.is_null() {
            return Err(invalid!("out is NULL"));
        }
        let face = eb::triadic_face(index);
        // SAFETY: non-NULL and writable for 3 ints per the contract.
        unsafe { std::ptr::copy_nonoverlapping(face.unwrap_or([0; 3]).as_ptr(), out, 3) };
        face.map(|_| ECHOBEATS_OK).ok_or_else(|| invalid!("face index must be 0..3, got {index}"))
    })
}

/// The edge (0..5) joining vertices `a` and `b` of the tetrahedron, in any
/// order; -1 when they are not two distinct vertices 0..3.
#[no_mangle]
pub extern "C" fn echobeats_dyadic_edge(a: i32, b: i32) -> i32 {
    eb::dyadic_edge(a, b).unwrap_or(-1)
}

/// Creates a barrier for `parties` (≥ 1) threads; returns its id or 0.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_create_barrier(m: *mut EchobeatsManager, parties: i32) -> u64 {
    guard(0, || manager(m)?.create_barrier(count(parties, "parties")?))
}

/// Waits at a barrier: `ECHOBEATS_OK` when all parties arrived,
/// `ECHOBEATS_TIMEOUT` (the waiter withdraws), `ECHOBEATS_ERROR` for an
/// unknown or destroyed barrier.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_wait_at_barrier(m: *mut EchobeatsManager, id: u64, timeout_ms: i64) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        Ok(if manager(m)?.wait_at_barrier(id, timeout(timeout_ms))? { ECHOBEATS_OK } else { ECHOBEATS_TIMEOUT })
    })
}

/// Destroys a barrier (its waiters return `ECHOBEATS_ERROR`).
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_destroy_barrier(m: *mut EchobeatsManager, id: u64) -> c_int {
    guard(ECHOBEATS_ERROR, || manager(m)?.destroy_barrier(id).map(|_| ECHOBEATS_OK))
}

/// Writes a consistent snapshot of the metrics to `out`.
///
/// # Safety
/// `m` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn echobeats_get_metrics(m: *const EchobeatsManager, out: *mut EchobeatsMetrics) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        let pm = manager(m)?.metrics();
        if out.is_null() {
            return Err(invalid!("out is NULL"));
        }
        let s = |i: usize| {
            let x = &pm.streams[i];
            EchobeatsStreamMetrics {
                tasks_submitted: x.tasks_submitted,
                tasks_completed: x.tasks_completed,
                tasks_failed: x.tasks_failed,
                tasks_expired: x.tasks_expired,
                tasks_cancelled: x.tasks_cancelled,
                tasks_run: x.tasks_run,
                total_execution_us: x.total_execution_us,
                max_execution_us: x.max_execution_us,
                min_execution_us: x.min_execution_us,
                queue_wait_us: x.queue_wait_us,
                contention_events: x.contention_events,
                current_queue_depth: x.current_queue_depth,
                max_queue_depth: x.max_queue_depth,
            }
        };
        let v = EchobeatsMetrics {
            streams: [s(0), s(1), s(2)],
            cycles_completed: pm.cycles_completed,
            total_cycle_us: pm.total_cycle_us,
            sync_events: pm.sync_events,
            sync_wait_us: pm.sync_wait_us,
        };
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out.write(v) };
        Ok(ECHOBEATS_OK)
    })
}

/// Zeroes the metrics (current queue depths stay true).
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_reset_metrics(m: *mut EchobeatsManager) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        manager(m)?.reset_metrics();
        Ok(ECHOBEATS_OK)
    })
}

/// Pins each stream's workers (stream i to NUMA node i mod nodes; on one
/// node to disjoint CPU sets where there are enough CPUs) and writes a
/// summary of what was done into `buf` (snprintf-style; `buf` may be NULL
/// with `cap` 0). Returns the summary's full length, or -1.
///
/// # Safety
/// `m` NULL or live; `buf` NULL or writable for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn echobeats_configure_numa_affinity(
    m: *mut EchobeatsManager,
    buf: *mut c_char,
    cap: usize,
) -> i64 {
    guard(-1, || {
        let report = manager(m)?.configure_numa_affinity();
        // SAFETY: per the contract.
        unsafe { super::write_c_string(&report.summary, buf, cap) }
    })
}

/// Tries real-time scheduling for the pool's threads; `ECHOBEATS_ERROR`
/// with the reason (e.g. not permitted) when the OS refuses. Never crashes.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_enable_realtime_priority(m: *mut EchobeatsManager) -> c_int {
    guard(ECHOBEATS_ERROR, || manager(m)?.enable_realtime_priority().map(|_| ECHOBEATS_OK))
}

/// The design's recommended thread configuration scaled to this machine.
///
/// # Safety
/// `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn echobeats_recommended_config(out: *mut EchobeatsRecommendedConfig) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        if out.is_null() {
            return Err(invalid!("out is NULL"));
        }
        let r = EchobeatsPool::recommended_config();
        let c = |v: usize| v.min(i32::MAX as usize) as i32;
        let v = EchobeatsRecommendedConfig {
            inter_op_threads: c(r.inter_op_threads),
            intra_op_threads: c(r.intra_op_threads),
            data_loader_workers: c(r.data_loader_workers),
            cuda_streams: c(r.cuda_streams),
            usable_cpus: c(r.usable_cpus),
        };
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out.write(v) };
        Ok(ECHOBEATS_OK)
    })
}

/// `ECHOBEATS_LANE_CPU` or `ECHOBEATS_LANE_CUDA`: how the ordered lanes
/// run; -1 on error.
///
/// # Safety
/// `m` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn echobeats_ordered_lane_kind(m: *const EchobeatsManager) -> c_int {
    guard(-1, || {
        Ok(match manager(m)?.ordered_lane_kind() {
            eb::OrderedLaneKind::Cpu => ECHOBEATS_LANE_CPU,
            eb::OrderedLaneKind::Cuda => ECHOBEATS_LANE_CUDA,
        })
    })
}

/// Loop body for `echobeats_parallel_for`.
pub type EchobeatsLoopFn = Option<unsafe extern "C" fn(index: usize, user_data: *mut c_void)>;

/// The user data of a parallel loop, shared by the intra-op threads.
#[derive(Clone, Copy)]
struct LoopData(*mut c_void);
// SAFETY: `echobeats_parallel_for` documents that `body` is called from
// several threads at once with the same `user_data`.
unsafe impl Send for LoopData {}
// SAFETY: as above.
unsafe impl Sync for LoopData {}

/// Calls `body(i, user_data)` for every i in [begin, end) on the intra-op
/// pool (`intra_op_threads` threads; calls run concurrently) and returns
/// when all are done — the parallel-for of `ECHOBEATS_LAYER_INTRA_OP` tasks,
/// callable from a task or from any thread.
///
/// # Safety
/// `m` NULL or live; `body` must be safe to call concurrently with
/// `user_data` and must not unwind.
#[no_mangle]
pub unsafe extern "C" fn echobeats_parallel_for(
    m: *mut EchobeatsManager,
    begin: usize,
    end: usize,
    body: EchobeatsLoopFn,
    user_data: *mut c_void,
) -> c_int {
    guard(ECHOBEATS_ERROR, || {
        let pool = manager(m)?;
        let body = body.ok_or_else(|| invalid!("body is NULL"))?;
        if begin > end {
            return Err(invalid!("begin {begin} is after end {end}"));
        }
        let data = LoopData(user_data);
        pool.parallel_for(begin..end, move |i| {
            let d = data;
            // SAFETY: the caller's loop body with its user data (contract).
            unsafe { body(i, d.0) }
        });
        Ok(ECHOBEATS_OK)
    })
}

/// CLOCK_MONOTONIC now in ns (the clock of `EchobeatsTask.deadline_ns`).
#[no_mangle]
pub extern "C" fn echobeats_now_ns() -> i64 {
    monotonic_ns()
}

/// The name of a stream ("Cerebral", "Somatic", "Autonomic"), static;
/// NULL when out of range.
#[no_mangle]
pub extern "C" fn echobeats_stream_name(stream: c_int) -> *const c_char {
    name_ptr(stream, &[c"Cerebral", c"Somatic", c"Autonomic"])
}

/// The name of a phase ("Perception", "Action", "Simulation",
/// "Integration"), static; NULL when out of range.
#[no_mangle]
pub extern "C" fn echobeats_phase_name(phase: c_int) -> *const c_char {
    name_ptr(phase, &[c"Perception", c"Action", c"Simulation", c"Integration"])
}

/// The name of a mode ("Expressive", "Reflective"), static; NULL when out
/// of range.
#[no_mangle]
pub extern "C" fn echobeats_mode_name(mode: c_int) -> *const c_char {
    name_ptr(mode, &[c"Expressive", c"Reflective"])
}

/// The name of a layer ("DataLoader", "MainThread", "InterOp", "IntraOp",
/// "CUDAStream"), static; NULL when out of range.
#[no_mangle]
pub extern "C" fn echobeats_layer_name(layer: c_int) -> *const c_char {
    name_ptr(layer, &[c"DataLoader", c"MainThread", c"InterOp", c"IntraOp", c"CUDAStream"])
}

/// `names[value]` as a C string, or NULL (with an error) out of range.
fn name_ptr(value: c_int, names: &[&'static std::ffi::CStr]) -> *const c_char {
    guard(std::ptr::null(), || {
        let name = usize::try_from(value).ok().and_then(|i| names.get(i));
        name.map(|n| n.as_ptr()).ok_or_else(|| invalid!("value {value} out of range 0..{}", names.len() - 1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn names_match_the_core_enums() {
        let name = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
        for i in 0..3 {
            let s = CognitiveStream::from_index(i64::from(i)).unwrap();
            assert_eq!(name(echobeats_stream_name(i)), s.name());
        }
        for i in 0..4 {
            assert_eq!(name(echobeats_phase_name(i)), CognitivePhase::from_index(i64::from(i)).unwrap().name());
        }
        for i in 0..2 {
            assert_eq!(name(echobeats_mode_name(i)), eb::ProcessingMode::from_index(i64::from(i)).unwrap().name());
        }
        for i in 0..5 {
            assert_eq!(name(echobeats_layer_name(i)), PoolLayer::from_index(i64::from(i)).unwrap().name());
        }
        assert!(echobeats_stream_name(3).is_null() && echobeats_layer_name(-1).is_null());
    }

    #[test]
    fn deadlines_convert_between_clocks() {
        assert!(deadline_from(0).is_none());
        let soon = deadline_from(monotonic_ns() + 50_000_000).unwrap();
        let left = soon.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_millis(30) && left <= Duration::from_millis(50), "{left:?}");
        assert!(deadline_from(1).unwrap() <= Instant::now());
    }
}
