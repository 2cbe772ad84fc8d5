//! The pipeline engine: sessions, turn state, conversation items and stage dispatch.

pub mod conversation;
pub mod segmenter;
