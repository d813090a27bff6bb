//! `cllm train`: trains the byte-level transformer language model on the
//! embedded corpus (or given files) with the data-parallel trainer,
//! showing progress, then writes the loss curve (CSV + SVG) and a
//! checkpoint, reloads it and prints a generated sample and the workers'
//! statistics. `cllm demo` runs the same [`run_training`] on a smaller
//! model with a step limit.

#[path = "train_plot.rs"]
mod train_plot;

use crate::corpus;
use cllm::training::{checkpoint, generate::generate};
use cllm::training::{
    BatchIterator, GradientModel, OptimizerKind, OptimizerState, ScheduleKind, StepReport, ThreadedTrainer,
    TrainingConfig, Transformer, TransformerConfig, TransformerModel,
};
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use train_plot::{LossCurve, TrainPoint, ValPoint};

const USAGE: &str = "usage: cllm train [--corpus FILE...] [--threads N] [--epochs E] [--max-steps S]
                  [--layers L] [--dim C] [--heads H] [--seq T] [--batch B] [--lr LR]
                  [--save FILE] [--out DIR] [--prompt TEXT] [--sample N]
Trains a byte-level transformer (vocabulary 256, feed-forward 4·C) with AdamW,
linear warm-up and cosine decay to LR/10, gradient clipping at 1.0; the last 5%
of the tokens are the validation set.
defaults: the embedded corpus (README, library sources, C tests), all usable
  CPUs (--threads 0), 5 epochs, no step limit (--max-steps 0), L=2 C=128 H=4
  T=64 B=8 LR=3e-3, --out target/cllm-train, --save <out>/model.safetensors,
  --prompt \"The \", --sample 200 bytes";

/// Byte-level vocabulary.
const VOCAB: usize = 256;
/// Seed of the initial parameters.
const INIT_SEED: u64 = 1234;
/// Seed of the sampling.
const SAMPLE_SEED: u64 = 42;
/// Sampling temperature of the sample.
const TEMPERATURE: f32 = 0.8;
/// Share of the tokens (at the end) held out for validation: 1/20.
const VAL_DIVISOR: usize = 20;

/// The shape of a byte-level transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    /// Transformer blocks.
    pub layers: usize,
    /// Embedding width C.
    pub dim: usize,
    /// Attention heads (dividing `dim`).
    pub heads: usize,
    /// Context length T, also the training sequence length.
    pub seq_len: usize,
}

impl ModelShape {
    /// The transformer configuration: vocabulary 256, feed-forward 4·C.
    pub fn config(&self) -> TransformerConfig {
        TransformerConfig {
            vocab_size: VOCAB,
            dim: self.dim,
            layers: self.layers,
            heads: self.heads,
            ff_dim: 4 * self.dim,
            max_seq_len: self.seq_len,
        }
    }

    /// Short description, e.g. `L=2 C=128 H=4 T=64`.
    pub fn describe(&self) -> String {
        format!("L={} C={} H={} T={}", self.layers, self.dim, self.heads, self.seq_len)
    }

    /// The model with parameters initialised from a fixed seed.
    pub fn build(&self) -> Result<(TransformerModel, Vec<f32>), String> {
        let config = self.config();
        config.validate().map_err(|e| format!("model {}: {e}", self.describe()))?;
        let model = TransformerModel(Arc::new(Transformer::new(config).map_err(|e| e.to_string())?));
        let mut params = vec![0.0; model.num_params()];
        model.init_params(&mut params, INIT_SEED).map_err(|e| e.to_string())?;
        Ok((model, params))
    }
}

/// Everything a training run needs; `cllm train` fills it from the
/// command line, `cllm demo` from its own defaults.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    /// The text, as bytes.
    pub corpus: Vec<u8>,
    /// What the text is, for the output.
    pub corpus_name: String,
    /// Worker threads; 0 = every usable CPU.
    pub threads: usize,
    /// Passes over the training tokens.
    pub epochs: u64,
    /// Stop after this many optimizer steps; 0 = no limit.
    pub max_steps: u64,
    /// The model.
    pub shape: ModelShape,
    /// Sequences per batch.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Directory of `loss.csv` and `loss.svg`.
    pub out_dir: PathBuf,
    /// Checkpoint path; `None` = `<out_dir>/model.safetensors`.
    pub save: Option<PathBuf>,
    /// Start of the generated sample.
    pub prompt: String,
    /// Bytes to generate after the prompt.
    pub sample_len: usize,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            corpus: corpus::bytes(),
            corpus_name: corpus::describe(),
            threads: 0,
            epochs: 5,
            max_steps: 0,
            shape: ModelShape { layers: 2, dim: 128, heads: 4, seq_len: 64 },
            batch: 8,
            lr: 3e-3,
            out_dir: PathBuf::from("target/cllm-train"),
            save: None,
            prompt: "The ".into(),
            sample_len: 200,
        }
    }
}

/// What a run achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Validation loss before the first step.
    pub initial_val_loss: f64,
    /// Validation loss after the last epoch.
    pub final_val_loss: f64,
    /// Optimizer steps taken.
    pub steps: u64,
}

/// Runs `cllm train`.
pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let settings = parse(args).map_err(|e| format!("train: {e}\n{USAGE}"))?;
    run_training(&settings).map(|_| ())
}

/// The value after `flag` parsed as `T`, or a message naming the flag
/// and what it needs.
fn value<T: std::str::FromStr>(args: &[String], i: &mut usize, flag: &str, what: &str) -> Result<T, String> {
    let v = args.get(*i).ok_or_else(|| format!("{flag} needs {what}"))?;
    *i += 1;
    v.parse().map_err(|_| format!("{flag} needs {what}, got '{v}'"))
}

/// Parses the options of `cllm train` and checks them.
fn parse(args: &[String]) -> Result<TrainSettings, String> {
    let mut s = TrainSettings::default();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        i += 1;
        let n = "a whole number";
        match flag {
            "--corpus" => {
                while i < args.len() && !args[i].starts_with("--") {
                    files.push(PathBuf::from(&args[i]));
                    i += 1;
                }
                if files.is_empty() {
                    return Err("--corpus needs at least one file".into());
                }
            }
            "--threads" => s.threads = value(args, &mut i, flag, n)?,
            "--epochs" => s.epochs = value(args, &mut i, flag, n)?,
            "--max-steps" => s.max_steps = value(args, &mut i, flag, n)?,
            "--layers" => s.shape.layers = value(args, &mut i, flag, n)?,
            "--dim" => s.shape.dim = value(args, &mut i, flag, n)?,
            "--heads" => s.shape.heads = value(args, &mut i, flag, n)?,
            "--seq" => s.shape.seq_len = value(args, &mut i, flag, n)?,
            "--batch" => s.batch = value(args, &mut i, flag, n)?,
            "--lr" => s.lr = value(args, &mut i, flag, "a number")?,
            "--save" => s.save = Some(value::<PathBuf>(args, &mut i, flag, "a file path")?),
            "--out" => s.out_dir = value(args, &mut i, flag, "a directory")?,
            "--prompt" => s.prompt = value(args, &mut i, flag, "a text")?,
            "--sample" => s.sample_len = value(args, &mut i, flag, n)?,
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    let sh = s.shape;
    for (name, v, max) in [
        ("--epochs", s.epochs as usize, 100_000),
        ("--layers", sh.layers, 64),
        ("--dim", sh.dim, 4096),
        ("--heads", sh.heads, 256),
        ("--seq", sh.seq_len, 16_384),
        ("--batch", s.batch, 4096),
    ] {
        if !(1..=max).contains(&v) {
            return Err(format!("{name} must be between 1 and {max}, got {v}"));
        }
    }
    if s.threads > cllm::spheres::MAX_THREADS {
        return Err(format!("--threads must be at most {}, got {}", cllm::spheres::MAX_THREADS, s.threads));
    }
    if s.sample_len > 100_000 {
        return Err(format!("--sample must be at most 100000, got {}", s.sample_len));
    }
    if !sh.dim.is_multiple_of(sh.heads) {
        return Err(format!("--heads {} does not divide --dim {}", sh.heads, sh.dim));
    }
    if !(s.lr.is_finite() && s.lr > 0.0 && s.lr <= 1.0) {
        return Err(format!("--lr must be in (0, 1], got {}", s.lr));
    }
    if s.prompt.is_empty() {
        return Err("--prompt must not be empty".into());
    }
    sh.config().validate().map_err(|e| format!("model {}: {e}", sh.describe()))?;
    if !files.is_empty() {
        s.corpus.clear();
        for f in &files {
            let bytes = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            s.corpus.extend_from_slice(&bytes);
        }
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        s.corpus_name = names.join(", ");
    }
    Ok(s)
}

/// Progress of one epoch on stderr: a bar redrawn in place on a terminal,
/// otherwise a line per tenth of the epoch.
struct Progress {
    epoch: u64,
    epochs: u64,
    steps: u64,
    done: u64,
    tokens: u64,
    start: Instant,
    last: Instant,
    tty: bool,
    shown_tenths: u64,
    /// When the bar was last drawn (a terminal is redrawn every 50 ms).
    drawn: Option<Instant>,
    width: usize,
}

impl Progress {
    fn new(epoch: u64, epochs: u64, steps: u64) -> Self {
        let now = Instant::now();
        let tty = std::io::stderr().is_terminal();
        Progress {
            epoch,
            epochs,
            steps,
            done: 0,
            tokens: 0,
            start: now,
            last: now,
            tty,
            shown_tenths: 0,
            drawn: None,
            width: 0,
        }
    }

    /// Records a step; returns its tokens per second.
    fn step(&mut self, r: &StepReport) -> f64 {
        let now = Instant::now();
        let rate = r.tokens as f64 / now.duration_since(self.last).as_secs_f64().max(1e-9);
        self.last = now;
        self.done += 1;
        self.tokens += r.tokens;
        let tenths = self.done * 10 / self.steps.max(1);
        let due = if self.tty {
            self.drawn.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(50))
        } else {
            tenths > self.shown_tenths
        };
        if due || self.done == self.steps {
            self.shown_tenths = tenths;
            self.drawn = Some(now);
            self.show(r);
        }
        rate
    }

    fn show(&mut self, r: &StepReport) {
        const BAR: u64 = 24;
        let filled = (self.done * BAR / self.steps.max(1)).min(BAR) as usize;
        let rate = self.tokens as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let line = format!(
            "epoch {}/{} step {:>w$}/{} [{}{}] {:>7.0} tok/s  loss {:.4}  lr {:.2e}",
            self.epoch,
            self.epochs,
            self.done,
            self.steps,
            "#".repeat(filled),
            ".".repeat(BAR as usize - filled),
            rate,
            r.loss,
            r.lr,
            w = self.steps.to_string().len()
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            self.width = self.width.max(line.len());
            let _ = write!(err, "\r{line:<0$}", self.width);
            if self.done == self.steps {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the line of a bar left unfinished (a step limit mid-epoch).
    fn finish(&self) {
        if self.tty && self.done != self.steps {
            eprintln!();
        }
    }
}

/// Text of generated bytes: invalid UTF-8 replaced, control characters
/// other than newline and tab shown as `·`.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() && c != '\n' && c != '\t' { '·' } else { c })
        .collect()
}

/// Trains as `s` says and prints the run; fails on a library error or
/// when a file cannot be written.
pub fn run_training(s: &TrainSettings) -> Result<TrainOutcome, String> {
    let e = |e: cllm::Error| e.to_string();
    let tokens = corpus::tokens(&s.corpus);
    let val_len = tokens.len() / VAL_DIVISOR;
    if val_len < 2 {
        return Err(format!("the corpus holds {} bytes; training needs at least {}", tokens.len(), 2 * VAL_DIVISOR));
    }
    // The output directories first, so a bad path fails before training.
    let save = s.save.clone().unwrap_or_else(|| s.out_dir.join("model.safetensors"));
    for dir in [Some(s.out_dir.as_path()), save.parent()].into_iter().flatten().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let (train_tokens, val_tokens) = tokens.split_at(tokens.len() - val_len);
    let train_data = BatchIterator::new(train_tokens, s.batch, s.shape.seq_len, true, false).map_err(e)?;
    let val_data = BatchIterator::new(val_tokens, s.batch, s.shape.seq_len, false, false).map_err(e)?;
    let (gm, mut params) = s.shape.build()?;
    let steps_per_epoch = train_data.num_batches() as u64;
    let planned = s.epochs.saturating_mul(steps_per_epoch);
    let total = if s.max_steps > 0 { s.max_steps.min(planned) } else { planned };
    // Epochs that run: fewer than asked when the step limit cuts them.
    let epochs = total.div_ceil(steps_per_epoch);
    let config = TrainingConfig {
        learning_rate: s.lr,
        optimizer: OptimizerKind::AdamW,
        schedule: ScheduleKind::Cosine,
        warmup_steps: (total / 10).clamp(1, 200),
        min_lr: s.lr / 10.0,
        weight_decay: 0.01,
        gradient_clip: 1.0,
        max_steps: total,
        num_epochs: epochs,
        ..TrainingConfig::default()
    };
    let mut state = OptimizerState::new(config.optimizer, params.len());
    let mut trainer = ThreadedTrainer::new(Arc::new(gm.clone()), &config, train_data, s.threads).map_err(e)?;
    println!(
        "corpus: {}: {} bytes ({} for training, {} held out for validation)",
        s.corpus_name,
        tokens.len(),
        train_tokens.len(),
        val_tokens.len()
    );
    println!(
        "model: byte-level transformer {} F={}, {} parameters; batch {}×{}; {} worker threads",
        s.shape.describe(),
        4 * s.shape.dim,
        params.len(),
        s.batch,
        s.shape.seq_len,
        trainer.num_workers()
    );
    println!(
        "training: {total} steps{} in {epochs} epoch(s) of up to {steps_per_epoch} steps; AdamW lr {:.1e}, {} warm-up \
         steps, cosine to {:.1e}, clip {}",
        if total < planned { " (the step limit)" } else { "" },
        s.lr,
        config.warmup_steps,
        config.min_lr,
        config.gradient_clip
    );
    let mut curve = LossCurve::default();
    let initial = trainer.evaluate(&mut params, &val_data).map_err(e)?;
    curve.val.push(ValPoint { step: 0, epoch: 0, loss: initial });
    println!("validation loss before training {initial:.4} (uniform guess: ln 256 = {:.4})", (VOCAB as f64).ln());
    let t0 = Instant::now();
    for epoch in 1..=epochs {
        let mut progress = Progress::new(epoch, epochs, steps_per_epoch.min(total - state.step));
        let report = trainer.train_epoch_with(&mut params, &mut state, &mut |r| {
            let tokens_per_s = progress.step(r);
            let (loss, lr, grad_norm) = (r.loss, r.lr, r.grad_norm);
            curve.train.push(TrainPoint { step: r.step, epoch, loss, lr, grad_norm, tokens_per_s });
        });
        progress.finish();
        let report = report.map_err(e)?;
        let val = trainer.evaluate(&mut params, &val_data).map_err(e)?;
        curve.val.push(ValPoint { step: state.step, epoch, loss: val });
        println!(
            "epoch {epoch}: {} steps, {} tokens in {:.1} s ({:.0} tok/s); train loss {:.4}, validation loss {val:.4}",
            report.steps,
            report.tokens,
            report.elapsed.as_secs_f64(),
            report.tokens as f64 / report.elapsed.as_secs_f64().max(1e-9),
            report.mean_loss
        );
    }
    let elapsed = t0.elapsed();
    let final_val = curve.val.last().map_or(initial, |v| v.loss);
    let title = format!("cllm train: {} on {} bytes, {} steps", s.shape.describe(), train_tokens.len(), state.step);
    let (csv, svg) = curve.write(&s.out_dir, &title)?;
    println!("loss curve: {} and {}", csv.display(), svg.display());
    let (loaded_model, loaded) = save_and_reload(&save, &gm, &params, &state, config.optimizer)?;
    let prompt: Vec<u32> = corpus::tokens(s.prompt.as_bytes());
    let t = Instant::now();
    let sample = generate(&loaded_model.0, &loaded, &prompt, s.sample_len, TEMPERATURE, SAMPLE_SEED).map_err(e)?;
    let bytes: Vec<u8> = sample.iter().map(|&t| t as u8).collect();
    println!(
        "sample ({} bytes at temperature {TEMPERATURE} from the reloaded checkpoint, {:.2} s):\n---\n{}{}\n---",
        bytes.len(),
        t.elapsed().as_secs_f64(),
        printable(s.prompt.as_bytes()),
        printable(&bytes)
    );
    print!("{}", trainer.stats_table());
    println!("done: {} steps in {}; validation loss {initial:.4} -> {final_val:.4}", state.step, fmt_duration(elapsed));
    Ok(TrainOutcome { initial_val_loss: initial, final_val_loss: final_val, steps: state.step })
}

/// Saves a checkpoint to `path` (whose directory exists), reads it back
/// (configuration from its metadata, then the tensors) and checks it holds
/// the same parameters and step; returns the reloaded model and parameters.
fn save_and_reload(
    path: &Path,
    model: &TransformerModel,
    params: &[f32],
    state: &OptimizerState,
    kind: OptimizerKind,
) -> Result<(TransformerModel, Vec<f32>), String> {
    let e = |e: cllm::Error| e.to_string();
    let config = *model.0.config();
    checkpoint::save(path, model, params, Some((state, kind)), &checkpoint::transformer_metadata(&config))
        .map_err(e)?;
    let (loaded_model, contents) = checkpoint::load_transformer(path).map_err(e)?;
    let same = *loaded_model.0.config() == config
        && contents.params.len() == params.len()
        && contents.params.iter().zip(params).all(|(a, b)| a.to_bits() == b.to_bits())
        && contents.state.as_ref().map(|st| st.step) == Some(state.step);
    if !same {
        return Err(format!("the checkpoint {} does not read back as written", path.display()));
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    println!(
        "checkpoint: {} ({:.1} MB, parameters + AdamW state at step {}; reloads bit-identical)",
        path.display(),
        size as f64 / 1e6,
        state.step
    );
    Ok((loaded_model, contents.params))
}

/// `1.23 s` or `2 min 03 s`.
fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.2} s")
    } else {
        format!("{} min {:04.1} s", (s / 60.0) as u64, s % 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// Options land in the settings; files replace the corpus.
    #[test]
    fn parses_options() {
        let s =
            parse(&args("--layers 3 --dim 64 --heads 8 --seq 32 --batch 4 --lr 1e-3 --epochs 2 --threads 1")).unwrap();
        assert_eq!(s.shape, ModelShape { layers: 3, dim: 64, heads: 8, seq_len: 32 });
        assert_eq!((s.batch, s.lr, s.epochs, s.threads), (4, 1e-3, 2, 1));
        let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let s = parse(&args(&format!("--corpus {readme} {readme} --out x"))).unwrap();
        assert_eq!(s.corpus.len(), 2 * std::fs::read(readme).unwrap().len());
        assert_eq!(s.out_dir, PathBuf::from("x"));
    }

    /// Bad options give messages, never panics.
    #[test]
    fn rejects_bad_options() {
        for (line, needle) in [
            ("--bogus", "unknown option"),
            ("--dim", "needs a whole number"),
            ("--dim x", "got 'x'"),
            ("--dim 0", "--dim must be"),
            ("--batch 0", "--batch must be"),
            ("--epochs 0", "--epochs must be"),
            ("--heads 3", "does not divide"),
            ("--lr -1", "--lr must be"),
            ("--lr nan", "--lr must be"),
            ("--corpus", "at least one file"),
            ("--corpus /nonexistent/file", "cannot read"),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.contains(needle), "{line}: {e}");
        }
    }

    /// Control characters of a sample are made visible.
    #[test]
    fn printable_sample() {
        assert_eq!(printable(b"a\x1b[0m\n\tb\xff"), "a·[0m\n\tb\u{fffd}");
    }
}
