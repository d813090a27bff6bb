//! `cllm.h`: the model configuration `CLLMConfig`, the opaque model
//! `CLLMModel` (a decoder-only transformer LM), and the calls on a model:
//! parameters, checkpoints and text generation.
//!
//! Create and free models with `cllm_create_model` / `cllm_free_model`
//! (declared in `cllm_utils.h`, as in the original code base). A model may
//! be used from several threads; calls on one model are serialised, and
//! while a training epoch runs on it they wait for the epoch to end.

use super::{c_str, deref, guard};
use crate::error::{invalid, Error, Result};
use crate::training::checkpoint::{self, transformer_metadata};
use crate::training::generate::generate;
use crate::training::{GradientModel, Transformer, TransformerConfig, TransformerModel};
use parking_lot::Mutex;
use std::os::raw::{c_char, c_int};
use std::path::Path;
use std::sync::Arc;

/// Seed of the parameters of a newly created model (reproducible; change
/// it with `cllm_model_init_params`).
pub const CLLM_DEFAULT_SEED: u64 = 1337;

/// The shape of a model, as in the original `cllm.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CLLMConfig {
    /// Tokens are `0 .. vocab_size` (256 for byte-level text).
    pub vocab_size: u32,
    /// Width of the residual stream (a multiple of `num_heads`).
    pub embedding_dim: u32,
    /// Transformer blocks.
    pub num_layers: u32,
    /// Attention heads per block.
    pub num_heads: u32,
    /// Hidden width of each block's MLP; 0 = 4 x `embedding_dim`.
    pub ff_dim: u32,
    /// Longest context, in tokens (the learned position table's length).
    pub max_seq_len: u32,
    /// Accepted for layout compatibility and ignored: training is
    /// deterministic, without dropout. Must be in [0, 1).
    pub dropout: f32,
}

/// A transformer language model: its shape and its parameters. Opaque.
pub struct CLLMModel {
    pub(crate) core: Arc<ModelCore>,
}

/// The shared part of a model: training systems keep it alive.
pub(crate) struct ModelCore {
    pub(crate) net: TransformerModel,
    pub(crate) params: Mutex<Vec<f32>>,
}

impl CLLMConfig {
    /// The core configuration, checked.
    pub(crate) fn to_core(self) -> Result<TransformerConfig> {
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(invalid!("dropout must be in [0, 1), got {}", self.dropout));
        }
        let ff = if self.ff_dim == 0 { self.embedding_dim.saturating_mul(4) } else { self.ff_dim };
        let c = TransformerConfig {
            vocab_size: self.vocab_size as usize,
            dim: self.embedding_dim as usize,
            layers: self.num_layers as usize,
            heads: self.num_heads as usize,
            ff_dim: ff as usize,
            max_seq_len: self.max_seq_len as usize,
        };
        c.validate()?;
        Ok(c)
    }

    fn from_core(c: &TransformerConfig) -> CLLMConfig {
        let u = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        CLLMConfig {
            vocab_size: u(c.vocab_size),
            embedding_dim: u(c.dim),
            num_layers: u(c.layers),
            num_heads: u(c.heads),
            ff_dim: u(c.ff_dim),
            max_seq_len: u(c.max_seq_len),
            dropout: 0.0,
        }
    }
}

impl ModelCore {
    /// A model with parameters drawn from `seed`.
    pub(crate) fn new(config: TransformerConfig, seed: u64) -> Result<ModelCore> {
        let net = TransformerModel(Arc::new(Transformer::new(config)?));
        let n = net.num_params();
        let limit = crate::sys::memory_limit_bytes();
        if (n as u64).saturating_mul(4) > limit {
            return Err(Error::System(format!(
                "a model of {n} parameters does not fit in the {limit} bytes this process may use"
            )));
        }
        let mut params = Vec::new();
        params.try_reserve_exact(n).map_err(|_| Error::System(format!("out of memory for {n} parameters")))?;
        params.resize(n, 0.0);
        net.init_params(&mut params, seed)?;
        Ok(ModelCore { net, params: Mutex::new(params) })
    }

    pub(crate) fn transformer(&self) -> &Transformer {
        &self.net.0
    }

    /// Samples `max_new` tokens after `prompt` (see [`generate`]).
    fn generate(&self, prompt: &[u32], max_new: usize, temperature: f32, seed: u64) -> Result<Vec<u32>> {
        let vocab = self.transformer().config().vocab_size;
        if let Some(&t) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(invalid!("prompt token {t} is outside the vocabulary of {vocab}"));
        }
        generate(self.transformer(), &self.params.lock(), prompt, max_new, temperature, seed)
    }
}

/// # Safety
/// `m` must be NULL or a live model from this library.
pub(crate) unsafe fn model<'a>(m: *const CLLMModel) -> Result<&'a CLLMModel> {
    // SAFETY: guaranteed by the caller.
    unsafe { deref(m, "model") }
}

/// Number of parameters (floats) of `model`; 0 on error (NULL).
///
/// # Safety
/// `model` must be NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn cllm_model_num_params(model: *const CLLMModel) -> usize {
    // SAFETY: per the contract.
    guard(0, || Ok(unsafe { self::model(model) }?.core.net.num_params()))
}

/// Writes the model's configuration into `*out` (`ff_dim` resolved,
/// `dropout` 0). Returns 0, or -1 on NULL arguments.
///
/// # Safety
/// `model` must be NULL or a live model; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cllm_model_get_config(model: *const CLLMModel, out: *mut CLLMConfig) -> c_int {
    guard(-1, || {
        // SAFETY: per the contract.
        let m = unsafe { self::model(model) }?;
        // SAFETY: per the contract; NULL is rejected.
        let out = unsafe { out.as_mut() }.ok_or_else(|| invalid!("out is NULL"))?;
        *out = CLLMConfig::from_core(m.core.transformer().config());
        Ok(0)
    })
}

/// Re-draws every parameter from `seed` (deterministic: the same seed gives
/// the same parameters). Returns 0, or -1 on error.
///
/// # Safety
/// `model` must be NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn cllm_model_init_params(model: *mut CLLMModel, seed: u64) -> c_int {
    guard(-1, || {
        // SAFETY: per the contract.
        let m = unsafe { self::model(model) }?;
        m.core.net.init_params(&mut m.core.params.lock(), seed)?;
        Ok(0)
    })
}

/// Copies the flat parameter vector into `out` (`capacity` floats, at
/// least `cllm_model_num_params`). Returns the number copied, or -1.
///
/// # Safety
/// `model` must be NULL or a live model; `out` valid for `capacity` floats.
#[no_mangle]
pub unsafe extern "C" fn cllm_model_get_params(model: *const CLLMModel, out: *mut f32, capacity: usize) -> i64 {
    guard(-1, || {
        // SAFETY: per the contract.
        let m = unsafe { self::model(model) }?;
        let params = m.core.params.lock();
        // SAFETY: per the contract.
        let dst = unsafe { super::out_slice(out, capacity, params.len(), "out") }?;
        dst.copy_from_slice(&params);
        Ok(params.len() as i64)
    })
}

/// Saves the model's configuration and parameters to `path` as a
/// safetensors file. Returns 0, or -1 on error (NULL, I/O).
///
/// # Safety
/// `model` must be NULL or a live model; `path` NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn cllm_model_save(model: *const CLLMModel, path: *const c_char) -> c_int {
    guard(-1, || {
        // SAFETY: per the contract.
        let (m, path) = unsafe { (self::model(model)?, c_str(path, "path")?) };
        let meta = transformer_metadata(m.core.transformer().config());
        checkpoint::save(Path::new(path), &m.core.net, &m.core.params.lock(), None, &meta)?;
        Ok(0)
    })
}

/// Loads a model saved by `cllm_model_save` or
/// `cllm_training_save_checkpoint`. Returns a new model (free with
/// `cllm_free_model`), or NULL on error.
///
/// # Safety
/// `path` must be NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn cllm_model_load(path: *const c_char) -> *mut CLLMModel {
    guard(std::ptr::null_mut(), || {
        // SAFETY: per the contract.
        let path = Path::new(unsafe { c_str(path, "path") }?);
        let (net, loaded) = checkpoint::load_transformer(path)?;
        Ok(into_handle(ModelCore { net, params: Mutex::new(loaded.params) }))
    })
}

/// Generates up to `max_new_tokens` tokens after the `prompt_len` tokens
/// of `prompt`, sampling from softmax(logits / `temperature`) with a
/// generator seeded by `seed` (temperature 0 = greedy). Writes the new
/// tokens to `out` (`capacity` entries) and returns how many, or -1.
///
/// # Safety
/// `model` must be NULL or a live model; `prompt` valid for `prompt_len`
/// tokens; `out` valid for `capacity` tokens.
#[no_mangle]
pub unsafe extern "C" fn cllm_generate_tokens(
    model: *const CLLMModel,
    prompt: *const u32,
    prompt_len: usize,
    max_new_tokens: usize,
    temperature: f32,
    seed: u64,
    out: *mut u32,
    capacity: usize,
) -> i64 {
    guard(-1, || {
        // SAFETY: per the contract.
        let (m, prompt) = unsafe { (self::model(model)?, super::in_slice(prompt, prompt_len, "prompt")?) };
        // SAFETY: per the contract.
        let dst = unsafe { super::out_slice(out, capacity, max_new_tokens, "out") }?;
        let tokens = m.core.generate(prompt, max_new_tokens, temperature, seed)?;
        dst[..tokens.len()].copy_from_slice(&tokens);
        Ok(tokens.len() as i64)
    })
}

/// Byte-level text generation for models with `vocab_size` >= 256: the
/// prompt's bytes are its tokens; the generated bytes (tokens >= 256 are
/// written as '?') are written to `out` followed by a NUL (`capacity`
/// bytes, at least `max_new_tokens` + 1). Returns the number of bytes
/// generated (without the NUL), or -1.
///
/// # Safety
/// `model` must be NULL or a live model; `prompt` NULL or a C string;
/// `out` valid for `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn cllm_generate_text(
    model: *const CLLMModel,
    prompt: *const c_char,
    max_new_tokens: usize,
    temperature: f32,
    seed: u64,
    out: *mut c_char,
    capacity: usize,
) -> i64 {
    guard(-1, || {
        // SAFETY: per the contract.
        let m = unsafe { self::model(model) }?;
        if m.core.transformer().config().vocab_size < 256 {
            return Err(invalid!("byte-level text needs vocab_size >= 256"));
        }
        if prompt.is_null() {
            return Err(invalid!("prompt is NULL"));
        }
        // SAFETY: non-NULL and NUL-terminated per the contract.
        let prompt: Vec<u32> =
            unsafe { std::ffi::CStr::from_ptr(prompt) }.to_bytes().iter().map(|&b| b as u32).collect();
        let need = max_new_tokens.checked_add(1).ok_or_else(|| invalid!("max_new_tokens is too large"))?;
        // SAFETY: per the contract.
        let dst = unsafe { super::out_slice(out.cast::<u8>(), capacity, need, "out") }?;
        let tokens = m.core.generate(&prompt, max_new_tokens, temperature, seed)?;
        for (d, &t) in dst.iter_mut().zip(&tokens) {
            *d = u8::try_from(t).unwrap_or(b'?');
        }
        dst[tokens.len()] = 0;
        Ok(tokens.len() as i64)
    })
}

/// Wraps a core for the C side.
pub(crate) fn into_handle(core: ModelCore) -> *mut CLLMModel {
    Box::into_raw(Box::new(CLLMModel { core: Arc::new(core) }))
}

/// The core configuration behind a C configuration pointer.
///
/// # Safety
/// `config` must be NULL or point to a readable `CLLMConfig`.
pub(crate) unsafe fn config_arg(config: *const CLLMConfig) -> Result<TransformerConfig> {
    // SAFETY: guaranteed by the caller.
    let c = unsafe { config.as_ref() }.ok_or_else(|| Error::InvalidArgument("config is NULL".into()))?;
    c.to_core()
}
