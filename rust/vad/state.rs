//! The Silero types the dispatcher and both engines share: settings, the
//! choice of engine, and the recurrent state of one stream.

use std::fmt;
use std::str::FromStr;

use super::error::VadError;
use super::rate::SampleRate;

/// Width of one half (h or c) of Silero's recurrent state per stream.
pub(crate) const STATE_WIDTH: usize = 128;

/// Which code computes the model (the VAD backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum VadBackend {
    /// Native when the file is recognised, else ONNX Runtime.
    #[default]
    Auto,
    /// The Rust re-implementation; ONNX Runtime is not needed.
    Native,
    /// ONNX Runtime ([`super::init_onnxruntime`] must have run).
    OnnxRuntime,
}

impl VadBackend {
    /// The name used in configuration: `auto`, `native` or `onnxruntime`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::OnnxRuntime => "onnxruntime",
        }
    }
}

impl fmt::Display for VadBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VadBackend {
    type Err = VadError;

    fn from_str(s: &str) -> Result<Self, VadError> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "onnxruntime" => Ok(Self::OnnxRuntime),
            other => Err(VadError::InvalidConfig(format!(
                "unknown VAD backend {other:?}: use auto, native or onnxruntime"
            ))),
        }
    }
}

/// Model settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SileroVadOptions {
    /// Which backend runs the model.
    pub backend: VadBackend,
    /// Threads ONNX Runtime uses inside one call. One is fastest for this
    /// small model: more threads cost more in hand-off than they save. The
    /// native engine always runs on the calling thread.
    pub intra_op_threads: usize,
    /// Let idle ONNX Runtime threads spin. Off by default: with one thread
    /// there is nothing to wake, and spinning burns a core shared with
    /// everything else.
    pub allow_spinning: bool,
}

impl Default for SileroVadOptions {
    fn default() -> Self {
        Self {
            backend: VadBackend::Auto,
            intra_op_threads: 1,
            allow_spinning: false,
        }
    }
}

/// The recurrent state of one stream: LSTM state and the last samples of the
/// previous chunk, which the model sees as context.
#[derive(Debug, Clone)]
pub struct SileroState {
    rate: SampleRate,
    /// `[h; c]`, 128 values each.
    pub(crate) state: [f32; 2 * STATE_WIDTH],
    pub(crate) context: [f32; 64],
}

impl SileroState {
    /// A fresh state for audio at `rate`.
    pub fn new(rate: SampleRate) -> Self {
        Self {
            rate,
            state: [0.0; 2 * STATE_WIDTH],
            context: [0.0; 64],
        }
    }

    /// The rate this state runs at.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Forget everything, as at the start of a stream.
    pub fn reset(&mut self) {
        self.state.fill(0.0);
        self.context.fill(0.0);
    }
}

impl AsMut<SileroState> for SileroState {
    fn as_mut(&mut self) -> &mut SileroState {
        self
    }
}
