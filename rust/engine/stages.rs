//! Stage worker pools: a job queue and a few threads per model stage.
//!
//! Models are loaded once per process and shared by every session; a job
//! carries everything it needs (its session, its generation), so one worker
//! serves many sessions and a stale job is skipped before it runs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crate::queue::{Overflow, Queue};

/// Reports a job's panic to whoever waits for its result (called with the message).
pub type PanicReport = Box<dyn FnOnce(String) + Send>;

/// A unit of work for a stage worker.
pub trait Job: Send + 'static {
    /// Whether the job is stale and should be skipped unrun.
    fn is_stale(&self) -> bool;
    /// Run it on a worker thread.
    fn run(self: Box<Self>);
    /// What to do if [`run`](Self::run) panics: taken before it runs, because
    /// `run` consumes the job. The default only logs.
    fn on_panic(&self) -> Option<PanicReport> {
        None
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Run one job so that a panic in it (a bug in a backend, the Python glue or
/// the session code it calls) fails that job's work instead of the worker:
/// the worker goes on serving the stage.
fn run_contained(stage: &'static str, job: Box<dyn Job>) {
    let report = catch_unwind(AssertUnwindSafe(|| job.on_panic())).unwrap_or(None);
    let ran = catch_unwind(AssertUnwindSafe(move || {
        if !job.is_stale() {
            job.run();
        }
    }));
    let Err(payload) = ran else { return };
    let message = panic_message(payload.as_ref());
    tracing::error!(
        stage,
        "a {stage} job panicked (a bug; the worker goes on): {message}"
    );
    if let Some(report) = report
        && let Err(p) = catch_unwind(AssertUnwindSafe(move || report(message)))
    {
        tracing::error!(
            stage,
            "reporting a {stage} panic panicked: {}",
            panic_message(p.as_ref())
        );
    }
    // The payload may itself panic when dropped; keep that off the worker too.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
}

/// Closes the stage's queue when its last worker ends, so that `submit`
/// refuses jobs no worker would ever run instead of queueing them.
struct WorkerAlive {
    queue: Arc<Queue<Box<dyn Job>>>,
    alive: Arc<AtomicUsize>,
}

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        if self.alive.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.queue.close();
        }
    }
}

/// A job queue with its worker threads.
pub struct StagePool {
    name: &'static str,
    queue: Arc<Queue<Box<dyn Job>>>,
    workers: Vec<JoinHandle<()>>,
}

impl StagePool {
    /// Start `workers` threads (at least one) serving a queue of `capacity` jobs.
    pub fn new(name: &'static str, workers: usize, capacity: usize) -> std::io::Result<Self> {
        let queue = Arc::new(
            Queue::<Box<dyn Job>>::new(capacity.max(1), Overflow::Reject)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        let mut handles = Vec::new();
        let alive = Arc::new(AtomicUsize::new(0));
        for i in 0..workers.max(1) {
            let q = Arc::clone(&queue);
            alive.fetch_add(1, Ordering::AcqRel);
            let guard = WorkerAlive {
                queue: Arc::clone(&queue),
                alive: Arc::clone(&alive),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("s2s-{name}-{i}"))
                .spawn(move || {
                    let _alive = guard;
                    // `pop` blocks without spinning and fails once the
                    // queue is closed and drained: that ends the worker.
                    while let Ok(job) = q.pop(None) {
                        run_contained(name, job);
                    }
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    queue.close();
                    return Err(e);
                }
            }
        }
        Ok(Self {
            name,
            queue,
            workers: handles,
        })
    }

    /// Queue a job; fails when the queue is full or shut down.
    pub fn submit(&self, job: Box<dyn Job>) -> Result<(), super::backend::StageError> {
        use super::backend::StageError;
        match self.queue.try_push(job) {
            Ok(_) => Ok(()),
            Err(e) if e.kind == crate::queue::QueueError::Full => Err(StageError::Busy(self.name)),
            Err(_) => Err(StageError::ShutDown(self.name)),
        }
    }

    /// Jobs waiting to run.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Stop taking jobs, let the workers finish what is queued, and join them.
    ///
    /// The last owner of the engine may be a job running on one of these
    /// workers; that worker is left to finish on its own instead of joining
    /// itself.
    pub fn shutdown(&mut self) {
        self.queue.close();
        let me = std::thread::current().id();
        for h in self.workers.drain(..) {
            if h.thread().id() != me {
                // A worker that panicked has already reported through its job.
                let _ = h.join();
            }
        }
    }
}

impl Drop for StagePool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
