//! Transcription: the committed user turn's transcript, the speculative one
//! at the soft end, and live deltas while the user speaks.

use std::sync::{Arc, PoisonError};

use super::config::ResponseOptions;
use super::handle::Session;
use super::jobs::SttJob;
use super::state::{LiveTranscript, Shared, State, SttPurpose, lock};
use super::turns::sounds_unfinished;
use crate::engine::backend::Cancel;
use crate::engine::conversation::{Content, Item, ItemKind};
use crate::engine::events::EngineEvent;
use crate::engine::models::Stage;

impl Session {
    /// Start a live transcription of the speech so far when one is due.
    pub(super) fn maybe_live_transcribe(&self, position_ms: f64) {
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
        if sh.engine.submit(Stage::Stt, Box::new(job)).is_err() {
            st.live.in_flight = false;
        }
    }
}

impl Shared {
    pub(super) fn on_stt(
        self: &Arc<Self>,
        purpose: &SttPurpose,
        generation: u64,
        out: Result<String, String>,
    ) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        // An end-of-turn decision that waited for this transcript.
        let mut decision = None;
        match purpose {
            SttPurpose::Committed {
                item_id,
                duration_ms,
                respond,
            } => {
                st.pending_stt = st.pending_stt.saturating_sub(1);
                let failed = out.as_ref().err().cloned();
                self.transcript_ready(st, item_id, out, *duration_ms, *respond);
                if let Some(message) = failed
                    && st.response.is_none()
                    && let Some((id, _)) = st.deferred.take()
                {
                    // The response the client asked for waited for these
                    // words, which will never come: it fails, saying why,
                    // rather than answer without them.
                    self.fail_at_once(id, &message);
                } else if st.pending_stt == 0
                    && st.response.is_none()
                    && let Some((id, options)) = st.deferred.take()
                    && let Err(e) = self.start_response(st, &options, None, false, id)
                {
                    self.out.emit_error(&e);
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
                decision = spec.decision.take();
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
        if decision.is_some() {
            st.timings.decision = Some(self.engine.now_ms());
        }
        drop(guard);
        if let Some((decision, audio)) = decision {
            self.decide(decision, audio);
        }
    }

    /// A committed user item has its transcript (or its STT failed).
    pub(super) fn transcript_ready(
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
                        self.out.emit(EngineEvent::InputTranscriptDelta {
                            item_id: item_id.to_owned(),
                            delta: rest.to_owned(),
                        });
                    }
                    self.out.emit(EngineEvent::InputTranscriptCompleted {
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
                        resp.timings.decision = st.timings.decision;
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
                    t.decision = st.timings.decision;
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
                        self.out.emit_error(&e);
                    }
                }
            }
            Err(message) => {
                if want_events {
                    self.out.emit(EngineEvent::InputTranscriptFailed {
                        item_id: item_id.to_owned(),
                        message: message.clone(),
                    });
                }
                self.out.emit(EngineEvent::Error {
                    kind: "server_error",
                    code: "transcription_failed",
                    message: message.clone(),
                });
                // The turn wanted an answer: the client learns it failed, and why.
                if respond && st.config.create_response && st.response.is_none() {
                    self.fail_unanswered(&message);
                }
            }
        }
    }

    /// Live input transcription: a pause in the speech gave a transcript of
    /// the turn so far; send what it adds to what was sent.
    pub(super) fn live_transcript_delta(&self, st: &mut State, text: &str) {
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

    /// Send the part of `text` that extends what was already sent; deltas
    /// are append-only, so a revised beginning waits for the final transcript.
    pub(super) fn send_live_delta(&self, st: &mut State, item_id: &str, text: &str) {
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
        self.out.emit(EngineEvent::InputTranscriptDelta {
            item_id: item_id.to_owned(),
            delta: rest.to_owned(),
        });
    }
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
