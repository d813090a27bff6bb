//! `cllm_training_threaded.h`: data-parallel training over the kissing
//! spheres, with the original API and a callback-table variant for models
//! written in C (or any language with a C FFI).
//!
//! Each worker sphere computes the forward and backward pass of whole
//! batch rows (micro-batches) with its own buffers; gradients are summed in
//! a fixed order, clipped and applied once every gradient of the step has
//! arrived. Results are bit-identical run after run and for every thread
//! count. Worker ids in `threaded_training_get_sphere_stats` are 0-based
//! (`0 .. threaded_training_get_num_workers() - 1`).
//!
//! Error values: NULL from the create calls, -1.0f from the float
//! functions (a loss or a norm is never negative), -1 from the int
//! functions; `cllm_last_error()` tells why. A system keeps its model and
//! data alive: the model, the training state and the iterator may be
//! freed in any order (after the training state is freed, epochs stop
//! updating its fields).

use super::cllm_batch::{iterator, CLLMBatch};
use super::cllm_training::{shared_of, CLLMTraining, CLLMTrainingConfig, FieldUpdate, TrainingShared};
use super::{guard, in_slice, out_slice};
use crate::error::{invalid, Error, Result};
use crate::training::{
    EpochReport, GradientModel, ModelWorker, OptimizerState, ParamTensor, Sequence, ThreadedTrainer, TrainerMonitor,
};
use parking_lot::Mutex;
use std::os::raw::{c_int, c_void};
use std::sync::Arc;

/// A model written in C, trained with the library's optimizers and
/// reduction. The library calls `forward_backward` from several worker
/// threads at once (each with its own `grads` buffer), so it must be
/// thread-safe. A callback may read its system's counters
/// (`threaded_training_get_sphere_stats`, `_get_gradient_norm`,
/// `_get_num_workers`); the calls that would wait for the running epoch
/// (`threaded_train_epoch`, `_evaluate`, `_get_params`, `_set_params`,
/// `_print_stats`) fail with their error value instead of hanging.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CLLMModelCallbacks {
    /// Passed back to every callback.
    pub user_data: *mut c_void,
    /// Number of parameters (floats); called once at create. Required.
    pub num_params: Option<unsafe extern "C" fn(user_data: *mut c_void) -> usize>,
    /// Forward and backward pass of one micro-batch (`batch->batch_size`
    /// is 1; `attention_mask` marks the positions that count): writes the
    /// gradient of the batch's mean loss into `grads` (`num_params`
    /// floats, zeroed before the call) and returns that mean loss. A
    /// non-finite return fails the step. Required.
    pub forward_backward: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            params: *const f32,
            num_params: usize,
            batch: *const CLLMBatch,
            grads: *mut f32,
        ) -> f32,
    >,
    /// Fills the initial parameters from `seed`. Optional: NULL = zeros.
    pub init_params:
        Option<unsafe extern "C" fn(user_data: *mut c_void, params: *mut f32, num_params: usize, seed: u64)>,
}

/// Seed passed to `CLLMModelCallbacks.init_params`.
pub const CLLM_CUSTOM_MODEL_SEED: u64 = 1337;

/// The callback table as a core model.
#[derive(Clone, Copy)]
struct CallbackModel {
    table: CLLMModelCallbacks,
    n: usize,
}

// SAFETY: the header requires `forward_backward` to be thread-safe and
// `user_data` to be usable from every thread; the library never touches
// `user_data` itself.
unsafe impl Send for CallbackModel {}
// SAFETY: as above.
unsafe impl Sync for CallbackModel {}

impl GradientModel for CallbackModel {
    fn num_params(&self) -> usize {
        self.n
    }

    fn tensors(&self) -> Vec<ParamTensor> {
        vec![ParamTensor { name: "params".into(), shape: vec![self.n], offset: 0, len: self.n, decay: true }]
    }

    fn init_params(&self, params: &mut [f32], seed: u64) -> Result<()> {
        if params.len() != self.n {
            return Err(invalid!("{} parameters given, the model has {}", params.len(), self.n));
        }
        params.fill(0.0);
        if let Some(init) = self.table.init_params {
            // SAFETY: `params` is valid for n floats; the callback's contract.
            unsafe { init(self.table.user_data, params.as_mut_ptr(), self.n, seed) };
        }
        Ok(())
    }

    fn vocab_size(&self) -> Option<usize> {
        None
    }

    fn max_seq_len(&self) -> Option<usize> {
        None
    }

    fn new_worker(&self, seq_len: usize) -> Result<Box<dyn ModelWorker>> {
        Ok(Box::new(CallbackWorker {
            model: *self,
            inputs: vec![0; seq_len],
            targets: vec![0; seq_len],
            mask: vec![0.0; seq_len],
        }))
    }
}

/// A worker's copy of the row it hands to the callback.
struct CallbackWorker {
    model: CallbackModel,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    mask: Vec<f32>,
}

impl ModelWorker for CallbackWorker {
    fn forward_backward(&mut self, params: &[f32], seq: &Sequence<'_>, grads: &mut [f32]) -> Result<f64> {
        let t = seq.inputs.len();
        if t > self.inputs.len() || params.len() != self.model.n || grads.len() != self.model.n {
            return Err(invalid!("sequence or buffers do not match the custom model"));
        }
        self.inputs[..t].copy_from_slice(seq.inputs);
        self.targets[..t].copy_from_slice(seq.targets);
        self.mask[..t].copy_from_slice(seq.mask);
        let valid = seq.mask.iter().filter(|&&m| m != 0.0).count();
        let batch = CLLMBatch {
            input_ids: self.inputs.as_mut_ptr(),
            target_ids: self.targets.as_mut_ptr(),
            attention_mask: self.mask.as_mut_ptr(),
            batch_size: 1,
            seq_len: t as u32,
            num_valid_tokens: valid as u32,
        };
        grads.fill(0.0);
        let f = self.model.table.forward_backward.ok_or_else(|| invalid!("forward_backward is NULL"))?;
        // SAFETY: every pointer is valid for the sizes passed; the
        // callback's contract (thread-safe, writes at most n floats).
        let loss = unsafe { f(self.model.table.user_data, params.as_ptr(), self.model.n, &batch, grads.as_mut_ptr()) };
        if !loss.is_finite() {
            return Err(Error::System(format!("the custom model returned a non-finite loss ({loss})")));
        }
        // The callback gives the mean-loss gradient; the trainer wants the
        // gradient of Σ weight · loss_t over the valid positions.
        let scale = seq.weight * valid as f32;
        grads.iter_mut().for_each(|g| *g *= scale);
        Ok(loss as f64 * scale as f64)
    }

    fn loss(&mut self, params: &[f32], seq: &Sequence<'_>) -> Result<f64> {
        // The table has no forward-only call; a scratch gradient keeps the
        // parameters untouched.
        let mut scratch = vec![0.0; self.model.n];
        self.forward_backward(params, seq, &mut scratch)
    }
}

/// Where the parameters and optimizer state of a system live.
enum Owner {
    /// A `CLLMTraining` (and its model).
    Training { training: *mut CLLMTraining, shared: Arc<TrainingShared> },
    /// A custom model: the system owns them.
    Custom { params: Mutex<Vec<f32>>, state: Mutex<OptimizerState> },
}

/// A training run over a kissing-spheres system. Opaque.
pub struct ThreadedTrainingSystem {
    trainer: Mutex<ThreadedTrainer>,
    monitor: TrainerMonitor,
    owner: Owner,
}

fn threads_arg(num_threads: c_int) -> Result<usize> {
    usize::try_from(num_threads).map_err(|_| invalid!("num_threads must be >= 0 (0 = auto), got {num_threads}"))
}

/// Creates a training system for `training`'s model over the batches of
/// `batch_iterator` with `num_threads` workers (0 = the CPUs this process
/// may use). The configuration is read from `training->config` now.
/// Returns NULL on error: NULL arguments, negative `num_threads`, an
/// unknown optimizer or schedule, rows longer than the model's
/// `max_seq_len`, tokens outside its vocabulary.
///
/// # Safety
/// `training` must be NULL or a live training state, `batch_iterator` NULL
/// or a live iterator; `training` must outlive the system or be freed with
/// `cllm_training_free` (which detaches it).
#[no_mangle]
pub unsafe extern "C" fn threaded_training_create(
    training: *mut CLLMTraining,
    batch_iterator: *mut super::cllm_batch::CLLMBatchIterator,
    num_threads: c_int,
) -> *mut ThreadedTrainingSystem {
    guard(std::ptr::null_mut(), || {
        // SAFETY: per the contract.
        let shared = unsafe { shared_of(training) }?;
        // SAFETY: per the contract; shared_of checked it is not NULL.
        let config = unsafe { (*training).config }.to_core()?;
        if config.optimizer != shared.optimizer {
            return Err(invalid!(
                "config.optimizer changed from {} to {} after cllm_training_init",
                shared.optimizer.name(),
                config.optimizer.name()
            ));
        }
        // SAFETY: per the contract.
        let data = unsafe { iterator(batch_iterator) }?.inner.lock().clone();
        let threads = threads_arg(num_threads)?;
        let trainer = ThreadedTrainer::new(Arc::new(shared.model.net.clone()), &config, data, threads)?;
        Ok(into_handle(trainer, Owner::Training { training, shared }))
    })
}

/// Like `threaded_training_create` for a model given as a callback table
/// (copied). The system owns the parameters: they start from
/// `init_params` (or zeros); read and write them with
/// `threaded_training_get_params` / `_set_params`. Weight decay applies to
/// every parameter.
///
/// # Safety
/// `model` and `config` must be NULL or readable; `batch_iterator` NULL or
/// a live iterator; the callbacks must honour their contract.
#[no_mangle]
pub unsafe extern "C" fn threaded_training_create_custom(
    model: *const CLLMModelCallbacks,
    config: *const CLLMTrainingConfig,
    batch_iterator: *mut super::cllm_batch::CLLMBatchIterator,
    num_threads: c_int,
) -> *mut ThreadedTrainingSystem {
    guard(std::ptr::null_mut(), || {
        // SAFETY: per the contract.
        let table = *unsafe { model.as_ref() }.ok_or_else(|| invalid!("model is NULL"))?;
        // SAFETY: per the contract.
        let config = unsafe { config.as_ref() }.ok_or_else(|| invalid!("config is NULL"))?.to_core()?;
        let count = table.num_params.ok_or_else(|| invalid!("model->num_params is NULL"))?;
        if table.forward_backward.is_none() {
            return Err(invalid!("model->forward_backward is NULL"));
        }
        // SAFETY: the callback's contract.
        let n = unsafe { count(table.user_data) };
        let limit = crate::sys::memory_limit_bytes();
        if n == 0 || (n as u64).saturating_mul(4 * 5) > limit {
            return Err(invalid!(
                "model->num_params returned {n}; training needs at least 20 bytes per parameter and this process may use {limit}"
            ));
        }
        // SAFETY: per the contract.
        let data = unsafe { iterator(batch_iterator) }?.inner.lock().clone();
        let threads = threads_arg(num_threads)?;
        let net = CallbackModel { table, n };
        let mut params = vec![0.0; n];
        net.init_params(&mut params, CLLM_CUSTOM_MODEL_SEED)?;
        let state = OptimizerState::new(config.optimizer, n);
        let trainer = ThreadedTrainer::new(Arc::new(net), &config, data, threads)?;
        Ok(into_handle(trainer, Owner::Custom { params: Mutex::new(params), state: Mutex::new(state) }))
    })
}

fn into_handle(trainer: ThreadedTrainer, owner: Owner) -> *mut ThreadedTrainingSystem {
    let monitor = trainer.monitor();
    Box::into_raw(Box::new(ThreadedTrainingSystem { trainer: Mutex::new(trainer), monitor, owner }))
}

/// Stops the workers and frees the system. NULL is a no-op. Never hangs:
/// workers are idle between calls.
///
/// # Safety
/// `system` must be NULL or a live system not used by another thread.
#[no_mangle]
pub unsafe extern "C" fn threaded_training_free(system: *mut ThreadedTrainingSystem) {
    // SAFETY: per the contract.
    unsafe { super::free_box(system) }
}

/// # Safety
/// `s` must be NULL or a live system.
unsafe fn sys<'a>(s: *const ThreadedTrainingSystem) -> Result<&'a ThreadedTrainingSystem> {
    // SAFETY: guaranteed by the caller.
    unsafe { super::deref(s, "system") }
}

impl ThreadedTrainingSystem {
    /// Refuses calls that would wait on the epoch they are called from (a
    /// custom model's callback runs on the system's workers).
    fn not_from_worker(&self, what: &str) -> Result<()> {
        if self.monitor.on_worker_thread() {
            return Err(Error::WrongState(format!("{what} called from inside a model callback of this system")));
        }
        Ok(())
    }

    fn epoch(&self) -> Result<EpochReport> {
        self.not_from_worker("threaded_train_epoch")?;
        let mut trainer = self.trainer.lock();
        match &self.owner {
            Owner::Training { training, shared } => {
                let (result, step) = {
                    let mut params = shared.model.params.lock();
                    let mut state = shared.state.lock();
                    (trainer.train_epoch(&mut params, &mut state), state.step)
                };
                // Steps taken before a failure count too.
                let epoch_loss = result.as_ref().ok().map(|r| r.mean_loss as f32);
                shared.update_fields(*training, FieldUpdate { step, epoch_loss });
                result
            }
            Owner::Custom { params, state } => trainer.train_epoch(&mut params.lock(), &mut state.lock()),
        }
    }

    fn with_params<R>(&self, f: impl FnOnce(&mut Vec<f32>) -> Result<R>) -> Result<R> {
        self.not_from_worker("access to the parameters")?;
        match &self.owner {
            Owner::Training { shared, .. } => f(&mut shared.model.params.lock()),
            Owner::Custom { params, .. } => f(&mut params.lock()),
        }
    }
}

/// Trains one epoch (a full pass over the iterator's batches; epochs
/// repeat indefinitely) and returns its mean loss, or -1.0f on error
/// (NULL, `max_steps` reached, a non-finite loss or gradient).
///
/// # Safety
/// `system` must be NULL or a live system.
#[no_mangle]
pub unsafe extern "C" fn threaded_train_epoch(system: *mut ThreadedTrainingSystem) -> f32 {
    // SAFETY: per the contract.
    guard(-1.0, || Ok(unsafe { sys(system) }?.epoch()?.mean_loss as f32))
}

/// The later original name of `threaded_train_epoch`; `current_epoch` is
/// accepted for compatibility and not used (the system counts epochs).
///
/// # Safety
/// `system` must be NULL or a live system.
#[no_mangle]
pub unsafe extern "C" fn threaded_train_epoch_lockfree(
    system: *mut ThreadedTrainingSystem,
    current_epoch: c_int,
) -> f32 {
    let _ = current_epoch;
    // SAFETY: per the contract.
    unsafe { threaded_train_epoch(system) }
}

/// Prints per-worker counters (micro-batches, tokens, mean loss, busy
/// time) and the sphere totals to stdout. NULL prints nothing.
///
/// # Safety
/// `system` must be NULL or a live system.
#[no_mangle]
pub unsafe extern "C" fn threaded_training_print_stats(system: *mut ThreadedTrainingSystem) {
    guard((), || {
        // SAFETY: per the contract.
        let s = unsafe { sys(system) }?;
        s.not_from_worker("threaded_training_print_stats")?;
        let table = s.trainer.lock().stats_table();
        print!("{table}");
        Ok(())
    })
}

/// Counters of worker `sphere_id` (0-based, `0 ..
/// threaded_training_get_num_workers() - 1`) since creation: micro-batches
/// (batch rows) computed and their mean per-token loss. Either output may
/// be NULL. Returns 0, or -1 for a NULL system or an id out of range. Safe
/// to call while an epoch runs on another thread.
///
/// # Safety
/// `system` must be NULL or a live system; outputs NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn threaded_training_get_sphere_stats(
    system: *mut ThreadedTrainingSystem,
    sphere_id: c_int,
    batches_processed: *mut c_int,
    avg_loss: *mut f32,
) -> c_int {
    guard(-1, || {
        // SAFETY: per the contract.
        let s = unsafe { sys(system) }?;
        let id = usize::try_from(sphere_id)
            .map_err(|_| invalid!("sphere id must be >= 0 (0-based worker id), got {sphere_id}"))?;
        let st = s.monitor.worker_stats(id)?;
        // SAFETY: per the contract: NULL or writable.
        unsafe {
            if let Some(b) = batches_processed.as_mut() {
                *b = c_int::try_from(st.micro_batches).unwrap_or(c_int::MAX);
            }
            if let Some(l) = avg_loss.as_mut() {
                *l = st.mean_loss() as f32;
            }
        }
        Ok(0)
    })
}

/// Global gradient norm, before clipping, of the last step (0 before the
/// first); -1.0f for NULL. Safe to call while an epoch runs.
///
/// # Safety
/// `system` must be NULL or a live system.
#[no_mangle]
pub unsafe extern "C" fn threaded_training_get_gradient_norm(system: *mut ThreadedTrainingSystem) -> f32 {
    // SAFETY: per the contract.
    guard(-1.0, || Ok(unsafe { sys(system) }?.monitor.gradient_norm() as f32))
}

/// Worker threads of the system; -1 for NULL.
///
/// # Safety
/// `system` must be NULL or a live system.
#[no_mangle]
pub unsafe extern "C" fn threaded_training_get_num_workers(system: *mut ThreadedTrainingSystem) -> c_int {
    // SAFETY: per the contract.
    guard(-1, || Ok(unsafe { sys(system) }?.monitor.num_workers() as c_int))
}

/// Mean loss over every batch of `batch_iterator` with the current
/// parameters, computed by the workers without training (the iterator's
/// position is not used or changed). -1.0f on error.
///
/// # Safety
/// `system` must be NULL or a live system; `batch_iterator` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn threaded_training_evaluate(
    system: *mut ThreadedTrainingSystem,
    batch_iterator: *mut super::cllm_batch::CLLMBatchIterator,
) -> f32 {
    guard(-1.0, || {
        // SAFETY: per the contract.
        let s = unsafe { sys(system) }?;
        // SAFETY: per the contract.
        let data = unsafe { iterator(batch_iterator) }?.inner.lock().clone();
        s.not_from_worker("threaded_training_evaluate")?;
        let mut trainer = s.trainer.lock();
        Ok(s.with_params(|p| trainer.evaluate(p, &data))? as f32)
    })
}

/// Copies the parameters (model or custom) into `out` (`capacity` floats).
/// Returns the number of parameters, or -1.
///
/// # Safety
/// `system` must be NULL or a live system; `out` valid for `capacity` floats.
#[no_mangle]
pub unsafe extern "C" fn threaded_training_get_params(
    system: *mut ThreadedTrainingSystem,
    out: *mut f32,
    capacity: usize,
) -> i64 {
    guard(-1, || {
        // SAFETY: per the contract.
        let s = unsafe { sys(system) }?;
        s.with_params(|p| {
            // SAFETY: per the contract.
            unsafe { out_slice(out, capacity, p.len(), "out") }?.copy_from_slice(p);
            Ok(p.len() as i64)
        })
    })
}

/// Replaces the parameters with `values` (exactly the parameter count).
/// Returns 0, or -1.
///
/// # Safety
/// `system` must be NULL or a live system; `values` valid for `count` floats.
#[no_mangle]
pub unsafe extern "C" fn threaded_training_set_params(
    system: *mut ThreadedTrainingSystem,
    values: *const f32,
    count: usize,
) -> c_int {
    guard(-1, || {
        // SAFETY: per the contract.
        let s = unsafe { sys(system) }?;
        // SAFETY: per the contract.
        let v = unsafe { in_slice(values, count, "values") }?;
        s.with_params(|p| {
            if v.len() != p.len() {
                return Err(invalid!("{} values given, the model has {} parameters", v.len(), p.len()));
            }
            p.copy_from_slice(v);
            Ok(0)
        })
    })
}
