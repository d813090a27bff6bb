//! `cllm bench training`: tokens per second of whole training steps
//! (forward, backward, gradient reduction and AdamW update) through the
//! data-parallel trainer, for two transformer sizes at 1 and 2 threads,
//! against llm.c's figures for the same sizes measured on this machine;
//! and whether the parameters after the same steps are bit-identical
//! across the thread counts.

use super::bench_report::{median, Better, Measurement, Reporter, Target};
use crate::corpus;
use crate::train::ModelShape;
use cllm::training::{BatchIterator, OptimizerState, ThreadedTrainer, TrainingConfig};
use std::sync::Arc;
use std::time::Instant;

/// Suite name in every measurement.
const SUITE: &str = "training";
/// Thread counts compared.
const THREADS: [usize; 2] = [1, 2];
/// Goal for tokens/s at 2 threads over tokens/s at 1 thread.
const SCALING_TARGET: f64 = 1.8;

/// One model size.
struct Case {
    /// Short name, as in the issue.
    name: &'static str,
    shape: ModelShape,
    batch: usize,
    /// Untimed steps first (allocation, page faults, thread start).
    warmup_steps: u64,
    /// Timed steps after them (about 3 s at 1 thread).
    timed_steps: u64,
    /// llm.c's tokens/s on this machine at 1 and 2 threads: medians of 3
    /// runs of `train_gpt2.c`'s training step (commit f1e2ace, its
    /// Makefile's CPU flags, OpenMP) on the same corpus, measured in this
    /// project's session of 2026-11-22 (see the README).
    llmc: [f64; 2],
    /// Goal for our tokens/s at 2 threads.
    target_2t: f64,
}

const CASES: [Case; 2] = [
    Case {
        name: "A",
        shape: ModelShape { layers: 2, dim: 128, heads: 4, seq_len: 64 },
        batch: 8,
        warmup_steps: 20,
        timed_steps: 300,
        llmc: [13_422.0, 22_676.0],
        target_2t: 20_000.0,
    },
    Case {
        name: "B",
        shape: ModelShape { layers: 4, dim: 256, heads: 4, seq_len: 128 },
        batch: 4,
        warmup_steps: 4,
        timed_steps: 40,
        llmc: [2_028.0, 3_153.0],
        target_2t: 2_900.0,
    },
];

/// What one run measured.
struct Run {
    /// Tokens of a step over the median step time.
    tokens_per_s: f64,
    /// Timed tokens over the timed steps' total wall time.
    mean_tokens_per_s: f64,
    /// Parameters after every step.
    params: Vec<f32>,
}

/// Trains `case` for its warm-up and timed steps on `threads` workers.
fn measure(case: &Case, threads: usize, tokens: &[u32]) -> Result<Run, String> {
    let e = |e: cllm::Error| e.to_string();
    let (model, mut params) = case.shape.build()?;
    let total = case.warmup_steps + case.timed_steps;
    let config =
        TrainingConfig { learning_rate: 3e-3, gradient_clip: 1.0, max_steps: total, ..TrainingConfig::default() };
    let data = BatchIterator::new(tokens, case.batch, case.shape.seq_len, false, true).map_err(e)?;
    if (data.num_batches() as u64) < total {
        return Err(format!("case {}: the corpus holds {} batches, {total} are needed", case.name, data.num_batches()));
    }
    let mut state = OptimizerState::new(config.optimizer, params.len());
    let mut trainer = ThreadedTrainer::new(Arc::new(model), &config, data, threads).map_err(e)?;
    let mut times = Vec::with_capacity(case.timed_steps as usize);
    let mut timed_tokens = 0u64;
    let mut last = Instant::now();
    trainer
        .train_epoch_with(&mut params, &mut state, &mut |r| {
            let now = Instant::now();
            if r.step > case.warmup_steps {
                times.push(now.duration_since(last).as_secs_f64());
                timed_tokens += r.tokens;
            }
            last = now;
        })
        .map_err(e)?;
    if times.len() as u64 != case.timed_steps {
        return Err(format!("case {}: {} timed steps ran, {} expected", case.name, times.len(), case.timed_steps));
    }
    let step_tokens = (case.batch * case.shape.seq_len) as f64;
    let wall: f64 = times.iter().sum();
    Ok(Run { tokens_per_s: step_tokens / median(&mut times), mean_tokens_per_s: timed_tokens as f64 / wall, params })
}

/// `1 thread`, `2 threads`.
fn plural_threads(n: usize) -> String {
    format!("{n} thread{}", if n == 1 { "" } else { "s" })
}

/// Runs every case of the suite.
pub fn run(rep: &mut Reporter) -> Result<(), String> {
    let tokens = corpus::tokens(&corpus::bytes());
    eprintln!(
        "training: byte-level transformer, F=4C, vocabulary 256, AdamW, on the embedded corpus ({} tokens); \
         tok/s = B·T / median step time; llm.c reference measured on this machine",
        tokens.len()
    );
    for case in &CASES {
        let label = format!("{} ({} B={})", case.name, case.shape.describe(), case.batch);
        let mut runs = Vec::new();
        for threads in THREADS {
            let r = measure(case, threads, &tokens)?;
            eprintln!(
                "  {label}, {}: {} warm-up + {} timed steps, median {:.0} tok/s, mean {:.0} tok/s",
                plural_threads(threads),
                case.warmup_steps,
                case.timed_steps,
                r.tokens_per_s,
                r.mean_tokens_per_s
            );
            runs.push(r);
        }
        let tok = |ours: f64, threads: usize, llmc: f64, target: Option<Target>| Measurement {
            suite: SUITE,
            case: format!("{label}, {}", plural_threads(threads)),
            unit: "tok/s",
            better: Better::Higher,
            ours,
            baseline_name: format!("llm.c reference, {}", plural_threads(threads)),
            baseline: llmc,
            target,
        };
        rep.record(tok(runs[0].tokens_per_s, THREADS[0], case.llmc[0], None));
        rep.record(tok(runs[1].tokens_per_s, THREADS[1], case.llmc[1], Some(Target::AtLeast(case.target_2t))));
        rep.record(Measurement {
            suite: SUITE,
            case: format!("{label}, scaling 2 threads / 1 thread"),
            unit: "x",
            better: Better::Higher,
            ours: runs[1].tokens_per_s / runs[0].tokens_per_s,
            baseline_name: "llm.c reference scaling".into(),
            baseline: case.llmc[1] / case.llmc[0],
            target: Some(Target::AtLeast(SCALING_TARGET)),
        });
        let (a, b) = (&runs[0].params, &runs[1].params);
        let same = a.iter().zip(b).filter(|(x, y)| x.to_bits() == y.to_bits()).count();
        let identical = same as f64 / a.len().max(1) as f64;
        eprintln!(
            "  {label}: parameters after {} steps {} between 1 and 2 threads ({same} of {} equal)",
            case.warmup_steps + case.timed_steps,
            if same == a.len() && a.len() == b.len() { "bit-identical" } else { "DIFFER" },
            a.len()
        );
        rep.record(Measurement {
            suite: SUITE,
            case: format!("{label}, parameters bit-identical 1 vs 2 threads"),
            unit: "share",
            better: Better::Higher,
            ours: if a.len() == b.len() { identical } else { 0.0 },
            baseline_name: "all bits equal".into(),
            baseline: 1.0,
            target: Some(Target::AtLeast(1.0)),
        });
    }
    Ok(())
}
