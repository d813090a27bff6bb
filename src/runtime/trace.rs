//! Busy-time overlap and the Chrome trace-event export.

use super::lanes::Interval;
use super::schedule::Op;
use std::fmt::Write;

/// Trace lane of the thread that called `execute`.
const CALLER_TID: u32 = 100;

/// Phases of one `execute` call on the calling thread, in ns since the
/// engine's epoch.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CallTimes {
    pub start: u64,
    /// Validation and planning done (or the cached plan found).
    pub planned: u64,
    /// Every op handed to the lanes (pipelined) or `planned` (sequential).
    pub dispatched: u64,
    pub end: u64,
}

/// Sorts and merges `v` into disjoint intervals.
fn union(v: &mut Vec<(u64, u64)>) {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for &(s, e) in v.iter() {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    *v = out;
}

/// Time covered by both sets of intervals.
pub(crate) fn overlap_ns(a: &mut Vec<(u64, u64)>, b: &mut Vec<(u64, u64)>) -> u64 {
    union(a);
    union(b);
    let (mut i, mut j, mut total) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let s = a[i].0.max(b[j].0);
        let e = a[i].1.min(b[j].1);
        total += e.saturating_sub(s);
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

/// The Chrome trace-event JSON of one run: a complete event ("ph":"X")
/// per op on the thread that ran it, with the op's fields as args.
pub(crate) fn chrome_json(ops: &[Op], intervals: &[Interval], pipelined: bool, call: &CallTimes) -> String {
    let mut s = String::with_capacity(128 + intervals.len() * 200);
    s.push_str("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
    let threads = intervals.iter().map(|iv| iv.thread).max().map_or(1, |m| m as usize + 1).max(2);
    for t in 0..threads {
        let name = match (pipelined, t) {
            (false, 0) => "sequential: DMA ops".to_string(),
            (false, _) => "sequential: compute ops".to_string(),
            (true, 0) => "DMA lane".to_string(),
            (true, t) => format!("compute lane {}", t - 1),
        };
        let _ = writeln!(
            s,
            "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":{t},\"args\":{{\"name\":\"{name}\"}}}},"
        );
    }
    let _ =
        write!(s, "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{{\"name\":\"mini_runtime engine\"}}}}");
    let _ = write!(
        s,
        ",\n{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":{CALLER_TID},\"args\":{{\"name\":\"calling thread\"}}}}"
    );
    let phases = [
        ("validate + plan", call.start, call.planned),
        ("dispatch to lanes", call.planned, call.dispatched),
        ("wait for lanes", call.dispatched, call.end),
    ];
    for (name, from, to) in phases {
        if pipelined || name == "validate + plan" {
            let _ = write!(
                s,
                ",\n{{\"name\":\"{name}\",\"cat\":\"call\",\"ph\":\"X\",\"pid\":1,\"tid\":{CALLER_TID},\"ts\":{:.3},\"dur\":{:.3}}}",
                from as f64 / 1000.0,
                to.saturating_sub(from) as f64 / 1000.0
            );
        }
    }
    for iv in intervals {
        let op = &ops[iv.index as usize];
        let args = match op {
            Op::Load(l) => format!(
                "\"tensor_id\":{},\"tile_row\":{},\"tile_col\":{},\"dst_addr\":{},\"bytes\":{},\"buffer\":{}",
                l.tensor_id, l.tile_row, l.tile_col, l.dst_addr, l.bytes, l.buffer
            ),
            Op::Exec(e) => format!(
                "\"m\":{},\"n\":{},\"k\":{},\"a_addr\":{},\"b_addr\":{},\"acc_addr\":{},\"buffer\":{}",
                e.m, e.n, e.k, e.a_addr, e.b_addr, e.acc_addr, e.buffer
            ),
            Op::Store(st) => format!(
                "\"tensor_id\":{},\"tile_row\":{},\"tile_col\":{},\"src_addr\":{},\"bytes\":{},\"apply_relu\":{}",
                st.tensor_id, st.tile_row, st.tile_col, st.src_addr, st.bytes, st.apply_relu
            ),
        };
        // Trace timestamps are microseconds; keep ns precision as decimals.
        let _ = write!(
            s,
            ",\n{{\"name\":\"{}\",\"cat\":\"{}\",\"ph\":\"X\",\"pid\":1,\"tid\":{},\"ts\":{:.3},\"dur\":{:.3},\"args\":{{\"op\":{},{args}}}}}",
            op.name(),
            if matches!(op, Op::Exec(_)) { "compute" } else { "dma" },
            iv.thread,
            iv.start as f64 / 1000.0,
            iv.end.saturating_sub(iv.start) as f64 / 1000.0,
            iv.index
        );
    }
    s.push_str("\n]}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_of_interleaved_intervals() {
        let mut a = vec![(0, 10), (20, 30)];
        let mut b = vec![(5, 25), (8, 12)];
        assert_eq!(overlap_ns(&mut a, &mut b), 5 + 5);
        assert_eq!(overlap_ns(&mut vec![], &mut vec![(0, 5)]), 0);
    }
}
