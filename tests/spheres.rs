//! Integration tests of the kissing-spheres scheduler through its Rust API.

use cllm::spheres::*;
use cllm::Error;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::time::Duration;

fn system(shape: Shape, threads: usize) -> SphereSystem {
    SphereSystem::new(&SphereOptions { shape, threads, ..Default::default() }).unwrap()
}

fn counting(counters: &Arc<Vec<AtomicU32>>) -> WorkFn {
    let c = Arc::clone(counters);
    Arc::new(move |item, _| {
        c[item as usize].fetch_add(1, Ordering::Relaxed);
    })
}

/// A stopped system whose callback only counts the items it runs.
fn counting_runs(shape: Shape, threads: usize) -> (SphereSystem, Arc<AtomicU64>) {
    let runs = Arc::new(AtomicU64::new(0));
    let sys = system(shape, threads);
    let r = Arc::clone(&runs);
    sys.set_work_fn(Some(Arc::new(move |_, _| {
        r.fetch_add(1, Ordering::Relaxed);
    })))
    .unwrap();
    (sys, runs)
}

fn all_exactly_once(counters: &[AtomicU32]) -> bool {
    counters.iter().all(|c| c.load(Ordering::Relaxed) == 1)
}

/// Cheap deterministic per-item cost between 0 and ~60 spins.
fn random_cost(item: u64) {
    let mut x = item.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
    while x > 0 {
        std::hint::black_box(x);
        x -= 1;
    }
}

#[test]
fn stress_eight_producers_hundred_rounds_exactly_once() {
    const PRODUCERS: usize = 8;
    const PER_PRODUCER: usize = 100_000;
    const ROUNDS: usize = 100;
    let total = PRODUCERS * PER_PRODUCER;
    let counters: Arc<Vec<AtomicU32>> = Arc::new((0..total).map(|_| AtomicU32::new(0)).collect());
    let sys = Arc::new(system(Shape::Levels(4), 0));
    let c = Arc::clone(&counters);
    sys.set_work_fn(Some(Arc::new(move |item, _| {
        random_cost(item);
        c[item as usize].fetch_add(1, Ordering::Relaxed);
    })))
    .unwrap();
    sys.start().unwrap();
    for round in 0..ROUNDS {
        let start = Arc::new(Barrier::new(PRODUCERS));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let sys = Arc::clone(&sys);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    let base = (p * PER_PRODUCER) as u64;
                    start.wait();
                    // Mixed call sizes: single items, small and large arrays, a range.
                    let mut next = base;
                    let end = base + PER_PRODUCER as u64;
                    for size in [1u64, 7, 1000, 30_000].iter().cycle() {
                        if next >= end {
                            break;
                        }
                        let n = (*size).min(end - next);
                        if (p + round) % 3 == 0 && n > 7 {
                            sys.distribute_range(next, n).unwrap();
                        } else {
                            let items: Vec<u64> = (next..next + n).collect();
                            sys.distribute(&items).unwrap();
                        }
                        next += n;
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        assert!(sys.wait(Some(Duration::from_secs(60))).unwrap(), "round {round} did not finish");
        assert!(all_exactly_once(&counters), "round {round}: some item not run exactly once");
        counters.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    }
    let s = sys.summary();
    assert_eq!(s.items_processed, (total * ROUNDS) as u64);
    assert_eq!(s.pending_items, 0);
    sys.stop().unwrap();
}

#[test]
fn work_queued_before_start_runs_on_start_and_stop_drains() {
    let counters: Arc<Vec<AtomicU32>> = Arc::new((0..50_000).map(|_| AtomicU32::new(0)).collect());
    let sys = system(Shape::Levels(3), 2);
    sys.set_work_fn(Some(counting(&counters))).unwrap();
    sys.distribute_range(0, 20_000).unwrap();
    assert_eq!(sys.pending(), 20_000);
    assert!(matches!(sys.wait(None), Err(Error::WrongState(_))));
    sys.start().unwrap();
    sys.distribute_range(20_000, 30_000).unwrap();
    sys.stop().unwrap();
    assert_eq!(sys.pending(), 0);
    assert!(all_exactly_once(&counters));
}

#[test]
fn cancel_reports_what_never_ran() {
    let (sys, ran) = counting_runs(Shape::Levels(2), 2);
    sys.distribute_range(0, 10_000).unwrap();
    assert_eq!(sys.cancel_pending(), 10_000);
    assert_eq!(sys.pending(), 0);
    sys.start().unwrap();
    assert!(sys.wait(None).unwrap());
    sys.stop().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 0);
}

#[test]
fn start_stop_in_any_order_and_repetition() {
    let sys = system(Shape::Levels(2), 2);
    assert!(matches!(sys.stop(), Err(Error::WrongState(_))));
    for _ in 0..5 {
        sys.start().unwrap();
        assert!(matches!(sys.start(), Err(Error::WrongState(_))));
        sys.distribute_range(0, 1000).unwrap();
        sys.stop().unwrap();
        assert!(matches!(sys.stop(), Err(Error::WrongState(_))));
        assert_eq!(sys.pending(), 0);
    }
    // Dropping a running system with queued work drains it.
    let (sys, count) = counting_runs(Shape::Levels(2), 2);
    sys.start().unwrap();
    sys.distribute_range(0, 100_000).unwrap();
    drop(sys);
    assert_eq!(count.load(Ordering::Relaxed), 100_000);
}

#[test]
fn callback_cannot_be_changed_while_running() {
    let sys = system(Shape::Levels(1), 1);
    sys.start().unwrap();
    assert!(matches!(sys.set_work_fn(None), Err(Error::WrongState(_))));
    sys.stop().unwrap();
    sys.set_work_fn(None).unwrap();
}

#[test]
fn a_panicking_item_fails_alone() {
    let ran = Arc::new(AtomicU64::new(0));
    let sys = system(Shape::Levels(2), 2);
    let r = Arc::clone(&ran);
    sys.set_work_fn(Some(Arc::new(move |item, _| {
        if item % 100 == 7 {
            panic!("item {item} fails on purpose");
        }
        r.fetch_add(1, Ordering::Relaxed);
    })))
    .unwrap();
    sys.start().unwrap();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    sys.distribute_range(0, 10_000).unwrap();
    assert!(sys.wait(None).unwrap());
    std::panic::set_hook(hook);
    assert_eq!(ran.load(Ordering::Relaxed), 9_900);
    assert_eq!(sys.summary().failed_items, 100);
    sys.stop().unwrap();
}

#[test]
fn wait_times_out_while_a_callback_is_blocked() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let sys = Arc::new(system(Shape::Levels(1), 1));
    sys.set_work_fn(Some(Arc::new(move |_, _| {
        release_rx.lock().unwrap().recv().unwrap();
    })))
    .unwrap();
    sys.start().unwrap();
    sys.distribute(&[1]).unwrap();
    assert!(!sys.wait(Some(Duration::from_millis(20))).unwrap());
    release_tx.send(()).unwrap();
    assert!(sys.wait(Some(Duration::from_secs(30))).unwrap());
    sys.stop().unwrap();
}

#[test]
fn worker_cannot_wait_or_stop_itself() {
    let sys = Arc::new(system(Shape::Levels(1), 1));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s2, seen2) = (Arc::downgrade(&sys), Arc::clone(&seen));
    sys.set_work_fn(Some(Arc::new(move |_, _| {
        let sys = s2.upgrade().unwrap();
        seen2.lock().unwrap().push((sys.wait(None).is_err(), sys.stop().is_err()));
    })))
    .unwrap();
    sys.start().unwrap();
    sys.distribute(&[1]).unwrap();
    assert!(sys.wait(None).unwrap());
    sys.stop().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(true, true)]);
}

#[test]
fn own_queue_is_fifo_with_one_worker() {
    let order = Arc::new(Mutex::new(Vec::new()));
    let sys = system(Shape::Levels(2), 1);
    let o = Arc::clone(&order);
    sys.set_work_fn(Some(Arc::new(move |item, _| o.lock().unwrap().push(item)))).unwrap();
    let items: Vec<u64> = (1..=100).collect();
    sys.enqueue(5, &items).unwrap();
    sys.start().unwrap();
    assert!(sys.wait(None).unwrap());
    sys.stop().unwrap();
    assert_eq!(*order.lock().unwrap(), items);
}

#[test]
fn thieves_take_newest_first_and_disabled_stealing_is_honoured() {
    for stealing in [true, false] {
        let sys = Arc::new(system(Shape::Levels(2), 2));
        // A sphere owned by worker 0; worker 1 has nothing of its own.
        let victim = (1..=12).find(|&s| sys.sphere_owner(s) == Some(0)).unwrap();
        let thief_home = sys.worker_home(1).unwrap();
        sys.set_stealing(victim, stealing).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (l, g) = (Arc::clone(&log), Arc::clone(&gate));
        sys.set_work_fn(Some(Arc::new(move |item, sphere| {
            if sphere == victim && item == 1 && stealing {
                // Hold the owner on its first item until a thief has run one.
                let (m, cv) = &*g;
                let guard = m.lock().unwrap();
                let _ = cv.wait_timeout_while(guard, Duration::from_secs(10), |stolen| !*stolen).unwrap();
            }
            if sphere != victim {
                *g.0.lock().unwrap() = true;
                g.1.notify_all();
            }
            l.lock().unwrap().push((item, sphere));
        })))
        .unwrap();
        let items: Vec<u64> = (1..=40).collect();
        sys.enqueue(victim, &items).unwrap();
        sys.start().unwrap();
        assert!(sys.wait(Some(Duration::from_secs(30))).unwrap());
        sys.stop().unwrap();
        let log = log.lock().unwrap();
        let mut seen: Vec<u64> = log.iter().map(|&(i, _)| i).collect();
        seen.sort();
        assert_eq!(seen, items, "exactly once");
        let owner_run: Vec<u64> = log.iter().filter(|&&(_, s)| s == victim).map(|&(i, _)| i).collect();
        let thief_run: Vec<u64> = log.iter().filter(|&&(_, s)| s == thief_home).map(|&(i, _)| i).collect();
        assert!(owner_run.windows(2).all(|w| w[0] < w[1]), "owner FIFO: {owner_run:?}");
        let stats_victim = sys.sphere_stats(victim).unwrap();
        if stealing {
            assert!(!thief_run.is_empty());
            assert!(thief_run[0] > *owner_run.last().unwrap_or(&0), "thief starts from the newest");
            assert_eq!(stats_victim.stolen_from, sys.sphere_stats(thief_home).unwrap().stolen_to);
            assert!(stats_victim.stolen_from > 0);
        } else {
            assert_eq!(owner_run, items);
            assert_eq!(stats_victim.stolen_from, 0);
        }
    }
}

#[test]
fn reduction_is_bit_identical_whatever_the_fill_order() {
    let opts = SphereOptions { shape: Shape::Levels(3), threads: 2, buffer_len: 333, ..Default::default() };
    let values =
        |s: usize| -> Vec<f32> { (0..333).map(|k| ((s * 7919 + k * 104_729) % 1000) as f32 * 1e-3 + 1e-7).collect() };
    let mut results = Vec::new();
    for order_seed in 0..4u64 {
        let sys = SphereSystem::new(&opts).unwrap();
        let mut order: Vec<usize> = (0..sys.hierarchy().len()).collect();
        // A different fill order each time (deterministic shuffle).
        order.sort_by_key(|&s| (s as u64).wrapping_mul(0x9E37_79B9 + order_seed * 2654435761) % 1_000_003);
        std::thread::scope(|scope| {
            for part in order.chunks(40) {
                let sys = &sys;
                scope.spawn(move || {
                    for &s in part {
                        sys.accumulate(s, &values(s)).unwrap();
                    }
                });
            }
        });
        let mut out = vec![0f32; 333];
        sys.reduce(&mut out).unwrap();
        results.push(out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>());
        // Buffers are zeroed: a second reduce gives zeros.
        sys.reduce(&mut out).unwrap();
        assert!(out.iter().all(|&v| v == 0.0));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    let expect: f64 = (0..157).map(|s| values(s)[5] as f64).sum();
    assert!((f32::from_bits(results[0][5]) as f64 - expect).abs() < 1e-3 * expect.abs().max(1.0));
}

#[test]
fn epoch_and_level_barriers_release_workers_together() {
    let sys = Arc::new(system(Shape::Levels(2), 2));
    let spheres: Vec<usize> = (0..2).map(|w| (1..=12).find(|&s| sys.sphere_owner(s) == Some(w)).unwrap()).collect();
    for &s in &spheres {
        sys.set_stealing(s, false).unwrap();
    }
    let results = Arc::new(Mutex::new(Vec::new()));
    let (weak, r) = (Arc::downgrade(&sys), Arc::clone(&results));
    let home_level = sys.hierarchy().node(sys.worker_home(0).unwrap()).unwrap().level;
    sys.set_work_fn(Some(Arc::new(move |_, _| {
        let sys = weak.upgrade().unwrap();
        let e = sys.epoch_barrier(Some(Duration::from_secs(10)));
        let l = sys.level_barrier(home_level, Some(Duration::from_secs(10)));
        let bad = sys.level_barrier(home_level + 1, Some(Duration::from_millis(1)));
        r.lock().unwrap().push((e.ok(), l.ok(), bad.is_err()));
    })))
    .unwrap();
    for &s in &spheres {
        sys.enqueue(s, &[s as u64]).unwrap();
    }
    sys.start().unwrap();
    assert!(sys.wait(Some(Duration::from_secs(30))).unwrap());
    sys.stop().unwrap();
    assert_eq!(*results.lock().unwrap(), vec![(Some(1), Some(1), true); 2]);
    assert!(sys.epoch_barrier(None).is_err(), "not from outside a worker");
}

#[test]
fn mailboxes_route_only_to_relatives_and_bound_capacity() {
    let sys = SphereSystem::new(&SphereOptions {
        shape: Shape::Levels(3),
        threads: 1,
        mailbox_capacity: 3,
        ..Default::default()
    })
    .unwrap();
    sys.send(MessageKind::GradientReady, Priority::Normal, 13, 1, [1, 0, 0, 0]).unwrap();
    sys.send(MessageKind::WeightsBroadcast, Priority::High, 0, 1, [2, 0, 0, 0]).unwrap();
    sys.send(MessageKind::SiblingDiscover, Priority::Low, 2, 1, [3, 0, 0, 0]).unwrap();
    assert!(matches!(sys.send(MessageKind::WorkOffer, Priority::Critical, 14, 1, [4, 0, 0, 0]), Err(Error::Full(_))));
    assert!(matches!(sys.send(MessageKind::WorkOffer, Priority::Low, 13, 25, [0; 4]), Err(Error::InvalidArgument(_))));
    let got: Vec<u64> = (0..3).map(|_| sys.receive(1, Some(Duration::ZERO)).unwrap().payload[0]).collect();
    assert_eq!(got, vec![2, 1, 3]);
    assert!(matches!(sys.receive(1, Some(Duration::from_millis(5))), Err(Error::Timeout(_))));
    assert_eq!(sys.sphere_stats(1).unwrap().messages_received, 3);
    assert_eq!(sys.sphere_stats(13).unwrap().messages_sent, 1);
}

#[test]
fn dynamic_layouts_have_one_sphere_per_thread() {
    for (n, levels) in [(1, 1), (2, 2), (13, 2), (64, 3), (157, 3), (200, 4)] {
        let sys = SphereSystem::dynamic(n).unwrap();
        assert_eq!(sys.hierarchy().len(), n);
        assert_eq!(sys.hierarchy().levels(), levels);
        assert_eq!(sys.worker_threads(), n);
    }
    let auto = SphereSystem::dynamic(0).unwrap();
    assert_eq!(auto.worker_threads(), cllm::sys::usable_cpus().saturating_sub(1).max(1));
}

#[test]
fn every_item_runs_when_workers_outnumber_leaves() {
    // 13 workers on a 13-sphere tree: one worker owns no leaf and only steals.
    let counters: Arc<Vec<AtomicU32>> = Arc::new((0..20_000).map(|_| AtomicU32::new(0)).collect());
    let sys = SphereSystem::dynamic(13).unwrap();
    sys.set_work_fn(Some(counting(&counters))).unwrap();
    sys.start().unwrap();
    sys.distribute_range(0, 20_000).unwrap();
    assert!(sys.wait(Some(Duration::from_secs(30))).unwrap());
    sys.stop().unwrap();
    assert!(all_exactly_once(&counters));
}

#[test]
fn stats_json_lists_every_sphere() {
    let sys = system(Shape::Levels(3), 2);
    sys.start().unwrap();
    sys.distribute_range(0, 5000).unwrap();
    sys.wait(None).unwrap();
    let json = sys.stats_json();
    assert!(json.starts_with('{') && json.ends_with("]}"));
    assert_eq!(json.matches("\"id\":").count(), 157);
    assert!(json.contains("\"items_processed\":5000,"));
    let table = sys.stats_table();
    assert!(table.contains("5000 items processed"));
    sys.stop().unwrap();
}

#[test]
fn idle_workers_park_and_wake_for_new_work() {
    let sys = system(Shape::Levels(2), 2);
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    sys.set_work_fn(Some(Arc::new(move |_, _| d.store(true, Ordering::SeqCst)))).unwrap();
    sys.start().unwrap();
    // Wait (yielding) until both workers have parked; the scheduler itself
    // never polls — this only observes it.
    while sys.parked_workers() < 2 {
        std::thread::yield_now();
    }
    sys.distribute(&[42]).unwrap();
    assert!(sys.wait(Some(Duration::from_secs(10))).unwrap());
    assert!(done.load(Ordering::SeqCst));
    sys.stop().unwrap();
}

#[test]
fn oversized_reduction_buffers_fail_cleanly() {
    // 10^9 floats per sphere on 1885 spheres: far beyond this machine; the
    // constructor must report it, not abort the process.
    let opts = SphereOptions { shape: Shape::Levels(4), threads: 1, buffer_len: 1_000_000_000, ..Default::default() };
    assert!(matches!(SphereSystem::new(&opts), Err(Error::System(_))));
    let opts = SphereOptions { buffer_len: usize::MAX / 2, ..opts };
    assert!(matches!(SphereSystem::new(&opts), Err(Error::InvalidArgument(_))));
}

#[test]
fn stop_waits_for_work_a_callback_queues_on_a_closed_sphere() {
    // Regression: a worker used to exit while another's callback could
    // still queue work that only the exited worker may take.
    let sys = Arc::new(system(Shape::Levels(2), 2));
    let closed: Vec<usize> = (0..2).map(|w| (1..=12).find(|&s| sys.sphere_owner(s) == Some(w)).unwrap()).collect();
    for &s in &closed {
        sys.set_stealing(s, false).unwrap();
    }
    let ran = Arc::new(AtomicU64::new(0));
    let (weak, r, targets) = (Arc::downgrade(&sys), Arc::clone(&ran), closed.clone());
    sys.set_work_fn(Some(Arc::new(move |item, _| {
        r.fetch_add(1, Ordering::SeqCst);
        if item < 100 {
            let sys = weak.upgrade().unwrap();
            // Chain onto the other worker's closed sphere.
            sys.enqueue(targets[(item % 2) as usize], &[item + 1000]).unwrap();
        }
    })))
    .unwrap();
    sys.start().unwrap();
    sys.distribute_range(0, 100).unwrap();
    sys.stop().unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 200);
    assert_eq!(sys.pending(), 0);
}

#[test]
fn callbacks_may_query_state_during_stop_without_deadlock() {
    let sys = Arc::new(system(Shape::Levels(2), 2));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let (weak, a) = (Arc::downgrade(&sys), Arc::clone(&answers));
    sys.set_work_fn(Some(Arc::new(move |_, _| {
        let sys = weak.upgrade().unwrap();
        let is_running = sys.is_running();
        let refused = sys.start().is_err() && sys.set_work_fn(None).is_err();
        a.lock().unwrap().push((is_running, refused));
    })))
    .unwrap();
    sys.start().unwrap();
    sys.distribute_range(0, 2000).unwrap();
    sys.stop().unwrap();
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 2000);
    assert!(answers.iter().all(|&(_, refused)| refused));
}

#[test]
fn closing_a_sphere_after_queueing_wakes_its_owner() {
    for round in 0..200 {
        let sys = system(Shape::Levels(2), 2);
        let sphere = 1 + round % 12;
        sys.start().unwrap();
        sys.enqueue(sphere, &[round as u64]).unwrap();
        sys.set_stealing(sphere, false).unwrap();
        assert!(sys.wait(Some(Duration::from_secs(10))).unwrap(), "round {round}: item stranded");
        sys.stop().unwrap();
    }
}

#[test]
fn few_expensive_items_spread_over_all_workers() {
    // 16 items on 2 workers: both must take part (work used to stay in one
    // unsplittable chunk). Each item blocks until the other worker has
    // started one, so a serial run would time out instead of passing.
    let sys = Arc::new(system(Shape::Levels(2), 2));
    let seen = Arc::new((Mutex::new(std::collections::HashSet::new()), std::sync::Condvar::new()));
    let s2 = Arc::clone(&seen);
    let weak = Arc::downgrade(&sys);
    sys.set_work_fn(Some(Arc::new(move |_, _| {
        let me = weak.upgrade().unwrap().current_worker_index().unwrap();
        let (m, cv) = &*s2;
        let mut set = m.lock().unwrap();
        set.insert(me);
        cv.notify_all();
        let _ = cv.wait_timeout_while(set, Duration::from_secs(5), |s| s.len() < 2).unwrap();
    })))
    .unwrap();
    sys.start().unwrap();
    sys.distribute_range(0, 16).unwrap();
    assert!(sys.wait(Some(Duration::from_secs(30))).unwrap());
    sys.stop().unwrap();
    assert_eq!(seen.0.lock().unwrap().len(), 2, "both workers ran items");
}

#[test]
fn pending_counts_never_overflow() {
    let sys = system(Shape::Levels(2), 1);
    assert!(sys.distribute_range(0, u64::MAX).is_err());
    assert!(sys.distribute_range(0, i64::MAX as u64).is_ok());
    assert!(sys.distribute_range(0, 1).is_err(), "the total may not pass i64::MAX");
    assert_eq!(sys.pending(), i64::MAX as u64);
    assert_eq!(sys.cancel_pending(), i64::MAX as u64);
    assert_eq!(sys.pending(), 0);
}

#[test]
fn wait_reports_work_left_by_a_concurrent_stop() {
    let sys = Arc::new(system(Shape::Levels(2), 2));
    sys.start().unwrap();
    sys.stop().unwrap();
    sys.distribute_range(0, 10).unwrap();
    assert!(matches!(sys.wait(None), Err(Error::WrongState(_))));
    sys.cancel_pending();
}

#[test]
fn reopening_a_sphere_lets_a_parked_thief_take_its_work() {
    // Item A (run by the owner) waits for item B on the same closed sphere;
    // only re-opening the sphere lets the other worker run B.
    let sys = Arc::new(system(Shape::Levels(2), 2));
    let sphere = (1..=12).find(|&s| sys.sphere_owner(s) == Some(0)).unwrap();
    sys.set_stealing(sphere, false).unwrap();
    let b_done = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let a_started = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (bd, ast) = (Arc::clone(&b_done), Arc::clone(&a_started));
    sys.set_work_fn(Some(Arc::new(move |item, _| {
        if item == 1 {
            *ast.0.lock().unwrap() = true;
            ast.1.notify_all();
            let g = bd.0.lock().unwrap();
            let _ = bd.1.wait_timeout_while(g, Duration::from_secs(20), |done| !*done).unwrap();
        } else {
            *bd.0.lock().unwrap() = true;
            bd.1.notify_all();
        }
    })))
    .unwrap();
    sys.enqueue(sphere, &[1, 2]).unwrap();
    sys.start().unwrap();
    {
        let g = a_started.0.lock().unwrap();
        let _ = a_started.1.wait_timeout_while(g, Duration::from_secs(20), |s| !*s).unwrap();
    }
    let t0 = std::time::Instant::now();
    sys.set_stealing(sphere, true).unwrap();
    assert!(sys.wait(Some(Duration::from_secs(30))).unwrap());
    assert!(t0.elapsed() < Duration::from_secs(10), "B ran only after A gave up waiting");
    sys.stop().unwrap();
}

#[test]
fn a_closed_shared_home_is_drained_by_its_owner_only() {
    // 13 workers on 12 leaves: worker 12 owns no leaf and lives at sphere 1,
    // which worker 0 owns. Closed, sphere 1 must be run by worker 0 alone.
    let sys = Arc::new(system(Shape::Levels(2), 13));
    assert_eq!(sys.worker_home(12), Some(1));
    let owner = sys.sphere_owner(1).unwrap();
    sys.set_stealing(1, false).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l, weak) = (Arc::clone(&log), Arc::downgrade(&sys));
    sys.set_work_fn(Some(Arc::new(move |item, _| {
        let w = weak.upgrade().unwrap().current_worker_index().unwrap();
        l.lock().unwrap().push((item, w));
    })))
    .unwrap();
    let items: Vec<u64> = (0..25).collect();
    sys.enqueue(1, &items).unwrap();
    sys.start().unwrap();
    assert!(sys.wait(Some(Duration::from_secs(30))).unwrap());
    sys.stop().unwrap();
    let log = log.lock().unwrap();
    assert!(log.iter().all(|&(_, w)| w == owner), "{log:?}");
    assert_eq!(log.iter().map(|&(i, _)| i).collect::<Vec<_>>(), items, "FIFO");
}

#[test]
fn the_last_handle_may_be_dropped_inside_a_callback() {
    let done = Arc::new(AtomicU64::new(0));
    let sys = Arc::new(system(Shape::Levels(2), 2));
    let holder: Arc<Mutex<Option<Arc<SphereSystem>>>> = Arc::new(Mutex::new(None));
    let (d, h) = (Arc::clone(&done), Arc::clone(&holder));
    sys.set_work_fn(Some(Arc::new(move |item, _| {
        if item == 0 {
            // Drops the only remaining handle, from a worker.
            drop(h.lock().unwrap().take());
        }
        d.fetch_add(1, Ordering::SeqCst);
    })))
    .unwrap();
    *holder.lock().unwrap() = Some(Arc::clone(&sys));
    sys.enqueue(1, &[0]).unwrap();
    sys.distribute_range(1, 99).unwrap();
    sys.start().unwrap();
    drop(sys);
    // The workers finish everything and leave on their own.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::SeqCst) < 100 {
        assert!(std::time::Instant::now() < deadline, "items lost after the drop");
        std::thread::yield_now();
    }
}

#[test]
fn a_panic_payload_that_panics_when_dropped_is_contained() {
    struct Nasty;
    impl Drop for Nasty {
        fn drop(&mut self) {
            panic!("payload drop");
        }
    }
    let sys = system(Shape::Levels(1), 1);
    sys.set_work_fn(Some(Arc::new(|item, _| {
        if item == 3 {
            std::panic::panic_any(Nasty);
        }
    })))
    .unwrap();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    sys.start().unwrap();
    sys.distribute_range(0, 10).unwrap();
    let finished = sys.wait(Some(Duration::from_secs(30)));
    std::panic::set_hook(hook);
    assert!(finished.unwrap());
    assert_eq!(sys.summary().failed_items, 1);
    assert_eq!(sys.summary().items_processed, 10);
    sys.stop().unwrap();
}

#[test]
fn unbounded_timeouts_do_not_overflow() {
    let sys = system(Shape::Levels(3), 1);
    sys.send(MessageKind::WorkOffer, Priority::Low, 13, 1, [7, 0, 0, 0]).unwrap();
    assert_eq!(sys.receive(1, Some(Duration::MAX)).unwrap().payload[0], 7);
    assert!(sys.wait(Some(Duration::MAX)).unwrap());
}
