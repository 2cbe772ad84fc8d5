//! The Python exception tree, mapped from the Rust error enums variant by variant.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::{PyErr, PyTypeInfo, create_exception};

use crate::audio::pcm::PcmError;
use crate::audio::resample::ResampleError;
use crate::queue::{QueueConfigError as ConfigError, QueueError as RustQueueError};

create_exception!(
    speech_to_speech,
    SpeechToSpeechError,
    PyException,
    "Base class of every error raised by speech-to-speech."
);
create_exception!(
    speech_to_speech,
    AudioFormatError,
    SpeechToSpeechError,
    "Audio data that does not match the format it claims."
);
create_exception!(
    speech_to_speech,
    OddByteCountError,
    AudioFormatError,
    "PCM16 bytes with an odd length: a sample was cut in half."
);
create_exception!(
    speech_to_speech,
    BufferTooSmallError,
    AudioFormatError,
    "An output buffer shorter than the result needs."
);
create_exception!(
    speech_to_speech,
    UnsupportedSampleRateError,
    AudioFormatError,
    "A sample rate the resampler does not convert from or to."
);

create_exception!(
    speech_to_speech,
    AudioDeviceError,
    SpeechToSpeechError,
    "Base class of the audio device errors (microphone and speaker)."
);
create_exception!(
    speech_to_speech,
    AudioDeviceNotFoundError,
    AudioDeviceError,
    "No device matches the name or index (or a name matches several): see list_audio_devices()."
);
create_exception!(
    speech_to_speech,
    UnsupportedDeviceRateError,
    AudioDeviceError,
    "The device cannot run at the sample rate asked for; the message lists what it supports."
);
create_exception!(
    speech_to_speech,
    AudioStreamError,
    AudioDeviceError,
    "The audio backend refused the stream, or a running stream failed or was closed."
);
create_exception!(
    speech_to_speech,
    NoiseReductionError,
    SpeechToSpeechError,
    "An unknown noise reduction type: use near_field or far_field."
);
create_exception!(
    speech_to_speech,
    EngineError,
    SpeechToSpeechError,
    "The engine could not be built or refused a session; `.code` says which case."
);
create_exception!(
    speech_to_speech,
    SessionLimitError,
    EngineError,
    "The engine already serves its maximum number of sessions (code session_limit_reached)."
);
create_exception!(
    speech_to_speech,
    SessionError,
    SpeechToSpeechError,
    "A session refused a request; `.code` is the stable code the Realtime protocol sends \
     (conversation_already_has_active_response, input_audio_buffer_commit_empty, ...)."
);
create_exception!(
    speech_to_speech,
    StageFailedError,
    SessionError,
    "A model stage refused a job (overloaded or shut down; code server_overloaded)."
);
create_exception!(
    speech_to_speech,
    QueueError,
    SpeechToSpeechError,
    "Base class of the errors raised by speech_to_speech.Queue."
);
create_exception!(
    speech_to_speech,
    QueueFullError,
    QueueError,
    "The queue is full and its overflow policy refuses the item: retry later or drop it."
);
create_exception!(
    speech_to_speech,
    QueueEmptyError,
    QueueError,
    "Nothing to pop right now (try_pop): try again later or use the blocking pop."
);
create_exception!(
    speech_to_speech,
    QueueClosedError,
    QueueError,
    "The queue was closed (and, for a pop, is drained): the normal shutdown signal."
);
create_exception!(
    speech_to_speech,
    QueueTimeoutError,
    QueueError,
    "A blocking push or pop waited for its whole timeout; the queue is still usable."
);
create_exception!(
    speech_to_speech,
    QueueConfigError,
    QueueError,
    "A queue built with a bad capacity or overflow policy."
);
create_exception!(
    speech_to_speech,
    VadError,
    SpeechToSpeechError,
    "Base class of the voice-activity-detection errors."
);
create_exception!(
    speech_to_speech,
    OnnxRuntimeNotFoundError,
    VadError,
    "ONNX Runtime could not be loaded: `pip install onnxruntime` or set ORT_DYLIB_PATH."
);
create_exception!(
    speech_to_speech,
    OnnxRuntimeNotInitialisedError,
    VadError,
    "A model was used before init_onnxruntime() loaded ONNX Runtime."
);
create_exception!(
    speech_to_speech,
    ModelNotFoundError,
    VadError,
    "The model file is missing: `pip install --no-deps silero-vad` or pass its path."
);
create_exception!(
    speech_to_speech,
    ModelError,
    VadError,
    "The VAD engine could not load or run the model: ONNX Runtime failed, or the native engine \
     does not recognise the file."
);
create_exception!(
    speech_to_speech,
    VadConfigError,
    VadError,
    "A VAD setting is out of range."
);
create_exception!(
    speech_to_speech,
    VadInputError,
    VadError,
    "VAD inputs that do not fit together (batch sizes, chunk lengths, sample rates)."
);
create_exception!(
    speech_to_speech,
    ServerError,
    SpeechToSpeechError,
    "Base class of the Realtime server errors."
);
create_exception!(
    speech_to_speech,
    ServerAddressError,
    ServerError,
    "The server could not listen on its host and port: pick another port or free it."
);
create_exception!(
    speech_to_speech,
    ServerConfigError,
    ServerError,
    "A server setting is out of range."
);
create_exception!(
    speech_to_speech,
    ConnectionFailedError,
    SpeechToSpeechError,
    "A client (talk, listen_and_play) could not reach its server, or the server refused it."
);

/// Add every exception class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("SpeechToSpeechError", py.get_type::<SpeechToSpeechError>())?;
    m.add("AudioFormatError", py.get_type::<AudioFormatError>())?;
    m.add("OddByteCountError", py.get_type::<OddByteCountError>())?;
    m.add("BufferTooSmallError", py.get_type::<BufferTooSmallError>())?;
    m.add("AudioDeviceError", py.get_type::<AudioDeviceError>())?;
    m.add(
        "AudioDeviceNotFoundError",
        py.get_type::<AudioDeviceNotFoundError>(),
    )?;
    m.add(
        "UnsupportedDeviceRateError",
        py.get_type::<UnsupportedDeviceRateError>(),
    )?;
    m.add("AudioStreamError", py.get_type::<AudioStreamError>())?;
    m.add("NoiseReductionError", py.get_type::<NoiseReductionError>())?;
    m.add("EngineError", py.get_type::<EngineError>())?;
    m.add("SessionLimitError", py.get_type::<SessionLimitError>())?;
    m.add("SessionError", py.get_type::<SessionError>())?;
    m.add("StageFailedError", py.get_type::<StageFailedError>())?;
    m.add("VadError", py.get_type::<VadError>())?;
    m.add(
        "OnnxRuntimeNotFoundError",
        py.get_type::<OnnxRuntimeNotFoundError>(),
    )?;
    m.add(
        "OnnxRuntimeNotInitialisedError",
        py.get_type::<OnnxRuntimeNotInitialisedError>(),
    )?;
    m.add("ModelNotFoundError", py.get_type::<ModelNotFoundError>())?;
    m.add(
        "UnsupportedSampleRateError",
        py.get_type::<UnsupportedSampleRateError>(),
    )?;
    m.add("QueueError", py.get_type::<QueueError>())?;
    m.add("QueueFullError", py.get_type::<QueueFullError>())?;
    m.add("QueueEmptyError", py.get_type::<QueueEmptyError>())?;
    m.add("QueueClosedError", py.get_type::<QueueClosedError>())?;
    m.add("QueueTimeoutError", py.get_type::<QueueTimeoutError>())?;
    m.add("QueueConfigError", py.get_type::<QueueConfigError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("VadConfigError", py.get_type::<VadConfigError>())?;
    m.add("VadInputError", py.get_type::<VadInputError>())?;
    m.add("ServerError", py.get_type::<ServerError>())?;
    m.add("ServerAddressError", py.get_type::<ServerAddressError>())?;
    m.add("ServerConfigError", py.get_type::<ServerConfigError>())?;
    m.add(
        "ConnectionFailedError",
        py.get_type::<ConnectionFailedError>(),
    )?;
    Ok(())
}

impl From<PcmError> for PyErr {
    fn from(e: PcmError) -> Self {
        let msg = e.to_string();
        match e {
            PcmError::OddByteCount { .. } => OddByteCountError::new_err(msg),
            PcmError::OutputTooSmall { .. } => BufferTooSmallError::new_err(msg),
        }
    }
}

impl From<ResampleError> for PyErr {
    fn from(e: ResampleError) -> Self {
        let msg = e.to_string();
        match e {
            ResampleError::UnsupportedRate { .. } => UnsupportedSampleRateError::new_err(msg),
            ResampleError::OutputTooSmall { .. } => BufferTooSmallError::new_err(msg),
        }
    }
}
impl From<RustQueueError> for PyErr {
    fn from(e: RustQueueError) -> Self {
        let msg = e.to_string();
        match e {
            RustQueueError::Full => QueueFullError::new_err(msg),
            RustQueueError::Empty => QueueEmptyError::new_err(msg),
            RustQueueError::Closed => QueueClosedError::new_err(msg),
            RustQueueError::Timeout => QueueTimeoutError::new_err(msg),
        }
    }
}

impl From<ConfigError> for PyErr {
    fn from(e: ConfigError) -> Self {
        QueueConfigError::new_err(e.to_string())
    }
}
impl From<crate::vad::VadError> for PyErr {
    fn from(e: crate::vad::VadError) -> Self {
        use crate::vad::VadError as E;
        let msg = e.to_string();
        match e {
            E::OnnxRuntimeNotFound { .. } => OnnxRuntimeNotFoundError::new_err(msg),
            E::OnnxRuntimeNotInitialised => OnnxRuntimeNotInitialisedError::new_err(msg),
            E::ModelNotFound { .. } | E::TurnModelNotFound { .. } => {
                ModelNotFoundError::new_err(msg)
            }
            E::UnsupportedSampleRate { .. } => UnsupportedSampleRateError::new_err(msg),
            E::Model(_) => ModelError::new_err(msg),
            E::InvalidConfig(_) => VadConfigError::new_err(msg),
            E::InvalidInput(_) => VadInputError::new_err(msg),
        }
    }
}

/// An exception of class `T` with `message` and a `.code` attribute.
fn with_code<T: PyTypeInfo>(message: String, code: &str) -> PyErr {
    Python::attach(|py| {
        let made = T::type_object(py).call1((message.clone(),)).and_then(|e| {
            e.setattr("code", code)?;
            Ok(PyErr::from_value(e))
        });
        made.unwrap_or_else(|e| e)
    })
}

impl From<crate::engine::EngineError> for PyErr {
    fn from(e: crate::engine::EngineError) -> Self {
        use crate::engine::EngineError as E;
        match e {
            E::SessionLimit(_) => with_code::<SessionLimitError>(e.to_string(), e.code()),
            _ => with_code::<EngineError>(e.to_string(), e.code()),
        }
    }
}

impl From<crate::engine::SessionError> for PyErr {
    fn from(e: crate::engine::SessionError) -> Self {
        use crate::engine::SessionError as E;
        match e {
            E::Stage(_) => with_code::<StageFailedError>(e.to_string(), e.code()),
            _ => with_code::<SessionError>(e.to_string(), e.code()),
        }
    }
}

impl From<crate::audio::aec::AecError> for PyErr {
    fn from(e: crate::audio::aec::AecError) -> Self {
        use crate::audio::aec::AecError as E;
        let msg = e.to_string();
        match e {
            E::UnsupportedRate { .. } => UnsupportedSampleRateError::new_err(msg),
            E::FrameLength { .. } | E::OutputLength { .. } => AudioFormatError::new_err(msg),
        }
    }
}

impl From<crate::audio::ns::NsError> for PyErr {
    fn from(e: crate::audio::ns::NsError) -> Self {
        use crate::audio::ns::NsError as E;
        match e {
            E::Rate(e) => e.into(),
            E::UnknownPreset(_) => NoiseReductionError::new_err(e.to_string()),
            E::OutputLength { .. } => AudioFormatError::new_err(e.to_string()),
        }
    }
}

impl From<crate::audio::device::DeviceError> for PyErr {
    fn from(e: crate::audio::device::DeviceError) -> Self {
        use crate::audio::device::DeviceError as E;
        let msg = e.to_string();
        match e {
            E::NotFound { .. } | E::Ambiguous { .. } => AudioDeviceNotFoundError::new_err(msg),
            E::UnsupportedRate { .. } => UnsupportedDeviceRateError::new_err(msg),
            E::Rate(e) => e.into(),
            E::Buffer(e) => e.into(),
            E::Backend { .. } | E::StreamFailed { .. } | E::Closed { .. } | E::NoReference => {
                AudioStreamError::new_err(msg)
            }
        }
    }
}
