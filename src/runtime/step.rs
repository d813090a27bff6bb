//! Running one planned op: the only code that touches simulated memory,
//! shared by the sequential and the pipelined mode so both give the same
//! bits.

use super::kernels::{self, KernelImpl, Tile};
use super::memory::{copy_tile_in, copy_tile_out};
use super::plan::Step;

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
            let tile = unsafe { &mut *(sram.add(src) as *mut Tile) };
            if relu {
                kernels::relu_tile(tile, kernel);
            }
            unsafe { copy_tile_out(dst, stride, tile.as_ptr(), rows, cols) }
        }
    }
}
