//! The `OpenAI` Realtime protocol: client events in, server events out, both dialects.
//!
//! Parsing is done on `serde_json::Value` rather than derived structs so that
//! every wrong field gets an `invalid_request_error` naming it (`param`), and
//! unknown-but-harmless fields the official clients send are ignored. The
//! session object ([`SessionState`], `session_object.rs`) is what the client sees in
//! `session.created` / `session.updated`; [`SessionState::apply_to`] maps it
//! onto the engine's [`SessionConfig`].

mod client_events;
mod defaults;
mod realtime_session;
mod server_events;
mod session_object;
mod wire;

pub use client_events::{
    ClientEvent, ItemReferences, parse_client_event, parse_item, parse_response_options,
};
pub use defaults::{SessionDefaults, TurnDetector};
pub use realtime_session::{OpenOptions, OpenRefusal, Outgoing, RealtimeSession};
pub use server_events::{Encoder, session_resource};
pub use session_object::{AudioFormat, SessionState, Transcription, TurnDetection, VadDefaults};
pub use wire::{Dialect, ProtocolError};

#[cfg(test)]
mod tests;
