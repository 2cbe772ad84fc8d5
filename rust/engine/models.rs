//! The engine: the three model backends and a worker pool for each, shared
//! by every session of the process.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::backend::{LlmBackend, StageError, SttBackend, TtsBackend, TurnModel};
use super::metrics::Metrics;
use super::stages::{Job, PoolConfig, StagePool};
use crate::vad::SileroVad;

/// A model stage, for [`Engine::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Speech to text.
    Stt,
    /// The language model.
    Llm,
    /// Text to speech.
    Tts,
    /// The end-of-turn model.
    Turn,
}

impl Stage {
    /// Every model stage of the cascade, in pipeline order.
    pub const ALL: [Stage; 3] = [Stage::Stt, Stage::Llm, Stage::Tts];

    /// `stt`, `llm`, `tts` or `turn`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Stt => "stt",
            Stage::Llm => "llm",
            Stage::Tts => "tts",
            Stage::Turn => "turn",
        }
    }
}

/// Errors from building the engine or opening a session.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A worker thread could not be started. The system is out of threads
    /// or memory; lower the worker counts.
    #[error("could not start a {stage} worker: {source}")]
    Worker {
        /// The stage.
        stage: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Too many sessions are open. Close one or raise the limit.
    #[error("session limit reached ({0} sessions)")]
    SessionLimit(usize),
    /// A setting is out of range.
    #[error("invalid engine setting: {0}")]
    InvalidConfig(String),
}

impl EngineError {
    /// A stable code for the error (Python's `EngineError.code`).
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::Worker { .. } => "worker_start_failed",
            EngineError::SessionLimit(_) => "session_limit_reached",
            EngineError::InvalidConfig(_) => "invalid_config",
        }
    }
}

/// Sessions an engine serves at once unless told otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 64;

/// Engine-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// STT worker threads.
    pub stt_workers: usize,
    /// LLM worker threads.
    pub llm_workers: usize,
    /// TTS worker threads.
    pub tts_workers: usize,
    /// Jobs a stage queues before refusing more.
    pub queue_capacity: usize,
    /// Events a session buffers for a slow reader before flagging it.
    pub session_event_capacity: usize,
    /// Most sessions open at once.
    pub max_sessions: usize,
    /// Hold a response's LLM between tokens while its first clause is
    /// synthesised (see [`backend::Gate`]).
    pub first_audio_priority: bool,
    /// Words after which a response's first clause may go to TTS before its
    /// sentence ends, where a phrase may end (0: at punctuation only; see
    /// [`SegmenterConfig::first_max_words`](crate::engine::segmenter::SegmenterConfig)).
    pub first_clause_max_words: usize,
    /// A transcription with no output for this long fails (`None`: never).
    pub stt_timeout: Option<Duration>,
    /// An LLM call with no output (first token, or the next) for this long
    /// fails the response.
    pub llm_timeout: Option<Duration>,
    /// A TTS call with no audio (first chunk, or the next) for this long
    /// fails the response.
    pub tts_timeout: Option<Duration>,
}

/// How long a stage call may go without output unless told otherwise: far
/// beyond any model's first output on a small CPU, short enough that a hung
/// backend frees its worker while the user still waits.
pub const DEFAULT_STAGE_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            stt_workers: 1,
            llm_workers: 1,
            tts_workers: 1,
            queue_capacity: 1024,
            // Each slot is preallocated (~160 bytes): 1024 keeps a session
            // near 200 kB, and is minutes of audio deltas for a reader that
            // drains continuously, as every transport does.
            session_event_capacity: 1024,
            max_sessions: DEFAULT_MAX_SESSIONS,
            first_audio_priority: true,
            first_clause_max_words: crate::engine::segmenter::DEFAULT_FIRST_MAX_WORDS,
            stt_timeout: Some(DEFAULT_STAGE_TIMEOUT),
            llm_timeout: Some(DEFAULT_STAGE_TIMEOUT),
            tts_timeout: Some(DEFAULT_STAGE_TIMEOUT),
        }
    }
}

/// The models and their workers, shared by every session.
pub struct Engine {
    stt: Arc<dyn SttBackend>,
    llm: Arc<dyn LlmBackend>,
    tts: Arc<dyn TtsBackend>,
    stt_pool: StagePool,
    llm_pool: StagePool,
    tts_pool: StagePool,
    vad: Option<Arc<Mutex<SileroVad>>>,
    /// The learned end-of-turn model, and its own worker: its decisions run
    /// beside the speculative STT and LLM work of the same pause.
    turn: Option<(Arc<dyn TurnModel>, StagePool)>,
    config: EngineConfig,
    epoch: Instant,
    next_id: AtomicU64,
    sessions: AtomicUsize,
    /// Session objects not yet dropped (a closed session lives on until its
    /// last job ends); a count that stays above `sessions` is a leak.
    session_objects: AtomicUsize,
    metrics: Arc<Metrics>,
    /// Which session (its address) last ran an LLM job, and when it ended.
    llm_last_use: Mutex<Option<(usize, Instant)>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("sessions", &self.sessions.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Start the worker pools around these backends.
    pub fn new(
        stt: Arc<dyn SttBackend>,
        llm: Arc<dyn LlmBackend>,
        tts: Arc<dyn TtsBackend>,
        config: EngineConfig,
    ) -> Result<Arc<Self>, EngineError> {
        if config.session_event_capacity < 16 || config.queue_capacity == 0 {
            return Err(EngineError::InvalidConfig(
                "queue_capacity must be >= 1 and session_event_capacity >= 16".into(),
            ));
        }
        if [config.stt_timeout, config.llm_timeout, config.tts_timeout]
            .iter()
            .flatten()
            .any(Duration::is_zero)
        {
            return Err(EngineError::InvalidConfig(
                "a stage timeout must be positive (None: no timeout)".into(),
            ));
        }
        let metrics = Arc::new(Metrics::default());
        let pool = |stage: &'static str, workers: usize, timeout: Option<Duration>| {
            let pool_config = PoolConfig {
                workers,
                capacity: config.queue_capacity,
                timeout,
            };
            StagePool::new(stage, &pool_config, Arc::clone(&metrics))
                .map_err(|source| EngineError::Worker { stage, source })
        };
        Ok(Arc::new(Self {
            stt_pool: pool("stt", config.stt_workers, config.stt_timeout)?,
            llm_pool: pool("llm", config.llm_workers, config.llm_timeout)?,
            tts_pool: pool("tts", config.tts_workers, config.tts_timeout)?,
            stt,
            llm,
            tts,
            vad: None,
            turn: None,
            config,
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            sessions: AtomicUsize::new(0),
            session_objects: AtomicUsize::new(0),
            metrics,
            llm_last_use: Mutex::new(None),
        }))
    }

    /// The same engine with a VAD model: sessions with turn detection run it
    /// on their input. Call before opening sessions.
    pub fn with_vad(self: Arc<Self>, vad: Arc<Mutex<SileroVad>>) -> Arc<Self> {
        match Arc::try_unwrap(self) {
            Ok(mut engine) => {
                engine.vad = Some(vad);
                Arc::new(engine)
            }
            Err(shared) => shared,
        }
    }

    /// The same engine with a learned end-of-turn model (one worker runs its
    /// decisions). Call before opening sessions.
    pub fn with_turn_model(
        self: Arc<Self>,
        model: Arc<dyn TurnModel>,
    ) -> Result<Arc<Self>, EngineError> {
        // A verdict is only useful within the turn's silence: a decision
        // that hangs is abandoned like a hung STT call (the silence rule
        // ends the turn meanwhile).
        let pool_config = PoolConfig {
            workers: 1,
            capacity: self.config.queue_capacity,
            timeout: self.config.stt_timeout,
        };
        let pool =
            StagePool::new("turn", &pool_config, Arc::clone(&self.metrics)).map_err(|source| {
                EngineError::Worker {
                    stage: "turn",
                    source,
                }
            })?;
        Ok(match Arc::try_unwrap(self) {
            Ok(mut engine) => {
                engine.turn = Some((model, pool));
                Arc::new(engine)
            }
            Err(shared) => shared,
        })
    }

    /// The end-of-turn model, if the engine has one.
    pub(crate) fn turn_model(&self) -> Option<&Arc<dyn TurnModel>> {
        self.turn.as_ref().map(|(m, _)| m)
    }

    /// Whether sessions can end turns with a learned model.
    pub fn has_turn_model(&self) -> bool {
        self.turn.is_some()
    }

    /// Whether sessions can detect turns on their own.
    pub fn has_vad(&self) -> bool {
        self.vad.is_some()
    }

    /// Count a new session in, unless `max_sessions` are open already
    /// (`Engine::create_session`, in the session module, opens it).
    pub(crate) fn admit_session(&self) -> bool {
        let max = self.config.max_sessions;
        let admitted = self
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.metrics.sessions_opened.inc();
        } else {
            self.metrics.sessions_refused.inc();
        }
        admitted
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Jobs waiting in a stage's queue.
    pub fn queue_depth(&self, stage: Stage) -> usize {
        self.pool(stage).map_or(0, StagePool::pending)
    }

    /// A stage's worker threads: (serving its queue, alive including those
    /// abandoned to a hung call).
    pub fn workers(&self, stage: Stage) -> (usize, usize) {
        self.pool(stage)
            .map_or((0, 0), |p| (p.serving(), p.threads()))
    }

    /// A stage's pool (`None`: the engine has no end-of-turn model).
    fn pool(&self, stage: Stage) -> Option<&StagePool> {
        match stage {
            Stage::Stt => Some(&self.stt_pool),
            Stage::Llm => Some(&self.llm_pool),
            Stage::Tts => Some(&self.tts_pool),
            Stage::Turn => self.turn.as_ref().map(|(_, pool)| pool),
        }
    }

    /// Session objects not yet dropped, closed ones included (see
    /// [`session_count`](Self::session_count) for the open ones).
    pub fn session_objects(&self) -> usize {
        self.session_objects.load(Ordering::Acquire)
    }

    pub(crate) fn session_object_created(&self) {
        self.session_objects.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn session_object_dropped(&self) {
        self.session_objects.fetch_sub(1, Ordering::AcqRel);
    }

    /// Queue a job on a stage's workers; fails when its queue is full or
    /// shut down. The sessions' only way into the worker pools.
    pub(crate) fn submit(&self, stage: Stage, job: Box<dyn Job>) -> Result<(), StageError> {
        self.pool(stage)
            .ok_or(StageError::ShutDown("turn"))?
            .submit(job)
    }

    /// The speech-to-text model.
    pub(crate) fn stt(&self) -> &Arc<dyn SttBackend> {
        &self.stt
    }

    /// The language model.
    pub(crate) fn llm(&self) -> &Arc<dyn LlmBackend> {
        &self.llm
    }

    /// The text-to-speech model.
    pub(crate) fn tts(&self) -> &Arc<dyn TtsBackend> {
        &self.tts
    }

    /// The VAD model, if the engine has one.
    pub(crate) fn vad(&self) -> Option<&Arc<Mutex<SileroVad>>> {
        self.vad.as_ref()
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.sessions.load(Ordering::Acquire)
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Note that session `key` is using the LLM now.
    pub(crate) fn note_llm_use(&self, key: usize) {
        *self
            .llm_last_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((key, Instant::now()));
    }

    /// A closed session's use of the LLM no longer keeps others from
    /// reading ahead: nothing of it is left to evict.
    pub(crate) fn forget_llm_use(&self, key: usize) {
        let mut last = self
            .llm_last_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|(who, _)| who == key) {
            *last = None;
        }
    }

    /// Whether a session other than `key` used the LLM within `window`: then
    /// a prefill for `key` would likely be evicted before its answer.
    pub(crate) fn llm_busy_with_another(&self, key: usize, window: std::time::Duration) -> bool {
        self.llm_last_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|(who, when)| who != key && when.elapsed() < window)
    }

    pub(crate) fn session_closed(&self) {
        let _ = self
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// A new unique id with this prefix (`item_...`, `resp_...`).
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Ids must be unique per process and not guessable across restarts.
        let salt = self.epoch.elapsed().subsec_nanos() & 0xFFFF;
        format!("{prefix}_{n:08X}{salt:04X}")
    }

    /// Milliseconds since the engine started (the clock of turn timings).
    pub fn now_ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }
}
