//! The C ABI. One file per public header; each function checks its
//! arguments, converts types, runs the core inside a panic boundary and
//! records failures for `cllm_last_error()`.

pub mod cllm;
pub mod cllm_batch;
pub mod cllm_training;
pub mod cllm_training_threaded;
pub mod cllm_utils;
pub mod common;
pub mod echobeats;
pub mod kissing_spheres;
pub mod mini_runtime;

use crate::error::Error;
use std::cell::RefCell;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records `msg` as this thread's last error.
pub(crate) fn set_error(msg: &str) {
    // Interior NULs cannot be represented in a C string; replace them.
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // try_with: during thread teardown the slot may be gone; losing the
    // message then is better than a panic in an extern "C" function.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = Some(c));
}

/// Forgets this thread's last error.
pub(crate) fn clear_error() {
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = None);
}

/// Pointer to this thread's last error message, or NULL.
pub(crate) fn last_error_ptr() -> *const std::os::raw::c_char {
    LAST_ERROR.try_with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr())).unwrap_or(std::ptr::null())
}

/// Runs `f` behind a panic boundary. An `Err` or a panic records the message
/// and yields `on_error`.
pub(crate) fn guard<T>(on_error: T, f: impl FnOnce() -> Result<T, Error>) -> T {
    guard_map(f, |_| on_error)
}

/// Like [`guard`], but the error value depends on the error: a panic
/// becomes an [`Error::System`].
pub(crate) fn guard_map<T>(f: impl FnOnce() -> Result<T, Error>, on_error: impl FnOnce(&Error) -> T) -> T {
    let e = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => e,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Error::System(format!("internal error (panic caught at the C boundary): {what}"))
        }
    };
    set_error(&e.to_string());
    on_error(&e)
}

/// Turns a nullable pointer into a reference or an invalid-argument error.
///
/// # Safety
/// `p` must be NULL or point to a live `T` for the returned lifetime.
pub(crate) unsafe fn deref<'a, T>(p: *const T, what: &str) -> Result<&'a T, Error> {
    // SAFETY: the caller guarantees `p` is NULL or valid; NULL is rejected.
    unsafe { p.as_ref() }.ok_or_else(|| Error::InvalidArgument(format!("{what} is NULL")))
}

/// Converts a C count to `usize`, rejecting negatives.
pub(crate) fn count(n: i64, what: &str) -> Result<usize, Error> {
    usize::try_from(n).map_err(|_| Error::InvalidArgument(format!("{what} must not be negative, got {n}")))
}

/// A C timeout in milliseconds: negative = wait forever.
pub(crate) fn timeout(ms: i64) -> Option<std::time::Duration> {
    (ms >= 0).then(|| std::time::Duration::from_millis(ms as u64))
}

/// Copies `text` into a caller buffer the way `snprintf` does: writes at
/// most `cap - 1` bytes plus a NUL and returns the full length.
///
/// # Safety
/// `buf` must be NULL (then `cap` must be 0) or valid for `cap` bytes.
pub(crate) unsafe fn write_c_string(text: &str, buf: *mut std::os::raw::c_char, cap: usize) -> Result<i64, Error> {
    if buf.is_null() && cap != 0 {
        return Err(Error::InvalidArgument("buffer is NULL but capacity is not 0".into()));
    }
    if cap > 0 {
        let n = text.len().min(cap - 1);
        // SAFETY: buf is valid for cap bytes and n + 1 <= cap.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    i64::try_from(text.len()).map_err(|_| Error::InvalidArgument("text too long".into()))
}

/// Borrows a C string argument as UTF-8.
///
/// # Safety
/// `p` must be NULL or a valid NUL-terminated string for the returned lifetime.
pub(crate) unsafe fn c_str<'a>(p: *const std::os::raw::c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(Error::InvalidArgument(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::InvalidArgument(format!("{what} is not valid UTF-8")))
}

/// Borrows a caller array of `len` elements (NULL only when `len` is 0).
///
/// # Safety
/// `p` must be valid for reading `len` elements for the returned lifetime.
pub(crate) unsafe fn in_slice<'a, T>(p: *const T, len: usize, what: &str) -> Result<&'a [T], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::InvalidArgument(format!("{what} is NULL but its length is {len}")));
    }
    if len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(Error::InvalidArgument(format!("{what} length {len} is too large (a negative value?)")));
    }
    // SAFETY: non-NULL, and valid for `len` elements per the contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Borrows the first `need` elements of a caller output buffer of
/// `capacity` elements, failing when it is NULL or too small.
///
/// # Safety
/// `p` must be valid for writing `capacity` elements for the returned lifetime.
pub(crate) unsafe fn out_slice<'a, T>(
    p: *mut T,
    capacity: usize,
    need: usize,
    what: &str,
) -> Result<&'a mut [T], Error> {
    if capacity < need {
        return Err(Error::InvalidArgument(format!("{what} holds {capacity} elements, {need} are needed")));
    }
    if need == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Error::InvalidArgument(format!("{what} is NULL")));
    }
    if need > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(Error::InvalidArgument(format!("{what} length {need} is too large")));
    }
    // SAFETY: non-NULL, and valid for `need <= capacity` elements per the contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, need) })
}

/// Frees a handle made by `Box::into_raw` behind a panic boundary (a
/// panicking destructor is reported, not unwound into C); NULL is a no-op.
///
/// # Safety
/// `p` must be NULL or come from `Box::into_raw` and not be freed yet.
pub(crate) unsafe fn free_box<T>(p: *mut T) {
    guard((), || {
        if !p.is_null() {
            // SAFETY: guaranteed by the caller.
            drop(unsafe { Box::from_raw(p) });
        }
        Ok(())
    })
}
