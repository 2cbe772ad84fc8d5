//! The bounded MPMC queue for jobs and events, on crossbeam's lock-free `ArrayQueue`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

use super::types::{Overflow, PushError, Pushed, QueueConfigError, QueueError, QueueStats};
use super::wait::{Attempt, Side, Signal};

/// The largest capacity [`Queue::new`] accepts (crossbeam needs room for a lap bit).
pub const MAX_CAPACITY: usize = 1 << (usize::BITS - 2);

/// A bounded multi-producer multi-consumer queue. Share it by reference or in
/// an `Arc`; every method takes `&self`.
pub struct Queue<T> {
    items: ArrayQueue<T>,
    policy: Overflow,
    signal: Signal,
    pushed: CachePadded<AtomicU64>,
    popped: CachePadded<AtomicU64>,
    dropped: CachePadded<AtomicU64>,
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("policy", &self.policy)
            .field("closed", &self.is_closed())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// `deadline` for a relative timeout; `None` (wait forever) if it overflows.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

impl<T> Queue<T> {
    /// A queue holding at most `capacity` items, with `policy` for pushes into a full queue.
    pub fn new(capacity: usize, policy: Overflow) -> Result<Self, QueueConfigError> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(QueueConfigError::InvalidCapacity {
                capacity,
                max: MAX_CAPACITY,
            });
        }
        Ok(Self {
            items: ArrayQueue::new(capacity),
            policy,
            signal: Signal::default(),
            pushed: CachePadded::new(AtomicU64::new(0)),
            popped: CachePadded::new(AtomicU64::new(0)),
            dropped: CachePadded::new(AtomicU64::new(0)),
        })
    }

    /// Push without waiting, applying the overflow policy if the queue is full.
    ///
    /// Fails with [`QueueError::Closed`] after [`close`](Self::close), and with
    /// [`QueueError::Full`] when full under [`Overflow::Reject`] or
    /// [`Overflow::Block`].
    pub fn try_push(&self, item: T) -> Result<Pushed<T>, PushError<T>> {
        let result = self.attempt_push(item);
        if matches!(result, Ok(Pushed::Queued | Pushed::Evicted(_))) {
            self.signal.notify_not_empty();
        }
        result
    }

    /// Push, waiting up to `timeout` (`None`: forever) for room under
    /// [`Overflow::Block`]. Other policies never wait: this is `try_push`.
    pub fn push(&self, item: T, timeout: Option<Duration>) -> Result<Pushed<T>, PushError<T>> {
        if self.policy != Overflow::Block {
            return self.try_push(item);
        }
        let result = self
            .signal
            .wait(
                Side::NotFull,
                deadline_after(timeout),
                item,
                |item| match self.attempt_push(item) {
                    Err(PushError {
                        kind: QueueError::Full,
                        item,
                    }) => Attempt::Retry(item),
                    done => Attempt::Done(done),
                },
            )
            .unwrap_or_else(|(kind, item)| Err(PushError { kind, item }));
        if result.is_ok() {
            self.signal.notify_not_empty();
        }
        result
    }

    /// One push attempt without notifying waiters (the caller does, outside any lock).
    fn attempt_push(&self, item: T) -> Result<Pushed<T>, PushError<T>> {
        if self.signal.is_closed() {
            return Err(PushError {
                kind: QueueError::Closed,
                item,
            });
        }
        let outcome = match self.policy {
            Overflow::DropOldest => match self.items.force_push(item) {
                None => Pushed::Queued,
                Some(old) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    // The evicted item was counted as pushed when it came in.
                    Pushed::Evicted(old)
                }
            },
            Overflow::DropNewest => match self.items.push(item) {
                Ok(()) => Pushed::Queued,
                Err(item) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    Pushed::Dropped(item)
                }
            },
            Overflow::Reject | Overflow::Block => match self.items.push(item) {
                Ok(()) => Pushed::Queued,
                Err(item) => {
                    return Err(PushError {
                        kind: QueueError::Full,
                        item,
                    });
                }
            },
        };
        self.pushed.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }

    /// Pop without waiting: [`QueueError::Empty`] if there is nothing,
    /// [`QueueError::Closed`] if closed and drained.
    pub fn try_pop(&self) -> Result<T, QueueError> {
        let result = self.attempt_pop();
        if result.is_ok() {
            self.signal.notify_not_full();
        }
        result
    }

    /// Pop, waiting up to `timeout` (`None`: forever) for an item.
    /// [`QueueError::Timeout`] if none came, [`QueueError::Closed`] once the
    /// queue is closed and drained.
    pub fn pop(&self, timeout: Option<Duration>) -> Result<T, QueueError> {
        let result = self
            .signal
            .wait(
                Side::NotEmpty,
                deadline_after(timeout),
                (),
                |()| match self.attempt_pop() {
                    Err(QueueError::Empty) => Attempt::Retry(()),
                    other => Attempt::Done(other),
                },
            )
            .unwrap_or_else(|(kind, ())| Err(kind));
        if result.is_ok() {
            self.signal.notify_not_full();
        }
        result
    }

    fn attempt_pop(&self) -> Result<T, QueueError> {
        if let Some(item) = self.items.pop() {
            self.popped.fetch_add(1, Ordering::Relaxed);
            return Ok(item);
        }
        if !self.signal.is_closed() {
            return Err(QueueError::Empty);
        }
        // Closed: take anything a push that raced with close() left behind.
        match self.items.pop() {
            Some(item) => {
                self.popped.fetch_add(1, Ordering::Relaxed);
                Ok(item)
            }
            None => Err(QueueError::Closed),
        }
    }

    /// Close the queue and wake every waiter. Pushes fail from now on; pops
    /// drain what is left, then fail with [`QueueError::Closed`]. Returns
    /// whether this call closed it (false if it already was closed).
    pub fn close(&self) -> bool {
        self.signal.close()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.signal.is_closed()
    }

    /// Threads blocked in `pop` or `push` right now (parked, not spinning).
    pub fn waiting(&self) -> usize {
        self.signal.waiting()
    }

    /// The overflow policy chosen at construction.
    pub fn policy(&self) -> Overflow {
        self.policy
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// Items in the queue now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the queue holds no items now.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items accepted by push calls, including those then dropped by policy.
    pub fn pushed(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    /// Items handed out by pops.
    pub fn popped(&self) -> u64 {
        self.popped.load(Ordering::Relaxed)
    }

    /// Items discarded by the overflow policy.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// All counters at once.
    pub fn stats(&self) -> QueueStats {
        QueueStats {
            pushed: self.pushed(),
            popped: self.popped(),
            dropped: self.dropped(),
            len: self.len(),
            capacity: self.capacity(),
        }
    }
}
