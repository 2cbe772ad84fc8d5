//! A session: one conversation's turn state, items and active response.
//!
//! Transports feed it turn events and client requests; stage workers feed it
//! model outputs. All of it goes through one short critical section, and
//! everything the transport must hear goes out through a bounded event queue.
//! Nothing here touches Python.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use super::Engine;
use super::backend::{
    Cancel, Gate, LlmOutput, LlmRequest, StageError, SttOptions, SttOutput, Tool, ToolChoice,
    TtsChunk, TtsRequest,
};
use super::conversation::{
    Content, Conversation, ConversationError, Item, ItemKind, ItemStatus, Role, SpokenClause,
};
use super::events::{EngineEvent, ResponseStatus, StopReason, TurnTimings, Usage};
use super::input::AudioInput;
use super::segmenter::Segmenter;
use super::stages::{Job, PanicReport};
use crate::audio::resample::Resampler;
use crate::queue::{Overflow, Queue, QueueError};

/// Input audio rate of the STT stage and the VAD.
pub const STT_RATE: u32 = 16_000;

/// Per-session settings; the realtime transport maps `session.update` here.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// System prompt.
    pub instructions: String,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// How it may call them.
    pub tool_choice: ToolChoice,
    /// Sampling temperature (backend default when `None`).
    pub temperature: Option<f64>,
    /// Token budget of a response.
    pub max_output_tokens: Option<u32>,
    /// Speak the answer (true) or only write it.
    pub audio_output: bool,
    /// TTS voice.
    pub voice: Option<String>,
    /// TTS speed.
    pub speed: f64,
    /// Rate of the audio the session emits.
    pub output_rate: u32,
    /// Whether the VAD drives turns (false: push-to-talk).
    pub turn_detection: bool,
    /// Start a response when a turn is committed.
    pub create_response: bool,
    /// Cancel the active response when the user starts speaking.
    pub interrupt_response: bool,
    /// Emit input transcription events, with these options.
    pub transcription: Option<SttOptions>,
    /// Semantic turn ends (`semantic_vad`): when the VAD ends a turn whose
    /// transcript sounds unfinished, wait up to this long (input audio ms,
    /// from the end of speech) for the user to go on. `None`: never wait.
    pub semantic_max_wait_ms: Option<f64>,
    /// Options of the STT the pipeline runs anyway.
    pub stt: SttOptions,
    /// Items of history the LLM sees (0: all).
    pub chat_size: usize,
    /// Start STT and the LLM on the VAD's soft end, before the commit.
    pub speculation: bool,
    /// When the user starts speaking, let the LLM read the history ahead
    /// (see [`LlmBackend::prefill`](super::backend::LlmBackend::prefill)).
    pub prefill: bool,
    /// Send input transcript deltas while the user speaks: from a live
    /// transcription every `live_interval_ms`, and from the speculative
    /// transcript at each pause (append-only; the final transcript follows).
    pub live_transcription: bool,
    /// How often a live transcription runs during speech, ms.
    pub live_interval_ms: f64,
    /// Rate of the audio fed to the session.
    pub input_rate: u32,
    /// Turn detection settings of the VAD.
    pub vad: crate::vad::TurnConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            instructions: String::new(),
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            temperature: None,
            max_output_tokens: None,
            audio_output: true,
            voice: None,
            speed: 1.0,
            output_rate: 24_000,
            turn_detection: true,
            create_response: true,
            interrupt_response: true,
            transcription: None,
            semantic_max_wait_ms: None,
            stt: SttOptions::default(),
            chat_size: 0,
            speculation: true,
            prefill: true,
            live_transcription: false,
            live_interval_ms: 1000.0,
            input_rate: 24_000,
            vad: crate::vad::TurnConfig::default(),
        }
    }
}

/// Per-response overrides (`response.create`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseOptions {
    /// Replaces the session instructions.
    pub instructions: Option<String>,
    /// Replaces the session tools.
    pub tools: Option<Vec<Tool>>,
    /// Replaces the session tool choice.
    pub tool_choice: Option<ToolChoice>,
    /// Replaces audio output (true) or text only (false).
    pub audio_output: Option<bool>,
    /// Replaces the token budget.
    pub max_output_tokens: Option<u32>,
    /// Replaces the voice.
    pub voice: Option<String>,
    /// Out-of-band: the response is not added to the conversation.
    pub out_of_band: bool,
    /// Items the model sees instead of the conversation (out-of-band input).
    pub input: Option<Vec<Item>>,
}

/// A turn event from the VAD (audio times in ms since the stream began).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnInput {
    /// Speech began.
    SpeechStarted {
        /// Where.
        audio_start_ms: u64,
    },
    /// A short silence: the turn may be ending. Carries the audio so far.
    SoftEnd {
        /// Where.
        audio_ms: u64,
        /// The turn's audio up to here, 16 kHz.
        audio: Vec<f32>,
    },
    /// Speech came back after a soft end.
    SpeechResumed {
        /// Where.
        audio_ms: u64,
    },
    /// The turn ended; carries the utterance.
    SpeechStopped {
        /// Where.
        audio_end_ms: u64,
        /// The utterance with its padding, 16 kHz.
        audio: Vec<f32>,
    },
}

/// Why the session refused a request.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionError {
    /// A response is already running. Cancel it or wait for `response.done`.
    #[error("conversation already has an active response in progress: {0}")]
    ActiveResponse(String),
    /// There is no audio to commit. Append audio first.
    #[error("buffer too small: expected at least 100ms of audio, got {0:.0}ms")]
    EmptyBuffer(f64),
    /// A conversation edit failed.
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    /// The session was closed.
    #[error("the session is closed")]
    Closed,
    /// A model stage refused the job.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// A setting is invalid (the message names it).
    #[error("invalid session setting: {0}")]
    Config(String),
    /// Input audio was refused (the message says why).
    #[error("invalid input audio: {0}")]
    Audio(String),
}

impl SessionError {
    /// A stable error code for the wire.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::ActiveResponse(_) => "conversation_already_has_active_response",
            SessionError::EmptyBuffer(_) => "input_audio_buffer_commit_empty",
            SessionError::Conversation(ConversationError::NoSuchItem(_)) => "item_not_found",
            SessionError::Conversation(ConversationError::TruncateBeyondEnd { .. }) => {
                "invalid_audio_end_ms"
            }
            SessionError::Conversation(ConversationError::DuplicateId(_)) => "item_id_duplicate",
            SessionError::Conversation(_) => "invalid_item",
            SessionError::Closed => "session_closed",
            SessionError::Stage(_) => "server_overloaded",
            SessionError::Config(_) => "invalid_value",
            SessionError::Audio(_) => "invalid_audio",
        }
    }
}

/// Where the speculative work of the current turn stands.
#[derive(Debug)]
struct Speculation {
    /// The `spec_gen` it runs under.
    generation: u64,
    /// Its transcript, once STT finished.
    transcript: Option<String>,
    /// The committed user item it turned into, once the turn committed.
    committed_item: Option<String>,
}

/// A turn held open by the semantic end-of-turn check.
#[derive(Debug)]
struct HeldTurn {
    item_id: String,
    /// Its audio, 16 kHz.
    audio: Vec<f32>,
    audio_end_ms: u64,
    /// Input position (ms) at which it is committed anyway.
    until_ms: f64,
}

/// Whether a transcript sounds like the speaker will go on: it ends in a
/// comma or dash, or in a word that does not end an English sentence.
/// Sentence punctuation or any other last word counts as finished.
pub fn sounds_unfinished(text: &str) -> bool {
    const GO_ON: &[&str] = &[
        "and", "or", "but", "so", "because", "then", "if", "that", "which", "um", "uh", "er",
        "erm", "the", "a", "an", "to", "of", "with", "for", "in", "on", "at", "from", "my", "your",
        "our", "their", "is", "are", "was", "were", "i", "like", "about", "than",
    ];
    let t = text.trim_end();
    if t.is_empty() || t.ends_with(['.', '?', '!']) {
        return false;
    }
    if t.ends_with([',', '-', ';', ':']) || t.ends_with('\u{2026}') {
        return true;
    }
    let last = t
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or_default()
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    GO_ON.contains(&last.as_str())
}

/// A clause on its way through TTS.
#[derive(Debug, Default)]
struct ClauseSlot {
    text: String,
    chunks: Vec<TtsChunk>,
    done: bool,
    started_ms: Option<f64>,
}

#[derive(Debug)]
struct ActiveResponse {
    id: String,
    generation: u64,
    /// Closed while the first clause is synthesised: holds the LLM back.
    gate: Arc<Gate>,
    /// Events held back until the turn commits (speculative response).
    held: Option<Vec<EngineEvent>>,
    audio: bool,
    out_of_band: bool,
    voice: Option<String>,
    speed: f64,
    max_tokens: Option<u32>,
    message: Option<(String, usize)>,
    outputs: Vec<Item>,
    text: String,
    spoken: Vec<SpokenClause>,
    segmenter: Segmenter,
    clauses: Vec<ClauseSlot>,
    next_clause: usize,
    llm_done: bool,
    /// Tool calls that came after the message began: output items follow
    /// one another, so they are sent once the message is done.
    later_calls: Vec<(String, String, String)>,
    usage: Usage,
    resampler: Option<Resampler>,
    out_buf: Vec<f32>,
    /// Output audio not yet sent (less than a 20 ms delta).
    pending_audio: Vec<f32>,
    audio_ms: f64,
    timings: TurnTimings,
}

struct State {
    config: SessionConfig,
    conversation: Conversation,
    speech_item: Option<String>,
    spec: Option<Speculation>,
    response: Option<ActiveResponse>,
    timings: TurnTimings,
    /// Committed user audio still being transcribed.
    pending_stt: usize,
    /// A `response.create` waiting for those transcripts (id, options).
    deferred: Option<(String, ResponseOptions)>,
    /// Live transcription of the speech in progress.
    live: LiveTranscript,
    /// A turn the VAD ended but whose words sound unfinished (semantic mode).
    held_turn: Option<HeldTurn>,
    /// Audio of a held turn the user went on with (16 kHz): the start of
    /// the current turn.
    carry: Vec<f32>,
    /// A speculative response that finished before its turn committed.
    finished_spec: Option<FinishedSpeculation>,
}

/// A speculative response that ended before its turn was committed. Its
/// events wait for the commit, which sends them (its items join the
/// conversation only then), or for resumed speech, which drops them unseen.
#[derive(Debug)]
struct FinishedSpeculation {
    response_id: String,
    status: ResponseStatus,
    events: Vec<EngineEvent>,
    timings: TurnTimings,
}

/// Where live transcription of the current speech stands.
#[derive(Debug, Default)]
struct LiveTranscript {
    /// The user item being transcribed.
    item_id: Option<String>,
    /// Text already sent as deltas.
    sent: String,
    /// A live job is running.
    in_flight: bool,
    /// Input position of the last live job, ms.
    last_ms: f64,
}

/// The shared part of a session, reached by its transport and the workers.
pub(crate) struct Shared {
    engine: Arc<Engine>,
    id: String,
    state: Mutex<State>,
    input: Mutex<AudioInput>,
    events: Queue<EngineEvent>,
    /// Set once by the transport; read without a lock on every event.
    notify: OnceLock<Box<dyn Fn() + Send + Sync>>,
    resp_gen: Arc<AtomicU64>,
    spec_gen: Arc<AtomicU64>,
    closed: AtomicBool,
    overflowed: AtomicBool,
}

/// A handle to one session; cheap to clone.
#[derive(Clone)]
pub struct Session(Arc<Shared>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.0.id).finish()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic in another holder leaves consistent-enough state; keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Session {
    pub(crate) fn new(
        engine: Arc<Engine>,
        config: SessionConfig,
        event_capacity: usize,
    ) -> Result<Self, SessionError> {
        let id = engine.new_id("sess");
        let events = Queue::new(event_capacity, Overflow::Reject)
            .map_err(|e| SessionError::Config(e.to_string()))?;
        let input = new_input(&engine, &config)?;
        Ok(Session(Arc::new(Shared {
            input: Mutex::new(input),
            engine,
            id,
            state: Mutex::new(State {
                config,
                conversation: Conversation::default(),
                speech_item: None,
                spec: None,
                response: None,
                timings: TurnTimings::default(),
                pending_stt: 0,
                deferred: None,
                live: LiveTranscript::default(),
                held_turn: None,
                carry: Vec::new(),
                finished_spec: None,
            }),
            events,
            notify: OnceLock::new(),
            resp_gen: Arc::new(AtomicU64::new(0)),
            spec_gen: Arc::new(AtomicU64::new(0)),
            closed: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
        })))
    }

    /// The session id (`sess_...`).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// A copy of the current settings.
    pub fn config(&self) -> SessionConfig {
        lock(&self.0.state).config.clone()
    }

    /// Change the settings. A new input rate or VAD setting restarts the
    /// input (audio not yet committed is dropped).
    pub fn update_config(&self, f: impl FnOnce(&mut SessionConfig)) -> Result<(), SessionError> {
        let mut st = lock(&self.0.state);
        let mut next = st.config.clone();
        f(&mut next);
        if next.input_rate != st.config.input_rate
            || next.vad != st.config.vad
            || next.turn_detection != st.config.turn_detection
        {
            let input = new_input(&self.0.engine, &next)?;
            *self.0.input.lock().unwrap_or_else(PoisonError::into_inner) = input;
        }
        st.config = next;
        Ok(())
    }

    /// Feed input audio (mono float32 at the session's input rate). With turn
    /// detection the VAD runs here and turn events follow; without it the
    /// audio is buffered for [`commit_buffer`](Self::commit_buffer).
    pub fn feed_audio(&self, samples: &[f32]) -> Result<(), SessionError> {
        let mut turns = Vec::new();
        let position_ms = {
            let mut input = self.0.input.lock().unwrap_or_else(PoisonError::into_inner);
            input
                .feed(samples, &mut turns)
                .map_err(|e| SessionError::Audio(e.to_string()))?;
            input.position_ms()
        };
        for t in turns {
            self.turn_event(t);
        }
        self.maybe_live_transcribe(position_ms);
        self.release_held_turn(false);
        Ok(())
    }

    /// Commit a held turn once its wait is over (or at once with `now`);
    /// returns its item id if it was committed.
    fn release_held_turn(&self, now: bool) -> Option<String> {
        let sh = &self.0;
        let position = self.input_position_ms();
        let mut st = lock(&sh.state);
        let until = st.held_turn.as_ref()?.until_ms;
        if !now && position < until {
            return None;
        }
        sh.release_held(&mut st)
    }

    /// Start a live transcription of the speech so far when one is due.
    fn maybe_live_transcribe(&self, position_ms: f64) {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        let Some(item_id) = st.speech_item.clone() else {
            return;
        };
        if !st.config.live_transcription || st.live.in_flight {
            return;
        }
        if st.live.item_id.as_deref() != Some(item_id.as_str()) {
            st.live = LiveTranscript {
                item_id: Some(item_id.clone()),
                last_ms: position_ms,
                ..LiveTranscript::default()
            };
            return;
        }
        if position_ms - st.live.last_ms < st.config.live_interval_ms {
            return;
        }
        let audio = sh
            .input
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .turn_audio();
        if audio.is_empty() {
            return;
        }
        st.live.in_flight = true;
        st.live.last_ms = position_ms;
        let job = SttJob {
            session: Arc::clone(sh),
            audio,
            options: st.config.stt.clone(),
            purpose: SttPurpose::Live { item_id },
            cancel: Cancel::never(),
        };
        if sh.engine.stt_pool.submit(Box::new(job)).is_err() {
            st.live.in_flight = false;
        }
    }

    /// Commit the buffered input audio as a user turn
    /// (`input_audio_buffer.commit`); returns the new item id.
    pub fn commit_buffer(&self) -> Result<String, SessionError> {
        if let Some(id) = self.release_held_turn(true) {
            return Ok(id);
        }
        let audio = self
            .0
            .input
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_buffer();
        self.commit_input(audio)
    }

    /// Milliseconds of input audio fed so far.
    pub fn input_position_ms(&self) -> f64 {
        self.0
            .input
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .position_ms()
    }

    /// Call `f` after each event is queued (for async transports); only the
    /// first call takes effect.
    pub fn set_notify(&self, f: Box<dyn Fn() + Send + Sync>) {
        // Only the first callback counts: a session has one transport.
        let _ = self.0.notify.set(f);
    }

    /// The next event, waiting up to `timeout` (`None`: forever).
    /// `None` when the wait timed out or the session is closed and drained.
    pub fn next_event(&self, timeout: Option<Duration>) -> Option<EngineEvent> {
        self.0.events.pop(timeout).ok()
    }

    /// The next event if one is queued.
    pub fn try_next_event(&self) -> Option<EngineEvent> {
        self.0.events.try_pop().ok()
    }

    /// Whether the transport fell so far behind that events were lost; the
    /// transport should close the connection with an error.
    pub fn overflowed(&self) -> bool {
        self.0.overflowed.load(Ordering::Acquire)
    }

    /// A snapshot of the conversation items.
    pub fn items(&self) -> Vec<Item> {
        lock(&self.0.state).conversation.items().to_vec()
    }

    /// One item by id.
    pub fn item(&self, id: &str) -> Result<Item, SessionError> {
        lock(&self.0.state)
            .conversation
            .get(id)
            .cloned()
            .ok_or_else(|| ConversationError::NoSuchItem(id.to_owned()).into())
    }

    /// Whether a response is running.
    pub fn has_active_response(&self) -> bool {
        lock(&self.0.state)
            .response
            .as_ref()
            .is_some_and(|r| r.held.is_none())
    }

    /// Whether a speculative answer finished before its turn committed and
    /// waits, unsent, for the commit (or for resumed speech to drop it).
    pub fn has_finished_speculation(&self) -> bool {
        lock(&self.0.state).finished_spec.is_some()
    }

    /// End the session: cancel its work and wake its event reader.
    pub fn close(&self) {
        if self.0.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.0.resp_gen.fetch_add(1, Ordering::AcqRel);
        self.0.spec_gen.fetch_add(1, Ordering::AcqRel);
        lock(&self.0.state).response = None;
        self.0.events.close();
        self.0.engine.session_closed();
    }

    /// Whether the session was closed.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    /// Handle a turn event from the VAD.
    pub fn turn_event(&self, input: TurnInput) {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        match input {
            TurnInput::SpeechStarted { audio_start_ms } => {
                if let Some(held) = st.held_turn.take() {
                    // The user went on: the same turn, the same item, and no
                    // new speech_started (the client never saw it stop).
                    sh.drop_speculation(&mut st);
                    st.speech_item = Some(held.item_id);
                    st.carry = held.audio;
                    return;
                }
                let interrupt = st.config.interrupt_response;
                if interrupt && st.response.as_ref().is_some_and(|r| r.held.is_none()) {
                    sh.cancel_response(&mut st, StopReason::TurnDetected);
                }
                sh.drop_speculation(&mut st);
                let item_id = sh.engine.new_id("item");
                st.speech_item = Some(item_id.clone());
                st.timings = TurnTimings::default();
                sh.emit(EngineEvent::SpeechStarted {
                    item_id,
                    audio_start_ms,
                });
                if st.config.prefill && st.config.create_response {
                    sh.prefill(&st);
                }
            }
            TurnInput::SoftEnd { audio, .. } => {
                if !st.config.speculation || st.speech_item.is_none() || audio.is_empty() {
                    return;
                }
                sh.drop_speculation(&mut st);
                let audio = if st.carry.is_empty() {
                    audio
                } else {
                    [st.carry.as_slice(), audio.as_slice()].concat()
                };
                let generation = sh.spec_gen.fetch_add(1, Ordering::AcqRel) + 1;
                let soft_end_ms = sh.engine.now_ms();
                st.timings.soft_end = Some(soft_end_ms);
                st.spec = Some(Speculation {
                    generation,
                    transcript: None,
                    committed_item: None,
                });
                let job = SttJob {
                    session: Arc::clone(sh),
                    audio,
                    options: st.config.stt.clone(),
                    purpose: SttPurpose::Speculative,
                    cancel: Cancel::new(Arc::clone(&sh.spec_gen), generation),
                };
                if sh.engine.stt_pool.submit(Box::new(job)).is_err() {
                    st.spec = None;
                }
            }
            TurnInput::SpeechResumed { .. } => sh.drop_speculation(&mut st),
            TurnInput::SpeechStopped {
                audio_end_ms,
                audio,
            } => {
                let audio = if st.carry.is_empty() {
                    audio
                } else {
                    let mut all = std::mem::take(&mut st.carry);
                    all.extend_from_slice(&audio);
                    all
                };
                // Hold the turn if its words sound unfinished, or while they
                // are still being transcribed (the transcript decides then).
                let hold = st
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.transcript.as_deref().is_none_or(sounds_unfinished));
                if let Some(max_wait) = st.config.semantic_max_wait_ms
                    && hold
                {
                    let item_id = st
                        .speech_item
                        .clone()
                        .unwrap_or_else(|| sh.engine.new_id("item"));
                    st.speech_item = Some(item_id.clone());
                    let silence = st.config.vad.min_silence_ms;
                    st.held_turn = Some(HeldTurn {
                        item_id,
                        audio,
                        audio_end_ms,
                        until_ms: audio_end_ms as f64 + (max_wait - silence).max(0.0),
                    });
                    return;
                }
                let item_id = st
                    .speech_item
                    .take()
                    .unwrap_or_else(|| sh.engine.new_id("item"));
                st.timings.speech_end = Some(audio_end_ms as f64);
                sh.emit(EngineEvent::SpeechStopped {
                    item_id: item_id.clone(),
                    audio_end_ms,
                });
                if let Err(e) = sh.commit(&mut st, item_id, audio, true) {
                    sh.emit_error(&e);
                }
            }
        }
    }

    /// Commit audio as a user turn (push-to-talk, or a client commit).
    pub fn commit_input(&self, audio_16k: Vec<f32>) -> Result<String, SessionError> {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        let ms = audio_16k.len() as f64 * 1000.0 / f64::from(STT_RATE);
        if ms < 100.0 {
            return Err(SessionError::EmptyBuffer(ms));
        }
        sh.drop_speculation(&mut st);
        let item_id = st
            .speech_item
            .take()
            .unwrap_or_else(|| sh.engine.new_id("item"));
        sh.commit(&mut st, item_id.clone(), audio_16k, false)?;
        Ok(item_id)
    }

    /// Forget the speech in progress (`input_audio_buffer.clear`).
    pub fn clear_input(&self) {
        let sh = &self.0;
        sh.input
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let mut st = lock(&sh.state);
        sh.drop_speculation(&mut st);
        st.speech_item = None;
        st.held_turn = None;
        st.carry.clear();
        sh.emit(EngineEvent::InputCleared);
    }

    /// Add an item (`conversation.item.create`); returns the previous item id.
    pub fn add_item(&self, item: Item, previous: Option<&str>) -> Result<(), SessionError> {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        let prev = st.conversation.insert(item.clone(), previous)?;
        sh.emit(EngineEvent::ItemAdded {
            item: item.clone(),
            previous_item_id: prev.clone(),
        });
        sh.emit(EngineEvent::ItemDone {
            item,
            previous_item_id: prev,
        });
        Ok(())
    }

    /// Add a user audio item (`conversation.item.create` with audio) and
    /// transcribe it; a `response.create` meanwhile waits for the transcript.
    pub fn add_audio_item(
        &self,
        mut item: Item,
        previous: Option<&str>,
        audio_16k: Vec<f32>,
    ) -> Result<(), SessionError> {
        let sh = &self.0;
        let duration_ms = audio_16k.len() as f64 * 1000.0 / f64::from(STT_RATE);
        if let ItemKind::Message { content, .. } = &mut item.kind {
            for c in content.iter_mut() {
                if let Content::InputAudio { duration_ms: d, .. } = c {
                    *d = duration_ms;
                }
            }
        }
        let mut st = lock(&sh.state);
        let prev = st.conversation.insert(item.clone(), previous)?;
        let item_id = item.id.clone();
        sh.emit(EngineEvent::ItemAdded {
            item: item.clone(),
            previous_item_id: prev.clone(),
        });
        sh.emit(EngineEvent::ItemDone {
            item,
            previous_item_id: prev,
        });
        let job = SttJob {
            session: Arc::clone(sh),
            audio: audio_16k,
            options: st.config.stt.clone(),
            purpose: SttPurpose::Committed {
                item_id,
                duration_ms,
                respond: false,
            },
            cancel: Cancel::never(),
        };
        sh.engine.stt_pool.submit(Box::new(job))?;
        st.pending_stt += 1;
        Ok(())
    }

    /// Remove an item.
    pub fn delete_item(&self, id: &str) -> Result<(), SessionError> {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        st.conversation.delete(id)?;
        sh.emit(EngineEvent::ItemDeleted {
            item_id: id.to_owned(),
        });
        Ok(())
    }

    /// Trim an assistant item to the audio the client played.
    pub fn truncate_item(
        &self,
        id: &str,
        content_index: usize,
        audio_end_ms: u64,
    ) -> Result<(), SessionError> {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        // Truncating the item still being spoken stops the response first.
        if st
            .response
            .as_ref()
            .is_some_and(|r| r.message.as_ref().is_some_and(|(m, _)| m == id))
        {
            sh.cancel_response(&mut st, StopReason::ClientCancelled);
        }
        st.conversation.truncate(id, content_index, audio_end_ms)?;
        sh.emit(EngineEvent::ItemTruncated {
            item_id: id.to_owned(),
            content_index,
            audio_end_ms,
        });
        Ok(())
    }

    /// Start a response (`response.create`).
    pub fn create_response(&self, options: ResponseOptions) -> Result<String, SessionError> {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        if let Some(r) = &st.response
            && r.held.is_none()
        {
            return Err(SessionError::ActiveResponse(r.id.clone()));
        }
        if st.response.is_some() || st.finished_spec.is_some() {
            // A speculative response for a turn not yet committed gives way.
            sh.drop_speculation(&mut st);
        }
        if let Some((id, _)) = &st.deferred {
            return Err(SessionError::ActiveResponse(id.clone()));
        }
        let id = sh.engine.new_id("resp");
        if st.pending_stt > 0 && options.input.is_none() {
            // The model must see the user's words: wait for their transcript.
            st.deferred = Some((id.clone(), options));
            return Ok(id);
        }
        sh.start_response(&mut st, &options, None, false, id)
    }

    /// Cancel the active response (`response.cancel`); false if none.
    pub fn cancel_response(&self) -> bool {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        if st.response.as_ref().is_some_and(|r| r.held.is_none()) {
            sh.cancel_response(&mut st, StopReason::ClientCancelled);
            true
        } else {
            false
        }
    }
}

impl Shared {
    fn emit(&self, event: EngineEvent) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        match self.events.try_push(event) {
            Ok(_) => {
                if let Some(f) = self.notify.get() {
                    f();
                }
            }
            Err(e) if e.kind == QueueError::Full => {
                // The reader is too slow: flag it so the transport closes the
                // connection with a clear error instead of growing memory.
                self.overflowed.store(true, Ordering::Release);
                if let Some(f) = self.notify.get() {
                    f();
                }
            }
            Err(_) => {}
        }
    }

    fn emit_error(&self, e: &SessionError) {
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

    /// Emit for a response: held back while the response is speculative.
    fn emit_resp(&self, resp: &mut ActiveResponse, event: EngineEvent) {
        if let Some(held) = &mut resp.held {
            held.push(event);
        } else {
            self.emit(event);
        }
    }

    /// Let the LLM read the history ahead while the user speaks. Best
    /// effort: a full queue skips it, and the next response (which bumps the
    /// response generation) makes a queued or running prefill stop.
    fn prefill(self: &Arc<Self>, st: &State) {
        // The LLM has one cache: with other conversations using it, what is
        // read ahead now is evicted before the answer, and the CPU it took
        // was taken from their turns (measured: 4 conversations on 2 cores
        // answered later with prefill than without).
        if self.engine.llm_busy_with_another(self.key(), PREFILL_QUIET) {
            tracing::debug!("LLM prefill skipped: another session used the LLM recently");
            return;
        }
        let cfg = &st.config;
        // What a response of the turn will be asked, but its messages.
        let request = llm_request(
            cfg,
            &ResponseOptions::default(),
            st.conversation
                .chat_prefix(&cfg.instructions, cfg.chat_size),
        );
        let job = PrefillJob {
            session: Arc::clone(self),
            request,
            cancel: Cancel::new(
                Arc::clone(&self.resp_gen),
                self.resp_gen.load(Ordering::Acquire),
            ),
        };
        if let Err(e) = self.engine.llm_pool.submit(Box::new(job)) {
            tracing::debug!(error = %e, "LLM prefill skipped");
        }
    }

    /// This session's identity for the engine's bookkeeping.
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    fn drop_speculation(&self, st: &mut State) {
        if st.spec.take().is_some() {
            self.spec_gen.fetch_add(1, Ordering::AcqRel);
        }
        if st.response.as_ref().is_some_and(|r| r.held.is_some()) {
            // Never emitted, so nothing to tell the client; its items never
            // joined the conversation.
            self.resp_gen.fetch_add(1, Ordering::AcqRel);
            st.response = None;
        }
        st.finished_spec = None;
    }

    fn commit(
        self: &Arc<Self>,
        st: &mut State,
        item_id: String,
        audio: Vec<f32>,
        respond: bool,
    ) -> Result<(), SessionError> {
        let duration_ms = audio.len() as f64 * 1000.0 / f64::from(STT_RATE);
        st.timings.commit = Some(self.engine.now_ms());
        let item = Item {
            id: item_id.clone(),
            kind: ItemKind::Message {
                role: Role::User,
                content: vec![Content::InputAudio {
                    transcript: None,
                    duration_ms,
                }],
            },
            status: ItemStatus::Completed,
        };
        let prev = st.conversation.insert(item.clone(), None)?;
        self.emit(EngineEvent::InputCommitted {
            item_id: item_id.clone(),
            previous_item_id: prev.clone(),
        });
        self.emit(EngineEvent::ItemAdded {
            item: item.clone(),
            previous_item_id: prev.clone(),
        });
        self.emit(EngineEvent::ItemDone {
            item,
            previous_item_id: prev,
        });
        // Speculative work on the same speech is the transcript of this turn.
        if let Some(spec) = &mut st.spec {
            spec.committed_item = Some(item_id.clone());
            st.timings.speculative = true;
            if let Some(text) = spec.transcript.clone() {
                st.spec = None;
                self.transcript_ready(st, &item_id, Ok(text), duration_ms, respond);
            }
            return Ok(());
        }
        let job = SttJob {
            session: Arc::clone(self),
            audio,
            options: st.config.stt.clone(),
            purpose: SttPurpose::Committed {
                item_id,
                duration_ms,
                respond,
            },
            // A committed turn is transcribed even if a response is cancelled.
            cancel: Cancel::never(),
        };
        self.engine.stt_pool.submit(Box::new(job))?;
        st.pending_stt += 1;
        Ok(())
    }

    /// A committed user item has its transcript (or its STT failed).
    fn transcript_ready(
        self: &Arc<Self>,
        st: &mut State,
        item_id: &str,
        result: Result<String, String>,
        duration_ms: f64,
        respond: bool,
    ) {
        st.timings.stt_done = Some(self.engine.now_ms());
        let want_events = st.config.transcription.is_some();
        match result {
            Ok(text) => {
                if let Some(Item {
                    kind: ItemKind::Message { content, .. },
                    ..
                }) = st.conversation.get_mut(item_id)
                {
                    for c in content.iter_mut() {
                        if let Content::InputAudio { transcript, .. } = c {
                            *transcript = Some(text.clone());
                        }
                    }
                }
                let live = std::mem::take(&mut st.live);
                if want_events {
                    // Deltas are append-only: send what live transcription
                    // did not already give (all of it without it).
                    let sent = if live.item_id.as_deref() == Some(item_id) {
                        live.sent
                    } else {
                        String::new()
                    };
                    let rest = text.strip_prefix(sent.as_str()).unwrap_or_default();
                    if !rest.is_empty() {
                        self.emit(EngineEvent::InputTranscriptDelta {
                            item_id: item_id.to_owned(),
                            delta: rest.to_owned(),
                        });
                    }
                    self.emit(EngineEvent::InputTranscriptCompleted {
                        item_id: item_id.to_owned(),
                        transcript: text.clone(),
                        audio_seconds: duration_ms / 1000.0,
                    });
                }
                // A speculative response for this turn is released now.
                if let Some(held) = st.response.as_mut().and_then(|r| r.held.take()) {
                    self.release_held_events(&mut st.conversation, held);
                    let now = self.engine.now_ms();
                    if let Some(resp) = st.response.as_mut() {
                        // It started before the commit: take the turn's times
                        // now; audio made before the release goes out only now.
                        resp.timings.speech_end = st.timings.speech_end;
                        resp.timings.commit = st.timings.commit;
                        if resp.timings.first_audio_out.is_some() {
                            resp.timings.first_audio_out = Some(now);
                        }
                    }
                    return;
                }
                if let Some(done) = st.finished_spec.take() {
                    // It even finished before the commit: all of it goes now.
                    self.release_held_events(&mut st.conversation, done.events);
                    let mut t = done.timings;
                    t.speech_end = st.timings.speech_end;
                    t.commit = st.timings.commit;
                    if t.first_audio_out.is_some() {
                        t.first_audio_out = Some(self.engine.now_ms());
                    }
                    self.log_turn(&done.response_id, done.status, t);
                    return;
                }
                if respond && st.config.create_response && !text.trim().is_empty() {
                    if st.response.is_some() {
                        return;
                    }
                    let id = self.engine.new_id("resp");
                    if let Err(e) =
                        self.start_response(st, &ResponseOptions::default(), None, false, id)
                    {
                        self.emit_error(&e);
                    }
                }
            }
            Err(message) => {
                if want_events {
                    self.emit(EngineEvent::InputTranscriptFailed {
                        item_id: item_id.to_owned(),
                        message: message.clone(),
                    });
                }
                self.emit(EngineEvent::Error {
                    kind: "server_error",
                    code: "transcription_failed",
                    message,
                });
            }
        }
    }

    /// Send a speculative response's held events now that its turn is
    /// committed. Its items join the conversation only here, after the
    /// user's item, and each `previous_item_id` says where they went.
    fn release_held_events(&self, conversation: &mut Conversation, events: Vec<EngineEvent>) {
        for mut event in events {
            match &mut event {
                EngineEvent::ItemAdded {
                    item,
                    previous_item_id,
                } => match conversation.insert(item.clone(), None) {
                    Ok(prev) => *previous_item_id = prev,
                    Err(e) => tracing::warn!(session = %self.id, "held item not added: {e}"),
                },
                EngineEvent::ItemDone {
                    item,
                    previous_item_id,
                } => {
                    if let Some(slot) = conversation.get_mut(&item.id) {
                        slot.clone_from(item);
                    }
                    *previous_item_id = conversation.previous_id(&item.id).map(str::to_owned);
                }
                _ => {}
            }
            self.emit(event);
        }
    }

    /// One log line with the turn's stage timings, and the timings event.
    fn log_turn(&self, response_id: &str, status: ResponseStatus, t: TurnTimings) {
        tracing::info!(
            session = %self.id,
            response = %response_id,
            status = status.as_str(),
            speculative = t.speculative,
            commit_to_stt_ms = delta(t.commit, t.stt_done),
            commit_to_first_token_ms = delta(t.commit, t.llm_first_token),
            commit_to_first_clause_ms = delta(t.commit, t.first_clause),
            commit_to_tts_chunk_ms = delta(t.commit, t.tts_first_chunk),
            commit_to_audio_ms = delta(t.commit, t.first_audio_out),
            "turn"
        );
        self.emit(EngineEvent::Timings {
            response_id: response_id.to_owned(),
            timings: t,
        });
    }

    /// Commit the held turn now; returns its item id.
    fn release_held(self: &Arc<Self>, st: &mut State) -> Option<String> {
        let held = st.held_turn.take()?;
        st.speech_item = None;
        self.emit(EngineEvent::SpeechStopped {
            item_id: held.item_id.clone(),
            audio_end_ms: held.audio_end_ms,
        });
        if let Err(e) = self.commit(st, held.item_id.clone(), held.audio, true) {
            self.emit_error(&e);
            return None;
        }
        Some(held.item_id)
    }

    /// Live input transcription: a pause in the speech gave a transcript of
    /// the turn so far; send what it adds to what was sent.
    fn live_transcript_delta(&self, st: &mut State, text: &str) {
        let Some(item_id) = st.speech_item.clone() else {
            return;
        };
        if !st.config.live_transcription {
            return;
        }
        if st.live.item_id.as_deref() != Some(item_id.as_str()) {
            st.live = LiveTranscript {
                item_id: Some(item_id.clone()),
                ..LiveTranscript::default()
            };
        }
        self.send_live_delta(st, &item_id, text);
    }

    fn start_response(
        self: &Arc<Self>,
        st: &mut State,
        options: &ResponseOptions,
        pending_user_text: Option<&str>,
        held: bool,
        id: String,
    ) -> Result<String, SessionError> {
        let cfg = &st.config;
        let instructions = options.instructions.as_deref().unwrap_or(&cfg.instructions);
        let mut messages = match &options.input {
            Some(items) => {
                let mut c = Conversation::default();
                for it in items {
                    c.insert(it.clone(), None)?;
                }
                c.chat_messages(instructions, 0)
            }
            None => st.conversation.chat_messages(instructions, cfg.chat_size),
        };
        if let Some(text) = pending_user_text {
            messages.push(super::conversation::ChatMessage {
                role: "user",
                content: text.to_owned(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
        }
        let request = llm_request(cfg, options, messages);
        let max_tokens = request.max_tokens;
        let generation = self.resp_gen.fetch_add(1, Ordering::AcqRel) + 1;
        let mut timings = st.timings;
        timings.speculative |= held;
        let mut resp = ActiveResponse {
            id: id.clone(),
            generation,
            gate: Arc::new(Gate::default()),
            held: held.then(Vec::new),
            audio: options.audio_output.unwrap_or(cfg.audio_output),
            out_of_band: options.out_of_band,
            voice: options.voice.clone().or_else(|| cfg.voice.clone()),
            speed: cfg.speed,
            max_tokens,
            message: None,
            outputs: Vec::new(),
            text: String::new(),
            spoken: Vec::new(),
            segmenter: Segmenter::default(),
            clauses: Vec::new(),
            next_clause: 0,
            llm_done: false,
            later_calls: Vec::new(),
            usage: Usage::default(),
            resampler: None,
            out_buf: Vec::new(),
            pending_audio: Vec::new(),
            audio_ms: 0.0,
            timings,
        };
        self.emit_resp(
            &mut resp,
            EngineEvent::ResponseCreated {
                response_id: id.clone(),
            },
        );
        let job = LlmJob {
            session: Arc::clone(self),
            request,
            response_id: id.clone(),
            cancel: Cancel::new(Arc::clone(&self.resp_gen), generation)
                .with_gate(Arc::clone(&resp.gate)),
        };
        st.response = Some(resp);
        if let Err(e) = self.engine.llm_pool.submit(Box::new(job)) {
            self.finish_response(st, ResponseStatus::Failed, None, Some(e.to_string()));
            return Err(e.into());
        }
        Ok(id)
    }

    /// The response `id` of generation `gen`, if it is still the active one.
    fn live_response<'a>(st: &'a mut State, id: &str) -> Option<&'a mut ActiveResponse> {
        st.response.as_mut().filter(|r| r.id == id)
    }

    fn ensure_message(&self, resp: &mut ActiveResponse, st_conv: &mut Conversation) {
        if resp.message.is_some() {
            return;
        }
        let item_id = self.engine.new_id("item");
        let output_index = resp.outputs.len();
        let content = if resp.audio {
            Content::OutputAudio {
                transcript: String::new(),
                duration_ms: 0.0,
                clauses: Vec::new(),
            }
        } else {
            Content::OutputText(String::new())
        };
        let item = Item {
            id: item_id.clone(),
            kind: ItemKind::Message {
                role: Role::Assistant,
                content: vec![content],
            },
            status: ItemStatus::InProgress,
        };
        resp.outputs.push(item.clone());
        resp.message = Some((item_id.clone(), output_index));
        let response_id = resp.id.clone();
        self.emit_resp(
            resp,
            EngineEvent::OutputItemAdded {
                response_id: response_id.clone(),
                output_index,
                item: item.clone(),
            },
        );
        if !resp.out_of_band {
            // Speculative: it joins the conversation when the turn commits.
            let prev = if resp.held.is_none() {
                st_conv.insert(item.clone(), None).ok().flatten()
            } else {
                None
            };
            self.emit_resp(
                resp,
                EngineEvent::ItemAdded {
                    item,
                    previous_item_id: prev,
                },
            );
        }
        let audio = resp.audio;
        self.emit_resp(
            resp,
            EngineEvent::ContentPartAdded {
                response_id,
                item_id,
                output_index,
                audio,
            },
        );
    }

    fn on_llm_output(self: &Arc<Self>, response_id: &str, out: LlmOutput) {
        let mut guard = lock(&self.state);
        let State {
            response,
            conversation,
            ..
        } = &mut *guard;
        let now = self.engine.now_ms();
        let Some(resp) = response.as_mut().filter(|r| r.id == response_id) else {
            return;
        };
        match out {
            LlmOutput::Text(delta) => {
                if delta.is_empty() {
                    return;
                }
                resp.timings.llm_first_token.get_or_insert(now);
                self.ensure_message(resp, conversation);
                resp.text.push_str(&delta);
                if resp.audio {
                    let clauses = resp.segmenter.push(&delta);
                    for c in clauses {
                        self.speak_clause(resp, c);
                    }
                } else {
                    let (item_id, output_index) = resp.message.clone().unwrap_or_default();
                    let response_id = resp.id.clone();
                    self.emit_resp(
                        resp,
                        EngineEvent::TextDelta {
                            response_id,
                            item_id,
                            output_index,
                            delta,
                        },
                    );
                }
            }
            LlmOutput::ToolCall {
                call_id,
                name,
                arguments,
            } => {
                resp.timings.llm_first_token.get_or_insert(now);
                if resp.message.is_some() {
                    resp.later_calls.push((call_id, name, arguments));
                } else {
                    self.tool_call(resp, conversation, call_id, name, arguments);
                }
            }
            LlmOutput::Usage {
                input_tokens,
                output_tokens,
            } => {
                resp.usage = Usage {
                    input_tokens,
                    output_tokens,
                };
            }
        }
    }

    /// A complete function call from the LLM, in `OpenAI`'s order: the output
    /// item and the conversation item (in progress, no arguments yet), the
    /// arguments, then the output item and the conversation item done.
    fn tool_call(
        &self,
        resp: &mut ActiveResponse,
        conversation: &mut Conversation,
        call_id: String,
        name: String,
        arguments: String,
    ) {
        let item_id = self.engine.new_id("item");
        let output_index = resp.outputs.len();
        let mut item = Item {
            id: item_id.clone(),
            kind: ItemKind::FunctionCall {
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: String::new(),
            },
            status: ItemStatus::InProgress,
        };
        resp.outputs.push(item.clone());
        let rid = resp.id.clone();
        // A held (speculative) response's items join the conversation when
        // its turn commits.
        let in_conversation = !resp.out_of_band && resp.held.is_none();
        self.emit_resp(
            resp,
            EngineEvent::OutputItemAdded {
                response_id: rid.clone(),
                output_index,
                item: item.clone(),
            },
        );
        if !resp.out_of_band {
            let prev = if in_conversation {
                conversation.insert(item.clone(), None).ok().flatten()
            } else {
                None
            };
            self.emit_resp(
                resp,
                EngineEvent::ItemAdded {
                    item: item.clone(),
                    previous_item_id: prev,
                },
            );
        }
        self.emit_resp(
            resp,
            EngineEvent::FunctionCallArgumentsDelta {
                response_id: rid.clone(),
                item_id: item_id.clone(),
                output_index,
                call_id: call_id.clone(),
                delta: arguments.clone(),
            },
        );
        self.emit_resp(
            resp,
            EngineEvent::FunctionCallArgumentsDone {
                response_id: rid.clone(),
                item_id: item_id.clone(),
                output_index,
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            },
        );
        item.kind = ItemKind::FunctionCall {
            call_id,
            name,
            arguments,
        };
        item.status = ItemStatus::Completed;
        if let Some(o) = resp.outputs.get_mut(output_index) {
            o.clone_from(&item);
        }
        if in_conversation && let Some(slot) = conversation.get_mut(&item_id) {
            slot.clone_from(&item);
        }
        self.emit_resp(
            resp,
            EngineEvent::OutputItemDone {
                response_id: rid,
                output_index,
                item: item.clone(),
            },
        );
        if !resp.out_of_band {
            let prev = if in_conversation {
                conversation.previous_id(&item_id).map(str::to_owned)
            } else {
                None
            };
            self.emit_resp(
                resp,
                EngineEvent::ItemDone {
                    item,
                    previous_item_id: prev,
                },
            );
        }
    }

    fn speak_clause(self: &Arc<Self>, resp: &mut ActiveResponse, text: String) {
        let now = self.engine.now_ms();
        resp.timings.first_clause.get_or_insert(now);
        let index = resp.clauses.len();
        resp.clauses.push(ClauseSlot {
            text: text.clone(),
            ..ClauseSlot::default()
        });
        let job = TtsJob {
            session: Arc::clone(self),
            response_id: resp.id.clone(),
            index,
            request: TtsRequest {
                text,
                voice: resp.voice.clone(),
                speed: resp.speed,
            },
            cancel: Cancel::new(Arc::clone(&self.resp_gen), resp.generation),
            gate: (index == 0 && self.engine.config().first_audio_priority)
                .then(|| Arc::clone(&resp.gate)),
        };
        if let Err(e) = self.engine.tts_pool.submit(Box::new(job)) {
            // The clause is lost; mark it done so the rest still plays.
            if let Some(slot) = resp.clauses.get_mut(index) {
                slot.done = true;
            }
            tracing::warn!(session = %self.id, "TTS job refused: {e}");
        }
    }

    /// Fail the response `response_id` if it is still the active one.
    fn fail_response(self: &Arc<Self>, response_id: &str, e: &StageError) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        if Self::live_response(st, response_id).is_some() {
            self.finish_response(st, ResponseStatus::Failed, None, Some(e.to_string()));
        }
    }

    fn on_llm_done(self: &Arc<Self>, response_id: &str, result: Result<(), StageError>) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let Some(resp) = Self::live_response(st, response_id) else {
            return;
        };
        if let Err(e) = result {
            self.finish_response(st, ResponseStatus::Failed, None, Some(e.to_string()));
            return;
        }
        resp.llm_done = true;
        if resp.audio
            && let Some(rest) = resp.segmenter.finish()
        {
            self.speak_clause(resp, rest);
        }
        self.pump_audio(st);
    }

    fn on_tts(
        self: &Arc<Self>,
        response_id: &str,
        index: usize,
        chunk: Option<TtsChunk>,
        result: Option<Result<(), StageError>>,
    ) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let Some(resp) = Self::live_response(st, response_id) else {
            return;
        };
        let now = self.engine.now_ms();
        let Some(slot) = resp.clauses.get_mut(index) else {
            return;
        };
        if let Some(c) = chunk {
            resp.timings.tts_first_chunk.get_or_insert(now);
            slot.chunks.push(c);
        }
        if let Some(r) = result {
            slot.done = true;
            if let Err(e) = r {
                tracing::warn!(session = %self.id, "TTS failed on a clause: {e}");
                self.emit(EngineEvent::Error {
                    kind: "server_error",
                    code: "tts_failed",
                    message: e.to_string(),
                });
            }
        }
        self.pump_audio(st);
    }

    /// Send the audio that is ready, in clause order, and finish the response
    /// when everything is out.
    fn pump_audio(self: &Arc<Self>, st: &mut State) {
        let output_rate = st.config.output_rate;
        let now = self.engine.now_ms();
        let Some(resp) = st.response.as_mut() else {
            return;
        };
        while let Some(slot) = resp.clauses.get_mut(resp.next_clause) {
            let chunks = std::mem::take(&mut slot.chunks);
            let done = slot.done;
            let mut started = slot.started_ms;
            let text = slot.text.clone();
            for chunk in chunks {
                if started.is_none() {
                    started = Some(resp.audio_ms);
                    let (item_id, output_index) = resp.message.clone().unwrap_or_default();
                    let delta = if resp.spoken.is_empty() {
                        text.clone()
                    } else {
                        format!(" {text}")
                    };
                    let response_id = resp.id.clone();
                    self.emit_resp(
                        resp,
                        EngineEvent::TranscriptDelta {
                            response_id,
                            item_id,
                            output_index,
                            delta,
                        },
                    );
                    resp.spoken.push(SpokenClause {
                        text: text.clone(),
                        start_ms: resp.audio_ms,
                        end_ms: resp.audio_ms,
                        words: None,
                    });
                }
                if let Some(words) = chunk.words.clone()
                    && let Some(last) = resp.spoken.last_mut()
                {
                    let base = resp.audio_ms - last.start_ms;
                    let w = last.words.get_or_insert_with(Vec::new);
                    w.extend(words.into_iter().map(|(t, s, e)| (t, s + base, e + base)));
                }
                self.send_audio(resp, &chunk, output_rate, now);
            }
            if let Some(slot) = resp.clauses.get_mut(resp.next_clause) {
                slot.started_ms = started;
            }
            if !done {
                return;
            }
            if let Some(last) = resp.spoken.last_mut()
                && started.is_some()
            {
                last.end_ms = resp.audio_ms;
            }
            resp.next_clause += 1;
        }
        if resp.llm_done {
            let hit_budget = resp
                .max_tokens
                .is_some_and(|m| resp.usage.output_tokens >= m);
            if hit_budget {
                self.finish_response(
                    st,
                    ResponseStatus::Incomplete,
                    Some(StopReason::MaxOutputTokens),
                    None,
                );
            } else {
                self.finish_response(st, ResponseStatus::Completed, None, None);
            }
        }
    }

    fn send_audio(&self, resp: &mut ActiveResponse, chunk: &TtsChunk, out_rate: u32, now: f64) {
        let rate_ok = resp
            .resampler
            .as_ref()
            .is_some_and(|r| r.input_rate() == chunk.sample_rate);
        if !rate_ok {
            match Resampler::new(chunk.sample_rate, out_rate) {
                Ok(r) => resp.resampler = Some(r),
                Err(e) => {
                    self.emit(EngineEvent::Error {
                        kind: "server_error",
                        code: "tts_unsupported_rate",
                        message: e.to_string(),
                    });
                    return;
                }
            }
        }
        let Some(rs) = resp.resampler.as_mut() else {
            return;
        };
        let need = rs.output_len_max(chunk.samples.len());
        resp.out_buf.resize(need, 0.0);
        let n = rs
            .process_into(&chunk.samples, &mut resp.out_buf)
            .unwrap_or(0);
        let samples: Vec<f32> = resp.out_buf[..n].to_vec();
        self.send_samples(resp, samples, out_rate, now, false);
    }

    /// Queue output audio and send it in deltas of 20 to 200 ms: at most
    /// 200 ms keeps every frame under client size limits, at least 20 ms
    /// keeps the event rate sane. `flush` sends a shorter tail at the end.
    fn send_samples(
        &self,
        resp: &mut ActiveResponse,
        samples: Vec<f32>,
        out_rate: u32,
        now: f64,
        flush: bool,
    ) {
        resp.audio_ms += samples.len() as f64 * 1000.0 / f64::from(out_rate);
        resp.pending_audio.extend_from_slice(&samples);
        let max = (out_rate / 5).max(1) as usize;
        let min = (out_rate / 50).max(1) as usize;
        let (item_id, output_index) = resp.message.clone().unwrap_or_default();
        while resp.pending_audio.len() >= min || (flush && !resp.pending_audio.is_empty()) {
            let n = resp.pending_audio.len().min(max);
            let piece: Vec<f32> = resp.pending_audio.drain(..n).collect();
            resp.timings.first_audio_out.get_or_insert(now);
            let response_id = resp.id.clone();
            self.emit_resp(
                resp,
                EngineEvent::AudioDelta {
                    response_id,
                    item_id: item_id.clone(),
                    output_index,
                    samples: piece,
                },
            );
        }
    }

    fn finish_response(
        self: &Arc<Self>,
        st: &mut State,
        status: ResponseStatus,
        reason: Option<StopReason>,
        error: Option<String>,
    ) {
        let output_rate = st.config.output_rate;
        let now = self.engine.now_ms();
        let Some(mut resp) = st.response.take() else {
            return;
        };
        // Stop the jobs of this response.
        self.resp_gen.fetch_add(1, Ordering::AcqRel);
        if status == ResponseStatus::Completed {
            let mut tail = Vec::new();
            if let Some(rs) = resp.resampler.as_mut() {
                tail = vec![0.0; rs.flush_len()];
                let n = rs.flush_into(&mut tail).unwrap_or(0);
                tail.truncate(n);
            }
            self.send_samples(&mut resp, tail, output_rate, now, true);
        } else {
            // Audio not sent was not heard: it is not part of the item.
            let unsent = std::mem::take(&mut resp.pending_audio);
            resp.audio_ms -= unsent.len() as f64 * 1000.0 / f64::from(output_rate);
        }
        let item_status = if status == ResponseStatus::Completed {
            ItemStatus::Completed
        } else {
            ItemStatus::Incomplete
        };
        if let Some((item_id, output_index)) = resp.message.clone() {
            // Audio: the transcript is what was spoken. Text: what was written.
            let text = if resp.audio {
                resp.spoken
                    .iter()
                    .map(|c| c.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                resp.text.clone()
            };
            let content = if resp.audio {
                Content::OutputAudio {
                    transcript: text.clone(),
                    duration_ms: resp.audio_ms,
                    clauses: resp.spoken.clone(),
                }
            } else {
                Content::OutputText(text.clone())
            };
            let item = Item {
                id: item_id.clone(),
                kind: ItemKind::Message {
                    role: Role::Assistant,
                    content: vec![content],
                },
                status: item_status,
            };
            // A held (speculative) response's items join the conversation
            // when its turn commits (see `release_held_events`).
            if !resp.out_of_band
                && resp.held.is_none()
                && let Some(slot) = st.conversation.get_mut(&item_id)
            {
                *slot = item.clone();
            }
            if let Some(o) = resp.outputs.get_mut(output_index) {
                *o = item.clone();
            }
            let audio = resp.audio;
            let response_id = resp.id.clone();
            self.emit_resp(
                &mut resp,
                EngineEvent::ContentPartDone {
                    response_id: response_id.clone(),
                    item_id,
                    output_index,
                    audio,
                    text,
                },
            );
            self.emit_resp(
                &mut resp,
                EngineEvent::OutputItemDone {
                    response_id,
                    output_index,
                    item: item.clone(),
                },
            );
            if !resp.out_of_band {
                let previous_item_id = st.conversation.previous_id(&item.id).map(str::to_owned);
                self.emit_resp(
                    &mut resp,
                    EngineEvent::ItemDone {
                        item,
                        previous_item_id,
                    },
                );
            }
        }
        if status == ResponseStatus::Completed {
            // The message is done: now the tool calls that came after it.
            for (call_id, name, arguments) in std::mem::take(&mut resp.later_calls) {
                self.tool_call(&mut resp, &mut st.conversation, call_id, name, arguments);
            }
        }
        let response_id = resp.id.clone();
        let output = resp.outputs.clone();
        let usage = resp.usage;
        if status == ResponseStatus::Failed {
            // Clients that only watch `error` events learn of it too.
            self.emit_resp(
                &mut resp,
                EngineEvent::Error {
                    kind: "server_error",
                    code: "response_failed",
                    message: error
                        .clone()
                        .unwrap_or_else(|| "the response failed".to_owned()),
                },
            );
        }
        self.emit_resp(
            &mut resp,
            EngineEvent::ResponseDone {
                response_id: response_id.clone(),
                status,
                reason,
                output,
                usage,
                error,
            },
        );
        match resp.held.take() {
            None => self.log_turn(&response_id, status, resp.timings),
            // Speculative and already done: it waits for its turn's commit.
            Some(events) => {
                st.finished_spec = Some(FinishedSpeculation {
                    response_id,
                    status,
                    events,
                    timings: resp.timings,
                });
            }
        }
    }

    fn cancel_response(self: &Arc<Self>, st: &mut State, reason: StopReason) {
        self.finish_response(st, ResponseStatus::Cancelled, Some(reason), None);
    }

    fn on_stt(
        self: &Arc<Self>,
        purpose: &SttPurpose,
        generation: u64,
        out: Result<String, String>,
    ) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        match purpose {
            SttPurpose::Committed {
                item_id,
                duration_ms,
                respond,
            } => {
                st.pending_stt = st.pending_stt.saturating_sub(1);
                self.transcript_ready(st, item_id, out, *duration_ms, *respond);
                if st.pending_stt == 0
                    && st.response.is_none()
                    && let Some((id, options)) = st.deferred.take()
                    && let Err(e) = self.start_response(st, &options, None, false, id)
                {
                    self.emit_error(&e);
                }
            }
            SttPurpose::Live { item_id } => {
                if st.live.item_id.as_deref() != Some(item_id.as_str()) {
                    return;
                }
                st.live.in_flight = false;
                if let Ok(text) = out {
                    self.send_live_delta(st, item_id, &text);
                }
            }
            SttPurpose::Speculative => {
                let Some(spec) = st.spec.as_mut().filter(|s| s.generation == generation) else {
                    return;
                };
                match out {
                    Ok(text) => {
                        if let Some(item_id) = spec.committed_item.clone() {
                            // The turn committed while STT ran: it is final.
                            let duration_ms = committed_duration(st, &item_id);
                            st.spec = None;
                            self.transcript_ready(st, &item_id, Ok(text), duration_ms, true);
                            return;
                        }
                        spec.transcript = Some(text.clone());
                        self.live_transcript_delta(st, &text);
                        st.timings.stt_done = Some(self.engine.now_ms());
                        let may_respond = st.config.turn_detection
                            && st.config.create_response
                            && st.response.is_none()
                            && !text.trim().is_empty();
                        if may_respond {
                            // Start the answer now; it is emitted on commit.
                            let id = self.engine.new_id("resp");
                            let _ = self.start_response(
                                st,
                                &ResponseOptions::default(),
                                Some(&text),
                                true,
                                id,
                            );
                        }
                        // A turn held for this transcript: commit it unless
                        // the words sound unfinished.
                        if st.held_turn.is_some() && !sounds_unfinished(&text) {
                            self.release_held(st);
                        }
                    }
                    Err(message) => {
                        if let Some(item_id) = spec.committed_item.clone() {
                            let duration_ms = committed_duration(st, &item_id);
                            st.spec = None;
                            self.transcript_ready(st, &item_id, Err(message), duration_ms, true);
                        } else {
                            st.spec = None;
                            self.release_held(st);
                        }
                    }
                }
            }
        }
    }
}

impl Shared {
    /// Send the part of `text` that extends what was already sent; deltas
    /// are append-only, so a revised beginning waits for the final transcript.
    fn send_live_delta(&self, st: &mut State, item_id: &str, text: &str) {
        if st.config.transcription.is_none() {
            return;
        }
        let text = text.trim();
        let Some(rest) = text.strip_prefix(st.live.sent.as_str()) else {
            return;
        };
        if rest.is_empty() {
            return;
        }
        text.clone_into(&mut st.live.sent);
        self.emit(EngineEvent::InputTranscriptDelta {
            item_id: item_id.to_owned(),
            delta: rest.to_owned(),
        });
    }
}

fn new_input(engine: &Engine, config: &SessionConfig) -> Result<AudioInput, SessionError> {
    let vad = match (&engine.vad, config.turn_detection) {
        (Some(model), true) => Some((Arc::clone(model), &config.vad)),
        _ => None,
    };
    AudioInput::new(config.input_rate, vad).map_err(|e| SessionError::Config(e.to_string()))
}

fn committed_duration(st: &State, item_id: &str) -> f64 {
    match st.conversation.get(item_id).map(|i| &i.kind) {
        Some(ItemKind::Message { content, .. }) => content
            .iter()
            .find_map(|c| match c {
                Content::InputAudio { duration_ms, .. } => Some(*duration_ms),
                _ => None,
            })
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

fn delta(from: Option<f64>, to: Option<f64>) -> f64 {
    match (from, to) {
        (Some(a), Some(b)) => ((b - a) * 10.0).round() / 10.0,
        _ => f64::NAN,
    }
}

/// What a transcription job is for.
#[derive(Debug, Clone)]
enum SttPurpose {
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

struct SttJob {
    session: Arc<Shared>,
    audio: Vec<f32>,
    options: SttOptions,
    purpose: SttPurpose,
    cancel: Cancel,
}

impl Job for SttJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled() || self.session.closed.load(Ordering::Acquire)
    }

    fn on_panic(&self) -> Option<PanicReport> {
        let session = Arc::clone(&self.session);
        let purpose = self.purpose.clone();
        let generation = self.cancel.generation();
        Some(Box::new(move |message| {
            let e = StageError::Panicked {
                stage: "stt",
                message,
            };
            session.on_stt(&purpose, generation, Err(e.to_string()));
        }))
    }

    fn run(self: Box<Self>) {
        let backend = Arc::clone(&self.session.engine.stt);
        let mut text = None;
        let mut emit = |o: SttOutput| {
            if let SttOutput::Final { text: t, .. } = o {
                text = Some(t);
            }
        };
        let result = backend.transcribe(&self.audio, &self.options, &self.cancel, &mut emit);
        if self.cancel.is_cancelled() {
            return;
        }
        let out = match result {
            Ok(()) => Ok(text.unwrap_or_default().trim().to_owned()),
            Err(e) => Err(e.to_string()),
        };
        self.session
            .on_stt(&self.purpose, self.cancel.generation(), out);
    }
}

struct LlmJob {
    session: Arc<Shared>,
    request: LlmRequest,
    response_id: String,
    cancel: Cancel,
}

impl Job for LlmJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn on_panic(&self) -> Option<PanicReport> {
        let session = Arc::clone(&self.session);
        let response_id = self.response_id.clone();
        Some(Box::new(move |message| {
            let e = StageError::Panicked {
                stage: "llm",
                message,
            };
            session.on_llm_done(&response_id, Err(e));
        }))
    }

    fn run(self: Box<Self>) {
        self.session.engine.note_llm_use(self.session.key());
        let backend = Arc::clone(&self.session.engine.llm);
        let session = Arc::clone(&self.session);
        let rid = self.response_id.clone();
        let cancel = self.cancel.clone();
        let mut emit = |o: LlmOutput| {
            if !cancel.is_cancelled() {
                session.on_llm_output(&rid, o);
            }
        };
        let result = backend.generate(&self.request, &self.cancel, &mut emit);
        self.session.engine.note_llm_use(self.session.key());
        if !self.cancel.is_cancelled() {
            self.session.on_llm_done(&self.response_id, result);
        }
    }
}

/// The LLM call of a response: the session's settings with the response's overrides.
fn llm_request(
    cfg: &SessionConfig,
    options: &ResponseOptions,
    messages: Vec<super::conversation::ChatMessage>,
) -> LlmRequest {
    let tool_choice = options
        .tool_choice
        .clone()
        .unwrap_or_else(|| cfg.tool_choice.clone());
    let tools = if tool_choice == ToolChoice::None {
        Vec::new()
    } else {
        options.tools.clone().unwrap_or_else(|| cfg.tools.clone())
    };
    LlmRequest {
        messages,
        tools,
        tool_choice,
        temperature: cfg.temperature,
        max_tokens: options.max_output_tokens.or(cfg.max_output_tokens),
    }
}

/// How long after another session's LLM job a prefill is not worth it.
const PREFILL_QUIET: Duration = Duration::from_secs(3);

struct PrefillJob {
    session: Arc<Shared>,
    request: LlmRequest,
    cancel: Cancel,
}

impl Job for PrefillJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled() || self.session.closed.load(Ordering::Acquire)
    }

    fn run(self: Box<Self>) {
        self.session.engine.note_llm_use(self.session.key());
        let started = std::time::Instant::now();
        match self.session.engine.llm.prefill(&self.request, &self.cancel) {
            Ok(()) => tracing::debug!(
                ms = started.elapsed().as_secs_f64() * 1000.0,
                messages = self.request.messages.len(),
                "LLM prefill"
            ),
            // The response that follows calls the model again and reports
            // any real failure to the client.
            Err(e) => tracing::warn!(error = %e, "LLM prefill failed"),
        }
    }
}

struct TtsJob {
    session: Arc<Shared>,
    response_id: String,
    index: usize,
    request: TtsRequest,
    cancel: Cancel,
    /// The response's LLM gate, closed until this clause's first chunk
    /// exists (the first clause only).
    gate: Option<Arc<Gate>>,
}

impl Job for TtsJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn on_panic(&self) -> Option<PanicReport> {
        let session = Arc::clone(&self.session);
        let response_id = self.response_id.clone();
        let gate = self.gate.clone();
        Some(Box::new(move |message| {
            if let Some(g) = &gate {
                g.open();
            }
            let e = StageError::Panicked {
                stage: "tts",
                message,
            };
            session.fail_response(&response_id, &e);
        }))
    }

    fn run(self: Box<Self>) {
        let backend = Arc::clone(&self.session.engine.tts);
        let session = Arc::clone(&self.session);
        let rid = self.response_id.clone();
        let cancel = self.cancel.clone();
        let index = self.index;
        let gate = self.gate.clone();
        if let Some(g) = &gate {
            g.close();
        }
        let mut emit = |c: TtsChunk| {
            if let Some(g) = &gate {
                g.open();
            }
            if !cancel.is_cancelled() {
                session.on_tts(&rid, index, Some(c), None);
            }
        };
        let result = backend.synthesize(&self.request, &self.cancel, &mut emit);
        if let Some(g) = &self.gate {
            g.open();
        }
        if !self.cancel.is_cancelled() {
            self.session
                .on_tts(&self.response_id, self.index, None, Some(result));
        }
    }
}

#[cfg(test)]
mod semantic_tests {
    use super::sounds_unfinished;

    #[test]
    fn unfinished_transcripts_are_recognised() {
        for t in [
            "I want to go to",
            "coffee and",
            "Well, um",
            "first,",
            "the weather in",
        ] {
            assert!(sounds_unfinished(t), "{t}");
        }
        for t in [
            "What is the capital of France?",
            "Thanks.",
            "level 42",
            "",
            "Paris",
        ] {
            assert!(!sounds_unfinished(t), "{t}");
        }
    }
}
