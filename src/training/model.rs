//! What the trainer needs from a model: a flat parameter vector and, per
//! worker, a forward+backward pass over one sequence.

use super::transformer::{Transformer, Workspace};
use crate::error::{invalid, Result};
use std::sync::Arc;

pub use super::transformer::ParamTensor;

/// One row of a batch as a model sees it. Every slice has the same length.
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    /// Input tokens.
    pub inputs: &'a [u32],
    /// Next-token targets.
    pub targets: &'a [u32],
    /// 1 for real positions, 0 for padding.
    pub mask: &'a [f32],
    /// Loss weight of each real position: the gradient is that of
    /// `Σ_t weight · mask[t] · loss_t`.
    pub weight: f32,
}

/// A trainable model: the trainer owns its parameters as one flat vector
/// and asks per-worker [`ModelWorker`]s for gradients.
pub trait GradientModel: Send + Sync {
    /// Length of the flat parameter vector.
    fn num_params(&self) -> usize;
    /// Named tensors covering the parameter vector, in order, with their
    /// weight-decay flags (checkpoints use the names).
    fn tensors(&self) -> Vec<ParamTensor>;
    /// Fills `params` (length [`GradientModel::num_params`]) from `seed`,
    /// deterministically.
    fn init_params(&self, params: &mut [f32], seed: u64) -> Result<()>;
    /// Largest token id + 1 the model accepts, if it has a vocabulary.
    fn vocab_size(&self) -> Option<usize>;
    /// Longest sequence the model accepts, if bounded.
    fn max_seq_len(&self) -> Option<usize>;
    /// Per-worker state for sequences of up to `seq_len` tokens, allocated
    /// once and reused for every sequence the worker computes.
    fn new_worker(&self, seq_len: usize) -> Result<Box<dyn ModelWorker>>;
}

/// One worker's view of a model: its activation buffers and passes.
pub trait ModelWorker: Send {
    /// Overwrites `grads` with the gradient of the weighted loss of `seq`
    /// and returns that weighted loss. Must be deterministic.
    fn forward_backward(&mut self, params: &[f32], seq: &Sequence<'_>, grads: &mut [f32]) -> Result<f64>;
    /// The weighted loss of `seq` without gradients.
    fn loss(&mut self, params: &[f32], seq: &Sequence<'_>) -> Result<f64>;
}

/// The built-in transformer as a [`GradientModel`].
#[derive(Clone)]
pub struct TransformerModel(pub Arc<Transformer>);

impl GradientModel for TransformerModel {
    fn num_params(&self) -> usize {
        self.0.num_params()
    }

    fn tensors(&self) -> Vec<ParamTensor> {
        self.0.tensors().to_vec()
    }

    fn init_params(&self, params: &mut [f32], seed: u64) -> Result<()> {
        if params.len() != self.0.num_params() {
            return Err(invalid!("{} parameters given, the model has {}", params.len(), self.0.num_params()));
        }
        self.0.init_params(params, seed);
        Ok(())
    }

    fn vocab_size(&self) -> Option<usize> {
        Some(self.0.config().vocab_size)
    }

    fn max_seq_len(&self) -> Option<usize> {
        Some(self.0.config().max_seq_len)
    }

    fn new_worker(&self, seq_len: usize) -> Result<Box<dyn ModelWorker>> {
        let workspace = self.0.workspace(seq_len)?;
        Ok(Box::new(TransformerWorker { model: Arc::clone(&self.0), workspace, weights: vec![0.0; seq_len] }))
    }
}

/// A worker of the transformer: its workspace and a per-token weight row.
struct TransformerWorker {
    model: Arc<Transformer>,
    workspace: Workspace,
    weights: Vec<f32>,
}

impl TransformerWorker {
    fn fill_weights(&mut self, seq: &Sequence<'_>) -> Result<usize> {
        let t = seq.inputs.len();
        if t > self.weights.len() || seq.mask.len() != t {
            return Err(invalid!("sequence of {t} tokens for a worker of {} positions", self.weights.len()));
        }
        for (w, &m) in self.weights[..t].iter_mut().zip(seq.mask) {
            *w = m * seq.weight;
        }
        Ok(t)
    }
}

impl ModelWorker for TransformerWorker {
    fn forward_backward(&mut self, params: &[f32], seq: &Sequence<'_>, grads: &mut [f32]) -> Result<f64> {
        let t = self.fill_weights(seq)?;
        self.model.forward_backward(params, &mut self.workspace, seq.inputs, seq.targets, &self.weights[..t], grads)
    }

    fn loss(&mut self, params: &[f32], seq: &Sequence<'_>) -> Result<f64> {
        let t = self.fill_weights(seq)?;
        self.model.forward_loss(params, &mut self.workspace, seq.inputs, seq.targets, &self.weights[..t])
    }
}
