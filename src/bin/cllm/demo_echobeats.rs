//! The Echobeats part of `cllm demo`: 20 paced cycles of the 12-step loop
//! with small real tasks per step (with dependencies across the streams
//! and a barrier per cycle), then the per-stream metrics and the cycle rate.

use cllm::echobeats::{
    layer_for_step, mode_for_step, phase_for_step, stream_for_step, CognitiveStream, EchobeatsPool, PoolConfig,
    TaskSpec,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Cycles to run.
const CYCLES: usize = 20;
/// Target cycle time: the loop is paced to it.
const CYCLE_MS: f32 = 10.0;

/// A small real workload: sums of squares (kept so it is not optimised out).
fn work(n: u64) -> u64 {
    (1..=n).map(|i| i.wrapping_mul(i)).fold(0u64, u64::wrapping_add)
}

/// Runs the Echobeats part of the demo.
pub fn echobeats_part() -> cllm::Result<()> {
    println!("\n== Echobeats: 3 cognitive streams, 12-step cycle, {CYCLES} cycles paced to {CYCLE_MS} ms ==");
    let pool = Arc::new(EchobeatsPool::new(PoolConfig { target_cycle_time_ms: CYCLE_MS, ..PoolConfig::default() })?);
    let cfg = pool.config();
    println!(
        "{} workers per stream, {} data-loader workers, {} intra-op threads, {} ordered lanes ({:?})",
        cfg.threads_per_stream,
        cfg.data_loader_workers,
        cfg.intra_op_threads,
        cfg.cuda_streams,
        pool.ordered_lane_kind()
    );
    let checksum = Arc::new(AtomicU64::new(0));
    for _ in 0..CYCLES {
        let barrier = pool.create_barrier(3)?;
        let mut previous = Vec::new();
        for step in 1..=12 {
            let sum = checksum.clone();
            let mut task = TaskSpec::for_step(step, move |ctx| {
                // Intra-op steps split their work over the intra-op pool.
                let n = 20_000 + 1_000 * u64::from(ctx.step.unsigned_abs());
                let part = AtomicU64::new(0);
                ctx.parallel_for(0..4, |i| {
                    part.fetch_add(work(n / 4 + i as u64), Ordering::Relaxed);
                });
                sum.fetch_add(part.into_inner(), Ordering::Relaxed);
                Ok(())
            });
            // Each step waits for the previous step (another stream), so
            // the cycle's order is the 12-step interleaving.
            task.dependencies = previous.clone();
            previous = vec![pool.submit(task)?];
        }
        // After the twelfth step the three streams meet at a barrier.
        let waits: Vec<u64> = (0..3)
            .map(|s| {
                let p = pool.clone();
                let mut t = TaskSpec::new(move |_| match p.wait_at_barrier(barrier, Some(Duration::from_secs(5))) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("barrier timed out".to_string()),
                    Err(e) => Err(e.to_string()),
                });
                t.stream = CognitiveStream::from_index(s).expect("0..3");
                t.dependencies = previous.clone();
                pool.submit(t)
            })
            .collect::<cllm::Result<_>>()?;
        for id in &waits {
            pool.wait_task(*id, None);
        }
        pool.destroy_barrier(barrier)?;
        pool.run_cycle();
    }
    let m = pool.metrics();
    println!("stream     submitted completed failed  avg µs  max µs  queue wait µs  max depth");
    for (i, s) in m.streams.iter().enumerate() {
        let stream = CognitiveStream::from_index(i as i64).expect("0..3");
        println!(
            "{:<10} {:>9} {:>9} {:>6} {:>7.1} {:>7} {:>14} {:>10}",
            stream.name(),
            s.tasks_submitted,
            s.tasks_completed,
            s.tasks_failed,
            s.average_execution_us(),
            s.max_execution_us,
            s.queue_wait_us,
            s.max_queue_depth
        );
    }
    println!(
        "{} cycles, {:.1} cycles/s (paced to {CYCLE_MS} ms), {} stream synchronisations ({} µs in all); step 4 is {} / {} / {} / {}",
        m.cycles_completed,
        m.cycles_per_second(),
        m.sync_events,
        m.sync_wait_us,
        stream_for_step(4).name(),
        phase_for_step(4).name(),
        mode_for_step(4).name(),
        layer_for_step(4).name(),
    );
    let failed: u64 = m.streams.iter().map(|s| s.tasks_failed).sum();
    if failed > 0 {
        return Err(cllm::Error::System(format!("{failed} Echobeats tasks failed")));
    }
    Ok(())
}
