//! Echobeats: three cognitive streams running a 12-step cycle, each with
//! its own prioritised task queue and workers, plus the thread-pool layers
//! of the design (data loader, intra-op parallel-for, ordered per-stream
//! "CUDA stream" lanes), barriers and metrics.
//!
//! The pool lives in `pool.rs` ([`EchobeatsPool`], whose documentation
//! describes the threads, queues and every rule); the step tables in
//! `steps.rs`; the types below are the contract the C ABI and the C++
//! wrapper are written against.

mod pool;
pub mod steps;

pub use pool::{
    EchobeatsPool, DEFAULT_BARRIER_PARTIES, MAX_QUEUE_DEPTH, MAX_RESULT_RETENTION, MAX_TARGET_CYCLE_TIME_MS,
    MAX_THREADS_PER_GROUP, STEP_SYNC_TIMEOUT,
};
pub use steps::*;

use std::time::{Duration, Instant};

/// One of the three concurrent cognitive streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum CognitiveStream {
    /// Steps 1, 4, 7, 10.
    Cerebral = 0,
    /// Steps 2, 5, 8, 11.
    Somatic = 1,
    /// Steps 3, 6, 9, 12.
    Autonomic = 2,
}

impl CognitiveStream {
    /// All streams, in index order.
    pub const ALL: [CognitiveStream; 3] =
        [CognitiveStream::Cerebral, CognitiveStream::Somatic, CognitiveStream::Autonomic];

    /// The stream with this index (0..=2), if any.
    pub fn from_index(i: i64) -> Option<CognitiveStream> {
        usize::try_from(i).ok().and_then(|i| Self::ALL.get(i).copied())
    }

    /// The name, as the original `ToString` spells it.
    pub fn name(self) -> &'static str {
        match self {
            CognitiveStream::Cerebral => "Cerebral",
            CognitiveStream::Somatic => "Somatic",
            CognitiveStream::Autonomic => "Autonomic",
        }
    }
}

/// Phase of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CognitivePhase {
    /// Steps 1, 5, 9.
    Perception = 0,
    /// Steps 2, 6, 10.
    Action = 1,
    /// Steps 3, 7, 11.
    Simulation = 2,
    /// Steps 4, 8, 12 (the streams synchronise when leaving them).
    Integration = 3,
}

impl CognitivePhase {
    /// The phase with this index (0..=3), if any.
    pub fn from_index(i: i64) -> Option<CognitivePhase> {
        match i {
            0 => Some(CognitivePhase::Perception),
            1 => Some(CognitivePhase::Action),
            2 => Some(CognitivePhase::Simulation),
            3 => Some(CognitivePhase::Integration),
            _ => None,
        }
    }

    /// The name, as the original `ToString` spells it.
    pub fn name(self) -> &'static str {
        match self {
            CognitivePhase::Perception => "Perception",
            CognitivePhase::Action => "Action",
            CognitivePhase::Simulation => "Simulation",
            CognitivePhase::Integration => "Integration",
        }
    }
}

/// Processing mode of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProcessingMode {
    /// Steps 1, 2, 3, 5, 6, 9, 10.
    Expressive = 0,
    /// Steps 4, 7, 8, 11, 12.
    Reflective = 1,
}

impl ProcessingMode {
    /// The mode with this index (0..=1), if any.
    pub fn from_index(i: i64) -> Option<ProcessingMode> {
        match i {
            0 => Some(ProcessingMode::Expressive),
            1 => Some(ProcessingMode::Reflective),
            _ => None,
        }
    }

    /// The name, as the original `ToString` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ProcessingMode::Expressive => "Expressive",
            ProcessingMode::Reflective => "Reflective",
        }
    }
}

/// Where a task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PoolLayer {
    /// The data-loader pool (`data_loader_workers` threads).
    DataLoader = 0,
    /// The stream's workers, like `InterOp` (kept for the original enum).
    MainThread = 1,
    /// The stream's own workers (`threads_per_stream`).
    InterOp = 2,
    /// The stream's workers, with a parallel-for over the intra-op pool
    /// (`intra_op_threads`, rayon) available through [`TaskContext`].
    IntraOp = 3,
    /// The stream's ordered lane: tasks of one stream run one at a time in
    /// submission (= id) order, whatever their priority (a CUDA stream when
    /// one is available). On the CPU the lane is run by the stream's own
    /// workers, one lane task at a time.
    CudaStream = 4,
}

impl PoolLayer {
    /// The layer with this index (0..=4), if any.
    pub fn from_index(i: i64) -> Option<PoolLayer> {
        match i {
            0 => Some(PoolLayer::DataLoader),
            1 => Some(PoolLayer::MainThread),
            2 => Some(PoolLayer::InterOp),
            3 => Some(PoolLayer::IntraOp),
            4 => Some(PoolLayer::CudaStream),
            _ => None,
        }
    }

    /// The name, as the original `ToString` spells it.
    pub fn name(self) -> &'static str {
        match self {
            PoolLayer::DataLoader => "DataLoader",
            PoolLayer::MainThread => "MainThread",
            PoolLayer::InterOp => "InterOp",
            PoolLayer::IntraOp => "IntraOp",
            PoolLayer::CudaStream => "CUDAStream",
        }
    }
}

/// Outcome of a task, or of waiting for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TaskStatus {
    /// Ran and returned success.
    Completed = 0,
    /// Ran and failed (returned an error or panicked), or never ran because
    /// a dependency did not complete successfully.
    Failed = 1,
    /// Not started before its deadline; never ran.
    Expired = 2,
    /// Cancelled by a shutdown that does not drain (or its dependency was);
    /// never ran.
    Cancelled = 3,
    /// The wait timed out; the task is still queued or running.
    Timeout = 4,
    /// No such task (never submitted, or its result was already dropped
    /// from the bounded retention).
    Unknown = 5,
}

/// What a finished task reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskResult {
    /// Task id (from 1).
    pub id: u64,
    /// Completed, Failed, Expired or Cancelled.
    pub status: TaskStatus,
    /// Time spent running (zero if it never ran).
    pub execution_time: Duration,
    /// Time from submission (or release of its dependencies) to start.
    pub queue_wait: Duration,
    /// The task's stream.
    pub stream: CognitiveStream,
    /// The task's step.
    pub step: i32,
    /// The task's phase.
    pub phase: CognitivePhase,
    /// The layer it was submitted to.
    pub layer: PoolLayer,
}

/// Handed to a running task.
pub struct TaskContext<'a> {
    pub(crate) pool: &'a pool::Inner,
    /// The task's id.
    pub id: u64,
    /// The task's stream.
    pub stream: CognitiveStream,
    /// The task's step.
    pub step: i32,
    /// The task's phase.
    pub phase: CognitivePhase,
    /// The layer it runs on.
    pub layer: PoolLayer,
}

/// The work of a task: `Err` (or a panic) marks it failed.
pub type Work = Box<dyn FnOnce(&TaskContext<'_>) -> Result<(), String> + Send + 'static>;

/// A task to submit.
pub struct TaskSpec {
    /// What to run.
    pub work: Work,
    /// Its stream (queue and workers).
    pub stream: CognitiveStream,
    /// Its phase (recorded, reported).
    pub phase: CognitivePhase,
    /// Its step, 1..=12 (others are rejected).
    pub step: i32,
    /// Higher runs first; FIFO among equal priorities. Must be finite.
    pub priority: f32,
    /// Where it runs.
    pub layer: PoolLayer,
    /// Not started by then → not run, completes as Expired.
    pub deadline: Option<Instant>,
    /// Tasks that must complete first (ids of submitted tasks).
    pub dependencies: Vec<u64>,
}

impl TaskSpec {
    /// A task with the original `FCognitiveTask` defaults: Cerebral,
    /// Perception, step 1, priority 0.5, InterOp, no deadline, no
    /// dependencies.
    pub fn new(work: impl FnOnce(&TaskContext<'_>) -> Result<(), String> + Send + 'static) -> TaskSpec {
        TaskSpec {
            work: Box::new(work),
            stream: CognitiveStream::Cerebral,
            phase: CognitivePhase::Perception,
            step: 1,
            priority: 0.5,
            layer: PoolLayer::InterOp,
            deadline: None,
            dependencies: Vec::new(),
        }
    }

    /// A task for `step` with stream, phase and layer from the step tables
    /// (as `submit_for_step` builds it); priority 0.5. A step outside
    /// 1..=12 is kept as given, so that submitting the task fails.
    pub fn for_step(step: i32, work: impl FnOnce(&TaskContext<'_>) -> Result<(), String> + Send + 'static) -> TaskSpec {
        TaskSpec {
            stream: stream_for_step(step),
            phase: phase_for_step(step),
            step,
            layer: layer_for_step(step),
            ..TaskSpec::new(work)
        }
    }
}

/// What `submit` does when a stream already holds `max_queue_depth` tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait up to this long for room, then fail with `Error::Full`.
    Wait(Duration),
    /// Fail at once with `Error::Full`.
    Reject,
}

/// Severity of a log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Diagnostics.
    Debug,
    /// Normal events (NUMA placement, priority changes).
    Info,
    /// Something did not work as asked.
    Warning,
}

/// Optional log sink; the pool prints nothing itself.
pub type LogFn = std::sync::Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// Pool configuration (the original `FThreadPoolConfig`, plus what it lacked).
///
/// Thread counts of 0 mean "auto", sized to the CPUs this process may use
/// (see [`EchobeatsPool::recommended_config`]); explicit counts are honoured
/// even above the CPU count, up to [`MAX_THREADS_PER_GROUP`].
/// [`EchobeatsPool::config`] returns the configuration with every auto
/// value resolved.
#[derive(Clone)]
pub struct PoolConfig {
    /// Workers per stream (0 = auto: `inter_op_threads / 3` rounded up when
    /// that is set, else usable CPUs / 3, at least 1).
    pub threads_per_stream: usize,
    /// Data-loader pool size (0 = auto: the recommended count).
    pub data_loader_workers: usize,
    /// Inter-op threads in total, i.e. 3 × the stream workers. Used only
    /// when `threads_per_stream` is 0; resolved to `3 × threads_per_stream`.
    pub inter_op_threads: usize,
    /// Intra-op (rayon) pool size (0 = auto: usable CPUs, at most 12).
    pub intra_op_threads: usize,
    /// Ordered lanes ("CUDA streams"), 1..=3 (0 = auto: 3). Stream `i`
    /// uses lane `i % cuda_streams`; streams sharing a lane share its order.
    pub cuda_streams: usize,
    /// Pin stream workers at start (see `configure_numa_affinity`).
    pub enable_numa_affinity: bool,
    /// `run_cycle` paces to this (0 = no pacing); finite, 0..=3_600_000.
    pub target_cycle_time_ms: f32,
    /// Queued + pending tasks per stream at most, 1..=[`MAX_QUEUE_DEPTH`].
    pub max_queue_depth: usize,
    /// What submit does at `max_queue_depth`.
    pub backpressure: Backpressure,
    /// Try real-time scheduling for the workers at start (a refusal is
    /// logged as a warning; the pool still runs at normal priority).
    pub enable_realtime_priority: bool,
    /// Finished results kept for `wait_task` before the oldest are dropped:
    /// at least the results of the last `result_retention` ids are kept
    /// (at most [`MAX_RESULT_RETENTION`]).
    pub result_retention: usize,
    /// Shutdown runs queued tasks (true) or cancels them (false).
    pub drain_on_shutdown: bool,
    /// Log sink; `None` = silent.
    pub log: Option<LogFn>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            threads_per_stream: 0,
            data_loader_workers: 0,
            inter_op_threads: 0,
            intra_op_threads: 0,
            cuda_streams: 3,
            enable_numa_affinity: false,
            target_cycle_time_ms: 100.0,
            max_queue_depth: 1000,
            backpressure: Backpressure::Wait(Duration::from_secs(1)),
            enable_realtime_priority: false,
            result_retention: 65536,
            drain_on_shutdown: true,
            log: None,
        }
    }
}

impl std::fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConfig")
            .field("threads_per_stream", &self.threads_per_stream)
            .field("data_loader_workers", &self.data_loader_workers)
            .field("inter_op_threads", &self.inter_op_threads)
            .field("intra_op_threads", &self.intra_op_threads)
            .field("cuda_streams", &self.cuda_streams)
            .field("enable_numa_affinity", &self.enable_numa_affinity)
            .field("target_cycle_time_ms", &self.target_cycle_time_ms)
            .field("max_queue_depth", &self.max_queue_depth)
            .field("backpressure", &self.backpressure)
            .field("enable_realtime_priority", &self.enable_realtime_priority)
            .field("result_retention", &self.result_retention)
            .field("drain_on_shutdown", &self.drain_on_shutdown)
            .field("log", &self.log.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// A consistent copy of one stream's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamMetrics {
    /// Tasks accepted by submit.
    pub tasks_submitted: u64,
    /// Tasks that ran successfully.
    pub tasks_completed: u64,
    /// Tasks that failed, expired or were cancelled.
    pub tasks_failed: u64,
    /// Of the failed: expired before start.
    pub tasks_expired: u64,
    /// Of the failed: cancelled by shutdown.
    pub tasks_cancelled: u64,
    /// Tasks that started running (completed, or failed while running);
    /// the execution times below are over these.
    pub tasks_run: u64,
    /// Sum of execution times, µs.
    pub total_execution_us: u64,
    /// Longest execution, µs.
    pub max_execution_us: u64,
    /// Shortest execution, µs (u64::MAX until a task ran).
    pub min_execution_us: u64,
    /// Sum of queue waits of the tasks that started running, µs.
    pub queue_wait_us: u64,
    /// Times a submitter or worker found the stream's queue lock taken.
    pub contention_events: u64,
    /// Tasks queued or pending now (not counting running ones).
    pub current_queue_depth: u32,
    /// Highest `current_queue_depth` seen.
    pub max_queue_depth: u32,
}

impl StreamMetrics {
    /// Mean execution time of the tasks that ran, µs (0 when none ran).
    pub fn average_execution_us(&self) -> f64 {
        if self.tasks_run == 0 {
            0.0
        } else {
            self.total_execution_us as f64 / self.tasks_run as f64
        }
    }
}

/// A consistent copy of the pool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolMetrics {
    /// Per stream, indexed by `CognitiveStream as usize`.
    pub streams: [StreamMetrics; 3],
    /// Full 12-step cycles completed.
    pub cycles_completed: u64,
    /// Sum of cycle times, µs.
    pub total_cycle_us: u64,
    /// Successful stream synchronisations.
    pub sync_events: u64,
    /// Time spent in them, µs.
    pub sync_wait_us: u64,
}

impl PoolMetrics {
    /// Cycles per second of cycle time (0 when no cycle completed).
    pub fn cycles_per_second(&self) -> f64 {
        if self.total_cycle_us == 0 {
            0.0
        } else {
            self.cycles_completed as f64 * 1e6 / self.total_cycle_us as f64
        }
    }
}

/// What `configure_numa_affinity` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityReport {
    /// NUMA nodes found.
    pub nodes: usize,
    /// Per stream: the CPUs its workers are pinned to (empty = not pinned).
    pub stream_cpus: [Vec<usize>; 3],
    /// Whether some CPU serves more than one stream (one node with fewer
    /// than 3 usable CPUs, or fewer nodes than streams).
    pub shared_cpus: bool,
    /// Human-readable summary.
    pub summary: String,
}

/// The thread configuration the design recommends for this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecommendedConfig {
    /// Inter-op threads (3 streams × per-stream workers).
    pub inter_op_threads: usize,
    /// Intra-op threads.
    pub intra_op_threads: usize,
    /// Data-loader workers (3 per stream in the design).
    pub data_loader_workers: usize,
    /// One CUDA stream per cognitive stream.
    pub cuda_streams: usize,
    /// Usable CPUs the numbers are scaled to.
    pub usable_cpus: usize,
}

/// What `shutdown` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// False when an earlier call had already shut the pool down (the
    /// counts are then those of that call).
    pub first_call: bool,
    /// Tasks unfinished when the shutdown began that then ran (or failed or
    /// expired) instead of being cancelled.
    pub drained: u64,
    /// Tasks cancelled (never ran).
    pub cancelled: u64,
    /// Worker threads joined.
    pub threads_joined: usize,
    /// False only when called from one of the pool's own tasks: the pool is
    /// closed and the workers leave on their own once everything finished,
    /// but nothing was waited for (waiting there would deadlock).
    pub complete: bool,
}

/// How the ordered lanes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderedLaneKind {
    /// A CPU thread per lane, tasks in submission order.
    Cpu,
    /// A CUDA stream per lane (feature `cuda` and a device present).
    Cuda,
}
