//! Parking for blocked pushers and poppers: a short spin, then a condition variable.
//!
//! The fast path of a queue never touches the lock here. A waiter registers
//! in an atomic count *under* the lock and re-checks the queue before it
//! sleeps; a notifier publishes its change, issues a `SeqCst` fence and only
//! then reads the count. Either the notifier sees the waiter (and takes the
//! lock, which the waiter holds until it is asleep on the condvar), or the
//! waiter's re-check sees the change. No wake-up is lost. The notifier
//! only passes through the lock (a waiter holds it until it is asleep) and
//! signals after releasing it, so the woken thread does not block on it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crossbeam_utils::{Backoff, CachePadded};

use super::types::QueueError;

/// Which event a waiter is waiting for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// Something to pop.
    NotEmpty,
    /// Room to push.
    NotFull,
}

/// What one attempt inside a wait loop found.
pub(crate) enum Attempt<R, S> {
    /// Finished, with a result (which may be an error such as `Closed`).
    Done(R),
    /// Nothing yet: wait for a notification and try again with this state
    /// (for a push, the item that did not fit).
    Retry(S),
}

#[derive(Debug, Default)]
pub(crate) struct Signal {
    closed: CachePadded<AtomicBool>,
    pop_waiters: CachePadded<AtomicUsize>,
    push_waiters: CachePadded<AtomicUsize>,
    lock: Mutex<()>,
    not_empty: Condvar,
    not_full: Condvar,
}

impl Signal {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Threads parked waiting (to pop or to push) right now.
    pub(crate) fn waiting(&self) -> usize {
        self.pop_waiters.load(Ordering::Acquire) + self.push_waiters.load(Ordering::Acquire)
    }

    /// Close and wake every waiter on both sides. Returns whether this call closed it.
    pub(crate) fn close(&self) -> bool {
        let first = !self.closed.swap(true, Ordering::SeqCst);
        drop(self.guard());
        self.not_empty.notify_all();
        self.not_full.notify_all();
        first
    }

    /// Call after making an item available.
    #[inline]
    pub(crate) fn notify_not_empty(&self) {
        fence(Ordering::SeqCst);
        if self.pop_waiters.load(Ordering::Relaxed) > 0 {
            // Passing through the lock orders us after any waiter that is
            // between its re-check and its sleep; notifying after releasing
            // it spares the woken thread from blocking on the lock again.
            drop(self.guard());
            // All, not one: a woken waiter may be about to give up on its
            // timeout, and with one notification the item could sit unseen.
            self.not_empty.notify_all();
        }
    }

    /// Call after making room.
    #[inline]
    pub(crate) fn notify_not_full(&self) {
        fence(Ordering::SeqCst);
        if self.push_waiters.load(Ordering::Relaxed) > 0 {
            drop(self.guard());
            self.not_full.notify_all();
        }
    }

    fn guard(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a poisoned lock is still a good lock.
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `attempt` until it is done, spinning briefly and then sleeping
    /// between tries. Once `deadline` has passed, gives the state back with
    /// [`QueueError::Timeout`].
    ///
    /// `attempt` runs under the waiter lock at times, so it must not notify.
    pub(crate) fn wait<R, S>(
        &self,
        side: Side,
        deadline: Option<Instant>,
        mut state: S,
        mut attempt: impl FnMut(S) -> Attempt<R, S>,
    ) -> Result<R, (QueueError, S)> {
        // A short spin (about a microsecond of pause loops, then a few
        // yields) catches hand-offs that are already in flight without a
        // sleep and wake-up; it is bounded so a waiter never burns a core.
        let backoff = Backoff::new();
        loop {
            match attempt(state) {
                Attempt::Done(r) => return Ok(r),
                Attempt::Retry(s) => state = s,
            }
            if backoff.is_completed() {
                break;
            }
            backoff.snooze();
        }

        let (count, condvar) = match side {
            Side::NotEmpty => (&*self.pop_waiters, &self.not_empty),
            Side::NotFull => (&*self.push_waiters, &self.not_full),
        };
        let mut guard = self.guard();
        count.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let result = loop {
            match attempt(state) {
                Attempt::Done(r) => break Ok(r),
                Attempt::Retry(s) => state = s,
            }
            match deadline {
                None => guard = condvar.wait(guard).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break Err((QueueError::Timeout, state));
                    }
                    guard = condvar
                        .wait_timeout(guard, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        };
        count.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        result
    }
}
