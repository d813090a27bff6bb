//! Kissing spheres: a hierarchical work-stealing scheduler. Spheres (root +
//! 12 + 144 + 1728) are logical scheduling domains with queues, mailboxes
//! and reduction buffers; a bounded pool of worker threads runs them.

mod barrier;
mod bufpool;
pub mod hierarchy;
mod mailbox;
mod queue;
mod stats;
mod system;

pub use hierarchy::{
    groups_for_worker, hierarchy_levels, worker_for_group, Hierarchy, SphereNode, MAX_LEVELS, MAX_SPHERES,
};
pub use mailbox::{Message, MessageKind, Priority};
pub use stats::{SphereState, SphereStats, SystemSummary};
pub use system::{Shape, SphereOptions, SphereSystem, WorkFn, WorkerProbe, DEFAULT_MAILBOX_CAPACITY, MAX_THREADS};
