//! Transports: how audio and events reach a session from outside the process.

pub mod realtime;

pub use realtime::{RealtimeServer, ServerConfig, TransportError};
