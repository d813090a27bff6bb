//! Text generation: temperature sampling from a prompt.

use super::batch::SplitMix64;
use super::transformer::Transformer;
use crate::error::{invalid, Result};

/// Continues `prompt` by `max_new` tokens. Each token is drawn from the
/// softmax of the last position's logits divided by `temperature`
/// (0 = always the most likely token), with a generator seeded by `seed`,
/// so the same call gives the same text. The context is the last
/// `max_seq_len` tokens. Returns only the new tokens.
pub fn generate(
    model: &Transformer,
    params: &[f32],
    prompt: &[u32],
    max_new: usize,
    temperature: f32,
    seed: u64,
) -> Result<Vec<u32>> {
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(invalid!("temperature must be finite and >= 0, got {temperature}"));
    }
    if prompt.is_empty() {
        return Err(invalid!("the prompt must hold at least one token"));
    }
    // Activations only for the longest context this call can see.
    let window = model.config().max_seq_len.min(prompt.len().saturating_add(max_new)).max(1);
    let mut ws = model.workspace(window)?;
    let mut rng = SplitMix64::new(seed);
    let mut context: Vec<u32> = prompt.to_vec();
    let mut out = Vec::with_capacity(max_new);
    let mut probs = vec![0.0f64; model.config().vocab_size];
    for _ in 0..max_new {
        let start = context.len().saturating_sub(window);
        let logits = model.last_logits(params, &mut ws, &context[start..])?;
        let next = if temperature == 0.0 {
            argmax(logits)
        } else {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let mut sum = 0.0;
            for (p, &l) in probs.iter_mut().zip(logits) {
                *p = ((l as f64 - max) / temperature as f64).exp();
                sum += *p;
            }
            let mut r = rng.next_f64() * sum;
            let mut pick = probs.len() - 1;
            for (i, &p) in probs.iter().enumerate() {
                if r < p {
                    pick = i;
                    break;
                }
                r -= p;
            }
            pick
        };
        out.push(next as u32);
        context.push(next as u32);
    }
    Ok(out)
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
