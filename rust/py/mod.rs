//! Python bindings: the only module that imports pyo3.
//!
//! The extension is `speech_to_speech._core`; users import `speech_to_speech`.

mod audio;
mod engine;
pub(crate) mod errors;
mod frontend;
mod logging;
mod modes;
mod queue;
mod realtime;
mod resample;
mod smart_turn;
mod vad;
mod webrtc;

use pyo3::prelude::*;

/// The compiled core of speech-to-speech.
#[pymodule]
#[pyo3(name = "_core")]
mod core_module {
    #[pymodule_export]
    use super::audio::{
        alaw_decode, alaw_encode, float32_to_pcm16, int16_to_pcm16, mulaw_decode, mulaw_encode,
        pcm16_to_float32, pcm16_to_int16,
    };
    #[pymodule_export]
    use super::engine::{PyCancelToken, PyEngine, PySession, shutdown_workers};
    #[pymodule_export]
    use super::frontend::{
        PyAudioInput, PyAudioOutput, PyEchoCanceller, PyNoiseSuppressor, list_audio_devices,
    };
    #[pymodule_export]
    use super::logging::init_logging;
    #[pymodule_export]
    use super::modes::{
        PyListenAndPlay, PyLocalMode, PySocketServer, PyTalkClient, PyWebSocketServer,
    };
    #[pymodule_export]
    use super::queue::{PyAudioQueue, PyQueue};
    #[pymodule_export]
    use super::realtime::PyRealtimeServer;
    #[pymodule_export]
    use super::resample::{PyResampler, resample};
    #[pymodule_export]
    use super::smart_turn::{
        PyEndOfTurnPolicy, PySmartTurn, PyTurnVerdict, log_mel_features, sounds_unfinished,
    };
    #[pymodule_export]
    use super::vad::{
        PySileroVad, PyVadEvent, PyVadState, PyVadStream, feed_streams, init_onnxruntime,
        onnxruntime_initialised, speech_probabilities,
    };
    #[pymodule_export]
    use super::webrtc::PyWebRtcEchoServer;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("DEFAULTS", super::realtime::defaults(m.py())?)?;
        // Stage workers must be out of Python before the interpreter finalizes.
        let shutdown = m.getattr("shutdown_workers")?;
        m.py()
            .import("atexit")?
            .call_method1("register", (shutdown,))?;
        super::errors::register(m)
    }
}
