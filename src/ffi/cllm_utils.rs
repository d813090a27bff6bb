//! `cllm_utils.h`: creating and freeing models, as declared in the
//! original code base.

use super::cllm::{config_arg, into_handle, CLLMConfig, CLLMModel, ModelCore, CLLM_DEFAULT_SEED};
use super::guard;

/// Creates a model of the shape `*config`, its parameters drawn from a
/// fixed seed (GPT-2 style initialisation, reproducible). Returns NULL with
/// `cllm_last_error()` when `config` is NULL or invalid (a zero size,
/// `embedding_dim` not a multiple of `num_heads`, `dropout` outside [0, 1),
/// a model too large for memory).
///
/// # Safety
/// `config` must be NULL or point to a readable `CLLMConfig`.
#[no_mangle]
pub unsafe extern "C" fn cllm_create_model(config: *const CLLMConfig) -> *mut CLLMModel {
    guard(std::ptr::null_mut(), || {
        // SAFETY: per the contract.
        let config = unsafe { config_arg(config) }?;
        Ok(into_handle(ModelCore::new(config, CLLM_DEFAULT_SEED)?))
    })
}

/// Frees a model. NULL is a no-op. Training state and training systems
/// created from the model keep what they need alive, so the order of the
/// frees does not matter.
///
/// # Safety
/// `model` must be NULL or a model from this library, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn cllm_free_model(model: *mut CLLMModel) {
    // SAFETY: per the contract.
    unsafe { super::free_box(model) }
}
