//! Bindings for the MPMC queue: a bounded queue of Python objects between stage threads.
#![expect(
    clippy::doc_markdown,
    reason = "doc comments here are the Python docstrings, written for Python readers"
)]

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::queue::{Overflow, PushError, Pushed, Queue, QueueError};

/// How long a blocked call sleeps with the GIL released before it takes the
/// GIL back to let signal handlers (Ctrl-C) run. Wake-ups by a push or
/// close are immediate; this only bounds how late a KeyboardInterrupt is.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// A bounded, thread-safe FIFO of Python objects with an overflow policy.
///
/// Blocking calls release the GIL while they wait.
#[pyclass(name = "Queue", module = "speech_to_speech._core", frozen)]
pub struct PyQueue {
    inner: Queue<Py<PyAny>>,
}

/// `timeout` in seconds as a `Duration`; `None` waits forever.
fn timeout_arg(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(
            "timeout must be a non-negative number of seconds or None",
        )),
        // Too large to represent: as good as forever.
        Some(t) => Ok(Duration::try_from_secs_f64(t).ok()),
    }
}

/// Run a blocking queue operation with the GIL released, in slices so
/// signal handlers still run. `op` gets the state and the slice's timeout,
/// and returns either the result or the state to retry with after
/// `QueueError::Timeout`.
fn wait_detached<S: Send, R: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut state: S,
    op: impl Fn(S, Duration) -> Result<R, (QueueError, S)> + Sync,
) -> PyResult<Result<R, (QueueError, S)>> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let slice = match deadline {
            None => SIGNAL_CHECK,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK),
        };
        match py.detach(|| op(state, slice)) {
            Err((QueueError::Timeout, s)) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Err((QueueError::Timeout, s)));
                }
                state = s;
                py.check_signals()?;
            }
            done => return Ok(done),
        }
    }
}

#[pymethods]
impl PyQueue {
    /// A queue of at most `capacity` items. `overflow` says what a push into
    /// a full queue does: "reject", "drop_newest", "drop_oldest" or "block".
    #[new]
    #[pyo3(signature = (*, capacity, overflow = "reject"))]
    fn new(capacity: usize, overflow: &str) -> PyResult<Self> {
        let policy: Overflow = overflow.parse()?;
        Ok(Self {
            inner: Queue::new(capacity, policy)?,
        })
    }

    /// Push without waiting. True if the item is now queued (under
    /// "drop_oldest" possibly by evicting the oldest item), False if the
    /// queue was full and the item was not queued ("reject", "block") or was
    /// discarded ("drop_newest", counted in `dropped`). Raises
    /// QueueClosedError after close().
    fn try_push(&self, item: Py<PyAny>) -> PyResult<bool> {
        match self.inner.try_push(item) {
            Ok(pushed) => Ok(pushed.is_queued()),
            Err(PushError {
                kind: QueueError::Full,
                ..
            }) => Ok(false),
            Err(e) => Err(e.kind.into()),
        }
    }

    /// Push, returning True if the item is queued and False if "drop_newest"
    /// discarded it. Under "block" waits up to `timeout` seconds (None:
    /// forever) for room, with the GIL released, then raises
    /// QueueTimeoutError. Under "reject" a full queue raises QueueFullError.
    /// Raises QueueClosedError after close().
    #[pyo3(signature = (item, timeout = None))]
    fn push(&self, py: Python<'_>, item: Py<PyAny>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout_arg(timeout)?;
        let first = match self.inner.try_push(item) {
            Err(PushError {
                kind: QueueError::Full,
                item,
            }) if self.inner.policy() == Overflow::Block && timeout != Some(Duration::ZERO) => item,
            Ok(pushed) => return Ok(pushed.is_queued()),
            Err(e) => return Err(e.kind.into()),
        };
        let inner = &self.inner;
        let outcome = wait_detached(py, timeout, first, |item, slice| {
            inner
                .push(item, Some(slice))
                .map_err(|PushError { kind, item }| (kind, item))
        })?;
        // Anything handed back (an evicted item, the refused item) is dropped
        // here, with the GIL held.
        match outcome {
            Ok(pushed) => Ok(!matches!(pushed, Pushed::Dropped(_))),
            Err((kind, _item)) => Err(kind.into()),
        }
    }

    /// Pop without waiting. Raises QueueEmptyError if there is nothing, and
    /// QueueClosedError once the queue is closed and drained.
    fn try_pop(&self) -> PyResult<Py<PyAny>> {
        Ok(self.inner.try_pop()?)
    }

    /// Pop, waiting up to `timeout` seconds (None: forever) with the GIL
    /// released. Raises QueueTimeoutError if nothing came, QueueClosedError
    /// once the queue is closed and drained.
    #[pyo3(signature = (timeout = None))]
    fn pop(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let timeout = timeout_arg(timeout)?;
        // An item already waiting is taken without releasing the GIL.
        match self.inner.try_pop() {
            Err(QueueError::Empty) if timeout != Some(Duration::ZERO) => {}
            Err(QueueError::Empty) => return Err(QueueError::Timeout.into()),
            done => return Ok(done?),
        }
        let inner = &self.inner;
        let outcome = wait_detached(py, timeout, (), |(), slice| {
            inner.pop(Some(slice)).map_err(|kind| (kind, ()))
        })?;
        outcome.map_err(|(kind, ())| kind.into())
    }

    /// Close the queue and wake every blocked caller. Pushes raise
    /// QueueClosedError from now on; pops drain what is left first. Returns
    /// False if the queue was already closed.
    fn close(&self) -> bool {
        self.inner.close()
    }

    /// Whether close() was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The most items the queue holds.
    #[getter]
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// The overflow policy: "reject", "drop_newest", "drop_oldest" or "block".
    #[getter]
    fn overflow(&self) -> &'static str {
        self.inner.policy().as_str()
    }

    /// Items accepted by push calls, including those then dropped by policy.
    #[getter]
    fn pushed(&self) -> u64 {
        self.inner.pushed()
    }

    /// Items handed out by pops.
    #[getter]
    fn popped(&self) -> u64 {
        self.inner.popped()
    }

    /// Items discarded by the overflow policy.
    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Queue(capacity={}, overflow={:?}, len={}, closed={})",
            self.inner.capacity(),
            self.inner.policy().as_str(),
            self.inner.len(),
            if self.inner.is_closed() {
                "True"
            } else {
                "False"
            },
        )
    }
}
