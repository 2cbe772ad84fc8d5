//! The engine: the three model backends and a worker pool for each, shared
//! by every session of the process.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use thiserror::Error;

use super::backend::{LlmBackend, StageError, SttBackend, TtsBackend};
use super::stages::{Job, StagePool};
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
}

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
    config: EngineConfig,
    epoch: Instant,
    next_id: AtomicU64,
    sessions: AtomicUsize,
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
        let pool = |stage: &'static str, n: usize| {
            StagePool::new(stage, n, config.queue_capacity)
                .map_err(|source| EngineError::Worker { stage, source })
        };
        Ok(Arc::new(Self {
            stt_pool: pool("stt", config.stt_workers)?,
            llm_pool: pool("llm", config.llm_workers)?,
            tts_pool: pool("tts", config.tts_workers)?,
            stt,
            llm,
            tts,
            vad: None,
            config,
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            sessions: AtomicUsize::new(0),
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

    /// Whether sessions can detect turns on their own.
    pub fn has_vad(&self) -> bool {
        self.vad.is_some()
    }

    /// Count a new session in, unless `max_sessions` are open already
    /// (`Engine::create_session`, in the session module, opens it).
    pub(crate) fn admit_session(&self) -> bool {
        let max = self.config.max_sessions;
        self.sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Queue a job on a stage's workers; fails when its queue is full or
    /// shut down. The sessions' only way into the worker pools.
    pub(crate) fn submit(&self, stage: Stage, job: Box<dyn Job>) -> Result<(), StageError> {
        match stage {
            Stage::Stt => self.stt_pool.submit(job),
            Stage::Llm => self.llm_pool.submit(job),
            Stage::Tts => self.tts_pool.submit(job),
        }
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
