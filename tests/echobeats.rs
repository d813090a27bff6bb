//! Integration tests of the Echobeats pool through its Rust API: every
//! public method, one named test per defect of the original C++ code
//! (`defect1_…` to `defect9_…`), and a stress test.
//!
//! Synchronisation is by channels, barriers and the pool's own waits; a
//! test sleeps only to let time pass for a deadline or pacing check.

use cllm::echobeats::*;
use cllm::Error;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// One worker per stream and loader, no pacing.
fn small() -> PoolConfig {
    PoolConfig { threads_per_stream: 1, data_loader_workers: 1, target_cycle_time_ms: 0.0, ..Default::default() }
}

fn pool(cfg: PoolConfig) -> EchobeatsPool {
    EchobeatsPool::new(cfg).unwrap()
}

fn on(stream: CognitiveStream, work: impl FnOnce(&TaskContext<'_>) -> Result<(), String> + Send + 'static) -> TaskSpec {
    TaskSpec { stream, ..TaskSpec::new(work) }
}

fn after(deps: &[u64], work: impl FnOnce(&TaskContext<'_>) -> Result<(), String> + Send + 'static) -> TaskSpec {
    TaskSpec { dependencies: deps.to_vec(), ..TaskSpec::new(work) }
}

/// A task that reports its start and then blocks until released.
struct Gate {
    started: Receiver<()>,
    release: Sender<()>,
}

fn gate(stream: CognitiveStream) -> (TaskSpec, Gate) {
    let (started_tx, started) = channel();
    let (release, release_rx) = channel::<()>();
    let spec = on(stream, move |_| {
        let _ = started_tx.send(());
        release_rx.recv().map_err(|e| e.to_string())
    });
    (spec, Gate { started, release })
}

impl Gate {
    fn wait_started(&self) {
        self.started.recv().unwrap();
    }
    fn open(&self) {
        self.release.send(()).unwrap();
    }
}

/// A pool whose Cerebral stream (max depth 1, waiting back-pressure up to
/// `wait`) is full: its one worker blocked by the returned gate, one task
/// queued, and a thread blocked submitting one more.
fn full_stream_with_a_waiting_submitter(
    wait: Duration,
) -> (Arc<EchobeatsPool>, Gate, std::thread::JoinHandle<cllm::Result<u64>>) {
    let p = Arc::new(pool(PoolConfig { max_queue_depth: 1, backpressure: Backpressure::Wait(wait), ..small() }));
    let (spec, g) = gate(CognitiveStream::Cerebral);
    p.submit(spec).unwrap();
    g.wait_started();
    p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
    let submitter = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.submit(TaskSpec::new(|_| Ok(()))))
    };
    (p, g, submitter)
}

fn status(p: &EchobeatsPool, id: u64) -> TaskStatus {
    p.wait_task(id, None).0
}

fn total(m: &PoolMetrics, f: impl Fn(&StreamMetrics) -> u64) -> u64 {
    m.streams.iter().map(f).sum()
}

// ----- the nine defects ----------------------------------------------------

#[test]
fn defect1_wait_for_task_twice_and_unknown_id() {
    let p = pool(small());
    let id = p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
    assert_eq!(id, 1, "ids start at 1");
    let (s1, r1) = p.wait_task(id, Some(Duration::from_secs(10)));
    let (s2, r2) = p.wait_task(id, None);
    let (s3, r3) = p.wait_task(id, Some(Duration::ZERO));
    assert_eq!((s1, s2, s3), (TaskStatus::Completed, TaskStatus::Completed, TaskStatus::Completed));
    assert_eq!(r1, r2);
    assert_eq!(r2, r3);
    let r = r1.unwrap();
    assert_eq!((r.id, r.status, r.stream, r.step), (id, TaskStatus::Completed, CognitiveStream::Cerebral, 1));
    // Ids never issued: Unknown at once, whatever the timeout.
    let t = Instant::now();
    assert_eq!(p.wait_task(0, None), (TaskStatus::Unknown, None));
    assert_eq!(p.wait_task(999_999, None), (TaskStatus::Unknown, None));
    assert_eq!(p.wait_task(u64::MAX, Some(Duration::from_secs(100))), (TaskStatus::Unknown, None));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn defect2_wait_for_stream_waits_for_running_tasks_and_honours_timeouts() {
    let p = pool(small());
    let (spec, g) = gate(CognitiveStream::Somatic);
    let id = p.submit(spec).unwrap();
    g.wait_started();
    // The queue is empty but the task runs: not quiescent.
    let t = Instant::now();
    assert!(!p.wait_stream(CognitiveStream::Somatic, Some(Duration::from_millis(30))));
    assert!(t.elapsed() >= Duration::from_millis(30), "the timeout is honoured");
    assert!(!p.synchronize_streams(Some(Duration::from_millis(10))));
    assert_eq!(p.metrics().sync_events, 0, "a failed sync is not an event");
    // Other streams are quiescent.
    assert!(p.wait_stream(CognitiveStream::Cerebral, Some(Duration::ZERO)));
    // A pending task (dependency on the running one) counts too.
    let dep = p.submit(TaskSpec { stream: CognitiveStream::Autonomic, ..after(&[id], |_| Ok(())) }).unwrap();
    assert!(!p.wait_stream(CognitiveStream::Autonomic, Some(Duration::from_millis(5))));
    g.open();
    assert!(p.wait_stream(CognitiveStream::Somatic, None));
    assert_eq!(p.wait_task(id, Some(Duration::ZERO)).0, TaskStatus::Completed);
    assert!(p.synchronize_streams(Some(Duration::from_secs(10))));
    assert_eq!(p.wait_task(dep, Some(Duration::ZERO)).0, TaskStatus::Completed);
    let m = p.metrics();
    assert_eq!(m.sync_events, 1);
    assert_eq!(total(&m, |s| s.tasks_completed), 2);
}

#[test]
fn defect3_shutdown_drains_or_cancels_and_never_hangs() {
    // Many short lives: no lost wake-up may hang the join.
    for i in 0..200u64 {
        let p = pool(PoolConfig { drain_on_shutdown: i % 2 == 0, ..small() });
        let ran = Arc::new(AtomicU64::new(0));
        for k in 0..(i % 7) {
            let ran = Arc::clone(&ran);
            let stream = CognitiveStream::ALL[(k % 3) as usize];
            p.submit(on(stream, move |_| {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }))
            .unwrap();
        }
        let r = p.shutdown();
        assert!(r.first_call && r.complete);
        let m = p.metrics();
        assert_eq!(total(&m, |s| s.tasks_completed) + total(&m, |s| s.tasks_cancelled), i % 7);
        assert_eq!(ran.load(Ordering::Relaxed), total(&m, |s| s.tasks_completed));
        if i % 2 == 0 {
            assert_eq!(ran.load(Ordering::Relaxed), i % 7, "drain runs everything");
        }
    }
    // Drain: queued and pending tasks all run.
    let p = pool(small());
    let (spec, g) = gate(CognitiveStream::Cerebral);
    let first = p.submit(spec).unwrap();
    g.wait_started();
    let ran = Arc::new(AtomicU64::new(0));
    let mut ids = vec![first];
    for k in 0..20 {
        let ran = Arc::clone(&ran);
        let deps = if k % 2 == 0 { vec![first] } else { vec![] };
        ids.push(
            p.submit(TaskSpec {
                dependencies: deps,
                ..TaskSpec::new(move |_| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
            })
            .unwrap(),
        );
    }
    let p = Arc::new(p);
    let shut = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.shutdown())
    };
    wait_closed(&p);
    g.open();
    let r = shut.join().unwrap();
    assert_eq!((r.drained, r.cancelled, r.complete), (21, 0, true));
    assert!(r.threads_joined >= 1);
    assert_eq!(ran.load(Ordering::Relaxed), 20);
    for id in ids {
        assert_eq!(p.wait_task(id, None).0, TaskStatus::Completed);
    }
    // Idempotent, and the pool is closed.
    let again = p.shutdown();
    assert!(!again.first_call);
    assert_eq!(again.drained, 21);
    assert!(matches!(p.submit(TaskSpec::new(|_| Ok(()))), Err(Error::WrongState(_))));
    assert!(matches!(p.submit_for_step(Box::new(|_| Ok(())), 1, 0.5), Err(Error::WrongState(_))));
    assert!(matches!(p.submit_batch(vec![TaskSpec::new(|_| Ok(()))]), Err(Error::WrongState(_))));

    // Cancel: what did not start is cancelled, counted, and its waiters
    // (blocked at the time of the shutdown) get Cancelled.
    let p = Arc::new(pool(PoolConfig { drain_on_shutdown: false, ..small() }));
    let (spec, g) = gate(CognitiveStream::Cerebral);
    let first = p.submit(spec).unwrap();
    g.wait_started();
    let ran = Arc::new(AtomicU64::new(0));
    let queued: Vec<u64> = (0..10)
        .map(|_| {
            let ran = Arc::clone(&ran);
            p.submit(TaskSpec::new(move |_| {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }))
            .unwrap()
        })
        .collect();
    let pending = p.submit(on(CognitiveStream::Somatic, |_| Ok(())).with_deps(&[queued[0]])).unwrap();
    let waiter = {
        let p = Arc::clone(&p);
        let id = queued[5];
        std::thread::spawn(move || p.wait_task(id, None).0)
    };
    let shut = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.shutdown())
    };
    // The shutdown waits for the running gate task; let it finish.
    wait_closed(&p);
    g.open();
    let r = shut.join().unwrap();
    assert_eq!(waiter.join().unwrap(), TaskStatus::Cancelled);
    assert_eq!(r.cancelled, 11, "ten queued and one pending");
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    assert_eq!(status(&p, first), TaskStatus::Completed);
    assert_eq!(status(&p, pending), TaskStatus::Cancelled);
    let m = p.metrics();
    assert_eq!(total(&m, |s| s.tasks_cancelled), 11);
    assert_eq!(total(&m, |s| s.tasks_submitted), total(&m, |s| s.tasks_completed + s.tasks_failed));
}

/// Waits until a shutdown running elsewhere has closed the pool (an empty
/// batch is accepted exactly while the pool is open).
fn wait_closed(p: &EchobeatsPool) {
    while p.submit_batch(Vec::new()).is_ok() {
        std::thread::yield_now();
    }
}

trait WithDeps {
    fn with_deps(self, deps: &[u64]) -> Self;
}

impl WithDeps for TaskSpec {
    fn with_deps(mut self, deps: &[u64]) -> Self {
        self.dependencies = deps.to_vec();
        self
    }
}

#[test]
fn defect4_dependencies_wait_in_a_pending_set_and_unknown_ids_are_rejected() {
    let p = pool(small());
    // Never issued: rejected, nothing submitted.
    for bad in [vec![0], vec![1], vec![12345]] {
        assert!(matches!(p.submit(after(&bad, |_| Ok(()))), Err(Error::InvalidArgument(_))));
    }
    assert_eq!(total(&p.metrics(), |s| s.tasks_submitted), 0);
    let (spec, g) = gate(CognitiveStream::Somatic);
    let dep = p.submit(spec).unwrap();
    g.wait_started();
    let runs = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&runs);
    let dependent = p
        .submit(after(&[dep], move |_| {
            r.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }))
        .unwrap();
    // Its waiters do not see it as done while the dependency runs.
    assert_eq!(p.wait_task(dependent, Some(Duration::from_millis(20))), (TaskStatus::Timeout, None));
    let m = p.metrics();
    assert_eq!(m.streams[0].current_queue_depth, 1, "pending counts in the queue depth");
    assert_eq!(runs.load(Ordering::Relaxed), 0);
    g.open();
    assert_eq!(status(&p, dependent), TaskStatus::Completed);
    assert!(p.synchronize_streams(None));
    assert_eq!(runs.load(Ordering::Relaxed), 1, "released exactly once");
    let m = p.metrics();
    assert_eq!(total(&m, |s| s.tasks_submitted), 2, "no re-queueing");
    // A dependency that already completed counts as met.
    let later = p.submit(after(&[dep, dependent], |_| Ok(()))).unwrap();
    assert_eq!(status(&p, later), TaskStatus::Completed);
}

#[test]
fn defect5_steps_are_validated_and_helpers_wrap() {
    let p = pool(small());
    for step in [0, 13, -1, -12, i32::MIN, i32::MAX] {
        assert!(matches!(p.submit_for_step(Box::new(|_| Ok(())), step, 0.5), Err(Error::InvalidArgument(_))));
        assert!(matches!(p.submit(TaskSpec { step, ..TaskSpec::new(|_| Ok(())) }), Err(Error::InvalidArgument(_))));
        assert!(matches!(p.submit_batch(vec![TaskSpec::for_step(step, |_| Ok(()))]), Err(Error::InvalidArgument(_))));
        // The static helpers wrap ((step − 1) mod 12 + 1), never panic.
        let w = wrap_step(step);
        assert!(is_valid_step(w));
        assert_eq!(stream_for_step(step), stream_for_step(w));
        assert_eq!(phase_for_step(step), phase_for_step(w));
        assert_eq!(mode_for_step(step), mode_for_step(w));
        assert_eq!(triad_for_step(step), triad_for_step(w));
    }
    assert_eq!(wrap_step(0), 12);
    assert_eq!(wrap_step(-1), 11);
    assert_eq!(wrap_step(13), 1);
    assert!(matches!(p.submit_for_step(Box::new(|_| Ok(())), 5, f32::NAN), Err(Error::InvalidArgument(_))));
    assert!(matches!(p.submit_for_step(Box::new(|_| Ok(())), 5, f32::INFINITY), Err(Error::InvalidArgument(_))));
    assert_eq!(total(&p.metrics(), |s| s.tasks_submitted), 0);
    for step in 1..=12 {
        let id = p.submit_for_step(Box::new(|_| Ok(())), step, 0.5).unwrap();
        let r = p.wait_task(id, None).1.unwrap();
        assert_eq!(
            (r.step, r.stream, r.phase, r.layer),
            (step, stream_for_step(step), phase_for_step(step), layer_for_step(step))
        );
    }
}

#[test]
fn defect6_run_cycle_paces_and_is_safe_concurrently() {
    // Pacing: a cycle that finishes early waits out the target.
    let p = Arc::new(pool(PoolConfig { target_cycle_time_ms: 15.0, ..small() }));
    for step in 1..=12 {
        p.submit_for_step(Box::new(|_| Ok(())), step, 0.5).unwrap();
    }
    let t = Instant::now();
    let us = p.run_cycle();
    assert!(t.elapsed() >= Duration::from_millis(15));
    assert!(us >= 15_000, "returned {us} us");
    assert_eq!(p.current_step(), 1);
    let m = p.metrics();
    assert_eq!(m.cycles_completed, 1);
    assert!(m.total_cycle_us >= 15_000);
    assert!(m.cycles_per_second() > 0.0 && m.cycles_per_second() <= 1000.0 / 15.0 + 1.0);
    assert_eq!(m.sync_events, 3, "leaving steps 4, 8 and 12");
    assert_eq!(total(&m, |s| s.tasks_completed), 12);

    // Two threads running cycles and one reading: no torn state.
    let p = Arc::new(pool(small()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (p, stop) = (Arc::clone(&p), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = p.current_step();
                assert!(is_valid_step(s));
                let _ = (p.current_stream(), p.current_phase(), p.current_mode(), p.metrics());
                reads += 1;
            }
            reads
        })
    };
    let runners: Vec<_> = (0..2)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    for step in 1..=12 {
                        p.submit_for_step(Box::new(|_| Ok(())), step, 0.5).unwrap();
                    }
                    assert!(p.run_cycle() >= 1);
                }
            })
        })
        .collect();
    for r in runners {
        r.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let m = p.metrics();
    assert_eq!(m.cycles_completed, 100);
    assert_eq!(p.current_step(), 1);
    assert!(p.synchronize_streams(None));
    assert_eq!(total(&p.metrics(), |s| s.tasks_completed), 1200);

    // Shutdown interrupts pacing.
    let p = Arc::new(pool(PoolConfig { target_cycle_time_ms: 60_000.0, ..small() }));
    let t = Instant::now();
    let cycler = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.run_cycle())
    };
    p.shutdown();
    cycler.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn defect7_every_config_field_and_metric_has_an_effect() {
    // threads_per_stream: three tasks of one stream meet at a barrier.
    let p = pool(PoolConfig { threads_per_stream: 3, ..small() });
    assert_eq!(p.config().threads_per_stream, 3);
    assert_eq!(p.config().inter_op_threads, 9);
    let b = Arc::new(Barrier::new(3));
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            let b = Arc::clone(&b);
            p.submit(TaskSpec::new(move |_| {
                b.wait();
                Ok(())
            }))
            .unwrap()
        })
        .collect();
    for id in ids {
        assert_eq!(status(&p, id), TaskStatus::Completed);
    }
    // inter_op_threads sizes the streams when threads_per_stream is auto.
    let p = pool(PoolConfig { threads_per_stream: 0, inter_op_threads: 6, ..small() });
    assert_eq!(p.config().threads_per_stream, 2);
    drop(p);

    // data_loader_workers and the DataLoader layer.
    let p = pool(PoolConfig { data_loader_workers: 2, ..small() });
    let b = Arc::new(Barrier::new(2));
    let names = Arc::new(Mutex::new(HashSet::new()));
    let ids: Vec<u64> = (0..2)
        .map(|_| {
            let (b, names) = (Arc::clone(&b), Arc::clone(&names));
            p.submit(TaskSpec {
                layer: PoolLayer::DataLoader,
                ..TaskSpec::new(move |ctx| {
                    assert_eq!(ctx.layer, PoolLayer::DataLoader);
                    names.lock().unwrap().insert(std::thread::current().name().unwrap_or("").to_string());
                    b.wait();
                    Ok(())
                })
            })
            .unwrap()
        })
        .collect();
    for id in ids {
        assert_eq!(status(&p, id), TaskStatus::Completed);
    }
    let names = names.lock().unwrap();
    assert_eq!(names.len(), 2);
    assert!(names.iter().all(|n| n.starts_with("echobeats-loader-")), "{names:?}");
    drop(names);

    // intra_op_threads: parallel_for spreads over the rayon pool.
    let p = pool(PoolConfig { intra_op_threads: 2, ..small() });
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let sum = Arc::new(AtomicU64::new(0));
    let (s2, sum2) = (Arc::clone(&seen), Arc::clone(&sum));
    let id = p
        .submit(TaskSpec {
            layer: PoolLayer::IntraOp,
            step: 3,
            phase: CognitivePhase::Simulation,
            ..TaskSpec::new(move |ctx| {
                let b = Barrier::new(2);
                ctx.parallel_for(0..2, |_| {
                    b.wait();
                    s2.lock().unwrap().insert(std::thread::current().name().unwrap_or("").to_string());
                });
                ctx.parallel_for(0..1000, |i| {
                    sum2.fetch_add(i as u64, Ordering::Relaxed);
                });
                Ok(())
            })
        })
        .unwrap();
    let r = p.wait_task(id, None).1.unwrap();
    assert_eq!(r.status, TaskStatus::Completed);
    assert_eq!((r.phase, r.layer, r.step), (CognitivePhase::Simulation, PoolLayer::IntraOp, 3), "phase is recorded");
    assert_eq!(sum.load(Ordering::Relaxed), 999 * 1000 / 2);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|n| n.starts_with("echobeats-intra-")), "{seen:?}");
    drop(seen);

    // Deadline: not started in time → Expired, counted.
    let p = pool(small());
    let (spec, g) = gate(CognitiveStream::Cerebral);
    p.submit(spec).unwrap();
    g.wait_started();
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    let late = p
        .submit(TaskSpec {
            deadline: Some(Instant::now() + Duration::from_millis(2)),
            ..TaskSpec::new(move |_| {
                r.store(true, Ordering::Relaxed);
                Ok(())
            })
        })
        .unwrap();
    let queued: Vec<u64> = (0..5).map(|_| p.submit(TaskSpec::new(|_| Ok(()))).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(5)); // let the deadline pass
    g.open();
    assert_eq!(status(&p, late), TaskStatus::Expired);
    assert!(!ran.load(Ordering::Relaxed));
    for id in queued {
        assert_eq!(status(&p, id), TaskStatus::Completed);
    }
    let m = p.metrics().streams[0];
    assert_eq!((m.tasks_expired, m.tasks_failed, m.tasks_completed), (1, 1, 6));
    assert_eq!(m.max_queue_depth, 6, "five queued plus the one that expired");
    assert_eq!(m.current_queue_depth, 0);
    assert!(m.queue_wait_us >= 5 * 5_000, "the queued tasks waited behind the gate: {}", m.queue_wait_us);
    assert!(m.total_execution_us >= 5_000, "the gate ran for at least 5 ms");
    assert!(m.min_execution_us <= m.max_execution_us);
    assert_eq!(m.tasks_run, 6);
    assert!(m.average_execution_us() > 0.0);

    // cuda_streams = 1: one lane, shared by all streams, strictly in order.
    let p = pool(PoolConfig { cuda_streams: 1, threads_per_stream: 2, ..small() });
    let order = Arc::new(Mutex::new(Vec::new()));
    let active = Arc::new(AtomicUsize::new(0));
    let ids: Vec<u64> = (0..30)
        .map(|k| {
            let (order, active) = (Arc::clone(&order), Arc::clone(&active));
            p.submit(TaskSpec {
                stream: CognitiveStream::ALL[k % 3],
                layer: PoolLayer::CudaStream,
                priority: k as f32, // ignored by the lane
                ..TaskSpec::new(move |_| {
                    assert_eq!(active.fetch_add(1, Ordering::SeqCst), 0, "one lane task at a time");
                    order.lock().unwrap().push(k);
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
            })
            .unwrap()
        })
        .collect();
    for id in ids {
        assert_eq!(status(&p, id), TaskStatus::Completed);
    }
    assert_eq!(*order.lock().unwrap(), (0..30).collect::<Vec<_>>());
    assert_eq!(p.ordered_lane_kind(), OrderedLaneKind::Cpu);

    // enable_realtime_priority: works or reports why, never crashes.
    let p = pool(PoolConfig { enable_realtime_priority: true, ..small() });
    let id = p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
    assert_eq!(status(&p, id), TaskStatus::Completed);
    match p.enable_realtime_priority() {
        Ok(()) => {}
        Err(Error::System(msg)) => assert!(msg.contains("refused"), "{msg}"),
        Err(e) => panic!("unexpected {e}"),
    }
    let id = p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
    assert_eq!(status(&p, id), TaskStatus::Completed);
}

#[test]
fn defect8_numa_from_sysfs_pins_before_work_and_barriers_are_freed() {
    fn my_cpus() -> Vec<usize> {
        // SAFETY: an all-zero cpu_set_t is the empty set; sched_getaffinity
        // writes at most its size.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 = this thread; pointer and size describe `set`.
        assert_eq!(unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }, 0);
        // SAFETY: i < CPU_SETSIZE.
        (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) }).collect()
    }
    let messages = Arc::new(Mutex::new(Vec::new()));
    let m2 = Arc::clone(&messages);
    let log: LogFn = Arc::new(move |level, msg: &str| m2.lock().unwrap().push((level, msg.to_string())));
    let p = pool(PoolConfig { enable_numa_affinity: true, log: Some(log), ..small() });
    assert!(messages.lock().unwrap().iter().any(|(l, m)| *l == LogLevel::Info && m.contains("NUMA")));
    // The first task of each stream already runs on its stream's CPUs.
    let seen: Vec<(u64, Arc<Mutex<Vec<usize>>>)> = CognitiveStream::ALL
        .iter()
        .map(|&s| {
            let cpus = Arc::new(Mutex::new(Vec::new()));
            let c = Arc::clone(&cpus);
            let id = p.submit(on(s, move |_| {
                *c.lock().unwrap() = my_cpus();
                Ok(())
            }));
            (id.unwrap(), cpus)
        })
        .collect();
    for (id, _) in &seen {
        assert_eq!(status(&p, *id), TaskStatus::Completed);
    }
    // The plan is deterministic: asking again reports the same one.
    let report = p.configure_numa_affinity();
    let topo = cllm::sys::CpuTopology::detect();
    assert_eq!(report.nodes, topo.nodes.len());
    for (s, (_, cpus)) in seen.iter().enumerate() {
        assert!(!report.stream_cpus[s].is_empty());
        assert_eq!(*cpus.lock().unwrap(), report.stream_cpus[s], "stream {s}: {}", report.summary);
    }
    let usable = cllm::sys::process_affinity_cpus().len();
    if topo.nodes.len() == 1 && usable >= 3 {
        assert!(!report.shared_cpus);
        let all: Vec<usize> = report.stream_cpus.iter().flatten().copied().collect();
        let distinct: HashSet<usize> = all.iter().copied().collect();
        assert_eq!(all.len(), distinct.len(), "disjoint sets");
    } else if topo.nodes.len() == 1 {
        assert!(report.shared_cpus && report.summary.contains("sharing was necessary"), "{}", report.summary);
    }

    // Called after start: workers re-pin at their next task.
    let p = pool(small());
    let id = p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
    assert_eq!(status(&p, id), TaskStatus::Completed);
    let report = p.configure_numa_affinity();
    let cpus = Arc::new(Mutex::new(Vec::new()));
    let c = Arc::clone(&cpus);
    let id = p
        .submit(TaskSpec::new(move |_| {
            *c.lock().unwrap() = my_cpus();
            Ok(())
        }))
        .unwrap();
    assert_eq!(status(&p, id), TaskStatus::Completed);
    assert_eq!(*cpus.lock().unwrap(), report.stream_cpus[0]);

    // Barriers are freed when destroyed.
    let ids: Vec<u64> = (0..1000).map(|_| p.create_barrier(DEFAULT_BARRIER_PARTIES).unwrap()).collect();
    assert_eq!(p.barrier_count(), 1000);
    for id in &ids {
        p.destroy_barrier(*id).unwrap();
    }
    assert_eq!(p.barrier_count(), 0);
    assert!(matches!(p.wait_at_barrier(ids[0], None), Err(Error::InvalidArgument(_))));
    assert!(matches!(p.destroy_barrier(ids[0]), Err(Error::InvalidArgument(_))));
}

#[test]
fn defect9_constructor_is_silent() {
    // Run the noisy parts in a child process and look at its output.
    if std::env::var_os("ECHOBEATS_SILENT_CHILD").is_some() {
        for cfg in [
            PoolConfig::default(),
            PoolConfig { enable_numa_affinity: true, enable_realtime_priority: true, ..small() },
            PoolConfig { drain_on_shutdown: false, ..small() },
        ] {
            let p = pool(cfg);
            let ids: Vec<u64> = (1..=12).map(|s| p.submit_for_step(Box::new(|_| Ok(())), s, 0.5).unwrap()).collect();
            p.submit(TaskSpec::new(|_| Err("fails quietly".into()))).unwrap();
            let _ = p.configure_numa_affinity();
            let _ = p.enable_realtime_priority();
            let _ = EchobeatsPool::recommended_config();
            for id in ids {
                p.wait_task(id, None);
            }
            p.advance_step();
            let _ = p.run_cycle();
            p.shutdown();
        }
        let _ = EchobeatsPool::new(PoolConfig { max_queue_depth: 0, ..Default::default() });
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "defect9_constructor_is_silent", "--nocapture", "--test-threads=1", "-q"])
        .env("ECHOBEATS_SILENT_CHILD", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let harness = line.starts_with("running ")
            || line.starts_with("test result:")
            || line.chars().all(|c| c == '.')
            || line.starts_with("test defect9_constructor_is_silent");
        assert!(harness, "unexpected output: {line:?}\n{stdout}");
    }
}

// ----- the rest of the API -----------------------------------------------------

#[test]
fn config_validation_and_defaults() {
    let d = PoolConfig::default();
    assert_eq!((d.threads_per_stream, d.data_loader_workers, d.inter_op_threads, d.intra_op_threads), (0, 0, 0, 0));
    assert_eq!(d.cuda_streams, 3);
    assert!(!d.enable_numa_affinity && !d.enable_realtime_priority);
    assert_eq!(d.target_cycle_time_ms, 100.0);
    assert_eq!(d.max_queue_depth, 1000);
    assert_eq!(d.backpressure, Backpressure::Wait(Duration::from_secs(1)));
    assert_eq!(d.result_retention, 65536);
    assert!(d.drain_on_shutdown && d.log.is_none());
    let bad = [
        PoolConfig { threads_per_stream: 1_000_000, ..Default::default() },
        PoolConfig { data_loader_workers: usize::MAX, ..Default::default() },
        PoolConfig { intra_op_threads: 100_000, ..Default::default() },
        PoolConfig { inter_op_threads: 1 << 40, ..Default::default() },
        PoolConfig { cuda_streams: 4, ..Default::default() },
        PoolConfig { max_queue_depth: 0, ..Default::default() },
        PoolConfig { max_queue_depth: usize::MAX, ..Default::default() },
        PoolConfig { target_cycle_time_ms: f32::NAN, ..Default::default() },
        PoolConfig { target_cycle_time_ms: -0.5, ..Default::default() },
        PoolConfig { target_cycle_time_ms: f32::INFINITY, ..Default::default() },
        PoolConfig { result_retention: usize::MAX, ..Default::default() },
    ];
    for cfg in bad {
        let shown = format!("{cfg:?}");
        assert!(matches!(EchobeatsPool::new(cfg), Err(Error::InvalidArgument(_))), "{shown}");
    }
    let p = pool(PoolConfig::default());
    let c = p.config();
    assert!(c.threads_per_stream >= 1 && c.data_loader_workers >= 1 && c.intra_op_threads >= 1);
    assert_eq!(c.inter_op_threads, 3 * c.threads_per_stream);
    let r = EchobeatsPool::recommended_config();
    assert!(r.usable_cpus >= 1);
    assert!(r.inter_op_threads >= 3 && r.inter_op_threads <= 12 && r.inter_op_threads.is_multiple_of(3));
    assert!((1..=12).contains(&r.intra_op_threads));
    assert!((1..=9).contains(&r.data_loader_workers));
    assert_eq!(r.cuda_streams, 3);
}

#[test]
fn priorities_higher_first_fifo_among_equals() {
    let p = pool(small());
    let (spec, g) = gate(CognitiveStream::Cerebral);
    p.submit(spec).unwrap();
    g.wait_started();
    let order = Arc::new(Mutex::new(Vec::new()));
    let prios = [0.5f32, 0.9, 0.1, 0.9, -3.0, 0.5, 100.0, 0.5, 0.0, -0.0];
    let mut expected: Vec<(f32, usize)> = Vec::new();
    for (k, &pr) in prios.iter().enumerate() {
        let o = Arc::clone(&order);
        p.submit(TaskSpec {
            priority: pr,
            ..TaskSpec::new(move |_| {
                o.lock().unwrap().push(k);
                Ok(())
            })
        })
        .unwrap();
        expected.push((pr, k));
    }
    g.open();
    assert!(p.wait_stream(CognitiveStream::Cerebral, None));
    // Stable sort by descending priority keeps submission order among equals.
    expected.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
    let expected: Vec<usize> = expected.into_iter().map(|(_, k)| k).collect();
    assert_eq!(*order.lock().unwrap(), expected);
}

#[test]
fn dependency_chains_and_diamonds() {
    let p = pool(PoolConfig { threads_per_stream: 2, data_loader_workers: 2, ..small() });
    let log = Arc::new(Mutex::new(Vec::new()));
    let step = |name: &'static str| {
        let log = Arc::clone(&log);
        move |_: &TaskContext<'_>| {
            log.lock().unwrap().push(name);
            Ok(())
        }
    };
    // Diamond over several streams and layers: a → (b, c) → d.
    let (spec, g) = gate(CognitiveStream::Autonomic);
    let gate_id = p.submit(spec).unwrap();
    let a = p.submit(on(CognitiveStream::Cerebral, step("a")).with_deps(&[gate_id])).unwrap();
    let b = p
        .submit(TaskSpec { layer: PoolLayer::DataLoader, ..on(CognitiveStream::Somatic, step("b")) }.with_deps(&[a]))
        .unwrap();
    let c = p
        .submit(TaskSpec { layer: PoolLayer::CudaStream, ..on(CognitiveStream::Autonomic, step("c")) }.with_deps(&[a]))
        .unwrap();
    let d = p.submit(on(CognitiveStream::Cerebral, step("d")).with_deps(&[b, c, a])).unwrap();
    g.wait_started();
    assert!(log.lock().unwrap().is_empty());
    g.open();
    assert_eq!(status(&p, d), TaskStatus::Completed);
    let l = log.lock().unwrap().clone();
    assert_eq!(l.len(), 4);
    assert_eq!((l[0], l[3]), ("a", "d"));
    // A long chain alternating streams and layers.
    let count = Arc::new(AtomicU64::new(0));
    let mut prev = None;
    let mut ids = Vec::new();
    for k in 0..2000u64 {
        let count = Arc::clone(&count);
        let spec = TaskSpec {
            stream: CognitiveStream::ALL[(k % 3) as usize],
            layer: [PoolLayer::InterOp, PoolLayer::DataLoader, PoolLayer::CudaStream, PoolLayer::IntraOp]
                [(k % 4) as usize],
            dependencies: prev.into_iter().collect(),
            ..TaskSpec::new(move |_| {
                assert_eq!(count.fetch_add(1, Ordering::SeqCst), k, "runs in chain order");
                Ok(())
            })
        };
        let id = p.submit(spec).unwrap();
        ids.push(id);
        prev = Some(id);
    }
    assert_eq!(status(&p, *ids.last().unwrap()), TaskStatus::Completed);
    assert_eq!(count.load(Ordering::SeqCst), 2000);
}

#[test]
fn failed_dependencies_fail_their_dependents_transitively() {
    let p = pool(small());
    let ran = Arc::new(AtomicU64::new(0));
    let counting = || {
        let ran = Arc::clone(&ran);
        move |_: &TaskContext<'_>| {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    };
    let (spec, g) = gate(CognitiveStream::Cerebral);
    let gate_id = p.submit(spec).unwrap();
    let bad = p.submit(TaskSpec::new(|_| Err("broken".into())).with_deps(&[gate_id])).unwrap();
    let child = p.submit(on(CognitiveStream::Somatic, counting()).with_deps(&[bad])).unwrap();
    let lane_child = p
        .submit(
            TaskSpec { layer: PoolLayer::CudaStream, ..on(CognitiveStream::Autonomic, counting()) }.with_deps(&[child]),
        )
        .unwrap();
    let grandchild = p.submit(TaskSpec::new(counting()).with_deps(&[child, gate_id])).unwrap();
    let sibling = p.submit(TaskSpec::new(counting()).with_deps(&[gate_id])).unwrap();
    // A lane task queued behind the failed one still runs.
    let lane_next =
        p.submit(TaskSpec { layer: PoolLayer::CudaStream, ..on(CognitiveStream::Autonomic, counting()) }).unwrap();
    g.open();
    assert_eq!(status(&p, bad), TaskStatus::Failed);
    for id in [child, lane_child, grandchild] {
        let (s, r) = p.wait_task(id, None);
        assert_eq!(s, TaskStatus::Failed);
        assert_eq!(r.unwrap().execution_time, Duration::ZERO, "never ran");
    }
    assert_eq!(status(&p, sibling), TaskStatus::Completed);
    assert_eq!(status(&p, lane_next), TaskStatus::Completed);
    assert_eq!(ran.load(Ordering::Relaxed), 2);
    // A dependency that already failed fails the new task at once.
    let late = p.submit(TaskSpec::new(counting()).with_deps(&[bad])).unwrap();
    assert_eq!(status(&p, late), TaskStatus::Failed);
    // Expired dependencies too.
    let expired = p
        .submit(TaskSpec { deadline: Some(Instant::now() - Duration::from_millis(1)), ..TaskSpec::new(counting()) })
        .unwrap();
    assert_eq!(status(&p, expired), TaskStatus::Expired);
    let after_expired = p.submit(TaskSpec::new(counting()).with_deps(&[expired])).unwrap();
    assert_eq!(status(&p, after_expired), TaskStatus::Failed);
    assert!(p.synchronize_streams(None));
    let m = p.metrics();
    assert_eq!(total(&m, |s| s.tasks_submitted), total(&m, |s| s.tasks_completed + s.tasks_failed));
    assert_eq!(total(&m, |s| s.tasks_failed), 7);
    assert_eq!(total(&m, |s| s.tasks_expired), 1);
}

#[test]
fn panics_and_errors_fail_the_task_not_the_worker() {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let m2 = Arc::clone(&messages);
    let log: LogFn = Arc::new(move |level, msg: &str| m2.lock().unwrap().push((level, msg.to_string())));
    let p = pool(PoolConfig { log: Some(log), ..small() });
    let boom = p.submit(TaskSpec::new(|_| panic!("boom"))).unwrap();
    let err = p.submit(TaskSpec::new(|_| Err("nope".into()))).unwrap();
    let fine = p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
    assert_eq!(status(&p, boom), TaskStatus::Failed);
    assert_eq!(status(&p, err), TaskStatus::Failed);
    assert_eq!(status(&p, fine), TaskStatus::Completed);
    let msgs = messages.lock().unwrap();
    assert!(msgs.iter().any(|(l, m)| *l == LogLevel::Debug && m.contains("boom")), "{msgs:?}");
    assert!(msgs.iter().any(|(_, m)| m.contains("nope")));
    let m = p.metrics().streams[0];
    assert_eq!((m.tasks_completed, m.tasks_failed, m.tasks_run), (1, 2, 3));
}

#[test]
fn backpressure_waits_then_fails_or_rejects() {
    for mode in [Backpressure::Reject, Backpressure::Wait(Duration::from_millis(20))] {
        let p = pool(PoolConfig { max_queue_depth: 4, backpressure: mode, ..small() });
        let (spec, g) = gate(CognitiveStream::Cerebral);
        p.submit(spec).unwrap();
        g.wait_started();
        for _ in 0..4 {
            p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
        }
        let t = Instant::now();
        assert!(matches!(p.submit(TaskSpec::new(|_| Ok(()))), Err(Error::Full(_))));
        if matches!(mode, Backpressure::Wait(_)) {
            assert!(t.elapsed() >= Duration::from_millis(20), "waited for room first");
        }
        // Other streams are not affected; pending tasks count.
        p.submit(on(CognitiveStream::Somatic, |_| Ok(()))).unwrap();
        assert!(matches!(
            p.submit_batch((0..5).map(|_| on(CognitiveStream::Somatic, |_| Ok(()))).collect()),
            Err(Error::Full(_))
        ));
        let m = p.metrics().streams[0];
        assert_eq!((m.current_queue_depth, m.max_queue_depth, m.tasks_submitted), (4, 4, 5));
        g.open();
        assert!(p.synchronize_streams(None));
        assert_eq!(p.metrics().streams[0].current_queue_depth, 0);
    }
    // A waiting submitter gets in as soon as there is room.
    let (p, g, waiter) = full_stream_with_a_waiting_submitter(Duration::from_secs(60));
    g.open();
    let id = waiter.join().unwrap().unwrap();
    assert_eq!(status(&p, id), TaskStatus::Completed);
    // A submitter blocked for room is released by shutdown.
    let (p, g, blocked) = full_stream_with_a_waiting_submitter(Duration::from_secs(600));
    let shut = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.shutdown())
    };
    let r = blocked.join().unwrap();
    assert!(matches!(r, Err(Error::WrongState(_)) | Ok(_)), "{r:?}");
    g.open();
    shut.join().unwrap();
}

#[test]
fn submit_batch_is_all_or_nothing() {
    let p = pool(small());
    let ids = p.submit_batch((1..=12).map(|s| TaskSpec::for_step(s, |_| Ok(()))).collect()).unwrap();
    assert_eq!(ids, (1..=12).collect::<Vec<u64>>(), "consecutive ids in order");
    for id in &ids {
        assert_eq!(status(&p, *id), TaskStatus::Completed);
    }
    assert_eq!(p.submit_batch(Vec::new()).unwrap(), Vec::<u64>::new());
    // One bad task: nothing is submitted.
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    let batch = vec![
        TaskSpec::new(move |_| {
            r.store(true, Ordering::Relaxed);
            Ok(())
        }),
        TaskSpec { step: 13, ..TaskSpec::new(|_| Ok(())) },
    ];
    assert!(matches!(p.submit_batch(batch), Err(Error::InvalidArgument(_))));
    assert!(matches!(p.submit_batch(vec![after(&[999], |_| Ok(()))]), Err(Error::InvalidArgument(_))));
    assert!(p.synchronize_streams(None));
    assert!(!ran.load(Ordering::Relaxed));
    assert_eq!(total(&p.metrics(), |s| s.tasks_submitted), 12);
    let next = p.submit(after(&ids, |_| Ok(()))).unwrap();
    assert_eq!(next, 13);
}

#[test]
fn barriers_release_withdraw_and_fail_when_destroyed() {
    let p = Arc::new(pool(small()));
    assert!(matches!(p.create_barrier(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(p.wait_at_barrier(42, Some(Duration::ZERO)), Err(Error::InvalidArgument(_))));
    assert!(matches!(p.destroy_barrier(42), Err(Error::InvalidArgument(_))));
    // One party: passes at once.
    let solo = p.create_barrier(1).unwrap();
    assert_eq!(p.wait_at_barrier(solo, None), Ok(true));
    // Three parties, reusable over generations, from pool tasks.
    let b = p.create_barrier(DEFAULT_BARRIER_PARTIES).unwrap();
    for _round in 0..3 {
        let ids: Vec<u64> = CognitiveStream::ALL
            .iter()
            .map(|&s| {
                let q = Arc::clone(&p);
                p.submit(on(s, move |_| match q.wait_at_barrier(b, Some(Duration::from_secs(60))) {
                    Ok(true) => Ok(()),
                    other => Err(format!("{other:?}")),
                }))
                .unwrap()
            })
            .collect();
        for id in ids {
            assert_eq!(status(&p, id), TaskStatus::Completed);
        }
    }
    // Timeout withdraws the arrival: two later parties cannot pass alone.
    let two = p.create_barrier(2).unwrap();
    assert_eq!(p.wait_at_barrier(two, Some(Duration::from_millis(10))), Ok(false));
    let other = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.wait_at_barrier(two, Some(Duration::from_secs(60))))
    };
    assert_eq!(p.wait_at_barrier(two, Some(Duration::from_secs(60))), Ok(true));
    assert_eq!(other.join().unwrap(), Ok(true));
    // Destroy while waiting: the waiters return an error instead of hanging.
    let doomed = p.create_barrier(3).unwrap();
    let (tx, rx) = channel();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let (p, tx) = (Arc::clone(&p), tx.clone());
            std::thread::spawn(move || {
                tx.send(()).unwrap();
                p.wait_at_barrier(doomed, None)
            })
        })
        .collect();
    rx.recv().unwrap();
    rx.recv().unwrap();
    p.destroy_barrier(doomed).unwrap();
    for w in waiters {
        // Either blocked and told it was destroyed, or arrived after the
        // destruction and told the id is unknown.
        assert!(matches!(w.join().unwrap(), Err(Error::WrongState(_)) | Err(Error::InvalidArgument(_))));
    }
    assert_eq!(p.barrier_count(), 3, "solo, the reusable one, the two-party one");
    // Shutdown destroys the rest and releases their waiters.
    let last = p.create_barrier(2).unwrap();
    let w = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.wait_at_barrier(last, None))
    };
    p.shutdown();
    assert!(w.join().unwrap().is_err());
    assert_eq!(p.barrier_count(), 0);
    assert!(matches!(p.create_barrier(2), Err(Error::WrongState(_))));
}

#[test]
fn wait_task_from_eight_threads_at_once() {
    let p = Arc::new(pool(small()));
    let (spec, g) = gate(CognitiveStream::Cerebral);
    let id = p.submit(spec).unwrap();
    let start = Arc::new(Barrier::new(9));
    let waiters: Vec<_> = (0..8)
        .map(|k| {
            let (p, start) = (Arc::clone(&p), Arc::clone(&start));
            std::thread::spawn(move || {
                if k == 0 {
                    // The gate stays closed until everybody reached `start`.
                    assert_eq!(p.wait_task(id, Some(Duration::from_millis(1))).0, TaskStatus::Timeout);
                }
                start.wait();
                p.wait_task(id, if k % 2 == 0 { None } else { Some(Duration::from_secs(60)) })
            })
        })
        .collect();
    start.wait();
    g.wait_started();
    g.open();
    let results: Vec<_> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    for (s, r) in &results {
        assert_eq!(*s, TaskStatus::Completed);
        assert_eq!(r.unwrap(), results[0].1.unwrap());
    }
    // And still readable afterwards.
    assert_eq!(status(&p, id), TaskStatus::Completed);
}

#[test]
fn steps_cycles_and_getters() {
    let p = pool(small());
    assert_eq!(p.current_step(), 1);
    assert_eq!(p.current_stream(), CognitiveStream::Cerebral);
    assert_eq!(p.current_phase(), CognitivePhase::Perception);
    assert_eq!(p.current_mode(), ProcessingMode::Expressive);
    let mut seen = vec![p.current_step()];
    for _ in 0..11 {
        let s = p.advance_step();
        assert_eq!(s, p.current_step());
        assert_eq!(p.current_stream(), stream_for_step(s));
        assert_eq!(p.current_phase(), phase_for_step(s));
        assert_eq!(p.current_mode(), mode_for_step(s));
        seen.push(s);
    }
    assert_eq!(seen, (1..=12).collect::<Vec<_>>());
    assert_eq!(p.metrics().sync_events, 2, "left steps 4 and 8");
    assert_eq!(p.metrics().cycles_completed, 0);
    assert_eq!(p.advance_step(), 1);
    let m = p.metrics();
    assert_eq!((m.cycles_completed, m.sync_events), (1, 3));
    // run_cycle with work in every step, unpaced.
    let count = Arc::new(AtomicU64::new(0));
    for _ in 0..20 {
        for step in 1..=12 {
            let c = Arc::clone(&count);
            p.submit_for_step(
                Box::new(move |_| {
                    c.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }),
                step,
                0.5,
            )
            .unwrap();
        }
        assert!(p.run_cycle() >= 1);
        assert_eq!(p.current_step(), 1);
    }
    assert!(p.synchronize_streams(None));
    assert_eq!(count.load(Ordering::Relaxed), 240);
    assert_eq!(p.metrics().cycles_completed, 21);
    // Names and indices of the enums.
    assert_eq!(CognitiveStream::from_index(2), Some(CognitiveStream::Autonomic));
    assert_eq!(CognitiveStream::from_index(3), None);
    assert_eq!(CognitivePhase::from_index(-1), None);
    assert_eq!(PoolLayer::from_index(4).map(PoolLayer::name), Some("CUDAStream"));
    assert_eq!(ProcessingMode::Reflective.name(), "Reflective");
    assert_eq!(CognitivePhase::Integration.name(), "Integration");
    assert_eq!(CognitiveStream::Somatic.name(), "Somatic");
    assert_eq!(triadic_face(2), Some([0, 2, 3]));
    assert_eq!(dyadic_edge(3, 1), Some(4));
    assert_eq!((NUM_STREAMS, STEPS_PER_CYCLE, STEPS_PER_STREAM, TRIADS_PER_CYCLE), (3, 12, 4, 4));
}

#[test]
fn metrics_start_clean_and_reset() {
    let p = pool(small());
    let m = p.metrics();
    for s in &m.streams {
        assert_eq!(s.min_execution_us, u64::MAX, "min starts at u64::MAX until a task ran");
        assert_eq!((s.tasks_submitted, s.max_execution_us, s.contention_events), (0, 0, 0));
        assert_eq!(s.average_execution_us(), 0.0);
    }
    assert_eq!(m.cycles_per_second(), 0.0);
    let (spec, g) = gate(CognitiveStream::Somatic);
    p.submit(spec).unwrap();
    g.wait_started();
    for _ in 0..3 {
        p.submit(on(CognitiveStream::Somatic, |_| Ok(()))).unwrap();
    }
    p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
    assert!(p.wait_stream(CognitiveStream::Cerebral, None));
    let m = p.metrics();
    assert_eq!(m.streams[0].tasks_completed, 1);
    assert!(m.streams[0].min_execution_us < u64::MAX);
    assert_eq!(m.streams[1].current_queue_depth, 3);
    p.reset_metrics();
    let m = p.metrics();
    assert_eq!(m.streams[0].tasks_completed, 0);
    assert_eq!(m.streams[0].min_execution_us, u64::MAX);
    assert_eq!(m.streams[1].current_queue_depth, 3, "the current depth stays truthful");
    assert_eq!(m.streams[1].max_queue_depth, 3);
    assert_eq!(m.streams[1].tasks_submitted, 0);
    g.open();
    assert!(p.synchronize_streams(None));
    let m = p.metrics();
    assert_eq!(m.streams[1].tasks_completed, 4);
    assert_eq!(m.sync_events, 1);
}

#[test]
fn shutdown_and_drop_from_inside_a_task_do_not_hang() {
    // The last handle dropped inside a task.
    let p = Arc::new(pool(small()));
    let q = Arc::clone(&p);
    let (tx, rx) = channel();
    p.submit(TaskSpec::new(move |_| {
        rx.recv().unwrap();
        drop(q);
        Ok(())
    }))
    .unwrap();
    drop(p);
    tx.send(()).unwrap();
    // shutdown() from a task: closes, does not wait for itself.
    let p = Arc::new(pool(small()));
    let q = Arc::clone(&p);
    let (tx, rx) = channel();
    let id = p
        .submit(TaskSpec::new(move |_| {
            tx.send(q.shutdown()).unwrap();
            Ok(())
        }))
        .unwrap();
    let inner = rx.recv().unwrap();
    assert!(inner.first_call && !inner.complete);
    let outer = p.shutdown();
    assert!(!outer.first_call && outer.complete);
    assert_eq!(status(&p, id), TaskStatus::Completed);
}

#[test]
fn wait_task_retention_and_timeouts() {
    let p = pool(PoolConfig { result_retention: 100, ..small() });
    let first = p.submit(TaskSpec::new(|_| Ok(()))).unwrap();
    assert_eq!(status(&p, first), TaskStatus::Completed);
    let (spec, g) = gate(CognitiveStream::Cerebral);
    let gated = p.submit(spec).unwrap();
    g.wait_started();
    let t = Instant::now();
    assert_eq!(p.wait_task(gated, Some(Duration::from_millis(15))), (TaskStatus::Timeout, None));
    assert!(t.elapsed() >= Duration::from_millis(15));
    assert_eq!(p.wait_task(gated, Some(Duration::ZERO)), (TaskStatus::Timeout, None));
    g.open();
    assert_eq!(status(&p, gated), TaskStatus::Completed);
    // Run far more tasks than the ring holds: the oldest result is dropped.
    for _ in 0..10_000 {
        p.submit(on(CognitiveStream::Somatic, |_| Ok(()))).unwrap();
    }
    assert!(p.synchronize_streams(None));
    assert_eq!(p.wait_task(first, None), (TaskStatus::Unknown, None));
    // Its success is still known to new dependents.
    let dep = p.submit(after(&[first], |_| Ok(()))).unwrap();
    assert_eq!(status(&p, dep), TaskStatus::Completed);
}

#[test]
fn stress_four_submitters_random_priorities_and_dependency_chains() {
    const THREADS: usize = 4;
    const PER: usize = 50_000;
    let p = Arc::new(pool(PoolConfig {
        threads_per_stream: 2,
        data_loader_workers: 2,
        backpressure: Backpressure::Wait(Duration::from_secs(120)),
        target_cycle_time_ms: 0.0,
        ..Default::default()
    }));
    let slots: Arc<Vec<AtomicU32>> = Arc::new((0..THREADS * PER).map(|_| AtomicU32::new(0)).collect());
    let submitters: Vec<_> = (0..THREADS)
        .map(|t| {
            let (p, slots) = (Arc::clone(&p), Arc::clone(&slots));
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(0xEC40 + t as u64);
                let mut mine: Vec<u64> = Vec::with_capacity(PER);
                for i in 0..PER {
                    let slot = t * PER + i;
                    let mut deps = Vec::new();
                    if !mine.is_empty() && rng.gen_bool(0.3) {
                        // Chains: often the previous task, sometimes random earlier ones.
                        deps.push(*mine.last().unwrap());
                        for _ in 0..rng.gen_range(0..3) {
                            deps.push(mine[rng.gen_range(0..mine.len())]);
                        }
                    }
                    let slots = Arc::clone(&slots);
                    let spec = TaskSpec {
                        stream: CognitiveStream::ALL[rng.gen_range(0..3)],
                        layer: [
                            PoolLayer::InterOp,
                            PoolLayer::MainThread,
                            PoolLayer::IntraOp,
                            PoolLayer::DataLoader,
                            PoolLayer::CudaStream,
                        ][rng.gen_range(0..5)],
                        priority: rng.gen_range(-10.0..10.0),
                        step: rng.gen_range(1..=12),
                        dependencies: deps,
                        ..TaskSpec::new(move |_| {
                            slots[slot].fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        })
                    };
                    mine.push(p.submit(spec).unwrap());
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<u64> = Vec::new();
    for s in submitters {
        all.extend(s.join().unwrap());
    }
    assert!(p.synchronize_streams(None));
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), THREADS * PER, "ids are unique");
    assert_eq!(*unique.iter().min().unwrap(), 1);
    assert_eq!(*unique.iter().max().unwrap(), (THREADS * PER) as u64);
    let bad: Vec<usize> = (0..THREADS * PER).filter(|&i| slots[i].load(Ordering::Relaxed) != 1).collect();
    assert!(bad.is_empty(), "{} tasks did not run exactly once, e.g. {:?}", bad.len(), &bad[..bad.len().min(10)]);
    let m = p.metrics();
    for (s, sm) in m.streams.iter().enumerate() {
        assert_eq!(sm.tasks_submitted, sm.tasks_completed + sm.tasks_failed, "stream {s}: {sm:?}");
        assert_eq!(sm.tasks_failed, 0);
        assert_eq!(sm.current_queue_depth, 0);
        assert!(sm.max_queue_depth as usize <= 1000);
    }
    assert_eq!(total(&m, |s| s.tasks_submitted), (THREADS * PER) as u64);
    // The most recent results are still readable.
    for id in all.iter().filter(|&&id| id > (THREADS * PER) as u64 - 1000) {
        assert_eq!(p.wait_task(*id, Some(Duration::ZERO)).0, TaskStatus::Completed);
    }
    let r = p.shutdown();
    assert_eq!((r.drained, r.cancelled), (0, 0));
}

/// With the `cuda` feature on a machine without a CUDA device, ordered
/// lanes fall back to CPU lanes and a `CudaStream` task gets no stream but
/// still runs in lane order.
#[cfg(feature = "cuda")]
#[test]
fn cuda_feature_without_a_device_falls_back_to_cpu_lanes() {
    let p = pool(small());
    if p.ordered_lane_kind() == OrderedLaneKind::Cuda {
        return; // a GPU is present: the CPU fallback cannot be observed here
    }
    let (tx, rx) = channel();
    let mut t = on(CognitiveStream::Somatic, move |ctx| {
        tx.send(ctx.cuda_stream().is_none()).unwrap();
        Ok(())
    });
    t.layer = PoolLayer::CudaStream;
    let id = p.submit(t).unwrap();
    assert_eq!(status(&p, id), TaskStatus::Completed);
    assert!(rx.recv().unwrap(), "no stream without a device");
}
