//! Transports: how audio and events reach a session from outside the process.

pub mod audio_api;
pub mod realtime;
pub mod webrtc;

pub use realtime::{
    DEFAULT_HOST, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PORT, RealtimeServer, ServerConfig,
    TransportError,
};
