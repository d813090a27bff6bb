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

    /// Usable CPUs in the order workers should be pinned: one hardware
    /// thread of every physical core first (alternating NUMA nodes), then
    /// the second threads of the cores, and so on — so that the first
    /// workers never share a core while another core is free.
    pub fn pinning_order(&self) -> Vec<usize> {
        let mut seen: std::collections::HashMap<(usize, usize), usize> = std::collections::HashMap::new();
        let mut keyed: Vec<(usize, usize, usize, usize)> = self
            .cpus
            .iter()
            .map(|c| {
                let sibling = seen.entry((c.package, c.core)).or_insert(0);
                let key = (*sibling, c.node, c.core, c.id);
                *sibling += 1;
                key
            })
            .collect();
        // Within one sibling rank, interleave nodes: rank, then position of
        // the core within its node, then node.
        let mut per_node_rank: std::collections::HashMap<(usize, usize), usize> = std::collections::HashMap::new();
        let mut order: Vec<(usize, usize, usize, usize)> = Vec::with_capacity(keyed.len());
        keyed.sort();
        for (rank, node, _core, id) in keyed {
            let pos = per_node_rank.entry((rank, node)).or_insert(0);
            order.push((rank, *pos, node, id));
            *pos += 1;
        }
        order.sort();
        order.into_iter().map(|(_, _, _, id)| id).collect()
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

    fn cpu(id: usize, core: usize, node: usize) -> CpuInfo {
        CpuInfo { id, core, package: 0, node }
    }

    #[test]
    fn pinning_fills_physical_cores_before_siblings() {
        // Two cores with two threads each: ids 0,2 on core 0; 1,3 on core 1.
        let t = CpuTopology {
            cpus: vec![cpu(0, 0, 0), cpu(1, 1, 0), cpu(2, 0, 0), cpu(3, 1, 0)],
            nodes: vec![NumaNode { id: 0, cpus: vec![0, 1, 2, 3] }],
        };
        assert_eq!(t.pinning_order(), vec![0, 1, 2, 3]);
        // Siblings numbered next to each other: 0,1 on core 0; 2,3 on core 1.
        let t = CpuTopology {
            cpus: vec![cpu(0, 0, 0), cpu(1, 0, 0), cpu(2, 1, 0), cpu(3, 1, 0)],
            nodes: vec![NumaNode { id: 0, cpus: vec![0, 1, 2, 3] }],
        };
        assert_eq!(t.pinning_order(), vec![0, 2, 1, 3]);
    }

    #[test]
    fn pinning_alternates_numa_nodes() {
        let t = CpuTopology {
            cpus: vec![cpu(0, 0, 0), cpu(1, 1, 0), cpu(2, 2, 1), cpu(3, 3, 1)],
            nodes: vec![NumaNode { id: 0, cpus: vec![0, 1] }, NumaNode { id: 1, cpus: vec![2, 3] }],
        };
        assert_eq!(t.pinning_order(), vec![0, 2, 1, 3]);
    }

    #[test]
    fn detect_covers_usable_cpus() {
        let t = CpuTopology::detect();
        assert!(!t.nodes.is_empty());
        let in_nodes: usize = t.nodes.iter().map(|n| n.cpus.len()).sum();
        assert_eq!(in_nodes, t.cpus.len());
    }
}
