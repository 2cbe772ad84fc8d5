//! Transports: how audio and events reach a session from outside the process.

pub mod audio_api;
mod calls;
mod devices;
pub mod keys;
pub mod listen_and_play;
pub mod local;
mod page;
mod raw;
pub mod realtime;
mod runtime;
mod session_task;
pub mod socket;
pub mod talk;
pub mod tls;
mod web;
pub mod webrtc;
pub mod websocket;

pub use devices::{MIC_RATE, ModeError};
pub use listen_and_play::{ListenAndPlay, ListenAndPlayConfig};
pub use local::{DEFAULT_BARGE_IN_MIN_MS, LocalConfig, LocalMode};
pub use raw::{PACE_LEAD, check_rate};
pub use realtime::{
    DEFAULT_EXTRA_CONNECTIONS, DEFAULT_HEADER_TIMEOUT, DEFAULT_HOST, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PORT, DEFAULT_SEND_TIMEOUT, RealtimeServer, ServerConfig, TransportError,
};
pub use socket::{SocketConfig, SocketServer};
pub use talk::{TalkClient, TalkConfig, TalkEvent};
pub use websocket::{WebSocketConfig, WebSocketServer};
