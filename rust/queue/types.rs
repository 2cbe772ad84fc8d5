//! What both queues share: the overflow policy, errors, push results and counters.

use std::fmt;

use thiserror::Error;

/// What a push into a full queue does. Chosen once, at construction.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Overflow {
    /// Refuse the new item: the push fails with [`QueueError::Full`] and hands
    /// the item back. The caller decides (retry, drop, report back-pressure).
    #[default]
    Reject,
    /// Accept the push but discard the new item; `dropped` counts it. Right
    /// for telemetry and for audio where a late frame is worthless.
    DropNewest,
    /// Evict the oldest queued item to make room; `dropped` counts it. Right
    /// when only the freshest data matters. Not available on the SPSC ring
    /// (its producer cannot remove items); use [`Consumer::skip`] there.
    DropOldest,
    /// `push(timeout)` waits for room. `try_push` still never waits and fails
    /// with [`QueueError::Full`] like [`Overflow::Reject`].
    Block,
}

impl Overflow {
    /// The policy's name as used in configuration and in Python.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::DropNewest => "drop_newest",
            Self::DropOldest => "drop_oldest",
            Self::Block => "block",
        }
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Overflow {
    type Err = QueueConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reject" => Ok(Self::Reject),
            "drop_newest" => Ok(Self::DropNewest),
            "drop_oldest" => Ok(Self::DropOldest),
            "block" => Ok(Self::Block),
            other => Err(QueueConfigError::UnknownPolicy(other.to_owned())),
        }
    }
}

/// Why a queue could not be built.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueueConfigError {
    /// The capacity was zero or too large to allocate. Pass a capacity of at
    /// least one item (and at most `isize::MAX / 2` slots).
    #[error("queue capacity must be between 1 and {max}, got {capacity}")]
    InvalidCapacity {
        /// The capacity asked for.
        capacity: usize,
        /// The largest capacity this queue accepts.
        max: usize,
    },
    /// The overflow policy name is not one of `reject`, `drop_newest`,
    /// `drop_oldest`, `block`. Fix the configuration.
    #[error("unknown overflow policy {0:?}: expected reject, drop_newest, drop_oldest or block")]
    UnknownPolicy(String),
    /// This queue cannot implement the policy (the SPSC ring and
    /// [`Overflow::DropOldest`]). Pick another policy, or evict from the
    /// consumer side with [`Consumer::skip`].
    #[error("overflow policy {0} is not supported by this queue")]
    UnsupportedPolicy(Overflow),
}

/// Why a push or pop did not move an item.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum QueueError {
    /// The queue is full and its policy refuses the item
    /// ([`Overflow::Reject`], or `try_push` under [`Overflow::Block`]). The
    /// item comes back in the [`PushError`]; retry later or drop it.
    #[error("queue is full")]
    Full,
    /// Nothing to pop right now (`try_pop` only). Try again later, or use the
    /// blocking `pop` to wait.
    #[error("queue is empty")]
    Empty,
    /// The queue was closed: a push fails at once, a pop fails once the
    /// queue is also empty. Stop producing or consuming; this is the normal
    /// shutdown signal, not a fault.
    #[error("queue is closed")]
    Closed,
    /// A blocking push or pop waited for its whole timeout. The queue is
    /// still usable: retry, or treat the peer as stalled.
    #[error("timed out waiting on the queue")]
    Timeout,
}

/// A push that did not take the item: the reason and the item itself, so the
/// caller decides where it is dropped.
#[derive(Error)]
#[error("{kind}")]
pub struct PushError<T> {
    /// Why the push failed: [`QueueError::Full`], [`QueueError::Closed`] or
    /// [`QueueError::Timeout`].
    pub kind: QueueError,
    /// The item that was not queued.
    pub item: T,
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// What an accepted push did. Items dropped by policy are handed back so the
/// caller chooses where they are destroyed (for Python objects: with the GIL).
#[non_exhaustive]
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// The item is in the queue.
    Queued,
    /// The queue was full under [`Overflow::DropNewest`]: this is the item
    /// just pushed, not queued, and counted in `dropped`.
    Dropped(T),
    /// The queue was full under [`Overflow::DropOldest`]: the item is queued
    /// and this is the oldest item it displaced, counted in `dropped`.
    Evicted(T),
}

impl<T> Pushed<T> {
    /// Whether the pushed item itself is now in the queue.
    pub fn is_queued(&self) -> bool {
        !matches!(self, Self::Dropped(_))
    }
}

/// A consistent-enough view of a queue's counters (each field is read
/// atomically, the set is not a snapshot while pushes are in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Items accepted by push calls, including those then dropped by policy.
    pub pushed: u64,
    /// Items handed out by pops.
    pub popped: u64,
    /// Items discarded by the overflow policy (or [`Consumer::skip`]).
    pub dropped: u64,
    /// Items in the queue now.
    pub len: usize,
    /// The most items the queue holds.
    pub capacity: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_round_trip() {
        for p in [
            Overflow::Reject,
            Overflow::DropNewest,
            Overflow::DropOldest,
            Overflow::Block,
        ] {
            assert_eq!(p.to_string().parse::<Overflow>(), Ok(p));
        }
        assert_eq!(Overflow::default(), Overflow::Reject);
        assert!("Reject".parse::<Overflow>().is_err());
    }

    #[test]
    fn push_error_shows_its_kind_without_the_item() {
        struct Opaque;
        let e = PushError {
            kind: QueueError::Full,
            item: Opaque,
        };
        assert_eq!(e.to_string(), "queue is full");
        assert_eq!(format!("{e:?}"), "PushError { kind: Full, .. }");
    }

    #[test]
    fn only_dropped_is_not_queued() {
        assert!(Pushed::<u8>::Queued.is_queued());
        assert!(Pushed::Evicted(1).is_queued());
        assert!(!Pushed::Dropped(1).is_queued());
    }
}
