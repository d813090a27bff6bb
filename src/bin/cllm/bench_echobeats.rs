//! `cllm bench echobeats`: the Echobeats pool against a baseline written
//! here that mirrors the original design: per stream a `Mutex<BinaryHeap>`
//! and a `Condvar` with 4 threads, and a task map (`Mutex<HashMap>` and a
//! `Condvar`) for waiting.
//!
//! Cases: throughput of 300,000 empty tasks and of ~1 µs tasks (submitted
//! from one thread, then waited for); submit→start latency into an idle
//! pool; unpaced `run_cycle` with 12 empty tasks per cycle; the latency of
//! synchronising the three streams.

use super::bench_report::{median, percentile, Better, Measurement, Reporter, Target};
use cllm::echobeats::{CognitiveStream, EchobeatsPool, PoolConfig, TaskSpec};
use std::collections::{BinaryHeap, HashMap};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Suite name in every measurement.
const SUITE: &str = "echobeats";
/// Tasks per throughput run.
const TASKS: usize = 300_000;
/// Samples of the latency cases.
const SAMPLES: usize = 2000;
/// Cycles of the run_cycle case.
const CYCLES: usize = 2000;
/// Name of the baseline.
const BASELINE: &str = "mutex+condvar pool (original design)";
/// Pause between latency samples so that every worker is parked again.
const IDLE_GAP: Duration = Duration::from_millis(1);

fn err(e: cllm::Error) -> String {
    e.to_string()
}

/// A calibrated loop of about 1 µs.
fn spin_1us(iters: u64) {
    let mut x = 1u64;
    for i in 0..iters {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    black_box(x);
}

/// Iterations of `spin_1us` that take about 1 µs here.
fn calibrate() -> u64 {
    let n = 100_000u64;
    let t = Instant::now();
    spin_1us(n);
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    (1000.0 / per.max(0.01)) as u64
}

// ---------------------------------------------------------------------------
// The baseline: the original's structure, correct waiting.
// ---------------------------------------------------------------------------

type Job = Box<dyn FnOnce() + Send>;

/// A queued job: higher priority first, then older first.
struct Queued {
    priority: u32,
    seq: u64,
    id: u64,
    job: Job,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.priority, self.seq) == (o.priority, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.priority.cmp(&o.priority).then(o.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct StreamQueue {
    heap: BinaryHeap<Queued>,
    /// Queued + running jobs.
    outstanding: usize,
    stop: bool,
}

struct BaselineShared {
    streams: [(Mutex<StreamQueue>, Condvar, Condvar); 3],
    /// id → done, as the original's promise map.
    done: Mutex<HashMap<u64, bool>>,
    done_cv: Condvar,
    next_id: AtomicU64,
    seq: AtomicU64,
}

/// Per-stream heaps with 4 workers each, like the original.
struct BaselinePool {
    shared: Arc<BaselineShared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BaselinePool {
    fn new(threads_per_stream: usize) -> BaselinePool {
        let shared = Arc::new(BaselineShared {
            streams: std::array::from_fn(|_| Default::default()),
            done: Mutex::new(HashMap::new()),
            done_cv: Condvar::new(),
            next_id: AtomicU64::new(1),
            seq: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        for s in 0..3 {
            for _ in 0..threads_per_stream {
                let sh = shared.clone();
                threads.push(std::thread::spawn(move || loop {
                    let (lock, cv, idle) = &sh.streams[s];
                    let q = {
                        let mut st = lock.lock().unwrap();
                        loop {
                            if let Some(q) = st.heap.pop() {
                                break q;
                            }
                            if st.stop {
                                return;
                            }
                            st = cv.wait(st).unwrap();
                        }
                    };
                    (q.job)();
                    sh.done.lock().unwrap().insert(q.id, true);
                    sh.done_cv.notify_all();
                    let mut st = lock.lock().unwrap();
                    st.outstanding -= 1;
                    if st.outstanding == 0 {
                        idle.notify_all();
                    }
                }));
            }
        }
        BaselinePool { shared, threads }
    }

    fn submit(&self, stream: usize, priority: u32, job: Job) -> u64 {
        let sh = &self.shared;
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        sh.done.lock().unwrap().insert(id, false);
        let (lock, cv, _) = &sh.streams[stream];
        let mut st = lock.lock().unwrap();
        st.outstanding += 1;
        st.heap.push(Queued { priority, seq: sh.seq.fetch_add(1, Ordering::Relaxed), id, job });
        drop(st);
        cv.notify_one();
        id
    }

    fn wait_stream(&self, stream: usize) {
        let (lock, _, idle) = &self.shared.streams[stream];
        let mut st = lock.lock().unwrap();
        while st.outstanding > 0 {
            st = idle.wait(st).unwrap();
        }
    }

    fn wait_all(&self) {
        for s in 0..3 {
            self.wait_stream(s);
        }
    }

    fn wait_task(&self, id: u64) {
        let mut done = self.shared.done.lock().unwrap();
        while done.get(&id) == Some(&false) {
            done = self.shared.done_cv.wait(done).unwrap();
        }
    }
}

impl Drop for BaselinePool {
    fn drop(&mut self) {
        for (lock, cv, _) in &self.shared.streams {
            lock.lock().unwrap().stop = true;
            cv.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

fn pool(config: PoolConfig) -> Result<EchobeatsPool, String> {
    EchobeatsPool::new(config).map_err(err)
}

/// A pool whose queues hold a whole throughput run.
fn roomy() -> PoolConfig {
    PoolConfig { max_queue_depth: TASKS, result_retention: TASKS, target_cycle_time_ms: 0.0, ..PoolConfig::default() }
}

/// Tasks per second for `TASKS` tasks of `work` on ours and the baseline.
fn throughput(rep: &mut Reporter, label: &str, iters: u64) -> Result<(), String> {
    let p = pool(roomy())?;
    let stream = |i: usize| CognitiveStream::from_index((i % 3) as i64).expect("0..3");
    let run_ours = || -> Result<f64, String> {
        let t = Instant::now();
        for i in 0..TASKS {
            let mut spec = TaskSpec::new(move |_| {
                spin_1us(iters);
                Ok(())
            });
            spec.stream = stream(i);
            spec.priority = (i % 7) as f32;
            p.submit(spec).map_err(err)?;
        }
        if !p.synchronize_streams(None) {
            return Err("synchronize_streams failed".into());
        }
        Ok(TASKS as f64 / t.elapsed().as_secs_f64())
    };
    run_ours()?;
    let ours = run_ours()?;
    drop(p);
    let b = BaselinePool::new(4);
    let run_base = || {
        let t = Instant::now();
        for i in 0..TASKS {
            b.submit(i % 3, (i % 7) as u32, Box::new(move || spin_1us(iters)));
        }
        b.wait_all();
        TASKS as f64 / t.elapsed().as_secs_f64()
    };
    run_base();
    let base = run_base();
    let target = if iters == 0 { Some(Target::RatioAtLeast(5.0)) } else { None };
    rep.record(Measurement {
        suite: SUITE,
        case: format!("throughput, {label} tasks"),
        unit: "tasks/s",
        better: Better::Higher,
        ours,
        baseline_name: BASELINE.into(),
        baseline: base,
        target,
    });
    if iters == 0 {
        rep.record(Measurement {
            suite: SUITE,
            case: "throughput, empty tasks (absolute)".into(),
            unit: "tasks/s",
            better: Better::Higher,
            ours,
            baseline_name: BASELINE.into(),
            baseline: base,
            target: Some(Target::AtLeast(1_000_000.0)),
        });
    }
    Ok(())
}

/// Submit→start latency (µs) of one task into an idle pool.
fn latency(rep: &mut Reporter) -> Result<(), String> {
    let p = pool(PoolConfig::default())?;
    let started = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let mut ours = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        std::thread::sleep(IDLE_GAP);
        let s = started.clone();
        let t0 = epoch.elapsed().as_nanos() as u64;
        let id = p
            .submit(TaskSpec::new(move |_| {
                s.store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
                Ok(())
            }))
            .map_err(err)?;
        p.wait_task(id, None);
        ours.push(started.load(Ordering::Acquire).saturating_sub(t0) as f64 / 1000.0);
    }
    drop(p);
    let b = BaselinePool::new(4);
    let mut base = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        std::thread::sleep(IDLE_GAP);
        let s = started.clone();
        let t0 = epoch.elapsed().as_nanos() as u64;
        let id = b.submit(0, 1, Box::new(move || s.store(epoch.elapsed().as_nanos() as u64, Ordering::Release)));
        b.wait_task(id);
        base.push(started.load(Ordering::Acquire).saturating_sub(t0) as f64 / 1000.0);
    }
    let m = |case: &str, o: f64, bv: f64, target: f64| Measurement {
        suite: SUITE,
        case: case.into(),
        unit: "µs",
        better: Better::Lower,
        ours: o,
        baseline_name: BASELINE.into(),
        baseline: bv,
        target: Some(Target::AtMost(target)),
    };
    let (o50, b50) = (median(&mut ours), median(&mut base));
    let (o99, b99) = (percentile(&mut ours, 99.0), percentile(&mut base, 99.0));
    rep.record(m("submit→start into an idle pool, median", o50, b50, 10.0));
    rep.record(m("submit→start into an idle pool, p99", o99, b99, 30.0));
    Ok(())
}

/// Unpaced cycles per second with 12 empty tasks per cycle.
fn cycles(rep: &mut Reporter) -> Result<(), String> {
    let p = pool(PoolConfig { target_cycle_time_ms: 0.0, ..PoolConfig::default() })?;
    let ran = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    for _ in 0..CYCLES {
        for step in 1..=12 {
            let r = ran.clone();
            p.submit(TaskSpec::for_step(step, move |_| {
                r.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }))
            .map_err(err)?;
        }
        p.run_cycle();
    }
    let ours = CYCLES as f64 / t.elapsed().as_secs_f64();
    if ran.load(Ordering::Relaxed) != CYCLES * 12 {
        return Err(format!(
            "run_cycle returned before its tasks ran ({} of {})",
            ran.load(Ordering::Relaxed),
            CYCLES * 12
        ));
    }
    drop(p);
    let b = BaselinePool::new(4);
    let t = Instant::now();
    for _ in 0..CYCLES {
        for step in 0..12 {
            let r = ran.clone();
            b.submit(
                step % 3,
                1,
                Box::new(move || {
                    r.fetch_add(1, Ordering::Relaxed);
                }),
            );
        }
        for step in 0..12 {
            b.wait_stream(step % 3);
        }
    }
    let base = CYCLES as f64 / t.elapsed().as_secs_f64();
    rep.record(Measurement {
        suite: SUITE,
        case: "run_cycle, 12 empty tasks per cycle, no pacing".into(),
        unit: "cycles/s",
        better: Better::Higher,
        ours,
        baseline_name: format!("{BASELINE}, waiting per step"),
        baseline: base,
        target: Some(Target::AtLeast(10_000.0)),
    });
    Ok(())
}

/// Latency (µs) of synchronising the three streams right after 3 tasks
/// were submitted (one per stream).
fn sync(rep: &mut Reporter) -> Result<(), String> {
    let p = pool(PoolConfig::default())?;
    let mut ours = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        for s in 0..3 {
            let mut spec = TaskSpec::new(|_| Ok(()));
            spec.stream = CognitiveStream::from_index(s).expect("0..3");
            spec.priority = i as f32;
            p.submit(spec).map_err(err)?;
        }
        let t = Instant::now();
        if !p.synchronize_streams(None) {
            return Err("synchronize_streams failed".into());
        }
        ours.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(p);
    let b = BaselinePool::new(4);
    let mut base = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        for s in 0..3 {
            b.submit(s, 1, Box::new(|| {}));
        }
        let t = Instant::now();
        b.wait_all();
        base.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rep.record(Measurement {
        suite: SUITE,
        case: "synchronize_streams after 3 empty tasks, median".into(),
        unit: "µs",
        better: Better::Lower,
        ours: median(&mut ours),
        baseline_name: BASELINE.into(),
        baseline: median(&mut base),
        target: Some(Target::AtMost(2000.0)),
    });
    Ok(())
}

/// Runs every case of the suite.
pub fn run(rep: &mut Reporter) -> Result<(), String> {
    let iters = calibrate();
    eprintln!(
        "echobeats: {} usable CPUs; baseline: 4 threads per stream; ratio = ours / baseline",
        cllm::sys::usable_cpus()
    );
    throughput(rep, "empty", 0)?;
    throughput(rep, "~1 µs", iters)?;
    latency(rep)?;
    cycles(rep)?;
    sync(rep)?;
    Ok(())
}
