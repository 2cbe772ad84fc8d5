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
//! * [`smart_turn`] runs the Smart Turn v3 end-of-turn model on ONNX Runtime,
//!   fed by the Whisper log-mel front end in [`mel`]; [`end_of_turn`] is the
//!   pure policy that turns its verdicts (or the silence rule) into commits.

pub mod end_of_turn;
mod error;
mod kernels;
pub mod mel;
mod native;
mod onnx;
mod onnxruntime;
mod rate;
pub mod silero;
pub mod smart_turn;
mod state;
pub mod stream;
pub mod turn;

pub use end_of_turn::{Action, CommitReason, Eagerness, EndOfTurnConfig, EndOfTurnPolicy};
pub use error::VadError;
pub use mel::LogMel;
pub use onnxruntime::{init_onnxruntime, onnxruntime_initialised};
pub use rate::SampleRate;
pub use silero::SileroVad;
pub use smart_turn::{SmartTurn, SmartTurnOptions, TurnVerdict};
pub use state::{SileroState, SileroVadOptions, VadBackend};
pub use stream::{FrameResampler, VadEvent, VadStream, feed_batch};
pub use turn::{DEFAULT_SOFT_END_MS, TurnConfig, TurnDetector, TurnEvent};
