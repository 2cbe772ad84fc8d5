//! The data of a session: the shared part its transport and the workers
//! reach, and the state behind its lock. Behaviour lives in the sibling
//! files (`turns`, `transcription`, `items`, `response`, `speech_out`,
//! `jobs`); this file holds only the types they share.
//!
//! Lock order: `state` before `input`. Code that holds the `input` lock
//! never takes `state` (`feed_audio` collects the VAD's turn events under
//! `input`, releases it, then handles them under `state`).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::config::{ResponseOptions, SessionConfig};
use super::outbox::Outbox;
use super::speech_out::SpeechOut;
use crate::engine::backend::Gate;
use crate::engine::conversation::{Conversation, Item};
use crate::engine::events::{EngineEvent, ResponseStatus, TurnTimings, Usage};
use crate::engine::input::AudioInput;
use crate::engine::models::Engine;
use crate::engine::segmenter::Segmenter;

/// The shared part of a session, reached by its transport and the workers.
pub(crate) struct Shared {
    pub(super) engine: Arc<Engine>,
    pub(super) id: String,
    pub(super) state: Mutex<State>,
    pub(super) input: Mutex<AudioInput>,
    /// What the transport hears.
    pub(super) out: Outbox,
    /// Bumped to stop a response's jobs (barge-in, cancel, a new response).
    pub(super) resp_gen: Arc<AtomicU64>,
    /// Bumped to drop speculative work (resumed speech, a new turn).
    pub(super) spec_gen: Arc<AtomicU64>,
    /// Wall clock minus input position at the last append, ms (f64 bits):
    /// where the input's audio time falls in wall time for a client that
    /// streams in real time (the voice-to-voice metric).
    pub(super) input_clock_offset_ms: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.engine.session_object_dropped();
    }
}

/// Everything behind the session's lock.
pub(super) struct State {
    pub(super) config: SessionConfig,
    pub(super) conversation: Conversation,
    pub(super) speech_item: Option<String>,
    pub(super) spec: Option<Speculation>,
    pub(super) response: Option<ActiveResponse>,
    pub(super) timings: TurnTimings,
    /// Committed user audio still being transcribed.
    pub(super) pending_stt: usize,
    /// A `response.create` waiting for those transcripts (id, options).
    pub(super) deferred: Option<(String, ResponseOptions)>,
    /// Live transcription of the speech in progress.
    pub(super) live: LiveTranscript,
    /// A turn the VAD ended but whose words sound unfinished (semantic mode).
    pub(super) held_turn: Option<HeldTurn>,
    /// Audio of a held turn the user went on with (16 kHz): the start of
    /// the current turn.
    pub(super) carry: Vec<f32>,
    /// A speculative response that finished before its turn committed.
    pub(super) finished_spec: Option<FinishedSpeculation>,
}

/// Where the speculative work of the current turn stands.
#[derive(Debug)]
pub(super) struct Speculation {
    /// The `spec_gen` it runs under.
    pub(super) generation: u64,
    /// Its transcript, once STT finished.
    pub(super) transcript: Option<String>,
    /// The committed user item it turned into, once the turn committed.
    pub(super) committed_item: Option<String>,
    /// An end-of-turn decision asked for while its STT ran: it runs once the
    /// transcript is in (decision number, the turn's audio).
    pub(super) decision: Option<(u64, Vec<f32>)>,
}

/// A turn held open by the semantic end-of-turn check.
#[derive(Debug)]
pub(super) struct HeldTurn {
    pub(super) item_id: String,
    /// Its audio, 16 kHz.
    pub(super) audio: Vec<f32>,
    pub(super) audio_end_ms: u64,
    /// Input position (ms) at which it is committed anyway.
    pub(super) until_ms: f64,
}

/// A speculative response that ended before its turn was committed. Its
/// events wait for the commit, which sends them (its items join the
/// conversation only then), or for resumed speech, which drops them unseen.
#[derive(Debug)]
pub(super) struct FinishedSpeculation {
    pub(super) response_id: String,
    pub(super) status: ResponseStatus,
    pub(super) events: Vec<EngineEvent>,
    pub(super) timings: TurnTimings,
}

/// Where live transcription of the current speech stands.
#[derive(Debug, Default)]
pub(super) struct LiveTranscript {
    /// The user item being transcribed.
    pub(super) item_id: Option<String>,
    /// Text already sent as deltas.
    pub(super) sent: String,
    /// A live job is running.
    pub(super) in_flight: bool,
    /// Input position of the last live job, ms.
    pub(super) last_ms: f64,
}

/// The response being produced.
#[derive(Debug)]
pub(super) struct ActiveResponse {
    pub(super) id: String,
    pub(super) generation: u64,
    /// Closed while the first clause is synthesised: holds the LLM back.
    pub(super) gate: Arc<Gate>,
    /// Events held back until the turn commits (speculative response).
    pub(super) held: Option<Vec<EngineEvent>>,
    pub(super) audio: bool,
    pub(super) out_of_band: bool,
    pub(super) voice: Option<String>,
    pub(super) speed: f64,
    pub(super) max_tokens: Option<u32>,
    pub(super) message: Option<(String, usize)>,
    pub(super) outputs: Vec<Item>,
    pub(super) text: String,
    pub(super) segmenter: Segmenter,
    /// Its clauses through TTS and out as audio.
    pub(super) speech: SpeechOut,
    pub(super) llm_done: bool,
    /// Tool calls that came after the message began: output items follow
    /// one another, so they are sent once the message is done.
    pub(super) later_calls: Vec<(String, String, String)>,
    pub(super) usage: Usage,
    pub(super) timings: TurnTimings,
}

/// What a transcription job is for.
#[derive(Debug, Clone)]
pub(crate) enum SttPurpose {
    /// The committed user item.
    Committed {
        item_id: String,
        duration_ms: f64,
        /// Whether a response follows (VAD commits), or the client asks for one.
        respond: bool,
    },
    /// The turn as of the soft end, before the commit.
    Speculative,
    /// The speech so far, for live transcript deltas.
    Live { item_id: String },
}

pub(super) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic in another holder leaves consistent-enough state; keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
