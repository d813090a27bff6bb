//! Bounded per-sphere mailboxes: higher priority first, FIFO within one.

use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::time::Instant;

/// Message types, numbered from 0 in the original order (`MSG_*`).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MessageKind {
    WorkRequest = 0,
    WorkOffer,
    WorkAccept,
    WorkReject,
    GradientReady,
    GradientAccumulate,
    GradientComplete,
    WeightsUpdated,
    WeightsRequest,
    WeightsBroadcast,
    BoundaryCrossing,
    TwinPrimeHit,
    BoundaryRegionEnter,
    BoundaryRegionExit,
    EpochStart,
    EpochComplete,
    BatchStart,
    BatchComplete,
    ChildSpawn,
    ChildTerminate,
    ParentSync,
    SiblingDiscover,
    ErrorReport,
    ErrorRecovery,
    StatsRequest,
    StatsReport,
    ShutdownRequest,
    ShutdownAck,
}

impl MessageKind {
    /// Number of message types.
    pub const COUNT: u32 = 28;

    /// The type with original number `v`, if any.
    pub fn from_u32(v: u32) -> Option<MessageKind> {
        use MessageKind::*;
        const ALL: [MessageKind; MessageKind::COUNT as usize] = [
            WorkRequest,
            WorkOffer,
            WorkAccept,
            WorkReject,
            GradientReady,
            GradientAccumulate,
            GradientComplete,
            WeightsUpdated,
            WeightsRequest,
            WeightsBroadcast,
            BoundaryCrossing,
            TwinPrimeHit,
            BoundaryRegionEnter,
            BoundaryRegionExit,
            EpochStart,
            EpochComplete,
            BatchStart,
            BatchComplete,
            ChildSpawn,
            ChildTerminate,
            ParentSync,
            SiblingDiscover,
            ErrorReport,
            ErrorRecovery,
            StatsRequest,
            StatsReport,
            ShutdownRequest,
            ShutdownAck,
        ];
        ALL.get(v as usize).copied()
    }
}

/// Delivery priority: LOW=0, NORMAL=1, HIGH=2, CRITICAL=3.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Priority {
    Low = 0,
    Normal = 1,
    High = 2,
    Critical = 3,
}

impl Priority {
    /// The priority with number `v`, if any.
    pub fn from_u32(v: u32) -> Option<Priority> {
        [Priority::Low, Priority::Normal, Priority::High, Priority::Critical].get(v as usize).copied()
    }
}

/// A message between spheres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// What the message means.
    pub kind: MessageKind,
    /// Delivery priority.
    pub priority: Priority,
    /// Sending sphere id.
    pub sender: usize,
    /// Receiving sphere id.
    pub receiver: usize,
    /// Per-mailbox arrival number, from 1 (set on delivery).
    pub sequence: u64,
    /// Free payload words.
    pub payload: [u64; 4],
}

struct Slots {
    by_priority: [VecDeque<Message>; 4],
    len: usize,
    next_sequence: u64,
}

/// One sphere's mailbox.
pub(crate) struct Mailbox {
    slots: Mutex<Slots>,
    arrived: Condvar,
    capacity: usize,
}

impl Mailbox {
    /// An empty mailbox holding at most `capacity` messages.
    pub(crate) fn new(capacity: usize) -> Mailbox {
        Mailbox {
            slots: Mutex::new(Slots { by_priority: Default::default(), len: 0, next_sequence: 1 }),
            arrived: Condvar::new(),
            capacity,
        }
    }

    /// Delivers `msg`, or fails with [`Error::Full`] at capacity.
    pub(crate) fn push(&self, mut msg: Message) -> Result<()> {
        let mut s = self.slots.lock();
        if s.len >= self.capacity {
            return Err(Error::Full(format!(
                "mailbox of sphere {} is full ({} messages)",
                msg.receiver, self.capacity
            )));
        }
        msg.sequence = s.next_sequence;
        s.next_sequence += 1;
        s.by_priority[msg.priority as usize].push_back(msg);
        s.len += 1;
        drop(s);
        self.arrived.notify_one();
        Ok(())
    }

    fn take(s: &mut Slots) -> Option<Message> {
        let m = s.by_priority.iter_mut().rev().find_map(|q| q.pop_front())?;
        s.len -= 1;
        Some(m)
    }

    /// The most urgent message, if one is waiting.
    pub(crate) fn try_pop(&self) -> Option<Message> {
        Self::take(&mut self.slots.lock())
    }

    /// The most urgent message, waiting until `deadline` (None = forever).
    pub(crate) fn pop(&self, deadline: Option<Instant>) -> Option<Message> {
        let mut s = self.slots.lock();
        loop {
            if let Some(m) = Self::take(&mut s) {
                return Some(m);
            }
            match deadline {
                Some(d) => {
                    if self.arrived.wait_until(&mut s, d).timed_out() {
                        return Self::take(&mut s);
                    }
                }
                None => self.arrived.wait(&mut s),
            }
        }
    }

    /// Messages waiting.
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(p: Priority, tag: u64) -> Message {
        Message {
            kind: MessageKind::WorkOffer,
            priority: p,
            sender: 1,
            receiver: 0,
            sequence: 0,
            payload: [tag, 0, 0, 0],
        }
    }

    #[test]
    fn priority_then_fifo() {
        let m = Mailbox::new(8);
        m.push(msg(Priority::Low, 1)).unwrap();
        m.push(msg(Priority::Critical, 2)).unwrap();
        m.push(msg(Priority::Low, 3)).unwrap();
        m.push(msg(Priority::Critical, 4)).unwrap();
        let order: Vec<u64> = std::iter::from_fn(|| m.try_pop()).map(|x| x.payload[0]).collect();
        assert_eq!(order, vec![2, 4, 1, 3]);
    }

    #[test]
    fn full_rejects() {
        let m = Mailbox::new(2);
        m.push(msg(Priority::Low, 1)).unwrap();
        m.push(msg(Priority::Low, 2)).unwrap();
        assert!(matches!(m.push(msg(Priority::Low, 3)), Err(Error::Full(_))));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn kinds_round_trip() {
        for v in 0..MessageKind::COUNT {
            assert_eq!(MessageKind::from_u32(v).unwrap() as u32, v);
        }
        assert!(MessageKind::from_u32(MessageKind::COUNT).is_none());
    }
}
