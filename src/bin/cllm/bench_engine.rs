//! `cllm bench engine`: the mini_runtime engine. Sequential against
//! pipelined on the reference MLP (also with another process keeping one
//! core busy), a 512×512×512 matmul against `matrixmultiply`'s sgemm, and
//! each tile kernel against sgemm on the same 32×32×32 tile.

use super::bench_report::{median, percentile, Better, Measurement, Reporter, Target};
use crate::mlp_fixture::{self, uniform};
use cllm::runtime::{build_schedule, kernels, BuildOptions, Engine, EngineConfig, KernelImpl, MatmulLayer, TensorRef};
use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// Suite name in every measurement.
const SUITE: &str = "engine";
/// Timed iterations of the MLP per mode.
const MLP_ITERS: usize = 2000;
/// Repetitions of the 512³ matmul per mode.
const BIG_REPS: usize = 15;
/// Calls per tile-kernel sample.
const TILE_CALLS: usize = 2000;
/// Samples per tile kernel.
const TILE_SAMPLES: usize = 101;
/// Name of the sgemm baseline.
const SGEMM: &str = "matrixmultiply sgemm";

fn err(e: cllm::Error) -> String {
    e.to_string()
}

/// Per-iteration µs of `MLP_ITERS` runs after a warm-up.
fn mlp_times(config: EngineConfig) -> Result<(Vec<f64>, cllm::runtime::EngineStats), String> {
    let (mut e, ops) = mlp_fixture::engine(config, &mlp_fixture::inputs(1.0)).map_err(err)?;
    for _ in 0..200 {
        e.execute(&ops).map_err(err)?;
    }
    e.reset_stats();
    let mut t = Vec::with_capacity(MLP_ITERS);
    for _ in 0..MLP_ITERS {
        let s = Instant::now();
        e.execute(&ops).map_err(err)?;
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    Ok((t, e.stats()))
}

/// A child process spinning on one core until killed.
fn spinner() -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    Command::new(exe)
        .arg("__spin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the spinning process: {e}"))
}

fn mlp(rep: &mut Reporter) -> Result<(), String> {
    let seq_cfg = EngineConfig::default();
    let pipe_cfg = EngineConfig { threaded: true, ..EngineConfig::default() };
    let (mut seq, _) = mlp_times(seq_cfg)?;
    let (mut pipe, stats) = mlp_times(pipe_cfg)?;
    let (seq50, pipe50) = (median(&mut seq), median(&mut pipe));
    let (seq99, pipe99) = (percentile(&mut seq, 99.0), percentile(&mut pipe, 99.0));
    let m = |case: &str, ours, baseline_name: &str, baseline, target| Measurement {
        suite: SUITE,
        case: case.into(),
        unit: "µs",
        better: Better::Lower,
        ours,
        baseline_name: baseline_name.into(),
        baseline,
        target,
    };
    rep.record(m(
        "reference MLP p50, pipelined vs sequential",
        pipe50,
        "sequential p50",
        seq50,
        Some(Target::RatioAtMost(1.05)),
    ));
    rep.record(m("reference MLP p99, pipelined vs sequential", pipe99, "sequential p99", seq99, None));
    rep.record(m("reference MLP sequential p99 / p50", seq99, "sequential p50", seq50, Some(Target::RatioAtMost(2.0))));
    rep.record(m("reference MLP pipelined p99 / p50", pipe99, "pipelined p50", pipe50, Some(Target::RatioAtMost(2.0))));
    let overlap = stats.overlap_ns as f64 / stats.total_ns.max(1) as f64 * 100.0;
    let dma_share = stats.dma_busy_ns as f64 / stats.total_ns.max(1) as f64 * 100.0;
    rep.record(Measurement {
        suite: SUITE,
        case: "reference MLP pipelined overlap, % of wall time".into(),
        unit: "%",
        better: Better::Higher,
        ours: overlap,
        baseline_name: "DMA busy, % of wall time".into(),
        baseline: dma_share,
        target: None,
    });
    let mut child = spinner()?;
    let contended = (|| {
        let (mut s, _) = mlp_times(seq_cfg)?;
        let (mut p, _) = mlp_times(pipe_cfg)?;
        Ok::<_, String>((median(&mut s), percentile(&mut s, 99.0), median(&mut p), percentile(&mut p, 99.0)))
    })();
    let _ = child.kill();
    let _ = child.wait();
    let (s50, s99, p50, p99) = contended?;
    rep.record(m(
        "MLP, one core busy elsewhere: pipelined p99 / p50",
        p99,
        "pipelined p50",
        p50,
        Some(Target::RatioAtMost(2.0)),
    ));
    rep.record(m(
        "MLP, one core busy elsewhere: sequential p99 / p50",
        s99,
        "sequential p50",
        s50,
        Some(Target::RatioAtMost(2.0)),
    ));
    rep.record(m("MLP, one core busy elsewhere: pipelined p50 vs sequential", p50, "sequential p50", s50, None));
    Ok(())
}

const BIG: usize = 512;

fn big(rep: &mut Reporter) -> Result<(), String> {
    let flops = 2.0 * (BIG * BIG * BIG) as f64;
    let (a, b) = (uniform(BIG * BIG, 11), uniform(BIG * BIG, 12));
    let run = |config: EngineConfig| -> Result<(f64, cllm::runtime::EngineStats), String> {
        let mut e = Engine::new(config).map_err(err)?;
        let ids = [
            e.register_tensor("a", BIG, BIG).map_err(err)?,
            e.register_tensor("b", BIG, BIG).map_err(err)?,
            e.register_tensor("c", BIG, BIG).map_err(err)?,
        ];
        e.set_tensor("a", &a, BIG, BIG).map_err(err)?;
        e.set_tensor("b", &b, BIG, BIG).map_err(err)?;
        let t = |id| TensorRef { id, rows: BIG, cols: BIG };
        let layer = MatmulLayer { a: t(ids[0]), b: t(ids[1]), out: t(ids[2]), relu: false };
        let s = build_schedule(&[layer], &BuildOptions::default()).map_err(err)?;
        e.execute(&s.ops).map_err(err)?;
        e.reset_stats();
        let mut times = Vec::new();
        for _ in 0..BIG_REPS {
            let t0 = Instant::now();
            e.execute(&s.ops).map_err(err)?;
            times.push(t0.elapsed().as_secs_f64());
        }
        Ok((flops / median(&mut times) / 1e9, e.stats()))
    };
    let (seq, _) = run(EngineConfig::default())?;
    let (pipe, stats) = run(EngineConfig { threaded: true, ..EngineConfig::default() })?;
    let (two, _) = run(EngineConfig { threaded: true, compute_threads: 2, ..EngineConfig::default() })?;
    let mut c = vec![0f32; BIG * BIG];
    let mut times = Vec::new();
    for _ in 0..BIG_REPS {
        let t0 = Instant::now();
        // SAFETY: the three buffers hold 512×512 floats, row-major.
        unsafe {
            matrixmultiply::sgemm(
                BIG,
                BIG,
                BIG,
                1.0,
                a.as_ptr(),
                BIG as isize,
                1,
                b.as_ptr(),
                BIG as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                BIG as isize,
                1,
            );
        }
        times.push(t0.elapsed().as_secs_f64());
        black_box(&c);
    }
    let sgemm = flops / median(&mut times) / 1e9;
    let m = |case: &str, ours, baseline_name: &str, baseline, target| Measurement {
        suite: SUITE,
        case: case.into(),
        unit: "GFLOP/s",
        better: Better::Higher,
        ours,
        baseline_name: baseline_name.into(),
        baseline,
        target,
    };
    rep.record(m("512³ matmul, sequential", seq, "matrixmultiply sgemm 512³", sgemm, Some(Target::AtLeast(80.0))));
    rep.record(m("512³ matmul, pipelined vs sequential", pipe, "sequential", seq, Some(Target::RatioAtLeast(1.3))));
    rep.record(m("512³ matmul, 2 compute lanes vs sequential", two, "sequential", seq, None));
    rep.record(Measurement {
        suite: SUITE,
        case: "512³ pipelined overlap, % of wall time".into(),
        unit: "%",
        better: Better::Higher,
        ours: stats.overlap_ns as f64 / stats.total_ns.max(1) as f64 * 100.0,
        baseline_name: "DMA busy, % of wall time".into(),
        baseline: stats.dma_busy_ns as f64 / stats.total_ns.max(1) as f64 * 100.0,
        target: None,
    });
    Ok(())
}

/// Median ns per call of `f` over `TILE_SAMPLES` samples of `TILE_CALLS`.
fn per_call(mut f: impl FnMut()) -> f64 {
    for _ in 0..TILE_CALLS {
        f();
    }
    let mut v: Vec<f64> = (0..TILE_SAMPLES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..TILE_CALLS {
                f();
            }
            t.elapsed().as_nanos() as f64 / TILE_CALLS as f64
        })
        .collect();
    median(&mut v)
}

fn tiles(rep: &mut Reporter) -> Result<(), String> {
    let a: Box<kernels::Tile> = uniform(1024, 1).try_into().map_err(|_| "tile size")?;
    let b: Box<kernels::Tile> = uniform(1024, 2).try_into().map_err(|_| "tile size")?;
    let mut c: Box<kernels::Tile> = Box::new([0.0; 1024]);
    let sgemm_ns = per_call(|| {
        // SAFETY: three 32×32 row-major tiles.
        unsafe {
            matrixmultiply::sgemm(32, 32, 32, 1.0, a.as_ptr(), 32, 1, b.as_ptr(), 32, 1, 1.0, c.as_mut_ptr(), 32, 1);
        }
        black_box(&mut c);
    });
    let gflops = |ns: f64| 65536.0 / ns;
    for k in KernelImpl::ALL {
        if !k.is_available() {
            eprintln!("engine: kernel {} is not available on this CPU; skipped", k.name());
            continue;
        }
        c.fill(0.0);
        let ns = per_call(|| {
            kernels::matmul_tile(&mut c, &a, &b, k);
            black_box(&mut c);
        });
        let target = if k == KernelImpl::Reference { None } else { Some(Target::AtLeast(97.0)) };
        rep.record(Measurement {
            suite: SUITE,
            case: format!("tile kernel {} (32×32×32, C += A·B)", k.name()),
            unit: "GFLOP/s",
            better: Better::Higher,
            ours: gflops(ns),
            baseline_name: format!("{SGEMM} same tile"),
            baseline: gflops(sgemm_ns),
            target,
        });
    }
    Ok(())
}

/// Runs every case of the suite.
pub fn run(rep: &mut Reporter) -> Result<(), String> {
    eprintln!("engine: active kernel {}; ratio = ours / baseline", KernelImpl::best().name());
    tiles(rep)?;
    mlp(rep)?;
    big(rep)?;
    Ok(())
}
