//! Operating-system facts shared by the components: how many CPUs this
//! process may really use, the CPU/NUMA layout, and thread pinning.

mod cpus;
mod topology;

pub use cpus::{cgroup_cpu_limit, pin_current_thread, process_affinity_cpus, usable_cpus};
pub use topology::{CpuInfo, CpuTopology, NumaNode};
