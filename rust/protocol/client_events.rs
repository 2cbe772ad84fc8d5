//! Client events: parse and validate the 11 Realtime client events of either dialect.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::session_object::{
    parse_max_tokens, parse_modalities, parse_tool_choice, parse_tools, tool_from_json,
};
use super::wire::field::{self, get};
use super::wire::{Dialect, ProtocolError};
use crate::engine::ResponseOptions;
use crate::engine::conversation::{Content, Item, ItemKind, ItemStatus, Role};

/// `item_reference` entries of `response.input`: (position in the final
/// input, referenced item id), in ascending position.
pub type ItemReferences = Vec<(usize, String)>;

/// A parsed client event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// `session.update` (the `session` object, validated on apply).
    SessionUpdate(Value),
    /// `input_audio_buffer.append`, base64-decoded.
    Append(Vec<u8>),
    /// `input_audio_buffer.commit`.
    Commit,
    /// `input_audio_buffer.clear`.
    Clear,
    /// `conversation.item.create`.
    ItemCreate {
        /// Insert after this item (`None`: append).
        previous_item_id: Option<String>,
        /// The item (with an id, generated when the client gave none).
        item: Box<Item>,
        /// Base64-decoded audio of an `input_audio` part without a
        /// transcript, in the session's input format: to be transcribed.
        audio: Option<Vec<u8>>,
    },
    /// `conversation.item.retrieve`.
    ItemRetrieve(String),
    /// `conversation.item.truncate`.
    ItemTruncate {
        /// The assistant item.
        item_id: String,
        /// Its content part.
        content_index: usize,
        /// Audio heard, ms.
        audio_end_ms: u64,
    },
    /// `conversation.item.delete`.
    ItemDelete(String),
    /// `response.create` with its overrides.
    ResponseCreate {
        /// The engine options.
        options: Box<ResponseOptions>,
        /// `metadata`, echoed on the response.
        metadata: Value,
        /// `item_reference` entries of `input`.
        references: ItemReferences,
    },
    /// `response.cancel`.
    ResponseCancel,
    /// `output_audio_buffer.clear` (WebRTC/SIP only).
    OutputAudioBufferClear,
    /// `transcription_session.update` (beta): the `session` object.
    TranscriptionSessionUpdate(Value),
}

/// Parse one text frame. The error carries the client's `event_id` when it
/// could be read.
pub fn parse_client_event(
    text: &str,
    dialect: Dialect,
    new_id: &mut dyn FnMut(&str) -> String,
) -> Result<(Option<String>, ClientEvent), (Option<String>, ProtocolError)> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        (
            None,
            ProtocolError::invalid(
                "invalid_json",
                format!("The message is not valid JSON: {e}."),
                None,
            ),
        )
    })?;
    let Value::Object(obj) = v else {
        return Err((
            None,
            ProtocolError::invalid("invalid_json", "The message must be a JSON object.", None),
        ));
    };
    let event_id = obj
        .get("event_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match parse_object(&obj, dialect, new_id) {
        Ok(ev) => Ok((event_id, ev)),
        Err(e) => Err((event_id, e)),
    }
}

fn parse_object(
    obj: &Map<String, Value>,
    dialect: Dialect,
    new_id: &mut dyn FnMut(&str) -> String,
) -> Result<ClientEvent, ProtocolError> {
    let kind = field::required_string(obj, "type", "")?;
    Ok(match kind.as_str() {
        "session.update" => {
            let s = get(obj, "session").ok_or_else(|| ProtocolError::missing("session"))?;
            field::object(s, "session")?;
            ClientEvent::SessionUpdate(s.clone())
        }
        "transcription_session.update" if dialect == Dialect::Beta => {
            let s = get(obj, "session").ok_or_else(|| ProtocolError::missing("session"))?;
            field::object(s, "session")?;
            ClientEvent::TranscriptionSessionUpdate(s.clone())
        }
        "input_audio_buffer.append" => {
            let audio = field::required_string(obj, "audio", "")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(audio.as_bytes())
                .map_err(|e| {
                    ProtocolError::invalid(
                        "invalid_base64",
                        format!("'audio' is not valid base64: {e}."),
                        Some("audio"),
                    )
                })?;
            ClientEvent::Append(bytes)
        }
        "input_audio_buffer.commit" => ClientEvent::Commit,
        "input_audio_buffer.clear" => ClientEvent::Clear,
        "conversation.item.create" => {
            let previous_item_id = field::string(obj, "previous_item_id", "")?;
            let item = get(obj, "item").ok_or_else(|| ProtocolError::missing("item"))?;
            let audio = untranscribed_audio(item)?;
            let item = parse_item_with(item, "item", new_id, audio.is_some())?;
            ClientEvent::ItemCreate {
                previous_item_id,
                item: Box::new(item),
                audio,
            }
        }
        "conversation.item.retrieve" => {
            ClientEvent::ItemRetrieve(field::required_string(obj, "item_id", "")?)
        }
        "conversation.item.delete" => {
            ClientEvent::ItemDelete(field::required_string(obj, "item_id", "")?)
        }
        "conversation.item.truncate" => {
            let item_id = field::required_string(obj, "item_id", "")?;
            let content_index = field::integer(obj, "content_index", "", 1_000)?
                .ok_or_else(|| ProtocolError::missing("content_index"))?;
            let audio_end_ms = field::integer(obj, "audio_end_ms", "", u64::from(u32::MAX))?
                .ok_or_else(|| ProtocolError::missing("audio_end_ms"))?;
            ClientEvent::ItemTruncate {
                item_id,
                content_index: content_index as usize,
                audio_end_ms,
            }
        }
        "response.create" => {
            let (options, metadata, references) = match get(obj, "response") {
                None => (ResponseOptions::default(), Value::Null, Vec::new()),
                Some(r) => parse_response_options(r, dialect, new_id)?,
            };
            ClientEvent::ResponseCreate {
                options: Box::new(options),
                metadata,
                references,
            }
        }
        "response.cancel" => ClientEvent::ResponseCancel,
        "output_audio_buffer.clear" => ClientEvent::OutputAudioBufferClear,
        other => {
            return Err(ProtocolError::invalid(
                "invalid_event",
                format!("Unknown or unsupported client event type '{other}'."),
                Some("type"),
            ));
        }
    })
}

/// Parse the `response` object of `response.create`: the options, the
/// metadata, and the `item_reference` entries of `input` (see
/// [`ClientEvent::ResponseCreate`]).
pub fn parse_response_options(
    v: &Value,
    dialect: Dialect,
    new_id: &mut dyn FnMut(&str) -> String,
) -> Result<(ResponseOptions, Value, ItemReferences), ProtocolError> {
    let p = "response";
    let mut references = Vec::new();
    let obj = field::object(v, p)?;
    let mut o = ResponseOptions {
        instructions: field::string(obj, "instructions", p)?,
        ..ResponseOptions::default()
    };
    if let Some(t) = get(obj, "tools") {
        o.tools = Some(
            parse_tools(t, "response.tools")?
                .iter()
                .filter_map(tool_from_json)
                .collect(),
        );
    }
    if let Some(c) = get(obj, "tool_choice") {
        o.tool_choice = Some(parse_tool_choice(c, "response.tool_choice")?);
    }
    let modalities_key = match dialect {
        Dialect::Ga => "output_modalities",
        Dialect::Beta => "modalities",
    };
    if let Some(m) = get(obj, modalities_key) {
        o.audio_output = Some(parse_modalities(m, &format!("response.{modalities_key}"))?);
    }
    let tokens_key = if obj.contains_key("max_response_output_tokens") {
        "max_response_output_tokens"
    } else {
        "max_output_tokens"
    };
    o.max_output_tokens = parse_max_tokens(obj.get(tokens_key), &format!("response.{tokens_key}"))?;
    match dialect {
        Dialect::Ga => {
            if let Some(audio) = get(obj, "audio") {
                let audio = field::object(audio, "response.audio")?;
                if let Some(out) = get(audio, "output") {
                    let out = field::object(out, "response.audio.output")?;
                    o.voice = field::string(out, "voice", "response.audio.output")?;
                }
            }
        }
        Dialect::Beta => o.voice = field::string(obj, "voice", p)?,
    }
    match field::string(obj, "conversation", p)?.as_deref() {
        None | Some("auto") => {}
        Some("none") => o.out_of_band = true,
        Some(other) => {
            return Err(ProtocolError::value(
                "response.conversation",
                format!("Invalid 'response.conversation' '{other}': expected 'auto' or 'none'."),
            ));
        }
    }
    if let Some(input) = get(obj, "input") {
        let list = input.as_array().ok_or_else(|| {
            ProtocolError::value(
                "response.input",
                "'response.input' must be an array of items.",
            )
        })?;
        let mut items = Vec::with_capacity(list.len());
        for (i, it) in list.iter().enumerate() {
            let p = format!("response.input[{i}]");
            if it.get("type").and_then(Value::as_str) == Some("item_reference") {
                let id = field::required_string(field::object(it, &p)?, "id", &p)?;
                references.push((i, id));
            } else {
                items.push(parse_item(it, &p, new_id)?);
            }
        }
        o.input = Some(items);
    }
    let metadata = match get(obj, "metadata") {
        None => Value::Null,
        Some(m @ Value::Object(_)) => m.clone(),
        Some(_) => {
            return Err(ProtocolError::value(
                "response.metadata",
                "'response.metadata' must be an object of strings.",
            ));
        }
    };
    Ok((o, metadata, references))
}

/// Parse a conversation item (`conversation.item.create`, `response.input`).
pub fn parse_item(
    v: &Value,
    p: &str,
    new_id: &mut dyn FnMut(&str) -> String,
) -> Result<Item, ProtocolError> {
    parse_item_with(v, p, new_id, false)
}

/// The decoded audio of a user message's `input_audio` part that has no
/// transcript (`conversation.item.create` transcribes it).
fn untranscribed_audio(item: &Value) -> Result<Option<Vec<u8>>, ProtocolError> {
    let parts = item
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for (i, c) in parts.enumerate() {
        let is_audio = c.get("type").and_then(Value::as_str) == Some("input_audio");
        let has_transcript = c.get("transcript").is_some_and(|t| !t.is_null());
        if let (true, false, Some(audio)) = (
            is_audio,
            has_transcript,
            c.get("audio").and_then(Value::as_str),
        ) {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(audio.as_bytes())
                .map_err(|e| {
                    ProtocolError::invalid(
                        "invalid_base64",
                        format!("'item.content[{i}].audio' is not valid base64: {e}."),
                        Some(&format!("item.content[{i}].audio")),
                    )
                })?;
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

fn parse_item_with(
    v: &Value,
    p: &str,
    new_id: &mut dyn FnMut(&str) -> String,
    audio_allowed: bool,
) -> Result<Item, ProtocolError> {
    let obj = field::object(v, p)?;
    let id = match field::string(obj, "id", p)? {
        Some(id) if id.is_empty() || id.len() > 64 => {
            let pp = field::join(p, "id");
            return Err(ProtocolError::value(
                &pp,
                format!("'{pp}' must be 1 to 64 characters."),
            ));
        }
        Some(id) => id,
        None => new_id("item"),
    };
    let kind = field::string(obj, "type", p)?.unwrap_or_else(|| "message".to_owned());
    let kind = match kind.as_str() {
        "message" => {
            let role = match field::required_string(obj, "role", p)?.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                other => {
                    let pp = field::join(p, "role");
                    return Err(ProtocolError::value(
                        &pp,
                        format!(
                            "Invalid '{pp}' '{other}': expected 'user', 'assistant' or 'system'."
                        ),
                    ));
                }
            };
            let cp = field::join(p, "content");
            let list = get(obj, "content")
                .ok_or_else(|| ProtocolError::missing(&cp))?
                .as_array()
                .ok_or_else(|| ProtocolError::value(&cp, format!("'{cp}' must be an array.")))?;
            let mut content = Vec::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                let pp = format!("{cp}[{i}]");
                let c = field::object(c, &pp)?;
                let ctype = field::required_string(c, "type", &pp)?;
                let part = match (role, ctype.as_str()) {
                    (Role::User | Role::System, "input_text") => {
                        Content::InputText(field::string(c, "text", &pp)?.unwrap_or_default())
                    }
                    (Role::User, "input_audio") => {
                        let transcript = field::string(c, "transcript", &pp)?;
                        if transcript.is_none() && get(c, "audio").is_some() && !audio_allowed {
                            // Rather than add an item the model cannot hear.
                            return Err(ProtocolError::invalid(
                                "unsupported_content",
                                "Audio in response input items is not transcribed: add it \
                                 with conversation.item.create first, or give its 'transcript'.",
                                Some(&field::join(&pp, "audio")),
                            ));
                        }
                        Content::InputAudio {
                            transcript,
                            duration_ms: 0.0,
                        }
                    }
                    (Role::Assistant, "output_text" | "text") => {
                        Content::OutputText(field::string(c, "text", &pp)?.unwrap_or_default())
                    }
                    (Role::Assistant, "output_audio" | "audio") => Content::OutputAudio {
                        transcript: field::string(c, "transcript", &pp)?.unwrap_or_default(),
                        duration_ms: 0.0,
                        clauses: Vec::new(),
                    },
                    (_, other) => {
                        let tp = field::join(&pp, "type");
                        return Err(ProtocolError::value(
                            &tp,
                            format!(
                                "Content type '{other}' is not allowed in a {} message.",
                                role.as_str()
                            ),
                        ));
                    }
                };
                content.push(part);
            }
            ItemKind::Message { role, content }
        }
        "function_call" => ItemKind::FunctionCall {
            call_id: field::string(obj, "call_id", p)?.unwrap_or_else(|| new_id("call")),
            name: field::required_string(obj, "name", p)?,
            arguments: field::string(obj, "arguments", p)?.unwrap_or_default(),
        },
        "function_call_output" => ItemKind::FunctionCallOutput {
            call_id: field::required_string(obj, "call_id", p)?,
            output: field::required_string(obj, "output", p)?,
        },
        other => {
            let pp = field::join(p, "type");
            return Err(ProtocolError::value(
                &pp,
                format!(
                    "Invalid item type '{other}': expected 'message', 'function_call' or 'function_call_output'."
                ),
            ));
        }
    };
    Ok(Item {
        id,
        kind,
        status: ItemStatus::Completed,
    })
}
