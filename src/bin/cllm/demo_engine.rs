//! The engine part of `cllm demo`: the reference MLP built by the schedule
//! builder, run sequentially and pipelined, checked against an f64
//! reference, with stats and a Chrome trace of one pipelined run.

use crate::mlp_fixture;
use cllm::runtime::{build_schedule, reference_mlp_layers, BuildOptions, EngineConfig, EngineStats};
use std::path::Path;
use std::time::Instant;

/// Runs of the MLP per mode.
const RUNS: usize = 500;

/// `relu?(a · b)` in f64 for row-major matrices.
fn reference(a: &[f64], b: &[f32], m: usize, k: usize, n: usize, relu: bool) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += x * f64::from(b[p * n + j]);
            }
        }
    }
    if relu {
        c.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    c
}

/// Runs the MLP `RUNS` times in one mode; returns the output, the stats
/// and the median µs per run.
fn run_mode(
    config: EngineConfig,
    inputs: &[Vec<f32>],
    trace: Option<&Path>,
) -> cllm::Result<(Vec<f32>, EngineStats, f64)> {
    let (mut e, ops) = mlp_fixture::engine(config, inputs)?;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        e.execute(&ops)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    if let Some(path) = trace {
        e.write_trace(path)?;
    }
    let mut out = vec![0f32; 128 * 32];
    e.get_tensor("out", &mut out, 128, 32)?;
    Ok((out, e.stats(), times[RUNS / 2]))
}

fn print_stats(label: &str, s: &EngineStats, median_us: f64) {
    let per = |v: u64| v as f64 / RUNS as f64 / 1000.0;
    println!(
        "  {label:<10} {median_us:>7.1} µs/run (median)  per run: dma busy {:.1} µs, compute busy {:.1} µs, \
         overlap {:.1} µs ({:.0}% of wall), stalls dma {} compute {}",
        per(s.dma_busy_ns),
        per(s.compute_busy_ns),
        per(s.overlap_ns),
        s.overlap_ns as f64 * 100.0 / s.total_ns.max(1) as f64,
        s.dma_stalls / RUNS as u64,
        s.compute_stalls / RUNS as u64
    );
}

/// Runs the engine part of the demo; the trace goes to `trace_path`.
pub fn engine_part(trace_path: &Path) -> cllm::Result<()> {
    println!(
        "\n== mini_runtime engine: reference MLP x 128x128 -> W1 128x64 -> ReLU -> W2 64x32 -> ReLU -> W3 32x32 =="
    );
    let inputs = mlp_fixture::inputs(0.2);
    let ids: [u32; 7] = std::array::from_fn(|i| i as u32);
    let built = build_schedule(&reference_mlp_layers(ids), &BuildOptions::default())?;
    println!(
        "schedule: {} ops ({} LOAD, {} EXEC, {} STORE), peak SRAM {} KiB, {} loads avoided by reuse; kernel {}",
        built.ops.len(),
        built.counts.loads,
        built.counts.executes,
        built.counts.stores,
        built.peak_sram_bytes / 1024,
        built.loads_eliminated,
        cllm::runtime::KernelImpl::best().name()
    );
    let seq = run_mode(EngineConfig::default(), &inputs, None)?;
    let pipe =
        run_mode(EngineConfig { threaded: true, trace: true, ..EngineConfig::default() }, &inputs, Some(trace_path))?;
    println!("{RUNS} runs per mode:");
    print_stats("sequential", &seq.1, seq.2);
    print_stats("pipelined", &pipe.1, pipe.2);
    let x: Vec<f64> = inputs[0].iter().map(|v| f64::from(*v)).collect();
    let h1 = reference(&x, &inputs[1], 128, 128, 64, true);
    let h2 = reference(&h1, &inputs[3], 128, 64, 32, true);
    let expect = reference(&h2, &inputs[5], 128, 32, 32, false);
    let max_err = seq.0.iter().zip(&expect).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
    let same = seq.0.iter().zip(&pipe.0).all(|(a, b)| a.to_bits() == b.to_bits());
    println!(
        "pipelined output {} sequential bit for bit; max |error| vs f64 reference {max_err:.2e}",
        if same { "equals" } else { "DIFFERS FROM" }
    );
    println!(
        "trace of the last pipelined run: {} (open in https://ui.perfetto.dev or chrome://tracing)",
        trace_path.display()
    );
    if !same || max_err > 1e-4 {
        return Err(cllm::Error::System("engine results disagree".into()));
    }
    Ok(())
}
