//! The session handle: what every transport drives (audio and client
//! requests in, engine events out).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::config::SessionConfig;
use super::error::SessionError;
use super::outbox::Outbox;
use super::state::{LiveTranscript, Shared, State, lock};
use crate::engine::conversation::{Conversation, ConversationError, Item};
use crate::engine::events::{EngineEvent, TurnTimings};
use crate::engine::input::{AudioInput, TurnInput};
use crate::engine::metrics::Latency;
use crate::engine::models::{Engine, EngineError};

/// A handle to one session; cheap to clone.
#[derive(Clone)]
pub struct Session(pub(super) Arc<Shared>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.0.id).finish()
    }
}

impl Engine {
    /// Open a session, unless `max_sessions` are open already.
    pub fn create_session(self: &Arc<Self>, config: SessionConfig) -> Result<Session, EngineError> {
        if !self.admit_session() {
            return Err(EngineError::SessionLimit(self.config().max_sessions));
        }
        Session::new(
            Arc::clone(self),
            config,
            self.config().session_event_capacity,
        )
        .map_err(|e| {
            self.session_closed();
            EngineError::InvalidConfig(e.to_string())
        })
    }
}

impl Session {
    pub(crate) fn new(
        engine: Arc<Engine>,
        config: SessionConfig,
        event_capacity: usize,
    ) -> Result<Self, SessionError> {
        let id = engine.new_id("sess");
        let out = Outbox::new(event_capacity, Arc::clone(engine.metrics()))?;
        let input = new_input(&engine, &config)?;
        engine.session_object_created();
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
            out,
            resp_gen: Arc::new(AtomicU64::new(0)),
            spec_gen: Arc::new(AtomicU64::new(0)),
            input_clock_offset_ms: AtomicU64::new(0),
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
            || next.end_of_turn != st.config.end_of_turn
        {
            let input = new_input(&self.0.engine, &next)?;
            *self.0.input.lock().unwrap_or_else(PoisonError::into_inner) = input;
        } else if next.noise_reduction != st.config.noise_reduction {
            // Only the suppressor changes: the open turn is kept.
            self.0
                .input
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .set_noise_reduction(next.noise_reduction)
                .map_err(|e| SessionError::Config(e.to_string()))?;
        }
        st.config = next;
        Ok(())
    }

    /// Feed input audio (mono float32 at the session's input rate). With turn
    /// detection the VAD runs here and turn events follow; without it the
    /// audio is buffered for [`commit_buffer`](Self::commit_buffer).
    pub fn feed_audio(&self, samples: &[f32]) -> Result<(), SessionError> {
        let arrived = Instant::now();
        let mut turns = Vec::new();
        let (position_ms, guarded) = {
            let mut input = self.0.input.lock().unwrap_or_else(PoisonError::into_inner);
            input
                .feed(samples, &mut turns)
                .map_err(|e| SessionError::Audio(e.to_string()))?;
            (input.position_ms(), input.take_guarded_burst())
        };
        if let Some(ms) = guarded {
            tracing::info!(
                "{} {ms} ms of speech while the answer played, shorter than the barge-in \
                 minimum: not an interruption",
                self.id()
            );
        }
        let offset = self.0.engine.now_ms() - position_ms;
        self.0
            .input_clock_offset_ms
            .store(offset.to_bits(), Ordering::Relaxed);
        let decided = turns.iter().any(|t| {
            matches!(
                t,
                TurnInput::SpeechStarted { .. } | TurnInput::SpeechStopped { .. }
            )
        });
        for t in turns {
            self.turn_event(t);
        }
        if decided {
            self.0
                .engine
                .metrics()
                .observe(Latency::VadDecision, arrived.elapsed());
        }
        self.maybe_live_transcribe(position_ms);
        self.release_held_turn(false);
        Ok(())
    }

    /// Speech must last `ms` before it starts a turn, until this is called
    /// again with 0 (turn detection only; see
    /// [`TurnDetector::set_speech_guard`](crate::vad::TurnDetector::set_speech_guard)).
    /// A transport that plays the answer itself raises it while the answer
    /// is audible, so that what is left of its echo cannot barge in.
    pub fn set_speech_guard_ms(&self, ms: f64) {
        self.0
            .input
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_speech_guard_ms(ms);
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
        self.0.out.set_notify(f);
    }

    /// The next event, waiting up to `timeout` (`None`: forever).
    /// `None` when the wait timed out or the session is closed and drained.
    pub fn next_event(&self, timeout: Option<Duration>) -> Option<EngineEvent> {
        self.0.out.next(timeout)
    }

    /// Whether events wait in the session's queue.
    pub fn has_queued_events(&self) -> bool {
        self.0.out.len() > 0
    }

    /// The next event if one is queued.
    pub fn try_next_event(&self) -> Option<EngineEvent> {
        self.0.out.try_next()
    }

    /// Whether the transport fell so far behind that events were lost; the
    /// transport should close the connection with an error.
    pub fn overflowed(&self) -> bool {
        self.0.out.overflowed()
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

    /// Whether a response runs or is about to (a committed turn is still
    /// being transcribed, or a `response.create` waits for it): a draining
    /// server lets such a session finish before closing it.
    pub fn is_busy(&self) -> bool {
        let st = lock(&self.0.state);
        st.response.as_ref().is_some_and(|r| r.held.is_none())
            || st.pending_stt > 0
            || st.deferred.is_some()
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Arc<crate::engine::metrics::Metrics> {
        self.0.engine.metrics()
    }

    /// Whether a speculative answer finished before its turn committed and
    /// waits, unsent, for the commit (or for resumed speech to drop it).
    pub fn has_finished_speculation(&self) -> bool {
        lock(&self.0.state).finished_spec.is_some()
    }

    /// End the session: cancel its work and wake its event reader.
    pub fn close(&self) {
        if !self.0.out.close() {
            return;
        }
        self.0.resp_gen.fetch_add(1, Ordering::AcqRel);
        self.0.spec_gen.fetch_add(1, Ordering::AcqRel);
        lock(&self.0.state).response = None;
        self.0.engine.forget_llm_use(self.0.key());
        self.0.engine.session_closed();
    }

    /// Whether the session was closed.
    pub fn is_closed(&self) -> bool {
        self.0.out.is_closed()
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
        sh.out.emit(EngineEvent::InputCleared);
    }
}

pub(super) fn new_input(
    engine: &Engine,
    config: &SessionConfig,
) -> Result<AudioInput, SessionError> {
    let vad = match (engine.vad(), config.turn_detection) {
        (Some(model), true) => Some((Arc::clone(model), &config.vad)),
        _ => None,
    };
    let end_of_turn = config
        .end_of_turn
        .clone()
        .filter(|_| engine.has_turn_model() && vad.is_some());
    let mut input = AudioInput::new(config.input_rate, vad, end_of_turn)
        .map_err(|e| SessionError::Config(e.to_string()))?;
    input
        .set_noise_reduction(config.noise_reduction)
        .map_err(|e| SessionError::Config(e.to_string()))?;
    Ok(input)
}
