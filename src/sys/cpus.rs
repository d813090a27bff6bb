//! Usable CPU count: the affinity mask intersected with the cgroup quota.

use std::fs;
use std::path::{Path, PathBuf};

/// CPU ids this process may run on, from `sched_getaffinity`.
/// Falls back to `0..available_parallelism` where the call is unavailable.
pub fn process_affinity_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; zeroed is its documented empty value,
    // and sched_getaffinity writes at most size_of::<cpu_set_t>() bytes.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 means this thread; the pointer and size describe `set`.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc == 0 {
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: i < CPU_SETSIZE, the bound CPU_ISSET requires.
            .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
            .collect();
        if !cpus.is_empty() {
            return cpus;
        }
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

/// The CPU limit imposed by the cgroup (v2 `cpu.max` or v1 CFS quota) of
/// this process, rounded up, or `None` when there is no limit.
pub fn cgroup_cpu_limit() -> Option<usize> {
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut best: Option<usize> = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let limit = if controllers.is_empty() {
            walk_up(Path::new("/sys/fs/cgroup"), path, read_v2_limit)
        } else if controllers.split(',').any(|c| c == "cpu") {
            ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"]
                .iter()
                .find_map(|root| walk_up(Path::new(root), path, read_v1_limit))
        } else {
            None
        };
        if let Some(l) = limit {
            best = Some(best.map_or(l, |b: usize| b.min(l)));
        }
    }
    best
}

/// Applies `read` to the cgroup directory and each of its ancestors and
/// keeps the tightest limit: a parent's quota binds its children too.
fn walk_up(root: &Path, rel: &str, read: fn(&Path) -> Option<usize>) -> Option<usize> {
    let mut dir: PathBuf = root.join(rel.trim_start_matches('/'));
    let mut best: Option<usize> = None;
    loop {
        if let Some(l) = read(&dir) {
            best = Some(best.map_or(l, |b| b.min(l)));
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return best;
        }
    }
}

fn read_v2_limit(dir: &Path) -> Option<usize> {
    let text = fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut it = text.split_whitespace();
    let quota = it.next()?;
    let period: f64 = it.next()?.parse().ok()?;
    if quota == "max" {
        return None;
    }
    quota_to_cpus(quota.parse().ok()?, period)
}

fn read_v1_limit(dir: &Path) -> Option<usize> {
    let quota: f64 = fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?.trim().parse().ok()?;
    let period: f64 = fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?.trim().parse().ok()?;
    quota_to_cpus(quota, period)
}

fn quota_to_cpus(quota: f64, period: f64) -> Option<usize> {
    (quota > 0.0 && period > 0.0).then(|| ((quota / period).ceil() as usize).max(1))
}

/// CPUs this process may actually use: the affinity mask, bounded by the
/// cgroup CPU quota. Always at least 1.
pub fn usable_cpus() -> usize {
    let affinity = process_affinity_cpus().len().max(1);
    cgroup_cpu_limit().map_or(affinity, |l| l.min(affinity)).max(1)
}

/// Bytes of memory this process can count on: physical RAM, bounded by the
/// memory limit of its cgroup and of every ancestor (v2 `memory.max`, v1
/// `memory.limit_in_bytes`).
pub fn memory_limit_bytes() -> u64 {
    // Miri has no _SC_PHYS_PAGES; its tests use little memory anyway.
    if cfg!(miri) {
        return 1 << 32;
    }
    // SAFETY: sysconf only reads system configuration values.
    let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    let physical = if pages > 0 && page > 0 { pages as u64 * page as u64 } else { u64::MAX };
    let Ok(own) = fs::read_to_string("/proc/self/cgroup") else { return physical };
    let mut best = physical;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let limit = if controllers.is_empty() {
            walk_up(Path::new("/sys/fs/cgroup"), path, |d| read_number(&d.join("memory.max")))
        } else if controllers.split(',').any(|c| c == "memory") {
            walk_up(Path::new("/sys/fs/cgroup/memory"), path, |d| read_number(&d.join("memory.limit_in_bytes")))
        } else {
            None
        };
        if let Some(l) = limit {
            best = best.min(l as u64);
        }
    }
    best
}

/// A whole number in a file, or None ("max" included).
fn read_number(path: &Path) -> Option<usize> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The CPU the calling thread runs on now (a hint: it may move at once).
pub fn current_cpu() -> Option<usize> {
    if cfg!(miri) {
        return None; // Miri cannot call sched_getcpu; callers treat None as "unknown".
    }
    // SAFETY: sched_getcpu takes no arguments and only returns a number.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// Pins the calling thread to one CPU. Returns false when the OS refuses
/// (e.g. the CPU is outside the allowed set).
pub fn pin_current_thread(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_is_within_affinity() {
        let n = usable_cpus();
        assert!(n >= 1);
        assert!(n <= process_affinity_cpus().len());
    }

    #[test]
    fn quota_rounds_up() {
        assert_eq!(quota_to_cpus(150_000.0, 100_000.0), Some(2));
        assert_eq!(quota_to_cpus(50_000.0, 100_000.0), Some(1));
        assert_eq!(quota_to_cpus(-1.0, 100_000.0), None);
    }
}
