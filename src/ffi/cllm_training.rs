//! `cllm_training.h`: the training configuration and training state of the
//! original code base, with the same layout for the fields callers touch.
//!
//! `CLLMTrainingConfig` is laid out exactly as the original.
//! `CLLMTraining` starts with the original leading fields (callers read and
//! write `tokens`, `num_tokens`, `config`; the library updates
//! `current_epoch`, `current_step`, `best_loss` and `current_loss` after
//! every epoch); the rest is private. The `tokens` array stays the
//! caller's: `cllm_training_free` does not free it.

use super::cllm::{model, CLLMModel, ModelCore};
use super::{c_str, guard};
use crate::error::{invalid, Result};
use crate::training::checkpoint::{self, transformer_metadata};
use crate::training::{OptimizerKind, OptimizerState, ScheduleKind, TrainingConfig};
use parking_lot::Mutex;
use std::os::raw::{c_char, c_int};
use std::path::Path;
use std::sync::Arc;

/// Training hyper-parameters, field for field the original struct.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CLLMTrainingConfig {
    /// Peak learning rate (> 0).
    pub learning_rate: f32,
    /// Rows per batch; used by callers to build their iterator (the
    /// iterator's batch size is what trains).
    pub batch_size: c_int,
    /// Planned epochs: sets the length of "linear"/"cosine" decay when
    /// `max_steps` is 0.
    pub num_epochs: c_int,
    /// Stop after this many optimizer steps; 0 = no limit.
    pub max_steps: c_int,
    /// Weight decay (matrices and embeddings; not biases or norms).
    pub weight_decay: f32,
    /// Global-norm gradient clipping threshold; 0 = off.
    pub gradient_clip: f32,
    /// Linear warm-up steps.
    pub warmup_steps: c_int,
    /// Kept for layout compatibility; the library saves only on request.
    pub save_interval: c_int,
    /// Kept for layout compatibility; the library saves only on request.
    pub save_every: c_int,
    /// Kept for layout compatibility; evaluate with
    /// `threaded_training_evaluate`.
    pub eval_interval: c_int,
    /// Tokens per row; used by callers to build their iterator.
    pub sequence_length: c_int,
    /// "adamw" (default for ""), "adam" (L2 decay) or "sgd" (momentum
    /// 0.9); NUL-terminated. Anything else fails at create time.
    pub optimizer: [c_char; 32],
    /// "none" (default for ""), "linear", "cosine" or "step".
    pub lr_scheduler: [c_char; 32],
    /// Factor of the "step" schedule.
    pub lr_decay_factor: f32,
    /// Interval of the "step" schedule, in optimizer steps.
    pub lr_decay_steps: c_int,
    /// Floor of every decay.
    pub min_lr: f32,
    /// Batches per optimizer step (>= 1; 0 is taken as 1).
    pub gradient_accumulation_steps: c_int,
    /// Kept for layout compatibility: training is always fp32, so the
    /// mixed-precision fields below are ignored.
    pub use_mixed_precision: c_int,
    /// Ignored (fp32 training).
    pub loss_scale: f32,
    /// Ignored (fp32 training).
    pub loss_scale_growth: f32,
    /// Ignored (fp32 training).
    pub loss_scale_backoff: f32,
    /// Ignored (fp32 training).
    pub loss_scale_window: c_int,
}

/// Training state. The leading fields are the original's; `internal` is
/// private to the library.
#[repr(C)]
#[derive(Debug)]
pub struct CLLMTraining {
    /// The model being trained (as passed to `cllm_training_init`).
    pub model: *mut CLLMModel,
    /// A copy of the configuration; callers may change it before creating
    /// a training system.
    pub config: CLLMTrainingConfig,
    /// The caller's token stream (not owned, never freed by the library).
    pub tokens: *mut u32,
    /// Entries in `tokens`.
    pub num_tokens: usize,
    /// Epochs completed.
    pub current_epoch: c_int,
    /// Optimizer steps taken.
    pub current_step: c_int,
    /// Lowest epoch loss so far (FLT_MAX before the first epoch).
    pub best_loss: f32,
    /// Mean loss of the last epoch.
    pub current_loss: f32,
    /// Private to the library.
    pub internal: *mut CLLMTrainingInternal,
}

/// The private part of a `CLLMTraining`. Opaque.
pub struct CLLMTrainingInternal {
    pub(crate) shared: Arc<TrainingShared>,
}

/// What a training state and its training systems share.
pub(crate) struct TrainingShared {
    pub(crate) model: Arc<ModelCore>,
    pub(crate) state: Mutex<OptimizerState>,
    pub(crate) optimizer: OptimizerKind,
    /// Cleared by `cllm_training_free`: systems stop writing its fields.
    /// Held while a field is written, so a free waits for the write.
    pub(crate) attached: Mutex<bool>,
}

/// What an epoch reports into the public fields of a `CLLMTraining`.
pub(crate) struct FieldUpdate {
    /// Optimizer steps taken so far.
    pub(crate) step: u64,
    /// Mean loss of a completed epoch (`None` after a failed one).
    pub(crate) epoch_loss: Option<f32>,
}

impl TrainingShared {
    /// Writes `u` into `*training` while it is attached (not yet freed).
    /// Writes through raw field pointers, so no `&mut` to the whole struct
    /// exists while the caller may be reading other fields.
    pub(crate) fn update_fields(&self, training: *mut CLLMTraining, u: FieldUpdate) {
        let attached = self.attached.lock();
        if !*attached {
            return;
        }
        let step = c_int::try_from(u.step).unwrap_or(c_int::MAX);
        // SAFETY: attached means `training` is live: cllm_training_free
        // clears the flag under this lock before freeing it.
        unsafe {
            std::ptr::addr_of_mut!((*training).current_step).write(step);
            if let Some(loss) = u.epoch_loss {
                let epoch = std::ptr::addr_of_mut!((*training).current_epoch);
                epoch.write(epoch.read().saturating_add(1));
                std::ptr::addr_of_mut!((*training).current_loss).write(loss);
                let best = std::ptr::addr_of_mut!((*training).best_loss);
                best.write(best.read().min(loss));
            }
        }
    }
}

fn name_field(name: &str) -> [c_char; 32] {
    let mut out = [0 as c_char; 32];
    for (d, &b) in out.iter_mut().zip(name.as_bytes().iter().take(31)) {
        *d = b as c_char;
    }
    out
}

fn read_name(field: &[c_char; 32], what: &str) -> Result<String> {
    let bytes: Vec<u8> = field.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    if bytes.len() == field.len() {
        return Err(invalid!("{what} is not NUL-terminated within 32 bytes"));
    }
    String::from_utf8(bytes).map_err(|_| invalid!("{what} is not valid UTF-8"))
}

impl Default for CLLMTrainingConfig {
    fn default() -> Self {
        let core = TrainingConfig::default();
        CLLMTrainingConfig {
            learning_rate: core.learning_rate,
            batch_size: 8,
            num_epochs: 10,
            max_steps: 0,
            weight_decay: 0.01,
            gradient_clip: core.gradient_clip,
            warmup_steps: 0,
            save_interval: 0,
            save_every: 0,
            eval_interval: 0,
            sequence_length: 64,
            optimizer: name_field("adamw"),
            lr_scheduler: name_field("none"),
            lr_decay_factor: core.lr_decay_factor,
            lr_decay_steps: core.lr_decay_steps as c_int,
            min_lr: 0.0,
            gradient_accumulation_steps: 1,
            use_mixed_precision: 0,
            loss_scale: 1.0,
            loss_scale_growth: 2.0,
            loss_scale_backoff: 0.5,
            loss_scale_window: 1000,
        }
    }
}

impl CLLMTrainingConfig {
    /// The core configuration, checked: unknown optimizer or schedule
    /// names and negative counts are errors.
    pub(crate) fn to_core(self) -> Result<TrainingConfig> {
        let non_negative = |v: c_int, what: &str| -> Result<u64> {
            u64::try_from(v).map_err(|_| invalid!("{what} must not be negative, got {v}"))
        };
        let accumulation = non_negative(self.gradient_accumulation_steps, "gradient_accumulation_steps")?.max(1);
        let config = TrainingConfig {
            learning_rate: self.learning_rate,
            optimizer: OptimizerKind::parse(&read_name(&self.optimizer, "optimizer")?)?,
            schedule: ScheduleKind::parse(&read_name(&self.lr_scheduler, "lr_scheduler")?)?,
            warmup_steps: non_negative(self.warmup_steps, "warmup_steps")?,
            min_lr: self.min_lr,
            lr_decay_factor: self.lr_decay_factor,
            lr_decay_steps: non_negative(self.lr_decay_steps, "lr_decay_steps")?,
            weight_decay: self.weight_decay,
            gradient_clip: self.gradient_clip,
            accumulation_steps: accumulation as usize,
            max_steps: non_negative(self.max_steps, "max_steps")?,
            num_epochs: non_negative(self.num_epochs, "num_epochs")?,
            ..TrainingConfig::default()
        };
        non_negative(self.batch_size, "batch_size")?;
        non_negative(self.sequence_length, "sequence_length")?;
        config.validate()?;
        Ok(config)
    }
}

/// The default configuration: learning rate 1e-3, AdamW with weight decay
/// 0.01, no schedule, clipping at 1.0, batch 8 × 64 tokens, 10 epochs.
#[no_mangle]
pub extern "C" fn cllm_training_config_default() -> CLLMTrainingConfig {
    CLLMTrainingConfig::default()
}

/// Creates training state for `model` with a copy of `*config`: the
/// optimizer's state is allocated here. `tokens` starts NULL; set it (and
/// `num_tokens`) before building an iterator. Returns NULL on error: NULL
/// arguments, an unknown optimizer or schedule name, a negative count, a
/// bad learning rate.
///
/// # Safety
/// `model` must be NULL or a live model; `config` NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn cllm_training_init(
    model: *mut CLLMModel,
    config: *mut CLLMTrainingConfig,
) -> *mut CLLMTraining {
    guard(std::ptr::null_mut(), || {
        // SAFETY: per the contract.
        let m = unsafe { self::model(model) }?;
        // SAFETY: per the contract; NULL is rejected.
        let c = *unsafe { config.as_ref() }.ok_or_else(|| invalid!("config is NULL"))?;
        let core = c.to_core()?;
        let n = m.core.net.0.num_params();
        let shared = Arc::new(TrainingShared {
            model: Arc::clone(&m.core),
            state: Mutex::new(OptimizerState::new(core.optimizer, n)),
            optimizer: core.optimizer,
            attached: Mutex::new(true),
        });
        let internal = Box::into_raw(Box::new(CLLMTrainingInternal { shared }));
        Ok(Box::into_raw(Box::new(CLLMTraining {
            model,
            config: c,
            tokens: std::ptr::null_mut(),
            num_tokens: 0,
            current_epoch: 0,
            current_step: 0,
            best_loss: f32::MAX,
            current_loss: 0.0,
            internal,
        })))
    })
}

/// Frees training state (not the model, not `tokens`). NULL is a no-op.
/// Training systems created from it keep working; they stop updating its
/// fields.
///
/// # Safety
/// `training` must be NULL or from `cllm_training_init`, not yet freed,
/// and no call may be using it on another thread.
#[no_mangle]
pub unsafe extern "C" fn cllm_training_free(training: *mut CLLMTraining) {
    guard((), || {
        if !training.is_null() {
            // SAFETY: created by Box::into_raw and handed back once.
            let t = unsafe { Box::from_raw(training) };
            if !t.internal.is_null() {
                // SAFETY: created by Box::into_raw in cllm_training_init.
                let internal = unsafe { Box::from_raw(t.internal) };
                // Systems finish any write first, then never write again.
                *internal.shared.attached.lock() = false;
            }
        }
        Ok(())
    })
}

/// # Safety
/// `training` must be NULL or a live training state.
pub(crate) unsafe fn shared_of(training: *const CLLMTraining) -> Result<Arc<TrainingShared>> {
    // SAFETY: per the contract.
    let t = unsafe { super::deref(training, "training") }?;
    // SAFETY: `internal` was set by cllm_training_init and lives as long as `t`.
    let internal = unsafe { super::deref(t.internal, "training->internal") }?;
    Ok(Arc::clone(&internal.shared))
}

/// Saves the model's parameters, the optimizer state and the step count to
/// `path` (safetensors). Returns 0, or -1 on error.
///
/// # Safety
/// `training` must be NULL or a live training state; `path` NULL or a C
/// string.
#[no_mangle]
pub unsafe extern "C" fn cllm_training_save_checkpoint(training: *const CLLMTraining, path: *const c_char) -> c_int {
    guard(-1, || {
        // SAFETY: per the contract.
        let (shared, path) = unsafe { (shared_of(training)?, c_str(path, "path")?) };
        let meta = transformer_metadata(shared.model.transformer().config());
        let params = shared.model.params.lock();
        let state = shared.state.lock();
        checkpoint::save(Path::new(path), &shared.model.net, &params, Some((&state, shared.optimizer)), &meta)?;
        Ok(0)
    })
}

/// Loads parameters and optimizer state saved by
/// `cllm_training_save_checkpoint` into this training state's model (same
/// shape required) and sets `current_step`. A checkpoint without optimizer
/// state (from `cllm_model_save`) resets the optimizer. Returns 0, or -1.
///
/// # Safety
/// `training` must be NULL or a live training state; `path` NULL or a C
/// string.
#[no_mangle]
pub unsafe extern "C" fn cllm_training_load_checkpoint(training: *mut CLLMTraining, path: *const c_char) -> c_int {
    guard(-1, || {
        // SAFETY: per the contract.
        let (shared, path) = unsafe { (shared_of(training)?, c_str(path, "path")?) };
        let loaded = checkpoint::load(Path::new(path), &shared.model.net)?;
        let n = loaded.params.len();
        let state = match (loaded.state, loaded.optimizer) {
            (Some(s), Some(kind)) if kind == shared.optimizer => s,
            (Some(_), Some(kind)) => {
                return Err(invalid!(
                    "the checkpoint's optimizer is {}, this training uses {}",
                    kind.name(),
                    shared.optimizer.name()
                ))
            }
            _ => OptimizerState::new(shared.optimizer, n),
        };
        let step = state.step;
        *shared.model.params.lock() = loaded.params;
        *shared.state.lock() = state;
        shared.update_fields(training, FieldUpdate { step, epoch_loss: None });
        Ok(0)
    })
}
