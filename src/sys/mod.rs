//! Operating-system facts shared by the components: how many CPUs this
//! process may really use, the CPU/NUMA layout, and thread pinning.

mod cpus;
#[cfg(feature = "cuda")]
pub mod cuda;
mod futex;
mod topology;

pub use cpus::{
    cgroup_cpu_limit, current_cpu, memory_limit_bytes, pin_current_thread, process_affinity_cpus, usable_cpus,
};
pub use futex::Parker;
pub use topology::{CpuInfo, CpuTopology, NumaNode};
