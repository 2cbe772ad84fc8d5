//! Bounded queues between threads and stages: an SPSC ring for audio and an MPMC queue for jobs.
//!
//! Both queues share the same contract:
//!
//! * a capacity fixed at construction and an [`Overflow`] policy that says
//!   what a push into a full queue does;
//! * a lock-free fast path (`try_push`/`try_pop` never lock, never allocate);
//! * blocking `pop(timeout)` and, for [`Overflow::Block`], `push(timeout)` that
//!   spin briefly and then park on a condition variable, so a waiter costs no
//!   CPU; the lock behind it is only touched when someone is actually waiting;
//! * `close()`, which wakes every waiter: pushes fail from then on, pops
//!   drain what is left and then fail with [`QueueError::Closed`];
//! * counters you can read at any time: `pushed() == popped() + dropped() +
//!   len()` whenever no push or pop is in flight.

mod mpmc;
mod spsc;
mod types;
mod wait;

pub use mpmc::Queue;
pub use spsc::{Consumer, Monitor, Producer, spsc};
pub use types::{Overflow, PushError, Pushed, QueueConfigError, QueueError, QueueStats};
