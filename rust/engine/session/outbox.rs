//! The events a session sends its transport: a bounded queue, a wake-up
//! callback, and an overflow flag for a transport that stopped reading.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::error::SessionError;
use crate::engine::events::EngineEvent;
use crate::engine::metrics::{Metrics, StatusLabel};
use crate::queue::{Overflow, Queue, QueueError};

/// The outgoing events of one session.
pub(crate) struct Outbox {
    events: Queue<EngineEvent>,
    /// Set once by the transport; read without a lock on every event.
    notify: OnceLock<Box<dyn Fn() + Send + Sync>>,
    overflowed: AtomicBool,
    closed: AtomicBool,
    /// The engine's: what the client sees is what is counted (turns,
    /// responses by status, errors by code, events queued).
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// Room for `capacity` events.
    pub(crate) fn new(capacity: usize, metrics: Arc<Metrics>) -> Result<Self, SessionError> {
        Ok(Self {
            events: Queue::new(capacity, Overflow::Reject)
                .map_err(|e| SessionError::Config(e.to_string()))?,
            notify: OnceLock::new(),
            overflowed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            metrics,
        })
    }

    fn count(&self, event: &EngineEvent) {
        match event {
            EngineEvent::Error { kind, code, .. } => self.metrics.error(kind, code),
            EngineEvent::InputCommitted { .. } => {
                self.metrics.turns.inc();
            }
            EngineEvent::ResponseDone { status, .. } => {
                self.metrics
                    .responses
                    .get_or_create(&StatusLabel {
                        status: status.as_str(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// Queue an event for the transport and wake it. A full queue means the
    /// reader is too slow: it is flagged, so the transport closes the
    /// connection with a clear error instead of memory growing.
    pub(crate) fn emit(&self, event: EngineEvent) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        self.count(&event);
        match self.events.try_push(event) {
            Ok(_) => {
                self.metrics.event_queue_depth.inc();
                self.wake();
            }
            Err(e) if e.kind == QueueError::Full => {
                self.overflowed.store(true, Ordering::Release);
                self.wake();
            }
            Err(_) => {}
        }
    }

    /// An `error` event for a refused request.
    pub(crate) fn emit_error(&self, e: &SessionError) {
        let kind = if matches!(e, SessionError::Stage(_)) {
            "server_error"
        } else {
            "invalid_request_error"
        };
        self.emit(EngineEvent::Error {
            kind,
            code: e.code(),
            message: e.to_string(),
        });
    }

    fn wake(&self) {
        if let Some(f) = self.notify.get() {
            f();
        }
    }

    /// Call `f` after each event is queued; only the first call takes
    /// effect (a session has one transport).
    pub(crate) fn set_notify(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.notify.set(f);
    }

    /// The next event, waiting up to `timeout` (`None`: forever).
    pub(crate) fn next(&self, timeout: Option<Duration>) -> Option<EngineEvent> {
        let ev = self.events.pop(timeout).ok();
        if ev.is_some() {
            self.metrics.event_queue_depth.dec();
        }
        ev
    }

    /// The next event if one is queued.
    pub(crate) fn try_next(&self) -> Option<EngineEvent> {
        let ev = self.events.try_pop().ok();
        if ev.is_some() {
            self.metrics.event_queue_depth.dec();
        }
        ev
    }

    /// Events queued now.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether events were lost to a slow reader.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Stop taking events and wake the reader; returns false if already closed.
    pub(crate) fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.events.close();
        true
    }

    /// Whether the session was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // Events nobody read leave the engine-wide depth with the session.
        self.metrics
            .event_queue_depth
            .dec_by(i64::try_from(self.events.len()).unwrap_or(i64::MAX));
    }
}
