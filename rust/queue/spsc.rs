//! The bounded SPSC ring for audio frames: split producer and consumer
//! handles, single items or bulk slices, no lock on either fast path.

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::mpmc::{MAX_CAPACITY, deadline_after};
use super::types::{Overflow, PushError, Pushed, QueueConfigError, QueueError, QueueStats};
use super::wait::{Attempt, Side, Signal};

/// Build a ring of `capacity` items and split it into its two ends.
///
/// `policy` may be [`Overflow::Reject`], [`Overflow::DropNewest`] or
/// [`Overflow::Block`]; [`Overflow::DropOldest`] needs the producer to remove
/// items, which would make it a second consumer, so it is refused with
/// [`QueueConfigError::UnsupportedPolicy`] (the consumer can catch up with
/// [`Consumer::skip`] instead). Dropping either end closes the ring.
pub fn spsc<T: Send>(
    capacity: usize,
    policy: Overflow,
) -> Result<(Producer<T>, Consumer<T>), QueueConfigError> {
    spsc_from(capacity, policy, 0)
}

/// `spsc`, with both positions starting at `start` (tests start near
/// `usize::MAX` to cover wrapping).
fn spsc_from<T: Send>(
    capacity: usize,
    policy: Overflow,
    start: usize,
) -> Result<(Producer<T>, Consumer<T>), QueueConfigError> {
    if policy == Overflow::DropOldest {
        return Err(QueueConfigError::UnsupportedPolicy(policy));
    }
    let slots = match capacity.checked_next_power_of_two() {
        Some(n) if capacity > 0 && capacity <= MAX_CAPACITY => n,
        _ => {
            return Err(QueueConfigError::InvalidCapacity {
                capacity,
                max: MAX_CAPACITY,
            });
        }
    };
    let ring = Arc::new(Ring {
        buf: (0..slots)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect(),
        mask: slots - 1,
        capacity,
        policy,
        origin: start,
        head: CachePadded::new(AtomicUsize::new(start)),
        tail: CachePadded::new(AtomicUsize::new(start)),
        dropped_newest: CachePadded::new(AtomicU64::new(0)),
        skipped: CachePadded::new(AtomicU64::new(0)),
        signal: Signal::default(),
    });
    let cursor = Cursor {
        pos: start,
        other: start,
    };
    Ok((
        Producer {
            ring: Arc::clone(&ring),
            cursor,
        },
        Consumer { ring, cursor },
    ))
}

struct Ring<T> {
    /// A power-of-two number of slots (at least `capacity`); slot `i` of
    /// position `p` is `p & mask`. Positions only grow (wrapping).
    buf: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    capacity: usize,
    policy: Overflow,
    /// Where both positions started.
    origin: usize,
    /// Next position to read. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next position to write. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    /// Items dropped by `DropNewest` (producer side).
    dropped_newest: CachePadded<AtomicU64>,
    /// Items discarded by `Consumer::skip` (consumer side).
    skipped: CachePadded<AtomicU64>,
    signal: Signal,
}

// SAFETY: slots in [head, tail) are owned by the consumer, the others by the
// producer; ownership moves with the release stores to `tail` and `head`, and
// the handles are not `Clone`, so each side has one thread at a time. Items
// cross threads, hence `T: Send`.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above; the ring owns `T`s and may drop them on any thread.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    fn slot(&self, pos: usize) -> *mut T {
        // `UnsafeCell<MaybeUninit<T>>` has the layout of `T`.
        self.buf[pos & self.mask].get().cast::<T>()
    }

    fn len(&self) -> usize {
        // Head first: the tail only grows, so the difference cannot go negative.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.capacity)
    }

    fn stats(&self) -> QueueStats {
        let dropped_newest = self.dropped_newest.load(Ordering::Relaxed);
        let skipped = self.skipped.load(Ordering::Relaxed);
        // Read head first: the tail can only run ahead of it.
        // Positions count from `origin` and wrap; as counters they are
        // exact below 2^64 items (2^32 on 32-bit targets).
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        QueueStats {
            pushed: tail.wrapping_sub(self.origin) as u64 + dropped_newest,
            // `skipped` is bumped just before `head` moves past the skipped items.
            popped: (head.wrapping_sub(self.origin) as u64).saturating_sub(skipped),
            dropped: dropped_newest + skipped,
            len: tail.wrapping_sub(head).min(self.capacity),
            capacity: self.capacity,
        }
    }

    /// Copy `src` into the slots from position `pos` (wrapping around the buffer).
    ///
    /// # Safety
    /// The producer must own the `src.len()` slots from `pos`.
    unsafe fn write_slots(&self, pos: usize, src: &[T])
    where
        T: Copy,
    {
        let start = pos & self.mask;
        let first = src.len().min(self.buf.len() - start);
        // SAFETY: both runs lie inside `buf` and are owned by the producer.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.slot(start), first);
            std::ptr::copy_nonoverlapping(src[first..].as_ptr(), self.slot(0), src.len() - first);
        }
    }

    /// Copy the slots from position `pos` into `dst` (wrapping around the buffer).
    ///
    /// # Safety
    /// The consumer must own the `dst.len()` slots from `pos`, all initialised.
    unsafe fn read_slots(&self, pos: usize, dst: &mut [T])
    where
        T: Copy,
    {
        let start = pos & self.mask;
        let first = dst.len().min(self.buf.len() - start);
        let rest = dst.len() - first;
        // SAFETY: both runs lie inside `buf`, are initialised and owned by the consumer.
        unsafe {
            std::ptr::copy_nonoverlapping(self.slot(start), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.slot(0), dst[first..].as_mut_ptr(), rest);
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let head = *self.head.get_mut();
        let tail = *self.tail.get_mut();
        let mut pos = head;
        while pos != tail {
            // SAFETY: we are the last owner; [head, tail) holds initialised items.
            unsafe { self.slot(pos).drop_in_place() };
            pos = pos.wrapping_add(1);
        }
    }
}

/// One end's own position and its cached copy of the other end's.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    pos: usize,
    other: usize,
}

/// The writing end of an SPSC ring. Not `Clone`: exactly one producer.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    cursor: Cursor,
}

/// The reading end of an SPSC ring. Not `Clone`: exactly one consumer.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    cursor: Cursor,
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("policy", &self.ring.policy)
            .field("stats", &self.ring.stats())
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("policy", &self.ring.policy)
            .field("stats", &self.ring.stats())
            .finish_non_exhaustive()
    }
}

/// Free slots seen from the producer, refreshing its copy of `head` only when needed.
fn free_slots<T>(ring: &Ring<T>, cursor: &mut Cursor, wanted: usize) -> usize {
    let mut free = ring.capacity - cursor.pos.wrapping_sub(cursor.other);
    if free < wanted {
        cursor.other = ring.head.load(Ordering::Acquire);
        free = ring.capacity - cursor.pos.wrapping_sub(cursor.other);
    }
    free
}

/// Items available to the consumer, refreshing its copy of `tail` only when needed.
fn available<T>(ring: &Ring<T>, cursor: &mut Cursor, wanted: usize) -> usize {
    let mut avail = cursor.other.wrapping_sub(cursor.pos);
    if avail < wanted {
        cursor.other = ring.tail.load(Ordering::Acquire);
        avail = cursor.other.wrapping_sub(cursor.pos);
    }
    avail
}

fn attempt_push<T>(
    ring: &Ring<T>,
    cursor: &mut Cursor,
    item: T,
) -> Result<Pushed<T>, PushError<T>> {
    if ring.signal.is_closed() {
        return Err(PushError {
            kind: QueueError::Closed,
            item,
        });
    }
    if free_slots(ring, cursor, 1) == 0 {
        return match ring.policy {
            Overflow::DropNewest => {
                ring.dropped_newest.fetch_add(1, Ordering::Relaxed);
                Ok(Pushed::Dropped(item))
            }
            _ => Err(PushError {
                kind: QueueError::Full,
                item,
            }),
        };
    }
    // SAFETY: the slot at `pos` is free (checked above) and only we write it.
    unsafe { ring.slot(cursor.pos).write(item) };
    cursor.pos = cursor.pos.wrapping_add(1);
    ring.tail.store(cursor.pos, Ordering::Release);
    Ok(Pushed::Queued)
}

fn attempt_pop<T>(ring: &Ring<T>, cursor: &mut Cursor) -> Result<T, QueueError> {
    if available(ring, cursor, 1) == 0 {
        if !ring.signal.is_closed() {
            return Err(QueueError::Empty);
        }
        // Closed: one more look for an item pushed just before close().
        if available(ring, cursor, 1) == 0 {
            return Err(QueueError::Closed);
        }
    }
    // SAFETY: the slot at `pos` holds an item published by the producer.
    let item = unsafe { ring.slot(cursor.pos).read() };
    cursor.pos = cursor.pos.wrapping_add(1);
    ring.head.store(cursor.pos, Ordering::Release);
    Ok(item)
}

/// Copy as many items of `src` as fit, without notifying waiters.
fn write_slice<T: Copy>(
    ring: &Ring<T>,
    cursor: &mut Cursor,
    src: &[T],
) -> Result<usize, QueueError> {
    if ring.signal.is_closed() {
        return Err(QueueError::Closed);
    }
    let n = free_slots(ring, cursor, src.len()).min(src.len());
    if n > 0 {
        // SAFETY: the `n` slots from `pos` are free and only we write them.
        unsafe { ring.write_slots(cursor.pos, &src[..n]) };
        cursor.pos = cursor.pos.wrapping_add(n);
        ring.tail.store(cursor.pos, Ordering::Release);
    }
    Ok(n)
}

/// Copy up to `dst.len()` published items out, without notifying waiters.
fn read_slice<T: Copy>(
    ring: &Ring<T>,
    cursor: &mut Cursor,
    dst: &mut [T],
) -> Result<usize, QueueError> {
    let mut n = available(ring, cursor, dst.len()).min(dst.len());
    if n == 0 && ring.signal.is_closed() {
        // Closed: one more look for items pushed just before close().
        n = available(ring, cursor, 1).min(dst.len());
        if n == 0 && !dst.is_empty() {
            return Err(QueueError::Closed);
        }
    }
    if n > 0 {
        // SAFETY: the `n` slots from `pos` hold items published by the producer.
        unsafe { ring.read_slots(cursor.pos, &mut dst[..n]) };
        cursor.pos = cursor.pos.wrapping_add(n);
        ring.head.store(cursor.pos, Ordering::Release);
    }
    Ok(n)
}

macro_rules! shared_accessors {
    () => {
        /// Close the ring and wake a waiting peer. Pushes fail from now on;
        /// pops drain what is left, then fail with [`QueueError::Closed`].
        /// Returns whether this call closed it.
        pub fn close(&self) -> bool {
            self.ring.signal.close()
        }

        /// Whether the ring was closed (by either end, or by dropping one).
        pub fn is_closed(&self) -> bool {
            self.ring.signal.is_closed()
        }

        /// Ends blocked in `pop` or `push` right now (parked, not spinning).
        pub fn waiting(&self) -> usize {
            self.ring.signal.waiting()
        }

        /// The overflow policy chosen at construction.
        pub fn policy(&self) -> Overflow {
            self.ring.policy
        }

        /// The most items the ring holds.
        pub fn capacity(&self) -> usize {
            self.ring.capacity
        }

        /// Items in the ring now.
        pub fn len(&self) -> usize {
            self.ring.len()
        }

        /// Whether the ring holds no items now.
        pub fn is_empty(&self) -> bool {
            self.ring.len() == 0
        }

        /// Counters: pushed (including dropped by policy), popped, dropped, len, capacity.
        pub fn stats(&self) -> QueueStats {
            self.ring.stats()
        }
    };
}

/// A shared view of an SPSC ring: counters and `close`, no pushing or
/// popping. Clone it into metrics or control threads.
pub struct Monitor<T> {
    ring: Arc<Ring<T>>,
}

impl<T> Clone for Monitor<T> {
    fn clone(&self) -> Self {
        Self {
            ring: Arc::clone(&self.ring),
        }
    }
}

impl<T> fmt::Debug for Monitor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("policy", &self.ring.policy)
            .field("stats", &self.ring.stats())
            .finish_non_exhaustive()
    }
}

impl<T> Monitor<T> {
    shared_accessors!();
}

impl<T> Producer<T> {
    shared_accessors!();

    /// Push without waiting. Full: [`QueueError::Full`] (item handed back)
    /// under `Reject`/`Block`, [`Pushed::Dropped`] under `DropNewest`.
    pub fn try_push(&mut self, item: T) -> Result<Pushed<T>, PushError<T>> {
        let result = attempt_push(&self.ring, &mut self.cursor, item);
        if matches!(result, Ok(Pushed::Queued)) {
            self.ring.signal.notify_not_empty();
        }
        result
    }

    /// Push, waiting up to `timeout` (`None`: forever) for room under
    /// [`Overflow::Block`]; other policies never wait.
    pub fn push(&mut self, item: T, timeout: Option<Duration>) -> Result<Pushed<T>, PushError<T>> {
        if self.ring.policy != Overflow::Block {
            return self.try_push(item);
        }
        let ring = &*self.ring;
        let cursor = &mut self.cursor;
        let result = ring
            .signal
            .wait(
                Side::NotFull,
                deadline_after(timeout),
                item,
                |item| match attempt_push(ring, cursor, item) {
                    Err(PushError {
                        kind: QueueError::Full,
                        item,
                    }) => Attempt::Retry(item),
                    done => Attempt::Done(done),
                },
            )
            .unwrap_or_else(|(kind, item)| Err(PushError { kind, item }));
        if result.is_ok() {
            ring.signal.notify_not_empty();
        }
        result
    }

    /// Copy as many items of `src` as fit, without waiting, and return how
    /// many were written (the first `n`). Under [`Overflow::DropNewest`] the
    /// rest are counted as dropped; otherwise they are the caller's to retry.
    /// [`QueueError::Closed`] after close.
    pub fn push_slice(&mut self, src: &[T]) -> Result<usize, QueueError>
    where
        T: Copy,
    {
        let ring = &*self.ring;
        let n = write_slice(ring, &mut self.cursor, src)?;
        if n > 0 {
            ring.signal.notify_not_empty();
        }
        if n < src.len() && ring.policy == Overflow::DropNewest {
            ring.dropped_newest
                .fetch_add((src.len() - n) as u64, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Like [`push_slice`](Self::push_slice), but under [`Overflow::Block`]
    /// waits up to `timeout` (`None`: forever) until all of `src` is
    /// written. Returns how many items were written: fewer than `src.len()`
    /// only if the timeout expired (or, for other policies, as `push_slice`).
    pub fn push_slice_timeout(
        &mut self,
        src: &[T],
        timeout: Option<Duration>,
    ) -> Result<usize, QueueError>
    where
        T: Copy,
    {
        let mut written = self.push_slice(src)?;
        if written == src.len() || self.ring.policy != Overflow::Block {
            return Ok(written);
        }
        let deadline = deadline_after(timeout);
        let ring = &*self.ring;
        let cursor = &mut self.cursor;
        while written < src.len() {
            // Come out of the wait after any progress, to wake the consumer
            // (notifying inside the wait would take the waiter lock twice).
            let step = ring.signal.wait(Side::NotFull, deadline, (), |()| {
                match write_slice(ring, cursor, &src[written..]) {
                    Ok(0) => Attempt::Retry(()),
                    done => Attempt::Done(done),
                }
            });
            match step {
                Ok(Ok(n)) => {
                    written += n;
                    ring.signal.notify_not_empty();
                }
                Err((QueueError::Timeout, ())) => break,
                Ok(Err(e)) | Err((e, ())) => return Err(e),
            }
        }
        Ok(written)
    }

    /// A handle on the ring's counters and `close`, for other threads.
    pub fn monitor(&self) -> Monitor<T> {
        Monitor {
            ring: Arc::clone(&self.ring),
        }
    }

    /// Items accepted by push calls, including those dropped by policy.
    pub fn pushed(&self) -> u64 {
        self.ring.stats().pushed
    }

    /// Items dropped by policy or skipped by the consumer.
    pub fn dropped(&self) -> u64 {
        self.ring.stats().dropped
    }
}

impl<T> Consumer<T> {
    shared_accessors!();

    /// Pop without waiting: [`QueueError::Empty`] if there is nothing,
    /// [`QueueError::Closed`] if closed and drained.
    pub fn try_pop(&mut self) -> Result<T, QueueError> {
        let result = attempt_pop(&self.ring, &mut self.cursor);
        if result.is_ok() {
            self.ring.signal.notify_not_full();
        }
        result
    }

    /// Pop, waiting up to `timeout` (`None`: forever) for an item.
    pub fn pop(&mut self, timeout: Option<Duration>) -> Result<T, QueueError> {
        let ring = &*self.ring;
        let cursor = &mut self.cursor;
        let result = ring
            .signal
            .wait(
                Side::NotEmpty,
                deadline_after(timeout),
                (),
                |()| match attempt_pop(ring, cursor) {
                    Err(QueueError::Empty) => Attempt::Retry(()),
                    done => Attempt::Done(done),
                },
            )
            .unwrap_or_else(|(kind, ())| Err(kind));
        if result.is_ok() {
            ring.signal.notify_not_full();
        }
        result
    }

    /// Copy up to `dst.len()` items out without waiting; returns how many
    /// (0 if empty), or [`QueueError::Closed`] if closed and drained.
    pub fn pop_slice(&mut self, dst: &mut [T]) -> Result<usize, QueueError>
    where
        T: Copy,
    {
        let result = read_slice(&self.ring, &mut self.cursor, dst);
        if matches!(result, Ok(n) if n > 0) {
            self.ring.signal.notify_not_full();
        }
        result
    }

    /// Like [`pop_slice`](Self::pop_slice), but waits up to `timeout`
    /// (`None`: forever) until at least one item is there.
    pub fn pop_slice_timeout(
        &mut self,
        dst: &mut [T],
        timeout: Option<Duration>,
    ) -> Result<usize, QueueError>
    where
        T: Copy,
    {
        if dst.is_empty() {
            return self.pop_slice(dst);
        }
        let ring = &*self.ring;
        let cursor = &mut self.cursor;
        let result = ring
            .signal
            .wait(
                Side::NotEmpty,
                deadline_after(timeout),
                (),
                |()| match read_slice(ring, cursor, dst) {
                    Ok(0) => Attempt::Retry(()),
                    done => Attempt::Done(done),
                },
            )
            .unwrap_or_else(|(kind, ())| Err(kind));
        if matches!(result, Ok(n) if n > 0) {
            ring.signal.notify_not_full();
        }
        result
    }

    /// Discard up to `n` of the oldest items (consumer-side "drop oldest",
    /// for catching up after a stall); they count as dropped. Returns how
    /// many were discarded.
    pub fn skip(&mut self, n: usize) -> usize {
        let ring = &*self.ring;
        let n = available(ring, &mut self.cursor, n).min(n);
        for i in 0..n {
            // SAFETY: the slots from `pos` hold published items we now own.
            unsafe { ring.slot(self.cursor.pos.wrapping_add(i)).drop_in_place() };
        }
        if n > 0 {
            self.cursor.pos = self.cursor.pos.wrapping_add(n);
            ring.skipped.fetch_add(n as u64, Ordering::Relaxed);
            ring.head.store(self.cursor.pos, Ordering::Release);
            ring.signal.notify_not_full();
        }
        n
    }

    /// Items handed out by pops.
    pub fn popped(&self) -> u64 {
        self.ring.stats().popped
    }

    /// Items dropped by policy or skipped.
    pub fn dropped(&self) -> u64 {
        self.ring.stats().dropped
    }

    /// A handle on the ring's counters and `close`, for other threads.
    pub fn monitor(&self) -> Monitor<T> {
        Monitor {
            ring: Arc::clone(&self.ring),
        }
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // Without a producer, a waiting consumer must learn that nothing more comes.
        self.ring.signal.close();
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.ring.signal.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_wrap_around_usize_max() {
        let (mut tx, mut rx) = spsc_from::<u32>(3, Overflow::Reject, usize::MAX - 4).unwrap();
        let mut next = 0;
        let mut expected = 0;
        let mut out = [0u32; 2];
        for _ in 0..10 {
            let src = [next, next + 1];
            let n = tx.push_slice(&src).unwrap();
            next += n as u32;
            assert!(tx.len() <= 3);
            let m = rx.pop_slice(&mut out).unwrap();
            for &v in &out[..m] {
                assert_eq!(v, expected);
                expected += 1;
            }
            if let Ok(Pushed::Queued) = tx.try_push(next) {
                next += 1;
            }
            if let Ok(v) = rx.try_pop() {
                assert_eq!(v, expected);
                expected += 1;
            }
        }
        while let Ok(v) = rx.try_pop() {
            assert_eq!(v, expected);
            expected += 1;
        }
        assert_eq!(expected, next);
        assert!(next > 10, "the test must actually move items");
        let s = rx.stats();
        assert_eq!(
            (s.pushed, s.popped, s.dropped, s.len),
            (next.into(), next.into(), 0, 0)
        );
        assert_eq!(rx.skip(5), 0);
    }

    #[test]
    fn zero_sized_items_are_counted() {
        let (mut tx, mut rx) = spsc::<()>(2, Overflow::DropNewest).unwrap();
        assert_eq!(tx.try_push(()).unwrap(), Pushed::Queued);
        assert_eq!(tx.try_push(()).unwrap(), Pushed::Queued);
        assert_eq!(tx.try_push(()).unwrap(), Pushed::Dropped(()));
        assert_eq!(rx.try_pop(), Ok(()));
        let s = rx.stats();
        assert_eq!((s.pushed, s.popped, s.dropped, s.len), (3, 1, 1, 1));
    }
}
