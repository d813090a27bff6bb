//! A reusable barrier whose waits can time out without breaking it.

use crate::error::{Error, Result};
use parking_lot::{Condvar, Mutex};
use std::time::Instant;

struct Phase {
    arrived: usize,
    generation: u64,
}

/// Releases all parties together once `parties` have arrived. A party that
/// times out withdraws, so the barrier stays usable for the next round.
pub(crate) struct TimedBarrier {
    parties: usize,
    phase: Mutex<Phase>,
    released: Condvar,
}

impl TimedBarrier {
    /// A barrier for `parties` (≥ 1) parties.
    pub(crate) fn new(parties: usize) -> TimedBarrier {
        TimedBarrier { parties, phase: Mutex::new(Phase { arrived: 0, generation: 0 }), released: Condvar::new() }
    }

    /// Number of parties.
    pub(crate) fn parties(&self) -> usize {
        self.parties
    }

    /// Waits for the other parties. Returns the completed generation (the
    /// epoch number, from 1), or a timeout error after withdrawing.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Result<u64> {
        let mut p = self.phase.lock();
        let gen = p.generation;
        p.arrived += 1;
        if p.arrived == self.parties {
            p.arrived = 0;
            p.generation += 1;
            self.released.notify_all();
            return Ok(p.generation);
        }
        while p.generation == gen {
            match deadline {
                Some(d) => {
                    if self.released.wait_until(&mut p, d).timed_out() && p.generation == gen {
                        p.arrived -= 1;
                        return Err(Error::Timeout(format!(
                            "barrier timed out with {} of {} parties",
                            p.arrived + 1,
                            self.parties
                        )));
                    }
                }
                None => self.released.wait(&mut p),
            }
        }
        Ok(gen + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn releases_all_and_reuses() {
        let b = Arc::new(TimedBarrier::new(3));
        for round in 1..=3u64 {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    let b = b.clone();
                    std::thread::spawn(move || b.wait(None).unwrap())
                })
                .collect();
            for h in hs {
                assert_eq!(h.join().unwrap(), round);
            }
        }
    }

    #[test]
    fn timeout_withdraws() {
        let b = TimedBarrier::new(2);
        let d = Instant::now() + Duration::from_millis(20);
        assert!(matches!(b.wait(Some(d)), Err(Error::Timeout(_))));
        assert_eq!(b.phase.lock().arrived, 0);
    }
}
