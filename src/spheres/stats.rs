//! Sphere states, counters and their readable and JSON renderings.

use super::system::SphereSystem;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sphere states with the original numbering.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SphereState {
    Initializing = 0,
    Ready = 1,
    Processing = 2,
    Waiting = 3,
    Accumulating = 4,
    Updating = 5,
    Idle = 6,
    Terminating = 7,
    Terminated = 8,
}

impl SphereState {
    pub(crate) fn from_usize(v: usize) -> SphereState {
        use SphereState::*;
        [Initializing, Ready, Processing, Waiting, Accumulating, Updating, Idle, Terminating, Terminated]
            .get(v)
            .copied()
            .unwrap_or(Initializing)
    }

    /// Upper-case name as in the original enum (without prefix).
    pub fn name(self) -> &'static str {
        use SphereState::*;
        match self {
            Initializing => "INITIALIZING",
            Ready => "READY",
            Processing => "PROCESSING",
            Waiting => "WAITING",
            Accumulating => "ACCUMULATING",
            Updating => "UPDATING",
            Idle => "IDLE",
            Terminating => "TERMINATING",
            Terminated => "TERMINATED",
        }
    }
}

/// Live counters of one sphere (all monotonic).
#[derive(Default)]
pub(crate) struct SphereCounters {
    pub(crate) items_processed: AtomicU64,
    pub(crate) items_failed: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) stolen_from: AtomicU64,
    pub(crate) stolen_to: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
}

impl SphereCounters {
    pub(crate) fn has_processed(&self) -> bool {
        self.items_processed.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn snapshot(&self, queue_size: usize, mailbox_size: usize) -> SphereStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SphereStats {
            items_processed: r(&self.items_processed),
            items_failed: r(&self.items_failed),
            busy_ns: r(&self.busy_ns),
            stolen_from: r(&self.stolen_from),
            stolen_to: r(&self.stolen_to),
            messages_sent: r(&self.messages_sent),
            messages_received: r(&self.messages_received),
            queue_size: queue_size as u64,
            mailbox_size: mailbox_size as u64,
        }
    }
}

/// A snapshot of one sphere's counters. Times are nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SphereStats {
    /// Items this sphere ran (including stolen ones it ran).
    pub items_processed: u64,
    /// Items whose callback panicked.
    pub items_failed: u64,
    /// Time spent running items, ns.
    pub busy_ns: u64,
    /// Items other workers stole from this sphere's queue.
    pub stolen_from: u64,
    /// Items this sphere's worker stole from others.
    pub stolen_to: u64,
    /// Messages this sphere sent.
    pub messages_sent: u64,
    /// Messages this sphere took from its mailbox.
    pub messages_received: u64,
    /// Items queued now.
    pub queue_size: u64,
    /// Messages waiting now.
    pub mailbox_size: u64,
}

/// Totals over a whole system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemSummary {
    /// Spheres in the tree.
    pub spheres: usize,
    /// Levels in the tree.
    pub levels: usize,
    /// Worker threads.
    pub worker_threads: usize,
    /// Items processed so far.
    pub items_processed: u64,
    /// Items whose callback panicked.
    pub failed_items: u64,
    /// Items distributed but not finished.
    pub pending_items: u64,
    /// Items that moved by stealing.
    pub items_stolen: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Total busy time of all spheres, ns.
    pub busy_ns: u64,
}

impl SphereSystem {
    /// Every statistic as one JSON object: a summary plus one entry per
    /// sphere (id, level, group, parent, state and counters).
    pub fn stats_json(&self) -> String {
        let s = self.summary();
        let mut out = String::with_capacity(256 + 256 * s.spheres);
        let _ = write!(
            out,
            "{{\"spheres\":{},\"levels\":{},\"worker_threads\":{},\"items_processed\":{},\"failed_items\":{},\"pending_items\":{},\"items_stolen\":{},\"messages_sent\":{},\"busy_ns\":{},\"per_sphere\":[",
            s.spheres, s.levels, s.worker_threads, s.items_processed, s.failed_items, s.pending_items, s.items_stolen, s.messages_sent, s.busy_ns
        );
        for node in self.hierarchy().nodes() {
            let st = self.sphere_stats(node.id).expect("id in range");
            let state = self.sphere_state(node.id).expect("id in range");
            let opt = |v: Option<usize>| v.map_or("null".to_string(), |x| x.to_string());
            let _ = write!(
                out,
                "{}{{\"id\":{},\"level\":{},\"group\":{},\"parent\":{},\"state\":\"{}\",\"items_processed\":{},\"items_failed\":{},\"busy_ns\":{},\"stolen_from\":{},\"stolen_to\":{},\"messages_sent\":{},\"messages_received\":{},\"queue_size\":{},\"mailbox_size\":{}}}",
                if node.id == 0 { "" } else { "," },
                node.id,
                node.level,
                opt(node.group),
                opt(node.parent),
                state.name(),
                st.items_processed,
                st.items_failed,
                st.busy_ns,
                st.stolen_from,
                st.stolen_to,
                st.messages_sent,
                st.messages_received,
                st.queue_size,
                st.mailbox_size
            );
        }
        out.push_str("]}");
        out
    }

    /// A readable, aligned report: totals per level, then one row for every
    /// sphere that did anything (idle spheres are counted, not listed).
    pub fn stats_table(&self) -> String {
        self.stats_table_limited(usize::MAX)
    }

    /// Like [`SphereSystem::stats_table`] but lists at most `max_rows`
    /// active spheres, the busiest first, and counts the rest.
    pub fn stats_table_limited(&self, max_rows: usize) -> String {
        let s = self.summary();
        let h = self.hierarchy();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Kissing spheres: {} levels, {} spheres, {} worker threads; {} items processed, {} pending, {} failed, {} stolen, {} messages",
            s.levels, s.spheres, s.worker_threads, s.items_processed, s.pending_items, s.failed_items, s.items_stolen, s.messages_sent
        );
        let _ = writeln!(out, "{:>5} {:>8} {:>14} {:>12} {:>12}", "level", "spheres", "items", "busy ms", "stolen");
        for level in 0..h.levels() {
            let (mut items, mut busy, mut stolen) = (0u64, 0u64, 0u64);
            for n in h.nodes().iter().filter(|n| n.level == level) {
                let st = self.sphere_stats(n.id).expect("id in range");
                items += st.items_processed;
                busy += st.busy_ns;
                stolen += st.stolen_to;
            }
            let _ = writeln!(
                out,
                "{:>5} {:>8} {:>14} {:>12.3} {:>12}",
                level,
                h.spheres_on_level(level),
                items,
                busy as f64 / 1e6,
                stolen
            );
        }
        let _ = writeln!(
            out,
            "{:>6} {:>5} {:>5} {:>13} {:>12} {:>10} {:>10} {:>10} {:>6} {:>6} {:>7}",
            "sphere", "level", "group", "state", "items", "busy ms", "stole-in", "stolen", "sent", "recv", "queued"
        );
        let mut active: Vec<(usize, SphereStats)> = h
            .nodes()
            .iter()
            .map(|n| (n.id, self.sphere_stats(n.id).expect("id in range")))
            .filter(|(_, st)| {
                st.items_processed + st.stolen_from + st.messages_sent + st.messages_received + st.queue_size > 0
            })
            .collect();
        let quiet = h.len() - active.len();
        let hidden = active.len().saturating_sub(max_rows);
        if hidden > 0 {
            active.sort_by_key(|(id, st)| (std::cmp::Reverse(st.busy_ns), *id));
            active.truncate(max_rows);
            active.sort_by_key(|(id, _)| *id);
        }
        for (id, st) in active {
            let n = &h.nodes()[id];
            let _ = writeln!(
                out,
                "{:>6} {:>5} {:>5} {:>13} {:>12} {:>10.3} {:>10} {:>10} {:>6} {:>6} {:>7}",
                n.id,
                n.level,
                n.group.map_or("all".to_string(), |g| g.to_string()),
                self.sphere_state(n.id).expect("id in range").name(),
                st.items_processed,
                st.busy_ns as f64 / 1e6,
                st.stolen_to,
                st.stolen_from,
                st.messages_sent,
                st.messages_received,
                st.queue_size
            );
        }
        if hidden > 0 {
            let _ = writeln!(out, "({hidden} less busy active spheres not listed)");
        }
        if quiet > 0 {
            let _ = writeln!(out, "({quiet} spheres with no activity not listed)");
        }
        out
    }
}
