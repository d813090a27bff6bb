//! `mini_runtime.h`: the tiled matmul engine ("virtual accelerator").
//!
//! Status codes: `MR_OK` (0) on success; a negative `MR_ERR_*` code
//! otherwise, with `cllm_last_error()` naming the cause (for schedules:
//! the op index and the reason). `MR_ERR_OUT_OF_RANGE` marks addresses,
//! tensor ids and tile coordinates outside their object (C++ maps it to
//! `std::out_of_range`), `MR_ERR_INVALID_ARGUMENT` every other bad input
//! (`std::invalid_argument`). An engine handle may be used from several
//! threads; calls on one engine are serialised. Sizes are `size_t`: a
//! negative value cast to `size_t` is rejected as too large.

use super::{c_str, deref, guard, guard_map};
use crate::error::{invalid, Error, Result};
use crate::runtime::{self, builder, Engine, EngineConfig, EngineStats, KernelImpl, Op};
use parking_lot::Mutex;
use std::os::raw::{c_char, c_int};

/// Success.
pub const MR_OK: c_int = 0;
/// A bad argument or schedule; see `cllm_last_error()`.
pub const MR_ERR_INVALID_ARGUMENT: c_int = -1;
/// An address, tensor id or tile coordinate outside its object.
pub const MR_ERR_OUT_OF_RANGE: c_int = -2;
/// The call is not allowed in the engine's state (e.g. a trace without `trace`).
pub const MR_ERR_WRONG_STATE: c_int = -3;
/// The system refused something (threads, memory, files) or a lane failed.
pub const MR_ERR_SYSTEM: c_int = -4;

/// Tile edge (tiles are 32 x 32 fp32).
pub const MR_TILE_DIM: u32 = 32;
/// Bytes per tile.
pub const MR_TILE_BYTES: u32 = 4096;
/// Alignment of SRAM addresses and tensor storage.
pub const MR_ALIGNMENT: u32 = 64;
/// Most compute threads an engine may run.
pub const MR_MAX_COMPUTE_THREADS: u32 = 8;

/// Kernel selector: the fastest this CPU supports.
pub const MR_KERNEL_AUTO: i32 = -1;
/// Kernel selector: the plain reference loop.
pub const MR_KERNEL_REFERENCE: i32 = 0;
/// Kernel selector: AVX2 + FMA.
pub const MR_KERNEL_AVX2: i32 = 1;
/// Kernel selector: AVX-512F.
pub const MR_KERNEL_AVX512: i32 = 2;

/// `MrOp.kind`: a LOAD (DRAM tile -> SRAM).
pub const MR_OP_LOAD: u32 = 0;
/// `MrOp.kind`: an EXEC (ACC += A . B; zero ACC first when k == 0).
pub const MR_OP_EXEC: u32 = 1;
/// `MrOp.kind`: a STORE (SRAM accumulator -> DRAM tile, optional ReLU).
pub const MR_OP_STORE: u32 = 2;

/// Engine configuration; start from `mr_engine_config_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MrEngineConfig {
    /// SRAM bytes (default 262144; 4096 ..= 4 GiB).
    pub sram_bytes: usize,
    /// Record per-op timings for `mr_engine_write_trace` (nonzero = on).
    pub trace: u8,
    /// Pipelined DMA/compute threads instead of the calling thread (nonzero = on).
    pub threaded: u8,
    /// Compute threads in pipelined mode (default 1, 1..=8).
    pub compute_threads: u32,
    /// `MR_KERNEL_*` (default `MR_KERNEL_AUTO`).
    pub kernel: i32,
    /// Pin each pipeline thread to its own CPU when enough are usable
    /// (nonzero = on, the default).
    pub pin_threads: u8,
}

/// Operation counts and timings (ns), accumulated since creation or the
/// last `mr_engine_reset_stats`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MrStats {
    /// LOADs run.
    pub loads: u64,
    /// EXECs run.
    pub executes: u64,
    /// STOREs run.
    pub stores: u64,
    /// Time in LOAD/STORE.
    pub dma_busy_ns: u64,
    /// Time in EXEC (summed over compute threads).
    pub compute_busy_ns: u64,
    /// Time DMA and compute work overlapped (0 in sequential mode).
    pub overlap_ns: u64,
    /// Wall time of the execute calls.
    pub total_ns: u64,
    /// Times a DMA op waited for compute.
    pub dma_stalls: u64,
    /// Times an EXEC waited for another lane.
    pub compute_stalls: u64,
}

/// LOAD: copy tile (tile_row, tile_col) of a tensor into SRAM at dst_addr.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MrLoad {
    /// Tensor id.
    pub tensor_id: u32,
    /// Tile row.
    pub tile_row: u32,
    /// Tile column.
    pub tile_col: u32,
    /// SRAM byte address (multiple of 64).
    pub dst_addr: u32,
    /// Must be 4096.
    pub bytes: u32,
    /// Double-buffer tag, -1 = none.
    pub buffer: i32,
}

/// EXEC: ACC[acc_addr] += A[a_addr] . B[b_addr]; k == 0 zeroes ACC first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MrExec {
    /// Output tile row.
    pub m: u32,
    /// Output tile column.
    pub n: u32,
    /// Reduction step.
    pub k: u32,
    /// SRAM address of A.
    pub a_addr: u32,
    /// SRAM address of B.
    pub b_addr: u32,
    /// SRAM address of the accumulator.
    pub acc_addr: u32,
    /// Double-buffer tag, -1 = none.
    pub buffer: i32,
}

/// STORE: copy the accumulator at src_addr to a tensor tile.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MrStore {
    /// Tensor id.
    pub tensor_id: u32,
    /// Tile row.
    pub tile_row: u32,
    /// Tile column.
    pub tile_col: u32,
    /// SRAM address of the accumulator.
    pub src_addr: u32,
    /// Must be 4096.
    pub bytes: u32,
    /// Nonzero: apply ReLU to the accumulator (in place) before storing.
    pub apply_relu: u8,
}

/// The payload of an `MrOp`, selected by its `kind`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union MrOpPayload {
    /// For `MR_OP_LOAD`.
    pub load: MrLoad,
    /// For `MR_OP_EXEC`.
    pub exec: MrExec,
    /// For `MR_OP_STORE`.
    pub store: MrStore,
}

/// One schedule operation: `kind` (`MR_OP_*`) selects the payload member.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MrOp {
    /// `MR_OP_LOAD`, `MR_OP_EXEC` or `MR_OP_STORE`.
    pub kind: u32,
    /// The operation's fields.
    pub op: MrOpPayload,
}

/// A tensor as the schedule builder sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MrTensorRef {
    /// Tensor id from `mr_engine_register_tensor`.
    pub id: u32,
    /// Rows (unpadded).
    pub rows: usize,
    /// Columns (unpadded).
    pub cols: usize,
}

/// One layer for the builder: out = a . b, then ReLU when `relu` != 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MrMatmulLayer {
    /// Left operand.
    pub a: MrTensorRef,
    /// Right operand.
    pub b: MrTensorRef,
    /// Result.
    pub out: MrTensorRef,
    /// Nonzero: fuse a ReLU into the STOREs.
    pub relu: u8,
}

/// Facts about a built schedule.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MrScheduleInfo {
    /// Operations in total.
    pub ops: usize,
    /// LOADs.
    pub loads: usize,
    /// EXECs.
    pub executes: usize,
    /// STOREs.
    pub stores: usize,
    /// Highest SRAM use in bytes.
    pub peak_sram_bytes: usize,
    /// LOADs avoided because the tile was still resident.
    pub loads_eliminated: usize,
    /// Operand tiles evicted to make room.
    pub evictions: usize,
}

/// An engine (opaque).
pub struct MrEngine {
    inner: Mutex<EngineSlot>,
}

struct EngineSlot {
    engine: Engine,
    /// Reused conversion buffer for `mr_engine_execute`.
    ops: Vec<Op>,
}

/// A built schedule (opaque): its ops and facts.
pub struct MrSchedule {
    ops: Vec<MrOp>,
    native: Vec<Op>,
    info: MrScheduleInfo,
}

fn status(e: &Error) -> c_int {
    match e {
        Error::OutOfRange(_) => MR_ERR_OUT_OF_RANGE,
        Error::WrongState(_) => MR_ERR_WRONG_STATE,
        Error::System(_) => MR_ERR_SYSTEM,
        _ => MR_ERR_INVALID_ARGUMENT,
    }
}

/// Runs `f` behind the panic boundary and turns its error into a status.
fn guard_status(f: impl FnOnce() -> Result<()>) -> c_int {
    guard_map(|| f().map(|_| MR_OK), status)
}

fn kernel_from(k: i32) -> Result<Option<KernelImpl>> {
    match k {
        MR_KERNEL_AUTO => Ok(None),
        MR_KERNEL_REFERENCE => Ok(Some(KernelImpl::Reference)),
        MR_KERNEL_AVX2 => Ok(Some(KernelImpl::Avx2)),
        MR_KERNEL_AVX512 => Ok(Some(KernelImpl::Avx512)),
        _ => Err(invalid!("kernel must be MR_KERNEL_AUTO (-1), _REFERENCE (0), _AVX2 (1) or _AVX512 (2), got {k}")),
    }
}

fn kernel_code(k: KernelImpl) -> i32 {
    match k {
        KernelImpl::Reference => MR_KERNEL_REFERENCE,
        KernelImpl::Avx2 => MR_KERNEL_AVX2,
        KernelImpl::Avx512 => MR_KERNEL_AVX512,
    }
}

fn engine<'a>(e: *const MrEngine) -> Result<&'a MrEngine> {
    // SAFETY: every exported function documents that a non-NULL handle
    // must come from mr_engine_create and not be freed.
    unsafe { deref(e, "engine") }
}

/// Converts C ops to core ops, rejecting unknown kinds.
fn convert_ops(ops: &[MrOp], out: &mut Vec<Op>) -> Result<()> {
    out.clear();
    out.reserve(ops.len());
    for (i, op) in ops.iter().enumerate() {
        // SAFETY: `kind` selects the member the caller initialised; every
        // member is plain integers, so any bit pattern is a valid value.
        let converted = unsafe {
            match op.kind {
                MR_OP_LOAD => {
                    let l = op.op.load;
                    Op::Load(runtime::Load {
                        tensor_id: l.tensor_id,
                        tile_row: l.tile_row,
                        tile_col: l.tile_col,
                        dst_addr: l.dst_addr,
                        bytes: l.bytes,
                        buffer: l.buffer,
                    })
                }
                MR_OP_EXEC => {
                    let e = op.op.exec;
                    Op::Exec(runtime::Exec {
                        m: e.m,
                        n: e.n,
                        k: e.k,
                        a_addr: e.a_addr,
                        b_addr: e.b_addr,
                        acc_addr: e.acc_addr,
                        buffer: e.buffer,
                    })
                }
                MR_OP_STORE => {
                    let s = op.op.store;
                    Op::Store(runtime::Store {
                        tensor_id: s.tensor_id,
                        tile_row: s.tile_row,
                        tile_col: s.tile_col,
                        src_addr: s.src_addr,
                        bytes: s.bytes,
                        apply_relu: s.apply_relu != 0,
                    })
                }
                k => return Err(invalid!("op {i}: unknown kind {k} (MR_OP_LOAD 0, MR_OP_EXEC 1, MR_OP_STORE 2)")),
            }
        };
        out.push(converted);
    }
    Ok(())
}

fn to_c_op(op: &Op) -> MrOp {
    match *op {
        Op::Load(l) => mr_op_load(l.tensor_id, l.tile_row, l.tile_col, l.dst_addr, l.bytes, l.buffer),
        Op::Exec(e) => mr_op_exec(e.m, e.n, e.k, e.a_addr, e.b_addr, e.acc_addr, e.buffer),
        Op::Store(s) => mr_op_store(s.tensor_id, s.tile_row, s.tile_col, s.src_addr, s.bytes, s.apply_relu),
    }
}

/// The default configuration: 256 KiB SRAM, no trace, sequential, one
/// compute thread, automatic kernel.
#[no_mangle]
pub extern "C" fn mr_engine_config_default() -> MrEngineConfig {
    let d = EngineConfig::default();
    MrEngineConfig {
        sram_bytes: d.sram_bytes,
        trace: 0,
        threaded: 0,
        compute_threads: d.compute_threads as u32,
        kernel: MR_KERNEL_AUTO,
        pin_threads: u8::from(d.pin_threads),
    }
}

/// Creates an engine (in pipelined mode its threads start now). NULL on a
/// NULL or invalid config, an unavailable kernel, or when memory or
/// threads cannot be had; `cllm_last_error()` says which.
///
/// # Safety
/// `config` must be NULL or point to a valid `MrEngineConfig`.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_create(config: *const MrEngineConfig) -> *mut MrEngine {
    guard(std::ptr::null_mut(), || {
        // SAFETY: NULL or valid per the contract.
        let c = unsafe { deref(config, "config") }?;
        let engine = Engine::new(EngineConfig {
            sram_bytes: c.sram_bytes,
            trace: c.trace != 0,
            threaded: c.threaded != 0,
            compute_threads: c.compute_threads as usize,
            kernel: kernel_from(c.kernel)?,
            pin_threads: c.pin_threads != 0,
        })?;
        Ok(Box::into_raw(Box::new(MrEngine { inner: Mutex::new(EngineSlot { engine, ops: Vec::new() }) })))
    })
}

/// Frees an engine and joins its threads. NULL is a no-op.
///
/// # Safety
/// `engine` must be NULL or a handle from `mr_engine_create` not yet
/// freed, and no other call may be using it.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_free(engine: *mut MrEngine) {
    if !engine.is_null() {
        guard((), || {
            // SAFETY: created by Box::into_raw in mr_engine_create and
            // handed back once.
            drop(unsafe { Box::from_raw(engine) });
            Ok(())
        })
    }
}

/// Registers a zero-filled rows x cols tensor; returns its id (0, 1, 2, …
/// in registration order) or a negative `MR_ERR_*` code (empty or
/// duplicate name, zero or too-large dimensions).
///
/// # Safety
/// `engine` must be NULL or live; `name` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_register_tensor(
    engine: *mut MrEngine,
    name: *const c_char,
    rows: usize,
    cols: usize,
) -> i64 {
    guard_map(
        || {
            let e = self::engine(engine)?;
            // SAFETY: NULL or NUL-terminated per the contract.
            let name = unsafe { c_str(name, "name") }?;
            Ok(i64::from(e.inner.lock().engine.register_tensor(name, rows, cols)?))
        },
        |e| i64::from(status(e)),
    )
}

/// Id of the tensor called `name`, or `MR_ERR_INVALID_ARGUMENT` when it is
/// not registered.
///
/// # Safety
/// As for `mr_engine_register_tensor`.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_tensor_id(engine: *const MrEngine, name: *const c_char) -> i64 {
    guard_map(
        || {
            let e = self::engine(engine)?;
            // SAFETY: NULL or NUL-terminated per the contract.
            let name = unsafe { c_str(name, "name") }?;
            let id = e.inner.lock().engine.tensor_id(name);
            id.map(i64::from).ok_or_else(|| invalid!("tensor '{name}' is not registered"))
        },
        |e| i64::from(status(e)),
    )
}

/// Checks a caller's float buffer for `rows * cols` floats and returns the
/// count (no slice is made here: an output buffer may be uninitialised).
fn float_count(data: *const f32, rows: usize, cols: usize) -> Result<usize> {
    let n = rows
        .checked_mul(cols)
        .filter(|n| *n <= isize::MAX as usize / 4)
        .ok_or_else(|| invalid!("{rows}x{cols} is too large"))?;
    if data.is_null() {
        return Err(invalid!("data is NULL"));
    }
    if data.align_offset(std::mem::align_of::<f32>()) != 0 {
        return Err(invalid!("data is not aligned for float"));
    }
    Ok(n)
}

/// Copies row-major `data` (rows x cols, the registered shape) into the
/// tensor. `MR_ERR_INVALID_ARGUMENT` for an unknown name or another shape.
///
/// # Safety
/// `engine` NULL or live; `name` NULL or NUL-terminated; `data` NULL or
/// valid for `rows * cols` floats.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_set_tensor(
    engine: *mut MrEngine,
    name: *const c_char,
    data: *const f32,
    rows: usize,
    cols: usize,
) -> c_int {
    guard_status(|| {
        let e = self::engine(engine)?;
        let n = float_count(data, rows, cols)?;
        // SAFETY: per the contract: NUL-terminated name, n readable floats.
        let (name, data) = unsafe { (c_str(name, "name")?, std::slice::from_raw_parts(data, n)) };
        e.inner.lock().engine.set_tensor(name, data, rows, cols)
    })
}

/// Copies the tensor (registered shape rows x cols, no padding) into
/// `data`.
///
/// # Safety
/// As for `mr_engine_set_tensor`, with `data` writable.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_get_tensor(
    engine: *const MrEngine,
    name: *const c_char,
    data: *mut f32,
    rows: usize,
    cols: usize,
) -> c_int {
    guard_status(|| {
        let e = self::engine(engine)?;
        let n = float_count(data, rows, cols)?;
        // SAFETY: per the contract: NUL-terminated name, n writable floats;
        // the slice is only written (C buffers hold plain floats, never
        // trap representations).
        let (name, out) = unsafe { (c_str(name, "name")?, std::slice::from_raw_parts_mut(data, n)) };
        e.inner.lock().engine.get_tensor(name, out, rows, cols)
    })
}

/// Validates and runs `count` ops. An invalid schedule returns
/// `MR_ERR_OUT_OF_RANGE` or `MR_ERR_INVALID_ARGUMENT` naming the op, in
/// both modes, and changes no tensor. `ops` may be NULL when `count` is 0.
///
/// # Safety
/// `engine` NULL or live; `ops` NULL or valid for `count` ops.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_execute(engine: *mut MrEngine, ops: *const MrOp, count: usize) -> c_int {
    guard_status(|| {
        let e = self::engine(engine)?;
        let ops: &[MrOp] = if count == 0 {
            &[]
        } else if ops.is_null() {
            return Err(invalid!("ops is NULL but count is {count}"));
        } else if count > isize::MAX as usize / std::mem::size_of::<MrOp>() {
            return Err(invalid!("count {count} is too large"));
        } else {
            // SAFETY: non-NULL and valid for count ops per the contract.
            unsafe { std::slice::from_raw_parts(ops, count) }
        };
        let mut slot = e.inner.lock();
        let EngineSlot { engine, ops: buf } = &mut *slot;
        convert_ops(ops, buf)?;
        engine.execute(buf)
    })
}

/// Runs a schedule made by `mr_schedule_build` (no conversion needed).
///
/// # Safety
/// `engine` and `schedule` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_execute_schedule(engine: *mut MrEngine, schedule: *const MrSchedule) -> c_int {
    guard_status(|| {
        let e = self::engine(engine)?;
        // SAFETY: NULL or live per the contract.
        let s = unsafe { deref(schedule, "schedule") }?;
        e.inner.lock().engine.execute(&s.native)
    })
}

/// Writes the accumulated stats to `out`.
///
/// # Safety
/// `engine` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_stats(engine: *const MrEngine, out: *mut MrStats) -> c_int {
    guard_status(|| {
        let e = self::engine(engine)?;
        if out.is_null() {
            return Err(invalid!("out is NULL"));
        }
        let s: EngineStats = e.inner.lock().engine.stats();
        let v = MrStats {
            loads: s.loads,
            executes: s.executes,
            stores: s.stores,
            dma_busy_ns: s.dma_busy_ns,
            compute_busy_ns: s.compute_busy_ns,
            overlap_ns: s.overlap_ns,
            total_ns: s.total_ns,
            dma_stalls: s.dma_stalls,
            compute_stalls: s.compute_stalls,
        };
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out.write(v) };
        Ok(())
    })
}

/// Zeroes the stats.
///
/// # Safety
/// `engine` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_reset_stats(engine: *mut MrEngine) -> c_int {
    guard_status(|| {
        self::engine(engine)?.inner.lock().engine.reset_stats();
        Ok(())
    })
}

/// SRAM size in bytes; 0 for a NULL engine.
///
/// # Safety
/// `engine` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_sram_bytes(engine: *const MrEngine) -> usize {
    guard(0, || Ok(self::engine(engine)?.inner.lock().engine.sram_bytes()))
}

/// The `MR_KERNEL_*` the engine runs; negative `MR_ERR_*` for NULL.
///
/// # Safety
/// `engine` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_kernel(engine: *const MrEngine) -> i32 {
    guard_map(|| Ok(kernel_code(self::engine(engine)?.inner.lock().engine.kernel())), status)
}

/// Writes the last execute's trace as Chrome trace-event JSON to `path`
/// (open it in Perfetto or chrome://tracing). `MR_ERR_WRONG_STATE` when
/// the engine was created without `trace`, `MR_ERR_SYSTEM` when the file
/// cannot be written.
///
/// # Safety
/// `engine` NULL or live; `path` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn mr_engine_write_trace(engine: *const MrEngine, path: *const c_char) -> c_int {
    guard_status(|| {
        let e = self::engine(engine)?;
        // SAFETY: per the contract.
        let path = unsafe { c_str(path, "path") }?;
        e.inner.lock().engine.write_trace(std::path::Path::new(path))
    })
}

/// A LOAD op.
#[no_mangle]
pub extern "C" fn mr_op_load(
    tensor_id: u32,
    tile_row: u32,
    tile_col: u32,
    dst_addr: u32,
    bytes: u32,
    buffer: i32,
) -> MrOp {
    MrOp {
        kind: MR_OP_LOAD,
        op: MrOpPayload { load: MrLoad { tensor_id, tile_row, tile_col, dst_addr, bytes, buffer } },
    }
}

/// An EXEC op.
#[no_mangle]
pub extern "C" fn mr_op_exec(m: u32, n: u32, k: u32, a_addr: u32, b_addr: u32, acc_addr: u32, buffer: i32) -> MrOp {
    MrOp { kind: MR_OP_EXEC, op: MrOpPayload { exec: MrExec { m, n, k, a_addr, b_addr, acc_addr, buffer } } }
}

/// A STORE op.
#[no_mangle]
pub extern "C" fn mr_op_store(
    tensor_id: u32,
    tile_row: u32,
    tile_col: u32,
    src_addr: u32,
    bytes: u32,
    apply_relu: bool,
) -> MrOp {
    let apply_relu = u8::from(apply_relu);
    MrOp {
        kind: MR_OP_STORE,
        op: MrOpPayload { store: MrStore { tensor_id, tile_row, tile_col, src_addr, bytes, apply_relu } },
    }
}

/// # Safety
/// `p` NULL or valid for one tile of floats.
unsafe fn tile_ptr<'a>(p: *const f32, what: &str) -> Result<&'a runtime::kernels::Tile> {
    if p.is_null() {
        return Err(invalid!("{what} is NULL"));
    }
    if p.align_offset(std::mem::align_of::<f32>()) != 0 {
        return Err(invalid!("{what} is not aligned for float"));
    }
    // SAFETY: non-NULL, aligned, valid for 1024 floats per the contract.
    Ok(unsafe { &*(p as *const runtime::kernels::Tile) })
}

fn disjoint(a: *const f32, b: *const f32) -> bool {
    let (a, b) = (a as usize, b as usize);
    a.abs_diff(b) >= runtime::TILE_BYTES
}

/// C += A . B on 32x32 row-major fp32 tiles with the given `MR_KERNEL_*`
/// (an unavailable one falls back to the best available below it). The
/// tiles must not overlap C. Returns `MR_OK` or `MR_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// Each pointer NULL or valid for 1024 floats.
#[no_mangle]
pub unsafe extern "C" fn mr_matmul_tile(c: *mut f32, a: *const f32, b: *const f32, kernel: i32) -> c_int {
    // SAFETY: forwarded contract.
    guard_status(|| unsafe { tile_op(c, a, b, kernel, false) })
}

/// C += A . B, then C = max(0, C); as `mr_matmul_tile`.
///
/// # Safety
/// As for `mr_matmul_tile`.
#[no_mangle]
pub unsafe extern "C" fn mr_matmul_tile_relu(c: *mut f32, a: *const f32, b: *const f32, kernel: i32) -> c_int {
    // SAFETY: forwarded contract.
    guard_status(|| unsafe { tile_op(c, a, b, kernel, true) })
}

/// # Safety
/// As for `mr_matmul_tile`.
unsafe fn tile_op(c: *mut f32, a: *const f32, b: *const f32, kernel: i32, relu: bool) -> Result<()> {
    let k = kernel_from(kernel)?.unwrap_or_else(KernelImpl::best);
    // SAFETY: per the contract.
    let (a_t, b_t) = unsafe { (tile_ptr(a, "A")?, tile_ptr(b, "B")?) };
    // SAFETY: per the contract.
    unsafe { tile_ptr(c, "C") }?;
    if !disjoint(c, a) || !disjoint(c, b) {
        return Err(invalid!("C overlaps A or B"));
    }
    // SAFETY: valid, aligned, and disjoint from A and B (checked above).
    let c_t = unsafe { &mut *(c as *mut runtime::kernels::Tile) };
    if relu {
        runtime::kernels::matmul_tile_relu(c_t, a_t, b_t, k);
    } else {
        runtime::kernels::matmul_tile(c_t, a_t, b_t, k);
    }
    Ok(())
}

/// C = max(0, C) on a 32x32 tile with the given `MR_KERNEL_*`.
///
/// # Safety
/// `c` NULL or valid for 1024 floats.
#[no_mangle]
pub unsafe extern "C" fn mr_relu_tile(c: *mut f32, kernel: i32) -> c_int {
    guard_status(|| {
        let k = kernel_from(kernel)?.unwrap_or_else(KernelImpl::best);
        // SAFETY: per the contract.
        unsafe { tile_ptr(c, "C") }?;
        // SAFETY: valid and aligned (checked above), and unaliased here.
        runtime::kernels::relu_tile(unsafe { &mut *(c as *mut runtime::kernels::Tile) }, k);
        Ok(())
    })
}

/// Whether the `MR_KERNEL_*` can run on this CPU (false for unknown values).
#[no_mangle]
pub extern "C" fn mr_kernel_available(kernel: i32) -> bool {
    guard(false, || Ok(kernel_from(kernel)?.is_none_or(KernelImpl::is_available)))
}

/// The kernel `MR_KERNEL_AUTO` selects on this CPU.
#[no_mangle]
pub extern "C" fn mr_kernel_active() -> i32 {
    guard(MR_KERNEL_REFERENCE, || Ok(kernel_code(KernelImpl::best())))
}

/// The kernel's name ("Reference", "AVX2+FMA", "AVX-512"), static; NULL
/// for an unknown value. `MR_KERNEL_AUTO` names the active kernel.
#[no_mangle]
pub extern "C" fn mr_kernel_name(kernel: i32) -> *const c_char {
    guard(std::ptr::null(), || {
        let k = kernel_from(kernel)?.unwrap_or_else(KernelImpl::best);
        Ok(match k {
            KernelImpl::Reference => c"Reference".as_ptr(),
            KernelImpl::Avx2 => c"AVX2+FMA".as_ptr(),
            KernelImpl::Avx512 => c"AVX-512".as_ptr(),
        })
    })
}

/// Builds a schedule for a chain of matmul[+ReLU] layers: tiles of
/// 32x32x32, loop order m, n, k, first-fit SRAM allocation (64-byte
/// aligned), resident tiles reused, least-recently-used operand tiles
/// evicted when SRAM is full, `buffer = k % 2`. NULL when shapes do not
/// chain or `sram_bytes` is too small (the message says how much is
/// needed).
///
/// # Safety
/// `layers` NULL or valid for `count` layers.
#[no_mangle]
pub unsafe extern "C" fn mr_schedule_build(
    layers: *const MrMatmulLayer,
    count: usize,
    sram_bytes: usize,
) -> *mut MrSchedule {
    guard(std::ptr::null_mut(), || {
        if layers.is_null() && count != 0 {
            return Err(invalid!("layers is NULL but count is {count}"));
        }
        if count > isize::MAX as usize / std::mem::size_of::<MrMatmulLayer>() {
            return Err(invalid!("count {count} is too large"));
        }
        let layers: &[MrMatmulLayer] =
            // SAFETY: non-NULL (or count 0) and valid for count per the contract.
            if count == 0 { &[] } else { unsafe { std::slice::from_raw_parts(layers, count) } };
        let t = |r: &MrTensorRef| builder::TensorRef { id: r.id, rows: r.rows, cols: r.cols };
        let layers: Vec<builder::MatmulLayer> = layers
            .iter()
            .map(|l| builder::MatmulLayer { a: t(&l.a), b: t(&l.b), out: t(&l.out), relu: l.relu != 0 })
            .collect();
        let built = builder::build_schedule(&layers, &builder::BuildOptions { sram_bytes })?;
        let info = MrScheduleInfo {
            ops: built.ops.len(),
            loads: built.counts.loads,
            executes: built.counts.executes,
            stores: built.counts.stores,
            peak_sram_bytes: built.peak_sram_bytes,
            loads_eliminated: built.loads_eliminated,
            evictions: built.evictions,
        };
        let ops = built.ops.iter().map(to_c_op).collect();
        Ok(Box::into_raw(Box::new(MrSchedule { ops, native: built.ops, info })))
    })
}

/// Number of ops in the schedule; 0 for NULL.
///
/// # Safety
/// `schedule` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn mr_schedule_len(schedule: *const MrSchedule) -> usize {
    // SAFETY: NULL or live per the contract.
    guard(0, || Ok(unsafe { deref(schedule, "schedule") }?.ops.len()))
}

/// The schedule's ops (valid until `mr_schedule_free`); NULL for NULL.
///
/// # Safety
/// `schedule` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn mr_schedule_ops(schedule: *const MrSchedule) -> *const MrOp {
    // SAFETY: NULL or live per the contract.
    guard(std::ptr::null(), || Ok(unsafe { deref(schedule, "schedule") }?.ops.as_ptr()))
}

/// Writes the schedule's facts to `out`.
///
/// # Safety
/// `schedule` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mr_schedule_info(schedule: *const MrSchedule, out: *mut MrScheduleInfo) -> c_int {
    guard_status(|| {
        // SAFETY: NULL or live per the contract.
        let s = unsafe { deref(schedule, "schedule") }?;
        if out.is_null() {
            return Err(invalid!("out is NULL"));
        }
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out.write(s.info) };
        Ok(())
    })
}

/// Frees a schedule. NULL is a no-op.
///
/// # Safety
/// `schedule` NULL or from `mr_schedule_build`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn mr_schedule_free(schedule: *mut MrSchedule) {
    if !schedule.is_null() {
        // SAFETY: created by Box::into_raw and handed back once.
        guard((), || {
            // SAFETY: created by Box::into_raw and handed back once.
            drop(unsafe { Box::from_raw(schedule) });
            Ok(())
        })
    }
}
