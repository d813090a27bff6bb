//! Alone in its own test binary so that no other test's threads disturb the
//! count: pipelined engines start their lanes in `Engine::new` and join them
//! when dropped, whether they ran anything, failed, or sat idle.

use cllm::runtime::{Engine, EngineConfig, Exec, Load, Op, Store, TILE_BYTES};
use std::time::{Duration, Instant};

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).expect("/proc/self/task is readable")
}

/// Polls until the thread count is `want`: the kernel may list a joined
/// thread in /proc for a moment after `pthread_join` returns.
fn wait_for_threads(want: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = os_threads();
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {now} OS threads, expected {want}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn schedule() -> Vec<Op> {
    let t = TILE_BYTES as u32;
    vec![
        Op::Load(Load { tensor_id: 0, tile_row: 0, tile_col: 0, dst_addr: 0, bytes: t, buffer: -1 }),
        Op::Load(Load { tensor_id: 1, tile_row: 0, tile_col: 0, dst_addr: t, bytes: t, buffer: -1 }),
        Op::Exec(Exec { m: 0, n: 0, k: 0, a_addr: 0, b_addr: t, acc_addr: 2 * t, buffer: -1 }),
        Op::Store(Store { tensor_id: 2, tile_row: 0, tile_col: 0, src_addr: 2 * t, bytes: t, apply_relu: true }),
    ]
}

#[test]
fn dropping_threaded_engines_joins_their_threads() {
    let before = os_threads();
    let mut engines = Vec::new();
    let mut expected_extra = 0;
    for i in 0..20usize {
        let compute_threads = 1 + i % 2;
        let config = EngineConfig { threaded: true, compute_threads, sram_bytes: 64 * 1024, ..EngineConfig::default() };
        let mut e = Engine::new(config).unwrap();
        expected_extra += 1 + compute_threads;
        match i % 4 {
            // Never used.
            0 => {}
            // Ran a schedule.
            1 => {
                for name in ["A", "B", "C"] {
                    e.register_tensor(name, 32, 32).unwrap();
                }
                e.set_tensor("A", &[1.0; 1024], 32, 32).unwrap();
                e.set_tensor("B", &[-1.0; 1024], 32, 32).unwrap();
                e.execute(&schedule()).unwrap();
            }
            // Rejected a schedule.
            2 => assert!(e.execute(&schedule()).is_err()),
            // Failed while running (injected fault).
            _ => {
                for name in ["A", "B", "C"] {
                    e.register_tensor(name, 32, 32).unwrap();
                }
                e.inject_fault(Some(2));
                assert!(e.execute(&schedule()).is_err());
            }
        }
        engines.push(e);
    }
    wait_for_threads(before + expected_extra, "20 live engines");
    // Drop half in creation order, half in reverse.
    let rest = engines.split_off(10);
    drop(engines);
    wait_for_threads(before + rest.iter().map(|e| 1 + e.config().compute_threads).sum::<usize>(), "10 left");
    for e in rest.into_iter().rev() {
        drop(e);
    }
    wait_for_threads(before, "all dropped");
    // A sequential engine starts no thread at all.
    let seq = Engine::new(EngineConfig::default()).unwrap();
    assert_eq!(os_threads(), before);
    drop(seq);
}
