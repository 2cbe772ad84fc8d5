//! Why a session refuses a request, with the stable code the wire carries.

use crate::engine::backend::StageError;
use crate::engine::conversation::ConversationError;

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
