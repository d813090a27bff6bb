//! The training part of `cllm demo`: a short run of `cllm train` (a small
//! byte-level transformer on the embedded corpus, a step limit) with the
//! same output: progress, loss curve as CSV + SVG, checkpoint, sample.

use crate::train::{run_training, ModelShape, TrainSettings};
use std::path::Path;

/// Optimizer steps of the demo run.
const STEPS: u64 = 3000;

/// Runs the training part of the demo on `threads` workers (0 = every
/// usable CPU), writing its files into `out_dir`.
pub fn training_part(threads: usize, out_dir: &Path) -> Result<(), String> {
    let settings = TrainSettings {
        threads,
        epochs: 10,
        max_steps: STEPS,
        shape: ModelShape { layers: 2, dim: 128, heads: 4, seq_len: 64 },
        out_dir: out_dir.to_path_buf(),
        ..TrainSettings::default()
    };
    println!(
        "\n== Training: byte-level transformer {} on the embedded corpus, {STEPS} steps ==",
        settings.shape.describe()
    );
    let outcome = run_training(&settings)?;
    if outcome.steps != STEPS {
        return Err(format!("the training run took {} steps instead of {STEPS}", outcome.steps));
    }
    if outcome.final_val_loss >= outcome.initial_val_loss {
        return Err(format!(
            "training did not lower the validation loss ({:.4} -> {:.4})",
            outcome.initial_val_loss, outcome.final_val_loss
        ));
    }
    Ok(())
}
