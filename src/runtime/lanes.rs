//! The pipelined mode: a DMA thread (LOAD and STORE lanes) and one or more
//! compute threads (EXEC lanes), long-lived, fed through SPSC rings by the
//! calling thread. Each op carries, per lane, how many ops of that lane
//! must be complete before it may start; lanes publish completions in
//! per-lane counters, spin briefly and then park when they must wait.

use super::kernels::KernelImpl;
use super::plan::{Plan, PlannedOp, LANE_COMPUTE, LANE_LOAD, LANE_STORE, MAX_LANES};
use super::ring::{ring, Consumer, Producer};
use super::step::{prefetch, run_step};
use crate::error::{Error, Result};
use crate::sys::Parker;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// Items per ring (256 KiB). When one is full the caller waits until it is
/// half empty, so it is woken once per half ring rather than once per op.
const RING_CAPACITY: usize = 1 << 16;
/// How long a lane spins before it parks, when every pipeline thread has a
/// CPU of its own: covers the hand-offs inside a run (ops take 0.1–0.5 µs)
/// and lets the next `execute` of a loop find the lanes awake. Spinning
/// never yields: on this VM any system call costs the lane its warm caches.
const LANE_SPIN_NS: u64 = 60_000;
/// The same when there are more pipeline threads than usable CPUs: then a
/// spinning lane takes the CPU from the lane it waits for.
const OVERSUBSCRIBED_SPIN_NS: u64 = 2_000;
/// The caller only waits for the lanes, whose CPUs it would take: it
/// parks at once.
const CALLER_SPIN_NS: u64 = 0;

/// What travels through a ring: the index of an op in the current plan,
/// or [`END`]. Four bytes an item keep the rings small enough to take a
/// whole schedule, so the caller hands it over in one go.
type Slot = u32;
/// The end of a batch, after which the lane publishes what it recorded.
const END: Slot = u32::MAX;

/// A decoded ring item.
enum Item<'a> {
    Op(&'a PlannedOp),
    End,
    /// A slot that could not be decoded (the run has been failed).
    Skip,
}

/// One op's run on a lane, in ns since the engine's epoch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Interval {
    pub start: u64,
    pub end: u64,
    /// Index of the op in the schedule.
    pub index: u32,
    /// Thread that ran it: 0 = DMA, 1.. = compute threads.
    pub thread: u8,
}

/// What a thread recorded during one batch.
#[derive(Default)]
struct LaneRecord {
    intervals: Vec<Interval>,
    stalls: u64,
}

struct Sleeper {
    parker: Parker,
    sleeping: AtomicBool,
}

const WANT_NOTHING: u8 = 0;
const WANT_ROOM: u8 = 1;

/// Base of the SRAM buffer, shared with the lanes.
#[derive(Clone, Copy)]
pub(crate) struct SramPtr(pub *mut f32);
// SAFETY: the buffer outlives the pipeline (the engine drops the pipeline
// first), and the plan's dependencies serialise conflicting accesses.
unsafe impl Send for SramPtr {}
// SAFETY: as above.
unsafe impl Sync for SramPtr {}

struct Shared {
    done: [CachePadded<AtomicU32>; MAX_LANES],
    /// 0 = calling thread, 1 = DMA thread, 2.. = compute threads.
    sleepers: Vec<CachePadded<Sleeper>>,
    caller_wants: AtomicU8,
    /// How long lanes spin before parking.
    lane_spin_ns: u64,
    /// Lanes that have not yet reached the END of the current run.
    ends_pending: AtomicUsize,
    /// The ops of the current run (see `decode`).
    plan: AtomicPtr<PlannedOp>,
    plan_len: AtomicUsize,
    /// The lane whose ring the caller waits on when it wants room.
    room_lane: AtomicUsize,
    failed: AtomicBool,
    /// A thread died outside an op; the pipeline cannot be used again.
    broken: AtomicBool,
    error: Mutex<Option<Error>>,
    shutdown: AtomicBool,
    /// 0 = DMA thread, 1.. = compute threads.
    records: Vec<Mutex<LaneRecord>>,

    sram: SramPtr,
    kernel: KernelImpl,
    epoch: Instant,
    /// Op index whose execution fails on purpose (tests), or u64::MAX.
    fault: AtomicU64,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(e);
        }
        drop(slot);
        self.failed.store(true, Ordering::Release);
        self.wake_all();
    }

    fn wake(&self, who: usize) {
        let s = &self.sleepers[who];
        if s.sleeping.load(Ordering::Relaxed) {
            s.parker.unpark();
        }
    }

    fn wake_all(&self) {
        fence(Ordering::SeqCst);
        for who in 0..self.sleepers.len() {
            self.wake(who);
        }
    }

    /// After a lane finished an op: wake lanes that may wait for it, and
    /// the caller if it waits for room.
    fn completed(&self, me: usize) {
        fence(Ordering::SeqCst);
        for who in 1..self.sleepers.len() {
            if who != me {
                self.wake(who);
            }
        }
    }

    /// After a lane consumed an item of `lane`: wake the caller if it
    /// waits for room there and the ring is at most half full.
    fn consumed(&self, lane: usize, ring: &Consumer<Slot>) {
        if self.caller_wants.load(Ordering::Relaxed) == WANT_ROOM
            && self.room_lane.load(Ordering::Relaxed) == lane
            && ring.len() <= RING_CAPACITY / 2
        {
            self.wake(0);
        }
    }

    /// The item a ring slot stands for.
    fn decode(&self, slot: Slot) -> Item<'_> {
        if slot == END {
            return Item::End;
        }
        let (ops, len) = (self.plan.load(Ordering::Relaxed), self.plan_len.load(Ordering::Relaxed));
        if slot as usize >= len {
            // Cannot happen (the caller only pushes indices of the plan);
            // fail the run rather than read outside it.
            self.fail(Error::System(format!("ring slot {slot} outside the plan ({len} ops)")));
            return Item::Skip;
        }
        // SAFETY: the caller stored the plan before publishing any slot of
        // this run (the ring's release/acquire orders it), and keeps the
        // plan alive and unchanged until every lane has consumed its END.
        Item::Op(unsafe { &*ops.add(slot as usize) })
    }

    fn ready(&self, op: &PlannedOp) -> bool {
        op.deps.iter().zip(&self.done).all(|(need, done)| *need == 0 || done.load(Ordering::Acquire) >= *need)
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Spins for up to `spin_ns`, then parks until `cond` holds.
    fn wait_until(&self, me: usize, spin_ns: u64, mut cond: impl FnMut() -> bool) {
        if cond() {
            return;
        }
        if spin_ns > 0 {
            let start = Instant::now();
            let mut round = 0u32;
            'spin: loop {
                // Check the clock only every few rounds: it costs more than
                // a pause.
                for _ in 0..8 {
                    for _ in 0..(1u32 << round.min(5)) {
                        std::hint::spin_loop();
                    }
                    round += 1;
                    if cond() {
                        return;
                    }
                }
                if start.elapsed().as_nanos() as u64 >= spin_ns {
                    break 'spin;
                }
            }
        }
        let s = &self.sleepers[me];
        loop {
            s.sleeping.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if cond() {
                s.sleeping.store(false, Ordering::Relaxed);
                return;
            }
            s.parker.park();
            s.sleeping.store(false, Ordering::Relaxed);
        }
    }
}

/// What one pipelined run recorded.
#[derive(Default)]
pub(crate) struct RunRecord {
    /// Every op's interval, DMA thread first, each thread in run order.
    pub intervals: Vec<Interval>,
    pub dma_stalls: u64,
    pub compute_stalls: u64,
    /// When the calling thread had handed every op to the lanes.
    pub dispatched: u64,
}

/// The long-lived lanes of one engine.
pub(crate) struct Pipeline {
    shared: Arc<Shared>,
    /// Indexed by virtual lane.
    producers: Vec<Producer<Slot>>,
    threads: Vec<JoinHandle<()>>,
    lanes: usize,
}

impl Pipeline {
    /// Starts the DMA thread and `compute_threads` compute threads; thread
    /// `t` (0 = DMA) is pinned to `cpus[t]` when there is one.
    pub(crate) fn start(
        compute_threads: usize,
        sram: SramPtr,
        kernel: KernelImpl,
        epoch: Instant,
        cpus: &[usize],
    ) -> Result<Self> {
        let lanes = LANE_COMPUTE + compute_threads;
        let shared = Arc::new(Shared {
            done: std::array::from_fn(|_| CachePadded::new(AtomicU32::new(0))),
            sleepers: (0..2 + compute_threads)
                .map(|_| CachePadded::new(Sleeper { parker: Parker::default(), sleeping: AtomicBool::new(false) }))
                .collect(),
            caller_wants: AtomicU8::new(WANT_NOTHING),
            // The DMA thread plus the compute threads, each on a CPU.
            lane_spin_ns: if compute_threads < crate::sys::usable_cpus() {
                LANE_SPIN_NS
            } else {
                OVERSUBSCRIBED_SPIN_NS
            },
            ends_pending: AtomicUsize::new(0),
            plan: AtomicPtr::new(std::ptr::null_mut()),
            plan_len: AtomicUsize::new(0),
            room_lane: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            error: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            records: (0..1 + compute_threads).map(|_| Mutex::new(LaneRecord::default())).collect(),

            sram,
            kernel,
            epoch,
            fault: AtomicU64::new(u64::MAX),
        });
        let mut producers = Vec::with_capacity(lanes);
        let mut consumers = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (p, c) = ring::<Slot>(RING_CAPACITY);
            producers.push(p);
            consumers.push(Some(c));
        }
        let mut pipeline = Pipeline { shared, producers, threads: Vec::new(), lanes };
        // Thread t: 0 = DMA with the STORE lane first (finishing results
        // frees accumulators sooner), then LOAD; t >= 1 = compute lane t-1.
        for t in 0..1 + compute_threads {
            let rings: Vec<(usize, Consumer<Slot>)> = if t == 0 {
                vec![
                    (LANE_STORE, consumers[LANE_STORE].take().expect("unused")),
                    (LANE_LOAD, consumers[LANE_LOAD].take().expect("unused")),
                ]
            } else {
                let lane = LANE_COMPUTE + t - 1;
                vec![(lane, consumers[lane].take().expect("unused"))]
            };
            let shared = pipeline.shared.clone();
            let name = if t == 0 { "cllm-dma".to_string() } else { format!("cllm-compute-{}", t - 1) };
            let cpu = cpus.get(t).copied();
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                if let Some(cpu) = cpu {
                    // Best effort: an unpinned lane still works.
                    crate::sys::pin_current_thread(cpu);
                }
                lane_thread(&shared, t, &rings)
            });
            match spawned {
                Ok(h) => pipeline.threads.push(h),
                // Dropping `pipeline` stops and joins the threads started so far.
                Err(e) => return Err(Error::System(format!("cannot start pipeline thread {t}: {e}"))),
            }
        }
        Ok(pipeline)
    }

    /// Whether a pipeline thread died outside an op; the pipeline (and the
    /// plan it was running, which surviving lanes may still read) must not
    /// be used again.
    pub(crate) fn is_broken(&self) -> bool {
        self.shared.broken.load(Ordering::Acquire)
    }

    /// Makes the op with schedule index `index` fail on its lane (tests of
    /// the error path); `None` clears it.
    pub(crate) fn inject_fault(&self, index: Option<u32>) {
        self.shared.fault.store(index.map_or(u64::MAX, u64::from), Ordering::Relaxed);
    }

    /// Wakes the thread serving `lane` if it sleeps (after a publish).
    fn wake_lane(&self, lane: usize) {
        // Lane v is served by thread 1 (DMA) or 2 + (v - LANE_COMPUTE).
        let thread = if lane < LANE_COMPUTE { 1 } else { 2 + lane - LANE_COMPUTE };
        self.shared.wake(thread);
    }

    /// Makes every written item visible and wakes the lanes.
    fn publish_all(&self) {
        for p in &self.producers {
            p.publish();
        }
        fence(Ordering::SeqCst);
        for lane in 0..self.lanes {
            self.wake_lane(lane);
        }
    }

    /// Writes `item` to `lane`'s ring, unpublished; when the ring is full,
    /// publishes it and waits for room.
    fn push(&self, lane: usize, mut item: Slot) {
        let sh = &*self.shared;
        loop {
            match self.producers[lane].write(item) {
                Ok(()) => break,
                Err(back) => {
                    item = back;
                    // Publish every lane, not just the full one: its ops
                    // may wait for ops still unpublished elsewhere.
                    self.publish_all();
                    sh.room_lane.store(lane, Ordering::Relaxed);
                    sh.caller_wants.store(WANT_ROOM, Ordering::Relaxed);
                    let ring = &self.producers[lane];
                    sh.wait_until(0, CALLER_SPIN_NS, || {
                        ring.len() <= ring.capacity() / 2 || sh.broken.load(Ordering::Acquire)
                    });
                    sh.caller_wants.store(WANT_NOTHING, Ordering::Relaxed);
                    if sh.broken.load(Ordering::Acquire) {
                        return;
                    }
                }
            }
        }
    }

    /// Runs `plan` on the lanes and waits until every op is done or the
    /// run failed; the caller's SRAM zeroing must already be done.
    pub(crate) fn run(&mut self, plan: &Plan, out: &mut RunRecord) -> Result<()> {
        out.intervals.clear();
        out.dma_stalls = 0;
        out.compute_stalls = 0;
        let sh = &*self.shared;
        if sh.broken.load(Ordering::Acquire) {
            return Err(Error::System("the pipeline lost a thread earlier; create a new engine".into()));
        }
        // The lanes are idle between runs, so plain resets are safe; the
        // release in `push` publishes them.
        for d in &sh.done[..self.lanes] {
            d.store(0, Ordering::Relaxed);
        }
        sh.failed.store(false, Ordering::Relaxed);
        *sh.error.lock() = None;
        // Published to the lanes with the first slot (release on the tail).
        sh.plan.store(plan.ops.as_ptr().cast_mut(), Ordering::Relaxed);
        sh.plan_len.store(plan.ops.len(), Ordering::Relaxed);
        for (i, op) in plan.ops.iter().enumerate() {
            if sh.failed.load(Ordering::Relaxed) || sh.broken.load(Ordering::Relaxed) {
                break;
            }
            self.push(op.lane as usize, i as Slot);
        }
        sh.ends_pending.store(self.lanes, Ordering::Relaxed);
        for lane in 0..self.lanes {
            self.push(lane, END);
        }
        self.publish_all();
        out.dispatched = sh.now();
        // The same counter that decides who wakes the caller decides when
        // it is done, so a lane still between its last `done` update and its
        // END cannot leak into the next run.
        let finished = || sh.broken.load(Ordering::Acquire) || sh.ends_pending.load(Ordering::Acquire) == 0;
        sh.wait_until(0, CALLER_SPIN_NS, finished);
        sh.caller_wants.store(WANT_NOTHING, Ordering::Relaxed);
        if sh.broken.load(Ordering::Acquire) {
            return Err(sh.error.lock().take().unwrap_or_else(|| Error::System("a pipeline thread died".into())));
        }
        for (t, rec) in sh.records.iter().enumerate() {
            let mut rec = rec.lock();
            out.intervals.extend_from_slice(&rec.intervals);
            rec.intervals.clear();
            if t == 0 {
                out.dma_stalls += rec.stalls;
            } else {
                out.compute_stalls += rec.stalls;
            }
            rec.stalls = 0;
        }
        match sh.error.lock().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

fn lane_thread(sh: &Shared, thread: usize, rings: &[(usize, Consumer<Slot>)]) {
    if catch_unwind(AssertUnwindSafe(|| lane_loop(sh, thread, rings))).is_err() {
        sh.broken.store(true, Ordering::Release);
        sh.fail(Error::System(format!("pipeline thread {thread} panicked outside an op")));
    }
}

fn lane_loop(sh: &Shared, thread: usize, rings: &[(usize, Consumer<Slot>)]) {
    let me = thread + 1;
    let mut local = LaneRecord::default();
    // The (lane, seq) of the op last counted as stalled, so a long wait
    // counts once.
    let mut stalled: Option<(usize, u32)> = None;
    let mut seq = [0u32; MAX_LANES];
    loop {
        let mut progressed = false;
        for (lane, ring) in rings {
            let Some(slot) = ring.peek() else { continue };
            match sh.decode(slot) {
                Item::Skip => {
                    seq[*lane] += 1;
                    ring.advance();
                    sh.done[*lane].store(sh.done[*lane].load(Ordering::Relaxed) + 1, Ordering::Release);
                    sh.completed(me);
                    progressed = true;
                }
                Item::End => {
                    let mut rec = sh.records[thread].lock();
                    rec.intervals.append(&mut local.intervals);
                    rec.stalls += std::mem::take(&mut local.stalls);
                    drop(rec);
                    seq[*lane] = 0;
                    ring.advance();
                    // Only this thread writes the counter of its lane.
                    sh.done[*lane].store(sh.done[*lane].load(Ordering::Relaxed) + 1, Ordering::Release);
                    // Only the lane that ends the run wakes the caller: a
                    // wake-up from the others would find it unfinished, and
                    // the kernel would move the caller to their CPU.
                    if sh.ends_pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                        fence(Ordering::SeqCst);
                        sh.wake(0);
                    }
                    progressed = true;
                }
                Item::Op(op) => {
                    if !sh.failed.load(Ordering::Acquire) {
                        if !sh.ready(op) {
                            if stalled != Some((*lane, seq[*lane])) {
                                stalled = Some((*lane, seq[*lane]));
                                local.stalls += 1;
                            }
                            continue;
                        }
                        // Start fetching the next op's data (written by the
                        // other core) while this one runs.
                        if let Some(Item::Op(next)) = ring.peek_second().map(|s| sh.decode(s)) {
                            if sh.ready(next) {
                                prefetch(&next.step, sh.sram.0);
                            }
                        }
                        let start = sh.now();
                        let result = if u64::from(op.index) == sh.fault.load(Ordering::Relaxed) {
                            Err(Error::System(format!("injected fault at op {}", op.index)))
                        } else {
                            // SAFETY: the plan validated every range against
                            // the SRAM and tensor sizes, and `ready` made
                            // every conflicting op on other lanes complete.
                            catch_unwind(AssertUnwindSafe(|| unsafe { run_step(&op.step, sh.sram.0, sh.kernel) }))
                                .map_err(|_| Error::System(format!("op {} panicked on a pipeline lane", op.index)))
                        };
                        let end = sh.now();
                        local.intervals.push(Interval { start, end, index: op.index, thread: thread as u8 });
                        if let Err(e) = result {
                            sh.fail(e);
                        }
                    }
                    seq[*lane] += 1;
                    ring.advance();
                    sh.done[*lane].store(sh.done[*lane].load(Ordering::Relaxed) + 1, Ordering::Release);
                    sh.completed(me);
                    sh.consumed(*lane, ring);
                    progressed = true;
                }
            }
        }
        if progressed {
            continue;
        }
        if sh.shutdown.load(Ordering::Acquire) && rings.iter().all(|(_, r)| r.peek().is_none()) {
            return;
        }
        sh.wait_until(me, sh.lane_spin_ns, || {
            sh.shutdown.load(Ordering::Acquire)
                || rings.iter().any(|(_, r)| match r.peek().map(|s| sh.decode(s)) {
                    Some(Item::Op(op)) => sh.failed.load(Ordering::Acquire) || sh.ready(op),
                    Some(Item::End | Item::Skip) => true,
                    None => false,
                })
        });
    }
}
