//! The data-parallel trainer with the bigram model: learning, epochs,
//! determinism across runs and thread counts, accumulation, rounds,
//! evaluation and bad input.

use cllm::training::{
    BatchIterator, BigramModel, GradientModel, OptimizerKind, OptimizerState, ScheduleKind, ThreadedTrainer,
    TrainingConfig,
};
use std::sync::Arc;

/// A text with strong bigram structure, as byte tokens.
fn corpus() -> Vec<u32> {
    "the cat sat on the mat and the dog sat on the log; ".repeat(40).bytes().map(u32::from).collect()
}

fn bigram() -> Arc<dyn GradientModel> {
    Arc::new(BigramModel::new(256).unwrap())
}

fn fresh(model: &dyn GradientModel, kind: OptimizerKind) -> (Vec<f32>, OptimizerState) {
    let mut p = vec![0.0; model.num_params()];
    model.init_params(&mut p, 7).unwrap();
    (p, OptimizerState::new(kind, model.num_params()))
}

fn config() -> TrainingConfig {
    TrainingConfig { learning_rate: 0.1, weight_decay: 0.01, ..Default::default() }
}

/// Trains `epochs` epochs and returns the parameters and epoch losses.
fn train(threads: usize, cfg: &TrainingConfig, data: BatchIterator, epochs: usize) -> (Vec<f32>, Vec<f64>) {
    let model = bigram();
    let (mut p, mut st) = fresh(model.as_ref(), cfg.optimizer);
    let mut t = ThreadedTrainer::new(model, cfg, data, threads).unwrap();
    let losses = (0..epochs).map(|_| t.train_epoch(&mut p, &mut st).unwrap().mean_loss).collect();
    (p, losses)
}

#[test]
fn loss_falls_over_several_epochs_and_epochs_repeat() {
    let data = BatchIterator::new(&corpus(), 4, 16, true, false).unwrap();
    let model = bigram();
    let (mut p, _) = fresh(model.as_ref(), OptimizerKind::AdamW);
    let mut t = ThreadedTrainer::new(model, &config(), data.clone(), 2).unwrap();
    let initial = t.evaluate(&mut p, &data).unwrap();
    assert!((initial - 256f64.ln()).abs() < 0.05, "initial loss {initial}");
    let (_, losses) = train(2, &config(), data, 5);
    assert!(losses[4] < 1.5, "losses {losses:?}");
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "losses {losses:?}");
}

#[test]
fn parameters_are_bit_identical_run_after_run_and_for_every_thread_count() {
    let data = BatchIterator::new(&corpus(), 6, 16, true, false).unwrap();
    let cfg = TrainingConfig { gradient_clip: 0.5, ..config() };
    let (reference, ref_losses) = train(2, &cfg, data.clone(), 2);
    for threads in [2, 1, 3, 4, 7] {
        let (p, losses) = train(threads, &cfg, data.clone(), 2);
        assert!(p.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads differ");
        assert_eq!(losses, ref_losses, "{threads} threads");
    }
}

#[test]
fn two_accumulated_half_batches_equal_one_full_batch_bit_for_bit() {
    // 15 full batches exactly: no half batch left over at the end.
    let tokens = &corpus()[..15 * 128 + 1];
    let full = BatchIterator::new(tokens, 8, 16, false, true).unwrap();
    let half = BatchIterator::new(tokens, 4, 16, false, true).unwrap();
    assert_eq!(half.num_batches(), 2 * full.num_batches());
    let (a, _) = train(2, &config(), full, 1);
    let (b, _) = train(2, &TrainingConfig { accumulation_steps: 2, ..config() }, half, 1);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn rounds_of_few_gradient_buffers_give_the_same_parameters() {
    let data = BatchIterator::new(&corpus(), 8, 16, false, false).unwrap();
    let (a, _) = train(2, &config(), data.clone(), 1);
    // 256 KiB per buffer: one buffer per worker, so 4 rounds per step.
    let tight = TrainingConfig { gradient_memory_bytes: 1, ..config() };
    let (b, _) = train(2, &tight, data, 1);
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn evaluation_matches_the_loss_training_sees_and_changes_nothing() {
    let tokens = corpus();
    let one_batch = BatchIterator::new(&tokens[..65], 4, 16, false, true).unwrap();
    let model = bigram();
    let (mut p, mut st) = fresh(model.as_ref(), OptimizerKind::AdamW);
    let mut t = ThreadedTrainer::new(model, &config(), one_batch.clone(), 2).unwrap();
    let before = p.clone();
    let eval = t.evaluate(&mut p, &one_batch).unwrap();
    assert_eq!(p, before);
    assert_eq!(t.evaluate(&mut p, &one_batch).unwrap(), eval);
    let epoch = t.train_epoch(&mut p, &mut st).unwrap();
    assert_eq!(epoch.mean_loss, eval);
    assert!(t.evaluate(&mut p, &one_batch).unwrap() < eval);
}

#[test]
fn statistics_count_every_micro_batch_and_token() {
    let data = BatchIterator::new(&corpus(), 4, 16, false, false).unwrap();
    let model = bigram();
    let (mut p, mut st) = fresh(model.as_ref(), OptimizerKind::Sgd);
    let cfg = TrainingConfig { optimizer: OptimizerKind::Sgd, ..config() };
    let mut t = ThreadedTrainer::new(model, &cfg, data.clone(), 2).unwrap();
    assert_eq!(t.num_workers(), 2);
    let rep = t.train_epoch(&mut p, &mut st).unwrap();
    assert_eq!(rep.batches, data.num_batches());
    assert_eq!(rep.steps, data.num_batches() as u64);
    assert_eq!(rep.tokens, (corpus().len() - 1) as u64);
    assert!(rep.grad_norm.is_finite() && rep.grad_norm > 0.0);
    assert_eq!(t.gradient_norm(), rep.grad_norm);
    let stats: Vec<_> = (0..2).map(|w| t.worker_stats(w).unwrap()).collect();
    assert_eq!(stats.iter().map(|s| s.tokens).sum::<u64>(), rep.tokens);
    let rows: u64 = data.clone().map(|b| (0..b.batch_size).filter(|&r| b.row_valid_tokens(r) > 0).count() as u64).sum();
    assert_eq!(stats.iter().map(|s| s.micro_batches).sum::<u64>(), rows);
    for s in stats.iter().filter(|s| s.tokens > 0) {
        assert!(s.mean_loss() > 0.0 && s.mean_loss() < 10.0);
    }
    assert!(t.worker_stats(2).is_err());
    assert!(t.stats_table().contains("micro-batches"));
    assert_eq!(st.step, rep.steps);
}

#[test]
fn max_steps_ends_training_and_schedules_need_a_length() {
    let data = BatchIterator::new(&corpus(), 2, 16, false, false).unwrap();
    let model = bigram();
    let (mut p, mut st) = fresh(model.as_ref(), OptimizerKind::AdamW);
    let cfg = TrainingConfig { max_steps: 3, schedule: ScheduleKind::Cosine, ..config() };
    let mut t = ThreadedTrainer::new(Arc::clone(&model), &cfg, data.clone(), 2).unwrap();
    assert_eq!(t.schedule().total_steps, 3);
    let rep = t.train_epoch(&mut p, &mut st).unwrap();
    assert_eq!((rep.steps, st.step), (3, 3));
    assert!(t.train_epoch(&mut p, &mut st).is_err());
    let no_length = TrainingConfig { schedule: ScheduleKind::Linear, ..config() };
    assert!(ThreadedTrainer::new(Arc::clone(&model), &no_length, data.clone(), 2).is_err());
    let with_epochs = TrainingConfig { num_epochs: 2, ..no_length };
    let t = ThreadedTrainer::new(model, &with_epochs, data.clone(), 2).unwrap();
    assert_eq!(t.schedule().total_steps, 2 * data.num_batches() as u64);
}

#[test]
fn bad_input_is_an_error() {
    let model = bigram();
    let data = BatchIterator::new(&corpus(), 2, 16, false, false).unwrap();
    let bad_accum = TrainingConfig { accumulation_steps: 0, ..config() };
    assert!(ThreadedTrainer::new(Arc::clone(&model), &bad_accum, data.clone(), 2).is_err());
    let bad_lr = TrainingConfig { learning_rate: -1.0, ..config() };
    assert!(ThreadedTrainer::new(Arc::clone(&model), &bad_lr, data.clone(), 2).is_err());
    let bad_clip = TrainingConfig { gradient_clip: f32::NAN, ..config() };
    assert!(ThreadedTrainer::new(Arc::clone(&model), &bad_clip, data.clone(), 2).is_err());
    assert!(ThreadedTrainer::new(Arc::clone(&model), &config(), data.clone(), 100_000).is_err());
    let small = Arc::new(BigramModel::new(50).unwrap());
    assert!(ThreadedTrainer::new(small, &config(), data.clone(), 2).is_err(), "tokens beyond the vocabulary");
    let mut t = ThreadedTrainer::new(Arc::clone(&model), &config(), data, 2).unwrap();
    let mut short = vec![0.0; 3];
    let mut st = OptimizerState::new(OptimizerKind::AdamW, 3);
    assert!(t.train_epoch(&mut short, &mut st).is_err());
    assert_eq!(short.len(), 3, "parameters handed back");
    assert!(t.evaluate(&mut short, &BatchIterator::new(&corpus(), 1, 4, false, false).unwrap()).is_err());
}
