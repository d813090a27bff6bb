//! `cllm demo`: the main job on embedded defaults.
//!
//! Kissing spheres: a 4-level tree on a bounded worker pool counts the
//! primes below N by residue class mod 12, each sphere summing into its own
//! reduction buffer; the hierarchical reduction gives the totals, checked
//! against a sieve; level-1 spheres report to the root by mailbox.
//!
//! Echobeats: see `demo_echobeats.rs`; mini_runtime: see `demo_engine.rs`;
//! training: see `demo_training.rs`.

#[path = "demo_echobeats.rs"]
mod demo_echobeats;
#[path = "demo_engine.rs"]
mod demo_engine;
#[path = "demo_training.rs"]
mod demo_training;

use cllm::spheres::{MessageKind, Priority, Shape, SphereOptions, SphereSystem};
use std::sync::Arc;
use std::time::Instant;

const DEFAULT_ITEMS: u64 = 2_000_000;
const DEFAULT_LEVELS: usize = 4;

struct Args {
    levels: usize,
    items: u64,
    threads: usize,
    trace: std::path::PathBuf,
    train_out: std::path::PathBuf,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let trace = std::env::temp_dir().join("cllm_engine_trace.json");
    let train_out = std::env::temp_dir().join("cllm_demo_training");
    let mut a = Args { levels: DEFAULT_LEVELS, items: DEFAULT_ITEMS, threads: 0, trace, train_out };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a whole number"))
        };
        match flag.as_str() {
            "--levels" => a.levels = value("--levels")? as usize,
            "--items" => a.items = value("--items")?,
            "--threads" => a.threads = value("--threads")? as usize,
            "--trace" => a.trace = it.next().ok_or("--trace needs a file path")?.into(),
            "--train-out" => a.train_out = it.next().ok_or("--train-out needs a directory")?.into(),
            other => {
                return Err(format!(
                    "demo: unknown option {other} (options: --levels N --items N --threads N --trace FILE \
                     --train-out DIR)"
                ))
            }
        }
    }
    Ok(a)
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Prime counts by residue mod 12 below `n`, by a sieve: the reference.
fn sieve_counts(n: u64) -> [u64; 12] {
    let mut composite = vec![false; n as usize];
    let mut counts = [0u64; 12];
    for i in 2..n as usize {
        if !composite[i] {
            counts[i % 12] += 1;
            let mut j = i * i;
            while j < n as usize {
                composite[j] = true;
                j += i;
            }
        }
    }
    counts
}

/// Runs the demo.
pub fn run(args: &[String]) -> Result<(), String> {
    let a = parse(args)?;
    spheres_part(&a).map_err(|e| e.to_string())?;
    demo_echobeats::echobeats_part().map_err(|e| e.to_string())?;
    demo_engine::engine_part(&a.trace).map_err(|e| e.to_string())?;
    demo_training::training_part(a.threads, &a.train_out)
}

fn spheres_part(a: &Args) -> cllm::Result<()> {
    println!("== Kissing spheres ==");
    let opts =
        SphereOptions { shape: Shape::Levels(a.levels), threads: a.threads, buffer_len: 12, ..Default::default() };
    let sys = Arc::new(SphereSystem::new(&opts)?);
    let h = sys.hierarchy();
    let per_level: Vec<String> = (0..h.levels()).map(|l| h.spheres_on_level(l).to_string()).collect();
    println!(
        "hierarchy: {} levels, {} spheres ({}), {} worker threads on {} usable CPUs",
        h.levels(),
        h.len(),
        per_level.join(" + "),
        sys.worker_threads(),
        cllm::sys::usable_cpus()
    );
    let weak = Arc::downgrade(&sys);
    sys.set_work_fn(Some(Arc::new(move |item, sphere| {
        if is_prime(item) {
            if let Some(sys) = weak.upgrade() {
                // Each sphere owns its buffer; the lock is uncontended.
                let _ = sys.with_buffer(sphere, |b| b[(item % 12) as usize] += 1.0);
            }
        }
    })))?;
    sys.start()?;
    let t0 = Instant::now();
    sys.distribute_range(0, a.items)?;
    sys.wait(None)?;
    let elapsed = t0.elapsed();
    // Level-1 spheres report their subtree's work to the root.
    for g in 1..=h.spheres_on_level(1) {
        let st = sys.sphere_stats(g)?;
        sys.send(MessageKind::StatsReport, Priority::Normal, g, 0, [st.items_processed, st.busy_ns, 0, 0])?;
    }
    let mut reports = 0;
    while sys.try_receive(0)?.is_some() {
        reports += 1;
    }
    let mut totals = [0f32; 12];
    sys.reduce(&mut totals)?;
    let reference = sieve_counts(a.items);
    println!(
        "job: primality of {} numbers in {:.1} ms ({:.1} M items/s); root received {} stats reports",
        a.items,
        elapsed.as_secs_f64() * 1e3,
        a.items as f64 / elapsed.as_secs_f64() / 1e6,
        reports
    );
    println!("primes below {} by residue mod 12 (hierarchical reduction vs sieve):", a.items);
    let mut ok = true;
    for r in 0..12 {
        if reference[r] > 0 || totals[r] > 0.0 {
            let same = totals[r] as u64 == reference[r];
            ok &= same;
            println!("  {r:>2}: {:>9} {}", totals[r] as u64, if same { "ok" } else { "MISMATCH" });
        }
    }
    sys.stop()?;
    print!("{}", sys.stats_table_limited(24));
    if !ok {
        return Err(cllm::Error::System("reduction disagrees with the sieve".into()));
    }
    Ok(())
}
