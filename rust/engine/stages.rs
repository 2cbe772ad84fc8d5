//! Stage worker pools: a job queue and a few threads per model stage.
//!
//! Models are loaded once per process and shared by every session; a job
//! carries everything it needs (its session, its generation), so one worker
//! serves many sessions and a stale job is skipped before it runs.

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::queue::{Overflow, Queue};

/// A unit of work for a stage worker.
pub trait Job: Send + 'static {
    /// Whether the job is stale and should be skipped unrun.
    fn is_stale(&self) -> bool;
    /// Run it on a worker thread.
    fn run(self: Box<Self>);
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
        for i in 0..workers.max(1) {
            let q = Arc::clone(&queue);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("s2s-{name}-{i}"))
                    .spawn(move || {
                        // `pop` blocks without spinning and fails once the
                        // queue is closed and drained: that ends the worker.
                        while let Ok(job) = q.pop(None) {
                            if !job.is_stale() {
                                job.run();
                            }
                        }
                    })?,
            );
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
