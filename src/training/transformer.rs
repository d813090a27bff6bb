//! A decoder-only transformer language model (pre-norm GPT-2), fp32, with a
//! hand-written backward pass: the per-sequence compute kernel of the
//! data-parallel trainer.
//!
//! ```text
//! x = wte[token] + wpe[pos]
//! for each block: x = x + attn_proj(causal_mha(ln1(x)))
//!                 x = x + fc_proj(gelu(fc(ln2(x))))
//! logits = lnf(x) · wteᵀ          (tied to the token embedding)
//! loss   = Σ_t weights[t] · cross_entropy(logits[t], targets[t])
//! ```
//!
//! All parameters live in one flat `&[f32]` described by
//! [`Transformer::tensors`]; gradients use the same layout. A [`Workspace`]
//! holds every activation of one sequence, so a call allocates nothing, and
//! each worker thread owns its own. Results are bit-identical from run to run
//! and from thread to thread on one machine (see [`super::ops`]).
//!
//! # Performance
//!
//! `forward_backward` on one AMD Zen 5 core (AVX-512 path), best 0.25 s
//! window of `bench_forward_backward_throughput` on a shared machine:
//! V=256 C=128 L=2 H=4 F=512 T=64 ≈ 70,000–77,000 tokens/s (≈ 200 GFLOP/s);
//! V=256 C=256 L=4 H=4 F=1024 T=128 ≈ 8,800 tokens/s (≈ 185 GFLOP/s). About
//! 85% of the time is in the GEMMs, which run at 180–270 GFLOP/s on these
//! shapes; run `cargo test --release --lib training:: -- --ignored
//! --nocapture bench_` for the figures on another machine.

use super::ops::{self, Attention, Linear, GEMM_PACK_LEN};
use crate::error::{invalid, Result};
use std::ops::Range;

/// Largest parameter count accepted (2³¹ floats, 8 GiB).
const MAX_PARAMS: usize = 1 << 31;
/// Largest workspace accepted, in floats (16 GiB).
const MAX_WORKSPACE: usize = 1 << 32;
/// Standard deviation of the initial weights, as GPT-2.
const INIT_STD: f64 = 0.02;

/// Shape of a [`Transformer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformerConfig {
    /// Number of token ids (rows of the embedding and of the output).
    pub vocab_size: usize,
    /// Width of the residual stream (channels).
    pub dim: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block; must divide `dim`.
    pub heads: usize,
    /// Hidden width of the MLP.
    pub ff_dim: usize,
    /// Longest sequence (rows of the position embedding).
    pub max_seq_len: usize,
}

impl TransformerConfig {
    /// Checks that every field is at least 1, `heads` divides `dim`, and the
    /// parameter count neither overflows nor exceeds 2³¹ floats.
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("vocab_size", self.vocab_size),
            ("dim", self.dim),
            ("layers", self.layers),
            ("heads", self.heads),
            ("ff_dim", self.ff_dim),
            ("max_seq_len", self.max_seq_len),
        ];
        for (name, value) in fields {
            if value == 0 {
                return Err(invalid!("transformer config: {name} must be at least 1"));
            }
        }
        if !self.dim.is_multiple_of(self.heads) {
            return Err(invalid!("transformer config: heads ({}) must divide dim ({})", self.heads, self.dim));
        }
        match self.param_count() {
            Some(n) if n <= MAX_PARAMS => Ok(()),
            _ => Err(invalid!(
                "transformer config: vocab_size {}, dim {}, layers {}, ff_dim {} and max_seq_len {} need more than 2^31 parameters",
                self.vocab_size,
                self.dim,
                self.layers,
                self.ff_dim,
                self.max_seq_len
            )),
        }
    }

    /// Total parameters, `None` on overflow.
    fn param_count(&self) -> Option<usize> {
        let (c, f) = (self.dim, self.ff_dim);
        let cc = c.checked_mul(c)?;
        let cf = c.checked_mul(f)?;
        // ln1, qkv, attn proj, ln2, fc, fc proj (weights and biases).
        let layer = [2 * c as u128, 3 * cc as u128 + 3 * c as u128, cc as u128 + c as u128, 2 * c as u128]
            .into_iter()
            .chain([cf as u128 + f as u128, cf as u128 + c as u128])
            .sum::<u128>();
        let total = (self.vocab_size as u128 + self.max_seq_len as u128) * c as u128
            + layer * self.layers as u128
            + 2 * c as u128;
        usize::try_from(total).ok()
    }
}

/// One named tensor inside the flat parameter vector.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamTensor {
    /// GPT-2 style name, e.g. `"wte"`, `"h.0.attn.qkv.weight"`, `"lnf.bias"`.
    pub name: String,
    /// Shape, outermost first (`[out, in]` for weight matrices).
    pub shape: Vec<usize>,
    /// First element in the flat vector.
    pub offset: usize,
    /// Number of elements (product of `shape`).
    pub len: usize,
    /// Whether weight decay applies: 2-D weights and embeddings, not biases or layer-norm parameters.
    pub decay: bool,
}

/// A contiguous range of the flat parameter vector.
#[derive(Debug, Clone, Copy)]
struct Span {
    off: usize,
    len: usize,
}

impl Span {
    fn of<'a>(&self, v: &'a [f32]) -> &'a [f32] {
        &v[self.off..self.off + self.len]
    }
}

/// Two adjacent tensors (`a` directly before `b`) as disjoint mutable slices.
fn pair_mut(v: &mut [f32], a: Span, b: Span) -> (&mut [f32], &mut [f32]) {
    debug_assert_eq!(a.off + a.len, b.off);
    let (x, y) = v[a.off..b.off + b.len].split_at_mut(a.len);
    (x, y)
}

/// Where one block's parameters live.
#[derive(Debug, Clone, Copy)]
struct Block {
    ln1w: Span,
    ln1b: Span,
    qkvw: Span,
    qkvb: Span,
    projw: Span,
    projb: Span,
    ln2w: Span,
    ln2b: Span,
    fcw: Span,
    fcb: Span,
    fcprojw: Span,
    fcprojb: Span,
}

/// How [`Transformer::init_params`] fills a tensor.
#[derive(Debug, Clone, Copy)]
enum Init {
    Normal(f64),
    One,
    Zero,
}

/// The model: its configuration and the layout of its flat parameter vector.
/// It holds no parameters itself, so one instance serves every thread.
#[derive(Debug, Clone)]
pub struct Transformer {
    config: TransformerConfig,
    tensors: Vec<ParamTensor>,
    inits: Vec<Init>,
    num_params: usize,
    wte: Span,
    wpe: Span,
    blocks: Vec<Block>,
    lnfw: Span,
    lnfb: Span,
}

/// Appends tensors to the table, assigning consecutive offsets.
struct LayoutBuilder {
    tensors: Vec<ParamTensor>,
    inits: Vec<Init>,
    next: usize,
}

impl LayoutBuilder {
    fn add(&mut self, name: String, shape: &[usize], init: Init) -> Span {
        let len = shape.iter().product();
        let span = Span { off: self.next, len };
        self.tensors.push(ParamTensor { name, shape: shape.to_vec(), offset: self.next, len, decay: shape.len() == 2 });
        self.inits.push(init);
        self.next += len;
        span
    }
}

/// Which logits the forward pass computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logits {
    All,
    Last,
}

impl Transformer {
    /// Validates `config` and lays out the parameters: `wte`, `wpe`, then for
    /// each block `h.{l}.ln1.{weight,bias}`, `h.{l}.attn.qkv.{weight,bias}`,
    /// `h.{l}.attn.proj.{weight,bias}`, `h.{l}.ln2.{weight,bias}`,
    /// `h.{l}.mlp.fc.{weight,bias}`, `h.{l}.mlp.proj.{weight,bias}`, then
    /// `lnf.{weight,bias}`, with no gaps.
    pub fn new(config: TransformerConfig) -> Result<Transformer> {
        config.validate()?;
        let TransformerConfig { vocab_size: v, dim: c, layers, ff_dim: f, max_seq_len: tm, .. } = config;
        let residual_std = INIT_STD / ((2 * layers) as f64).sqrt();
        let normal = Init::Normal(INIT_STD);
        let mut b = LayoutBuilder { tensors: Vec::new(), inits: Vec::new(), next: 0 };
        let wte = b.add("wte".into(), &[v, c], normal);
        let wpe = b.add("wpe".into(), &[tm, c], normal);
        let blocks = (0..layers)
            .map(|l| Block {
                ln1w: b.add(format!("h.{l}.ln1.weight"), &[c], Init::One),
                ln1b: b.add(format!("h.{l}.ln1.bias"), &[c], Init::Zero),
                qkvw: b.add(format!("h.{l}.attn.qkv.weight"), &[3 * c, c], normal),
                qkvb: b.add(format!("h.{l}.attn.qkv.bias"), &[3 * c], Init::Zero),
                projw: b.add(format!("h.{l}.attn.proj.weight"), &[c, c], Init::Normal(residual_std)),
                projb: b.add(format!("h.{l}.attn.proj.bias"), &[c], Init::Zero),
                ln2w: b.add(format!("h.{l}.ln2.weight"), &[c], Init::One),
                ln2b: b.add(format!("h.{l}.ln2.bias"), &[c], Init::Zero),
                fcw: b.add(format!("h.{l}.mlp.fc.weight"), &[f, c], normal),
                fcb: b.add(format!("h.{l}.mlp.fc.bias"), &[f], Init::Zero),
                fcprojw: b.add(format!("h.{l}.mlp.proj.weight"), &[c, f], Init::Normal(residual_std)),
                fcprojb: b.add(format!("h.{l}.mlp.proj.bias"), &[c], Init::Zero),
            })
            .collect();
        let lnfw = b.add("lnf.weight".into(), &[c], Init::One);
        let lnfb = b.add("lnf.bias".into(), &[c], Init::Zero);
        debug_assert_eq!(Some(b.next), config.param_count());
        Ok(Transformer { config, tensors: b.tensors, inits: b.inits, num_params: b.next, wte, wpe, blocks, lnfw, lnfb })
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// Length of the flat parameter (and gradient) vector.
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// The tensor table, in layout order; the tensors tile `0..num_params()`.
    pub fn tensors(&self) -> &[ParamTensor] {
        &self.tensors
    }

    /// Fills `params` deterministically from `seed`: weights and embeddings
    /// N(0, 0.02), the two residual output projections (`attn.proj`,
    /// `mlp.proj`) N(0, 0.02/√(2·layers)), layer-norm weights 1, biases 0.
    /// The generator (splitmix64 + Box-Muller) is written here so the values
    /// never change with a dependency's version.
    ///
    /// # Panics
    /// If `params.len() != num_params()` (the signature has no error path).
    pub fn init_params(&self, params: &mut [f32], seed: u64) {
        assert_eq!(params.len(), self.num_params, "init_params: params must hold num_params() floats");
        let mut rng = Normal::new(seed);
        for (t, init) in self.tensors.iter().zip(&self.inits) {
            let dst = &mut params[t.offset..t.offset + t.len];
            match *init {
                Init::Normal(std) => dst.iter_mut().for_each(|x| *x = (rng.next() * std) as f32),
                Init::One => dst.fill(1.0),
                Init::Zero => dst.fill(0.0),
            }
        }
    }

    /// Activation buffers for sequences of up to `seq_len` tokens
    /// (`1 ≤ seq_len ≤ max_seq_len`), allocated here once.
    pub fn workspace(&self, seq_len: usize) -> Result<Workspace> {
        let cfg = self.config;
        if seq_len == 0 || seq_len > cfg.max_seq_len {
            return Err(invalid!("workspace: seq_len {seq_len} must be in 1..={}", cfg.max_seq_len));
        }
        let sizes = WorkspaceSizes::new(&cfg, seq_len)
            .filter(|s| s.total() <= Some(MAX_WORKSPACE))
            .ok_or_else(|| invalid!("workspace: seq_len {seq_len} needs more than 2^32 floats of activations"))?;
        let z = |n: usize| vec![0.0f32; n];
        let (l, tm) = (cfg.layers, seq_len);
        Ok(Workspace {
            config: cfg,
            seq_len,
            res: z((l + 1) * sizes.tc),
            mid: z(l * sizes.tc),
            ln1: z(l * sizes.tc),
            ln1_mean: z(l * tm),
            ln1_rstd: z(l * tm),
            qkv: z(l * 3 * sizes.tc),
            att: z(l * sizes.att),
            atty: z(l * sizes.tc),
            ln2: z(l * sizes.tc),
            ln2_mean: z(l * tm),
            ln2_rstd: z(l * tm),
            fch: z(l * sizes.tf),
            fch_gelu: z(l * sizes.tf),
            lnf: z(sizes.tc),
            lnf_mean: z(tm),
            lnf_rstd: z(tm),
            logits: z(sizes.tv),
            dres: z(sizes.tc),
            dln: z(sizes.tc),
            dfch: z(sizes.tf),
            dqkv: z(3 * sizes.tc),
            datt: z(tm * tm),
            pack: z(GEMM_PACK_LEN),
        })
    }

    /// Forward and backward pass over one sequence of `T = inputs.len()`
    /// tokens (`1 ≤ T ≤ ws.seq_len()`, `targets` and `weights` of length T).
    /// Returns `Σ_t weights[t]·CE_t`, summed in f64 in position order, and
    /// OVERWRITES every element of `grads` (length `num_params()`) with the
    /// gradient of that loss (rows of `wpe` past T get 0).
    pub fn forward_backward(
        &self,
        params: &[f32],
        ws: &mut Workspace,
        inputs: &[u32],
        targets: &[u32],
        weights: &[f32],
        grads: &mut [f32],
    ) -> Result<f64> {
        self.check(params, ws, inputs, Some((targets, weights)))?;
        if grads.len() != self.num_params {
            return Err(invalid!("forward_backward: grads has {} floats, the model {}", grads.len(), self.num_params));
        }
        self.forward(params, ws, inputs, Logits::All);
        let (t, v) = (inputs.len(), self.config.vocab_size);
        let loss = ops::crossentropy_forward_backward(&mut ws.logits[..t * v], targets, weights, v);
        self.backward(params, ws, inputs, grads);
        Ok(loss)
    }

    /// The loss of [`Transformer::forward_backward`] (bit-identical) without
    /// the backward pass, for evaluation.
    pub fn forward_loss(
        &self,
        params: &[f32],
        ws: &mut Workspace,
        inputs: &[u32],
        targets: &[u32],
        weights: &[f32],
    ) -> Result<f64> {
        self.check(params, ws, inputs, Some((targets, weights)))?;
        self.forward(params, ws, inputs, Logits::All);
        let (t, v) = (inputs.len(), self.config.vocab_size);
        Ok(ops::crossentropy_forward(&mut ws.logits[..t * v], targets, weights, v))
    }

    /// The `vocab_size` logits after the last of `inputs` (1 to
    /// `ws.seq_len()` tokens), for sampling the next token.
    pub fn last_logits<'a>(&self, params: &[f32], ws: &'a mut Workspace, inputs: &[u32]) -> Result<&'a [f32]> {
        self.check(params, ws, inputs, None)?;
        self.forward(params, ws, inputs, Logits::Last);
        Ok(&ws.logits[..self.config.vocab_size])
    }

    /// Rejects every argument the kernels would otherwise panic on.
    fn check(&self, params: &[f32], ws: &Workspace, inputs: &[u32], labels: Option<(&[u32], &[f32])>) -> Result<()> {
        let (t, v) = (inputs.len(), self.config.vocab_size);
        if ws.config != self.config {
            return Err(invalid!("workspace was made for a different model configuration"));
        }
        if params.len() != self.num_params {
            return Err(invalid!("params has {} floats, the model {}", params.len(), self.num_params));
        }
        if t == 0 || t > ws.seq_len {
            return Err(invalid!("sequence length {t} must be in 1..={} (the workspace's seq_len)", ws.seq_len));
        }
        if let Some(pos) = inputs.iter().position(|&x| x as usize >= v) {
            return Err(invalid!("inputs[{pos}] = {} is not below vocab_size {v}", inputs[pos]));
        }
        if let Some((targets, weights)) = labels {
            if targets.len() != t || weights.len() != t {
                return Err(invalid!(
                    "targets ({}) and weights ({}) must have the length of inputs ({t})",
                    targets.len(),
                    weights.len()
                ));
            }
            if let Some(pos) = targets.iter().position(|&x| x as usize >= v) {
                return Err(invalid!("targets[{pos}] = {} is not below vocab_size {v}", targets[pos]));
            }
        }
        Ok(())
    }

    /// Runs the blocks, the final layer norm and the projection, keeping
    /// every activation the backward pass needs in `ws`.
    fn forward(&self, params: &[f32], ws: &mut Workspace, inputs: &[u32], logits: Logits) {
        let TransformerConfig { vocab_size: v, dim: c, heads, ff_dim: f, .. } = self.config;
        let (t, tm) = (inputs.len(), ws.seq_len);
        let tc = t * c;
        let p = |s: Span| s.of(params);
        ops::embedding_forward(&mut ws.res[..tc], inputs, p(self.wte), p(self.wpe), c);
        for (l, blk) in self.blocks.iter().enumerate() {
            let r = LayerRanges::new(&self.config, l, t, tm);
            let (done, next) = ws.res.split_at_mut(r.out.start);
            let (x, y) = (&done[r.x.clone()], &mut next[..tc]);
            let (h1, m1, r1) =
                (&mut ws.ln1[r.tc.clone()], &mut ws.ln1_mean[r.t.clone()], &mut ws.ln1_rstd[r.t.clone()]);
            let (q, a, ay) = (&mut ws.qkv[r.qkv.clone()], &mut ws.att[r.att.clone()], &mut ws.atty[r.tc.clone()]);
            let (xm, h2) = (&mut ws.mid[r.tc.clone()], &mut ws.ln2[r.tc.clone()]);
            let (m2, r2) = (&mut ws.ln2_mean[r.t.clone()], &mut ws.ln2_rstd[r.t.clone()]);
            let (fh, fg) = (&mut ws.fch[r.tf.clone()], &mut ws.fch_gelu[r.tf.clone()]);

            ops::layernorm_forward(h1, m1, r1, x, p(blk.ln1w), p(blk.ln1b));
            ops::matmul_forward(Linear { t, c, oc: 3 * c }, q, h1, p(blk.qkvw), Some(p(blk.qkvb)), false, &mut ws.pack);
            ops::attention_forward(Attention { t, c, heads }, ay, a, q, &mut ws.pack);
            // Residual adds are fused: start from x, accumulate the projection.
            xm.copy_from_slice(x);
            ops::matmul_forward(Linear { t, c, oc: c }, xm, ay, p(blk.projw), Some(p(blk.projb)), true, &mut ws.pack);
            ops::layernorm_forward(h2, m2, r2, xm, p(blk.ln2w), p(blk.ln2b));
            ops::matmul_forward(Linear { t, c, oc: f }, fh, h2, p(blk.fcw), Some(p(blk.fcb)), false, &mut ws.pack);
            ops::gelu_forward(fg, fh);
            y.copy_from_slice(xm);
            ops::matmul_forward(
                Linear { t, c: f, oc: c },
                y,
                fg,
                p(blk.fcprojw),
                Some(p(blk.fcprojb)),
                true,
                &mut ws.pack,
            );
        }
        let last = self.blocks.len() * tm * c;
        let xf = &ws.res[last..][..tc];
        let (lnf, lnf_mean, lnf_rstd) = (&mut ws.lnf[..tc], &mut ws.lnf_mean[..t], &mut ws.lnf_rstd[..t]);
        ops::layernorm_forward(lnf, lnf_mean, lnf_rstd, xf, p(self.lnfw), p(self.lnfb));
        match logits {
            Logits::All => {
                ops::projection_forward(Linear { t, c, oc: v }, &mut ws.logits[..t * v], lnf, p(self.wte), &mut ws.pack)
            }
            Logits::Last => {
                let row = &lnf[(t - 1) * c..];
                ops::projection_forward(Linear { t: 1, c, oc: v }, &mut ws.logits[..v], row, p(self.wte), &mut ws.pack)
            }
        }
    }

    /// Backward pass after [`Self::forward`] and the cross-entropy gradient
    /// (left in `ws.logits`); overwrites all of `grads`.
    fn backward(&self, params: &[f32], ws: &mut Workspace, inputs: &[u32], grads: &mut [f32]) {
        let TransformerConfig { vocab_size: v, dim: c, heads, ff_dim: f, .. } = self.config;
        let (t, tm) = (inputs.len(), ws.seq_len);
        let (tc, tf) = (t * c, t * f);
        let p = |s: Span| s.of(params);
        let (dres, dln, dfch) = (&mut ws.dres[..tc], &mut ws.dln[..tc], &mut ws.dfch[..tf]);
        let (dqkv, datt) = (&mut ws.dqkv[..3 * tc], &mut ws.datt[..t * t]);

        let (gwte, _) = pair_mut(grads, self.wte, self.wpe);
        ops::projection_backward(Linear { t, c, oc: v }, dln, gwte, &ws.logits[..t * v], &ws.lnf[..tc], p(self.wte));
        dres.fill(0.0);
        let (gw, gb) = pair_mut(grads, self.lnfw, self.lnfb);
        let xf = &ws.res[self.blocks.len() * tm * c..][..tc];
        ops::layernorm_backward(dres, gw, gb, dln, xf, p(self.lnfw), &ws.lnf_mean[..t], &ws.lnf_rstd[..t]);

        for (l, blk) in self.blocks.iter().enumerate().rev() {
            let r = LayerRanges::new(&self.config, l, t, tm);
            let x = &ws.res[r.x.clone()];
            let (h1, m1, r1) = (&ws.ln1[r.tc.clone()], &ws.ln1_mean[r.t.clone()], &ws.ln1_rstd[r.t.clone()]);
            let (q, a, ay) = (&ws.qkv[r.qkv.clone()], &ws.att[r.att.clone()], &ws.atty[r.tc.clone()]);
            let (xm, h2) = (&ws.mid[r.tc.clone()], &ws.ln2[r.tc.clone()]);
            let (m2, r2) = (&ws.ln2_mean[r.t.clone()], &ws.ln2_rstd[r.t.clone()]);
            let (fh, fg) = (&ws.fch[r.tf.clone()], &ws.fch_gelu[r.tf.clone()]);

            // dres holds d(loss)/d(block output); it flows unchanged to the
            // block input through both residual adds, plus each branch's share.
            let (gw, gb) = pair_mut(grads, blk.fcprojw, blk.fcprojb);
            ops::matmul_backward(Linear { t, c: f, oc: c }, dfch, gw, Some(gb), dres, fg, p(blk.fcprojw));
            ops::gelu_backward(dfch, fh);
            let (gw, gb) = pair_mut(grads, blk.fcw, blk.fcb);
            ops::matmul_backward(Linear { t, c, oc: f }, dln, gw, Some(gb), dfch, h2, p(blk.fcw));
            let (gw, gb) = pair_mut(grads, blk.ln2w, blk.ln2b);
            ops::layernorm_backward(dres, gw, gb, dln, xm, p(blk.ln2w), m2, r2);

            let (gw, gb) = pair_mut(grads, blk.projw, blk.projb);
            ops::matmul_backward(Linear { t, c, oc: c }, dln, gw, Some(gb), dres, ay, p(blk.projw));
            ops::attention_backward(Attention { t, c, heads }, dqkv, datt, dln, q, a, &mut ws.pack);
            let (gw, gb) = pair_mut(grads, blk.qkvw, blk.qkvb);
            ops::matmul_backward(Linear { t, c, oc: 3 * c }, dln, gw, Some(gb), dqkv, h1, p(blk.qkvw));
            let (gw, gb) = pair_mut(grads, blk.ln1w, blk.ln1b);
            ops::layernorm_backward(dres, gw, gb, dln, x, p(blk.ln1w), m1, r1);
        }
        let (gwte, gwpe) = pair_mut(grads, self.wte, self.wpe);
        ops::embedding_backward(gwte, gwpe, dres, inputs, c);
    }
}

/// Where layer `l`'s saved activations sit in the workspace buffers, for a
/// sequence of `t` tokens in a workspace of `tm` positions (each layer owns
/// a `tm`-sized stretch of every buffer; a sequence uses its first `t`).
struct LayerRanges {
    /// The layer's input in `res`.
    x: Range<usize>,
    /// The layer's output stretch of `res` (the next layer's input).
    out: Range<usize>,
    /// `t × C` stretches: ln1, atty, mid, ln2.
    tc: Range<usize>,
    /// `t` stretches: layer-norm means and reciprocal deviations.
    t: Range<usize>,
    /// `t × 3C` in qkv.
    qkv: Range<usize>,
    /// `heads × t × t` in att.
    att: Range<usize>,
    /// `t × F` stretches: fch, fch_gelu.
    tf: Range<usize>,
}

impl LayerRanges {
    fn new(cfg: &TransformerConfig, l: usize, t: usize, tm: usize) -> Self {
        let (c, f, h) = (cfg.dim, cfg.ff_dim, cfg.heads);
        let span = |base: usize, len: usize| base..base + len;
        LayerRanges {
            x: span(l * tm * c, t * c),
            out: span((l + 1) * tm * c, t * c),
            tc: span(l * tm * c, t * c),
            t: span(l * tm, t),
            qkv: span(l * tm * 3 * c, 3 * t * c),
            att: span(l * h * tm * tm, h * t * t),
            tf: span(l * tm * f, t * f),
        }
    }
}

/// Per-layer buffer sizes of a workspace, with overflow checks.
struct WorkspaceSizes {
    tc: usize,
    tf: usize,
    tv: usize,
    att: usize,
    layers: usize,
    tm: usize,
}

impl WorkspaceSizes {
    fn new(cfg: &TransformerConfig, tm: usize) -> Option<Self> {
        Some(WorkspaceSizes {
            tc: tm.checked_mul(cfg.dim)?,
            tf: tm.checked_mul(cfg.ff_dim)?,
            tv: tm.checked_mul(cfg.vocab_size)?,
            att: tm.checked_mul(tm)?.checked_mul(cfg.heads)?,
            layers: cfg.layers,
            tm,
        })
    }

    /// Floats of every buffer together, `None` on overflow.
    fn total(&self) -> Option<usize> {
        // Per layer: res, mid, ln1, atty, ln2 (5·tc), qkv (3·tc), fch and gelu (2·tf), att, 4 stats of tm.
        let per_layer = self
            .tc
            .checked_mul(8)?
            .checked_add(self.tf.checked_mul(2)?)?
            .checked_add(self.att)?
            .checked_add(self.tm.checked_mul(4)?)?;
        // Plus: last res, lnf, dres, dln (4·tc), dqkv (3·tc), dfch, logits, datt, stats, pack.
        let fixed = self
            .tc
            .checked_mul(7)?
            .checked_add(self.tf)?
            .checked_add(self.tv)?
            .checked_add(self.tm.checked_mul(self.tm)?)?
            .checked_add(2 * self.tm)?
            .checked_add(GEMM_PACK_LEN)?;
        per_layer.checked_mul(self.layers)?.checked_add(fixed)
    }
}

/// Activations of one sequence for one [`Transformer`] configuration, made
/// by [`Transformer::workspace`]. Buffers are sized for `seq_len` positions
/// and shorter sequences use their prefix; nothing is allocated after
/// creation. Each thread needs its own.
pub struct Workspace {
    config: TransformerConfig,
    seq_len: usize,
    res: Vec<f32>,
    mid: Vec<f32>,
    ln1: Vec<f32>,
    ln1_mean: Vec<f32>,
    ln1_rstd: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    atty: Vec<f32>,
    ln2: Vec<f32>,
    ln2_mean: Vec<f32>,
    ln2_rstd: Vec<f32>,
    fch: Vec<f32>,
    fch_gelu: Vec<f32>,
    lnf: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    logits: Vec<f32>,
    dres: Vec<f32>,
    dln: Vec<f32>,
    dfch: Vec<f32>,
    dqkv: Vec<f32>,
    datt: Vec<f32>,
    pack: Vec<f32>,
}

impl Workspace {
    /// The longest sequence this workspace holds.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
}

impl std::fmt::Debug for Workspace {
    // The buffers hold megabytes of activations: show the shape only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("config", &self.config)
            .field("seq_len", &self.seq_len)
            .finish_non_exhaustive()
    }
}

/// Standard normal samples: splitmix64 for uniform bits, Box-Muller for the
/// transform (both values of each pair are used).
struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Normal { state: seed, spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so the logarithm below is finite.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn next(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::super::ops::reference as r;
    use super::*;
    use crate::error::Error;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::time::{Duration, Instant};

    fn cfg(
        vocab_size: usize,
        dim: usize,
        layers: usize,
        heads: usize,
        ff_dim: usize,
        max_seq_len: usize,
    ) -> TransformerConfig {
        TransformerConfig { vocab_size, dim, layers, heads, ff_dim, max_seq_len }
    }

    fn tokens(rng: &mut StdRng, n: usize, v: usize) -> Vec<u32> {
        (0..n).map(|_| rng.gen_range(0..v as u32)).collect()
    }

    /// The whole model in f64 from the reference layers.
    fn reference_loss(m: &Transformer, params: &[f64], inputs: &[u32], targets: &[u32], weights: &[f32]) -> f64 {
        let TransformerConfig { vocab_size: v, dim: c, layers, heads, ff_dim: f, .. } = m.config;
        let t = inputs.len();
        let get = |name: &str| {
            let p = m.tensors.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
            &params[p.offset..p.offset + p.len]
        };
        let add = |x: &mut Vec<f64>, y: Vec<f64>| x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
        let mut x = r::embedding(inputs, get("wte"), get("wpe"), c);
        for l in 0..layers {
            let g = |s: &str| get(&format!("h.{l}.{s}"));
            let h = r::layernorm(&x, g("ln1.weight"), g("ln1.bias"));
            let qkv = r::linear(&h, g("attn.qkv.weight"), Some(g("attn.qkv.bias")), c, 3 * c);
            let a = r::attention(&qkv, t, c, heads);
            add(&mut x, r::linear(&a, g("attn.proj.weight"), Some(g("attn.proj.bias")), c, c));
            let h = r::layernorm(&x, g("ln2.weight"), g("ln2.bias"));
            let u = r::gelu(&r::linear(&h, g("mlp.fc.weight"), Some(g("mlp.fc.bias")), c, f));
            add(&mut x, r::linear(&u, g("mlp.proj.weight"), Some(g("mlp.proj.bias")), f, c));
        }
        let h = r::layernorm(&x, get("lnf.weight"), get("lnf.bias"));
        r::crossentropy(&r::linear(&h, get("wte"), None, c, v), targets, weights, v)
    }

    /// Parameters far from the init (so every nonlinearity is exercised):
    /// uniform ±0.5, layer-norm weights around 1.
    fn random_params(m: &Transformer, rng: &mut StdRng) -> Vec<f32> {
        let mut p: Vec<f32> = (0..m.num_params()).map(|_| rng.gen_range(-0.5..0.5)).collect();
        for t in m.tensors().iter().filter(|t| t.name.contains("ln") && t.name.ends_with("weight")) {
            p[t.offset..t.offset + t.len].iter_mut().for_each(|x| *x += 1.0);
        }
        p
    }

    #[test]
    fn layout_names_shapes_and_decay() {
        let m = Transformer::new(cfg(11, 8, 2, 2, 16, 7)).unwrap();
        let mut next = 0;
        for t in m.tensors() {
            assert_eq!(t.offset, next, "{} is not contiguous", t.name);
            assert_eq!(t.len, t.shape.iter().product::<usize>());
            assert_eq!(t.decay, t.shape.len() == 2, "{}", t.name);
            next += t.len;
        }
        assert_eq!(next, m.num_params());
        let names: Vec<&str> = m.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(&names[..4], ["wte", "wpe", "h.0.ln1.weight", "h.0.ln1.bias"]);
        assert_eq!(names[names.len() - 2..], ["lnf.weight", "lnf.bias"]);
        let qkv = m.tensors().iter().find(|t| t.name == "h.1.attn.qkv.weight").unwrap();
        assert_eq!(qkv.shape, [24, 8]);
        assert_eq!(m.num_params(), 11 * 8 + 7 * 8 + 2 * (16 + 24 * 8 + 24 + 64 + 8 + 16 + 128 + 16 + 128 + 8) + 16);
    }

    #[test]
    fn init_is_deterministic_with_the_documented_statistics() {
        let m = Transformer::new(cfg(256, 64, 4, 4, 256, 32)).unwrap();
        let (mut a, mut b, mut c) = (vec![0.0; m.num_params()], vec![0.0; m.num_params()], vec![0.0; m.num_params()]);
        m.init_params(&mut a, 7);
        m.init_params(&mut b, 7);
        m.init_params(&mut c, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        for t in m.tensors() {
            let x = &a[t.offset..t.offset + t.len];
            let std = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
            if t.name.ends_with("bias") {
                assert!(x.iter().all(|&v| v == 0.0), "{}", t.name);
            } else if t.name.contains("ln") {
                assert!(x.iter().all(|&v| v == 1.0), "{}", t.name);
            } else {
                let want = if t.name.ends_with("proj.weight") { 0.02 / 8f64.sqrt() } else { 0.02 };
                assert!((std / want - 1.0).abs() < 0.05, "{}: std {std} vs {want}", t.name);
            }
        }
    }

    #[test]
    fn whole_model_gradient_matches_finite_differences() {
        let mut rng = StdRng::seed_from_u64(21);
        let m = Transformer::new(cfg(11, 8, 2, 2, 16, 7)).unwrap();
        let params = random_params(&m, &mut rng);
        let (inputs, targets) = (tokens(&mut rng, 5, 11), tokens(&mut rng, 5, 11));
        let weights = [1.0, 0.5, 2.0, 0.0, 1.0];
        let mut ws = m.workspace(7).unwrap();
        let mut grads = vec![f32::NAN; m.num_params()];
        let loss = m.forward_backward(&params, &mut ws, &inputs, &targets, &weights, &mut grads).unwrap();
        let pd: Vec<f64> = params.iter().map(|&x| x as f64).collect();
        let want = reference_loss(&m, &pd, &inputs, &targets, &weights);
        assert!((loss - want).abs() <= 1e-5 * want, "loss {loss} vs reference {want}");
        // Every parameter, against central differences of the f64 model.
        let numeric = r::numeric_grad(&pd, 1e-5, |p| reference_loss(&m, p, &inputs, &targets, &weights));
        for t in m.tensors() {
            let (a, n) = (&grads[t.offset..t.offset + t.len], &numeric[t.offset..t.offset + t.len]);
            if t.name == "wpe" {
                // Positions past T get exactly zero; the rest are checked.
                assert!(a[5 * 8..].iter().all(|&g| g == 0.0));
                r::assert_grad_close("wpe", &a[..5 * 8], &n[..5 * 8], 2e-3);
            } else {
                r::assert_grad_close(&t.name, a, n, 2e-3);
            }
        }
    }

    #[test]
    fn fast_path_agrees_with_the_portable_path_at_realistic_sizes() {
        // F = 1024 splits the packed B into column blocks and the fc
        // projection's depth into k-blocks; T = 64 gives full register tiles.
        let mut rng = StdRng::seed_from_u64(27);
        let m = Transformer::new(cfg(256, 128, 1, 4, 1024, 64)).unwrap();
        let mut params = vec![0.0; m.num_params()];
        m.init_params(&mut params, 5);
        params.iter_mut().for_each(|p| *p += rng.gen_range(-0.05..0.05));
        let (inputs, targets) = (tokens(&mut rng, 64, 256), tokens(&mut rng, 64, 256));
        let run = || {
            let mut ws = m.workspace(64).unwrap();
            let mut grads = vec![0.0; m.num_params()];
            let loss = m.forward_backward(&params, &mut ws, &inputs, &targets, &[1.0; 64], &mut grads).unwrap();
            (loss, grads)
        };
        let (loss, fast) = run();
        let (want, portable) = ops::on_portable_path(run);
        assert!((loss - want).abs() <= 1e-5 * want, "{loss} vs {want}");
        for t in m.tensors() {
            let (a, b) = (&fast[t.offset..t.offset + t.len], &portable[t.offset..t.offset + t.len]);
            let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
            let (a, b64) = if t.name == "wpe" { (&a[..64 * 128], &b64[..64 * 128]) } else { (a, &b64[..]) };
            r::assert_grad_close(&t.name, a, b64, 1e-3);
        }
    }

    #[test]
    fn loss_at_init_is_about_ln_vocab() {
        let mut rng = StdRng::seed_from_u64(22);
        let m = Transformer::new(cfg(256, 64, 2, 4, 256, 64)).unwrap();
        let mut params = vec![0.0; m.num_params()];
        m.init_params(&mut params, 1);
        let mut ws = m.workspace(64).unwrap();
        let (inputs, targets) = (tokens(&mut rng, 64, 256), tokens(&mut rng, 64, 256));
        let loss = m.forward_loss(&params, &mut ws, &inputs, &targets, &[1.0; 64]).unwrap() / 64.0;
        assert!((loss - 256f64.ln()).abs() < 0.1, "loss at init {loss} vs ln 256 = {}", 256f64.ln());
    }

    #[test]
    fn results_are_bit_identical_across_runs_threads_and_entry_points() {
        let mut rng = StdRng::seed_from_u64(23);
        let m = Transformer::new(cfg(64, 48, 2, 3, 96, 40)).unwrap();
        let mut params = vec![0.0; m.num_params()];
        m.init_params(&mut params, 2);
        let (inputs, targets) = (tokens(&mut rng, 37, 64), tokens(&mut rng, 37, 64));
        let weights: Vec<f32> = (0..37).map(|i| 1.0 / (1 + i % 3) as f32).collect();
        let run = |grads_fill: f32| {
            let mut ws = m.workspace(40).unwrap();
            let mut grads = vec![grads_fill; m.num_params()];
            let loss = m.forward_backward(&params, &mut ws, &inputs, &targets, &weights, &mut grads).unwrap();
            (loss.to_bits(), grads.iter().map(|g| g.to_bits()).collect::<Vec<_>>())
        };
        let first = run(0.0);
        // Garbage in grads (NaN, huge) is fully overwritten.
        assert!(first == run(f32::NAN));
        assert!(first == run(1e30));
        let other_thread = std::thread::scope(|s| s.spawn(|| run(-3.0)).join().unwrap());
        assert!(first == other_thread);
        // Reusing a workspace that held a longer sequence changes nothing.
        let mut ws = m.workspace(40).unwrap();
        let long = tokens(&mut rng, 40, 64);
        let mut grads = vec![0.0; m.num_params()];
        m.forward_backward(&params, &mut ws, &long, &long, &[1.0; 40], &mut grads).unwrap();
        let loss = m.forward_backward(&params, &mut ws, &inputs, &targets, &weights, &mut grads).unwrap();
        assert_eq!((loss.to_bits(), grads.iter().map(|g| g.to_bits()).collect::<Vec<_>>()), first);
        let eval = m.forward_loss(&params, &mut ws, &inputs, &targets, &weights).unwrap();
        assert_eq!(eval.to_bits(), first.0);
    }

    #[test]
    fn last_logits_match_the_full_forward() {
        let mut rng = StdRng::seed_from_u64(24);
        let m = Transformer::new(cfg(50, 32, 2, 4, 64, 16)).unwrap();
        let params = random_params(&m, &mut rng);
        let inputs = tokens(&mut rng, 9, 50);
        let mut ws = m.workspace(16).unwrap();
        let last = m.last_logits(&params, &mut ws, &inputs).unwrap().to_vec();
        assert_eq!(last.len(), 50);
        m.forward(&params, &mut ws, &inputs, Logits::All);
        let full = &ws.logits[8 * 50..9 * 50];
        for (a, b) in last.iter().zip(full) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        // Causality: the logits at position 4 do not depend on later tokens.
        let mut other = inputs.clone();
        other[6] = (other[6] + 1) % 50;
        let a = m.last_logits(&params, &mut ws, &inputs[..5]).unwrap().to_vec();
        let b = m.last_logits(&params, &mut ws, &other[..5]).unwrap().to_vec();
        assert_eq!(a, b);
    }

    #[test]
    fn tiny_model_overfits_one_sequence_with_sgd() {
        let mut rng = StdRng::seed_from_u64(25);
        let m = Transformer::new(cfg(32, 32, 2, 2, 64, 16)).unwrap();
        let mut params = vec![0.0; m.num_params()];
        m.init_params(&mut params, 3);
        let mut ws = m.workspace(16).unwrap();
        let (inputs, targets) = (tokens(&mut rng, 16, 32), tokens(&mut rng, 16, 32));
        let weights = [1.0 / 16.0; 16];
        let mut grads = vec![0.0; m.num_params()];
        let first = m.forward_loss(&params, &mut ws, &inputs, &targets, &weights).unwrap();
        let mut loss = first;
        for _ in 0..100 {
            loss = m.forward_backward(&params, &mut ws, &inputs, &targets, &weights, &mut grads).unwrap();
            params.iter_mut().zip(&grads).for_each(|(p, g)| *p -= 0.5 * g);
        }
        assert!((first - 32f64.ln()).abs() < 0.1, "initial loss {first}");
        assert!(loss < 0.5, "loss only fell from {first} to {loss}");
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        let bad = |c: TransformerConfig, field: &str| match c.validate() {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains(field), "{msg} should name {field}"),
            other => panic!("{c:?}: {other:?}"),
        };
        bad(cfg(0, 8, 1, 1, 8, 8), "vocab_size");
        bad(cfg(8, 0, 1, 1, 8, 8), "dim");
        bad(cfg(8, 8, 0, 1, 8, 8), "layers");
        bad(cfg(8, 8, 1, 0, 8, 8), "heads");
        bad(cfg(8, 8, 1, 1, 0, 8), "ff_dim");
        bad(cfg(8, 8, 1, 1, 8, 0), "max_seq_len");
        bad(cfg(8, 9, 1, 2, 8, 8), "heads");
        bad(cfg(usize::MAX / 2, 8, 1, 1, 8, 8), "vocab_size");
        bad(cfg(8, 1 << 40, 1, 1, 8, 8), "dim");
        bad(cfg(8, 1024, 1 << 12, 1, 4096, 8), "layers");
        assert!(Transformer::new(cfg(8, 9, 1, 2, 8, 8)).is_err());

        let m = Transformer::new(cfg(11, 8, 1, 2, 16, 6)).unwrap();
        let other = Transformer::new(cfg(11, 8, 1, 2, 16, 7)).unwrap();
        assert!(m.workspace(0).is_err() && m.workspace(7).is_err());
        let mut ws = m.workspace(4).unwrap();
        let mut ows = other.workspace(4).unwrap();
        let p = vec![0.1; m.num_params()];
        let mut g = vec![0.0; m.num_params()];
        let (x, w) = ([1u32, 2, 3], [1.0f32; 3]);
        let err = |r: Result<f64>| assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        err(m.forward_backward(&p[1..], &mut ws, &x, &x, &w, &mut g));
        err(m.forward_backward(&p, &mut ws, &x, &x, &w, &mut g[1..]));
        err(m.forward_backward(&p, &mut ws, &[], &[], &[], &mut g));
        err(m.forward_backward(&p, &mut ws, &[1; 5], &[1; 5], &[1.0; 5], &mut g));
        err(m.forward_backward(&p, &mut ws, &x, &x[..2], &w, &mut g));
        err(m.forward_backward(&p, &mut ws, &x, &x, &w[..2], &mut g));
        err(m.forward_backward(&p, &mut ws, &[1, 11, 2], &x, &w, &mut g));
        err(m.forward_backward(&p, &mut ws, &x, &[1, 2, 99], &w, &mut g));
        err(m.forward_backward(&p, &mut ows, &x, &x, &w, &mut g));
        err(m.forward_loss(&p, &mut ws, &x, &[1, 2, 11], &w));
        err(m.forward_loss(&p, &mut ws, &x, &x, &w[..1]));
        assert!(m.last_logits(&p, &mut ws, &[]).is_err());
        assert!(m.last_logits(&p, &mut ws, &[12]).is_err());
        assert!(m.last_logits(&p[..3], &mut ws, &x).is_err());
        // Still usable after the rejected calls.
        assert!(m.forward_backward(&p, &mut ws, &x, &x, &w, &mut g).unwrap().is_finite());
    }

    #[test]
    fn workspace_is_send() {
        fn send<T: Send>() {}
        send::<Workspace>();
        send::<Transformer>();
    }

    /// Tokens per second of `forward_backward` on one thread: the best of
    /// eight 0.25 s windows (≈ 2 s), so a neighbour's burst on a shared
    /// machine does not decide the figure.
    fn throughput(c: TransformerConfig, t: usize) -> f64 {
        let mut rng = StdRng::seed_from_u64(26);
        let m = Transformer::new(c).unwrap();
        let mut params = vec![0.0; m.num_params()];
        m.init_params(&mut params, 4);
        let mut ws = m.workspace(t).unwrap();
        let mut grads = vec![0.0; m.num_params()];
        let seqs: Vec<(Vec<u32>, Vec<u32>)> =
            (0..16).map(|_| (tokens(&mut rng, t, c.vocab_size), tokens(&mut rng, t, c.vocab_size))).collect();
        let weights = vec![1.0 / t as f32; t];
        let mut step = |i: usize| {
            let (x, y) = &seqs[i % seqs.len()];
            m.forward_backward(&params, &mut ws, x, y, &weights, &mut grads).unwrap()
        };
        for i in 0..20 {
            step(i);
        }
        let mut best = 0.0f64;
        let mut n = 0;
        for _ in 0..8 {
            let start = Instant::now();
            let first = n;
            while start.elapsed() < Duration::from_millis(250) {
                std::hint::black_box(step(n));
                n += 1;
            }
            best = best.max(((n - first) * t) as f64 / start.elapsed().as_secs_f64());
        }
        best
    }

    #[test]
    #[ignore = "benchmark: run with --ignored --nocapture"]
    fn bench_forward_backward_throughput() {
        let a = throughput(cfg(256, 128, 2, 4, 512, 64), 64);
        println!("config A (V=256 C=128 L=2 H=4 F=512 T=64): {a:.0} tokens/s");
        let b = throughput(cfg(256, 256, 4, 4, 1024, 128), 128);
        println!("config B (V=256 C=256 L=4 H=4 F=1024 T=128): {b:.0} tokens/s");
    }
}
