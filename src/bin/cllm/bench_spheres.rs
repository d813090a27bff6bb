//! `cllm bench spheres`: the kissing-spheres scheduler against rayon and a
//! plain mutex+condvar pool, same items, same callback, same thread count.
//!
//! Cases: throughput with a trivial and a ~1 µs callback, wake latency of
//! one item into an idle system, and the lifecycle of a 4-level system.

use super::bench_mutex_pool::MutexPool;
use super::bench_report::{median, percentile, Better, Measurement, Reporter, Target};
use cllm::spheres::{Shape, SphereOptions, SphereSystem, WorkFn};
use rayon::prelude::*;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Suite name in every measurement.
const SUITE: &str = "spheres";
/// Items per throughput run.
const ITEMS: usize = 1_000_000;
/// Thread counts of the throughput cases.
const THREADS: [usize; 2] = [1, 2];
/// Threads of the wake-latency case.
const WAKE_THREADS: usize = 2;
/// Samples of the wake-latency case.
const WAKE_SAMPLES: usize = 1000;
/// Repetitions of the 4-level lifecycle.
const LIFECYCLE_REPS: usize = 20;
/// Spheres of a 4-level tree: threads the original started.
const ORIGINAL_THREADS: usize = 1885;
/// Name of the rayon baseline.
const RAYON: &str = "rayon par_iter";
/// Name of the mutex-pool baseline.
const MUTEX_POOL: &str = "mutex+condvar pool";
/// Longest time to wait for workers to park before giving up.
const PARK_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs every case of the suite.
pub fn run(rep: &mut Reporter) -> Result<(), String> {
    let cpus = cllm::sys::usable_cpus();
    eprintln!("spheres: {cpus} usable CPUs; ratio = ours / baseline");
    eprintln!("spheres: {MUTEX_POOL}: a batch is pushed under one lock, workers pop one item per lock");
    if let Some(load) = load_average().filter(|&l| l > 0.5) {
        eprintln!("spheres: warning: load average {load:.2} before starting; other processes will add noise");
    }
    // First, while no other pool's threads exist, so the thread count is exact.
    lifecycle(rep, cpus)?;

    let items: Vec<u64> = (0..ITEMS as u64).collect();
    let trivial: WorkFn = Arc::new(|item, _| {
        black_box(item);
    });
    // `distribute` copies the items. Until the process has freed a large
    // block, glibc serves big allocations with fresh (page-faulting) memory
    // and returns it on free; measure ours in that "cold heap" state first
    // (it shows whether the library's copies suffer from it), then warm the
    // heap so that the main rows do not depend on the order of the cases.
    let trivial_case = |t| Throughput { name: "trivial", threads: t, reps: 11, warm_items: ITEMS };
    let mut cold = Vec::new();
    for t in THREADS {
        let case = trivial_case(t);
        let ours = Contender::ours(2, t, &trivial, false)?;
        eprintln!("spheres: cold heap:");
        cold.push(compare(&[ours], &items, &trivial, &case)?[0]);
    }
    warm_heap(&items);
    for (t, cold) in THREADS.into_iter().zip(cold) {
        let case = trivial_case(t);
        let contenders = [
            Contender::ours(2, t, &trivial, false)?,
            Contender::ours(4, t, &trivial, false)?,
            Contender::ours(2, t, &trivial, true)?,
            Contender::rayon(t)?,
            Contender::Pool(MutexPool::new(t, Arc::clone(&trivial))),
        ];
        let [l2, l4, _range, rayon, pool] = compare(&contenders, &items, &trivial, &case)?[..] else {
            unreachable!("one result per contender")
        };
        let abs = (t == 2).then_some(Target::AtMost(2.0));
        for (levels, ours) in [(2, l2), (4, l4)] {
            let label = format!("trivial/t={t}/levels={levels}");
            rep.record(row(&label, "ns/item", ours, RAYON, rayon, abs));
            rep.record(row(&label, "ns/item", ours, MUTEX_POOL, pool, Some(Target::RatioAtMost(0.1))));
        }
        rep.record(row(&format!("trivial/t={t}/levels=2/cold-heap"), "ns/item", cold, RAYON, rayon, abs));
    }

    let (slow, ns) = calibrate_1us();
    eprintln!("spheres: calibrated callback takes {ns:.0} ns per call");
    for t in THREADS {
        let case = Throughput { name: "1us", threads: t, reps: 3, warm_items: ITEMS / 10 };
        let contenders = [
            Contender::ours(2, t, &slow, false)?,
            Contender::rayon(t)?,
            Contender::Pool(MutexPool::new(t, Arc::clone(&slow))),
        ];
        let [ours, rayon, pool] = compare(&contenders, &items, &slow, &case)?[..] else {
            unreachable!("one result per contender")
        };
        let label = format!("1us/t={t}/levels=2");
        rep.record(row(&label, "ns/item", ours, RAYON, rayon, Some(Target::RatioAtMost(1.05))));
        rep.record(row(&label, "ns/item", ours, MUTEX_POOL, pool, None));
    }

    wake_latency(rep)
}

/// A lower-is-better measurement of this suite.
fn row(case: &str, unit: &'static str, ours: f64, base: &str, baseline: f64, target: Option<Target>) -> Measurement {
    Measurement {
        suite: SUITE,
        case: case.to_string(),
        unit,
        better: Better::Lower,
        ours,
        baseline_name: base.to_string(),
        baseline,
        target,
    }
}

/// Parameters of one throughput measurement.
struct Throughput {
    /// Callback name, for progress lines.
    name: &'static str,
    /// Worker threads of ours and of each baseline.
    threads: usize,
    /// Timed repetitions; the median is reported.
    reps: usize,
    /// Items of the untimed warm-up run.
    warm_items: usize,
}

/// Nanoseconds per item of `elapsed` over `n` items.
fn per_item(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_nanos() as f64 / n as f64
}

/// Converts a library error to the CLI's error string.
fn lib<T>(r: cllm::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// A started system of `levels` levels and `threads` workers running `cb`.
fn started_system(levels: usize, threads: usize, cb: &WorkFn) -> Result<SphereSystem, String> {
    let sys = lib(SphereSystem::new(&SphereOptions {
        shape: Shape::Levels(levels),
        threads,
        buffer_len: 0,
        mailbox_capacity: 256,
        pin_threads: false,
    }))?;
    lib(sys.set_work_fn(Some(Arc::clone(cb))))?;
    lib(sys.start())?;
    Ok(sys)
}

/// One system under test in a throughput comparison, already started.
enum Contender {
    /// Ours; `range` feeds `distribute_range` (no copy) instead of `distribute`.
    Ours {
        /// The started system.
        sys: SphereSystem,
        /// Levels of its tree.
        levels: usize,
        /// Whether to use `distribute_range` (a diagnostic, not a row).
        range: bool,
    },
    /// A rayon pool running `par_iter().for_each`.
    Rayon(rayon::ThreadPool),
    /// The mutex+condvar pool.
    Pool(MutexPool),
}

impl Contender {
    /// Ours with `levels` levels and `threads` workers running `cb`.
    fn ours(levels: usize, threads: usize, cb: &WorkFn, range: bool) -> Result<Contender, String> {
        Ok(Contender::Ours { sys: started_system(levels, threads, cb)?, levels, range })
    }

    /// A rayon pool of `threads` threads.
    fn rayon(threads: usize) -> Result<Contender, String> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().map_err(|e| e.to_string())?;
        Ok(Contender::Rayon(pool))
    }

    /// Name for progress lines.
    fn label(&self) -> String {
        match self {
            Contender::Ours { levels, range: false, .. } => format!("ours levels={levels}"),
            Contender::Ours { levels, range: true, .. } => format!("ours levels={levels} distribute_range (no copy)"),
            Contender::Rayon(_) => RAYON.into(),
            Contender::Pool(_) => MUTEX_POOL.into(),
        }
    }

    /// Runs `cb` on all of `items` once. Returns the total time and the
    /// time until the producer's call (`distribute` / `submit`) returned.
    fn run(&self, items: &[u64], cb: &WorkFn) -> Result<(Duration, Duration), String> {
        let t0 = Instant::now();
        let call = match self {
            Contender::Ours { sys, range, .. } => {
                if *range {
                    lib(sys.distribute_range(0, items.len() as u64))?;
                } else {
                    lib(sys.distribute(items))?;
                }
                let call = t0.elapsed();
                lib(sys.wait(None))?;
                call
            }
            Contender::Rayon(pool) => {
                pool.install(|| items.par_iter().for_each(|&x| cb(x, 0)));
                t0.elapsed()
            }
            Contender::Pool(pool) => {
                pool.submit(items);
                let call = t0.elapsed();
                pool.wait();
                call
            }
        };
        Ok((t0.elapsed(), call))
    }

    /// Waits until the workers are idle again, so that the next contender
    /// has the CPUs to itself.
    fn settle(&self) -> Result<(), String> {
        match self {
            Contender::Ours { sys, .. } => {
                until("sphere workers parked", || sys.parked_workers() == sys.worker_threads())
            }
            // Rayon has no idle probe. A broadcast returns once every worker
            // has run it, i.e. finished all earlier work; what is left is a
            // few microseconds of spinning before they sleep, negligible
            // against runs of a millisecond and more.
            Contender::Rayon(pool) => {
                pool.broadcast(|_| ());
                Ok(())
            }
            Contender::Pool(pool) => until("pool workers parked", || pool.parked_workers() == pool.worker_threads()),
        }
    }
}

/// Runs every contender on `items` in interleaved rounds (so that load from
/// other processes hits all alike) and returns each one's median ns/item.
fn compare(contenders: &[Contender], items: &[u64], cb: &WorkFn, case: &Throughput) -> Result<Vec<f64>, String> {
    let names: Vec<String> = contenders.iter().map(Contender::label).collect();
    eprintln!("spheres: {} t={}: {} rounds of {}", case.name, case.threads, case.reps, names.join(", "));
    for c in contenders {
        c.run(&items[..case.warm_items], cb)?;
        c.settle()?;
    }
    let mut totals = vec![Vec::with_capacity(case.reps); contenders.len()];
    let mut calls = totals.clone();
    for _ in 0..case.reps {
        for (i, c) in contenders.iter().enumerate() {
            let (total, call) = c.run(items, cb)?;
            c.settle()?;
            totals[i].push(per_item(total, items.len()));
            calls[i].push(per_item(call, items.len()));
        }
    }
    let medians: Vec<f64> = totals.iter_mut().map(|v| median(v)).collect();
    for ((c, name), (total, call)) in contenders.iter().zip(&names).zip(medians.iter().zip(&mut calls)) {
        if matches!(c, Contender::Ours { .. }) {
            let call = median(call);
            eprintln!("  note: {name}: {total:.2} ns/item, of which distribute returns after {call:.2} (medians)");
        }
    }
    Ok(medians)
}

/// Allocates and frees copies of `items` so that glibc keeps buffers of
/// that size in its heap from now on (its mmap threshold adapts to the
/// largest block freed), and prints (stderr) what the copy alone costs.
fn warm_heap(items: &[u64]) {
    let mut v: Vec<f64> = (0..8)
        .map(|_| {
            let t0 = Instant::now();
            let copy: Arc<[u64]> = Arc::from(items);
            black_box(&copy);
            drop(copy);
            per_item(t0.elapsed(), items.len())
        })
        .collect();
    let first = v.remove(0);
    eprintln!(
        "  note: copying the items into a fresh Arc<[u64]> alone: {first:.2} ns/item cold, {:.2} warm (median)",
        median(&mut v)
    );
}

/// The deterministic work of the slow callback: `k` xorshift steps.
#[inline(never)]
fn spin(item: u64, k: u64) -> u64 {
    let mut x = item | 1;
    for _ in 0..k {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// Median nanoseconds per call of `spin(_, k)` on this thread.
fn spin_ns(k: u64) -> f64 {
    const CALLS: u64 = 5000;
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            for i in 0..CALLS {
                black_box(spin(black_box(i), black_box(k)));
            }
            t0.elapsed().as_nanos() as f64 / CALLS as f64
        })
        .collect();
    median(&mut v)
}

/// A callback taking about 1 µs here, and its measured ns per call.
fn calibrate_1us() -> (WorkFn, f64) {
    let mut k = 256u64;
    for _ in 0..3 {
        let ns = spin_ns(k);
        k = ((k as f64 * 1000.0 / ns).round() as u64).max(1);
    }
    let ns = spin_ns(k);
    let cb: WorkFn = Arc::new(move |item, _| {
        black_box(spin(item, k));
    });
    (cb, ns)
}

/// Spins with `yield_now` until `done()` holds; fails after [`PARK_TIMEOUT`].
fn until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + PARK_TIMEOUT;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not happen within {PARK_TIMEOUT:?}"));
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// Wake latency of one item into an idle system: ours vs the mutex pool,
/// samples alternating between the two.
fn wake_latency(rep: &mut Reporter) -> Result<(), String> {
    let base = Instant::now();
    let started = Arc::new(AtomicU64::new(0));
    let worker_cpu = Arc::new(AtomicUsize::new(usize::MAX));
    let (slot, cpu_slot) = (Arc::clone(&started), Arc::clone(&worker_cpu));
    let cb: WorkFn = Arc::new(move |_, _| {
        slot.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
        // After the timestamp: reading /proc takes microseconds.
        cpu_slot.store(current_cpu().unwrap_or(usize::MAX - 1), Ordering::SeqCst);
    });
    let now = move || base.elapsed().as_nanos() as u64;
    let warm = 50;

    eprintln!("spheres: wake latency t={WAKE_THREADS}: {WAKE_SAMPLES} samples each, alternating ours / {MUTEX_POOL}");
    let sys = started_system(2, WAKE_THREADS, &cb)?;
    let pool = MutexPool::new(WAKE_THREADS, Arc::clone(&cb));
    let all_parked = || {
        until("all workers parked", || {
            sys.parked_workers() == sys.worker_threads() && pool.parked_workers() == pool.worker_threads()
        })
    };
    // Per sample: latency and producer-call time in µs, and whether the
    // callback ran on the CPU the producer was on.
    let mut ours = WakeSamples::default();
    let mut theirs = WakeSamples::default();
    let us = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
    for i in 0..warm + WAKE_SAMPLES {
        all_parked()?;
        let producer_cpu = current_cpu();
        let t0 = now();
        lib(sys.distribute(&[i as u64]))?;
        let t1 = now();
        lib(sys.wait(None))?;
        if i >= warm {
            let same = producer_cpu == Some(worker_cpu.load(Ordering::SeqCst));
            ours.push(us(t0, started.load(Ordering::SeqCst)), us(t0, t1), same);
        }

        all_parked()?;
        let producer_cpu = current_cpu();
        let t0 = now();
        pool.submit(&[i as u64]);
        let t1 = now();
        pool.wait();
        if i >= warm {
            let same = producer_cpu == Some(worker_cpu.load(Ordering::SeqCst));
            theirs.push(us(t0, started.load(Ordering::SeqCst)), us(t0, t1), same);
        }
    }
    drop(pool);
    lib(sys.stop())?;

    eprintln!(
        "  note: the producer's call returns after {:.2} us (distribute) vs {:.2} us (pool submit), medians",
        median(&mut ours.call),
        median(&mut theirs.call)
    );
    for (name, s) in [("ours", &ours), (MUTEX_POOL, &theirs)] {
        eprintln!("  note: {name}: {}", s.by_placement());
    }
    let (mut ours, mut theirs) = (ours.latency, theirs.latency);
    let case = format!("wake-latency/t={WAKE_THREADS}");
    let (om, tm) = (median(&mut ours), median(&mut theirs));
    let (o99, t99) = (percentile(&mut ours, 99.0), percentile(&mut theirs, 99.0));
    rep.record(row(&format!("{case}/median"), "us", om, MUTEX_POOL, tm, Some(Target::RatioAtMost(1.0))));
    rep.record(row(&format!("{case}/p99"), "us", o99, MUTEX_POOL, t99, None));
    Ok(())
}

/// Wake-latency samples of one contender.
#[derive(Default)]
struct WakeSamples {
    /// Microseconds from just before the producer's call to the callback.
    latency: Vec<f64>,
    /// Microseconds until the producer's call returned.
    call: Vec<f64>,
    /// Whether the callback ran on the producer's CPU.
    same_cpu: Vec<bool>,
}

impl WakeSamples {
    /// Adds one sample.
    fn push(&mut self, latency: f64, call: f64, same_cpu: bool) {
        self.latency.push(latency);
        self.call.push(call);
        self.same_cpu.push(same_cpu);
    }

    /// Median latency split by where the kernel ran the woken worker.
    fn by_placement(&self) -> String {
        let part = |same: bool| {
            let mut v: Vec<f64> =
                self.latency.iter().zip(&self.same_cpu).filter(|(_, &s)| s == same).map(|(&l, _)| l).collect();
            match v.len() {
                0 => "0 samples".to_string(),
                n => format!("{n} samples, median {:.2} us", median(&mut v)),
            }
        };
        format!("woken on the producer's CPU: {}; on another CPU: {}", part(true), part(false))
    }
}

/// The CPU the calling thread runs on (field 39 of /proc/thread-self/stat).
fn current_cpu() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3.
    stat.rsplit_once(')')?.1.split_whitespace().nth(39 - 3)?.parse().ok()
}

/// The one-minute load average of the machine, if /proc tells.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Threads of this process now (entries of /proc/self/task).
fn os_threads() -> Result<usize, String> {
    std::fs::read_dir("/proc/self/task").map(Iterator::count).map_err(|e| format!("/proc/self/task: {e}"))
}

/// The 4-level lifecycle: time and OS threads vs one thread per sphere.
fn lifecycle(rep: &mut Reporter, cpus: usize) -> Result<(), String> {
    eprintln!("spheres: lifecycle levels=4 ...");
    let before = os_threads()?;
    let sys = lib(SphereSystem::with_levels(4))?;
    lib(sys.start())?;
    let during = os_threads()?;
    let workers = sys.worker_threads();
    lib(sys.stop())?;
    drop(sys);
    let added = during.saturating_sub(before);
    eprintln!("  note: {added} OS threads added while started; worker_threads() = {workers}");

    let mut ms: Vec<f64> = (0..LIFECYCLE_REPS)
        .map(|_| {
            let t0 = Instant::now();
            let sys = lib(SphereSystem::with_levels(4))?;
            lib(sys.start())?;
            lib(sys.stop())?;
            drop(sys);
            Ok(t0.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, String>>()?;
    let ours = median(&mut ms);

    eprintln!("spheres: lifecycle baseline: {ORIGINAL_THREADS} std threads ...");
    let mut base: Vec<f64> = (0..5).map(|_| spawn_join_threads(ORIGINAL_THREADS)).collect::<Result<_, String>>()?;
    let baseline = median(&mut base);

    let case = "lifecycle/levels=4";
    rep.record(row(
        &format!("{case}/create-start-stop-drop"),
        "ms",
        ours,
        &format!("spawn+join {ORIGINAL_THREADS} std threads"),
        baseline,
        Some(Target::AtMost(10.0)),
    ));
    rep.record(row(
        &format!("{case}/os-threads"),
        "threads",
        added as f64,
        "original: one thread per sphere",
        ORIGINAL_THREADS as f64,
        Some(Target::AtMost(cpus as f64)),
    ));
    Ok(())
}

/// Milliseconds to spawn `n` threads that stay alive until all exist, then
/// release and join them: what one thread per sphere costs.
fn spawn_join_threads(n: usize) -> Result<f64, String> {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let g = Arc::clone(&gate);
        let h = std::thread::Builder::new()
            .spawn(move || {
                let (lock, cv) = &*g;
                let mut open = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !*open {
                    open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
                }
            })
            .map_err(|e| format!("spawning baseline thread: {e}"));
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                release_and_join(&gate, handles);
                return Err(e);
            }
        }
    }
    release_and_join(&gate, handles);
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

/// Opens `gate` and joins `handles`.
fn release_and_join(gate: &(Mutex<bool>, Condvar), handles: Vec<std::thread::JoinHandle<()>>) {
    *gate.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
    gate.1.notify_all();
    for h in handles {
        // The gate threads cannot panic.
        let _ = h.join();
    }
}
