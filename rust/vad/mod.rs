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
mod kernels;
pub mod mel;
mod native;
mod onnx;
mod onnxruntime;
pub mod silero;
pub mod smart_turn;
pub mod stream;
pub mod turn;

use std::path::PathBuf;

use thiserror::Error;

pub use end_of_turn::{Action, CommitReason, Eagerness, EndOfTurnConfig, EndOfTurnPolicy};
pub use mel::LogMel;
pub use onnxruntime::{init_onnxruntime, onnxruntime_initialised};
pub use silero::{SileroState, SileroVad, SileroVadOptions, VadEngine};
pub use smart_turn::{SmartTurn, SmartTurnOptions, TurnVerdict};
pub use stream::{FrameResampler, VadEvent, VadStream, feed_batch};
pub use turn::{TurnConfig, TurnDetector, TurnEvent};

/// Errors from loading or running the VAD.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum VadError {
    /// The ONNX Runtime shared library could not be loaded. The caller should
    /// install it (`pip install onnxruntime`) or point `ORT_DYLIB_PATH` at
    /// `libonnxruntime.so`.
    #[error(
        "ONNX Runtime could not be loaded from {path:?}: {reason}. Install it with \
         `pip install onnxruntime` (or onnxruntime-gpu), or set ORT_DYLIB_PATH to libonnxruntime.so"
    )]
    OnnxRuntimeNotFound {
        /// The library path that was tried.
        path: PathBuf,
        /// Why loading failed.
        reason: String,
    },
    /// A model was used before [`init_onnxruntime`] loaded the runtime. The
    /// caller should call it once at start-up (the Python package does this
    /// in `speech_to_speech.vad.init_onnxruntime`).
    #[error(
        "ONNX Runtime is not initialised: call init_onnxruntime(path) first \
         (Python: speech_to_speech.vad.init_onnxruntime())"
    )]
    OnnxRuntimeNotInitialised,
    /// The model file does not exist. The caller should install the model
    /// package (`pip install --no-deps silero-vad`) or pass the right path.
    #[error(
        "Silero VAD model not found at {path:?}. Install it with `pip install --no-deps silero-vad` \
         or pass --vad_model_path"
    )]
    ModelNotFound {
        /// The path that was given.
        path: PathBuf,
    },
    /// The Smart Turn model file does not exist. The caller should install
    /// the package that ships it or pass the right path.
    #[error(
        "Smart Turn model not found at {path:?}. Install it with \
         `pip install --no-deps \"pipecat-ai>=1.14,<2\"` or pass --turn_model_path"
    )]
    TurnModelNotFound {
        /// The path that was given.
        path: PathBuf,
    },
    /// The Silero model runs only at 8 kHz and 16 kHz. The caller should
    /// resample the input (see [`FrameResampler`]).
    #[error(
        "unsupported sample rate {rate} Hz: Silero VAD runs at 8000 or 16000 Hz; resample first"
    )]
    UnsupportedSampleRate {
        /// The rate that was asked for.
        rate: u32,
    },
    /// The engine could not load or run the model: ONNX Runtime failed, or
    /// the file does not have Silero's inputs and outputs, or (native engine)
    /// its tensors are not those of a Silero v5/v6 network. The caller should
    /// check the model file (a Silero v5/v6 `silero_vad.onnx`) and the
    /// runtime version, or try the other engine.
    #[error("Silero VAD model error: {0}")]
    Model(String),
    /// A configuration value is out of range. The caller should fix the value
    /// named in the message.
    #[error("invalid VAD configuration: {0}")]
    InvalidConfig(String),
    /// Inputs that do not fit together (batch sizes, chunk lengths, mixed
    /// sample rates in one batch). The caller should fix the call.
    #[error("invalid VAD input: {0}")]
    InvalidInput(String),
}

impl From<ort::Error> for VadError {
    fn from(e: ort::Error) -> Self {
        Self::Model(e.to_string())
    }
}

/// The two rates the Silero model runs at natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleRate {
    /// 8 kHz: 256-sample chunks (32 ms) with 32 samples of context.
    Hz8000,
    /// 16 kHz: 512-sample chunks (32 ms) with 64 samples of context.
    Hz16000,
}

impl SampleRate {
    /// The native rate for `hz`, or [`VadError::UnsupportedSampleRate`].
    pub fn from_hz(hz: u32) -> Result<Self, VadError> {
        match hz {
            8000 => Ok(Self::Hz8000),
            16000 => Ok(Self::Hz16000),
            rate => Err(VadError::UnsupportedSampleRate { rate }),
        }
    }

    /// Samples per second.
    pub const fn hz(self) -> u32 {
        match self {
            Self::Hz8000 => 8000,
            Self::Hz16000 => 16000,
        }
    }

    /// New samples the model consumes per call.
    pub const fn chunk_len(self) -> usize {
        match self {
            Self::Hz8000 => 256,
            Self::Hz16000 => 512,
        }
    }

    /// Samples of the previous chunk prepended to each input.
    pub const fn context_len(self) -> usize {
        match self {
            Self::Hz8000 => 32,
            Self::Hz16000 => 64,
        }
    }

    /// Milliseconds of audio in `samples` samples (floored).
    pub const fn samples_to_ms(self, samples: u64) -> u64 {
        samples * 1000 / self.hz() as u64
    }

    /// Samples in `ms` milliseconds (rounded to the nearest sample).
    pub fn ms_to_samples(self, ms: f64) -> u64 {
        (ms * f64::from(self.hz()) / 1000.0).round() as u64
    }
}
