//! `cllm_batch.h`: training batches and the batch iterator, with the
//! original semantics: batch k holds positions k·B·T .. (k+1)·B·T of the
//! token stream, each position's target is the next token, and a partial
//! last batch is padded with token 0 and mask 0 unless `drop_last`.
//! `shuffle` visits the batches in an order drawn from a fixed seed that
//! changes at every reset (reproducible run to run).

use super::{guard, in_slice};
use crate::error::{invalid, Result};
use crate::training::batch::window_len;
use crate::training::{Batch, BatchIterator};
use parking_lot::Mutex;
use std::os::raw::c_int;

/// One batch, row-major `batch_size × seq_len`, as in the original
/// `cllm_batch.h`. The arrays are allocated with `calloc` and released by
/// `cllm_batch_free` with `free`.
#[repr(C)]
#[derive(Debug)]
pub struct CLLMBatch {
    /// Input token of each position.
    pub input_ids: *mut u32,
    /// Next-token target of each position.
    pub target_ids: *mut u32,
    /// 1.0 for a real position, 0.0 for padding.
    pub attention_mask: *mut f32,
    /// Rows.
    pub batch_size: u32,
    /// Positions per row.
    pub seq_len: u32,
    /// Positions whose mask is 1.
    pub num_valid_tokens: u32,
}

/// Walks a token stream in batches. Opaque. It holds its own copy of the
/// tokens, so the caller's array may be freed after creation. Calls on one
/// iterator are serialised.
pub struct CLLMBatchIterator {
    pub(crate) inner: Mutex<BatchIterator>,
}

/// `calloc`s `n` zeroed elements; NULL stays NULL.
fn calloc<T>(n: usize) -> *mut T {
    // SAFETY: calloc accepts any sizes and returns NULL on failure or overflow.
    unsafe { libc::calloc(n.max(1), std::mem::size_of::<T>()) }.cast()
}

/// An all-padding C batch.
fn alloc_batch(batch_size: usize, seq_len: usize) -> Result<*mut CLLMBatch> {
    let n = window_len(batch_size, seq_len)?;
    let c = CLLMBatch {
        input_ids: calloc(n),
        target_ids: calloc(n),
        attention_mask: calloc(n),
        batch_size: batch_size as u32,
        seq_len: seq_len as u32,
        num_valid_tokens: 0,
    };
    let out = Box::into_raw(Box::new(c));
    // SAFETY: `out` was just created.
    let r = unsafe { &*out };
    if r.input_ids.is_null() || r.target_ids.is_null() || r.attention_mask.is_null() {
        // SAFETY: `out` and its arrays were created here; free handles NULL.
        unsafe { cllm_batch_free(out) };
        return Err(crate::Error::System(format!("out of memory for a batch of {n} positions")));
    }
    Ok(out)
}

/// Creates a zeroed batch (all positions padding). NULL when a size is 0
/// or too large.
#[no_mangle]
pub extern "C" fn cllm_batch_create(batch_size: u32, seq_len: u32) -> *mut CLLMBatch {
    guard(std::ptr::null_mut(), || alloc_batch(batch_size as usize, seq_len as usize))
}

/// Frees a batch and its arrays. NULL is a no-op.
///
/// # Safety
/// `batch` must be NULL or a batch from this library, not yet freed; its
/// array pointers must be NULL or `malloc`/`calloc` allocations.
#[no_mangle]
pub unsafe extern "C" fn cllm_batch_free(batch: *mut CLLMBatch) {
    guard((), || {
        if !batch.is_null() {
            // SAFETY: created by Box::into_raw and handed back once.
            let b = unsafe { Box::from_raw(batch) };
            // SAFETY: the arrays come from calloc (or the caller's malloc).
            unsafe {
                libc::free(b.input_ids.cast());
                libc::free(b.target_ids.cast());
                libc::free(b.attention_mask.cast());
            }
        }
        Ok(())
    })
}

/// Creates an iterator over a copy of `tokens[0 .. num_tokens]`. NULL when
/// `tokens` is NULL, a size is 0, or the stream holds no batch (fewer than
/// 2 tokens; with `drop_last`, fewer than `batch_size × seq_len + 1`).
///
/// # Safety
/// `tokens` must be NULL or valid for `num_tokens` entries.
#[no_mangle]
pub unsafe extern "C" fn cllm_batch_iterator_create(
    tokens: *const u32,
    num_tokens: usize,
    batch_size: u32,
    seq_len: u32,
    shuffle: c_int,
    drop_last: c_int,
) -> *mut CLLMBatchIterator {
    guard(std::ptr::null_mut(), || {
        if tokens.is_null() {
            return Err(invalid!("tokens is NULL"));
        }
        // SAFETY: per the contract.
        let tokens = unsafe { in_slice(tokens, num_tokens, "tokens") }?;
        let it = BatchIterator::new(tokens, batch_size as usize, seq_len as usize, shuffle != 0, drop_last != 0)?;
        Ok(Box::into_raw(Box::new(CLLMBatchIterator { inner: Mutex::new(it) })))
    })
}

/// Frees an iterator. NULL is a no-op. Training systems created from it
/// keep their own copy.
///
/// # Safety
/// `iter` must be NULL or an iterator from this library, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn cllm_batch_iterator_free(iter: *mut CLLMBatchIterator) {
    // SAFETY: per the contract.
    unsafe { super::free_box(iter) }
}

/// # Safety
/// `iter` must be NULL or a live iterator.
pub(crate) unsafe fn iterator<'a>(iter: *const CLLMBatchIterator) -> Result<&'a CLLMBatchIterator> {
    // SAFETY: guaranteed by the caller.
    unsafe { super::deref(iter, "batch iterator") }
}

/// Starts again from the first batch (a new order when shuffling). NULL is
/// a no-op (with `cllm_last_error()` set).
///
/// # Safety
/// `iter` must be NULL or a live iterator.
#[no_mangle]
pub unsafe extern "C" fn cllm_batch_iterator_reset(iter: *mut CLLMBatchIterator) {
    guard((), || {
        // SAFETY: per the contract.
        unsafe { iterator(iter) }?.inner.lock().reset();
        Ok(())
    })
}

/// The next batch (free it with `cllm_batch_free`), or NULL at the end of
/// the pass (`cllm_last_error()` stays NULL then) or on error.
///
/// # Safety
/// `iter` must be NULL or a live iterator.
#[no_mangle]
pub unsafe extern "C" fn cllm_batch_iterator_next(iter: *mut CLLMBatchIterator) -> *mut CLLMBatch {
    guard(std::ptr::null_mut(), || {
        // SAFETY: per the contract.
        let it = unsafe { iterator(iter) }?;
        let Some(b) = it.inner.lock().next() else {
            super::clear_error();
            return Ok(std::ptr::null_mut());
        };
        let out = alloc_batch(b.batch_size, b.seq_len)?;
        // SAFETY: `out` was just allocated with arrays of this length.
        unsafe {
            let c = &mut *out;
            let n = b.input_ids.len();
            std::ptr::copy_nonoverlapping(b.input_ids.as_ptr(), c.input_ids, n);
            std::ptr::copy_nonoverlapping(b.target_ids.as_ptr(), c.target_ids, n);
            std::ptr::copy_nonoverlapping(b.attention_mask.as_ptr(), c.attention_mask, n);
            c.num_valid_tokens = b.num_valid_tokens as u32;
        }
        Ok(out)
    })
}

/// Batches in one pass; 0 for NULL.
///
/// # Safety
/// `iter` must be NULL or a live iterator.
#[no_mangle]
pub unsafe extern "C" fn cllm_batch_iterator_num_batches(iter: *mut CLLMBatchIterator) -> usize {
    // SAFETY: per the contract.
    guard(0, || Ok(unsafe { iterator(iter) }?.inner.lock().num_batches()))
}

/// Reads a C batch into a core batch (arrays must be non-NULL).
///
/// # Safety
/// `b`'s arrays must be valid for `batch_size × seq_len` entries.
pub(crate) unsafe fn batch_from_c(b: &CLLMBatch) -> Result<Batch> {
    let mut out = Batch::new(b.batch_size as usize, b.seq_len as usize)?;
    let n = out.input_ids.len();
    // SAFETY: per the contract; in_slice rejects NULL arrays.
    unsafe {
        out.input_ids.copy_from_slice(in_slice(b.input_ids, n, "input_ids")?);
        out.target_ids.copy_from_slice(in_slice(b.target_ids, n, "target_ids")?);
        out.attention_mask.copy_from_slice(in_slice(b.attention_mask, n, "attention_mask")?);
    }
    out.num_valid_tokens = b.num_valid_tokens as usize;
    Ok(out)
}

/// 1 when the batch is consistent (sizes, a mask of only 0 and 1, padding
/// holding token 0, `num_valid_tokens` equal to the mask's count), else 0
/// with `cllm_last_error()` naming the problem. Token 0 is a valid token at
/// real positions (unlike the original, which rejected it).
///
/// # Safety
/// `batch` must be NULL or a batch whose arrays hold
/// `batch_size × seq_len` entries.
#[no_mangle]
pub unsafe extern "C" fn cllm_batch_validate(batch: *mut CLLMBatch) -> c_int {
    guard(0, || {
        // SAFETY: per the contract.
        let b = unsafe { super::deref(batch, "batch") }?;
        // SAFETY: per the contract.
        unsafe { batch_from_c(b) }?.validate()?;
        Ok(1)
    })
}
