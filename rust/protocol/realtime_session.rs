//! One Realtime session over the engine: the protocol's session object,
//! client events applied to an engine [`Session`], engine events encoded for
//! the wire. Every Realtime transport (WebSocket, WebRTC's data channel) runs
//! this; the transport only moves messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client_events::{ClientEvent, parse_client_event};
use super::defaults::SessionDefaults;
use super::server_events::Encoder;
use super::session_object::{SessionState, TurnDetection};
use super::wire::{Dialect, ProtocolError};
use crate::engine::{Engine, EngineError, EngineEvent, Session, SessionConfig, SessionError};

/// One Realtime session: the protocol's session object and encoder over an
/// engine [`Session`]. Client events in ([`on_text`](Self::on_text)), wire
/// events out ([`drain`](Self::drain)); the transport only moves bytes.
pub struct RealtimeSession {
    session: Session,
    state: SessionState,
    enc: Encoder,
    dialect: Dialect,
    max_message_bytes: usize,
    /// Direct replies to client events, sent after the queued engine events.
    replies: Vec<Value>,
    idle_deadline: Option<Instant>,
    /// Whether the engine has a VAD (turn detection is possible).
    vad: bool,
    /// The server's settings, applied again on every `session.update`.
    defaults: SessionDefaults,
    /// Counter for ids of client items sent without one.
    client_ids: u64,
    /// Audio rides a media track at this rate (see [`OpenOptions::media_rate`]).
    media_rate: Option<u32>,
    /// The client asked to clear the track's audio (`output_audio_buffer.clear`).
    clear_requested: bool,
}

/// What a media transport (WebRTC) sends: events for the data channel and
/// output audio for the track, in the order the session produced them.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A wire event.
    Event(Value),
    /// Output audio at the media rate.
    Audio {
        /// The response it belongs to.
        response_id: String,
        /// The assistant message it is the audio of.
        item_id: String,
        /// Mono samples in [-1, 1].
        samples: Vec<f32>,
    },
}

/// Why a session could not be opened.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenRefusal {
    /// The engine serves its maximum number of sessions: try again later.
    SessionLimit,
    /// The session could not be created (a server fault).
    Failed,
}

/// The settings a Realtime session starts with.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The protocol dialect of the connection.
    pub dialect: Dialect,
    /// The model name the client connected with (reported back).
    pub model: String,
    /// Send per-turn timings (`?timings=1`, an extension).
    pub timings: bool,
    /// Largest client message answered normally.
    pub max_message_bytes: usize,
    /// Session configs (GA `session` objects) applied in order before
    /// `session.created`: an ephemeral key's, a call's `session` form field.
    /// One that does not apply is answered with an `error` after
    /// `session.created` and the session goes on without it.
    pub session: Vec<Value>,
    /// `Some(rate)`: the audio rides a media track (WebRTC) at `rate`, both
    /// ways. The session's audio formats then only describe the events,
    /// output audio comes out of [`RealtimeSession::drain_media`] instead of
    /// `response.output_audio.delta` events, `input_audio_buffer.append` is
    /// refused and `output_audio_buffer.clear` is accepted.
    pub media_rate: Option<u32>,
}

impl RealtimeSession {
    /// Open a session on `engine` with the server's `defaults`; returns it
    /// with its `session.created` event, or the `error` event to send and
    /// why the session was refused.
    pub fn open(
        engine: &Arc<Engine>,
        defaults: &SessionDefaults,
        options: OpenOptions,
    ) -> Result<(Self, Value), (Value, OpenRefusal)> {
        let OpenOptions {
            dialect,
            model,
            timings,
            max_message_bytes,
            session: configs,
            media_rate,
        } = options;
        let mut state = Self::starting_state(engine, defaults, "sess_pending", &model);
        let mut refused = Vec::new();
        for v in &configs {
            match Self::checked_update(&state, v, engine.has_vad()) {
                Ok(next) => state = next,
                Err(e) => refused.push(e),
            }
        }
        let mut config = SessionConfig::default();
        defaults.config_for(&state, &mut config);
        media_rates(media_rate, &mut config);
        let session = match engine.create_session(config) {
            Ok(s) => s,
            Err(e) => {
                let (kind, code, refusal) = match e {
                    EngineError::SessionLimit(_) => (
                        "invalid_request_error",
                        "session_limit_reached",
                        OpenRefusal::SessionLimit,
                    ),
                    _ => ("server_error", "session_failed", OpenRefusal::Failed),
                };
                let ev = Encoder::new(dialect, &state).error_code(kind, code, &e.to_string(), None);
                return Err((ev, refusal));
            }
        };
        session.id().clone_into(&mut state.id);
        let mut enc = Encoder::new(dialect, &state);
        enc.timings = timings;
        let mut rt = Self {
            enc,
            state,
            session,
            dialect,
            max_message_bytes,
            replies: Vec::new(),
            idle_deadline: None,
            vad: engine.has_vad(),
            defaults: defaults.clone(),
            client_ids: 0,
            media_rate,
            clear_requested: false,
        };
        for e in refused {
            let ev = rt.enc.error(&e, None);
            rt.replies.push(ev);
        }
        rt.reset_idle();
        let created = rt.enc.session_event("session.created", &rt.state);
        Ok((rt, created))
    }

    /// What a session on `engine` starts from before any client config:
    /// the server's defaults (push-to-talk without a VAD).
    pub fn starting_state(
        engine: &Engine,
        defaults: &SessionDefaults,
        id: &str,
        model: &str,
    ) -> SessionState {
        let mut state = defaults.seed(SessionState::new(id, model));
        if !engine.has_vad() {
            state.turn_detection = TurnDetection::Disabled;
        }
        state
    }

    /// `state` with the GA session config `v` applied, or why it cannot be:
    /// what a session opened with `v` in [`OpenOptions::session`] starts
    /// from. Turn detection needs a VAD (`has_vad`).
    pub fn checked_update(
        state: &SessionState,
        v: &Value,
        has_vad: bool,
    ) -> Result<SessionState, ProtocolError> {
        let mut next = state.clone();
        next.update(Dialect::Ga, v)?;
        if next.turn_detection != TurnDetection::Disabled && !has_vad {
            return Err(no_vad_error());
        }
        Ok(next)
    }

    /// The engine session underneath (for its notify hook and its close).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// An `error` event the transport sends on its own account.
    pub fn error_event(&mut self, kind: &str, code: &str, message: &str) -> Value {
        self.session.metrics().error(kind, code);
        self.enc.error_code(kind, code, message, None)
    }

    /// A binary frame: the Realtime protocol is JSON text.
    pub fn on_binary(&mut self) {
        let ev = self.enc.error_code(
            "invalid_request_error",
            "invalid_message",
            "Binary frames are not supported: send JSON text events.",
            None,
        );
        self.replies.push(ev);
    }
}

impl RealtimeSession {
    /// Move up to `max` queued engine events, then the direct replies to
    /// client events, into `out` as wire events; returns true when more
    /// engine events may be waiting (the transport comes back for them after
    /// looking at its socket).
    pub fn drain(&mut self, out: &mut Vec<Value>, max: usize) -> bool {
        let more = self.drain_engine(max, &mut |enc, ev| enc.engine_event(ev, out));
        out.append(&mut self.replies);
        more
    }

    /// [`drain`](Self::drain) for a media transport: output audio comes out
    /// as [`Outgoing::Audio`] (for the track), every other event as
    /// [`Outgoing::Event`], in the session's order.
    pub fn drain_media(&mut self, out: &mut Vec<Outgoing>, max: usize) -> bool {
        let mut events = Vec::new();
        let more = self.drain_engine(max, &mut |enc, ev| match ev {
            EngineEvent::AudioDelta {
                response_id,
                item_id,
                samples,
                ..
            } => out.push(Outgoing::Audio {
                response_id,
                item_id,
                samples,
            }),
            ev => {
                enc.engine_event(ev, &mut events);
                out.extend(events.drain(..).map(Outgoing::Event));
            }
        });
        out.extend(self.replies.drain(..).map(Outgoing::Event));
        more
    }

    fn drain_engine(
        &mut self,
        max: usize,
        each: &mut dyn FnMut(&mut Encoder, EngineEvent),
    ) -> bool {
        let mut n = 0;
        while n < max {
            let Some(ev) = self.session.try_next_event() else {
                break;
            };
            n += 1;
            self.observe(&ev);
            each(&mut self.enc, ev);
        }
        let metrics = self.session.metrics();
        for reply in &self.replies {
            // Engine errors were counted as the engine sent them; these are
            // the protocol's own answers (sent by the caller, after these).
            if reply["type"] == "error" {
                let e = &reply["error"];
                metrics.error(
                    e["type"].as_str().unwrap_or_default(),
                    e["code"].as_str().unwrap_or_default(),
                );
            }
        }
        n == max
    }

    /// Whether the client asked to clear the track's audio since the last
    /// call (`output_audio_buffer.clear`, media sessions only).
    pub fn take_clear_request(&mut self) -> bool {
        std::mem::take(&mut self.clear_requested)
    }

    /// Whether the user's speech cancels the response (`interrupt_response`
    /// of the turn detection): a media transport then also stops the
    /// audio still playing.
    pub fn interrupts(&self) -> bool {
        match self.state.turn_detection {
            TurnDetection::Disabled => false,
            TurnDetection::ServerVad {
                interrupt_response, ..
            }
            | TurnDetection::SemanticVad {
                interrupt_response, ..
            } => interrupt_response,
        }
    }

    /// A wire event built by the transport (`output_audio_buffer.*`): its
    /// `type` and fields; the encoder adds the `event_id`.
    pub fn transport_event(&mut self, kind: &str, body: Value) -> Value {
        self.enc.transport_event(kind, body)
    }

    /// Track what the idle timeout needs to know.
    fn observe(&mut self, ev: &EngineEvent) {
        match ev {
            EngineEvent::SpeechStarted { .. } | EngineEvent::ResponseCreated { .. } => {
                self.idle_deadline = None;
            }
            EngineEvent::ResponseDone { .. } => self.reset_idle(),
            _ => {}
        }
    }

    fn reset_idle(&mut self) {
        self.idle_deadline = self
            .state
            .turn_detection
            .idle_timeout_ms()
            .map(|ms| Instant::now() + Duration::from_millis(ms));
    }

    /// When the idle timeout fires, if it is armed: call [`on_idle`](Self::on_idle) then.
    pub fn idle_deadline(&self) -> Option<Instant> {
        self.idle_deadline
    }

    /// No speech for `idle_timeout_ms` after the last response: tell the
    /// client, and let the model prompt the user if responses are automatic.
    pub fn on_idle(&mut self) {
        self.idle_deadline = None;
        let end = self.session.input_position_ms() as u64;
        let start = end.saturating_sub(self.state.turn_detection.idle_timeout_ms().unwrap_or(0));
        let item_id = format!("item_idle_{end}");
        let ev = self.enc.timeout_triggered(start, end, &item_id);
        self.replies.push(ev);
        if let TurnDetection::ServerVad {
            create_response: true,
            ..
        } = self.state.turn_detection
            && !self.session.has_active_response()
            && let Err(e) = self
                .session
                .create_response(crate::engine::ResponseOptions::default())
        {
            self.session_error(&e, None);
        }
    }

    fn session_error(&mut self, e: &SessionError, event_id: Option<&str>) {
        let kind = if matches!(e, SessionError::Stage(_)) {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let ev = self
            .enc
            .error_code(kind, e.code(), &e.to_string(), event_id);
        self.replies.push(ev);
    }

    pub fn on_text(&mut self, text: &str) {
        if text.len() > self.max_message_bytes {
            let ev = self.enc.error_code(
                "invalid_request_error",
                "message_too_large",
                &format!(
                    "The message has {} bytes; the limit is {} (split long audio into several appends).",
                    text.len(),
                    self.max_message_bytes
                ),
                None,
            );
            self.replies.push(ev);
            return;
        }
        let sid = self.session.id().trim_start_matches("sess_").to_owned();
        let counter = &mut self.client_ids;
        let mut new_id = |prefix: &str| {
            *counter += 1;
            // Unique within the session; the engine's ids never use this form.
            format!("{prefix}_{sid}c{counter:X}")
        };
        match parse_client_event(text, self.dialect, &mut new_id) {
            Ok((event_id, ev)) => self.apply(event_id.as_deref(), ev),
            Err((event_id, e)) => {
                let ev = self.enc.error(&e, event_id.as_deref());
                self.replies.push(ev);
            }
        }
    }

    /// Take a validated `session.update` (or beta `transcription_session.update`):
    /// refuse turn detection without a VAD, hand it to the engine, answer it.
    fn change_session(
        &mut self,
        s: &Session,
        event_id: Option<&str>,
        next: Result<SessionState, ProtocolError>,
        transcription: bool,
    ) -> Result<(), SessionError> {
        let next = match next {
            Ok(next) => next,
            Err(e) => {
                let ev = self.enc.error(&e, event_id);
                self.replies.push(ev);
                return Ok(());
            }
        };
        if next.turn_detection != TurnDetection::Disabled && !self.vad {
            let ev = self.enc.error(&no_vad_error(), event_id);
            self.replies.push(ev);
            return Ok(());
        }
        let (defaults, media_rate) = (&self.defaults, self.media_rate);
        s.update_config(|c| {
            defaults.config_for(&next, c);
            media_rates(media_rate, c);
        })?;
        self.state = next;
        self.enc.set_session(&self.state);
        self.reset_idle();
        let ev = if transcription {
            self.enc.transcription_session_updated(&self.state)
        } else {
            self.enc.session_event("session.updated", &self.state)
        };
        self.replies.push(ev);
        Ok(())
    }

    fn apply(&mut self, event_id: Option<&str>, ev: ClientEvent) {
        let s = self.session.clone();
        let result: Result<(), SessionError> = match ev {
            ClientEvent::SessionUpdate(v) => {
                let mut next = self.state.clone();
                let checked = next.update(self.dialect, &v).map(|()| next);
                self.change_session(&s, event_id, checked, false)
            }
            ClientEvent::Append(_) if self.media_rate.is_some() => {
                let ev = self.enc.error_code(
                    "invalid_request_error",
                    "unsupported_event",
                    "Over WebRTC the input audio is the call's audio track: input_audio_buffer.append is for WebSocket connections.",
                    event_id,
                );
                self.replies.push(ev);
                Ok(())
            }
            ClientEvent::Append(bytes) => match self.state.input_format.decode(&bytes) {
                Ok(samples) if samples.is_empty() => Ok(()),
                Ok(samples) => {
                    // Long appends (seconds of audio at once) run the VAD for
                    // a while: keep that off the runtime's other tasks.
                    if samples.len() > self.state.input_format.rate() as usize {
                        tokio::task::block_in_place(|| s.feed_audio(&samples))
                    } else {
                        s.feed_audio(&samples)
                    }
                }
                Err(e) => {
                    let ev = self.enc.error(&e, event_id);
                    self.replies.push(ev);
                    return;
                }
            },
            ClientEvent::Commit => s.commit_buffer().map(|_| ()),
            ClientEvent::Clear => {
                s.clear_input();
                Ok(())
            }
            ClientEvent::ItemCreate {
                previous_item_id,
                item,
                audio: None,
            } => s.add_item(*item, previous_item_id.as_deref()),
            ClientEvent::ItemCreate {
                previous_item_id,
                item,
                audio: Some(bytes),
            } => match self.state.input_format.decode(&bytes) {
                Ok(samples) => {
                    let rate = self.state.input_format.rate();
                    let audio = to_stt_rate(&samples, rate);
                    s.add_audio_item(*item, previous_item_id.as_deref(), audio)
                }
                Err(e) => {
                    let ev = self.enc.error(&e, event_id);
                    self.replies.push(ev);
                    return;
                }
            },
            ClientEvent::ItemRetrieve(id) => s.item(&id).map(|item| {
                let ev = self.enc.item_retrieved(&item);
                self.replies.push(ev);
            }),
            ClientEvent::ItemTruncate {
                item_id,
                content_index,
                audio_end_ms,
            } => s.truncate_item(&item_id, content_index, audio_end_ms),
            ClientEvent::ItemDelete(id) => s.delete_item(&id),
            ClientEvent::ResponseCreate {
                mut options,
                metadata,
                references,
            } => {
                if let Some(input) = options.input.as_mut() {
                    for (pos, id) in references {
                        match s.item(&id) {
                            Ok(item) => input.insert(pos.min(input.len()), item),
                            Err(e) => {
                                self.session_error(&e, event_id);
                                return;
                            }
                        }
                    }
                }
                let audio = options.audio_output;
                let voice = options.voice.clone();
                let max = options.max_output_tokens;
                let oob = options.out_of_band;
                s.create_response(*options).map(|id| {
                    self.enc
                        .note_response(&id, metadata, audio, voice, max, oob);
                    self.idle_deadline = None;
                })
            }
            ClientEvent::ResponseCancel => {
                if !s.cancel_response() {
                    let ev = self.enc.error_code(
                        "invalid_request_error",
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                        event_id,
                    );
                    self.replies.push(ev);
                }
                Ok(())
            }
            ClientEvent::OutputAudioBufferClear if self.media_rate.is_some() => {
                self.clear_requested = true;
                Ok(())
            }
            ClientEvent::OutputAudioBufferClear => {
                let ev = self.enc.error_code(
                    "invalid_request_error",
                    "unsupported_event",
                    "output_audio_buffer.clear is only for WebRTC and SIP connections; over WebSocket the client owns playback: stop it and send conversation.item.truncate.",
                    event_id,
                );
                self.replies.push(ev);
                Ok(())
            }
            ClientEvent::TranscriptionSessionUpdate(v) => {
                let mut next = self.state.clone();
                let checked = next.update_transcription(&v).map(|()| next);
                self.change_session(&s, event_id, checked, true)
            }
        };
        if let Err(e) = result {
            self.session_error(&e, event_id);
        }
    }
}

/// The refusal of turn detection on a server without a VAD.
fn no_vad_error() -> ProtocolError {
    ProtocolError::value(
        "session.audio.input.turn_detection",
        "Turn detection needs a VAD model, and this server has none: use turn_detection null (push-to-talk).",
    )
}

/// A media session's audio runs at the track's rate both ways, whatever
/// formats its events describe.
fn media_rates(media_rate: Option<u32>, config: &mut SessionConfig) {
    if let Some(rate) = media_rate {
        config.input_rate = rate;
        config.output_rate = rate;
    }
}

/// Audio at `rate` as 16 kHz for STT (one-shot, with the resampler's tail).
fn to_stt_rate(samples: &[f32], rate: u32) -> Vec<f32> {
    let stt = crate::engine::STT_RATE;
    let Ok(mut r) = crate::audio::resample::Resampler::new(rate, stt) else {
        // Rates the resampler lacks were refused when the format was set.
        return samples.to_vec();
    };
    let mut out = vec![0.0; r.output_len_max(samples.len()) + r.flush_len()];
    let n = r.process_into(samples, &mut out).unwrap_or(0);
    let m = r.flush_into(&mut out[n..]).unwrap_or(0);
    out.truncate(n + m);
    out
}
