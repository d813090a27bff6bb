//! A bigram language model (one row of next-token logits per token): the
//! smallest real [`GradientModel`], a baseline for the transformer and a
//! fast model for testing the trainer.

use super::batch::SplitMix64;
use super::model::{GradientModel, ModelWorker, ParamTensor, Sequence};
use crate::error::{invalid, Result};

/// Logits of token `b` after token `a` are `W[a][b]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigramModel {
    /// Tokens are `0..vocab_size`.
    pub vocab_size: usize,
}

impl BigramModel {
    /// A model over `vocab_size` tokens (1..=65536).
    pub fn new(vocab_size: usize) -> Result<Self> {
        if vocab_size == 0 || vocab_size > 1 << 16 {
            return Err(invalid!("bigram vocab_size must be in 1..=65536, got {vocab_size}"));
        }
        Ok(BigramModel { vocab_size })
    }
}

impl GradientModel for BigramModel {
    fn num_params(&self) -> usize {
        self.vocab_size * self.vocab_size
    }

    fn tensors(&self) -> Vec<ParamTensor> {
        vec![ParamTensor {
            name: "bigram.logits".into(),
            shape: vec![self.vocab_size, self.vocab_size],
            offset: 0,
            len: self.num_params(),
            decay: true,
        }]
    }

    fn init_params(&self, params: &mut [f32], seed: u64) -> Result<()> {
        if params.len() != self.num_params() {
            return Err(invalid!("{} parameters given, the model has {}", params.len(), self.num_params()));
        }
        let mut rng = SplitMix64::new(seed);
        params.iter_mut().for_each(|p| *p = (rng.next_f64() as f32 - 0.5) * 0.02);
        Ok(())
    }

    fn vocab_size(&self) -> Option<usize> {
        Some(self.vocab_size)
    }

    fn max_seq_len(&self) -> Option<usize> {
        None
    }

    fn new_worker(&self, _seq_len: usize) -> Result<Box<dyn ModelWorker>> {
        Ok(Box::new(BigramWorker { v: self.vocab_size, probs: vec![0.0; self.vocab_size] }))
    }
}

struct BigramWorker {
    v: usize,
    probs: Vec<f32>,
}

impl BigramWorker {
    /// Softmax of row `a` into `probs`; returns −log p(b).
    fn row(&mut self, params: &[f32], a: u32, b: u32) -> Result<f64> {
        let v = self.v;
        if a as usize >= v || b as usize >= v {
            return Err(invalid!("token pair ({a}, {b}) outside the vocabulary of {v}"));
        }
        let logits = &params[a as usize * v..(a as usize + 1) * v];
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (p, &l) in self.probs.iter_mut().zip(logits) {
            *p = (l - max).exp();
            sum += *p;
        }
        self.probs.iter_mut().for_each(|p| *p /= sum);
        Ok(-(self.probs[b as usize].max(f32::MIN_POSITIVE) as f64).ln())
    }

    fn check(&self, params: &[f32], seq: &Sequence<'_>) -> Result<()> {
        if params.len() != self.v * self.v {
            return Err(invalid!("{} parameters for a bigram model of {}", params.len(), self.v * self.v));
        }
        if seq.targets.len() != seq.inputs.len() || seq.mask.len() != seq.inputs.len() {
            return Err(invalid!("sequence slices differ in length"));
        }
        Ok(())
    }
}

impl ModelWorker for BigramWorker {
    fn forward_backward(&mut self, params: &[f32], seq: &Sequence<'_>, grads: &mut [f32]) -> Result<f64> {
        self.check(params, seq)?;
        if grads.len() != params.len() {
            return Err(invalid!("gradient buffer of {} for {} parameters", grads.len(), params.len()));
        }
        grads.fill(0.0);
        let v = self.v;
        let mut loss = 0.0;
        for t in 0..seq.inputs.len() {
            let w = seq.mask[t] * seq.weight;
            if w == 0.0 {
                continue;
            }
            let (a, b) = (seq.inputs[t], seq.targets[t]);
            loss += w as f64 * self.row(params, a, b)?;
            let g = &mut grads[a as usize * v..(a as usize + 1) * v];
            for (gi, &p) in g.iter_mut().zip(&self.probs) {
                *gi += w * p;
            }
            g[b as usize] -= w;
        }
        Ok(loss)
    }

    fn loss(&mut self, params: &[f32], seq: &Sequence<'_>) -> Result<f64> {
        self.check(params, seq)?;
        let mut loss = 0.0;
        for t in 0..seq.inputs.len() {
            let w = seq.mask[t] * seq.weight;
            if w != 0.0 {
                loss += w as f64 * self.row(params, seq.inputs[t], seq.targets[t])?;
            }
        }
        Ok(loss)
    }
}
