//! Running one planned op: the only code that touches simulated memory,
//! shared by the sequential and the pipelined mode so both give the same
//! bits.

use super::kernels::{self, KernelImpl, Tile};
use super::memory::{copy_tile_in, copy_tile_out};
use super::plan::Step;
#[cfg(target_arch = "x86_64")]
use super::{ALIGNMENT, TILE_BYTES, TILE_DIM};

/// Asks the CPU to start fetching what `step` will read, so that data
/// another core just wrote arrives while the current op still runs. Only a
/// hint: it never faults and changes no memory.
pub(crate) fn prefetch(step: &Step, sram: *const f32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        let tile = |off: usize| {
            let base = sram.wrapping_add(off) as *const i8;
            for line in 0..TILE_BYTES / ALIGNMENT {
                // SAFETY: prefetch is a hint that never faults, whatever
                // the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(line * ALIGNMENT)) };
            }
        };
        match *step {
            Step::Exec { a, b, acc, zero_first } => {
                tile(a);
                tile(b);
                if !zero_first {
                    tile(acc);
                }
            }
            Step::Store { src, .. } => tile(src),
            Step::Load { dst, src, stride } => {
                let base = sram.wrapping_add(dst) as *const i8;
                for line in 0..TILE_BYTES / ALIGNMENT {
                    // SAFETY: as above, a hint (for writing: the lines come
                    // back from the core that last read them).
                    unsafe { _mm_prefetch::<_MM_HINT_ET0>(base.wrapping_add(line * ALIGNMENT)) };
                }
                for r in 0..TILE_DIM {
                    let row = src.wrapping_add(r * stride) as *const i8;
                    // SAFETY: as above, a hint.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(row);
                        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(ALIGNMENT));
                    }
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (step, sram);
}

/// Runs `step` against the SRAM at `sram`.
///
/// # Safety
/// `sram` must be the base of the SRAM the plan was validated against, the
/// tensor pointers in `step` must still be live, and no other thread may
/// access the SRAM ranges or tensor tile of `step` concurrently in a
/// conflicting way (the pipeline's dependencies guarantee this).
pub(crate) unsafe fn run_step(step: &Step, sram: *mut f32, kernel: KernelImpl) {
    // SAFETY (for the blocks below): validation put every SRAM range inside
    // the buffer and kept an EXEC's operands disjoint from its accumulator;
    // the caller's contract rules out concurrent conflicting access.
    match *step {
        Step::Load { dst, src, stride } => unsafe { copy_tile_in(sram.add(dst), src, stride) },
        Step::Exec { a, b, acc, zero_first } => {
            let (a, b, c) = unsafe {
                (&*(sram.add(a) as *const Tile), &*(sram.add(b) as *const Tile), &mut *(sram.add(acc) as *mut Tile))
            };
            if zero_first {
                kernels::matmul_tile_zeroed(c, a, b, kernel);
            } else {
                kernels::matmul_tile(c, a, b, kernel);
            }
        }
        Step::Store { src, dst, stride, relu, rows, cols } => {
            // Without ReLU a STORE only reads its tile, and an EXEC on
            // another lane may read it at the same time: no `&mut` then.
            if relu {
                kernels::relu_tile(unsafe { &mut *(sram.add(src) as *mut Tile) }, kernel);
            }
            unsafe { copy_tile_out(dst, stride, sram.add(src), rows, cols) }
        }
    }
}
