//! Stage worker pools: a job queue and a few threads per model stage.
//!
//! Models are loaded once per process and shared by every session; a job
//! carries everything it needs (its session, its generation), so one worker
//! serves many sessions and a stale job is skipped before it runs.
//!
//! A job that panics fails its own work and the worker goes on. A job that
//! makes no progress (no output) for the stage's timeout is failed by the
//! pool's watchdog, its cancel token is set, and its worker is abandoned to
//! the hung call and replaced, so the stage keeps its capacity (a thread
//! blocked in a model library or in Python cannot be stopped from outside;
//! it ends on its own when the call returns). Abandoned threads are capped:
//! a backend that hangs on every call cannot make the pool spawn without end.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backend::StageError;
use super::metrics::{Metrics, StageLabel};
use super::progress::{CURRENT, JobControl, ms_since};
use crate::queue::{Overflow, Queue};

/// Reports a job's failure (a panic or a timeout) to whoever waits for its result.
pub type FailureReport = Box<dyn FnOnce(StageError) + Send>;

/// A unit of work for a stage worker.
pub trait Job: Send + 'static {
    /// Whether the job is stale and should be skipped unrun.
    fn is_stale(&self) -> bool;
    /// Run it on a worker thread. Before it reports its result it calls
    /// [`claim_result`](super::progress::claim_result): a job the watchdog
    /// already failed reports nothing.
    fn run(self: Box<Self>);
    /// What to do if [`run`](Self::run) panics or times out: taken before it
    /// runs, because `run` consumes the job. The default only logs.
    fn on_failure(&self) -> Option<FailureReport> {
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

/// One worker thread's state, as the watchdog sees it.
#[derive(Default)]
struct Slot {
    /// The running job's control and failure report.
    running: Mutex<Option<(Arc<JobControl>, Option<FailureReport>)>>,
    /// Abandoned to a hung call: the thread ends when the call returns.
    retired: AtomicBool,
}

/// What the workers and the watchdog share.
struct PoolShared {
    name: &'static str,
    queue: Queue<Box<dyn Job>>,
    /// Workers serving the queue (not retired).
    target: usize,
    timeout: Option<Duration>,
    /// Most threads alive at once, retired ones included.
    max_threads: usize,
    alive: AtomicUsize,
    /// Workers serving the queue (alive and not retired).
    serving: AtomicUsize,
    epoch: Instant,
    metrics: Arc<Metrics>,
    label: StageLabel,
    slots: Mutex<Vec<Arc<Slot>>>,
    handles: Mutex<Vec<(Arc<Slot>, JoinHandle<()>)>>,
    next_index: AtomicUsize,
    stopping: Mutex<bool>,
    stopped: Condvar,
}

impl PoolShared {
    /// Start one more worker thread.
    fn spawn_worker(self: &Arc<Self>) -> std::io::Result<()> {
        let slot = Arc::new(Slot::default());
        let i = self.next_index.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::clone(self);
        let mine = Arc::clone(&slot);
        self.alive.fetch_add(1, Ordering::AcqRel);
        self.serving.fetch_add(1, Ordering::AcqRel);
        let spawned = std::thread::Builder::new()
            .name(format!("s2s-{}-{i}", self.name))
            .spawn(move || {
                worker(&shared, &mine);
                shared.alive.fetch_sub(1, Ordering::AcqRel);
                lock(&shared.slots).retain(|s| !Arc::ptr_eq(s, &mine));
            });
        match spawned {
            Ok(h) => {
                lock(&self.slots).push(Arc::clone(&slot));
                lock(&self.handles).push((slot, h));
                Ok(())
            }
            Err(e) => {
                self.alive.fetch_sub(1, Ordering::AcqRel);
                self.serving.fetch_sub(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    /// Workers that serve the queue now.
    fn serving(&self) -> usize {
        self.serving.load(Ordering::Acquire)
    }

    /// Fail and abandon the jobs that made no progress within the timeout,
    /// then bring the serving workers back to the target.
    fn watch(self: &Arc<Self>) {
        if let Some(timeout) = self.timeout {
            let limit = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            let now = ms_since(self.epoch);
            let slots: Vec<Arc<Slot>> = lock(&self.slots).clone();
            for slot in slots {
                if slot.retired.load(Ordering::Acquire) {
                    continue;
                }
                let report = {
                    let mut running = lock(&slot.running);
                    let Some((control, report)) = running.as_mut() else {
                        continue;
                    };
                    let idle = now.saturating_sub(control.last_beat_ms.load(Ordering::Acquire));
                    if idle < limit || control.claimed.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    control.expired.store(true, Ordering::Release);
                    slot.retired.store(true, Ordering::Release);
                    report.take()
                };
                // The replacement first, so that the stage never looks empty.
                if self.alive.load(Ordering::Acquire) < self.max_threads
                    && let Err(e) = self.spawn_worker()
                {
                    tracing::error!(stage = self.name, "could not replace a worker: {e}");
                }
                self.serving.fetch_sub(1, Ordering::AcqRel);
                self.metrics.stage_timeouts.get_or_create(&self.label).inc();
                self.metrics
                    .workers_abandoned
                    .get_or_create(&self.label)
                    .inc();
                tracing::error!(
                    stage = self.name,
                    "a {} call made no progress for {:.1} s: failed, its worker abandoned and replaced",
                    self.name,
                    timeout.as_secs_f64()
                );
                if let Some(report) = report {
                    let e = StageError::TimedOut {
                        stage: self.name,
                        seconds: timeout.as_secs_f64(),
                    };
                    if let Err(p) = catch_unwind(AssertUnwindSafe(move || report(e))) {
                        tracing::error!(
                            stage = self.name,
                            "reporting a timeout panicked: {}",
                            panic_message(p.as_ref())
                        );
                    }
                }
            }
        }
        lock(&self.handles).retain(|(_, h)| !h.is_finished());
        while self.serving() < self.target && self.alive.load(Ordering::Acquire) < self.max_threads
        {
            if let Err(e) = self.spawn_worker() {
                tracing::error!(stage = self.name, "could not replace a worker: {e}");
                break;
            }
        }
        if self.serving() == 0 {
            // Nothing would ever run what waits: fail it now, with the reason.
            while let Ok(job) = self.queue.try_pop() {
                self.fail_unrun(job.as_ref(), StageError::NoWorkers(self.name));
            }
        }
    }

    fn fail_unrun(&self, job: &dyn Job, e: StageError) {
        let report = catch_unwind(AssertUnwindSafe(|| job.on_failure())).unwrap_or(None);
        if let Some(report) = report
            && let Err(p) = catch_unwind(AssertUnwindSafe(move || report(e)))
        {
            tracing::error!(
                stage = self.name,
                "reporting a refused job panicked: {}",
                panic_message(p.as_ref())
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A worker thread: run jobs until the queue closes or the thread is retired.
fn worker(shared: &Arc<PoolShared>, slot: &Arc<Slot>) {
    // `pop` blocks without spinning and fails once the queue is closed and
    // drained: that ends the worker.
    while !slot.retired.load(Ordering::Acquire) {
        let Ok(job) = shared.queue.pop(None) else {
            return;
        };
        let control = Arc::new(JobControl {
            last_beat_ms: AtomicU64::new(ms_since(shared.epoch)),
            claimed: AtomicBool::new(false),
            expired: AtomicBool::new(false),
        });
        let report = catch_unwind(AssertUnwindSafe(|| job.on_failure())).unwrap_or(None);
        *lock(&slot.running) = Some((Arc::clone(&control), report));
        CURRENT.with(|c| *c.borrow_mut() = Some((Arc::clone(&control), shared.epoch)));
        let busy = shared
            .metrics
            .workers_busy
            .get_or_create(&shared.label)
            .clone();
        busy.inc();
        let started = Instant::now();
        let panicked = run_contained(shared.name, job);
        busy.dec();
        shared
            .metrics
            .worker_busy_seconds
            .get_or_create(&shared.label)
            .inc_by(started.elapsed().as_secs_f64());
        shared.metrics.jobs.get_or_create(&shared.label).inc();
        CURRENT.with(|c| *c.borrow_mut() = None);
        let report = lock(&slot.running).take().and_then(|(_, r)| r);
        if let Some(message) = panicked
            && !control.claimed.swap(true, Ordering::AcqRel)
            && let Some(report) = report
        {
            let e = StageError::Panicked {
                stage: shared.name,
                message,
            };
            if let Err(p) = catch_unwind(AssertUnwindSafe(move || report(e))) {
                tracing::error!(
                    stage = shared.name,
                    "reporting a {} panic panicked: {}",
                    shared.name,
                    panic_message(p.as_ref())
                );
            }
        }
    }
}

/// Run one job so that a panic in it (a bug in a backend, the Python glue or
/// the session code it calls) fails that job's work instead of the worker:
/// returns the panic's message.
fn run_contained(stage: &'static str, job: Box<dyn Job>) -> Option<String> {
    let ran = catch_unwind(AssertUnwindSafe(move || {
        if !job.is_stale() {
            job.run();
        }
    }));
    let Err(payload) = ran else { return None };
    let message = panic_message(payload.as_ref());
    tracing::error!(
        stage,
        "a {stage} job panicked (a bug; the worker goes on): {message}"
    );
    // The payload may itself panic when dropped; keep that off the worker too.
    let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
    Some(message)
}

/// Settings of one stage's pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker threads (at least one).
    pub workers: usize,
    /// Jobs queued before more are refused.
    pub capacity: usize,
    /// A job with no output for this long fails and its worker is replaced.
    pub timeout: Option<Duration>,
}

/// A job queue with its worker threads and their watchdog.
pub struct StagePool {
    shared: Arc<PoolShared>,
    watchdog: Option<JoinHandle<()>>,
}

impl StagePool {
    /// Start the workers (at least one) serving a queue of `capacity` jobs.
    pub fn new(
        name: &'static str,
        config: &PoolConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let queue = Queue::<Box<dyn Job>>::new(config.capacity.max(1), Overflow::Reject)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let target = config.workers.max(1);
        let shared = Arc::new(PoolShared {
            name,
            queue,
            target,
            timeout: config.timeout,
            // Room for a few hung calls before the stage loses capacity.
            max_threads: target * 2 + 4,
            alive: AtomicUsize::new(0),
            serving: AtomicUsize::new(0),
            epoch: Instant::now(),
            metrics,
            label: StageLabel { stage: name },
            slots: Mutex::new(Vec::new()),
            handles: Mutex::new(Vec::new()),
            next_index: AtomicUsize::new(0),
            stopping: Mutex::new(false),
            stopped: Condvar::new(),
        });
        let mut pool = Self {
            shared: Arc::clone(&shared),
            watchdog: None,
        };
        for _ in 0..target {
            shared.spawn_worker()?;
        }
        let tick = config.timeout.map_or(Duration::from_millis(500), |t| {
            (t / 4).clamp(Duration::from_millis(5), Duration::from_millis(500))
        });
        let watched = Arc::clone(&shared);
        pool.watchdog = Some(
            std::thread::Builder::new()
                .name(format!("s2s-{name}-watchdog"))
                .spawn(move || {
                    let mut stopping = lock(&watched.stopping);
                    while !*stopping {
                        stopping = watched
                            .stopped
                            .wait_timeout(stopping, tick)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        if *stopping {
                            break;
                        }
                        drop(stopping);
                        watched.watch();
                        stopping = lock(&watched.stopping);
                    }
                })?,
        );
        Ok(pool)
    }

    /// Queue a job; fails when the queue is full or shut down.
    pub fn submit(&self, job: Box<dyn Job>) -> Result<(), StageError> {
        if self.shared.serving() == 0 {
            return Err(StageError::NoWorkers(self.shared.name));
        }
        match self.shared.queue.try_push(job) {
            Ok(_) => Ok(()),
            Err(e) if e.kind == crate::queue::QueueError::Full => {
                self.shared
                    .metrics
                    .jobs_refused
                    .get_or_create(&self.shared.label)
                    .inc();
                Err(StageError::Busy(self.shared.name))
            }
            Err(_) => Err(StageError::ShutDown(self.shared.name)),
        }
    }

    /// Jobs waiting to run.
    pub fn pending(&self) -> usize {
        self.shared.queue.len()
    }

    /// Worker threads alive, abandoned ones included.
    pub fn threads(&self) -> usize {
        self.shared.alive.load(Ordering::Acquire)
    }

    /// Workers serving the queue (not abandoned to a hung call).
    pub fn serving(&self) -> usize {
        self.shared.serving()
    }

    /// Stop taking jobs, let the workers finish what is queued, and join
    /// them. Workers abandoned to a hung call are not waited for.
    ///
    /// The last owner of the engine may be a job running on one of these
    /// workers; that worker is left to finish on its own instead of joining
    /// itself.
    pub fn shutdown(&mut self) {
        self.shared.queue.close();
        *lock(&self.shared.stopping) = true;
        self.shared.stopped.notify_all();
        let me = std::thread::current().id();
        if let Some(h) = self.watchdog.take()
            && h.thread().id() != me
        {
            let _ = h.join();
        }
        let handles = std::mem::take(&mut *lock(&self.shared.handles));
        for (slot, h) in handles {
            if h.thread().id() != me && !slot.retired.load(Ordering::Acquire) {
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
