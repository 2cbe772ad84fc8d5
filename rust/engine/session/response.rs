//! Responses: start one, follow the LLM's output (text, clauses to speak,
//! tool calls), and finish it; a speculative response holds its events until
//! its turn commits.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::config::{ResponseOptions, SessionConfig};
use super::error::SessionError;
use super::handle::Session;
use super::jobs::{LlmJob, TtsJob};
use super::speech_out::{Speech, SpeechOut};
use super::state::{ActiveResponse, FinishedSpeculation, Shared, State, lock};
use crate::engine::backend::{
    Cancel, Gate, LlmOutput, LlmRequest, StageError, ToolChoice, TtsChunk, TtsRequest,
};
use crate::engine::conversation::{
    ChatMessage, Content, Conversation, Item, ItemKind, ItemStatus, Role,
};
use crate::engine::events::{EngineEvent, ResponseStatus, StopReason, TurnTimings, Usage};
use crate::engine::metrics::Latency;
use crate::engine::models::Stage;
use crate::engine::segmenter::Segmenter;

impl Session {
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
    /// Emit for a response: held back while the response is speculative.
    pub(super) fn emit_resp(&self, resp: &mut ActiveResponse, event: EngineEvent) {
        if let Some(held) = &mut resp.held {
            held.push(event);
        } else {
            self.out.emit(event);
        }
    }

    pub(super) fn start_response(
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
            // Its user turn not yet added: the window the prefill read ahead.
            None if pending_user_text.is_some() => {
                st.conversation.chat_prefix(instructions, cfg.chat_size)
            }
            None => st.conversation.chat_messages(instructions, cfg.chat_size),
        };
        if let Some(text) = pending_user_text {
            messages.push(ChatMessage {
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
            segmenter: Segmenter::for_response(self.engine.config().first_clause_max_words),
            speech: SpeechOut::new(cfg.output_rate),
            llm_done: false,
            later_calls: Vec::new(),
            usage: Usage::default(),
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
        if let Err(e) = self.engine.submit(Stage::Llm, Box::new(job)) {
            self.finish_response(st, ResponseStatus::Failed, None, Some(e.to_string()));
            return Err(e.into());
        }
        Ok(id)
    }

    /// The response `id` of generation `gen`, if it is still the active one.
    pub(super) fn live_response<'a>(st: &'a mut State, id: &str) -> Option<&'a mut ActiveResponse> {
        st.response.as_mut().filter(|r| r.id == id)
    }

    pub(super) fn ensure_message(&self, resp: &mut ActiveResponse, st_conv: &mut Conversation) {
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

    pub(super) fn on_llm_output(self: &Arc<Self>, response_id: &str, out: LlmOutput) {
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
    pub(super) fn tool_call(
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

    pub(super) fn speak_clause(self: &Arc<Self>, resp: &mut ActiveResponse, text: String) {
        let now = self.engine.now_ms();
        resp.timings.first_clause.get_or_insert(now);
        let index = resp.speech.add_clause(text.clone());
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
        if let Err(e) = self.engine.submit(Stage::Tts, Box::new(job)) {
            // The clause is lost (the transcript keeps what was spoken); mark
            // it done so the rest still plays, and say why.
            resp.speech.clause_done(index);
            tracing::warn!(session = %self.id, "TTS job refused: {e}");
            self.out.emit(EngineEvent::Error {
                kind: "server_error",
                code: "server_overloaded",
                message: format!("A clause was not spoken: {e}."),
            });
        }
    }

    /// Fail the response `response_id` if it is still the active one.
    pub(super) fn fail_response(self: &Arc<Self>, response_id: &str, e: &StageError) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        if Self::live_response(st, response_id).is_some() {
            self.finish_response(st, ResponseStatus::Failed, None, Some(e.to_string()));
        }
    }

    pub(super) fn on_llm_done(self: &Arc<Self>, response_id: &str, result: Result<(), StageError>) {
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

    pub(super) fn on_tts(
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
        if let Some(c) = chunk {
            resp.timings
                .tts_first_chunk
                .get_or_insert(self.engine.now_ms());
            resp.speech.push_chunk(index, c);
        }
        if let Some(r) = result {
            resp.speech.clause_done(index);
            if let Err(e) = r {
                // Speech with a hole in it is not an answer: the response
                // fails with an error naming the stage, as for the LLM.
                tracing::warn!(session = %self.id, "TTS failed on a clause: {e}");
                self.finish_response(st, ResponseStatus::Failed, None, Some(e.to_string()));
                return;
            }
        }
        self.pump_audio(st);
    }

    /// Send the speech that is ready, in clause order, and finish the
    /// response when everything is out.
    pub(super) fn pump_audio(self: &Arc<Self>, st: &mut State) {
        let Some(resp) = st.response.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        let all_out = resp.speech.pump(&mut out);
        self.send_speech(resp, out);
        if all_out && resp.llm_done {
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

    /// Speech output as the response's events.
    fn send_speech(&self, resp: &mut ActiveResponse, speech: Vec<Speech>) {
        let (item_id, output_index) = resp.message.clone().unwrap_or_default();
        for piece in speech {
            let response_id = resp.id.clone();
            let event = match piece {
                Speech::Transcript(delta) => EngineEvent::TranscriptDelta {
                    response_id,
                    item_id: item_id.clone(),
                    output_index,
                    delta,
                },
                Speech::Audio(samples) => {
                    resp.timings
                        .first_audio_out
                        .get_or_insert(self.engine.now_ms());
                    EngineEvent::AudioDelta {
                        response_id,
                        item_id: item_id.clone(),
                        output_index,
                        samples,
                    }
                }
                Speech::UnsupportedRate(message) => {
                    self.out.emit(EngineEvent::Error {
                        kind: "server_error",
                        code: "tts_unsupported_rate",
                        message,
                    });
                    continue;
                }
            };
            self.emit_resp(resp, event);
        }
    }

    pub(super) fn finish_response(
        self: &Arc<Self>,
        st: &mut State,
        status: ResponseStatus,
        reason: Option<StopReason>,
        error: Option<String>,
    ) {
        let Some(mut resp) = st.response.take() else {
            return;
        };
        // Stop the jobs of this response.
        self.resp_gen.fetch_add(1, Ordering::AcqRel);
        if status == ResponseStatus::Completed {
            let mut out = Vec::new();
            resp.speech.finish(&mut out);
            self.send_speech(&mut resp, out);
        } else {
            // Audio not sent was not heard: it is not part of the item.
            resp.speech.drop_unsent();
        }
        let item_status = if status == ResponseStatus::Completed {
            ItemStatus::Completed
        } else {
            ItemStatus::Incomplete
        };
        if let Some((item_id, output_index)) = resp.message.clone() {
            // Audio: the transcript is what was spoken. Text: what was written.
            let text = if resp.audio {
                resp.speech.transcript()
            } else {
                resp.text.clone()
            };
            let content = if resp.audio {
                Content::OutputAudio {
                    transcript: text.clone(),
                    duration_ms: resp.speech.audio_ms(),
                    clauses: resp.speech.spoken().to_vec(),
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

    /// A turn that wanted a response cannot have one (its transcript
    /// failed): a response that fails at once, with the error, so a client
    /// waiting for `response.done` is not left waiting.
    pub(super) fn fail_unanswered(&self, message: &str) {
        self.fail_at_once(self.engine.new_id("resp"), message);
    }

    /// A response that fails as soon as it is created (`response_id` may
    /// be one the client was already given, for a deferred response).
    pub(super) fn fail_at_once(&self, response_id: String, message: &str) {
        self.out.emit(EngineEvent::ResponseCreated {
            response_id: response_id.clone(),
        });
        self.out.emit(EngineEvent::Error {
            kind: "server_error",
            code: "response_failed",
            message: message.to_owned(),
        });
        self.out.emit(EngineEvent::ResponseDone {
            response_id,
            status: ResponseStatus::Failed,
            reason: None,
            output: Vec::new(),
            usage: Usage::default(),
            error: Some(message.to_owned()),
        });
    }

    pub(super) fn cancel_response(self: &Arc<Self>, st: &mut State, reason: StopReason) {
        self.finish_response(st, ResponseStatus::Cancelled, Some(reason), None);
    }

    /// Send a speculative response's held events now that its turn is
    /// committed. Its items join the conversation only here, after the
    /// user's item, and each `previous_item_id` says where they went.
    pub(super) fn release_held_events(
        &self,
        conversation: &mut Conversation,
        events: Vec<EngineEvent>,
    ) {
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
            self.out.emit(event);
        }
    }

    /// One log line with the turn's stage timings, and the timings event.
    pub(super) fn log_turn(&self, response_id: &str, status: ResponseStatus, t: TurnTimings) {
        if let (Some(speech_end), Some(audio_out)) = (t.speech_end, t.first_audio_out) {
            // The end of the voice in wall time, for a client streaming in real time.
            let offset = f64::from_bits(self.input_clock_offset_ms.load(Ordering::Relaxed));
            let ms = audio_out - (speech_end + offset);
            if ms.is_finite() && ms > 0.0 {
                self.engine.metrics().observe(
                    Latency::VoiceToVoice,
                    std::time::Duration::from_secs_f64(ms / 1000.0),
                );
            }
        }
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
        self.out.emit(EngineEvent::Timings {
            response_id: response_id.to_owned(),
            timings: t,
        });
    }
}

/// The LLM call of a response: the session's settings with the response's overrides.
pub(super) fn llm_request(
    cfg: &SessionConfig,
    options: &ResponseOptions,
    messages: Vec<ChatMessage>,
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

fn delta(from: Option<f64>, to: Option<f64>) -> f64 {
    match (from, to) {
        (Some(a), Some(b)) => ((b - a) * 10.0).round() / 10.0,
        _ => f64::NAN,
    }
}
