//! What the engine asks of a model stage: the backend traits and their outputs.
//!
//! A backend is stateless between calls (one instance serves every session).
//! Python handlers implement these traits through the bindings in `py/`; tests
//! and benchmarks use the scripted backends in [`scripted`](super::scripted).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

/// A failed model call.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum StageError {
    /// The backend raised or returned an error. The message says what; the
    /// session reports it as a failed transcription or response and goes on.
    #[error("{stage} backend failed: {message}")]
    Backend {
        /// `stt`, `llm` or `tts`.
        stage: &'static str,
        /// What went wrong, from the backend.
        message: String,
    },
    /// The stage's code panicked (a bug in a backend binding or the engine).
    /// The response fails and the worker goes on; please report it.
    #[error("the {stage} stage failed unexpectedly: {message}")]
    Panicked {
        /// `stt`, `llm` or `tts`.
        stage: &'static str,
        /// The panic message.
        message: String,
    },
    /// The call made no progress (no output) for the stage's timeout: the
    /// response fails, the call is abandoned (its cancel token is set) and its
    /// worker replaced. Raise the stage's timeout if the model is that slow.
    #[error("the {stage} stage timed out: no output for {seconds} s (the call was abandoned)")]
    TimedOut {
        /// `stt`, `llm` or `tts`.
        stage: &'static str,
        /// The timeout.
        seconds: f64,
    },
    /// Every worker of the stage is stuck in a call that timed out, and the
    /// pool may start no more threads: the backend hangs on every call. Fix
    /// or restart the backend; the workers come back as the calls return.
    #[error(
        "the {0} stage has no free worker: its calls hang (every worker is stuck in a call that timed out)"
    )]
    NoWorkers(&'static str),
    /// The engine shut down before the job ran.
    #[error("the {0} stage is shut down")]
    ShutDown(&'static str),
    /// The stage's job queue is full. The server is overloaded: try again
    /// later, or start it with more workers for that stage.
    #[error("the {0} stage is overloaded (its job queue is full)")]
    Busy(&'static str),
}

/// Longest a [`Gate`] holds a job back.
pub const MAX_HOLD: Duration = Duration::from_secs(2);

/// Holds a running job back between two of its outputs.
///
/// While a response's first clause is synthesised, the gate of its LLM job
/// is closed: a local LLM runs far ahead of speech anyway, and on a small
/// CPU the two models would otherwise share the cores while the user waits
/// for the first sound.
#[derive(Debug, Default)]
pub struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    /// Hold jobs back from their next output on.
    pub fn close(&self) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    /// Let them go on.
    pub fn open(&self) {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.opened.notify_all();
    }

    /// Whether it is closed.
    pub fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cheap handle a running job polls to learn it is stale.
///
/// It compares the session's generation with the one the job started in:
/// barge-in or a cancel bumps the generation and every older job stops.
#[derive(Debug, Clone)]
pub struct Cancel {
    current: Arc<AtomicU64>,
    generation: u64,
    gate: Option<Arc<Gate>>,
}

impl Cancel {
    /// A handle that is cancelled once `current` moves past `generation`.
    pub fn new(current: Arc<AtomicU64>, generation: u64) -> Self {
        Self {
            current,
            generation,
            gate: None,
        }
    }

    /// The same handle, also held back by `gate`.
    #[must_use]
    pub fn with_gate(mut self, gate: Arc<Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Whether a gate holds the job back now (then call [`hold`](Self::hold)).
    pub fn is_held(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.is_closed())
    }

    /// Wait while the gate is closed: until it opens, the job is cancelled,
    /// or [`MAX_HOLD`] has passed. Returns at once without a closed gate.
    pub fn hold(&self) {
        let Some(gate) = &self.gate else { return };
        let deadline = Instant::now() + MAX_HOLD;
        let mut closed = gate.closed.lock().unwrap_or_else(PoisonError::into_inner);
        while *closed && !self.is_cancelled() {
            // Held back is not hung: the stage's timeout does not run meanwhile.
            super::progress::beat();
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            // Cancellation does not signal the gate: look again every 10 ms.
            let wait = (deadline - now).min(Duration::from_millis(10));
            closed = gate
                .opened
                .wait_timeout(closed, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A handle that is never cancelled.
    pub fn never() -> Self {
        Self::new(Arc::new(AtomicU64::new(0)), 0)
    }

    /// Whether the job should stop: its generation is over, or the stage's
    /// watchdog gave up on it (it timed out).
    pub fn is_cancelled(&self) -> bool {
        self.current.load(Ordering::Acquire) != self.generation
            || super::progress::current_job_expired()
    }

    /// The generation the job belongs to.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Options of one transcription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SttOptions {
    /// Language code, or `None` to let the model decide.
    pub language: Option<String>,
    /// Prompt text that biases the transcription.
    pub prompt: Option<String>,
}

/// What STT yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SttOutput {
    /// A partial transcript (append-only deltas are derived by the engine).
    Partial(String),
    /// The final transcript.
    Final {
        /// The text.
        text: String,
        /// The detected or given language.
        language: Option<String>,
    },
}

/// A function tool the LLM may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// Tool name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON schema of its parameters, as a JSON string.
    pub parameters: String,
}

/// How the LLM may use tools.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// No tool calls.
    None,
    /// Some tool call is required.
    Required,
    /// This tool must be called.
    Function(String),
}

/// One LLM call.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// The chat so far, system prompt first.
    pub messages: Vec<super::conversation::ChatMessage>,
    /// Tools it may call.
    pub tools: Vec<Tool>,
    /// How it may use them.
    pub tool_choice: ToolChoice,
    /// Sampling temperature, or the backend default.
    pub temperature: Option<f64>,
    /// Token budget, or the backend default.
    pub max_tokens: Option<u32>,
}

/// What the LLM yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmOutput {
    /// A piece of the answer text.
    Text(String),
    /// A complete tool call.
    ToolCall {
        /// Correlates the call with its output.
        call_id: String,
        /// Tool name.
        name: String,
        /// Arguments as a JSON string.
        arguments: String,
    },
    /// Token counts of the call.
    Usage {
        /// Prompt tokens.
        input_tokens: u32,
        /// Generated tokens.
        output_tokens: u32,
    },
}

/// One TTS call: a clause to speak.
#[derive(Debug, Clone, PartialEq)]
pub struct TtsRequest {
    /// The clause.
    pub text: String,
    /// Voice name, or the backend default.
    pub voice: Option<String>,
    /// Speaking rate, 1.0 is normal.
    pub speed: f64,
}

/// A chunk of synthesised speech at the model's native rate.
#[derive(Debug, Clone, PartialEq)]
pub struct TtsChunk {
    /// Mono samples in [-1, 1].
    pub samples: Vec<f32>,
    /// Their rate.
    pub sample_rate: u32,
    /// Word timings (word, start ms, end ms from the chunk start) if known.
    pub words: Option<Vec<(String, f64, f64)>>,
}

/// A speech-to-text model.
pub trait SttBackend: Send + Sync {
    /// Transcribe 16 kHz mono audio, calling `emit` for each output and
    /// stopping early when `cancel` says so.
    fn transcribe(
        &self,
        audio: &[f32],
        options: &SttOptions,
        cancel: &Cancel,
        emit: &mut dyn FnMut(SttOutput),
    ) -> Result<(), StageError>;
}

/// A language model.
pub trait LlmBackend: Send + Sync {
    /// Stream an answer to `request` through `emit`.
    fn generate(
        &self,
        request: &LlmRequest,
        cancel: &Cancel,
        emit: &mut dyn FnMut(LlmOutput),
    ) -> Result<(), StageError>;

    /// Read `request.messages` (the history the next response's prompt
    /// begins with) into the model's cache while the user is still speaking,
    /// so that the response only has the new user message left to read.
    ///
    /// A hint: a backend may do nothing (the default), and it stops early
    /// when `cancel` says so or when a generation is waiting.
    fn prefill(&self, request: &LlmRequest, cancel: &Cancel) -> Result<(), StageError> {
        let _ = (request, cancel);
        Ok(())
    }
}

/// A text-to-speech model.
pub trait TtsBackend: Send + Sync {
    /// Speak `request.text`, streaming chunks through `emit`.
    fn synthesize(
        &self,
        request: &TtsRequest,
        cancel: &Cancel,
        emit: &mut dyn FnMut(TtsChunk),
    ) -> Result<(), StageError>;
}

/// A learned end-of-turn model: how likely the speaker is done, from the
/// turn's audio so far (16 kHz mono). One instance serves every session.
pub trait TurnModel: Send + Sync {
    /// The probability, in [0, 1], that the turn is over.
    fn predict(&self, audio: &[f32]) -> Result<f32, StageError>;
}

impl TurnModel for Mutex<crate::vad::SmartTurn> {
    fn predict(&self, audio: &[f32]) -> Result<f32, StageError> {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .predict(audio)
            .map(|v| v.probability)
            .map_err(|e| StageError::Backend {
                stage: "turn",
                message: e.to_string(),
            })
    }
}
