//! CUDA streams when the `cuda` feature is on and a device is present. The
//! driver library is loaded at run time, so nothing here needs CUDA to
//! build or run; without a device every function returns `None`.

use cudarc::driver::{CudaContext, CudaStream};
use std::sync::Arc;

/// `n` new streams on device 0, or `None` when there is no driver library,
/// no device, or the driver refuses.
pub fn new_streams(n: usize) -> Option<Vec<Arc<CudaStream>>> {
    // SAFETY: only checks whether the driver library can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return None;
    }
    // The loader panics on a library that lacks a symbol it needs: treat
    // that as "no usable CUDA" rather than let it escape.
    std::panic::catch_unwind(|| {
        if CudaContext::device_count().ok()? < 1 {
            return None;
        }
        let ctx = CudaContext::new(0).ok()?;
        (0..n).map(|_| ctx.new_stream().ok()).collect()
    })
    .ok()
    .flatten()
}
