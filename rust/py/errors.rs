//! The Python exception tree, mapped from the Rust error enums variant by variant.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::{PyErr, create_exception};

use crate::audio::pcm::PcmError;
use crate::audio::resample::ResampleError;

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
    SessionLimitError,
    SpeechToSpeechError,
    "The engine already serves its maximum number of sessions."
);
create_exception!(
    speech_to_speech,
    StageFailedError,
    SpeechToSpeechError,
    "A model stage refused a job (overloaded or shut down)."
);

/// Add every exception class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("SpeechToSpeechError", py.get_type::<SpeechToSpeechError>())?;
    m.add("AudioFormatError", py.get_type::<AudioFormatError>())?;
    m.add("OddByteCountError", py.get_type::<OddByteCountError>())?;
    m.add("BufferTooSmallError", py.get_type::<BufferTooSmallError>())?;
    m.add("SessionLimitError", py.get_type::<SessionLimitError>())?;
    m.add("StageFailedError", py.get_type::<StageFailedError>())?;
    m.add(
        "UnsupportedSampleRateError",
        py.get_type::<UnsupportedSampleRateError>(),
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
