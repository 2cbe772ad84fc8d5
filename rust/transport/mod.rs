//! Transports: how audio and events reach a session from outside the process.

pub mod realtime;
pub mod webrtc;

pub use realtime::{
    DEFAULT_EXTRA_CONNECTIONS, DEFAULT_HEADER_TIMEOUT, DEFAULT_HOST, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT, DEFAULT_SEND_TIMEOUT, RealtimeServer, ServerConfig, TransportError,
};
