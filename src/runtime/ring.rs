//! A bounded single-producer/single-consumer ring: power-of-two capacity,
//! head and tail on separate cache lines, and each side keeping a private
//! copy of the other side's index so the common case touches no shared
//! line it does not own.

use crossbeam_utils::CachePadded;
use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Shared<T> {
    /// Next slot the consumer reads; written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Next slot the producer writes; written only by the producer.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: a slot is written by the producer only while it is outside
// [head, tail) and read by the consumer only while inside it; the
// release/acquire pairs on head and tail hand each slot over.
unsafe impl<T: Send> Sync for Shared<T> {}

/// The sending half; one thread at a time (it is `Send` but not `Sync`).
pub(crate) struct Producer<T> {
    shared: Arc<Shared<T>>,
    cached_head: Cell<usize>,
    /// Next slot to write; slots in [tail, unpublished) are written but
    /// not yet visible.
    unpublished: Cell<usize>,
}

/// The receiving half; one thread at a time.
pub(crate) struct Consumer<T> {
    shared: Arc<Shared<T>>,
    cached_tail: Cell<usize>,
}

// SAFETY: each half is used by one thread at a time (not Sync); the
// shared part is Sync as argued above.
unsafe impl<T: Send> Send for Producer<T> {}
// SAFETY: as for Producer.
unsafe impl<T: Send> Send for Consumer<T> {}

/// Creates a ring holding up to `capacity` items (rounded up to a power
/// of two, at least 2).
pub(crate) fn ring<T: Copy + Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
        mask: cap - 1,
    });
    (
        Producer { shared: shared.clone(), cached_head: Cell::new(0), unpublished: Cell::new(0) },
        Consumer { shared, cached_tail: Cell::new(0) },
    )
}

impl<T: Copy + Send> Producer<T> {
    /// Appends `item` and makes it visible to the consumer, or gives it
    /// back when the ring is full.
    #[cfg(test)]
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        self.write(item)?;
        self.publish();
        Ok(())
    }

    /// Appends `item` without making it visible yet (see [`Self::publish`]),
    /// so a batch costs one shared store instead of one per item.
    pub(crate) fn write(&self, item: T) -> Result<(), T> {
        let s = &*self.shared;
        let next = self.unpublished.get();
        if next - self.cached_head.get() > s.mask {
            self.cached_head.set(s.head.load(Ordering::Acquire));
            if next - self.cached_head.get() > s.mask {
                return Err(item);
            }
        }
        // SAFETY: next - head <= mask, so slot `next` is outside the
        // consumer's readable window (which ends at the published tail <=
        // next) and only this producer touches it.
        unsafe { (*s.slots[next & s.mask].get()).write(item) };
        self.unpublished.set(next + 1);
        Ok(())
    }

    /// Makes every written item visible to the consumer.
    pub(crate) fn publish(&self) {
        self.shared.tail.store(self.unpublished.get(), Ordering::Release);
    }

    /// Items written and not yet consumed (exact for the producer: the
    /// consumer can only make it smaller).
    pub(crate) fn len(&self) -> usize {
        self.unpublished.get() - self.shared.head.load(Ordering::Acquire)
    }

    /// How many items the ring holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.shared.mask + 1
    }
}

impl<T: Copy + Send> Consumer<T> {
    /// The oldest item, without removing it.
    pub(crate) fn peek(&self) -> Option<T> {
        let s = &*self.shared;
        let head = s.head.load(Ordering::Relaxed);
        if head == self.cached_tail.get() {
            self.cached_tail.set(s.tail.load(Ordering::Acquire));
            if head == self.cached_tail.get() {
                return None;
            }
        }
        // SAFETY: head < tail, so the producer has initialised the slot
        // (published by the release store of tail, read with acquire) and
        // will not touch it until head moves past it.
        Some(unsafe { (*s.slots[head & s.mask].get()).assume_init() })
    }

    /// The item after the oldest one, if it is published.
    pub(crate) fn peek_second(&self) -> Option<T> {
        let s = &*self.shared;
        let next = s.head.load(Ordering::Relaxed) + 1;
        if next >= self.cached_tail.get() {
            self.cached_tail.set(s.tail.load(Ordering::Acquire));
            if next >= self.cached_tail.get() {
                return None;
            }
        }
        // SAFETY: next < tail: published and not consumed, as in `peek`.
        Some(unsafe { (*s.slots[next & s.mask].get()).assume_init() })
    }

    /// Published items not yet consumed.
    pub(crate) fn len(&self) -> usize {
        let s = &*self.shared;
        s.tail.load(Ordering::Acquire) - s.head.load(Ordering::Relaxed)
    }

    /// Removes the oldest item (after a successful `peek`).
    pub(crate) fn advance(&self) {
        let s = &*self.shared;
        let head = s.head.load(Ordering::Relaxed);
        debug_assert!(head != s.tail.load(Ordering::Acquire));
        s.head.store(head + 1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_order_and_capacity() {
        let (p, c) = ring::<u32>(3);
        assert!(c.peek().is_none());
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(9), "capacity rounds up to 4");
        assert_eq!((p.len(), c.len(), p.capacity()), (4, 4, 4));
        assert_eq!((c.peek(), c.peek_second()), (Some(0), Some(1)));
        for i in 0..4 {
            assert_eq!(c.peek(), Some(i));
            c.advance();
        }
        assert!(c.peek().is_none());
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn written_items_appear_only_when_published() {
        let (p, c) = ring::<u32>(4);
        p.write(1).unwrap();
        p.write(2).unwrap();
        assert!(c.peek().is_none());
        p.publish();
        assert_eq!(c.peek(), Some(1));
        c.advance();
        assert_eq!(c.peek(), Some(2));
    }

    #[test]
    fn crosses_threads_without_loss_or_reordering() {
        let (p, c) = ring::<u64>(8);
        let n = 200_000u64;
        let consumer = std::thread::spawn(move || {
            let mut expect = 0;
            while expect < n {
                if let Some(v) = c.peek() {
                    assert_eq!(v, expect);
                    c.advance();
                    expect += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        });
        for i in 0..n {
            let mut item = i;
            while let Err(back) = p.push(item) {
                item = back;
                std::thread::yield_now();
            }
        }
        consumer.join().unwrap();
    }
}
