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

/// A model whose backward panics once `armed` is set.
struct PanickyModel {
    inner: BigramModel,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

struct PanickyWorker {
    inner: Box<dyn cllm::training::ModelWorker>,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl GradientModel for PanickyModel {
    fn num_params(&self) -> usize {
        self.inner.num_params()
    }
    fn tensors(&self) -> Vec<cllm::training::ParamTensor> {
        self.inner.tensors()
    }
    fn init_params(&self, params: &mut [f32], seed: u64) -> cllm::Result<()> {
        self.inner.init_params(params, seed)
    }
    fn vocab_size(&self) -> Option<usize> {
        self.inner.vocab_size()
    }
    fn max_seq_len(&self) -> Option<usize> {
        None
    }
    fn new_worker(&self, seq_len: usize) -> cllm::Result<Box<dyn cllm::training::ModelWorker>> {
        Ok(Box::new(PanickyWorker { inner: self.inner.new_worker(seq_len)?, armed: Arc::clone(&self.armed) }))
    }
}

impl cllm::training::ModelWorker for PanickyWorker {
    fn forward_backward(
        &mut self,
        params: &[f32],
        seq: &cllm::training::Sequence<'_>,
        grads: &mut [f32],
    ) -> cllm::Result<f64> {
        if self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            panic!("deliberate failure in the backward pass");
        }
        self.inner.forward_backward(params, seq, grads)
    }
    fn loss(&mut self, params: &[f32], seq: &cllm::training::Sequence<'_>) -> cllm::Result<f64> {
        self.inner.loss(params, seq)
    }
}

#[test]
fn a_panicking_model_fails_the_epoch_with_its_message_and_changes_nothing() {
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let model = Arc::new(PanickyModel { inner: BigramModel::new(256).unwrap(), armed: Arc::clone(&armed) });
    let (mut p, mut st) = fresh(model.as_ref(), OptimizerKind::AdamW);
    let data = BatchIterator::new(&corpus(), 4, 16, false, false).unwrap();
    let mut t = ThreadedTrainer::new(model, &config(), data, 2).unwrap();
    let before = p.clone();
    let err = t.train_epoch(&mut p, &mut st).unwrap_err();
    assert!(err.to_string().contains("deliberate failure"), "{err}");
    assert_eq!((p, st.step), (before.clone(), 0));
    armed.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut p = before;
    assert!(t.train_epoch(&mut p, &mut st).is_ok(), "the trainer works again");
    assert!(st.step > 0);
}

#[test]
fn a_panicking_step_callback_still_hands_the_parameters_back() {
    let data = BatchIterator::new(&corpus(), 4, 16, false, false).unwrap();
    let model = bigram();
    let (mut p, mut st) = fresh(model.as_ref(), OptimizerKind::AdamW);
    let n = p.len();
    let mut t = ThreadedTrainer::new(model, &config(), data, 2).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.train_epoch_with(&mut p, &mut st, &mut |_| panic!("from on_step"))
    }));
    assert!(r.is_err());
    assert_eq!((p.len(), st.m.len(), st.v.len()), (n, n, n));
    assert!(t.train_epoch(&mut p, &mut st).is_ok());
}

#[test]
fn losses_are_bit_identical_across_thread_counts_when_steps_run_in_rounds() {
    let data = BatchIterator::new(&corpus(), 8, 16, true, false).unwrap();
    let tight = TrainingConfig { gradient_memory_bytes: 1, ..config() };
    let (p1, l1) = train(1, &tight, data.clone(), 2);
    for threads in [2, 3, 4] {
        let (p, l) = train(threads, &tight, data.clone(), 2);
        assert!(p.iter().zip(&p1).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads");
        assert!(l.iter().zip(&l1).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads: {l:?} vs {l1:?}");
    }
}

#[test]
fn optimizer_state_of_the_wrong_shape_is_refused_before_anything_runs() {
    let data = BatchIterator::new(&corpus(), 4, 16, false, false).unwrap();
    let model = bigram();
    let cfg = TrainingConfig { optimizer: OptimizerKind::Sgd, ..config() };
    let (mut p, _) = fresh(model.as_ref(), OptimizerKind::Sgd);
    let mut t = ThreadedTrainer::new(model, &cfg, data, 2).unwrap();
    let mut bad = OptimizerState::new(OptimizerKind::Sgd, p.len());
    bad.v = vec![0.0; 100];
    let before = p.clone();
    assert!(t.train_epoch(&mut p, &mut bad).is_err());
    assert_eq!((p, bad.step), (before, 0));
}
