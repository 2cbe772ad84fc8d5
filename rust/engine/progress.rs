//! The progress of the job a stage worker runs, as the pool's watchdog sees
//! it: the job's output callbacks beat, the watchdog fails a job that has
//! not beaten within the stage's timeout, and a result is reported once
//! (by the job or by the watchdog, whichever claims it first).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The watchdog's view of one running job.
pub(crate) struct JobControl {
    /// When the job last made progress, ms since the pool started.
    pub(crate) last_beat_ms: AtomicU64,
    /// Its result was reported, by the job or by the watchdog.
    pub(crate) claimed: AtomicBool,
    /// The watchdog gave up on it: its cancel token reads as set.
    pub(crate) expired: AtomicBool,
}

thread_local! {
    /// The job this worker thread runs now, with its pool's clock.
    pub(crate) static CURRENT: RefCell<Option<(Arc<JobControl>, Instant)>> = const { RefCell::new(None) };
}

/// The running job made progress (an output): its timeout starts again.
/// Called from the jobs' output callbacks; a no-op off a worker thread.
pub(crate) fn beat() {
    CURRENT.with(|c| {
        if let Some((control, epoch)) = c.borrow().as_ref() {
            control
                .last_beat_ms
                .store(ms_since(*epoch), Ordering::Release);
        }
    });
}

/// Whether the running job may report its result: false once the watchdog
/// failed it (it timed out), so that a late answer is not reported twice.
/// True off a worker thread.
pub(crate) fn claim_result() -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .is_none_or(|(control, _)| !control.claimed.swap(true, Ordering::AcqRel))
    })
}

/// Whether the watchdog gave up on the job this thread runs (its cancel
/// token then reads as set, so a handler that polls it stops).
pub(crate) fn current_job_expired() -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(|(control, _)| control.expired.load(Ordering::Acquire))
    })
}

pub(crate) fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}
