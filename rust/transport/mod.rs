//! Transports: how audio and events reach a session from outside the process.

mod calls;
pub mod keys;
mod page;
pub mod realtime;
mod session_task;
pub mod tls;
mod web;
pub mod webrtc;

pub use realtime::{
    DEFAULT_HOST, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PORT, RealtimeServer, ServerConfig,
    TransportError,
};
