//! `cllm_common.h`: version, error reporting and strings shared by every
//! libcllm header.
//!
//! Conventions of every libcllm function: a NULL handle, a negative count or
//! an out-of-range value never crashes; the function returns its documented
//! error value (-1, NULL or false) and `cllm_last_error()` tells why.

use std::os::raw::c_char;

/// The crate version as a NUL-terminated string, e.g. "0.1.0". Static.
#[no_mangle]
pub extern "C" fn cllm_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed libcllm call on this thread, or NULL when
/// none failed (or after `cllm_clear_error`). Valid until the next failing
/// call on this thread.
#[no_mangle]
pub extern "C" fn cllm_last_error() -> *const c_char {
    super::last_error_ptr()
}

/// Forgets this thread's last error, so that `cllm_last_error()` is NULL.
#[no_mangle]
pub extern "C" fn cllm_clear_error() {
    super::clear_error();
}

/// Frees a string returned by a libcllm `*_alloc` function. NULL is a no-op.
///
/// # Safety
/// `s` must be NULL or a string returned by libcllm and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn cllm_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: libcllm created `s` with CString::into_raw and the caller
        // hands it back exactly once.
        drop(unsafe { std::ffi::CString::from_raw(s) });
    }
}

/// Number of CPUs this process may use: its affinity mask bounded by the
/// cgroup CPU quota (not the machine's total). At least 1.
#[no_mangle]
pub extern "C" fn cllm_usable_cpus() -> i32 {
    super::guard(1, || Ok(crate::sys::usable_cpus().min(i32::MAX as usize) as i32))
}
