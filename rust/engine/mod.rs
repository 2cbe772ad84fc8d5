//! The pipeline engine: sessions, turn state, conversation items and stage dispatch.
//!
//! One [`Engine`] per process holds the three model backends and a worker
//! pool for each; every [`Session`] shares them. Transports (the realtime
//! server, the raw-audio modes, the in-process Python API, the tests) all
//! drive the same session type.

pub mod backend;
pub mod conversation;
pub mod events;
mod input;
pub mod metrics;
mod models;
pub(crate) mod progress;
pub mod scripted;
pub mod segmenter;
pub mod session;
pub mod stages;

pub use backend::{LlmBackend, SttBackend, TtsBackend};
pub use events::EngineEvent;
pub use input::{STT_RATE, TurnInput};
pub use models::{
    DEFAULT_MAX_SESSIONS, DEFAULT_STAGE_TIMEOUT, Engine, EngineConfig, EngineError, Stage,
};
pub use session::{ResponseOptions, Session, SessionConfig, SessionError};
