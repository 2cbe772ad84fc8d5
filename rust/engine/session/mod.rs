//! A session: one conversation's turns, items and active response.
//!
//! Transports drive a [`Session`] (audio and client requests in, engine
//! events out); stage workers feed it model outputs. Its files, one job each:
//!
//! * `handle` — the [`Session`] handle every transport uses;
//! * `config`, `error` — its settings and why it refuses a request;
//! * `state` — its data, and the lock order;
//! * `turns` — turn events, the semantic hold, speculation, commits;
//! * `transcription` — committed, speculative and live transcripts;
//! * `items` — conversation edits;
//! * `response` — the response lifecycle;
//! * `speech_out` — clauses to transcript and audio deltas (a plain struct);
//! * `outbox` — the outgoing event queue;
//! * `jobs` — the stage jobs.
//!
//! Nothing here touches Python.

mod config;
mod error;
mod handle;
mod items;
mod jobs;
mod outbox;
mod response;
mod speech_out;
mod state;
mod transcription;
mod turns;

pub use config::{ResponseOptions, SessionConfig};
pub use error::SessionError;
pub use handle::Session;
pub use turns::sounds_unfinished;
