//! Bindings for the queues: `Queue` (MPMC of Python objects between stage
//! threads) and `AudioQueue` (the SPSC ring of float32 samples).
#![expect(
    clippy::doc_markdown,
    reason = "doc comments here are the Python docstrings, written for Python readers"
)]

use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::queue::{
    Consumer, Monitor, Overflow, Producer, PushError, Pushed, Queue, QueueError, spsc,
};

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
            }) if self.inner.policy() == Overflow::Block => item,
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

    /// Calls blocked in pop() or push() right now.
    #[getter]
    fn waiting(&self) -> usize {
        self.inner.waiting()
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

/// A bounded ring of float32 samples from one producer thread to one
/// consumer thread (audio frames between a device callback or decoder and
/// a stage), with bulk copies in and out.
///
/// Each end is guarded by its own lock, so calls on the same end from
/// several threads are serialised but stay correct.
#[pyclass(name = "AudioQueue", module = "speech_to_speech._core", frozen)]
pub struct PyAudioQueue {
    producer: Mutex<Producer<f32>>,
    consumer: Mutex<Consumer<f32>>,
    monitor: Monitor<f32>,
}

/// Lock an end of the ring. Poisoning only means another call panicked
/// mid-way; the ring's own state is always consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lock without blocking while holding the GIL: `None` if another thread
/// holds the end (it may be waiting with the GIL released).
fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

#[pymethods]
impl PyAudioQueue {
    /// A ring of at most `capacity` samples. `overflow`: "reject" (a push
    /// writes what fits), "drop_newest" (writes what fits and counts the rest
    /// as dropped) or "block" (a push waits for room). "drop_oldest" is not
    /// available: the consumer can catch up with skip().
    #[new]
    #[pyo3(signature = (*, capacity, overflow = "drop_newest"))]
    fn new(capacity: usize, overflow: &str) -> PyResult<Self> {
        let (producer, consumer) = spsc(capacity, overflow.parse()?)?;
        Ok(Self {
            monitor: producer.monitor(),
            producer: Mutex::new(producer),
            consumer: Mutex::new(consumer),
        })
    }

    /// Append samples and return how many were queued. Under "block" waits
    /// up to `timeout` seconds (None: forever), GIL released, for room for
    /// all of them and returns fewer only if the timeout expired. Raises
    /// QueueClosedError after close().
    #[pyo3(signature = (samples, timeout = None))]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "pyo3 hands extracted arguments over by value"
    )]
    fn push(
        &self,
        py: Python<'_>,
        samples: PyReadonlyArray1<'_, f32>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let timeout = timeout_arg(timeout)?;
        let src = samples.as_slice()?;
        let written = match try_lock(&self.producer) {
            Some(mut p) => {
                let n = p.push_slice(src)?;
                if n == src.len() || p.policy() != Overflow::Block {
                    return Ok(n);
                }
                n
            }
            None => 0,
        };
        // Wait for room (or for the other pusher) without the GIL, on a copy.
        let rest = src[written..].to_vec();
        let done = wait_detached(py, timeout, 0usize, |off, slice| {
            let mut p = lock(&self.producer);
            let off = off
                + p.push_slice_timeout(&rest[off..], Some(slice))
                    .map_err(|e| (e, off))?;
            if off < rest.len() && p.policy() == Overflow::Block {
                return Err((QueueError::Timeout, off));
            }
            Ok(off)
        })?;
        match done {
            Ok(off) | Err((QueueError::Timeout, off)) => Ok(written + off),
            Err((kind, _)) => Err(kind.into()),
        }
    }

    /// Take up to `max_samples` samples, waiting up to `timeout` seconds
    /// (None: forever), GIL released, until at least one is there. Raises
    /// QueueTimeoutError if none came, QueueClosedError once closed and
    /// drained.
    #[pyo3(signature = (max_samples, timeout = None))]
    fn pop<'py>(
        &self,
        py: Python<'py>,
        max_samples: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let timeout = timeout_arg(timeout)?;
        let mut out = vec![0f32; max_samples];
        if let Some(mut c) = try_lock(&self.consumer) {
            let n = c.pop_slice(&mut out)?;
            if n > 0 || max_samples == 0 {
                out.truncate(n);
                return Ok(PyArray1::from_vec(py, out));
            }
        }
        let outcome = wait_detached(py, timeout, out, |mut out, slice| {
            match lock(&self.consumer).pop_slice_timeout(&mut out, Some(slice)) {
                Ok(n) => {
                    out.truncate(n);
                    Ok(out)
                }
                Err(kind) => Err((kind, out)),
            }
        })?;
        match outcome {
            Ok(out) => Ok(PyArray1::from_vec(py, out)),
            Err((kind, _)) => Err(kind.into()),
        }
    }

    /// Take up to `max_samples` samples without waiting (an empty array if
    /// there are none). Raises QueueClosedError once closed and drained.
    fn try_pop<'py>(
        &self,
        py: Python<'py>,
        max_samples: usize,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let mut out = vec![0f32; max_samples];
        let n = match try_lock(&self.consumer) {
            Some(mut c) => c.pop_slice(&mut out)?,
            None => py.detach(|| lock(&self.consumer).pop_slice(&mut out))?,
        };
        out.truncate(n);
        Ok(PyArray1::from_vec(py, out))
    }

    /// Discard up to `n` of the oldest samples (to catch up after a stall);
    /// they count as dropped. Returns how many were discarded.
    fn skip(&self, py: Python<'_>, n: usize) -> usize {
        match try_lock(&self.consumer) {
            Some(mut c) => c.skip(n),
            None => py.detach(|| lock(&self.consumer).skip(n)),
        }
    }

    /// Close the ring: pushes raise QueueClosedError, pops drain what is
    /// left first. Returns False if it was already closed.
    fn close(&self) -> bool {
        self.monitor.close()
    }

    /// Whether close() was called.
    #[getter]
    fn closed(&self) -> bool {
        self.monitor.is_closed()
    }

    /// Calls blocked in pop() or push() right now.
    #[getter]
    fn waiting(&self) -> usize {
        self.monitor.waiting()
    }

    /// The most samples the ring holds.
    #[getter]
    fn capacity(&self) -> usize {
        self.monitor.capacity()
    }

    /// The overflow policy: "reject", "drop_newest" or "block".
    #[getter]
    fn overflow(&self) -> &'static str {
        self.monitor.policy().as_str()
    }

    /// Samples accepted by push calls, including those dropped by policy.
    #[getter]
    fn pushed(&self) -> u64 {
        self.monitor.stats().pushed
    }

    /// Samples handed out by pops.
    #[getter]
    fn popped(&self) -> u64 {
        self.monitor.stats().popped
    }

    /// Samples dropped by the overflow policy or skip().
    #[getter]
    fn dropped(&self) -> u64 {
        self.monitor.stats().dropped
    }

    fn __len__(&self) -> usize {
        self.monitor.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "AudioQueue(capacity={}, overflow={:?}, len={}, closed={})",
            self.monitor.capacity(),
            self.monitor.policy().as_str(),
            self.monitor.len(),
            if self.monitor.is_closed() {
                "True"
            } else {
                "False"
            },
        )
    }
}
