//! Simulated memories: 64-byte aligned float buffers, the DRAM tensor
//! store and the SRAM scratchpad.

use super::{ALIGNMENT, TILE_DIM};
use crate::error::{invalid, out_of_range, Result};
use std::collections::HashMap;

/// One cache line of floats; a `Vec` of these is 64-byte aligned.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; ALIGNMENT / 4]);

/// A zero-initialised, 64-byte aligned buffer of `len` floats.
pub(crate) struct AlignedFloats {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedFloats {
    /// Allocates `len` zeroed floats, failing cleanly instead of aborting
    /// when the allocation is refused.
    pub(crate) fn zeroed(len: usize) -> Result<Self> {
        let n = len.div_ceil(ALIGNMENT / 4);
        let mut lines = Vec::new();
        lines.try_reserve_exact(n).map_err(|_| invalid!("cannot allocate {} bytes", n * ALIGNMENT))?;
        lines.resize(n, Line::default());
        Ok(Self { lines, len })
    }

    /// The floats as a slice.
    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is repr(C) over [f32; 16] with no padding, so the
        // lines are `lines.len() * 16 >= len` contiguous initialised floats.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.len) }
    }

    /// The floats as a mutable slice.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), self.len) }
    }

    /// Raw base pointer, for the pipeline lanes that share the buffer under
    /// the hazard rules of the plan.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut f32 {
        self.lines.as_mut_ptr().cast::<f32>()
    }
}

/// Rounds `dim` up to a whole number of tiles.
pub(crate) fn pad_to_tile(dim: usize) -> Option<usize> {
    dim.checked_next_multiple_of(TILE_DIM)
}

/// A registered tensor: its shape and padded, zero-filled storage.
pub(crate) struct Tensor {
    pub(crate) name: String,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) padded_cols: usize,
    pub(crate) tile_rows: u32,
    pub(crate) tile_cols: u32,
    pub(crate) data: AlignedFloats,
}

impl Tensor {
    /// Float offset of the first element of tile (`tile_row`, `tile_col`).
    pub(crate) fn tile_offset(&self, tile_row: u32, tile_col: u32) -> usize {
        tile_row as usize * TILE_DIM * self.padded_cols + tile_col as usize * TILE_DIM
    }
}

/// Largest tile count per dimension: tile coordinates are u32 in schedules.
const MAX_TILES_PER_DIM: usize = u32::MAX as usize;

/// The simulated DRAM: tensors by id (0, 1, 2, … in registration order)
/// and by name.
#[derive(Default)]
pub(crate) struct TensorStore {
    tensors: Vec<Tensor>,
    by_name: HashMap<String, u32>,
}

impl TensorStore {
    /// Registers a zero-filled tensor and returns its id.
    pub(crate) fn register(&mut self, name: &str, rows: usize, cols: usize) -> Result<u32> {
        if name.is_empty() {
            return Err(invalid!("tensor name must not be empty"));
        }
        if rows == 0 || cols == 0 {
            return Err(invalid!("tensor '{name}': dimensions must be > 0, got {rows}x{cols}"));
        }
        if self.by_name.contains_key(name) {
            return Err(invalid!("tensor '{name}' is already registered"));
        }
        let id = u32::try_from(self.tensors.len()).map_err(|_| invalid!("too many tensors"))?;
        let too_big = || invalid!("tensor '{name}': {rows}x{cols} is too large");
        let padded_rows = pad_to_tile(rows).ok_or_else(too_big)?;
        let padded_cols = pad_to_tile(cols).ok_or_else(too_big)?;
        if padded_rows / TILE_DIM > MAX_TILES_PER_DIM || padded_cols / TILE_DIM > MAX_TILES_PER_DIM {
            return Err(too_big());
        }
        let floats =
            padded_rows.checked_mul(padded_cols).filter(|n| *n <= isize::MAX as usize / 4).ok_or_else(too_big)?;
        let data = AlignedFloats::zeroed(floats).map_err(|e| invalid!("tensor '{name}': {}", e.message()))?;
        self.tensors.push(Tensor {
            name: name.to_owned(),
            rows,
            cols,
            padded_cols,
            tile_rows: (padded_rows / TILE_DIM) as u32,
            tile_cols: (padded_cols / TILE_DIM) as u32,
            data,
        });
        self.by_name.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Number of registered tensors.
    pub(crate) fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Id of the tensor called `name`.
    pub(crate) fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The tensor with id `id`.
    pub(crate) fn get(&self, id: u32) -> Option<&Tensor> {
        self.tensors.get(id as usize)
    }

    /// All tensors, by id.
    pub(crate) fn all_mut(&mut self) -> &mut [Tensor] {
        &mut self.tensors
    }

    fn named(&self, name: &str, rows: usize, cols: usize, len: usize) -> Result<u32> {
        let id = self.id(name).ok_or_else(|| invalid!("tensor '{name}' is not registered"))?;
        let t = &self.tensors[id as usize];
        if (rows, cols) != (t.rows, t.cols) {
            return Err(invalid!(
                "tensor '{name}' is {}x{}, but the call passes a {rows}x{cols} array",
                t.rows,
                t.cols
            ));
        }
        if len != rows * cols {
            return Err(invalid!(
                "tensor '{name}': the buffer holds {len} floats, {rows}x{cols} needs {}",
                rows * cols
            ));
        }
        Ok(id)
    }

    /// Copies unpadded row-major `data` (`rows × cols`, the registered
    /// shape) into the tensor; the padding stays zero.
    pub(crate) fn set(&mut self, name: &str, data: &[f32], rows: usize, cols: usize) -> Result<()> {
        let id = self.named(name, rows, cols, data.len())?;
        let t = &mut self.tensors[id as usize];
        let stride = t.padded_cols;
        let dst = t.data.as_mut_slice();
        for (r, src_row) in data.chunks_exact(cols).enumerate() {
            dst[r * stride..r * stride + cols].copy_from_slice(src_row);
        }
        Ok(())
    }

    /// Copies the tensor, without padding, into `out` (`rows × cols`).
    pub(crate) fn get_into(&self, name: &str, out: &mut [f32], rows: usize, cols: usize) -> Result<()> {
        let id = self.named(name, rows, cols, out.len())?;
        let t = &self.tensors[id as usize];
        let stride = t.padded_cols;
        let src = t.data.as_slice();
        for (r, dst_row) in out.chunks_exact_mut(cols).enumerate() {
            dst_row.copy_from_slice(&src[r * stride..r * stride + cols]);
        }
        Ok(())
    }

    /// Checks that `id` and the tile coordinates exist.
    pub(crate) fn check_tile(&self, id: u32, tile_row: u32, tile_col: u32) -> Result<&Tensor> {
        let t = self
            .get(id)
            .ok_or_else(|| out_of_range!("tensor id {id} is not registered ({} tensors)", self.tensors.len()))?;
        if tile_row >= t.tile_rows || tile_col >= t.tile_cols {
            return Err(out_of_range!(
                "tile ({tile_row}, {tile_col}) is outside tensor '{}' ({} x {} tiles)",
                t.name,
                t.tile_rows,
                t.tile_cols
            ));
        }
        Ok(t)
    }
}

/// Copies a tile from strided tensor storage into a contiguous block.
///
/// # Safety
/// `src` must be valid for reads of 32 rows of 32 floats `stride` apart,
/// `dst` for writes of 1024 floats, and the two must not overlap.
#[inline]
pub(crate) unsafe fn copy_tile_in(dst: *mut f32, src: *const f32, stride: usize) {
    for r in 0..TILE_DIM {
        // SAFETY: row r lies inside both regions by the contract above.
        unsafe { std::ptr::copy_nonoverlapping(src.add(r * stride), dst.add(r * TILE_DIM), TILE_DIM) };
    }
}

/// Copies the top-left `rows × cols` of a contiguous tile out to strided
/// tensor storage (the rest of the tile would land in the padding).
///
/// # Safety
/// As [`copy_tile_in`] with the roles of source and destination swapped;
/// `rows` and `cols` are at most 32.
#[inline]
pub(crate) unsafe fn copy_tile_out(dst: *mut f32, stride: usize, src: *const f32, rows: usize, cols: usize) {
    debug_assert!(rows <= TILE_DIM && cols <= TILE_DIM);
    for r in 0..rows {
        // SAFETY: row r lies inside both regions by the contract above.
        unsafe { std::ptr::copy_nonoverlapping(src.add(r * TILE_DIM), dst.add(r * stride), cols) };
    }
}
