//! speech-to-speech core: the audio path of a voice-agent server.
//!
//! Everything that touches audio samples lives here, in plain Rust that
//! builds and tests without libpython. The Python bindings are in `py`,
//! compiled only with the `python` feature (maturin turns it on).

// Library code encodes its invariants in types instead of panicking.
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod audio;
pub mod engine;
pub mod protocol;
pub mod queue;
#[cfg(target_arch = "x86_64")]
mod simd;
pub mod transport;
pub mod vad;

#[cfg(feature = "python")]
pub mod py;
