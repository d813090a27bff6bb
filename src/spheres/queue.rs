//! A sphere's work queue: FIFO for its owner, newest-first for thieves.
//!
//! Entries are chunks (ranges over a shared item array) so that per-item
//! cost stays tiny; a chunk larger than the grain is split on the way out.

use super::bufpool::{BufPool, PooledItems};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Where a chunk's item values come from.
#[derive(Clone, Debug)]
pub(crate) enum Items {
    /// A copy of the caller's array (shared by the chunks cut from it).
    Array(Arc<PooledItems>),
    /// Consecutive values: item at index i is `first + i`.
    Range(u64),
    /// Up to [`INLINE_ITEMS`] values stored in the chunk itself, so that
    /// queueing a single item allocates nothing.
    Inline([u64; INLINE_ITEMS]),
}

/// Most items a chunk stores without a heap buffer.
pub(crate) const INLINE_ITEMS: usize = 4;

/// A run of items `start..end` of one [`Items`] source.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    items: Items,
    start: usize,
    end: usize,
}

impl Chunk {
    /// The whole of `items[start..end]`.
    pub(crate) fn new(items: Items, start: usize, end: usize) -> Chunk {
        debug_assert!(start <= end);
        Chunk { items, start, end }
    }

    /// A chunk holding up to [`INLINE_ITEMS`] values in itself.
    pub(crate) fn inline(values: &[u64]) -> Chunk {
        assert!(values.len() <= INLINE_ITEMS, "{} values do not fit inline", values.len());
        let mut inline = [0u64; INLINE_ITEMS];
        inline[..values.len()].copy_from_slice(values);
        Chunk::new(Items::Inline(inline), 0, values.len())
    }

    /// A chunk owning a copy of `values` in `buf`, a buffer reserved from
    /// `pool` with room for them.
    pub(crate) fn copied(pool: &Arc<BufPool>, buf: Vec<u64>, values: &[u64]) -> Chunk {
        Chunk::new(Items::Array(Arc::new(pool.fill(buf, values))), 0, values.len())
    }

    /// Whether a chunk of `len` items needs a buffer (else it is inline).
    pub(crate) fn needs_buffer(len: usize) -> bool {
        len > INLINE_ITEMS
    }

    /// Number of items.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Cuts off and returns the first `n` items (all when `n ≥ len`).
    fn split_front(&mut self, n: usize) -> Chunk {
        let mid = self.start + n.min(self.len());
        let front = Chunk::new(self.items.clone(), self.start, mid);
        self.start = mid;
        front
    }

    /// Cuts off and returns the newest (last) half, rounded up.
    fn split_back_half(&mut self) -> Chunk {
        self.split_back(self.len().div_ceil(2))
    }

    /// Cuts off and returns the last `n` items (all when `n ≥ len`).
    fn split_back(&mut self, n: usize) -> Chunk {
        let mid = self.end - n.min(self.len());
        let back = Chunk::new(self.items.clone(), mid, self.end);
        self.end = mid;
        back
    }

    /// Calls `f` on every item in order.
    #[cfg(test)]
    pub(crate) fn for_each(&self, f: impl FnMut(u64)) {
        self.for_each_from(0, f);
    }

    /// Calls `f` on the items from position `skip` on, in order.
    #[inline]
    pub(crate) fn for_each_from(&self, skip: usize, mut f: impl FnMut(u64)) {
        let from = (self.start + skip).min(self.end);
        match &self.items {
            Items::Array(a) => a[from..self.end].iter().for_each(|&v| f(v)),
            Items::Inline(a) => a[from..self.end].iter().for_each(|&v| f(v)),
            Items::Range(first) => (from..self.end).for_each(|i| f(first + i as u64)),
        }
    }
}

/// What a steal took: the chunks, newest first, and their item count.
pub(crate) struct Stolen {
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) items: usize,
}

/// Queue of one sphere. Lock-protected deque plus lock-free length hints so
/// that scanning for work never takes a lock on an empty queue.
#[derive(Default)]
pub(crate) struct WorkQueue {
    deque: Mutex<VecDeque<Chunk>>,
    chunks: AtomicUsize,
    items: AtomicUsize,
    steal_disabled: AtomicBool,
}

/// Smallest piece an owner takes from a large chunk of cheap items.
pub(crate) const MIN_PIECE: usize = 256;
/// Largest piece an owner takes at once: bounds how long the rest of a
/// chunk stays out of thieves' reach (~4 ms of 1 µs items).
pub(crate) const MAX_PIECE: usize = 4096;

/// Steal several chunks at once only when the victim holds at least this many.
const BATCH_STEAL_THRESHOLD: usize = 4;
/// Upper bound on chunks taken by one steal.
const MAX_BATCH_STEAL: usize = 32;

impl WorkQueue {
    /// Chunks queued (a hint: may be stale by the time it is read).
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.load(Ordering::Acquire)
    }

    /// Items queued (a hint).
    pub(crate) fn item_count(&self) -> usize {
        self.items.load(Ordering::Relaxed)
    }

    /// Allows or forbids thieves on this queue; the owner still pops.
    pub(crate) fn set_stealing(&self, enabled: bool) {
        self.steal_disabled.store(!enabled, Ordering::Relaxed);
    }

    /// Whether thieves may take from this queue.
    pub(crate) fn stealing_enabled(&self) -> bool {
        !self.steal_disabled.load(Ordering::Relaxed)
    }

    /// Appends a chunk (it becomes the newest).
    pub(crate) fn push(&self, chunk: Chunk) {
        let n = chunk.len();
        let mut q = self.deque.lock();
        q.push_back(chunk);
        self.items.fetch_add(n, Ordering::Relaxed);
        self.chunks.fetch_add(1, Ordering::Release);
    }

    /// Owner side: the oldest items, at most `limit` (≥ 1) of them. From a
    /// large chunk it takes a quarter of what is left, at least
    /// `min(limit, MIN_PIECE)` (guided self-scheduling: big pieces while
    /// there is much work, small ones near the end). Returns the piece and
    /// how many chunks left the queue (0 or 1).
    pub(crate) fn pop_front(&self, limit: usize) -> Option<(Chunk, usize)> {
        if self.chunk_count() == 0 {
            return None;
        }
        let mut q = self.deque.lock();
        let front = q.front_mut()?;
        let limit = limit.max(1);
        let take = (front.len() / 4).max(MIN_PIECE.min(limit)).min(limit);
        let (piece, removed) = if front.len() > take { (front.split_front(take), 0) } else { (q.pop_front()?, 1) };
        self.items.fetch_sub(piece.len(), Ordering::Relaxed);
        self.chunks.fetch_sub(removed, Ordering::Release);
        Some((piece, removed))
    }

    /// Thief side: the newest work. `None` (batch): up to half of the
    /// chunks when there are many, else the newest half of a lone chunk,
    /// else the newest chunk. `Some(limit)`: one piece of at most `limit`
    /// items from the newest end (at most half of a lone chunk). Returns the
    /// stolen work newest first and how many chunks left the queue.
    pub(crate) fn steal(&self, limit: Option<usize>) -> Option<(Stolen, usize)> {
        if self.chunk_count() == 0 || !self.stealing_enabled() {
            return None;
        }
        let mut q = self.deque.lock();
        let len = q.len();
        let newest = q.back()?.len();
        // The most a thief may take from the newest chunk: half of it when it
        // is the only one (the owner keeps the older half), all otherwise.
        let cap = if len == 1 { newest.div_ceil(2) } else { newest };
        let (chunks, removed) = match limit {
            Some(limit) => {
                let take = cap.min(limit.max(1));
                if take == newest {
                    (q.pop_back().into_iter().collect(), 1)
                } else {
                    (vec![q.back_mut()?.split_back(take)], 0)
                }
            }
            None if len == 1 && newest > 1 => (vec![q[0].split_back_half()], 0),
            None if len >= BATCH_STEAL_THRESHOLD => {
                let take = (len / 2).min(MAX_BATCH_STEAL);
                let v: Vec<Chunk> = (0..take).filter_map(|_| q.pop_back()).collect();
                (v, take)
            }
            None => (q.pop_back().into_iter().collect(), 1),
        };
        let items = chunks.iter().map(Chunk::len).sum();
        self.items.fetch_sub(items, Ordering::Relaxed);
        self.chunks.fetch_sub(removed, Ordering::Release);
        Some((Stolen { chunks, items }, removed))
    }

    /// Removes everything; returns (chunks, items) removed.
    pub(crate) fn clear(&self) -> (usize, usize) {
        let mut q = self.deque.lock();
        let chunks = q.len();
        let items: usize = q.drain(..).map(|c| c.len()).sum();
        self.items.fetch_sub(items, Ordering::Relaxed);
        self.chunks.fetch_sub(chunks, Ordering::Release);
        (chunks, items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(c: &Chunk) -> Vec<u64> {
        let mut v = Vec::new();
        c.for_each(|x| v.push(x));
        v
    }

    fn single(v: u64) -> Chunk {
        Chunk::inline(&[v])
    }

    #[test]
    fn owner_pops_fifo() {
        let q = WorkQueue::default();
        for v in 1..=5 {
            q.push(single(v));
        }
        let got: Vec<u64> = std::iter::from_fn(|| q.pop_front(MAX_PIECE)).flat_map(|(c, _)| values(&c)).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        assert_eq!(q.item_count(), 0);
    }

    #[test]
    fn thief_takes_newest_first() {
        let q = WorkQueue::default();
        for v in 1..=3 {
            q.push(single(v));
        }
        let (s, removed) = q.steal(None).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(values(&s.chunks[0]), vec![3]);
        assert_eq!(values(&q.pop_front(MAX_PIECE).unwrap().0), vec![1]);
    }

    #[test]
    fn batch_steal_takes_half_newest_first() {
        let q = WorkQueue::default();
        for v in 1..=8 {
            q.push(single(v));
        }
        let (s, removed) = q.steal(None).unwrap();
        assert_eq!(removed, 4);
        let got: Vec<u64> = s.chunks.iter().flat_map(values).collect();
        assert_eq!(got, vec![8, 7, 6, 5]);
        assert_eq!(q.chunk_count(), 4);
    }

    #[test]
    fn large_chunk_is_split_not_handed_whole() {
        let q = WorkQueue::default();
        q.push(Chunk::new(Items::Range(0), 0, 4 * MIN_PIECE));
        let (s, removed) = q.steal(None).unwrap();
        assert_eq!(removed, 0);
        let stolen = values(&s.chunks[0]);
        assert_eq!(stolen.first(), Some(&(2 * MIN_PIECE as u64)), "thief takes the newest half");
        assert_eq!(stolen.len(), 2 * MIN_PIECE);
        let (front, _) = q.pop_front(MAX_PIECE).unwrap();
        assert_eq!(values(&front), (0..MIN_PIECE as u64).collect::<Vec<_>>());
        assert_eq!(q.item_count(), MIN_PIECE);
    }

    #[test]
    fn owner_pieces_shrink_towards_the_end() {
        let q = WorkQueue::default();
        q.push(Chunk::new(Items::Range(0), 0, 100_000));
        let sizes: Vec<usize> = std::iter::from_fn(|| q.pop_front(MAX_PIECE)).map(|(c, _)| c.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 100_000);
        assert_eq!(sizes[0], MAX_PIECE);
        assert!(sizes.iter().all(|&n| n <= MAX_PIECE));
        assert!(*sizes.last().unwrap() <= MIN_PIECE);
    }

    #[test]
    fn disabled_stealing_blocks_thieves_only() {
        let q = WorkQueue::default();
        q.push(single(1));
        q.set_stealing(false);
        assert!(q.steal(None).is_none());
        assert!(q.pop_front(MAX_PIECE).is_some());
    }

    #[test]
    fn limit_one_hands_out_single_items_and_thieves_split_small_chunks() {
        let q = WorkQueue::default();
        q.push(Chunk::new(Items::Range(0), 0, 8));
        let (piece, removed) = q.pop_front(1).unwrap();
        assert_eq!((piece.len(), removed), (1, 0));
        let (stolen, removed) = q.steal(None).unwrap();
        assert_eq!(removed, 0);
        assert_eq!(stolen.items, 4, "the newest half of the 7 left, rounded up");
    }
}

#[cfg(test)]
mod bounded_steal_tests {
    use super::*;

    #[test]
    fn bounded_steal_takes_only_the_newest_items() {
        let q = WorkQueue::default();
        q.push(Chunk::new(Items::Range(0), 0, 100));
        q.push(Chunk::new(Items::Range(1000), 0, 100));
        let (s, removed) = q.steal(Some(10)).unwrap();
        assert_eq!(removed, 0);
        assert_eq!(s.items, 10);
        let mut got = Vec::new();
        s.chunks[0].for_each(|v| got.push(v));
        assert_eq!(got, (1090..1100).collect::<Vec<_>>());
        assert_eq!(q.item_count(), 190);
    }

    #[test]
    fn bounded_steal_of_a_lone_chunk_takes_at_most_half() {
        let q = WorkQueue::default();
        q.push(Chunk::new(Items::Range(0), 0, 9));
        let (s, _) = q.steal(Some(100)).unwrap();
        assert_eq!(s.items, 5);
        let (s, _) = q.steal(Some(1)).unwrap();
        assert_eq!(s.items, 1);
    }
}
