//! Voice activity detection: the Silero model (native or over ONNX Runtime), and the turn state machine.
//!
//! * [`turn`] turns per-chunk speech probabilities into turn events. It is pure
//!   Rust and knows nothing about ONNX, so it is tested with synthetic
//!   probability sequences.
//! * [`silero`] runs the Silero VAD model (one shared model, per-stream
//!   recurrent state, batched across streams) with one of two engines:
//!   `native` (the network in Rust, weights read from the ONNX file by
//!   `onnx`, arithmetic in `kernels`) or `onnxruntime`.
//! * [`stream`] ties both together for one audio stream, and feeds many streams
//!   as one batch.

mod error;
mod kernels;
mod native;
mod onnx;
mod onnxruntime;
mod rate;
pub mod silero;
mod state;
pub mod stream;
pub mod turn;

pub use error::VadError;
pub use onnxruntime::{init_onnxruntime, onnxruntime_initialised};
pub use rate::SampleRate;
pub use silero::SileroVad;
pub use state::{SileroState, SileroVadOptions, VadBackend};
pub use stream::{FrameResampler, VadEvent, VadStream, feed_batch};
pub use turn::{TurnConfig, TurnDetector, TurnEvent};
