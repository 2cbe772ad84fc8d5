//! What a session tells its transport: turn, transcription and response events.
//!
//! These are transport-neutral. The realtime transport maps them to the
//! Realtime protocol's events in either dialect; the raw-audio transports
//! only forward the audio.

use super::conversation::Item;

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    /// Everything was produced.
    Completed,
    /// Stopped by barge-in or a client cancel.
    Cancelled,
    /// Stopped by the token budget.
    Incomplete,
    /// A model failed.
    Failed,
}

impl ResponseStatus {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseStatus::Completed => "completed",
            ResponseStatus::Cancelled => "cancelled",
            ResponseStatus::Incomplete => "incomplete",
            ResponseStatus::Failed => "failed",
        }
    }
}

/// Why a response was cancelled or incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The user started speaking (barge-in).
    TurnDetected,
    /// The client sent `response.cancel`.
    ClientCancelled,
    /// The token budget ran out.
    MaxOutputTokens,
}

impl StopReason {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::TurnDetected => "turn_detected",
            StopReason::ClientCancelled => "client_cancelled",
            StopReason::MaxOutputTokens => "max_output_tokens",
        }
    }
}

/// Token and audio usage of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
}

/// Where the time of one turn went, in ms since the session started.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TurnTimings {
    /// Last speech sample (audio time, from the VAD).
    pub speech_end: Option<f64>,
    /// The VAD's early soft end (wall time).
    pub soft_end: Option<f64>,
    /// The end-of-turn model was set to judge the pause (its last decision).
    pub decision: Option<f64>,
    /// The turn was committed.
    pub commit: Option<f64>,
    /// STT gave its final transcript.
    pub stt_done: Option<f64>,
    /// The LLM's first token.
    pub llm_first_token: Option<f64>,
    /// The first speakable clause.
    pub first_clause: Option<f64>,
    /// TTS's first audio chunk.
    pub tts_first_chunk: Option<f64>,
    /// The first audio sent to the transport.
    pub first_audio_out: Option<f64>,
    /// Whether speculative work was used for this turn.
    pub speculative: bool,
}

/// An event for the transport.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// The VAD heard speech start.
    SpeechStarted {
        /// The user item this speech will become.
        item_id: String,
        /// Input audio time, ms.
        audio_start_ms: u64,
    },
    /// The VAD heard speech stop.
    SpeechStopped {
        /// The user item.
        item_id: String,
        /// Input audio time, ms.
        audio_end_ms: u64,
    },
    /// The input audio became a user item.
    InputCommitted {
        /// The new item.
        item_id: String,
        /// The item before it.
        previous_item_id: Option<String>,
    },
    /// The input buffer was cleared.
    InputCleared,
    /// An item joined the conversation.
    ItemAdded {
        /// The item.
        item: Item,
        /// The item before it.
        previous_item_id: Option<String>,
    },
    /// An item is complete.
    ItemDone {
        /// The item.
        item: Item,
        /// The item before it.
        previous_item_id: Option<String>,
    },
    /// An item was removed.
    ItemDeleted {
        /// Its id.
        item_id: String,
    },
    /// An assistant item was truncated to the audio heard.
    ItemTruncated {
        /// Its id.
        item_id: String,
        /// The content part.
        content_index: usize,
        /// Where it now ends.
        audio_end_ms: u64,
    },
    /// More of the user's transcript (append-only).
    InputTranscriptDelta {
        /// The user item.
        item_id: String,
        /// The new text.
        delta: String,
    },
    /// The user's final transcript.
    InputTranscriptCompleted {
        /// The user item.
        item_id: String,
        /// The text.
        transcript: String,
        /// Seconds of audio transcribed.
        audio_seconds: f64,
    },
    /// Transcription failed.
    InputTranscriptFailed {
        /// The user item.
        item_id: String,
        /// Why.
        message: String,
    },
    /// A response started.
    ResponseCreated {
        /// Its id.
        response_id: String,
    },
    /// A response output item started (a message or a function call).
    OutputItemAdded {
        /// The response.
        response_id: String,
        /// Position among the response's outputs.
        output_index: usize,
        /// The item, in progress.
        item: Item,
    },
    /// A content part of a message started.
    ContentPartAdded {
        /// The response.
        response_id: String,
        /// The message item.
        item_id: String,
        /// Its output index.
        output_index: usize,
        /// Audio (true) or text.
        audio: bool,
    },
    /// Output audio at the session's output rate, 20 to 200 ms.
    AudioDelta {
        /// The response.
        response_id: String,
        /// The message item.
        item_id: String,
        /// Its output index.
        output_index: usize,
        /// Mono samples in [-1, 1].
        samples: Vec<f32>,
    },
    /// More of the spoken text (sent as its audio starts).
    TranscriptDelta {
        /// The response.
        response_id: String,
        /// The message item.
        item_id: String,
        /// Its output index.
        output_index: usize,
        /// The new text.
        delta: String,
    },
    /// More answer text (text-only responses).
    TextDelta {
        /// The response.
        response_id: String,
        /// The message item.
        item_id: String,
        /// Its output index.
        output_index: usize,
        /// The new text.
        delta: String,
    },
    /// The content part is complete: its audio, transcript or text are done.
    ContentPartDone {
        /// The response.
        response_id: String,
        /// The message item.
        item_id: String,
        /// Its output index.
        output_index: usize,
        /// Audio (true) or text.
        audio: bool,
        /// The whole text or transcript.
        text: String,
    },
    /// Arguments of a function call, as they stream.
    FunctionCallArgumentsDelta {
        /// The response.
        response_id: String,
        /// The function-call item.
        item_id: String,
        /// Its output index.
        output_index: usize,
        /// Its call id.
        call_id: String,
        /// The new text of the arguments.
        delta: String,
    },
    /// The arguments of a function call are complete.
    FunctionCallArgumentsDone {
        /// The response.
        response_id: String,
        /// The function-call item.
        item_id: String,
        /// Its output index.
        output_index: usize,
        /// Its call id.
        call_id: String,
        /// Tool name.
        name: String,
        /// Arguments, a JSON string.
        arguments: String,
    },
    /// An output item is complete.
    OutputItemDone {
        /// The response.
        response_id: String,
        /// Its output index.
        output_index: usize,
        /// The item.
        item: Item,
    },
    /// A response ended.
    ResponseDone {
        /// Its id.
        response_id: String,
        /// How it ended.
        status: ResponseStatus,
        /// Why, when cancelled or incomplete.
        reason: Option<StopReason>,
        /// Its output items.
        output: Vec<Item>,
        /// Token usage.
        usage: Usage,
        /// The error, when failed.
        error: Option<String>,
    },
    /// The timings of a finished turn.
    Timings {
        /// The response it produced.
        response_id: String,
        /// Where the time went.
        timings: TurnTimings,
    },
    /// Something went wrong; the session goes on.
    Error {
        /// `invalid_request_error` or `server_error`.
        kind: &'static str,
        /// A stable code (`conversation_already_has_active_response`, ...).
        code: &'static str,
        /// What happened and what to do.
        message: String,
    },
}

impl EngineEvent {
    /// The event's name: the `type` of the Python API's event dicts, and
    /// the name any transport that forwards engine events uses.
    pub fn name(&self) -> &'static str {
        match self {
            EngineEvent::SpeechStarted { .. } => "speech_started",
            EngineEvent::SpeechStopped { .. } => "speech_stopped",
            EngineEvent::InputCommitted { .. } => "input_committed",
            EngineEvent::InputCleared => "input_cleared",
            EngineEvent::ItemAdded { .. } => "item_added",
            EngineEvent::ItemDone { .. } => "item_done",
            EngineEvent::ItemDeleted { .. } => "item_deleted",
            EngineEvent::ItemTruncated { .. } => "item_truncated",
            EngineEvent::InputTranscriptDelta { .. } => "input_transcript_delta",
            EngineEvent::InputTranscriptCompleted { .. } => "input_transcript_completed",
            EngineEvent::InputTranscriptFailed { .. } => "input_transcript_failed",
            EngineEvent::ResponseCreated { .. } => "response_created",
            EngineEvent::OutputItemAdded { .. } => "output_item_added",
            EngineEvent::ContentPartAdded { .. } => "content_part_added",
            EngineEvent::AudioDelta { .. } => "audio_delta",
            EngineEvent::TranscriptDelta { .. } => "transcript_delta",
            EngineEvent::TextDelta { .. } => "text_delta",
            EngineEvent::ContentPartDone { .. } => "content_part_done",
            EngineEvent::FunctionCallArgumentsDelta { .. } => "function_call_arguments_delta",
            EngineEvent::FunctionCallArgumentsDone { .. } => "function_call_arguments_done",
            EngineEvent::OutputItemDone { .. } => "output_item_done",
            EngineEvent::ResponseDone { .. } => "response_done",
            EngineEvent::Timings { .. } => "timings",
            EngineEvent::Error { .. } => "error",
        }
    }
}
