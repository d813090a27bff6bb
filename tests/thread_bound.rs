//! Alone in its own test binary so that no other test's threads disturb
//! the count: 4 levels (1885 spheres) run on at most the usable CPUs.

use cllm::spheres::SphereSystem;

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

#[test]
fn four_levels_use_bounded_threads_but_report_all_spheres() {
    let before = os_threads();
    let sys = SphereSystem::with_levels(4).unwrap();
    assert_eq!(sys.hierarchy().len(), 1885);
    let usable = cllm::sys::usable_cpus();
    assert!(sys.worker_threads() <= usable);
    sys.start().unwrap();
    let during = os_threads();
    assert_eq!(during - before, sys.worker_threads(), "one OS thread per worker, none per sphere");
    sys.distribute_range(0, 100_000).unwrap();
    assert!(sys.wait(None).unwrap());
    sys.stop().unwrap();
    assert_eq!(os_threads(), before, "stop joins every worker");
}
