//! A one-token parking slot: the cheapest wake-up the OS offers (one atomic
//! swap and one `FUTEX_WAKE` on Linux). An unpark that comes before the park
//! is kept, so no wake-up is lost.

#[cfg(target_os = "linux")]
mod imp {
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Parking slot for one thread.
    #[derive(Default)]
    pub struct Parker {
        token: AtomicU32,
    }

    impl Parker {
        /// Blocks until a token is available, then consumes it.
        pub fn park(&self) {
            while self.token.swap(0, Ordering::Acquire) == 0 {
                // SAFETY: FUTEX_WAIT reads the u32 behind a valid reference
                // and sleeps only while it still equals 0; the other
                // arguments are unused by this operation.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        self.token.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        0u32,
                        std::ptr::null::<libc::timespec>(),
                    );
                }
            }
        }

        /// Makes a token available and wakes the parked thread, if any.
        pub fn unpark(&self) {
            if self.token.swap(1, Ordering::Release) == 0 {
                // SAFETY: FUTEX_WAKE on a valid u32 address wakes at most one
                // waiter; it never dereferences anything else.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        self.token.as_ptr(),
                        libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                        1i32,
                    );
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use parking_lot::{Condvar, Mutex};

    /// Parking slot for one thread.
    #[derive(Default)]
    pub struct Parker {
        token: Mutex<bool>,
        cv: Condvar,
    }

    impl Parker {
        /// Blocks until a token is available, then consumes it.
        pub fn park(&self) {
            let mut t = self.token.lock();
            while !*t {
                self.cv.wait(&mut t);
            }
            *t = false;
        }

        /// Makes a token available and wakes the parked thread, if any.
        pub fn unpark(&self) {
            *self.token.lock() = true;
            self.cv.notify_one();
        }
    }
}

pub use imp::Parker;

#[cfg(test)]
mod tests {
    use super::Parker;
    use std::sync::Arc;

    #[test]
    fn unpark_before_park_is_kept() {
        let p = Parker::default();
        p.unpark();
        p.park();
    }

    #[test]
    fn wakes_a_parked_thread() {
        let p = Arc::new(Parker::default());
        for _ in 0..1000 {
            let q = Arc::clone(&p);
            let h = std::thread::spawn(move || q.park());
            p.unpark();
            h.join().unwrap();
        }
    }
}
