//! The Echobeats pool: three cognitive streams, each with a priority queue,
//! an ordered lane and its own workers, a data-loader pool, an intra-op
//! (rayon) pool, barriers, the 12-step cycle and metrics.
//!
//! # Threads
//! Four *executors*: one per stream (`threads_per_stream` workers, which
//! also run the stream's ordered lane) and the data-loader pool
//! (`data_loader_workers`). An executor starts its threads when its first
//! task arrives, so a layer nobody uses costs nothing; the intra-op rayon
//! pool is likewise built by the first `parallel_for`.
//!
//! # Queues
//! An executor holds, under one short lock, a binary heap keyed by
//! (priority, −id) — higher priority first, FIFO among equal priorities —
//! and (stream executors) the ordered lane: a FIFO sorted by id whose head
//! runs only when its dependencies are met and no other task of that lane
//! runs. Task records (state, result, dependents, waiters) live in a ring
//! indexed by `id mod capacity` with one small lock per slot, so the hot
//! path allocates nothing beyond the task's own closure and touches no hash
//! map.
//!
//! # Parking
//! An idle worker spins up to 10 µs, offering its CPU to any other runnable
//! thread between rounds (`sched_yield`, which costs nothing when the CPU
//! is otherwise idle: on a small machine the pool has more threads than
//! CPUs, and a spinner must not slow the submitter down). It then raises
//! its `sleeping` flag, fences (SeqCst) and looks at its queue once more
//! before parking on a futex. A submitter publishes, fences, and wakes a
//! parked worker only when no worker of that executor is spinning; with
//! both fences one side always sees the other, so no wake-up is lost. A
//! worker that leaves work behind wakes the next; a worker that has just
//! woken a thread blocked on the pool (a `wait_task` caller, say) parks
//! without spinning, because the kernel tends to queue that thread on its
//! CPU. A lone worker takes up to 16 short tasks per lock (sized by their
//! measured duration, about 4 µs per batch), and finishes their counts in
//! one atomic update per batch.

use super::{
    is_valid_step, phase_for_step, stream_for_step, AffinityReport, Backpressure, CognitivePhase, CognitiveStream,
    LogLevel, OrderedLaneKind, PoolConfig, PoolLayer, PoolMetrics, ProcessingMode, RecommendedConfig, ShutdownReport,
    StreamMetrics, TaskContext, TaskResult, TaskSpec, TaskStatus, Work,
};
use crate::error::{invalid, Error, Result};
use crate::sys::{usable_cpus, CpuTopology, Parker};
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::cell::Cell;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Most threads one group (a stream's workers, the data loaders, the
/// intra-op pool) may have.
pub const MAX_THREADS_PER_GROUP: usize = 256;
/// Largest accepted `max_queue_depth`.
pub const MAX_QUEUE_DEPTH: usize = 1 << 24;
/// Largest accepted `result_retention`.
pub const MAX_RESULT_RETENTION: usize = 1 << 22;
/// Largest accepted `target_cycle_time_ms` (one hour).
pub const MAX_TARGET_CYCLE_TIME_MS: f32 = 3_600_000.0;
/// How long `advance_step` (leaving steps 4, 8, 12) and `run_cycle` (each
/// step) wait for the streams to quiesce before moving on anyway.
pub const STEP_SYNC_TIMEOUT: Duration = Duration::from_secs(1);
/// Parties of a barrier in the original design (one per stream).
pub const DEFAULT_BARRIER_PARTIES: usize = 3;

/// Executor index of the data-loader pool (0..=2 are the streams).
const LOADER: usize = 3;
/// How long an idle worker spins before parking.
const WORKER_SPIN: Duration = Duration::from_micros(10);
/// Most tasks a lone worker takes per lock.
const BATCH_MAX: usize = 16;
/// How long a lone worker's batch should last.
const BATCH_TARGET: Duration = Duration::from_micros(4);
/// How long a quiescence waiter spins (politely) before blocking.
const WAITER_SPIN: Duration = Duration::from_micros(5);
/// Records per lazily allocated chunk of the ring (2^12).
const CHUNK_BITS: u32 = 12;
/// Ids per page of the bitmap of dropped failed tasks (2^16).
const FAIL_PAGE_BITS: u32 = 16;
/// Largest ring of task records (entries).
const MAX_RING: usize = 1 << 22;
/// One queued-or-pending task in a stream's `counts` word.
const WAITING_ONE: u64 = 1;
/// One unfinished task in a stream's `counts` word.
const UNFINISHED_ONE: u64 = 1 << 32;

fn waiting_of(counts: u64) -> u64 {
    counts & 0xFFFF_FFFF
}

fn unfinished_of(counts: u64) -> u64 {
    counts >> 32
}

/// Maps a finite priority onto a u32 with the same order (−0.0 = +0.0).
fn priority_key(p: f32) -> u32 {
    let bits = (p + 0.0).to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// Heap key: priority first, then the lower id (earlier submission).
fn entry_key(priority: u32, id: u64) -> u128 {
    (u128::from(priority) << 64) | u128::from(!id)
}

fn key_id(key: u128) -> u64 {
    !(key as u64)
}

thread_local! {
    /// Address of the pool whose worker (or intra-op thread) this is.
    static CURRENT_POOL: Cell<usize> = const { Cell::new(0) };
}

/// A queued task: everything a worker needs to run it.
struct Entry {
    key: u128,
    work: Work,
    /// Nanoseconds since the pool's epoch; u64::MAX = none.
    deadline: u64,
    /// When it became runnable (submission, or release of its dependencies).
    enqueued: u64,
    step: i32,
    stream: CognitiveStream,
    phase: CognitivePhase,
    layer: PoolLayer,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// A task of an ordered lane; it may run once `ready` (dependencies met).
struct LaneEntry {
    entry: Entry,
    ready: bool,
}

/// An executor's queues, under its lock.
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Entry>,
    /// Lane tasks sorted by id (= submission order).
    lane: VecDeque<LaneEntry>,
    /// A lane task is running.
    lane_busy: bool,
}

impl Queue {
    /// Tasks a worker could take right now.
    fn available(&self) -> usize {
        self.heap.len() + usize::from(!self.lane_busy && self.lane.front().is_some_and(|l| l.ready))
    }

    fn lane_position(&self, id: u64) -> std::result::Result<usize, usize> {
        self.lane.binary_search_by_key(&id, |l| key_id(l.entry.key))
    }
}

/// A worker's parking place.
#[derive(Default)]
struct WorkerSlot {
    sleeping: AtomicBool,
    parker: Parker,
}

/// Join handles of an executor; `closed` once shutdown took them.
#[derive(Default)]
struct ThreadSet {
    handles: Vec<JoinHandle<()>>,
    closed: bool,
}

/// A group of workers fed by one queue.
struct Executor {
    name: &'static str,
    queue: CachePadded<Mutex<Queue>>,
    /// `Queue::available`, readable without the lock.
    avail: CachePadded<AtomicUsize>,
    spinning: CachePadded<AtomicUsize>,
    sleepers: CachePadded<AtomicUsize>,
    slots: Box<[CachePadded<WorkerSlot>]>,
    started: AtomicBool,
    threads: Mutex<ThreadSet>,
    wake_cursor: AtomicUsize,
}

impl Executor {
    fn new(name: &'static str, threads: usize) -> Executor {
        Executor {
            name,
            queue: CachePadded::new(Mutex::new(Queue::default())),
            avail: CachePadded::new(AtomicUsize::new(0)),
            spinning: CachePadded::new(AtomicUsize::new(0)),
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            slots: (0..threads).map(|_| CachePadded::new(WorkerSlot::default())).collect(),
            started: AtomicBool::new(false),
            threads: Mutex::new(ThreadSet::default()),
            wake_cursor: AtomicUsize::new(0),
        }
    }
}

/// Life of a task record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Slot never used.
    Empty,
    /// Waiting for dependencies.
    Pending,
    /// Runnable: queued, or taken by a worker.
    Queued,
    /// Finished with this status.
    Done(TaskStatus),
}

/// Rarely needed parts of a record, allocated only when used.
#[derive(Default)]
struct Extra {
    /// Tasks waiting for this one.
    dependents: Vec<u64>,
    /// Threads in `wait_task` that have not read the result yet.
    waiters: Vec<Thread>,
}

/// Bookkeeping of one task id.
struct Record {
    id: u64,
    state: State,
    stream: CognitiveStream,
    phase: CognitivePhase,
    layer: PoolLayer,
    step: i32,
    /// Unmet dependencies (plus one while the submitter registers them).
    pending: u32,
    exec_ns: u64,
    wait_ns: u64,
    extra: Option<Box<Extra>>,
    /// The queued form of a pending task (lane tasks wait in their lane).
    payload: Option<Box<Entry>>,
}

impl Record {
    fn empty() -> Record {
        Record {
            id: 0,
            state: State::Empty,
            stream: CognitiveStream::Cerebral,
            phase: CognitivePhase::Perception,
            layer: PoolLayer::InterOp,
            step: 0,
            pending: 0,
            exec_ns: 0,
            wait_ns: 0,
            extra: None,
            payload: None,
        }
    }

    fn has_waiters(&self) -> bool {
        self.extra.as_ref().is_some_and(|x| !x.waiters.is_empty())
    }

    /// Finished, and nobody is about to read it: may be forgotten.
    fn droppable(&self) -> bool {
        matches!(self.state, State::Done(_)) && !self.has_waiters()
    }

    fn result(&self, status: TaskStatus) -> TaskResult {
        TaskResult {
            id: self.id,
            status,
            execution_time: Duration::from_nanos(self.exec_ns),
            queue_wait: Duration::from_nanos(self.wait_ns),
            stream: self.stream,
            step: self.step,
            phase: self.phase,
            layer: self.layer,
        }
    }
}

/// One record slot, on its own cache line: the records of consecutive ids
/// are written by different threads (submitter, workers).
#[repr(align(64))]
struct Slot(Mutex<Record>);

/// Task records by id: a ring of `capacity` slots (chunks allocated on
/// first use), an overflow map for the rare record that must outlive its
/// slot (still unfinished, or being waited for, when its slot is needed by
/// an id `capacity` later), and one bit per dropped failed id.
struct RecordTable {
    mask: u64,
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
    overflow: Mutex<HashMap<u64, Record>>,
    overflow_len: AtomicUsize,
    /// Pages of 2^16 ids: bit set = that id finished unsuccessfully and its
    /// record was dropped. Pages without failures are never allocated.
    dropped_failures: Mutex<BTreeMap<u64, Box<[u64]>>>,
}

impl RecordTable {
    fn new(capacity: usize) -> RecordTable {
        let capacity = capacity.next_power_of_two().max(1 << CHUNK_BITS);
        RecordTable {
            mask: capacity as u64 - 1,
            chunks: (0..capacity >> CHUNK_BITS).map(|_| OnceLock::new()).collect(),
            overflow: Mutex::new(HashMap::new()),
            overflow_len: AtomicUsize::new(0),
            dropped_failures: Mutex::new(BTreeMap::new()),
        }
    }

    fn position(&self, id: u64) -> (usize, usize) {
        let i = (id & self.mask) as usize;
        (i >> CHUNK_BITS, i & ((1 << CHUNK_BITS) - 1))
    }

    fn slot(&self, id: u64) -> &Mutex<Record> {
        let (c, i) = self.position(id);
        &self.chunks[c].get_or_init(|| (0..1usize << CHUNK_BITS).map(|_| Slot(Mutex::new(Record::empty()))).collect())
            [i]
            .0
    }

    fn existing_slot(&self, id: u64) -> Option<&Mutex<Record>> {
        let (c, i) = self.position(id);
        self.chunks[c].get().map(|chunk| &chunk[i].0)
    }

    /// Puts a new record in its slot, moving an older occupant that is
    /// still needed to the overflow map (or dropping it).
    fn install(&self, rec: Record) {
        let mut slot = self.slot(rec.id).lock();
        if slot.id == 0 || slot.id < rec.id {
            let old = std::mem::replace(&mut *slot, rec);
            if old.id != 0 {
                if old.droppable() {
                    self.note_dropped(&old);
                } else {
                    self.overflow.lock().insert(old.id, old);
                    self.overflow_len.fetch_add(1, Release);
                }
            }
        } else {
            // A later id already took the slot (its submitter overtook ours).
            self.overflow.lock().insert(rec.id, rec);
            self.overflow_len.fetch_add(1, Release);
        }
    }

    /// Runs `f` on the record of `id` under its lock; `None` when there is
    /// none (never installed, or dropped).
    fn with<R>(&self, id: u64, f: impl FnOnce(&mut Record) -> R) -> Option<R> {
        if let Some(slot) = self.existing_slot(id) {
            let mut rec = slot.lock();
            if rec.id == id {
                return Some(f(&mut rec));
            }
        }
        // A record moves to the overflow map under its slot's lock, so
        // having seen the slot without it, the move is visible here.
        if self.overflow_len.load(Acquire) == 0 {
            return None;
        }
        let mut map = self.overflow.lock();
        let rec = map.get_mut(&id)?;
        let out = f(rec);
        if rec.droppable() {
            if let Some(old) = map.remove(&id) {
                self.overflow_len.fetch_sub(1, Release);
                self.note_dropped(&old);
            }
        }
        Some(out)
    }

    /// Remembers the outcome of a record being forgotten.
    fn note_dropped(&self, rec: &Record) {
        if rec.state != State::Done(TaskStatus::Completed) {
            let page = rec.id >> FAIL_PAGE_BITS;
            let bit = (rec.id & ((1 << FAIL_PAGE_BITS) - 1)) as usize;
            let mut pages = self.dropped_failures.lock();
            let words = pages.entry(page).or_insert_with(|| vec![0u64; 1 << (FAIL_PAGE_BITS - 6)].into_boxed_slice());
            words[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn dropped_failed(&self, id: u64) -> bool {
        let bit = (id & ((1 << FAIL_PAGE_BITS) - 1)) as usize;
        self.dropped_failures.lock().get(&(id >> FAIL_PAGE_BITS)).is_some_and(|w| w[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// A stream's counters written by submitters.
#[derive(Default)]
struct SubmitCounters {
    submitted: AtomicU64,
    max_depth: AtomicU64,
}

/// A stream's counters written by workers (see [`StreamMetrics`]).
struct Counters {
    completed: AtomicU64,
    failed: AtomicU64,
    expired: AtomicU64,
    cancelled: AtomicU64,
    run: AtomicU64,
    total_exec: AtomicU64,
    max_exec: AtomicU64,
    min_exec: AtomicU64,
    queue_wait: AtomicU64,
    contention: AtomicU64,
}

impl Counters {
    fn new() -> Counters {
        Counters {
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            run: AtomicU64::new(0),
            total_exec: AtomicU64::new(0),
            max_exec: AtomicU64::new(0),
            min_exec: AtomicU64::new(u64::MAX),
            queue_wait: AtomicU64::new(0),
            contention: AtomicU64::new(0),
        }
    }
}

/// Per-stream state.
struct StreamState {
    /// `unfinished << 32 | waiting`: tasks submitted and not finished, and
    /// of those the ones not yet taken by a worker (queued or pending).
    counts: CachePadded<AtomicU64>,
    sub: CachePadded<SubmitCounters>,
    m: CachePadded<Counters>,
    /// Submitters waiting for room (backpressure).
    space_lock: Mutex<()>,
    space_cv: Condvar,
    space_waiters: AtomicUsize,
}

/// A reusable barrier.
struct Barrier {
    parties: usize,
    state: Mutex<BarrierState>,
    cv: Condvar,
}

struct BarrierState {
    arrived: usize,
    generation: u64,
    destroyed: bool,
}

/// The intra-op rayon pool, built on first use.
#[derive(Default)]
struct Intra {
    pool: Option<Arc<rayon::ThreadPool>>,
    closed: bool,
}

/// How a task finished, for [`Inner::complete`].
struct Finish {
    id: u64,
    status: TaskStatus,
    exec_ns: u64,
    wait_ns: u64,
    /// It ran (completed or failed while running).
    ran: bool,
    from: Origin,
}

/// Where a finishing task was.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Taken from its queue by a worker (no longer counted as waiting).
    Taken,
    /// Still waiting for dependencies.
    Pending,
    /// Just released, never queued (cancelled at release).
    Released,
}

/// Changes to the streams' `counts` gathered while finishing tasks, to be
/// applied at once by [`Inner::settle`].
#[derive(Default)]
struct Settle {
    dec: [u64; 3],
    /// A thread blocked on the pool was woken meanwhile.
    woke: bool,
}

/// What a dependency looks like to a new task.
enum Dep {
    Satisfied,
    Registered,
    Failed(TaskStatus),
}

/// State shared by the pool handle and its threads.
pub(crate) struct Inner {
    cfg: PoolConfig,
    lanes: usize,
    /// A CUDA stream per ordered lane, when the `cuda` feature found a device.
    #[cfg(feature = "cuda")]
    cuda: Option<Vec<Arc<cudarc::driver::CudaStream>>>,
    epoch: Instant,
    next_id: CachePadded<AtomicU64>,
    streams: [StreamState; 3],
    execs: [Executor; 4],
    records: RecordTable,
    /// No new tasks; workers leave once everything finished.
    closing: AtomicBool,
    /// Tasks not yet started are cancelled instead of run.
    cancel: AtomicBool,
    idle_lock: Mutex<()>,
    idle_cv: Condvar,
    idle_waiters: AtomicUsize,
    spinners: AtomicUsize,
    max_spinners: usize,
    step: AtomicI32,
    cycle_start_ns: AtomicU64,
    cycles: AtomicU64,
    /// Kept in ns (reported in µs) so that short cycles still add up.
    cycle_ns: AtomicU64,
    sync_events: AtomicU64,
    /// Kept in ns (reported in µs).
    sync_ns: AtomicU64,
    cycle_lock: Mutex<()>,
    pace_lock: Mutex<()>,
    pace_cv: Condvar,
    barriers: Mutex<HashMap<u64, Arc<Barrier>>>,
    next_barrier: AtomicU64,
    affinity: Mutex<[Vec<usize>; 3]>,
    affinity_gen: AtomicU64,
    realtime: AtomicBool,
    intra: Mutex<Intra>,
    intra_alive: Arc<(Mutex<usize>, Condvar)>,
    unfinished_at_close: AtomicU64,
    cancelled_total: AtomicU64,
    cancelled_at_close: AtomicU64,
    join_state: Mutex<Option<ShutdownReport>>,
}

/// The Echobeats task pool (see the module documentation for its design).
///
/// # Rules
/// - **Ids** start at 1 and grow by one per accepted task; a batch gets
///   consecutive ids.
/// - **Steps** outside 1..=12 are rejected by every submit
///   (`InvalidArgument`); the static step helpers wrap instead
///   ([`super::wrap_step`]).
/// - **Priorities** must be finite; higher runs first, equal priorities in
///   submission order. Ordered-lane (`CudaStream`) tasks ignore priority
///   and run one at a time in submission order.
/// - **Dependencies** must be ids already issued (`InvalidArgument`
///   otherwise). A dependency that completed successfully counts as met. A
///   task with unmet dependencies waits in a pending set (counted in the
///   queue depth) and is released exactly once, when the last one
///   completes. If a dependency fails, expires or is cancelled, the task
///   never runs: it finishes as `Failed` (as `Cancelled` when the
///   dependency was cancelled), and so do its own dependents, transitively.
///   When a dependency's record was already dropped from the retention
///   window, its outcome is still known: the pool keeps one bit per
///   dropped *failed* id (pages of 65,536 ids, allocated only where
///   failures occurred), so the dependency counts as met exactly when it
///   completed successfully.
/// - **Deadlines** are checked when a worker takes the task: past it, the
///   task does not run and finishes as `Expired` (counted as failed and as
///   expired; its dependents fail).
/// - **Backpressure**: a stream holds at most `max_queue_depth` queued plus
///   pending tasks. At that depth `submit` waits for room up to the
///   [`Backpressure::Wait`] time and then fails with `Full`, or fails at
///   once ([`Backpressure::Reject`]).
/// - **Results** of at least the last `result_retention` ids stay readable
///   through `wait_task`, any number of times; older ones are dropped
///   (`Unknown`). A result somebody is waiting for is kept until read.
/// - **Shutdown** (also on drop) closes the pool to new tasks, then drains
///   (runs everything queued or pending) or cancels (finishes each as
///   `Cancelled`, counted) per `drain_on_shutdown`, destroys the barriers
///   (their waiters get an error), interrupts pacing, and joins every
///   thread. Waiting for a running task is unavoidable; nothing else can
///   make it hang.
/// - **Panics** in tasks are caught: the task fails, the worker lives on.
/// - **Silence**: nothing is printed; messages go to `config.log` only
///   (a panicking task still goes through the process's panic hook).
///
/// Every method takes `&self`; the pool is `Send + Sync`.
pub struct EchobeatsPool {
    inner: Arc<Inner>,
}

fn log_enabled(cfg: &PoolConfig) -> bool {
    cfg.log.is_some()
}

/// Checks a configuration and replaces the auto (0) values.
fn resolve(mut c: PoolConfig, cpus: usize) -> Result<PoolConfig> {
    let rec = EchobeatsPool::recommended_config_for(cpus);
    let check = |name: &str, v: usize, max: usize| -> Result<()> {
        if v > max {
            return Err(invalid!("{name} = {v} is absurd (at most {max})"));
        }
        Ok(())
    };
    check("threads_per_stream", c.threads_per_stream, MAX_THREADS_PER_GROUP)?;
    check("inter_op_threads", c.inter_op_threads, 3 * MAX_THREADS_PER_GROUP)?;
    check("data_loader_workers", c.data_loader_workers, MAX_THREADS_PER_GROUP)?;
    check("intra_op_threads", c.intra_op_threads, MAX_THREADS_PER_GROUP)?;
    check("cuda_streams", c.cuda_streams, 3)?;
    check("result_retention", c.result_retention, MAX_RESULT_RETENTION)?;
    if c.max_queue_depth == 0 || c.max_queue_depth > MAX_QUEUE_DEPTH {
        return Err(invalid!("max_queue_depth = {} must be in 1..={MAX_QUEUE_DEPTH}", c.max_queue_depth));
    }
    let t = c.target_cycle_time_ms;
    if !t.is_finite() || !(0.0..=MAX_TARGET_CYCLE_TIME_MS).contains(&t) {
        return Err(invalid!("target_cycle_time_ms = {t} must be finite and in 0..={MAX_TARGET_CYCLE_TIME_MS}"));
    }
    if c.threads_per_stream == 0 {
        c.threads_per_stream = if c.inter_op_threads > 0 { c.inter_op_threads.div_ceil(3) } else { (cpus / 3).max(1) };
    }
    c.inter_op_threads = 3 * c.threads_per_stream;
    if c.data_loader_workers == 0 {
        c.data_loader_workers = rec.data_loader_workers;
    }
    if c.intra_op_threads == 0 {
        c.intra_op_threads = rec.intra_op_threads;
    }
    if c.cuda_streams == 0 {
        c.cuda_streams = 3;
    }
    Ok(c)
}

/// Pins the calling thread to a set of CPUs.
fn pin_current_to(cpus: &[usize]) -> bool {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let mut any = false;
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: c < CPU_SETSIZE, the bound CPU_SET requires.
        unsafe { libc::CPU_SET(c, &mut set) };
        any = true;
    }
    // SAFETY: pid 0 is the calling thread; pointer and size describe `set`.
    any && unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } == 0
}

/// Tries SCHED_FIFO, then SCHED_RR, at their lowest priority.
fn set_realtime(thread: libc::pthread_t) -> std::result::Result<&'static str, String> {
    let mut last = 0;
    for (policy, name) in [(libc::SCHED_FIFO, "SCHED_FIFO"), (libc::SCHED_RR, "SCHED_RR")] {
        // SAFETY: sched_get_priority_min only reads its argument.
        let prio = unsafe { libc::sched_get_priority_min(policy) };
        // SAFETY: sched_param is plain data; zero is a valid start.
        let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
        param.sched_priority = prio.max(1);
        // SAFETY: `thread` names a thread that is alive (the caller holds
        // its join handle or is that thread); `param` is a valid struct.
        let rc = unsafe { libc::pthread_setschedparam(thread, policy, &param) };
        if rc == 0 {
            return Ok(name);
        }
        last = rc;
    }
    Err(format!(
        "real-time scheduling (SCHED_FIFO/SCHED_RR) refused: {} (needs CAP_SYS_NICE or an RLIMIT_RTPRIO)",
        std::io::Error::from_raw_os_error(last)
    ))
}

/// The per-stream CPU plan for `configure_numa_affinity`.
fn affinity_plan(topo: &CpuTopology) -> AffinityReport {
    let nodes = topo.nodes.len().max(1);
    let mut stream_cpus: [Vec<usize>; 3] = Default::default();
    let shared;
    let summary;
    if topo.nodes.len() > 1 {
        for (i, cpus) in stream_cpus.iter_mut().enumerate() {
            *cpus = topo.nodes[i % nodes].cpus.clone();
        }
        shared = nodes < 3;
        summary = format!(
            "{nodes} NUMA nodes: stream i pinned to node i mod {nodes} (nodes {}, {}, {}){}",
            topo.nodes[0].id,
            topo.nodes[1 % nodes].id,
            topo.nodes[2 % nodes].id,
            if shared { "; fewer nodes than streams, so streams share a node" } else { "" }
        );
    } else {
        let order = topo.pinning_order();
        if order.len() >= 3 {
            for (k, &cpu) in order.iter().enumerate() {
                stream_cpus[k % 3].push(cpu);
            }
            for cpus in &mut stream_cpus {
                cpus.sort_unstable();
            }
            shared = false;
            summary = format!(
                "1 NUMA node, {} usable CPUs: disjoint CPU sets per stream {:?} / {:?} / {:?}",
                order.len(),
                stream_cpus[0],
                stream_cpus[1],
                stream_cpus[2]
            );
        } else if order.is_empty() {
            shared = true;
            summary = "no usable CPU found; workers not pinned".to_string();
        } else {
            for (i, cpus) in stream_cpus.iter_mut().enumerate() {
                *cpus = vec![order[i % order.len()]];
            }
            shared = true;
            summary = format!(
                "1 NUMA node with only {} usable CPU(s): sharing was necessary, streams pinned to {:?} / {:?} / {:?}",
                order.len(),
                stream_cpus[0],
                stream_cpus[1],
                stream_cpus[2]
            );
        }
    }
    AffinityReport { nodes, stream_cpus, shared_cpus: shared, summary }
}

impl EchobeatsPool {
    /// Validates `config` and creates the pool. Threads start lazily, with
    /// the first task of their layer. With `enable_numa_affinity` the CPU
    /// plan is made here, so every worker pins itself before its first
    /// task; with `enable_realtime_priority` real-time scheduling is tried
    /// (a refusal is logged, not fatal).
    ///
    /// Errors: `InvalidArgument` for absurd sizes (above
    /// [`MAX_THREADS_PER_GROUP`], [`MAX_QUEUE_DEPTH`],
    /// [`MAX_RESULT_RETENTION`], more than 3 lanes), `max_queue_depth` 0, or
    /// a NaN/negative/too large `target_cycle_time_ms`.
    pub fn new(config: PoolConfig) -> Result<Self> {
        let cpus = usable_cpus();
        let cfg = resolve(config, cpus)?;
        let ring = cfg.result_retention.max((6 * cfg.max_queue_depth).min(1 << 20)).min(MAX_RING);
        let tps = cfg.threads_per_stream;
        let inner = Arc::new(Inner {
            lanes: cfg.cuda_streams,
            #[cfg(feature = "cuda")]
            cuda: crate::sys::cuda::new_streams(cfg.cuda_streams),
            epoch: Instant::now(),
            next_id: CachePadded::new(AtomicU64::new(1)),
            streams: std::array::from_fn(|_| StreamState {
                counts: CachePadded::new(AtomicU64::new(0)),
                sub: CachePadded::new(SubmitCounters::default()),
                m: CachePadded::new(Counters::new()),
                space_lock: Mutex::new(()),
                space_cv: Condvar::new(),
                space_waiters: AtomicUsize::new(0),
            }),
            execs: [
                Executor::new("cerebral", tps),
                Executor::new("somatic", tps),
                Executor::new("autonomic", tps),
                Executor::new("loader", cfg.data_loader_workers),
            ],
            records: RecordTable::new(ring),
            closing: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            idle_lock: Mutex::new(()),
            idle_cv: Condvar::new(),
            idle_waiters: AtomicUsize::new(0),
            spinners: AtomicUsize::new(0),
            max_spinners: (2 * cpus).max(4),
            step: AtomicI32::new(1),
            cycle_start_ns: AtomicU64::new(0),
            cycles: AtomicU64::new(0),
            cycle_ns: AtomicU64::new(0),
            sync_events: AtomicU64::new(0),
            sync_ns: AtomicU64::new(0),
            cycle_lock: Mutex::new(()),
            pace_lock: Mutex::new(()),
            pace_cv: Condvar::new(),
            barriers: Mutex::new(HashMap::new()),
            next_barrier: AtomicU64::new(1),
            affinity: Mutex::new(Default::default()),
            affinity_gen: AtomicU64::new(0),
            realtime: AtomicBool::new(false),
            intra: Mutex::new(Intra::default()),
            intra_alive: Arc::new((Mutex::new(0), Condvar::new())),
            unfinished_at_close: AtomicU64::new(0),
            cancelled_total: AtomicU64::new(0),
            cancelled_at_close: AtomicU64::new(0),
            join_state: Mutex::new(None),
            cfg,
        });
        let pool = EchobeatsPool { inner };
        if pool.inner.cfg.enable_numa_affinity {
            pool.configure_numa_affinity();
        }
        if pool.inner.cfg.enable_realtime_priority {
            if let Err(e) = pool.enable_realtime_priority() {
                pool.inner.log(LogLevel::Warning, || format!("echobeats: {}", e.message()));
            }
        }
        Ok(pool)
    }

    /// The configuration in effect, with every auto (0) value resolved.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.cfg
    }

    /// Submits one task; returns its id (from 1).
    ///
    /// Errors: `InvalidArgument` (step outside 1..=12, non-finite priority,
    /// a dependency never issued), `Full` (backpressure), `WrongState`
    /// (shut down), `System` (no worker thread could be started).
    pub fn submit(&self, task: TaskSpec) -> Result<u64> {
        self.inner.submit_one(task)
    }

    /// Submits several tasks, all or nothing: either every task is accepted
    /// (consecutive ids, in order, returned) or none is (the error of the
    /// first problem; nothing was queued). A batch needs room for all of
    /// its tasks in each stream at once: more than `max_queue_depth` for
    /// one stream fails with `Full`. A task may depend only on ids issued
    /// before the batch.
    pub fn submit_batch(&self, tasks: Vec<TaskSpec>) -> Result<Vec<u64>> {
        self.inner.submit_many(tasks)
    }

    /// Submits `work` for `step` (1..=12, else `InvalidArgument`) with the
    /// stream, phase and layer of the step tables.
    pub fn submit_for_step(&self, work: Work, step: i32, priority: f32) -> Result<u64> {
        let spec = TaskSpec {
            work,
            stream: stream_for_step(step),
            phase: phase_for_step(step),
            step,
            priority,
            layer: super::layer_for_step(step),
            deadline: None,
            dependencies: Vec::new(),
        };
        self.inner.submit_one(spec)
    }

    /// Waits for a task; `None` waits forever. Returns the final status with
    /// the result when it finished (any number of times, from any thread,
    /// while the result is retained), `(Timeout, None)` when the time ran
    /// out, `(Unknown, None)` at once for ids never issued or dropped.
    pub fn wait_task(&self, id: u64, timeout: Option<Duration>) -> (TaskStatus, Option<TaskResult>) {
        self.inner.wait_task(id, timeout)
    }

    /// Waits until the stream has nothing queued, pending or running (all
    /// layers); `None` waits forever. False when the time ran out.
    pub fn wait_stream(&self, stream: CognitiveStream, timeout: Option<Duration>) -> bool {
        let mut mask = [false; 3];
        mask[stream as usize] = true;
        self.inner.wait_idle(mask, deadline_after(timeout))
    }

    /// Waits until all three streams are quiescent at once; records a sync
    /// event and its duration on success. False when the time ran out.
    pub fn synchronize_streams(&self, timeout: Option<Duration>) -> bool {
        self.inner.synchronize(deadline_after(timeout))
    }

    /// Moves to the next step and returns it. Leaving an Integration step
    /// (4, 8, 12) first synchronises the streams, waiting at most
    /// [`STEP_SYNC_TIMEOUT`] (it moves on regardless); 12 → 1 completes a
    /// cycle (counted, timed from the previous wrap or `run_cycle` start).
    /// Serialised with `run_cycle`.
    pub fn advance_step(&self) -> i32 {
        let _g = self.inner.cycle_lock.lock();
        self.inner.advance_locked(false)
    }

    /// Runs one cycle from step 1: at each step waits (at most
    /// [`STEP_SYNC_TIMEOUT`]) for that step's stream to quiesce and
    /// advances, synchronising all streams when leaving 4, 8 and 12. If the
    /// cycle took less than `target_cycle_time_ms`, waits out the rest
    /// (shutdown interrupts the wait). Returns the cycle's time in µs,
    /// pacing included, which is also what the cycle metrics record.
    /// Concurrent calls are serialised; getters may run meanwhile.
    pub fn run_cycle(&self) -> u64 {
        self.inner.run_cycle()
    }

    /// Runs `f(i)` for every `i` in `range` on the intra-op pool and returns
    /// when all are done (what [`TaskContext::parallel_for`] gives a task,
    /// for callers that have only the pool, such as the C ABI).
    pub fn parallel_for(&self, range: std::ops::Range<usize>, f: impl Fn(usize) + Send + Sync) {
        self.inner.parallel_for(range, f)
    }

    /// The current step, 1..=12.
    pub fn current_step(&self) -> i32 {
        self.inner.step.load(Acquire)
    }

    /// The current step's stream.
    pub fn current_stream(&self) -> CognitiveStream {
        stream_for_step(self.current_step())
    }

    /// The current step's phase.
    pub fn current_phase(&self) -> CognitivePhase {
        phase_for_step(self.current_step())
    }

    /// The current step's mode.
    pub fn current_mode(&self) -> ProcessingMode {
        super::mode_for_step(self.current_step())
    }

    /// Creates a reusable barrier for `parties` (≥ 1, else
    /// `InvalidArgument`; the original used [`DEFAULT_BARRIER_PARTIES`]).
    pub fn create_barrier(&self, parties: usize) -> Result<u64> {
        if parties == 0 {
            return Err(invalid!("a barrier needs at least one party"));
        }
        if self.inner.closing.load(Acquire) {
            return Err(Error::WrongState("the pool is shut down".into()));
        }
        let id = self.inner.next_barrier.fetch_add(1, Relaxed);
        let b = Barrier {
            parties,
            state: Mutex::new(BarrierState { arrived: 0, generation: 0, destroyed: false }),
            cv: Condvar::new(),
        };
        self.inner.barriers.lock().insert(id, Arc::new(b));
        Ok(id)
    }

    /// Arrives at a barrier and waits for the other parties; `None` waits
    /// forever. `Ok(true)` when all arrived (the barrier then resets for the
    /// next round), `Ok(false)` on timeout (this arrival is withdrawn).
    /// Errors: `InvalidArgument` for an unknown or destroyed id,
    /// `WrongState` when the barrier is destroyed while waiting.
    pub fn wait_at_barrier(&self, id: u64, timeout: Option<Duration>) -> Result<bool> {
        let Some(b) = self.inner.barriers.lock().get(&id).cloned() else {
            return Err(invalid!("unknown barrier {id}"));
        };
        let deadline = deadline_after(timeout);
        let mut st = b.state.lock();
        if st.destroyed {
            return Err(invalid!("barrier {id} was destroyed"));
        }
        st.arrived += 1;
        if st.arrived == b.parties {
            st.arrived = 0;
            st.generation = st.generation.wrapping_add(1);
            b.cv.notify_all();
            return Ok(true);
        }
        let gen = st.generation;
        loop {
            if st.generation != gen {
                return Ok(true);
            }
            if st.destroyed {
                return Err(Error::WrongState(format!("barrier {id} was destroyed while waiting")));
            }
            match deadline {
                Some(d) => {
                    if b.cv.wait_until(&mut st, d).timed_out() {
                        if st.generation != gen {
                            return Ok(true);
                        }
                        if st.destroyed {
                            return Err(Error::WrongState(format!("barrier {id} was destroyed while waiting")));
                        }
                        st.arrived -= 1;
                        return Ok(false);
                    }
                }
                None => b.cv.wait(&mut st),
            }
        }
    }

    /// Destroys a barrier and frees it; threads waiting at it return
    /// `Err(WrongState)`. Unknown id → `InvalidArgument`.
    pub fn destroy_barrier(&self, id: u64) -> Result<()> {
        let b = self.inner.barriers.lock().remove(&id).ok_or_else(|| invalid!("unknown barrier {id}"))?;
        b.state.lock().destroyed = true;
        b.cv.notify_all();
        Ok(())
    }

    /// Barriers currently alive (created and not destroyed).
    pub fn barrier_count(&self) -> usize {
        self.inner.barriers.lock().len()
    }

    /// A copy of the counters.
    pub fn metrics(&self) -> PoolMetrics {
        let i = &self.inner;
        PoolMetrics {
            streams: std::array::from_fn(|s| {
                let m = &i.streams[s].m;
                let sub = &i.streams[s].sub;
                let depth = waiting_of(i.streams[s].counts.load(Acquire)).min(i.cfg.max_queue_depth as u64);
                StreamMetrics {
                    tasks_submitted: sub.submitted.load(Relaxed),
                    tasks_completed: m.completed.load(Relaxed),
                    tasks_failed: m.failed.load(Relaxed),
                    tasks_expired: m.expired.load(Relaxed),
                    tasks_cancelled: m.cancelled.load(Relaxed),
                    tasks_run: m.run.load(Relaxed),
                    total_execution_us: m.total_exec.load(Relaxed) / 1000,
                    max_execution_us: m.max_exec.load(Relaxed) / 1000,
                    min_execution_us: match m.min_exec.load(Relaxed) {
                        u64::MAX => u64::MAX,
                        ns => ns / 1000,
                    },
                    queue_wait_us: m.queue_wait.load(Relaxed) / 1000,
                    contention_events: m.contention.load(Relaxed),
                    current_queue_depth: depth.min(u64::from(u32::MAX)) as u32,
                    max_queue_depth: sub.max_depth.load(Relaxed).max(depth).min(u64::from(u32::MAX)) as u32,
                }
            }),
            cycles_completed: i.cycles.load(Relaxed),
            total_cycle_us: i.cycle_ns.load(Relaxed) / 1000,
            sync_events: i.sync_events.load(Relaxed),
            sync_wait_us: i.sync_ns.load(Relaxed) / 1000,
        }
    }

    /// Zeroes the counters (minimum back to u64::MAX); the current queue
    /// depth stays truthful and becomes the new maximum.
    pub fn reset_metrics(&self) {
        let i = &self.inner;
        for st in &i.streams {
            let m = &st.m;
            for a in [
                &st.sub.submitted,
                &m.completed,
                &m.failed,
                &m.expired,
                &m.cancelled,
                &m.run,
                &m.total_exec,
                &m.max_exec,
                &m.queue_wait,
                &m.contention,
            ] {
                a.store(0, Relaxed);
            }
            m.min_exec.store(u64::MAX, Relaxed);
            st.sub.max_depth.store(waiting_of(st.counts.load(Acquire)).min(i.cfg.max_queue_depth as u64), Relaxed);
        }
        for a in [&i.cycles, &i.cycle_ns, &i.sync_events, &i.sync_ns] {
            a.store(0, Relaxed);
        }
    }

    /// Pins each stream's workers by the CPU/NUMA layout read from sysfs:
    /// stream i to node i mod nodes; on one node, to disjoint CPU sets when
    /// there are at least 3 usable CPUs (else CPUs are shared, reported).
    /// Workers apply the plan before their first task, and running workers
    /// re-pin themselves at their next task boundary. Data-loader and
    /// intra-op threads stay unpinned.
    pub fn configure_numa_affinity(&self) -> AffinityReport {
        let report = affinity_plan(&CpuTopology::detect());
        *self.inner.affinity.lock() = report.stream_cpus.clone();
        self.inner.affinity_gen.fetch_add(1, Release);
        self.inner.log(LogLevel::Info, || format!("echobeats: NUMA affinity: {}", report.summary));
        report
    }

    /// Switches the pool's workers (those running and those started later)
    /// to real-time scheduling, SCHED_FIFO or else SCHED_RR at the lowest
    /// real-time priority. `Err(System)` with the reason when the OS
    /// refuses (typically EPERM without CAP_SYS_NICE, refused for the first
    /// thread already, so that nothing changed); later workers then keep
    /// the normal policy.
    pub fn enable_realtime_priority(&self) -> Result<()> {
        use std::os::unix::thread::JoinHandleExt;
        let i = &self.inner;
        let sets: Vec<MutexGuard<'_, ThreadSet>> = i.execs.iter().map(|e| e.threads.lock()).collect();
        let threads: Vec<libc::pthread_t> =
            sets.iter().flat_map(|s| s.handles.iter().map(|h| h.as_pthread_t())).collect();
        let outcome = if threads.is_empty() {
            // No worker yet: probe with a short-lived thread of our own.
            std::thread::Builder::new()
                .name("echobeats-rt-probe".into())
                // SAFETY: pthread_self only returns the calling thread's id.
                .spawn(|| set_realtime(unsafe { libc::pthread_self() }))
                .map_err(|e| format!("cannot start a probe thread: {e}"))
                .and_then(|h| h.join().unwrap_or_else(|_| Err("probe thread panicked".into())))
        } else {
            threads.iter().try_fold("", |_, &t| set_realtime(t))
        };
        drop(sets);
        match outcome {
            Ok(policy) => {
                i.realtime.store(true, Release);
                i.log(LogLevel::Info, || format!("echobeats: workers now run under {policy}"));
                Ok(())
            }
            Err(msg) => {
                i.log(LogLevel::Warning, || format!("echobeats: {msg}"));
                Err(Error::System(msg))
            }
        }
    }

    /// The design's thread table scaled down to the CPUs this process may
    /// use (never above the design): per stream `clamp(cpus / 3, 1, 4)`
    /// inter-op workers, `clamp(cpus, 1, 12)` intra-op threads,
    /// `clamp(3 × cpus / 4, 1, 9)` data-loader workers, 3 CUDA streams.
    pub fn recommended_config() -> RecommendedConfig {
        Self::recommended_config_for(usable_cpus())
    }

    fn recommended_config_for(cpus: usize) -> RecommendedConfig {
        let cpus = cpus.max(1);
        RecommendedConfig {
            inter_op_threads: 3 * (cpus / 3).clamp(1, 4),
            intra_op_threads: cpus.clamp(1, 12),
            data_loader_workers: (3 * cpus / 4).clamp(1, 9),
            cuda_streams: 3,
            usable_cpus: cpus,
        }
    }

    /// How ordered lanes run: with a CUDA stream each when the `cuda`
    /// feature found a device, else as ordered CPU lanes.
    pub fn ordered_lane_kind(&self) -> OrderedLaneKind {
        #[cfg(feature = "cuda")]
        if self.inner.cuda.is_some() {
            return OrderedLaneKind::Cuda;
        }
        OrderedLaneKind::Cpu
    }

    /// Shuts the pool down (see the rules above); idempotent: later calls
    /// return the first call's counts with `first_call` false. Afterwards
    /// every submit fails with `WrongState`; results stay readable.
    pub fn shutdown(&self) -> ShutdownReport {
        self.inner.shutdown()
    }
}

impl Drop for EchobeatsPool {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

impl TaskContext<'_> {
    /// Runs `f(i)` for every `i` in `range` on the intra-op pool
    /// (`intra_op_threads` rayon threads, built on first use), returning
    /// when all are done. Meant for `IntraOp` tasks; works in any task. A
    /// panic in `f` fails the calling task. After shutdown the loop runs on
    /// the calling thread.
    pub fn parallel_for(&self, range: std::ops::Range<usize>, f: impl Fn(usize) + Send + Sync) {
        self.pool.parallel_for(range, f)
    }

    /// The CUDA stream of this task's ordered lane, for a `CudaStream`
    /// task on a pool that found a device (feature `cuda`): work queued on
    /// it runs in lane order, and the task counts as finished only when the
    /// stream has drained.
    #[cfg(feature = "cuda")]
    pub fn cuda_stream(&self) -> Option<&Arc<cudarc::driver::CudaStream>> {
        if self.layer != PoolLayer::CudaStream {
            return None;
        }
        self.pool.cuda.as_ref()?.get(self.stream as usize % self.pool.lanes)
    }
}

impl Inner {
    /// See [`TaskContext::parallel_for`].
    fn parallel_for(&self, range: std::ops::Range<usize>, f: impl Fn(usize) + Send + Sync) {
        use rayon::prelude::*;
        match self.intra_pool() {
            Some(pool) => pool.install(|| range.into_par_iter().for_each(f)),
            None => range.for_each(f),
        }
    }
}

fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Spins up to `limit` until `done` holds, offering the CPU to any other
/// runnable thread between rounds (`sched_yield` returns at once when there
/// is none): a spinning thread then never takes CPU time from a submitter
/// or a worker that shares its CPU, which on a small machine (more pool
/// threads than CPUs) is what makes spinning pay.
fn polite_spin_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if done() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= limit {
            return done();
        }
        std::thread::yield_now();
    }
}

impl Inner {
    fn log(&self, level: LogLevel, msg: impl FnOnce() -> String) {
        if let Some(f) = &self.cfg.log {
            f(level, &msg());
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn instant_ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos().min(u128::from(u64::MAX - 1)) as u64
    }

    fn on_worker_thread(&self) -> bool {
        CURRENT_POOL.with(|c| c.get()) == self as *const Inner as usize
    }

    /// Executor that runs a task of `stream` on `layer`.
    fn exec_for(&self, stream: usize, layer: PoolLayer) -> usize {
        match layer {
            PoolLayer::DataLoader => LOADER,
            PoolLayer::CudaStream => stream % self.lanes,
            _ => stream,
        }
    }

    // ----- submission -------------------------------------------------

    fn validate(&self, spec: &mut TaskSpec, issued: u64) -> Result<()> {
        if !is_valid_step(spec.step) {
            return Err(invalid!("step {} is outside 1..=12", spec.step));
        }
        if !spec.priority.is_finite() {
            return Err(invalid!("priority {} is not finite", spec.priority));
        }
        if !spec.dependencies.is_empty() {
            spec.dependencies.sort_unstable();
            spec.dependencies.dedup();
            if spec.dependencies.len() >= u32::MAX as usize {
                return Err(invalid!("too many dependencies"));
            }
            for &d in &spec.dependencies {
                if d == 0 || d >= issued {
                    return Err(invalid!("dependency {d} was never issued"));
                }
            }
        }
        Ok(())
    }

    fn submit_one(self: &Arc<Self>, mut spec: TaskSpec) -> Result<u64> {
        self.check_open()?;
        self.validate(&mut spec, self.next_id.load(Acquire))?;
        let s = spec.stream as usize;
        self.ensure_started(self.exec_for(s, spec.layer))?;
        self.reserve(s, 1, &mut None)?;
        let id = self.next_id.fetch_add(1, AcqRel);
        self.note_submitted(s, 1);
        self.place(id, spec);
        Ok(id)
    }

    fn submit_many(self: &Arc<Self>, mut specs: Vec<TaskSpec>) -> Result<Vec<u64>> {
        self.check_open()?;
        let issued = self.next_id.load(Acquire);
        let mut per_stream = [0u64; 3];
        for spec in &mut specs {
            self.validate(spec, issued)?;
            per_stream[spec.stream as usize] += 1;
        }
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        for spec in &specs {
            self.ensure_started(self.exec_for(spec.stream as usize, spec.layer))?;
        }
        let mut deadline = None;
        for s in 0..3 {
            if per_stream[s] == 0 {
                continue;
            }
            if let Err(e) = self.reserve(s, per_stream[s], &mut deadline) {
                for (t, &n) in per_stream.iter().enumerate().take(s) {
                    if n > 0 {
                        self.unreserve(t, n);
                    }
                }
                return Err(e);
            }
        }
        let first = self.next_id.fetch_add(specs.len() as u64, AcqRel);
        for (s, &n) in per_stream.iter().enumerate() {
            if n > 0 {
                self.note_submitted(s, n);
            }
        }
        let ids: Vec<u64> = (first..first + specs.len() as u64).collect();
        for (id, spec) in ids.iter().zip(specs) {
            self.place(*id, spec);
        }
        Ok(ids)
    }

    fn check_open(&self) -> Result<()> {
        if self.closing.load(Acquire) {
            return Err(Error::WrongState("the pool is shut down".into()));
        }
        Ok(())
    }

    /// Reserves room for `n` tasks if there is some (exact).
    fn try_reserve(&self, s: usize, n: u64) -> bool {
        let max = self.cfg.max_queue_depth as u64;
        let add = n * (WAITING_ONE + UNFINISHED_ONE);
        self.streams[s].counts.fetch_update(SeqCst, SeqCst, |c| (waiting_of(c) + n <= max).then_some(c + add)).is_ok()
    }

    /// Like `try_reserve` with one atomic add instead of a CAS loop; when
    /// over the limit it takes the add back, so others may briefly see an
    /// over-count: used only where a refusal leads to waiting (never to an
    /// error), and never under `space_lock` (the undo wakes the waiters
    /// that may have seen the over-count).
    fn try_reserve_fast(&self, s: usize, n: u64) -> bool {
        let max = self.cfg.max_queue_depth as u64;
        let prev = self.streams[s].counts.fetch_add(n * (WAITING_ONE + UNFINISHED_ONE), SeqCst);
        if waiting_of(prev) + n <= max {
            return true;
        }
        self.unreserve(s, n);
        false
    }

    /// Makes room for `n` tasks in stream `s` (backpressure), counting them
    /// as waiting and unfinished; fails when the pool is closing. `deadline`
    /// is when waiting for room ends (`Some(None)`: never), fixed by the
    /// first wait of a submit call.
    fn reserve(&self, s: usize, n: u64, deadline: &mut Option<Option<Instant>>) -> Result<()> {
        let max = self.cfg.max_queue_depth as u64;
        if n > max {
            return Err(Error::Full(format!("{n} tasks for one stream exceed max_queue_depth {max}")));
        }
        let room = match self.cfg.backpressure {
            Backpressure::Wait(_) => self.try_reserve_fast(s, n),
            Backpressure::Reject => self.try_reserve(s, n),
        };
        if !room {
            let Backpressure::Wait(limit) = self.cfg.backpressure else {
                return Err(Error::Full(format!("stream {s} holds max_queue_depth {max} tasks")));
            };
            let until = *deadline.get_or_insert_with(|| Instant::now().checked_add(limit));
            self.wait_for_room(s, n, until)?;
        }
        // Dekker with `begin_close`: either it sees this task counted, or
        // this sees it closing.
        if self.closing.load(SeqCst) {
            self.unreserve(s, n);
            return Err(Error::WrongState("the pool is shut down".into()));
        }
        Ok(())
    }

    #[cold]
    fn wait_for_room(&self, s: usize, n: u64, deadline: Option<Instant>) -> Result<()> {
        let st = &self.streams[s];
        let mut g = st.space_lock.lock();
        st.space_waiters.fetch_add(1, SeqCst);
        let out = loop {
            if self.try_reserve(s, n) {
                break Ok(());
            }
            if self.closing.load(SeqCst) {
                break Err(Error::WrongState("the pool is shut down".into()));
            }
            match deadline {
                Some(d) => {
                    if st.space_cv.wait_until(&mut g, d).timed_out() {
                        break if self.try_reserve(s, n) {
                            Ok(())
                        } else {
                            Err(Error::Full(format!(
                                "stream {s} stayed at max_queue_depth {} for the backpressure timeout",
                                self.cfg.max_queue_depth
                            )))
                        };
                    }
                }
                None => st.space_cv.wait(&mut g),
            }
        };
        st.space_waiters.fetch_sub(1, SeqCst);
        out
    }

    /// Gives back a reservation that was not used.
    fn unreserve(&self, s: usize, n: u64) {
        let prev = self.streams[s].counts.fetch_sub(n * (WAITING_ONE + UNFINISHED_ONE), SeqCst);
        self.room_made(s);
        if unfinished_of(prev) == n {
            self.stream_idle();
        }
    }

    fn note_submitted(&self, s: usize, n: u64) {
        let st = &self.streams[s];
        st.sub.submitted.fetch_add(n, Relaxed);
        // (Clamped: a concurrent `try_reserve_fast` may over-count briefly.)
        let depth = waiting_of(st.counts.load(Relaxed)).min(self.cfg.max_queue_depth as u64);
        if depth > st.sub.max_depth.load(Relaxed) {
            st.sub.max_depth.fetch_max(depth, Relaxed);
        }
    }

    /// Records and queues an accepted task (its room is reserved).
    fn place(&self, id: u64, spec: TaskSpec) {
        let TaskSpec { work, stream, phase, step, priority, layer, deadline, dependencies } = spec;
        let now = self.now_ns();
        let s = stream as usize;
        let e = self.exec_for(s, layer);
        let lane = layer == PoolLayer::CudaStream;
        let entry = Entry {
            key: entry_key(priority_key(priority), id),
            work,
            deadline: deadline.map_or(u64::MAX, |d| self.instant_ns(d)),
            enqueued: now,
            step,
            stream,
            phase,
            layer,
        };
        let mut rec = Record {
            id,
            state: State::Queued,
            stream,
            phase,
            layer,
            step,
            pending: 0,
            exec_ns: 0,
            wait_ns: 0,
            extra: None,
            payload: None,
        };
        if dependencies.is_empty() {
            self.records.install(rec);
            if lane {
                self.push_lane(e, entry, true);
            } else {
                self.push(e, entry);
            }
            return;
        }
        rec.state = State::Pending;
        rec.pending = 1 + dependencies.len() as u32;
        if lane {
            // In its lane already (not ready), so that a failing dependency
            // always finds it there to remove.
            self.push_lane(e, entry, false);
        } else {
            rec.payload = Some(Box::new(entry));
        }
        self.records.install(rec);
        let mut satisfied = 1; // the guard
        for &d in &dependencies {
            match self.register_dependent(d, id) {
                Dep::Satisfied => satisfied += 1,
                Dep::Registered => {}
                Dep::Failed(dep_status) => {
                    let status =
                        if dep_status == TaskStatus::Cancelled { TaskStatus::Cancelled } else { TaskStatus::Failed };
                    let mut settle = Settle::default();
                    self.complete(
                        Finish { id, status, exec_ns: 0, wait_ns: 0, ran: false, from: Origin::Pending },
                        &mut settle,
                    );
                    self.settle(&mut settle);
                    return;
                }
            }
        }
        let mut settle = Settle::default();
        self.satisfy(id, satisfied, &mut settle);
        self.settle(&mut settle);
    }

    fn register_dependent(&self, dep: u64, id: u64) -> Dep {
        let seen = self.records.with(dep, |r| match r.state {
            State::Done(TaskStatus::Completed) => Dep::Satisfied,
            State::Done(st) => Dep::Failed(st),
            _ => {
                r.extra.get_or_insert_with(Default::default).dependents.push(id);
                Dep::Registered
            }
        });
        match seen {
            Some(d) => d,
            None if self.records.dropped_failed(dep) => Dep::Failed(TaskStatus::Failed),
            None => Dep::Satisfied,
        }
    }

    /// `k` dependencies of `id` are met; releases it when none is left.
    fn satisfy(&self, id: u64, k: u32, settle: &mut Settle) {
        let released = self.records.with(id, |r| {
            if r.state != State::Pending {
                return None;
            }
            r.pending -= k;
            if r.pending > 0 {
                return None;
            }
            r.state = State::Queued;
            Some((r.stream as usize, r.layer, r.payload.take()))
        });
        if let Some(Some((s, layer, payload))) = released {
            if self.cancel.load(SeqCst) {
                let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                self.complete(
                    Finish {
                        id,
                        status: TaskStatus::Cancelled,
                        exec_ns: 0,
                        wait_ns: 0,
                        ran: false,
                        from: Origin::Released,
                    },
                    settle,
                );
                return;
            }
            let e = self.exec_for(s, layer);
            let now = self.now_ns();
            match payload {
                Some(mut entry) => {
                    entry.enqueued = now;
                    self.push(e, *entry);
                }
                None => self.ready_lane(e, id, now),
            }
        }
    }

    // ----- queues and wake-ups -----------------------------------------

    /// Locks an executor's queue, counting contention on stream `s`.
    fn lock_queue(&self, e: usize, s: usize) -> MutexGuard<'_, Queue> {
        let q = &self.execs[e].queue;
        q.try_lock().unwrap_or_else(|| {
            self.streams[s].m.contention.fetch_add(1, Relaxed);
            q.lock()
        })
    }

    fn push(&self, e: usize, entry: Entry) {
        let s = entry.stream as usize;
        let mut q = self.lock_queue(e, s);
        q.heap.push(entry);
        self.execs[e].avail.store(q.available(), Relaxed);
        drop(q);
        self.wake(e);
    }

    fn push_lane(&self, e: usize, entry: Entry, ready: bool) {
        let s = entry.stream as usize;
        let id = key_id(entry.key);
        let mut q = self.lock_queue(e, s);
        let lane_entry = LaneEntry { entry, ready };
        match q.lane.back() {
            Some(last) if key_id(last.entry.key) > id => {
                let at = q.lane_position(id).unwrap_or_else(|i| i);
                q.lane.insert(at, lane_entry);
            }
            _ => q.lane.push_back(lane_entry),
        }
        self.execs[e].avail.store(q.available(), Relaxed);
        drop(q);
        if ready {
            self.wake(e);
        }
    }

    fn ready_lane(&self, e: usize, id: u64, now: u64) {
        let mut q = self.execs[e].queue.lock();
        if let Ok(i) = q.lane_position(id) {
            q.lane[i].ready = true;
            q.lane[i].entry.enqueued = now;
        }
        self.execs[e].avail.store(q.available(), Relaxed);
        drop(q);
        self.wake(e);
    }

    /// Takes a lane task that will never run out of its lane; returns it
    /// (to be dropped outside the lock).
    fn remove_lane(&self, e: usize, id: u64) -> Option<LaneEntry> {
        let mut q = self.execs[e].queue.lock();
        let removed = q.lane_position(id).ok().and_then(|i| q.lane.remove(i));
        let avail = q.available();
        self.execs[e].avail.store(avail, Relaxed);
        drop(q);
        if avail > 0 {
            self.wake(e);
        }
        removed
    }

    /// Wakes a parked worker of executor `e` unless one is spinning (it
    /// will find the work) or none is parked.
    fn wake(&self, e: usize) {
        let ex = &self.execs[e];
        fence(SeqCst);
        if ex.spinning.load(SeqCst) > 0 || ex.sleepers.load(SeqCst) == 0 {
            return;
        }
        let n = ex.slots.len();
        let start = if n > 1 { ex.wake_cursor.fetch_add(1, Relaxed) } else { 0 };
        for i in 0..n {
            if Self::wake_slot(&ex.slots[(start + i) % n]) {
                return;
            }
        }
    }

    fn wake_slot(slot: &WorkerSlot) -> bool {
        if slot.sleeping.load(SeqCst) && slot.sleeping.swap(false, SeqCst) {
            slot.parker.unpark();
            return true;
        }
        false
    }

    fn wake_all_workers(&self) {
        fence(SeqCst);
        for ex in &self.execs {
            for slot in ex.slots.iter() {
                Self::wake_slot(slot);
            }
        }
    }

    // ----- workers -----------------------------------------------------

    fn ensure_started(self: &Arc<Self>, e: usize) -> Result<()> {
        if self.execs[e].started.load(Acquire) {
            return Ok(());
        }
        self.start_executor(e)
    }

    #[cold]
    fn start_executor(self: &Arc<Self>, e: usize) -> Result<()> {
        let ex = &self.execs[e];
        let mut ts = ex.threads.lock();
        if ex.started.load(Acquire) {
            return Ok(());
        }
        if ts.closed {
            return Err(Error::WrongState("the pool is shut down".into()));
        }
        for w in 0..ex.slots.len() {
            let inner = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name(format!("echobeats-{}-{w}", ex.name))
                .spawn(move || inner.worker(e, w));
            match spawned {
                Ok(h) => ts.handles.push(h),
                Err(err) if ts.handles.is_empty() => {
                    return Err(Error::System(format!("cannot start an echobeats {} worker: {err}", ex.name)));
                }
                Err(err) => {
                    self.log(LogLevel::Warning, || format!("echobeats: started only {w} {} workers: {err}", ex.name));
                    break;
                }
            }
        }
        ex.started.store(true, Release);
        Ok(())
    }

    fn worker(self: Arc<Self>, e: usize, w: usize) {
        CURRENT_POOL.with(|c| c.set(Arc::as_ptr(&self) as usize));
        if self.realtime.load(Acquire) {
            // SAFETY: pthread_self only returns the calling thread's id.
            if let Err(msg) = set_realtime(unsafe { libc::pthread_self() }) {
                self.log(LogLevel::Warning, || format!("echobeats: {msg}"));
            }
        }
        // A lone worker takes several short tasks per lock: it would run
        // them in this order anyway, and the batch is sized so that it
        // lasts about BATCH_TARGET (a later, more urgent task waits at
        // most that long). Several workers take one task at a time, so
        // that none holds back work another could run.
        let batching = self.execs[e].slots.len() == 1;
        let mut batch: Vec<Entry> = Vec::with_capacity(if batching { BATCH_MAX } else { 1 });
        let mut ns_per_task = BATCH_TARGET.as_nanos() as f64;
        let mut settle = Settle::default();
        let mut woke = false;
        let mut pinned_gen = 0;
        loop {
            if e < 3 {
                let gen = self.affinity_gen.load(Acquire);
                if gen != pinned_gen {
                    pinned_gen = gen;
                    let cpus = self.affinity.lock()[e].clone();
                    if !cpus.is_empty() && !pin_current_to(&cpus) {
                        self.log(LogLevel::Warning, || format!("echobeats: could not pin a worker to {cpus:?}"));
                    }
                }
            }
            let limit = if batching {
                (BATCH_TARGET.as_nanos() as f64 / ns_per_task).clamp(1.0, BATCH_MAX as f64) as usize
            } else {
                1
            };
            let lane = self.take(e, limit, &mut batch);
            if batch.is_empty() {
                // After waking a thread blocked on the pool, do not spin:
                // the kernel tends to queue it on this very CPU.
                if !self.idle(e, w, !std::mem::take(&mut woke)) {
                    break;
                }
                continue;
            }
            let n = batch.len();
            let started = Instant::now();
            for entry in batch.drain(..) {
                self.run(entry, &mut settle);
            }
            if lane {
                let ex = &self.execs[e];
                let mut q = ex.queue.lock();
                q.lane_busy = false;
                ex.avail.store(q.available(), Relaxed);
            }
            self.settle(&mut settle);
            woke |= std::mem::take(&mut settle.woke);
            let per_task = started.elapsed().as_nanos() as f64 / n as f64;
            ns_per_task = 0.75 * ns_per_task + 0.25 * per_task;
        }
        CURRENT_POOL.with(|c| c.set(0));
    }

    /// Takes up to `limit` tasks of executor `e` into `out`: the lane head
    /// alone if it may run (returns true), else the heap's top ones.
    fn take(&self, e: usize, limit: usize, out: &mut Vec<Entry>) -> bool {
        let ex = &self.execs[e];
        if ex.avail.load(Relaxed) == 0 {
            return false;
        }
        let (mut q, contended) = match ex.queue.try_lock() {
            Some(q) => (q, false),
            None => (ex.queue.lock(), true),
        };
        let lane = !q.lane_busy && q.lane.front().is_some_and(|l| l.ready);
        if lane {
            q.lane_busy = true;
            out.extend(q.lane.pop_front().map(|l| l.entry));
        } else {
            while out.len() < limit {
                match q.heap.pop() {
                    Some(entry) => out.push(entry),
                    None => break,
                }
            }
        }
        let left = q.available();
        ex.avail.store(left, Relaxed);
        drop(q);
        if out.is_empty() {
            return false;
        }
        // No longer waiting: count them out (and make room) at once.
        let mut taken = [0u64; 3];
        for entry in out.iter() {
            taken[entry.stream as usize] += 1;
        }
        for (s, &n) in taken.iter().enumerate() {
            if n > 0 {
                self.streams[s].counts.fetch_sub(n * WAITING_ONE, SeqCst);
                self.room_made(s);
            }
        }
        if contended {
            self.streams[out[0].stream as usize].m.contention.fetch_add(1, Relaxed);
        }
        if left > 0 && ex.slots.len() > 1 {
            self.wake(e);
        }
        lane
    }

    fn run(&self, entry: Entry, settle: &mut Settle) {
        let Entry { key, work, deadline, enqueued, step, stream, phase, layer } = entry;
        let id = key_id(key);
        let start = self.now_ns();
        let wait_ns = start.saturating_sub(enqueued);
        let finish = if self.cancel.load(Relaxed) || start > deadline {
            // Never runs; its captured state is dropped here (a panicking
            // destructor must not take the worker down).
            let _ = catch_unwind(AssertUnwindSafe(move || drop(work)));
            if self.cancel.load(Relaxed) {
                Finish { id, status: TaskStatus::Cancelled, exec_ns: 0, wait_ns: 0, ran: false, from: Origin::Taken }
            } else {
                Finish { id, status: TaskStatus::Expired, exec_ns: 0, wait_ns, ran: false, from: Origin::Taken }
            }
        } else {
            let ctx = TaskContext { pool: self, id, stream, step, phase, layer };
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                work(&ctx)?;
                // A task on a GPU lane is done when its GPU work is.
                #[cfg(feature = "cuda")]
                if let Some(s) = ctx.cuda_stream() {
                    s.synchronize().map_err(|e| format!("CUDA stream: {e:?}"))?;
                }
                Ok::<(), String>(())
            }));
            let exec_ns = self.now_ns().saturating_sub(start).max(1);
            let status = match &outcome {
                Ok(Ok(())) => TaskStatus::Completed,
                _ => TaskStatus::Failed,
            };
            if status == TaskStatus::Failed && log_enabled(&self.cfg) {
                let why = match outcome {
                    Ok(Err(msg)) => msg,
                    Err(p) => p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .map_or_else(|| "panicked".to_string(), |m| format!("panicked: {m}")),
                    Ok(Ok(())) => String::new(),
                };
                self.log(LogLevel::Debug, || format!("echobeats: task {id} failed: {why}"));
            }
            Finish { id, status, exec_ns, wait_ns, ran: true, from: Origin::Taken }
        };
        self.complete(finish, settle);
    }

    /// Spins a little, then parks until work may be there. False when the
    /// worker should leave (closing, and nothing left anywhere).
    fn idle(&self, e: usize, w: usize, spin: bool) -> bool {
        let ex = &self.execs[e];
        let slot = &ex.slots[w];
        if spin && self.spinners.fetch_add(1, Relaxed) < self.max_spinners {
            ex.spinning.fetch_add(1, SeqCst);
            let found = polite_spin_until(WORKER_SPIN, || ex.avail.load(Relaxed) > 0);
            if !found {
                // Announce the nap before no longer counting as spinning,
                // so that a submitter always sees one or the other.
                slot.sleeping.store(true, SeqCst);
                ex.sleepers.fetch_add(1, SeqCst);
            }
            ex.spinning.fetch_sub(1, SeqCst);
            self.spinners.fetch_sub(1, Relaxed);
            if found {
                return true;
            }
        } else {
            if spin {
                self.spinners.fetch_sub(1, Relaxed);
            }
            slot.sleeping.store(true, SeqCst);
            ex.sleepers.fetch_add(1, SeqCst);
        }
        fence(SeqCst);
        let exit = self.may_exit();
        if !exit && ex.avail.load(Relaxed) == 0 {
            slot.parker.park();
        }
        slot.sleeping.store(false, SeqCst);
        ex.sleepers.fetch_sub(1, SeqCst);
        !exit
    }

    fn may_exit(&self) -> bool {
        self.closing.load(SeqCst) && self.streams.iter().all(|s| unfinished_of(s.counts.load(SeqCst)) == 0)
    }

    // ----- completion --------------------------------------------------

    /// Finishes a task and, transitively, what depends on it.
    fn complete(&self, first: Finish, settle: &mut Settle) {
        let mut todo: Vec<Finish> = Vec::new();
        let mut next = Some(first);
        while let Some(f) = next.take().or_else(|| todo.pop()) {
            let Some((status, dependents)) = self.finish_one(&f, settle) else { continue };
            if status == TaskStatus::Completed {
                for d in dependents {
                    self.satisfy(d, 1, settle);
                }
            } else {
                let status = if status == TaskStatus::Cancelled { TaskStatus::Cancelled } else { TaskStatus::Failed };
                todo.extend(dependents.into_iter().map(|id| Finish {
                    id,
                    status,
                    exec_ns: 0,
                    wait_ns: 0,
                    ran: false,
                    from: Origin::Pending,
                }));
            }
        }
    }

    /// Records one task's end: its record, metrics and waiters; its count
    /// goes into `settle`. Returns its status and dependents, or None when
    /// it was not in the expected state (already finished).
    fn finish_one(&self, f: &Finish, settle: &mut Settle) -> Option<(TaskStatus, Vec<u64>)> {
        let (s, layer, dependents, waiters, payload) = self.records.with(f.id, |r| {
            let expected = if f.from == Origin::Pending { State::Pending } else { State::Queued };
            if r.state != expected {
                return None;
            }
            r.state = State::Done(f.status);
            r.exec_ns = f.exec_ns;
            r.wait_ns = f.wait_ns;
            let (deps, waiters) = match r.extra.as_mut() {
                Some(x) => (std::mem::take(&mut x.dependents), x.waiters.clone()),
                None => (Vec::new(), Vec::new()),
            };
            Some((r.stream as usize, r.layer, deps, waiters, r.payload.take()))
        })??;
        // The work of a task that never runs is dropped here, outside every
        // lock (its captured state's destructor may call into the pool),
        // and a panicking destructor must not take the caller down.
        let lane_entry = if f.from != Origin::Taken && layer == PoolLayer::CudaStream {
            self.remove_lane(self.exec_for(s, layer), f.id)
        } else {
            None
        };
        if payload.is_some() || lane_entry.is_some() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop((payload, lane_entry))));
        }
        let m = &self.streams[s].m;
        match f.status {
            TaskStatus::Completed => m.completed.fetch_add(1, Relaxed),
            _ => m.failed.fetch_add(1, Relaxed),
        };
        match f.status {
            TaskStatus::Expired => {
                m.expired.fetch_add(1, Relaxed);
            }
            TaskStatus::Cancelled => {
                m.cancelled.fetch_add(1, Relaxed);
                self.cancelled_total.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        if f.ran {
            m.run.fetch_add(1, Relaxed);
            m.total_exec.fetch_add(f.exec_ns, Relaxed);
            m.queue_wait.fetch_add(f.wait_ns, Relaxed);
            if f.exec_ns > m.max_exec.load(Relaxed) {
                m.max_exec.fetch_max(f.exec_ns, Relaxed);
            }
            if f.exec_ns < m.min_exec.load(Relaxed) {
                m.min_exec.fetch_min(f.exec_ns, Relaxed);
            }
        }
        settle.woke |= !waiters.is_empty();
        for t in waiters {
            t.unpark();
        }
        settle.dec[s] += UNFINISHED_ONE + if f.from == Origin::Taken { 0 } else { WAITING_ONE };
        Some((f.status, dependents))
    }

    /// Applies the count changes gathered in `settle` (after the metrics,
    /// so that a quiescent stream's metrics are complete).
    fn settle(&self, settle: &mut Settle) {
        for s in 0..3 {
            let dec = std::mem::take(&mut settle.dec[s]);
            if dec == 0 {
                continue;
            }
            let prev = self.streams[s].counts.fetch_sub(dec, SeqCst);
            if waiting_of(dec) > 0 {
                settle.woke |= self.room_made(s);
            }
            if unfinished_of(prev) == unfinished_of(dec) {
                settle.woke |= self.stream_idle();
            }
        }
    }

    /// A stream's waiting count dropped: wakes submitters waiting for
    /// room. Returns whether there were any.
    fn room_made(&self, s: usize) -> bool {
        let st = &self.streams[s];
        if st.space_waiters.load(SeqCst) > 0 {
            let _g = st.space_lock.lock();
            st.space_cv.notify_all();
            return true;
        }
        false
    }

    /// A stream's unfinished count reached zero: wakes the quiescence
    /// waiters (returns whether there were any) and, when closing, the
    /// workers, which may now leave.
    fn stream_idle(&self) -> bool {
        fence(SeqCst);
        let mut woke = false;
        if self.idle_waiters.load(SeqCst) > 0 {
            let _g = self.idle_lock.lock();
            self.idle_cv.notify_all();
            woke = true;
        }
        if self.closing.load(SeqCst) {
            self.wake_all_workers();
        }
        woke
    }

    // ----- waiting -----------------------------------------------------

    fn wait_task(&self, id: u64, timeout: Option<Duration>) -> (TaskStatus, Option<TaskResult>) {
        if id == 0 || id >= self.next_id.load(Acquire) {
            return (TaskStatus::Unknown, None);
        }
        let peek = || {
            self.records.with(id, |r| match r.state {
                State::Done(st) => Some(r.result(st)),
                _ => None,
            })
        };
        match peek() {
            None => return (TaskStatus::Unknown, None),
            Some(Some(res)) => return (res.status, Some(res)),
            Some(None) => {}
        }
        // No spinning here: the worker this submitter just woke is
        // usually queued on this very CPU, and would wait for the spin.
        let deadline = deadline_after(timeout);
        let me = std::thread::current();
        let mut registered = false;
        loop {
            let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
            let seen = self.records.with(id, |r| {
                let done = match r.state {
                    State::Done(st) => Some(r.result(st)),
                    _ => None,
                };
                if registered && (done.is_some() || timed_out) {
                    if let Some(x) = r.extra.as_mut() {
                        if let Some(i) = x.waiters.iter().position(|t| t.id() == me.id()) {
                            x.waiters.swap_remove(i);
                        }
                    }
                } else if !registered && done.is_none() && !timed_out {
                    r.extra.get_or_insert_with(Default::default).waiters.push(me.clone());
                }
                done
            });
            match seen {
                None => return (TaskStatus::Unknown, None),
                Some(Some(res)) => return (res.status, Some(res)),
                Some(None) if timed_out => return (TaskStatus::Timeout, None),
                Some(None) => registered = true,
            }
            match deadline {
                Some(d) => std::thread::park_timeout(d.saturating_duration_since(Instant::now())),
                None => std::thread::park(),
            }
        }
    }

    /// Waits until the streams in `mask` have no unfinished task.
    fn wait_idle(&self, mask: [bool; 3], deadline: Option<Instant>) -> bool {
        let quiet = || (0..3).all(|s| !mask[s] || unfinished_of(self.streams[s].counts.load(SeqCst)) == 0);
        if quiet() {
            return true;
        }
        if deadline.is_none_or(|d| d > Instant::now()) && polite_spin_until(WAITER_SPIN, quiet) {
            return true;
        }
        let mut g = self.idle_lock.lock();
        self.idle_waiters.fetch_add(1, SeqCst);
        let ok = loop {
            if quiet() {
                break true;
            }
            match deadline {
                Some(d) => {
                    if self.idle_cv.wait_until(&mut g, d).timed_out() {
                        break quiet();
                    }
                }
                None => self.idle_cv.wait(&mut g),
            }
        };
        self.idle_waiters.fetch_sub(1, SeqCst);
        ok
    }

    fn synchronize(&self, deadline: Option<Instant>) -> bool {
        let start = Instant::now();
        let ok = self.wait_idle([true; 3], deadline);
        if ok {
            self.sync_events.fetch_add(1, Relaxed);
            self.sync_ns.fetch_add(start.elapsed().as_nanos() as u64, Relaxed);
        }
        ok
    }

    // ----- the cycle ---------------------------------------------------

    /// Advances one step (the cycle lock is held). `synced`: the caller
    /// already synchronised the streams for this step.
    fn advance_locked(&self, synced: bool) -> i32 {
        let cur = self.step.load(Acquire);
        if !synced && phase_for_step(cur) == CognitivePhase::Integration {
            self.synchronize(deadline_after(Some(STEP_SYNC_TIMEOUT)));
        }
        let next = cur % 12 + 1;
        if next == 1 {
            let now = self.now_ns();
            let started = self.cycle_start_ns.swap(now, AcqRel);
            self.cycle_ns.fetch_add(now.saturating_sub(started), Relaxed);
            self.cycles.fetch_add(1, Relaxed);
        }
        self.step.store(next, Release);
        next
    }

    fn run_cycle(&self) -> u64 {
        let _g = self.cycle_lock.lock();
        let start = Instant::now();
        let start_ns = self.instant_ns(start);
        self.cycle_start_ns.store(start_ns, Release);
        self.step.store(1, Release);
        for step in 1..=12 {
            let mut mask = [false; 3];
            mask[stream_for_step(step) as usize] = true;
            self.wait_idle(mask, deadline_after(Some(STEP_SYNC_TIMEOUT)));
            if step < 12 {
                self.advance_locked(false);
            }
        }
        self.synchronize(deadline_after(Some(STEP_SYNC_TIMEOUT)));
        let target = Duration::from_secs_f64(f64::from(self.cfg.target_cycle_time_ms) / 1000.0);
        if let Some(until) = start.checked_add(target) {
            let mut g = self.pace_lock.lock();
            while !self.closing.load(SeqCst) && Instant::now() < until {
                self.pace_cv.wait_until(&mut g, until);
            }
        }
        self.advance_locked(true);
        let took = self.instant_ns(Instant::now()).saturating_sub(start_ns) / 1000;
        took.max(1)
    }

    // ----- intra-op pool -------------------------------------------------

    fn intra_pool(&self) -> Option<Arc<rayon::ThreadPool>> {
        let mut intra = self.intra.lock();
        if let Some(p) = &intra.pool {
            return Some(Arc::clone(p));
        }
        if intra.closed {
            return None;
        }
        let me = self as *const Inner as usize;
        let alive_start = Arc::clone(&self.intra_alive);
        let alive_exit = Arc::clone(&self.intra_alive);
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(self.cfg.intra_op_threads)
            .thread_name(|i| format!("echobeats-intra-{i}"))
            .start_handler(move |_| {
                CURRENT_POOL.with(|c| c.set(me));
                *alive_start.0.lock() += 1;
            })
            .exit_handler(move |_| {
                let mut n = alive_exit.0.lock();
                *n -= 1;
                alive_exit.1.notify_all();
            })
            .build();
        match built {
            Ok(p) => {
                let p = Arc::new(p);
                intra.pool = Some(Arc::clone(&p));
                Some(p)
            }
            Err(err) => {
                self.log(LogLevel::Warning, || format!("echobeats: no intra-op pool ({err}); running loops inline"));
                intra.closed = true;
                None
            }
        }
    }

    // ----- shutdown ------------------------------------------------------

    /// Closes the pool (first caller only): no new tasks, cancel mode if
    /// configured, barriers destroyed, every blocked submitter, pacing wait
    /// and worker woken.
    fn begin_close(&self) -> bool {
        if self.closing.load(SeqCst) {
            return false;
        }
        let at_start: u64 = self.streams.iter().map(|s| unfinished_of(s.counts.load(SeqCst))).sum();
        self.cancelled_at_close.store(self.cancelled_total.load(SeqCst), SeqCst);
        if !self.cfg.drain_on_shutdown {
            self.cancel.store(true, SeqCst);
        }
        if self.closing.swap(true, SeqCst) {
            return false;
        }
        self.unfinished_at_close.store(at_start, SeqCst);
        let barriers: Vec<Arc<Barrier>> = self.barriers.lock().drain().map(|(_, b)| b).collect();
        for b in barriers {
            b.state.lock().destroyed = true;
            b.cv.notify_all();
        }
        for st in &self.streams {
            let _g = st.space_lock.lock();
            st.space_cv.notify_all();
        }
        {
            let _g = self.pace_lock.lock();
            self.pace_cv.notify_all();
        }
        self.wake_all_workers();
        true
    }

    fn report(&self, first_call: bool, threads_joined: usize, complete: bool) -> ShutdownReport {
        let cancelled = self.cancelled_total.load(SeqCst).saturating_sub(self.cancelled_at_close.load(SeqCst));
        ShutdownReport {
            first_call,
            drained: self.unfinished_at_close.load(SeqCst).saturating_sub(cancelled),
            cancelled,
            threads_joined,
            complete,
        }
    }

    fn shutdown(self: &Arc<Self>) -> ShutdownReport {
        let first = self.begin_close();
        if self.on_worker_thread() {
            // Waiting here would wait for ourselves: the workers leave on
            // their own once everything finished.
            return self.report(first, 0, false);
        }
        let mut js = self.join_state.lock();
        if let Some(r) = *js {
            return ShutdownReport { first_call: false, ..r };
        }
        self.wait_idle([true; 3], None);
        let me = std::thread::current().id();
        let mut joined = 0;
        for ex in &self.execs {
            let handles = {
                let mut ts = ex.threads.lock();
                ts.closed = true;
                std::mem::take(&mut ts.handles)
            };
            for h in handles {
                if h.thread().id() != me {
                    let _ = h.join();
                    joined += 1;
                }
            }
        }
        let pool = {
            let mut intra = self.intra.lock();
            intra.closed = true;
            intra.pool.take()
        };
        if let Some(pool) = pool {
            drop(pool);
            // The rayon threads leave once their pool is dropped; wait for
            // them, bounded so that nothing here can hang.
            let (lock, cv) = &*self.intra_alive;
            let mut alive = lock.lock();
            let until = Instant::now() + Duration::from_secs(5);
            while *alive > 0 && !cv.wait_until(&mut alive, until).timed_out() {}
            joined += self.cfg.intra_op_threads.saturating_sub(*alive);
        }
        let report = self.report(first, joined, true);
        *js = Some(report);
        ShutdownReport { first_call: first, ..report }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn pool(cfg: PoolConfig) -> EchobeatsPool {
        EchobeatsPool::new(cfg).unwrap()
    }

    #[test]
    fn priority_keys_keep_float_order() {
        let ps = [f32::MIN, -1e9, -1.0, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, 1e9, f32::MAX];
        for w in ps.windows(2) {
            assert!(priority_key(w[0]) <= priority_key(w[1]), "{} {}", w[0], w[1]);
            if w[0] != w[1] {
                assert!(priority_key(w[0]) < priority_key(w[1]), "{} {}", w[0], w[1]);
            }
        }
        assert_eq!(priority_key(-0.0), priority_key(0.0));
        // Equal priority: the lower id is the larger key (runs first).
        assert!(entry_key(5, 1) > entry_key(5, 2));
        assert!(entry_key(6, 100) > entry_key(5, 1));
        assert_eq!(key_id(entry_key(7, 12345)), 12345);
    }

    #[test]
    fn resolve_fills_auto_values_and_rejects_absurd_ones() {
        let c = resolve(PoolConfig::default(), 2).unwrap();
        assert_eq!(c.threads_per_stream, 1);
        assert_eq!(c.inter_op_threads, 3);
        assert_eq!(c.data_loader_workers, 1);
        assert_eq!(c.intra_op_threads, 2);
        assert_eq!(c.cuda_streams, 3);
        let c = resolve(PoolConfig { inter_op_threads: 12, ..Default::default() }, 2).unwrap();
        assert_eq!(c.threads_per_stream, 4);
        let c = resolve(PoolConfig::default(), 24).unwrap();
        assert_eq!(c.threads_per_stream, 8);
        assert_eq!(c.data_loader_workers, 9);
        assert_eq!(c.intra_op_threads, 12);
        for bad in [
            PoolConfig { threads_per_stream: MAX_THREADS_PER_GROUP + 1, ..Default::default() },
            PoolConfig { cuda_streams: 4, ..Default::default() },
            PoolConfig { max_queue_depth: 0, ..Default::default() },
            PoolConfig { target_cycle_time_ms: f32::NAN, ..Default::default() },
            PoolConfig { target_cycle_time_ms: -1.0, ..Default::default() },
        ] {
            assert!(matches!(resolve(bad, 2), Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn contention_is_counted_when_the_queue_lock_is_taken() {
        let p = pool(PoolConfig { threads_per_stream: 1, ..Default::default() });
        // Start the stream's workers first.
        let id = p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
        p.wait_task(id, None);
        let before = p.metrics().streams[0].contention_events;
        let guard = p.inner.execs[0].queue.lock();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let id = p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
                tx.send(id).unwrap();
            });
            // The submitter finds the lock we hold taken and counts it.
            while p.metrics().streams[0].contention_events == before {
                std::thread::yield_now();
            }
            drop(guard);
            let id = rx.recv().unwrap();
            assert_eq!(p.wait_task(id, None).0, TaskStatus::Completed);
        });
        assert!(p.metrics().streams[0].contention_events > before);
    }

    #[test]
    fn long_pending_record_survives_ring_reuse() {
        // Ring of 4096 records: task 1 stays pending while 10,000 others run.
        let p = pool(PoolConfig {
            threads_per_stream: 1,
            result_retention: 16,
            max_queue_depth: 100,
            ..Default::default()
        });
        assert_eq!(p.inner.records.mask + 1, 4096);
        let (tx, rx) = mpsc::channel::<()>();
        let gate = p
            .submit(TaskSpec {
                stream: CognitiveStream::Somatic,
                ..TaskSpec::new(move |_| rx.recv().map_err(|e| e.to_string()))
            })
            .unwrap();
        let dependent = p.submit(TaskSpec { dependencies: vec![gate], ..TaskSpec::new(|_| Ok(())) }).unwrap();
        let waiter = std::thread::scope(|sc| {
            let h = sc.spawn(|| p.wait_task(dependent, None));
            for _ in 0..10_000 {
                p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
            }
            assert!(p.inner.records.overflow_len.load(SeqCst) >= 1);
            tx.send(()).unwrap();
            h.join().unwrap()
        });
        assert_eq!(waiter.0, TaskStatus::Completed);
        assert!(p.synchronize_streams(None));
        // Read by its only waiter, far older than the ring: dropped now,
        // but its success is still known to new dependents.
        assert_eq!(p.wait_task(dependent, None).0, TaskStatus::Unknown);
        let late = p.submit(TaskSpec { dependencies: vec![dependent, gate], ..TaskSpec::new(|_| Ok(())) }).unwrap();
        assert_eq!(p.wait_task(late, None).0, TaskStatus::Completed);
        assert_eq!(p.inner.records.overflow_len.load(SeqCst), 0);
    }

    #[test]
    fn dropped_failures_are_remembered() {
        let p = pool(PoolConfig {
            threads_per_stream: 1,
            result_retention: 16,
            max_queue_depth: 100,
            ..Default::default()
        });
        let bad = p.submit(TaskSpec::new(|_| Err("no".into()))).unwrap();
        assert_eq!(p.wait_task(bad, None).0, TaskStatus::Failed);
        for _ in 0..5000 {
            p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
        }
        assert!(p.synchronize_streams(None));
        assert_eq!(p.wait_task(bad, None).0, TaskStatus::Unknown);
        assert!(p.inner.records.dropped_failed(bad));
        let dep = p.submit(TaskSpec { dependencies: vec![bad], ..TaskSpec::new(|_| Ok(())) }).unwrap();
        assert_eq!(p.wait_task(dep, None).0, TaskStatus::Failed);
    }
}
