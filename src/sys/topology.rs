//! CPU and NUMA layout read from sysfs (no libnuma).

use std::fs;

/// One logical CPU and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// Logical CPU id as the kernel numbers it.
    pub id: usize,
    /// Physical core id within its package (`topology/core_id`).
    pub core: usize,
    /// Package (socket) id.
    pub package: usize,
    /// NUMA node holding this CPU.
    pub node: usize,
}

/// One NUMA node and its CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// Node id as the kernel numbers it.
    pub id: usize,
    /// The node's CPUs that this process may use, ascending.
    pub cpus: Vec<usize>,
}

/// The usable CPUs of this process grouped by NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTopology {
    /// Usable CPUs, ascending by id.
    pub cpus: Vec<CpuInfo>,
    /// Nodes with at least one usable CPU, ascending by id. Never empty.
    pub nodes: Vec<NumaNode>,
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.trim().parse::<usize>().ok()),
        }
    }
    out
}

fn read_usize(path: &str) -> Option<usize> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl CpuTopology {
    /// Reads the layout from `/sys/devices/system`. A machine without NUMA
    /// information is reported as one node holding every usable CPU.
    pub fn detect() -> CpuTopology {
        let usable = super::process_affinity_cpus();
        let mut node_of = std::collections::HashMap::new();
        if let Ok(dir) = fs::read_dir("/sys/devices/system/node") {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_prefix("node").and_then(|s| s.parse::<usize>().ok()) else {
                    continue;
                };
                if let Ok(list) = fs::read_to_string(entry.path().join("cpulist")) {
                    for cpu in parse_cpu_list(&list) {
                        node_of.insert(cpu, id);
                    }
                }
            }
        }
        let cpus: Vec<CpuInfo> = usable
            .iter()
            .map(|&id| {
                let base = format!("/sys/devices/system/cpu/cpu{id}/topology");
                CpuInfo {
                    id,
                    core: read_usize(&format!("{base}/core_id")).unwrap_or(id),
                    package: read_usize(&format!("{base}/physical_package_id")).unwrap_or(0),
                    node: node_of.get(&id).copied().unwrap_or(0),
                }
            })
            .collect();
        let mut nodes: Vec<NumaNode> = Vec::new();
        for cpu in &cpus {
            match nodes.iter_mut().find(|n| n.id == cpu.node) {
                Some(n) => n.cpus.push(cpu.id),
                None => nodes.push(NumaNode { id: cpu.node, cpus: vec![cpu.id] }),
            }
        }
        nodes.sort_by_key(|n| n.id);
        CpuTopology { cpus, nodes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_parsing() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn detect_covers_usable_cpus() {
        let t = CpuTopology::detect();
        assert!(!t.nodes.is_empty());
        let in_nodes: usize = t.nodes.iter().map(|n| n.cpus.len()).sum();
        assert_eq!(in_nodes, t.cpus.len());
    }
}
