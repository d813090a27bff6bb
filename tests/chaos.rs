//! Randomised stress: several threads mix every mutating call of the
//! scheduler (distribute, ranges, direct enqueues, stealing toggles,
//! cancellation, start/stop cycles) while callbacks queue more work. At the
//! end every item must have run at most once, and run + cancelled must equal
//! everything that was queued: nothing lost, nothing duplicated.

use cllm::spheres::{Shape, SphereOptions, SphereSystem};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

/// Ids of items queued by callbacks start here; each seed item queues at
/// most one follow-up, `FOLLOW_UP + seed`.
const FOLLOW_UP: u64 = 1 << 40;
const IDS: usize = 400_000;

struct Ledger {
    runs: Vec<AtomicU8>,
    follow_ups: Vec<AtomicU8>,
    queued: AtomicU64,
}

impl Ledger {
    fn ran(&self, item: u64) {
        let slot =
            if item >= FOLLOW_UP { &self.follow_ups[(item - FOLLOW_UP) as usize] } else { &self.runs[item as usize] };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    fn total_runs(&self) -> u64 {
        self.runs.iter().chain(&self.follow_ups).map(|c| c.load(Ordering::Relaxed) as u64).sum()
    }

    fn max_runs(&self) -> u8 {
        self.runs.iter().chain(&self.follow_ups).map(|c| c.load(Ordering::Relaxed)).max().unwrap_or(0)
    }
}

fn run_chaos(seed: u64, shape: Shape, threads: usize) {
    let ledger = Arc::new(Ledger {
        runs: (0..IDS).map(|_| AtomicU8::new(0)).collect(),
        follow_ups: (0..IDS).map(|_| AtomicU8::new(0)).collect(),
        queued: AtomicU64::new(0),
    });
    let sys = Arc::new(SphereSystem::new(&SphereOptions { shape, threads, ..Default::default() }).unwrap());
    let spheres = sys.hierarchy().len();
    let (l, weak) = (Arc::clone(&ledger), Arc::downgrade(&sys));
    sys.set_work_fn(Some(Arc::new(move |item, sphere| {
        l.ran(item);
        // Every 7th seed item queues one follow-up on its own sphere.
        if item < FOLLOW_UP && item % 7 == 0 {
            if let Some(sys) = weak.upgrade() {
                sys.enqueue(sphere, &[FOLLOW_UP + item]).unwrap();
                l.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
    })))
    .unwrap();
    sys.start().unwrap();
    let next_id = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicU64::new(0));
    // Start and stop are serialised by the system; this lock only keeps the
    // test's own restart logic simple.
    let lifecycle = Arc::new(Mutex::new(()));
    let go = Arc::new(Barrier::new(4));
    let actors: Vec<_> = (0..4u64)
        .map(|actor| {
            let (sys, ledger, next_id, cancelled, lifecycle, go) = (
                Arc::clone(&sys),
                Arc::clone(&ledger),
                Arc::clone(&next_id),
                Arc::clone(&cancelled),
                Arc::clone(&lifecycle),
                Arc::clone(&go),
            );
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed * 31 + actor);
                go.wait();
                for _ in 0..300 {
                    let n = match rng.gen_range(0..4) {
                        0 => 1,
                        1 => rng.gen_range(2..10),
                        2 => rng.gen_range(10..500),
                        _ => rng.gen_range(500..3000),
                    };
                    let first = next_id.fetch_add(n, Ordering::Relaxed);
                    if first + n > IDS as u64 {
                        break;
                    }
                    match rng.gen_range(0..10) {
                        0..=3 => {
                            let items: Vec<u64> = (first..first + n).collect();
                            sys.distribute(&items).unwrap();
                        }
                        4..=6 => sys.distribute_range(first, n).unwrap(),
                        7 => {
                            let items: Vec<u64> = (first..first + n.min(50)).collect();
                            // The rest of the id block is simply never used.
                            sys.enqueue(rng.gen_range(0..spheres), &items).unwrap();
                            ledger.queued.fetch_add(items.len() as u64, Ordering::Relaxed);
                            continue;
                        }
                        8 => {
                            sys.set_stealing(rng.gen_range(0..spheres), rng.gen_bool(0.5)).unwrap();
                            sys.distribute_range(first, n).unwrap();
                        }
                        _ => {
                            sys.distribute_range(first, n).unwrap();
                            let _g = lifecycle.lock().unwrap();
                            if rng.gen_bool(0.3) {
                                cancelled.fetch_add(sys.cancel_pending(), Ordering::Relaxed);
                            } else if sys.is_running() {
                                sys.stop().unwrap();
                                sys.start().unwrap();
                            }
                        }
                    }
                    ledger.queued.fetch_add(n, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for a in actors {
        a.join().unwrap();
    }
    assert!(sys.wait(Some(Duration::from_secs(120))).unwrap(), "seed {seed}: work left after 120 s");
    sys.stop().unwrap();
    let (queued, ran, cancelled) =
        (ledger.queued.load(Ordering::Relaxed), ledger.total_runs(), cancelled.load(Ordering::Relaxed));
    assert!(ledger.max_runs() <= 1, "seed {seed}: an item ran twice");
    assert_eq!(ran + cancelled, queued, "seed {seed}: ran {ran} + cancelled {cancelled} != queued {queued}");
    assert_eq!(sys.pending(), 0);
    assert_eq!(sys.summary().items_processed, ran);
}

#[test]
fn chaos_two_workers_four_levels() {
    for seed in 0..4 {
        run_chaos(seed, Shape::Levels(4), 2);
    }
}

#[test]
fn chaos_more_workers_than_cpus_partial_tree() {
    for seed in 10..13 {
        run_chaos(seed, Shape::Spheres(40), 6);
    }
}

#[test]
fn chaos_single_worker_root_only() {
    run_chaos(20, Shape::Levels(1), 1);
}
