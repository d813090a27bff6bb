//! Recycled item buffers for `distribute`. Copying the caller's array into
//! fresh memory costs a page fault per 4 KiB on first touch — more than the
//! copy itself; reusing the buffers of finished chunks avoids that.

use parking_lot::Mutex;
use std::sync::Arc;

/// Largest total of idle buffers kept, in items (64 MiB).
const MAX_CACHED_ITEMS: usize = 8 << 20;
/// Most idle buffers kept.
const MAX_CACHED_BUFFERS: usize = 256;
/// Buffers smaller than this are cheap to allocate and are not recycled.
const MIN_RECYCLED_ITEMS: usize = 512;

/// A pool of idle buffers, shared by a system and the buffers it lent.
#[derive(Default)]
pub(crate) struct BufPool {
    idle: Mutex<Vec<Vec<u64>>>,
}

/// A copy of caller items; its memory returns to the pool when the last
/// chunk using it is done.
pub(crate) struct PooledItems {
    data: Vec<u64>,
    pool: Option<Arc<BufPool>>,
}

impl std::fmt::Debug for PooledItems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PooledItems({} items)", self.data.len())
    }
}

impl std::ops::Deref for PooledItems {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        &self.data
    }
}

impl Drop for PooledItems {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give_back(std::mem::take(&mut self.data));
        }
    }
}

impl BufPool {
    /// An empty buffer with room for `len` items: a recycled one when one
    /// is large enough, else a fresh allocation that fails instead of
    /// aborting when memory runs out.
    pub(crate) fn reserve(&self, len: usize) -> crate::Result<Vec<u64>> {
        if len >= MIN_RECYCLED_ITEMS {
            let mut idle = self.idle.lock();
            // Best fit: the smallest idle buffer that holds `len` items.
            let best = idle
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mut buf = idle.swap_remove(i);
                buf.clear();
                return Ok(buf);
            }
        }
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| crate::Error::System(format!("cannot allocate a copy of {len} items")))?;
        Ok(v)
    }

    /// Fills `buf` (from [`BufPool::reserve`], with room for `values`) with
    /// a copy of `values`; large buffers return to the pool when dropped.
    pub(crate) fn fill(self: &Arc<Self>, mut buf: Vec<u64>, values: &[u64]) -> PooledItems {
        debug_assert!(buf.capacity() >= values.len());
        buf.clear();
        buf.extend_from_slice(values);
        let pool = (buf.capacity() >= MIN_RECYCLED_ITEMS).then(|| Arc::clone(self));
        PooledItems { data: buf, pool }
    }

    /// A copy of `values` (reserve + fill).
    #[cfg(test)]
    pub(crate) fn copy(self: &Arc<Self>, values: &[u64]) -> crate::Result<PooledItems> {
        Ok(self.fill(self.reserve(values.len())?, values))
    }

    fn give_back(&self, buf: Vec<u64>) {
        let mut idle = self.idle.lock();
        let cached: usize = idle.iter().map(Vec::capacity).sum();
        if idle.len() < MAX_CACHED_BUFFERS && cached + buf.capacity() <= MAX_CACHED_ITEMS {
            idle.push(buf);
        }
    }

    /// Idle buffers held (for tests).
    #[cfg(test)]
    pub(crate) fn idle_buffers(&self) -> usize {
        self.idle.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused() {
        let pool = Arc::new(BufPool::default());
        let values: Vec<u64> = (0..10_000).collect();
        let a = pool.copy(&values).unwrap();
        assert_eq!(&a[..], &values[..]);
        let addr = a.as_ptr();
        drop(a);
        assert_eq!(pool.idle_buffers(), 1);
        let b = pool.copy(&values[..5000]).unwrap();
        assert_eq!(b.as_ptr(), addr, "the idle buffer is reused");
        assert_eq!(&b[..], &values[..5000]);
    }

    #[test]
    fn small_copies_and_overflow_are_not_cached() {
        let pool = Arc::new(BufPool::default());
        drop(pool.copy(&[1, 2, 3]).unwrap());
        assert_eq!(pool.idle_buffers(), 0);
        let big: Vec<u64> = vec![7; MAX_CACHED_ITEMS + 1];
        drop(pool.copy(&big).unwrap());
        assert_eq!(pool.idle_buffers(), 0);
    }
}
