//! Server events: engine events to Realtime JSON, in the connection's dialect.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Value, json};

use super::session_object::{AudioFormat, SessionState};
use super::wire::{Dialect, ProtocolError};
use crate::engine::conversation::{Content, Item, ItemKind};
use crate::engine::events::{EngineEvent, ResponseStatus, StopReason, Usage};

/// What `response.create` asked for, echoed on the response object.
#[derive(Debug, Clone, PartialEq)]
struct ResponseMeta {
    metadata: Value,
    audio: bool,
    voice: String,
    max_output_tokens: Option<u32>,
    out_of_band: bool,
}

/// Null fields that mean something, and that `OpenAI` sends as null: the
/// first item has no previous item, and push-to-talk has no turn detection.
const MEANINGFUL_NULLS: [&str; 2] = ["previous_item_id", "turn_detection"];

/// Drop the fields that are `null` because nothing set them: `OpenAI` omits
/// an optional field it has no value for, and strict clients refuse a null
/// (or a key) their types do not have. See [`MEANINGFUL_NULLS`].
fn prune_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, x| !x.is_null() || MEANINGFUL_NULLS.contains(&k.as_str()));
            for x in map.values_mut() {
                prune_nulls(x);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

/// The session resource of `POST /v1/realtime/client_secrets` (the SDK's
/// `RealtimeSessionCreateResponse`): the GA session object with its `id`,
/// `object` and `expires_at`, unset fields left out.
pub fn session_resource(s: &SessionState, expires_at: u64) -> Value {
    let mut v = s.to_json(Dialect::Ga);
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(s.id));
        o.insert("object".into(), json!("realtime.session"));
        o.insert("expires_at".into(), json!(expires_at));
    }
    prune_nulls(&mut v);
    v
}

/// Turns engine events into wire events for one connection.
#[derive(Debug)]
pub struct Encoder {
    dialect: Dialect,
    prefix: String,
    next: u64,
    /// The session settings responses default to.
    session: SessionState,
    responses: HashMap<String, ResponseMeta>,
    /// Send each turn's per-stage timings as `speech_to_speech.turn.timings`
    /// (an extension, only for clients that ask with `?timings=1`: strict
    /// clients refuse event types they do not know).
    pub timings: bool,
}

impl Encoder {
    /// An encoder for a connection; `session` is the initial session state.
    pub fn new(dialect: Dialect, session: &SessionState) -> Self {
        // Event ids only need to be unique; derive them from the session id.
        let tail = session.id.strip_prefix("sess_").unwrap_or(&session.id);
        Self {
            dialect,
            prefix: format!("event_{tail}"),
            next: 0,
            session: session.clone(),
            responses: HashMap::new(),
            timings: false,
        }
    }

    /// The connection's dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Keep the encoder's copy of the session settings current.
    pub fn set_session(&mut self, session: &SessionState) {
        self.session.clone_from(session);
    }

    /// The output audio format.
    pub fn output_format(&self) -> AudioFormat {
        self.session.output_format
    }

    /// Remember the overrides of a client-created response.
    pub fn note_response(
        &mut self,
        response_id: &str,
        metadata: Value,
        audio: Option<bool>,
        voice: Option<String>,
        max_output_tokens: Option<u32>,
        out_of_band: bool,
    ) {
        self.responses.insert(
            response_id.to_owned(),
            ResponseMeta {
                metadata,
                audio: audio.unwrap_or(self.session.audio_output),
                voice: voice.unwrap_or_else(|| self.session.voice.clone()),
                max_output_tokens: max_output_tokens.or(self.session.max_output_tokens),
                out_of_band,
            },
        );
    }

    /// A fresh `event_...` id.
    pub fn event_id(&mut self) -> String {
        self.next += 1;
        format!("{}{:06X}", self.prefix, self.next)
    }

    fn ev(&mut self, kind: &str, mut body: Value) -> Value {
        let id = self.event_id();
        prune_nulls(&mut body);
        if let Some(o) = body.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("event_id".into(), json!(id));
        }
        body
    }

    /// `session.created` or `session.updated`.
    pub fn session_event(&mut self, kind: &str, s: &SessionState) -> Value {
        let session = s.to_json(self.dialect);
        self.ev(kind, json!({ "session": session }))
    }

    /// An event a transport builds on its own account (WebRTC's
    /// `output_audio_buffer.started` / `.stopped` / `.cleared`): `body`'s
    /// fields with the `type` and a fresh `event_id`.
    pub fn transport_event(&mut self, kind: &str, body: Value) -> Value {
        self.ev(kind, body)
    }

    /// `transcription_session.updated` (beta).
    pub fn transcription_session_updated(&mut self, s: &SessionState) -> Value {
        let session = s.transcription_json();
        self.ev(
            "transcription_session.updated",
            json!({ "session": session }),
        )
    }

    /// An `error` event for a refused client event.
    pub fn error(&mut self, e: &ProtocolError, client_event_id: Option<&str>) -> Value {
        let body = e.to_error_body(client_event_id);
        self.ev("error", json!({ "error": body }))
    }

    /// An `error` event with a code and message.
    pub fn error_code(
        &mut self,
        kind: &str,
        code: &str,
        message: &str,
        client_event_id: Option<&str>,
    ) -> Value {
        self.ev(
            "error",
            json!({"error": {
                "type": kind, "code": code, "message": message,
                "param": null, "event_id": client_event_id,
            }}),
        )
    }

    /// `conversation.item.retrieved`.
    pub fn item_retrieved(&mut self, item: &Item) -> Value {
        let item = self.item(item);
        self.ev("conversation.item.retrieved", json!({ "item": item }))
    }

    /// `input_audio_buffer.timeout_triggered`.
    pub fn timeout_triggered(
        &mut self,
        audio_start_ms: u64,
        audio_end_ms: u64,
        item_id: &str,
    ) -> Value {
        self.ev(
            "input_audio_buffer.timeout_triggered",
            json!({"audio_start_ms": audio_start_ms, "audio_end_ms": audio_end_ms, "item_id": item_id}),
        )
    }

    fn name(&self, ga: &'static str, beta: &'static str) -> &'static str {
        match self.dialect {
            Dialect::Ga => ga,
            Dialect::Beta => beta,
        }
    }

    /// An item in the dialect's shape.
    pub fn item(&self, item: &Item) -> Value {
        let ga = self.dialect == Dialect::Ga;
        let status = item.status.as_str();
        match &item.kind {
            ItemKind::Message { role, content } => {
                let parts: Vec<Value> = content
                    .iter()
                    .map(|c| match c {
                        Content::InputText(t) => json!({"type": "input_text", "text": t}),
                        Content::InputAudio { transcript, .. } => {
                            json!({"type": "input_audio", "transcript": transcript})
                        }
                        Content::OutputText(t) => {
                            json!({"type": if ga { "output_text" } else { "text" }, "text": t})
                        }
                        Content::OutputAudio { transcript, .. } => json!({
                            "type": if ga { "output_audio" } else { "audio" },
                            "transcript": transcript,
                        }),
                    })
                    .collect();
                json!({
                    "id": item.id, "object": "realtime.item", "type": "message",
                    "status": status, "role": role.as_str(), "content": parts,
                })
            }
            ItemKind::FunctionCall {
                call_id,
                name,
                arguments,
            } => json!({
                "id": item.id, "object": "realtime.item", "type": "function_call",
                "status": status, "call_id": call_id, "name": name, "arguments": arguments,
            }),
            ItemKind::FunctionCallOutput { call_id, output } => json!({
                "id": item.id, "object": "realtime.item", "type": "function_call_output",
                "status": status, "call_id": call_id, "output": output,
            }),
        }
    }

    fn response(
        &self,
        id: &str,
        status: &str,
        status_details: Value,
        output: &[Item],
        usage: Option<Usage>,
    ) -> Value {
        let meta = self.responses.get(id);
        let audio = meta.map_or(self.session.audio_output, |m| m.audio);
        let voice = meta.map_or(self.session.voice.as_str(), |m| m.voice.as_str());
        let max_tokens = meta.map_or(self.session.max_output_tokens, |m| m.max_output_tokens);
        let max_tokens = max_tokens.map_or_else(|| json!("inf"), |n| json!(n));
        let metadata = meta.map_or(Value::Null, |m| m.metadata.clone());
        let conversation_id = if meta.is_some_and(|m| m.out_of_band) {
            Value::Null
        } else {
            json!(format!("conv_{}", self.prefix.trim_start_matches("event_")))
        };
        let output: Vec<Value> = output.iter().map(|i| self.item(i)).collect();
        let usage = usage.map(|u| {
            json!({
                "total_tokens": u.input_tokens + u.output_tokens,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "input_token_details": {"text_tokens": u.input_tokens, "audio_tokens": 0, "cached_tokens": 0},
                "output_token_details": {
                    "text_tokens": if audio { 0 } else { u.output_tokens },
                    "audio_tokens": if audio { u.output_tokens } else { 0 },
                },
            })
        });
        let format = self.session.output_format;
        match self.dialect {
            Dialect::Ga => {
                let format = match format {
                    AudioFormat::Pcm(rate) => json!({"type": "audio/pcm", "rate": rate}),
                    AudioFormat::Pcmu => json!({"type": "audio/pcmu"}),
                    AudioFormat::Pcma => json!({"type": "audio/pcma"}),
                };
                json!({
                    "id": id, "object": "realtime.response", "status": status,
                    "status_details": status_details, "output": output, "usage": usage,
                    "conversation_id": conversation_id,
                    "output_modalities": if audio { json!(["audio"]) } else { json!(["text"]) },
                    "max_output_tokens": max_tokens,
                    "audio": {"output": {"format": format, "voice": voice}},
                    "metadata": metadata,
                })
            }
            Dialect::Beta => {
                let format = match format {
                    AudioFormat::Pcm(_) => "pcm16",
                    AudioFormat::Pcmu => "g711_ulaw",
                    AudioFormat::Pcma => "g711_alaw",
                };
                json!({
                    "id": id, "object": "realtime.response", "status": status,
                    "status_details": status_details, "output": output, "usage": usage,
                    "conversation_id": conversation_id,
                    "modalities": if audio { json!(["audio", "text"]) } else { json!(["text"]) },
                    "voice": voice, "output_audio_format": format,
                    "temperature": self.session.temperature.unwrap_or(0.8),
                    "max_output_tokens": max_tokens, "metadata": metadata,
                })
            }
        }
    }

    /// Append the wire events for one engine event (none, one or several).
    pub fn engine_event(&mut self, ev: EngineEvent, out: &mut Vec<Value>) {
        match ev {
            EngineEvent::SpeechStarted {
                item_id,
                audio_start_ms,
            } => out.push(self.ev(
                "input_audio_buffer.speech_started",
                json!({"audio_start_ms": audio_start_ms, "item_id": item_id}),
            )),
            EngineEvent::SpeechStopped {
                item_id,
                audio_end_ms,
            } => out.push(self.ev(
                "input_audio_buffer.speech_stopped",
                json!({"audio_end_ms": audio_end_ms, "item_id": item_id}),
            )),
            EngineEvent::InputCommitted {
                item_id,
                previous_item_id,
            } => out.push(self.ev(
                "input_audio_buffer.committed",
                json!({"item_id": item_id, "previous_item_id": previous_item_id}),
            )),
            EngineEvent::InputCleared => out.push(self.ev("input_audio_buffer.cleared", json!({}))),
            EngineEvent::InputTranscriptDelta { item_id, delta } => out.push(self.ev(
                "conversation.item.input_audio_transcription.delta",
                json!({"item_id": item_id, "content_index": 0, "delta": delta}),
            )),
            EngineEvent::InputTranscriptCompleted {
                item_id,
                transcript,
                audio_seconds,
            } => {
                let seconds = (audio_seconds * 1000.0).round() / 1000.0;
                out.push(self.ev(
                    "conversation.item.input_audio_transcription.completed",
                    json!({
                        "item_id": item_id, "content_index": 0, "transcript": transcript,
                        "usage": {"type": "duration", "seconds": seconds},
                    }),
                ));
            }
            EngineEvent::InputTranscriptFailed { item_id, message } => out.push(self.ev(
                "conversation.item.input_audio_transcription.failed",
                json!({
                    "item_id": item_id, "content_index": 0,
                    "error": {"type": "transcription_error", "code": "transcription_failed", "message": message, "param": null},
                }),
            )),
            EngineEvent::Error {
                kind,
                code,
                message,
            } => out.push(self.error_code(kind, code, &message, None)),
            EngineEvent::Timings {
                response_id,
                timings: t,
            } if self.timings => {
                let ms = |v: Option<f64>| v.map(|x| (x * 10.0).round() / 10.0);
                out.push(self.ev(
                    "speech_to_speech.turn.timings",
                    json!({
                        "response_id": response_id,
                        "timings": {
                            "speech_end_audio_ms": t.speech_end,
                            "soft_end_ms": ms(t.soft_end),
                            "decision_ms": ms(t.decision),
                            "commit_ms": ms(t.commit),
                            "stt_done_ms": ms(t.stt_done),
                            "llm_first_token_ms": ms(t.llm_first_token),
                            "first_clause_ms": ms(t.first_clause),
                            "tts_first_chunk_ms": ms(t.tts_first_chunk),
                            "first_audio_out_ms": ms(t.first_audio_out),
                            "speculative": t.speculative,
                        },
                    }),
                ));
            }
            // Timings are otherwise for the server's log only.
            EngineEvent::Timings { .. } => {}
            ev @ (EngineEvent::ItemAdded { .. }
            | EngineEvent::ItemDone { .. }
            | EngineEvent::ItemDeleted { .. }
            | EngineEvent::ItemTruncated { .. }) => self.item_event(ev, out),
            ev => self.response_event(ev, out),
        }
    }

    /// The conversation item events.
    fn item_event(&mut self, ev: EngineEvent, out: &mut Vec<Value>) {
        match ev {
            EngineEvent::ItemAdded {
                item,
                previous_item_id,
            } => {
                let item = self.item(&item);
                let name = self.name("conversation.item.added", "conversation.item.created");
                out.push(self.ev(
                    name,
                    json!({"item": item, "previous_item_id": previous_item_id}),
                ));
            }
            // Beta has no `conversation.item.done`.
            EngineEvent::ItemDone {
                item,
                previous_item_id,
            } if self.dialect == Dialect::Ga => {
                let item = self.item(&item);
                out.push(self.ev(
                    "conversation.item.done",
                    json!({"item": item, "previous_item_id": previous_item_id}),
                ));
            }
            EngineEvent::ItemDeleted { item_id } => {
                out.push(self.ev("conversation.item.deleted", json!({"item_id": item_id})));
            }
            EngineEvent::ItemTruncated {
                item_id,
                content_index,
                audio_end_ms,
            } => out.push(self.ev(
                "conversation.item.truncated",
                json!({"item_id": item_id, "content_index": content_index, "audio_end_ms": audio_end_ms}),
            )),
            _ => {}
        }
    }

    /// The events of a response.
    fn response_event(&mut self, ev: EngineEvent, out: &mut Vec<Value>) {
        match ev {
            EngineEvent::ResponseCreated { response_id } => {
                let response = self.response(&response_id, "in_progress", Value::Null, &[], None);
                out.push(self.ev("response.created", json!({ "response": response })));
            }
            EngineEvent::OutputItemAdded {
                response_id,
                output_index,
                item,
            } => {
                let item = self.item(&item);
                out.push(self.ev(
                    "response.output_item.added",
                    json!({"response_id": response_id, "output_index": output_index, "item": item}),
                ));
            }
            EngineEvent::FunctionCallArgumentsDelta {
                response_id,
                item_id,
                output_index,
                call_id,
                delta,
            } => out.push(self.ev(
                "response.function_call_arguments.delta",
                json!({
                    "response_id": response_id, "item_id": item_id,
                    "output_index": output_index, "call_id": call_id, "delta": delta,
                }),
            )),
            EngineEvent::FunctionCallArgumentsDone {
                response_id,
                item_id,
                output_index,
                call_id,
                name,
                arguments,
            } => {
                let mut body = json!({
                    "response_id": response_id, "item_id": item_id, "output_index": output_index,
                    "call_id": call_id, "arguments": arguments,
                });
                // GA names the function here; beta's event has no `name`.
                if let (Dialect::Ga, Some(o)) = (self.dialect, body.as_object_mut()) {
                    o.insert("name".into(), json!(name));
                }
                out.push(self.ev("response.function_call_arguments.done", body));
            }
            EngineEvent::OutputItemDone {
                response_id,
                output_index,
                item,
            } => {
                let item = self.item(&item);
                out.push(self.ev(
                    "response.output_item.done",
                    json!({"response_id": response_id, "output_index": output_index, "item": item}),
                ));
            }
            EngineEvent::ResponseDone {
                response_id,
                status,
                reason,
                output,
                usage,
                error,
            } => {
                let details = match status {
                    ResponseStatus::Completed => Value::Null,
                    ResponseStatus::Cancelled | ResponseStatus::Incomplete => json!({
                        "type": status.as_str(),
                        "reason": reason.unwrap_or(StopReason::ClientCancelled).as_str(),
                    }),
                    ResponseStatus::Failed => json!({
                        "type": "failed",
                        "error": {"type": "server_error", "code": "response_failed", "message": error.unwrap_or_default()},
                    }),
                };
                let response =
                    self.response(&response_id, status.as_str(), details, &output, Some(usage));
                self.responses.remove(&response_id);
                out.push(self.ev("response.done", json!({ "response": response })));
            }
            ev => self.content_event(ev, out),
        }
    }

    /// The events of a message's content: its audio, transcript or text.
    fn content_event(&mut self, ev: EngineEvent, out: &mut Vec<Value>) {
        match ev {
            EngineEvent::ContentPartAdded {
                response_id,
                item_id,
                output_index,
                audio,
            } => {
                let part = if audio {
                    json!({"type": "audio", "transcript": ""})
                } else {
                    json!({"type": "text", "text": ""})
                };
                out.push(self.ev(
                    "response.content_part.added",
                    json!({
                        "response_id": response_id, "item_id": item_id,
                        "output_index": output_index, "content_index": 0, "part": part,
                    }),
                ));
            }
            EngineEvent::AudioDelta {
                response_id,
                item_id,
                output_index,
                samples,
            } => {
                let bytes = self.session.output_format.encode(&samples);
                let delta = base64::engine::general_purpose::STANDARD.encode(bytes);
                let name = self.name("response.output_audio.delta", "response.audio.delta");
                out.push(self.ev(
                    name,
                    json!({
                        "response_id": response_id, "item_id": item_id,
                        "output_index": output_index, "content_index": 0, "delta": delta,
                    }),
                ));
            }
            EngineEvent::TranscriptDelta {
                response_id,
                item_id,
                output_index,
                delta,
            } => {
                let name = self.name(
                    "response.output_audio_transcript.delta",
                    "response.audio_transcript.delta",
                );
                out.push(self.ev(
                    name,
                    json!({
                        "response_id": response_id, "item_id": item_id,
                        "output_index": output_index, "content_index": 0, "delta": delta,
                    }),
                ));
            }
            EngineEvent::TextDelta {
                response_id,
                item_id,
                output_index,
                delta,
            } => {
                let name = self.name("response.output_text.delta", "response.text.delta");
                out.push(self.ev(
                    name,
                    json!({
                        "response_id": response_id, "item_id": item_id,
                        "output_index": output_index, "content_index": 0, "delta": delta,
                    }),
                ));
            }
            EngineEvent::ContentPartDone {
                response_id,
                item_id,
                output_index,
                audio,
                text,
            } => {
                let base = json!({
                    "response_id": response_id, "item_id": item_id,
                    "output_index": output_index, "content_index": 0,
                });
                let with = |extra: Value| {
                    let mut b = base.clone();
                    if let (Some(o), Value::Object(e)) = (b.as_object_mut(), extra) {
                        o.extend(e);
                    }
                    b
                };
                if audio {
                    let name = self.name("response.output_audio.done", "response.audio.done");
                    out.push(self.ev(name, with(json!({}))));
                    let name = self.name(
                        "response.output_audio_transcript.done",
                        "response.audio_transcript.done",
                    );
                    out.push(self.ev(name, with(json!({ "transcript": text }))));
                    out.push(self.ev(
                        "response.content_part.done",
                        with(json!({"part": {"type": "audio", "transcript": text}})),
                    ));
                } else {
                    let name = self.name("response.output_text.done", "response.text.done");
                    out.push(self.ev(name, with(json!({ "text": text }))));
                    out.push(self.ev(
                        "response.content_part.done",
                        with(json!({"part": {"type": "text", "text": text}})),
                    ));
                }
            }
            _ => {}
        }
    }
}
