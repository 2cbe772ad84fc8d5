//! What can go wrong loading or running the VAD.

use std::path::PathBuf;

use thiserror::Error;

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
