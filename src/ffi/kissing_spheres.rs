//! `cllm_kissing_spheres_threading.h`: the kissing-spheres scheduler.
//!
//! Spheres are logical scheduling domains (1, 13, 157 or 1885 of them);
//! a bounded set of worker threads (default: the usable CPUs) runs them.
//! Return values: 0 (`KS_OK`) on success, -1 (`KS_ERROR`) on bad input or a
//! call in the wrong state, `KS_TIMEOUT`, `KS_FULL` or `KS_EMPTY` where a
//! function documents them; `cllm_last_error()` explains every non-zero one.
//! Sphere ids follow the original numbering: 0 root, 1-12, 13-156, 157-1884.
//! Worker threads are numbered from 0.

use super::{count, deref, guard, timeout, write_c_string};
use crate::error::{invalid, Error};
use crate::spheres::{self, MessageKind, Priority, Shape, SphereOptions, SphereSystem};
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::Arc;

/// Success.
pub const KS_OK: c_int = 0;
/// Bad argument or wrong state; see `cllm_last_error()`.
pub const KS_ERROR: c_int = -1;
/// A wait ran out of time.
pub const KS_TIMEOUT: c_int = 1;
/// A mailbox is at capacity; the message was not delivered.
pub const KS_FULL: c_int = 2;
/// No message was waiting.
pub const KS_EMPTY: c_int = 3;

/// Most levels a tree may have.
pub const KS_MAX_LEVELS: c_int = 4;
/// Children (and symmetry groups) per sphere.
pub const KS_FANOUT: c_int = 12;
/// Spheres in a full 4-level tree.
pub const KS_MAX_SPHERES: c_int = 1885;

/// Sphere state: created, never started.
pub const SPHERE_INITIALIZING: c_int = 0;
/// Started, no work queued.
pub const SPHERE_READY: c_int = 1;
/// Running items.
pub const SPHERE_PROCESSING: c_int = 2;
/// Its worker waits at a barrier.
pub const SPHERE_WAITING: c_int = 3;
/// A reduction is summing buffers.
pub const SPHERE_ACCUMULATING: c_int = 4;
/// Reserved for parameter updates (training).
pub const SPHERE_UPDATING: c_int = 5;
/// Finished its work, queue empty.
pub const SPHERE_IDLE: c_int = 6;
/// Stop in progress.
pub const SPHERE_TERMINATING: c_int = 7;
/// Stopped.
pub const SPHERE_TERMINATED: c_int = 8;

/// Message priority: lowest.
pub const MSG_PRIORITY_LOW: u32 = 0;
/// Message priority: default.
pub const MSG_PRIORITY_NORMAL: u32 = 1;
/// Message priority: high.
pub const MSG_PRIORITY_HIGH: u32 = 2;
/// Message priority: delivered before all others.
pub const MSG_PRIORITY_CRITICAL: u32 = 3;

#[allow(missing_docs)]
mod message_types {
    pub const MSG_WORK_REQUEST: u32 = 0;
    pub const MSG_WORK_OFFER: u32 = 1;
    pub const MSG_WORK_ACCEPT: u32 = 2;
    pub const MSG_WORK_REJECT: u32 = 3;
    pub const MSG_GRADIENT_READY: u32 = 4;
    pub const MSG_GRADIENT_ACCUMULATE: u32 = 5;
    pub const MSG_GRADIENT_COMPLETE: u32 = 6;
    pub const MSG_WEIGHTS_UPDATED: u32 = 7;
    pub const MSG_WEIGHTS_REQUEST: u32 = 8;
    pub const MSG_WEIGHTS_BROADCAST: u32 = 9;
    pub const MSG_BOUNDARY_CROSSING: u32 = 10;
    pub const MSG_TWIN_PRIME_HIT: u32 = 11;
    pub const MSG_BOUNDARY_REGION_ENTER: u32 = 12;
    pub const MSG_BOUNDARY_REGION_EXIT: u32 = 13;
    pub const MSG_EPOCH_START: u32 = 14;
    pub const MSG_EPOCH_COMPLETE: u32 = 15;
    pub const MSG_BATCH_START: u32 = 16;
    pub const MSG_BATCH_COMPLETE: u32 = 17;
    pub const MSG_CHILD_SPAWN: u32 = 18;
    pub const MSG_CHILD_TERMINATE: u32 = 19;
    pub const MSG_PARENT_SYNC: u32 = 20;
    pub const MSG_SIBLING_DISCOVER: u32 = 21;
    pub const MSG_ERROR_REPORT: u32 = 22;
    pub const MSG_ERROR_RECOVERY: u32 = 23;
    pub const MSG_STATS_REQUEST: u32 = 24;
    pub const MSG_STATS_REPORT: u32 = 25;
    pub const MSG_SHUTDOWN_REQUEST: u32 = 26;
    pub const MSG_SHUTDOWN_ACK: u32 = 27;
}
pub use message_types::*;

/// Opaque handle to a kissing-spheres system.
pub struct KissingSpheresSystem {
    inner: SphereSystem,
}

/// Per-item work callback: `item` as distributed, `sphere_id` of the sphere
/// running it, and the `user_data` given with the callback. Called from the
/// worker threads, concurrently; it must not unwind (no C++ exceptions).
pub type KissingSpheresWorkFn = Option<unsafe extern "C" fn(item: u64, sphere_id: c_int, user_data: *mut c_void)>;

/// Creation options for `kissing_spheres_create_with_options`. Fill with
/// `kissing_spheres_default_options` first, then change what you need.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KissingSpheresOptions {
    /// Full tree of 1..4 levels; used when `num_spheres` is 0.
    pub num_levels: c_int,
    /// When > 0: the first `num_spheres` spheres (1..1885), last level partial.
    pub num_spheres: c_int,
    /// Worker threads; 0 = the CPUs this process may use.
    pub num_threads: c_int,
    /// Floats in each sphere's reduction buffer (0 = none).
    pub buffer_len: i64,
    /// Messages a mailbox holds before `KS_FULL` (default 256).
    pub mailbox_capacity: c_int,
    /// Pin worker i to the i-th usable CPU.
    pub pin_threads: bool,
}

/// What callers used to read from the original sphere struct.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KissingSphereInfo {
    /// Sphere id.
    pub sphere_id: c_int,
    /// Depth, 0 = root.
    pub level: c_int,
    /// Parent id, -1 for the root.
    pub parent_id: c_int,
    /// Symmetry group 0..11, -1 for the root (it spans all groups).
    pub symmetry_group: c_int,
    /// Number of valid entries in `children`.
    pub num_children: c_int,
    /// Children ids, ascending.
    pub children: [c_int; 12],
    /// Number of valid entries in `siblings`.
    pub num_siblings: c_int,
    /// Siblings ids (other children of the parent), ascending.
    pub siblings: [c_int; 11],
    /// `SPHERE_*` state.
    pub state: c_int,
    /// Worker thread that drains this sphere's queue first.
    pub owner_worker: c_int,
    /// Whether other workers may steal from it.
    pub stealing_enabled: bool,
    /// Items queued now.
    pub work_queue_size: u64,
    /// NUL-terminated name such as "L2-S13-G0".
    pub debug_name: [c_char; 32],
}

/// Counters of one sphere. Times are nanoseconds.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KissingSphereStats {
    /// Items this sphere ran.
    pub items_processed: u64,
    /// Items whose callback failed (Rust panics; C callbacks cannot fail).
    pub items_failed: u64,
    /// Time spent running items.
    pub busy_ns: u64,
    /// Items other workers stole from this sphere.
    pub stolen_from: u64,
    /// Items this sphere's worker stole from others.
    pub stolen_to: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages taken from its mailbox.
    pub messages_received: u64,
    /// Items queued now.
    pub queue_size: u64,
    /// Messages waiting now.
    pub mailbox_size: u64,
}

/// A message between spheres.
/// cbindgen:field-names=[type, priority, sender_id, receiver_id, sequence, payload]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KissingSphereMessage {
    /// `MSG_*` type.
    pub type_: u32,
    /// `MSG_PRIORITY_*`.
    pub priority: u32,
    /// Sending sphere.
    pub sender_id: c_int,
    /// Receiving sphere.
    pub receiver_id: c_int,
    /// Arrival number in the receiver's mailbox, from 1.
    pub sequence: u64,
    /// Free payload.
    pub payload: [u64; 4],
}

/// The C caller's callback and context; the caller promises thread safety.
struct CCallback {
    f: unsafe extern "C" fn(u64, c_int, *mut c_void),
    user_data: *mut c_void,
}
// SAFETY: the header documents that the callback is called concurrently from
// worker threads with the same user_data; making that safe is the caller's
// part of the contract, as with pthread_create's argument.
unsafe impl Send for CCallback {}
// SAFETY: as above; the pointer is only passed back to the caller's code.
unsafe impl Sync for CCallback {}

impl CCallback {
    fn call(&self, item: u64, sphere: usize) {
        // SAFETY: the caller vouched for the callback and its data.
        unsafe { (self.f)(item, sphere as c_int, self.user_data) }
    }
}

/// # Safety
/// `sys` must be NULL or a handle from `kissing_spheres_create*` not yet freed.
unsafe fn system<'a>(sys: *const KissingSpheresSystem) -> Result<&'a SphereSystem, Error> {
    // SAFETY: forwarded caller contract.
    Ok(&unsafe { deref(sys, "system") }?.inner)
}

fn sphere_id(id: c_int) -> Result<usize, Error> {
    usize::try_from(id).map_err(|_| invalid!("sphere id must not be negative, got {id}"))
}

fn boxed(inner: SphereSystem) -> *mut KissingSpheresSystem {
    Box::into_raw(Box::new(KissingSpheresSystem { inner }))
}

/// Creates a full tree of `num_levels` levels (1..4: 1, 13, 157 or 1885
/// spheres) run by as many worker threads as the process may use.
/// NULL on a bad level.
#[no_mangle]
pub extern "C" fn kissing_spheres_create(num_levels: c_int) -> *mut KissingSpheresSystem {
    guard(std::ptr::null_mut(), || {
        let levels = usize::try_from(num_levels).map_err(|_| invalid!("num_levels must be 1..4, got {num_levels}"))?;
        Ok(boxed(SphereSystem::with_levels(levels)?))
    })
}

/// Creates the dynamic layout for `num_threads` worker threads (0 = usable
/// CPUs - 1, at least 1): as many spheres as threads (at most 1885), levels
/// per `kissing_spheres_hierarchy_levels`, the last level partial.
/// NULL when negative or above 1024.
#[no_mangle]
pub extern "C" fn kissing_spheres_create_dynamic(num_threads: c_int) -> *mut KissingSpheresSystem {
    guard(std::ptr::null_mut(), || {
        let n = usize::try_from(num_threads)
            .map_err(|_| invalid!("num_threads must not be negative, got {num_threads}"))?;
        Ok(boxed(SphereSystem::dynamic(n)?))
    })
}

/// Fills `out` with the defaults: 2 levels, auto threads, no buffers,
/// mailboxes of 256, no pinning. -1 when `out` is NULL.
///
/// # Safety
/// `out` must be NULL or valid for writing one `KissingSpheresOptions`.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_default_options(out: *mut KissingSpheresOptions) -> c_int {
    guard(KS_ERROR, || {
        let d = SphereOptions::default();
        let v = KissingSpheresOptions {
            num_levels: 2,
            num_spheres: 0,
            num_threads: 0,
            buffer_len: 0,
            mailbox_capacity: d.mailbox_capacity as c_int,
            pin_threads: false,
        };
        // SAFETY: caller contract; NULL rejected by as_mut.
        *unsafe { out.as_mut() }.ok_or_else(|| invalid!("options is NULL"))? = v;
        Ok(KS_OK)
    })
}

/// Creates a system from `options`. NULL on any out-of-range field.
///
/// # Safety
/// `options` must be NULL or point to a `KissingSpheresOptions`.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_create_with_options(
    options: *const KissingSpheresOptions,
) -> *mut KissingSpheresSystem {
    guard(std::ptr::null_mut(), || {
        // SAFETY: caller contract.
        let o = unsafe { deref(options, "options") }?;
        let shape = if o.num_spheres != 0 {
            Shape::Spheres(count(o.num_spheres.into(), "num_spheres")?)
        } else {
            Shape::Levels(
                usize::try_from(o.num_levels).map_err(|_| invalid!("num_levels must be 1..4, got {}", o.num_levels))?,
            )
        };
        let opts = SphereOptions {
            shape,
            threads: count(o.num_threads.into(), "num_threads")?,
            buffer_len: count(o.buffer_len, "buffer_len")?,
            mailbox_capacity: count(o.mailbox_capacity.into(), "mailbox_capacity")?,
            pin_threads: o.pin_threads,
        };
        Ok(boxed(SphereSystem::new(&opts)?))
    })
}

/// Levels the dynamic rule gives for `num_threads`: 1 if <= 1, 2 if <= 13,
/// 3 if <= 157, else 4. -1 when negative.
#[no_mangle]
pub extern "C" fn kissing_spheres_hierarchy_levels(num_threads: c_int) -> c_int {
    guard(KS_ERROR, || Ok(spheres::hierarchy_levels(count(num_threads.into(), "num_threads")?) as c_int))
}

/// Starts the worker threads; work queued before start begins to run.
/// -1 when NULL, already running, called from one of the system's own
/// callbacks, or when the OS refuses a thread (then nothing has run and the
/// queues are as they were).
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_start(system: *mut KissingSpheresSystem) -> c_int {
    // SAFETY: caller contract.
    guard(KS_ERROR, || unsafe { self::system(system) }?.start().map(|_| KS_OK))
}

/// Stops the workers after they have processed every queued item (items
/// queued by callbacks during the drain too). Items other threads distribute
/// while the stop is in progress either run or stay queued for the next
/// start (`kissing_spheres_pending` tells). -1 when NULL, not running, or
/// called from one of the system's own callbacks.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_stop(system: *mut KissingSpheresSystem) -> c_int {
    // SAFETY: caller contract.
    guard(KS_ERROR, || unsafe { self::system(system) }?.stop().map(|_| KS_OK))
}

/// Frees the system. A running system is stopped first (its queued work
/// drained); work queued on a system that was never started (or stopped)
/// is discarded — call `kissing_spheres_pending` first to know. NULL is a
/// no-op. Calling it from the system's own callback is refused (error set).
///
/// # Safety
/// `system` must be NULL or a live handle; it is invalid afterwards.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_free(system: *mut KissingSpheresSystem) {
    guard((), || {
        if system.is_null() {
            return Ok(());
        }
        // SAFETY: non-NULL live handle per the caller contract.
        if unsafe { &(*system).inner }.current_worker_index().is_some() {
            return Err(Error::WrongState("kissing_spheres_free called from a worker of the same system".into()));
        }
        // SAFETY: the handle came from Box::into_raw and is freed once.
        drop(unsafe { Box::from_raw(system) });
        Ok(())
    })
}

/// Queues a copy of `work_items[0..num_items)` spread over the leaf spheres
/// (root -> groups -> leaves). Allowed before start (runs on start), while
/// running, and from callbacks. Every item is processed exactly once.
/// -1 when NULL (with num_items > 0) or num_items < 0.
///
/// # Safety
/// `work_items` must be valid for `num_items` reads.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_distribute_work(
    system: *mut KissingSpheresSystem,
    work_items: *mut u64,
    num_items: c_int,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        // SAFETY: caller contract on work_items / num_items.
        let items = unsafe { items_slice(work_items, num_items.into()) }?;
        s.distribute(items).map(|_| KS_OK)
    })
}

/// # Safety
/// `p` must be valid for `n` reads when non-NULL.
unsafe fn items_slice<'a>(p: *const u64, n: i64) -> Result<&'a [u64], Error> {
    let n = count(n, "num_items")?;
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid!("work_items is NULL with {n} items"));
    }
    // SAFETY: non-NULL and valid for n reads per the caller contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Queues the items `first, first+1, ..., first+count-1` without an array.
/// -1 when NULL, the range overflows, `count` exceeds INT64_MAX, or the
/// pending total would exceed INT64_MAX.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_distribute_range(
    system: *mut KissingSpheresSystem,
    first: u64,
    count: u64,
) -> c_int {
    // SAFETY: caller contract.
    guard(KS_ERROR, || unsafe { self::system(system) }?.distribute_range(first, count).map(|_| KS_OK))
}

/// Queues items on one sphere directly, one queue entry per item: its
/// owner runs them oldest first, a thief takes the newest. -1 on a bad id,
/// NULL items with `num_items` > 0, a negative count, more entries than fit
/// in memory, or a pending total beyond INT64_MAX.
///
/// # Safety
/// `items` must be valid for `num_items` reads.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_enqueue(
    system: *mut KissingSpheresSystem,
    sphere_id: c_int,
    items: *const u64,
    num_items: c_int,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        // SAFETY: caller contract.
        let items = unsafe { items_slice(items, num_items.into()) }?;
        s.enqueue(self::sphere_id(sphere_id)?, items).map(|_| KS_OK)
    })
}

/// Allows (`enabled` true, the default) or forbids other workers to steal
/// from a sphere. -1 on a bad id.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_set_stealing(
    system: *mut KissingSpheresSystem,
    sphere_id: c_int,
    enabled: bool,
) -> c_int {
    // SAFETY: caller contract.
    guard(KS_ERROR, || {
        unsafe { self::system(system) }?.set_stealing(self::sphere_id(sphere_id)?, enabled).map(|_| KS_OK)
    })
}

/// Sets the per-item callback (NULL = only count items). Only while
/// stopped: -1 when running.
///
/// # Safety
/// `system` must be NULL or a live handle; `callback` must be safe to call
/// concurrently with `user_data` until replaced or the system is freed.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_set_work_callback(
    system: *mut KissingSpheresSystem,
    callback: KissingSpheresWorkFn,
    user_data: *mut c_void,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        let f: Option<spheres::WorkFn> = callback.map(|f| {
            let cb = CCallback { f, user_data };
            Arc::new(move |item: u64, sphere: usize| cb.call(item, sphere)) as spheres::WorkFn
        });
        s.set_work_fn(f).map(|_| KS_OK)
    })
}

/// Waits until every distributed item has been processed, parking (no
/// sleeping, no polling). `timeout_ms` < 0 waits without limit.
/// 0 done, `KS_TIMEOUT` on timeout, -1 when NULL, called from a callback,
/// or items are queued while the system is stopped.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_wait(system: *mut KissingSpheresSystem, timeout_ms: i64) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let done = unsafe { self::system(system) }?.wait(timeout(timeout_ms))?;
        if done {
            Ok(KS_OK)
        } else {
            super::set_error("timeout: work still pending after the timeout");
            Ok(KS_TIMEOUT)
        }
    })
}

/// Items distributed and not yet finished. -1 when NULL.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_pending(system: *mut KissingSpheresSystem) -> i64 {
    // SAFETY: caller contract.
    guard(-1, || Ok(unsafe { self::system(system) }?.pending() as i64))
}

/// Removes queued items that have not started and returns how many (they
/// never run). -1 when NULL.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_cancel_pending(system: *mut KissingSpheresSystem) -> i64 {
    // SAFETY: caller contract.
    guard(-1, || Ok(unsafe { self::system(system) }?.cancel_pending() as i64))
}

/// 1 when running, 0 when stopped, -1 when NULL.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_is_running(system: *mut KissingSpheresSystem) -> c_int {
    // SAFETY: caller contract.
    guard(KS_ERROR, || Ok(unsafe { self::system(system) }?.is_running() as c_int))
}

/// Levels in the tree. -1 when NULL.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_num_levels(system: *const KissingSpheresSystem) -> c_int {
    // SAFETY: caller contract.
    guard(KS_ERROR, || Ok(unsafe { self::system(system) }?.hierarchy().levels() as c_int))
}

/// Spheres on `level` (0 for an empty level below the last). -1 when NULL
/// or the level is outside 0..3.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_spheres_per_level(system: *const KissingSpheresSystem, level: c_int) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        match usize::try_from(level) {
            Ok(l) if l < spheres::MAX_LEVELS => Ok(s.hierarchy().spheres_on_level(l) as c_int),
            _ => Err(invalid!("level must be 0..3, got {level}")),
        }
    })
}

/// Total spheres. -1 when NULL.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_total_spheres(system: *const KissingSpheresSystem) -> c_int {
    // SAFETY: caller contract.
    guard(KS_ERROR, || Ok(unsafe { self::system(system) }?.hierarchy().len() as c_int))
}

/// Worker threads the system runs while started. -1 when NULL.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_worker_threads(system: *const KissingSpheresSystem) -> c_int {
    // SAFETY: caller contract.
    guard(KS_ERROR, || Ok(unsafe { self::system(system) }?.worker_threads() as c_int))
}

/// The sphere worker `worker` (0-based) reports for work it stole. -1 when
/// out of range.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_worker_home(system: *const KissingSpheresSystem, worker: c_int) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        let w = usize::try_from(worker).ok();
        w.and_then(|w| s.worker_home(w))
            .map(|h| h as c_int)
            .ok_or_else(|| invalid!("worker must be 0..{}, got {worker}", s.worker_threads()))
    })
}

/// Fills `out` with a sphere's place in the tree and current state.
/// -1 on NULL or a bad id.
///
/// # Safety
/// `system` must be NULL or a live handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_sphere_info(
    system: *const KissingSpheresSystem,
    sphere_id: c_int,
    out: *mut KissingSphereInfo,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        // SAFETY: caller contract; NULL rejected.
        let out = unsafe { out.as_mut() }.ok_or_else(|| invalid!("out is NULL"))?;
        let id = self::sphere_id(sphere_id)?;
        let node =
            s.hierarchy().node(id).ok_or_else(|| invalid!("sphere id {id} out of range 0..{}", s.hierarchy().len()))?;
        let mut children = [-1; 12];
        for (d, &c) in children.iter_mut().zip(&node.children) {
            *d = c as c_int;
        }
        let sibs = s.hierarchy().siblings(id);
        let mut siblings = [-1; 11];
        for (d, &c) in siblings.iter_mut().zip(&sibs) {
            *d = c as c_int;
        }
        let name = format!("L{}-S{}-G{}", node.level, id, node.group.map_or("all".into(), |g| g.to_string()));
        let mut debug_name = [0 as c_char; 32];
        for (d, b) in debug_name.iter_mut().zip(name.bytes().take(31)) {
            *d = b as c_char;
        }
        *out = KissingSphereInfo {
            sphere_id: id as c_int,
            level: node.level as c_int,
            parent_id: node.parent.map_or(-1, |p| p as c_int),
            symmetry_group: node.group.map_or(-1, |g| g as c_int),
            num_children: node.children.len() as c_int,
            children,
            num_siblings: sibs.len() as c_int,
            siblings,
            state: s.sphere_state(id)? as c_int,
            owner_worker: s.sphere_owner(id).map_or(-1, |w| w as c_int),
            stealing_enabled: s.stealing_enabled(id)?,
            work_queue_size: s.queue_len(id)? as u64,
            debug_name,
        };
        Ok(KS_OK)
    })
}

/// Fills `out` with a sphere's counters. -1 on NULL or a bad id.
///
/// # Safety
/// `system` must be NULL or a live handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_sphere_stats(
    system: *const KissingSpheresSystem,
    sphere_id: c_int,
    out: *mut KissingSphereStats,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        // SAFETY: caller contract; NULL rejected.
        let out = unsafe { out.as_mut() }.ok_or_else(|| invalid!("out is NULL"))?;
        let st = s.sphere_stats(self::sphere_id(sphere_id)?)?;
        *out = KissingSphereStats {
            items_processed: st.items_processed,
            items_failed: st.items_failed,
            busy_ns: st.busy_ns,
            stolen_from: st.stolen_from,
            stolen_to: st.stolen_to,
            messages_sent: st.messages_sent,
            messages_received: st.messages_received,
            queue_size: st.queue_size,
            mailbox_size: st.mailbox_size,
        };
        Ok(KS_OK)
    })
}

/// Prints the statistics table to stdout (C stdio is flushed first so the
/// output interleaves correctly with printf). Prints nothing for NULL (and
/// sets the last error).
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_print_stats(system: *mut KissingSpheresSystem) {
    guard((), || {
        // SAFETY: caller contract.
        let table = unsafe { self::system(system) }?.stats_table();
        // SAFETY: fflush(NULL) flushes every C output stream.
        unsafe { libc::fflush(std::ptr::null_mut()) };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(table.as_bytes()).and_then(|_| out.flush()).map_err(|e| Error::System(e.to_string()))
    })
}

/// Writes every statistic as JSON into `buf` (snprintf-style: at most
/// `capacity - 1` bytes and a NUL) and returns the full length, so a call
/// with `buf` NULL and `capacity` 0 tells the size needed. -1 on error.
///
/// # Safety
/// `buf` must be NULL (capacity 0) or valid for `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_stats_json(
    system: *const KissingSpheresSystem,
    buf: *mut c_char,
    capacity: usize,
) -> i64 {
    guard(-1, || {
        // SAFETY: caller contract.
        let json = unsafe { self::system(system) }?.stats_json();
        // SAFETY: caller contract on buf/capacity.
        unsafe { write_c_string(&json, buf, capacity) }
    })
}

/// The statistics as a JSON string to free with `cllm_string_free`.
/// NULL on error.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_stats_json_alloc(system: *const KissingSpheresSystem) -> *mut c_char {
    guard(std::ptr::null_mut(), || {
        // SAFETY: caller contract.
        let json = unsafe { self::system(system) }?.stats_json();
        Ok(CString::new(json).map_err(|e| Error::System(e.to_string()))?.into_raw())
    })
}

/// Writes the readable statistics table into `buf` (snprintf-style, like
/// `kissing_spheres_stats_json`). -1 on error.
///
/// # Safety
/// `buf` must be NULL (capacity 0) or valid for `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_stats_table(
    system: *const KissingSpheresSystem,
    buf: *mut c_char,
    capacity: usize,
) -> i64 {
    guard(-1, || {
        // SAFETY: caller contract.
        let t = unsafe { self::system(system) }?.stats_table();
        // SAFETY: caller contract on buf/capacity.
        unsafe { write_c_string(&t, buf, capacity) }
    })
}

/// Sends a message from sphere `from_id` to `to_id` (its parent, a child or
/// a sibling). `payload` may be NULL (zeros) or point to 4 words.
/// 0 delivered, `KS_FULL` when the receiver's mailbox is at capacity,
/// -1 on a bad id, type, priority or an unrelated pair.
///
/// # Safety
/// `payload` must be NULL or valid for 4 reads.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_send_message(
    system: *mut KissingSpheresSystem,
    from_id: c_int,
    to_id: c_int,
    message_type: u32,
    priority: u32,
    payload: *const u64,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        let kind = MessageKind::from_u32(message_type)
            .ok_or_else(|| invalid!("message type must be 0..27, got {message_type}"))?;
        let prio = Priority::from_u32(priority).ok_or_else(|| invalid!("priority must be 0..3, got {priority}"))?;
        let mut words = [0u64; 4];
        if !payload.is_null() {
            // SAFETY: non-NULL payload is valid for 4 reads per the contract.
            words.copy_from_slice(unsafe { std::slice::from_raw_parts(payload, 4) });
        }
        match s.send(kind, prio, self::sphere_id(from_id)?, self::sphere_id(to_id)?, words) {
            Ok(()) => Ok(KS_OK),
            Err(Error::Full(m)) => {
                super::set_error(&format!("full: {m}"));
                Ok(KS_FULL)
            }
            Err(e) => Err(e),
        }
    })
}

fn message_out(m: spheres::Message) -> KissingSphereMessage {
    KissingSphereMessage {
        type_: m.kind as u32,
        priority: m.priority as u32,
        sender_id: m.sender as c_int,
        receiver_id: m.receiver as c_int,
        sequence: m.sequence,
        payload: m.payload,
    }
}

/// Takes the most urgent message of a sphere (higher priority first, FIFO
/// within a priority), waiting up to `timeout_ms` (< 0: no limit).
/// 0 with `*out` filled, `KS_TIMEOUT`, or -1 on bad input.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_receive_message(
    system: *mut KissingSpheresSystem,
    sphere_id: c_int,
    out: *mut KissingSphereMessage,
    timeout_ms: i64,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        // SAFETY: caller contract; NULL rejected.
        let out = unsafe { out.as_mut() }.ok_or_else(|| invalid!("out is NULL"))?;
        match s.receive(self::sphere_id(sphere_id)?, timeout(timeout_ms)) {
            Ok(m) => {
                *out = message_out(m);
                Ok(KS_OK)
            }
            Err(Error::Timeout(m)) => {
                super::set_error(&format!("timeout: {m}"));
                Ok(KS_TIMEOUT)
            }
            Err(e) => Err(e),
        }
    })
}

/// Like `kissing_spheres_receive_message` without waiting: 0 with `*out`
/// filled, `KS_EMPTY` when no message waits, -1 on bad input.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_try_receive_message(
    system: *mut KissingSpheresSystem,
    sphere_id: c_int,
    out: *mut KissingSphereMessage,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        // SAFETY: caller contract; NULL rejected.
        let out = unsafe { out.as_mut() }.ok_or_else(|| invalid!("out is NULL"))?;
        match s.try_receive(self::sphere_id(sphere_id)?)? {
            Some(m) => {
                *out = message_out(m);
                Ok(KS_OK)
            }
            None => {
                super::set_error("empty: no message waiting");
                Ok(KS_EMPTY)
            }
        }
    })
}

/// Floats in every sphere's reduction buffer. -1 when NULL.
///
/// # Safety
/// `system` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_buffer_len(system: *const KissingSpheresSystem) -> i64 {
    // SAFETY: caller contract.
    guard(-1, || Ok(unsafe { self::system(system) }?.buffer_len() as i64))
}

/// Adds `values[0..len)` into a sphere's reduction buffer under its lock
/// (safe from any thread). `len` must equal the buffer length. -1 on error.
///
/// # Safety
/// `values` must be valid for `len` reads.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_accumulate(
    system: *mut KissingSpheresSystem,
    sphere_id: c_int,
    values: *const f32,
    len: i64,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        let n = count(len, "len")?;
        if values.is_null() && n > 0 {
            return Err(invalid!("values is NULL"));
        }
        let v: &[f32] = if n == 0 {
            &[]
        } else {
            // SAFETY: non-NULL and valid for n reads per the contract.
            unsafe { std::slice::from_raw_parts(values, n) }
        };
        s.accumulate(self::sphere_id(sphere_id)?, v).map(|_| KS_OK)
    })
}

/// Sums all buffers children -> parent -> root in a fixed order (children
/// ascending, deepest level first), writes the root total to `out[0..len)`
/// and zeroes every buffer. Same buffers in, same bits out, whatever the
/// thread timing. Do not accumulate concurrently. -1 on error.
///
/// # Safety
/// `out` must be valid for `len` writes.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_reduce(system: *mut KissingSpheresSystem, out: *mut f32, len: i64) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        let n = count(len, "len")?;
        if out.is_null() && n > 0 {
            return Err(invalid!("out is NULL"));
        }
        let o: &mut [f32] = if n == 0 {
            &mut []
        } else {
            // SAFETY: non-NULL and valid for n writes per the contract.
            unsafe { std::slice::from_raw_parts_mut(out, n) }
        };
        s.reduce(o).map(|_| KS_OK)
    })
}

/// Waits at the barrier of the workers whose home sphere is on `level`.
/// Only from inside a work callback of such a worker. Writes the barrier's
/// generation (from 1) to `generation` if not NULL. 0, `KS_TIMEOUT`
/// (the caller withdrew; the barrier stays usable) or -1.
///
/// # Safety
/// `generation` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_level_barrier(
    system: *mut KissingSpheresSystem,
    level: c_int,
    timeout_ms: i64,
    generation: *mut u64,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        let l = usize::try_from(level).map_err(|_| invalid!("level must not be negative, got {level}"))?;
        // SAFETY: caller contract on generation.
        unsafe { barrier_result(s.level_barrier(l, timeout(timeout_ms)), generation) }
    })
}

/// Waits until every worker of the system has arrived (an epoch boundary).
/// Only from inside a work callback. Writes the epoch number (from 1) to
/// `epoch` if not NULL. 0, `KS_TIMEOUT` or -1.
///
/// # Safety
/// `epoch` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_epoch_barrier(
    system: *mut KissingSpheresSystem,
    timeout_ms: i64,
    epoch: *mut u64,
) -> c_int {
    guard(KS_ERROR, || {
        // SAFETY: caller contract.
        let s = unsafe { self::system(system) }?;
        // SAFETY: caller contract on epoch.
        unsafe { barrier_result(s.epoch_barrier(timeout(timeout_ms)), epoch) }
    })
}

/// # Safety
/// `out` must be NULL or writable.
unsafe fn barrier_result(r: Result<u64, Error>, out: *mut u64) -> Result<c_int, Error> {
    match r {
        Ok(g) => {
            // SAFETY: caller contract; NULL skipped.
            if let Some(o) = unsafe { out.as_mut() } {
                *o = g;
            }
            Ok(KS_OK)
        }
        Err(Error::Timeout(m)) => {
            super::set_error(&format!("timeout: {m}"));
            Ok(KS_TIMEOUT)
        }
        Err(e) => Err(e),
    }
}

/// Symmetry groups worker `worker` of `num_workers` handles under the
/// original rule (group g -> worker g mod W for W <= 12; one each for the
/// first 12 workers beyond). Writes up to `capacity` ids to `groups_out`
/// and returns how many there are; -1 on bad input.
///
/// # Safety
/// `groups_out` must be NULL (capacity 0) or valid for `capacity` writes.
#[no_mangle]
pub unsafe extern "C" fn kissing_spheres_groups_for_worker(
    num_workers: c_int,
    worker: c_int,
    groups_out: *mut c_int,
    capacity: c_int,
) -> c_int {
    guard(KS_ERROR, || {
        let w = count(num_workers.into(), "num_workers")?;
        let t = count(worker.into(), "worker")?;
        let cap = count(capacity.into(), "capacity")?;
        if w == 0 || t >= w {
            return Err(invalid!("worker {worker} out of range for {num_workers} workers"));
        }
        if groups_out.is_null() && cap > 0 {
            return Err(invalid!("groups_out is NULL"));
        }
        let groups = spheres::groups_for_worker(w, t);
        for (i, g) in groups.iter().take(cap).enumerate() {
            // SAFETY: i < capacity and groups_out is valid for capacity writes.
            unsafe { *groups_out.add(i) = *g as c_int };
        }
        Ok(groups.len() as c_int)
    })
}

/// The worker owning symmetry group `group` (0..11) among `num_workers`.
/// -1 on bad input.
#[no_mangle]
pub extern "C" fn kissing_spheres_worker_for_group(num_workers: c_int, group: c_int) -> c_int {
    guard(KS_ERROR, || {
        let w = count(num_workers.into(), "num_workers")?;
        let g = count(group.into(), "group")?;
        spheres::worker_for_group(w, g)
            .map(|x| x as c_int)
            .ok_or_else(|| invalid!("need num_workers >= 1 and group 0..11, got {num_workers}, {group}"))
    })
}

/// Usable CPU count (original name): the affinity mask bounded by the
/// cgroup CPU quota. At least 1.
#[no_mangle]
pub extern "C" fn get_num_cpu_cores() -> c_int {
    super::common::cllm_usable_cpus()
}
