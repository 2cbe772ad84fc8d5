//! Conversation items: what was said, by whom, and what the model sees.
//!
//! Items follow the Realtime API's shapes (messages with content parts,
//! function calls and their outputs). An assistant audio part keeps the
//! timing of each spoken clause so a truncation can rewrite the text to the
//! words the user actually heard.

use thiserror::Error;

/// Errors from editing the conversation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConversationError {
    /// No item has this id. The client should use an id from a
    /// `conversation.item.*` event of this session.
    #[error("no conversation item with id '{0}'")]
    NoSuchItem(String),
    /// The item is not an assistant audio message. Only those can be truncated.
    #[error("item '{0}' has no assistant audio to truncate")]
    NotTruncatable(String),
    /// `audio_end_ms` is past the end of the item's audio. The client should
    /// send at most the duration it received.
    #[error("audio_end_ms {requested} is beyond the item's audio ({available} ms)")]
    TruncateBeyondEnd {
        /// What the client asked for.
        requested: u64,
        /// How much audio the item holds.
        available: u64,
    },
    /// An item with this id already exists. The client should pick a new id.
    #[error("an item with id '{0}' already exists")]
    DuplicateId(String),
}

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// System instructions inserted as an item.
    System,
    /// The person.
    User,
    /// The agent.
    Assistant,
}

impl Role {
    /// The name used on the wire and in chat messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// A spoken clause of assistant audio and where it lies in the item's audio.
#[derive(Debug, Clone, PartialEq)]
pub struct SpokenClause {
    /// The clause text as sent to TTS.
    pub text: String,
    /// Start of its audio in the item, ms.
    pub start_ms: f64,
    /// End of its audio in the item, ms.
    pub end_ms: f64,
    /// Word timings (word, start, end in ms from the clause start) when the
    /// TTS backend gives them.
    pub words: Option<Vec<(String, f64, f64)>>,
}

/// One content part of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Typed user or system text.
    InputText(String),
    /// User audio; the transcript arrives when STT finishes.
    InputAudio {
        /// The transcript, once known.
        transcript: Option<String>,
        /// Duration of the audio, ms.
        duration_ms: f64,
    },
    /// Assistant text (text-only responses).
    OutputText(String),
    /// Assistant audio with its transcript and clause timings.
    OutputAudio {
        /// What the assistant said (after truncation: what was heard).
        transcript: String,
        /// Duration of the audio, ms.
        duration_ms: f64,
        /// Spoken clauses, in order.
        clauses: Vec<SpokenClause>,
    },
}

impl Content {
    /// The text of this part as the model should see it, if any.
    pub fn text(&self) -> Option<&str> {
        match self {
            Content::InputText(t) | Content::OutputText(t) => Some(t),
            Content::InputAudio { transcript, .. } => transcript.as_deref(),
            Content::OutputAudio { transcript, .. } => Some(transcript),
        }
    }
}

/// Status of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemStatus {
    /// Still being produced.
    InProgress,
    /// Finished.
    Completed,
    /// Cut short by a cancel or barge-in.
    Incomplete,
}

impl ItemStatus {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::InProgress => "in_progress",
            ItemStatus::Completed => "completed",
            ItemStatus::Incomplete => "incomplete",
        }
    }
}

/// What an item holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    /// A message with content parts.
    Message {
        /// Its author.
        role: Role,
        /// Its parts.
        content: Vec<Content>,
    },
    /// The model asked to call a tool.
    FunctionCall {
        /// Correlates the call with its output.
        call_id: String,
        /// Tool name.
        name: String,
        /// Arguments as a JSON string.
        arguments: String,
    },
    /// The client's result of a tool call.
    FunctionCallOutput {
        /// The call this answers.
        call_id: String,
        /// The result, usually JSON.
        output: String,
    },
}

/// A conversation item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Unique id (`item_...`).
    pub id: String,
    /// Its content.
    pub kind: ItemKind,
    /// Its status.
    pub status: ItemStatus,
}

/// A chat message for the LLM stage, in the `OpenAI` chat format.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'static str,
    /// Text content (empty for a pure tool-call message).
    pub content: String,
    /// Tool calls of an assistant message: (`call_id`, name, arguments).
    pub tool_calls: Vec<(String, String, String)>,
    /// For `tool` messages: the call answered.
    pub tool_call_id: Option<String>,
}

/// The ordered items of one session.
#[derive(Debug, Default, Clone)]
pub struct Conversation {
    items: Vec<Item>,
}

impl Conversation {
    /// All items, oldest first.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The item with this id.
    pub fn get(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.id == id)
    }

    /// The item with this id, mutably.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Item> {
        self.items.iter_mut().find(|i| i.id == id)
    }

    /// Id of the last item, for `previous_item_id`.
    pub fn last_id(&self) -> Option<&str> {
        self.items.last().map(|i| i.id.as_str())
    }

    /// Id of the item just before `id` (`None` for the first item or an unknown id).
    pub fn previous_id(&self, id: &str) -> Option<&str> {
        let pos = self.items.iter().position(|i| i.id == id)?;
        pos.checked_sub(1).map(|p| self.items[p].id.as_str())
    }

    /// Insert after `previous` (`None`: append; `Some("root")`: at the start).
    /// Returns the id of the item before it.
    pub fn insert(
        &mut self,
        item: Item,
        previous: Option<&str>,
    ) -> Result<Option<String>, ConversationError> {
        if self.get(&item.id).is_some() {
            return Err(ConversationError::DuplicateId(item.id));
        }
        let pos = match previous {
            None => self.items.len(),
            Some("root") => 0,
            Some(prev) => {
                self.items
                    .iter()
                    .position(|i| i.id == prev)
                    .ok_or_else(|| ConversationError::NoSuchItem(prev.to_owned()))?
                    + 1
            }
        };
        let before = pos.checked_sub(1).map(|p| self.items[p].id.clone());
        self.items.insert(pos, item);
        Ok(before)
    }

    /// Remove an item.
    pub fn delete(&mut self, id: &str) -> Result<Item, ConversationError> {
        let pos = self
            .items
            .iter()
            .position(|i| i.id == id)
            .ok_or_else(|| ConversationError::NoSuchItem(id.to_owned()))?;
        Ok(self.items.remove(pos))
    }

    /// Trim an assistant audio item to the first `audio_end_ms` of its audio
    /// and rewrite its transcript to the words spoken by then.
    pub fn truncate(
        &mut self,
        id: &str,
        content_index: usize,
        audio_end_ms: u64,
    ) -> Result<(), ConversationError> {
        let item = self
            .get_mut(id)
            .ok_or_else(|| ConversationError::NoSuchItem(id.to_owned()))?;
        let ItemKind::Message {
            role: Role::Assistant,
            content,
        } = &mut item.kind
        else {
            return Err(ConversationError::NotTruncatable(id.to_owned()));
        };
        let Some(Content::OutputAudio {
            transcript,
            duration_ms,
            clauses,
        }) = content.get_mut(content_index)
        else {
            return Err(ConversationError::NotTruncatable(id.to_owned()));
        };
        let end = audio_end_ms as f64;
        if end > duration_ms.ceil() {
            return Err(ConversationError::TruncateBeyondEnd {
                requested: audio_end_ms,
                available: duration_ms.ceil() as u64,
            });
        }
        *transcript = heard_text(clauses, end);
        clauses.retain(|c| c.start_ms < end);
        if let Some(last) = clauses.last_mut() {
            last.end_ms = last.end_ms.min(end);
        }
        *duration_ms = end;
        item.status = ItemStatus::Incomplete;
        Ok(())
    }

    /// The chat messages for the LLM: the system prompt, then the last
    /// `window` to `2 * window - 1` items (0 means all; see below).
    pub fn chat_messages(&self, system: &str, window: usize) -> Vec<ChatMessage> {
        self.messages_from(system, self.window_start(self.items.len(), window))
    }

    /// The messages [`chat_messages`](Self::chat_messages) will begin with
    /// once one more item (the next user turn) is added: what an LLM can
    /// read ahead while that turn is spoken.
    pub fn chat_prefix(&self, system: &str, window: usize) -> Vec<ChatMessage> {
        self.messages_from(system, self.window_start(self.items.len() + 1, window))
    }

    /// Where the window of a conversation of `len` items starts.
    fn window_start(&self, len: usize, window: usize) -> usize {
        // Slide in steps of a whole window (window 0: everything): the prompt
        // then begins the same way for several turns, so the LLM reuses its
        // cached prefix instead of re-reading the whole history every turn.
        // The model sees between `window` and `2 * window - 1` items.
        let mut start = len
            .saturating_sub(window)
            .checked_div(window)
            .map_or(0, |k| k * window)
            .min(self.items.len());
        // A tool result without its call is rejected by chat APIs: widen the
        // window back past the calls and results to the message before them.
        while start > 0
            && start < self.items.len()
            && matches!(
                self.items[start].kind,
                ItemKind::FunctionCallOutput { .. } | ItemKind::FunctionCall { .. }
            )
        {
            start -= 1;
        }
        start
    }

    fn messages_from(&self, system: &str, start: usize) -> Vec<ChatMessage> {
        let mut out = Vec::new();
        if !system.is_empty() {
            out.push(ChatMessage {
                role: "system",
                content: system.to_owned(),
                tool_calls: Vec::new(),
                tool_call_id: None,
            });
        }
        for item in &self.items[start..] {
            match &item.kind {
                ItemKind::Message { role, content } => {
                    let text: Vec<&str> = content.iter().filter_map(Content::text).collect();
                    let text = text.join(" ");
                    if text.trim().is_empty() {
                        continue;
                    }
                    out.push(ChatMessage {
                        role: role.as_str(),
                        content: text,
                        tool_calls: Vec::new(),
                        tool_call_id: None,
                    });
                }
                ItemKind::FunctionCall {
                    call_id,
                    name,
                    arguments,
                } => {
                    let call = (call_id.clone(), name.clone(), arguments.clone());
                    // Consecutive calls belong to one assistant message.
                    match out.last_mut() {
                        Some(last) if last.role == "assistant" && !last.tool_calls.is_empty() => {
                            last.tool_calls.push(call);
                        }
                        _ => out.push(ChatMessage {
                            role: "assistant",
                            content: String::new(),
                            tool_calls: vec![call],
                            tool_call_id: None,
                        }),
                    }
                }
                ItemKind::FunctionCallOutput { call_id, output } => out.push(ChatMessage {
                    role: "tool",
                    content: output.clone(),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(call_id.clone()),
                }),
            }
        }
        out
    }
}

/// The words of `clauses` heard by `end_ms`: whole clauses before it, and
/// within the clause playing at `end_ms` the words whose middle was reached
/// (by word timings when known, else in proportion to the clause's duration).
pub fn heard_text(clauses: &[SpokenClause], end_ms: f64) -> String {
    let mut words: Vec<&str> = Vec::new();
    for c in clauses {
        if c.end_ms <= end_ms {
            words.extend(c.text.split_whitespace());
            continue;
        }
        if c.start_ms >= end_ms {
            break;
        }
        let into = end_ms - c.start_ms;
        if let Some(timed) = &c.words {
            words.extend(
                timed
                    .iter()
                    .filter(|(_, s, e)| (s + e) / 2.0 <= into)
                    .map(|(w, _, _)| w.as_str()),
            );
        } else {
            // Proportional to characters: a word is heard when the playhead
            // passed its middle character.
            let total: usize = c.text.chars().count().max(1);
            let heard_chars = into / (c.end_ms - c.start_ms).max(1e-9) * total as f64;
            let mut pos = 0usize;
            for w in c.text.split_whitespace() {
                let start = c.text[pos..].find(w).map_or(pos, |i| pos + i);
                let mid = c.text[..start].chars().count() as f64 + w.chars().count() as f64 / 2.0;
                if mid > heard_chars {
                    break;
                }
                words.push(w);
                pos = start + w.len();
            }
        }
        break;
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, role: Role, text: &str) -> Item {
        Item {
            id: id.into(),
            kind: ItemKind::Message {
                role,
                content: vec![Content::InputText(text.into())],
            },
            status: ItemStatus::Completed,
        }
    }

    fn spoken(id: &str) -> Item {
        Item {
            id: id.into(),
            kind: ItemKind::Message {
                role: Role::Assistant,
                content: vec![Content::OutputAudio {
                    transcript: "One two three four. Five six.".into(),
                    duration_ms: 3000.0,
                    clauses: vec![
                        SpokenClause {
                            text: "One two three four.".into(),
                            start_ms: 0.0,
                            end_ms: 2000.0,
                            words: None,
                        },
                        SpokenClause {
                            text: "Five six.".into(),
                            start_ms: 2000.0,
                            end_ms: 3000.0,
                            words: Some(vec![
                                ("Five".into(), 0.0, 400.0),
                                ("six.".into(), 400.0, 1000.0),
                            ]),
                        },
                    ],
                }],
            },
            status: ItemStatus::Completed,
        }
    }

    #[test]
    fn insert_after_and_delete() {
        let mut c = Conversation::default();
        assert_eq!(c.insert(msg("a", Role::User, "hi"), None).unwrap(), None);
        assert_eq!(
            c.insert(msg("c", Role::User, "x"), None)
                .unwrap()
                .as_deref(),
            Some("a")
        );
        assert_eq!(
            c.insert(msg("b", Role::User, "y"), Some("a"))
                .unwrap()
                .as_deref(),
            Some("a")
        );
        assert_eq!(
            c.insert(msg("r", Role::User, "z"), Some("root")).unwrap(),
            None
        );
        let ids: Vec<&str> = c.items().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["r", "a", "b", "c"]);
        assert_eq!(
            c.insert(msg("a", Role::User, "dup"), None),
            Err(ConversationError::DuplicateId("a".into()))
        );
        assert!(matches!(
            c.insert(msg("q", Role::User, "q"), Some("nope")),
            Err(ConversationError::NoSuchItem(_))
        ));
        c.delete("b").unwrap();
        assert!(c.delete("b").is_err());
        assert_eq!(c.items().len(), 3);
    }

    #[test]
    fn truncate_proportional_and_timed() {
        let mut c = Conversation::default();
        c.insert(spoken("s"), None).unwrap();
        let text = |c: &Conversation| c.get("s").unwrap().kind.clone();
        // Half of the first clause (proportional): "One two" heard.
        let mut c1 = c.clone();
        c1.truncate("s", 0, 1000).unwrap();
        let ItemKind::Message { content, .. } = text(&c1) else {
            unreachable!()
        };
        assert_eq!(content[0].text(), Some("One two"));
        assert_eq!(c1.get("s").unwrap().status, ItemStatus::Incomplete);
        // Into the second clause with word timings: "Five" (mid 200) heard, "six." (mid 700) not.
        let mut c2 = c.clone();
        c2.truncate("s", 0, 2500).unwrap();
        let ItemKind::Message { content, .. } = text(&c2) else {
            unreachable!()
        };
        assert_eq!(content[0].text(), Some("One two three four. Five"));
        // Nothing heard.
        let mut c3 = c.clone();
        c3.truncate("s", 0, 0).unwrap();
        let msgs = c3.chat_messages("", 0);
        assert!(
            msgs.is_empty(),
            "an unheard reply leaves nothing for the model"
        );
        // Beyond the end is an error.
        assert_eq!(
            c.clone().truncate("s", 0, 3001),
            Err(ConversationError::TruncateBeyondEnd {
                requested: 3001,
                available: 3000
            })
        );
        c.insert(msg("u", Role::User, "x"), None).unwrap();
        assert!(matches!(
            c.truncate("u", 0, 10),
            Err(ConversationError::NotTruncatable(_))
        ));
    }

    #[test]
    fn the_window_slides_in_steps_so_the_prefix_stays() {
        let mut c = Conversation::default();
        let mut firsts = Vec::new();
        for i in 0..12 {
            c.insert(msg(&format!("m{i}"), Role::User, &format!("t{i}")), None)
                .unwrap();
            let m = c.chat_messages("", 4);
            assert!((4..=7).contains(&m.len()) || i < 4, "{i}: {}", m.len());
            firsts.push(m[0].content.clone());
        }
        // The first message changes every fourth item, not every item.
        let changes = firsts.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 2, "{firsts:?}");
    }

    #[test]
    fn the_prefix_is_how_the_next_turns_prompt_begins() {
        for window in [0, 1, 2, 3, 4] {
            let mut c = Conversation::default();
            for i in 0..11 {
                let prefix = c.chat_prefix("sys", window);
                let role = if i % 2 == 0 {
                    Role::User
                } else {
                    Role::Assistant
                };
                c.insert(msg(&format!("m{i}"), role, &format!("t{i}")), None)
                    .unwrap();
                let full = c.chat_messages("sys", window);
                assert_eq!(prefix.len() + 1, full.len(), "window {window}, item {i}");
                assert_eq!(
                    prefix[..],
                    full[..prefix.len()],
                    "window {window}, item {i}"
                );
            }
        }
    }

    #[test]
    fn chat_messages_with_tools_and_window() {
        let mut c = Conversation::default();
        c.insert(msg("u1", Role::User, "weather?"), None).unwrap();
        for (id, call) in [("f1", "c1"), ("f2", "c2")] {
            c.insert(
                Item {
                    id: id.into(),
                    kind: ItemKind::FunctionCall {
                        call_id: call.into(),
                        name: "get_weather".into(),
                        arguments: "{}".into(),
                    },
                    status: ItemStatus::Completed,
                },
                None,
            )
            .unwrap();
        }
        c.insert(
            Item {
                id: "o1".into(),
                kind: ItemKind::FunctionCallOutput {
                    call_id: "c1".into(),
                    output: "sunny".into(),
                },
                status: ItemStatus::Completed,
            },
            None,
        )
        .unwrap();
        let m = c.chat_messages("Be brief.", 0);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].role, "system");
        assert_eq!(m[2].tool_calls.len(), 2);
        assert_eq!(m[3].tool_call_id.as_deref(), Some("c1"));
        // A window of one would start on the tool result: it reaches back to
        // the calls and the question before them.
        let windowed = c.chat_messages("", 1);
        assert_eq!(windowed.len(), 3);
        assert_eq!(windowed[1].tool_calls.len(), 2);
        assert_eq!(windowed[2].role, "tool");
    }
}
