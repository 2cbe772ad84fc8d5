//! Python surface of the run modes and clients: start them, wait on them, stop them.
//!
//! Everything here only starts and stops Rust transports; the audio goes
//! through them without Python. Waiting releases the GIL and checks for
//! Ctrl-C every 100 ms.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::engine::PyEngine;
use super::errors::{ConnectionFailedError, ServerConfigError, ServerError};
use super::realtime::session_defaults;
use crate::audio::ns::NsPreset;
use crate::protocol::SessionDefaults;
use crate::transport::listen_and_play::{ListenAndPlay, ListenAndPlayConfig};
use crate::transport::local::{LocalConfig, LocalMode};
use crate::transport::socket::{
    DEFAULT_CHUNK_SAMPLES, DEFAULT_RECV_PORT, DEFAULT_SEND_PORT, DEFAULT_SOCKET_RATE,
};
use crate::transport::talk::{TalkClient, TalkConfig, TalkEvent};
use crate::transport::websocket::DEFAULT_OUTPUT_RATE;
use crate::transport::{
    DEFAULT_HOST, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PORT, ModeError, SocketConfig, SocketServer,
    WebSocketConfig, WebSocketServer,
};

impl From<ModeError> for PyErr {
    fn from(e: ModeError) -> Self {
        match e {
            ModeError::Device(e) => e.into(),
            ModeError::Engine(e) => e.into(),
            ModeError::Rate(e) => e.into(),
            ModeError::Connect(m) => ConnectionFailedError::new_err(m),
            ModeError::InvalidConfig(m) => ServerConfigError::new_err(m),
            other => ServerError::new_err(other.to_string()),
        }
    }
}

/// Wait, with the GIL released, until `running` turns false or Ctrl-C
/// (then `stop` runs and the `KeyboardInterrupt` is raised).
fn wait_while(py: Python<'_>, running: impl Fn() -> bool, stop: impl Fn() + Send) -> PyResult<()> {
    loop {
        if !running() {
            return Ok(());
        }
        py.detach(|| std::thread::sleep(Duration::from_millis(100)));
        if let Err(e) = py.check_signals() {
            py.detach(stop);
            return Err(e);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn defaults_of(py: Python<'_>, d: Option<&Bound<'_, PyDict>>) -> PyResult<SessionDefaults> {
    d.map_or_else(
        || Ok(SessionDefaults::default()),
        |d| session_defaults(py, d.as_any()),
    )
}

fn preset(name: Option<&str>) -> PyResult<Option<NsPreset>> {
    Ok(name.map(str::parse).transpose()?)
}

/// `--mode socket`: the original project's TCP protocol (see `listen_and_play`).
#[pyclass(name = "SocketServer", module = "speech_to_speech._core", frozen)]
pub struct PySocketServer(Mutex<SocketServer>);

#[pymethods]
impl PySocketServer {
    /// A stopped server; `start()` binds both ports.
    #[new]
    #[pyo3(signature = (engine, *, host=DEFAULT_HOST.to_owned(), send_port=DEFAULT_SEND_PORT, recv_port=DEFAULT_RECV_PORT, send_rate=DEFAULT_SOCKET_RATE, recv_rate=DEFAULT_SOCKET_RATE, list_play_chunk_size=DEFAULT_CHUNK_SAMPLES, defaults=None))]
    #[expect(clippy::too_many_arguments, reason = "keyword-only Python signature")]
    fn new(
        py: Python<'_>,
        engine: PyRef<'_, PyEngine>,
        host: String,
        send_port: u16,
        recv_port: u16,
        send_rate: u32,
        recv_rate: u32,
        list_play_chunk_size: usize,
        defaults: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let config = SocketConfig {
            host,
            send_port,
            recv_port,
            send_rate,
            recv_rate,
            chunk_samples: list_play_chunk_size,
            defaults: defaults_of(py, defaults.as_ref())?,
            ..SocketConfig::default()
        };
        Ok(Self(Mutex::new(SocketServer::new(
            engine.engine(),
            config,
        )?)))
    }

    /// Bind and serve in the background.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| lock(&self.0).start())?;
        Ok(())
    }

    /// Serve until `stop()` (from another thread) or Ctrl-C.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        if !lock(&self.0).is_running() {
            self.start(py)?;
        }
        wait_while(py, || lock(&self.0).is_running(), || lock(&self.0).stop())
    }

    /// End every conversation and stop. Safe to call twice.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| lock(&self.0).stop());
    }

    /// The microphone port clients send to (`None` while stopped).
    #[getter]
    fn send_port(&self) -> Option<u16> {
        lock(&self.0).addrs().map(|(m, _)| m.port())
    }

    /// The port clients read the answer from (`None` while stopped).
    #[getter]
    fn recv_port(&self) -> Option<u16> {
        lock(&self.0).addrs().map(|(_, s)| s.port())
    }

    /// Whether it is serving.
    #[getter]
    fn running(&self) -> bool {
        lock(&self.0).is_running()
    }

    /// Conversations open now.
    #[getter]
    fn conversations(&self) -> usize {
        lock(&self.0).conversations()
    }
}

/// `--mode websocket`: raw PCM16 frames over a plain WebSocket at `/`.
#[pyclass(name = "WebSocketServer", module = "speech_to_speech._core", frozen)]
pub struct PyWebSocketServer(Mutex<WebSocketServer>);

#[pymethods]
impl PyWebSocketServer {
    /// A stopped server; `start()` binds.
    #[new]
    #[pyo3(signature = (engine, *, host=DEFAULT_HOST.to_owned(), port=DEFAULT_PORT, output_rate=DEFAULT_OUTPUT_RATE, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, defaults=None))]
    fn new(
        py: Python<'_>,
        engine: PyRef<'_, PyEngine>,
        host: String,
        port: u16,
        output_rate: u32,
        max_message_bytes: usize,
        defaults: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let config = WebSocketConfig {
            host,
            port,
            output_rate,
            max_message_bytes,
            defaults: defaults_of(py, defaults.as_ref())?,
            ..WebSocketConfig::default()
        };
        Ok(Self(Mutex::new(WebSocketServer::new(
            engine.engine(),
            config,
        )?)))
    }

    /// Bind and serve in the background.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| lock(&self.0).start())?;
        Ok(())
    }

    /// Serve until `stop()` (from another thread) or Ctrl-C.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        if !lock(&self.0).is_running() {
            self.start(py)?;
        }
        wait_while(py, || lock(&self.0).is_running(), || lock(&self.0).stop())
    }

    /// Close every connection and stop. Safe to call twice.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| lock(&self.0).stop());
    }

    /// The bound port (`None` while stopped).
    #[getter]
    fn port(&self) -> Option<u16> {
        lock(&self.0).local_addr().map(|a| a.port())
    }

    /// `ws://host:port/` while running.
    #[getter]
    fn url(&self) -> Option<String> {
        lock(&self.0).local_addr().map(|a| format!("ws://{a}/"))
    }

    /// Whether it is serving.
    #[getter]
    fn running(&self) -> bool {
        lock(&self.0).is_running()
    }

    /// Open connections.
    #[getter]
    fn connections(&self) -> usize {
        lock(&self.0).connections()
    }
}

/// `--mode local`: one conversation on this machine's microphone and speaker.
/// Starts at once (devices open, session created).
#[pyclass(name = "LocalMode", module = "speech_to_speech._core", frozen)]
pub struct PyLocalMode(Mutex<LocalMode>);

#[pymethods]
impl PyLocalMode {
    #[new]
    #[pyo3(signature = (engine, *, input_device=None, output_device=None, aec=true, block_mic_during_playback=false, barge_in_min_ms=500.0, output_rate=24000, defaults=None))]
    #[expect(clippy::too_many_arguments, reason = "keyword-only Python signature")]
    fn new(
        py: Python<'_>,
        engine: PyRef<'_, PyEngine>,
        input_device: Option<String>,
        output_device: Option<String>,
        aec: bool,
        block_mic_during_playback: bool,
        barge_in_min_ms: f64,
        output_rate: u32,
        defaults: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let config = LocalConfig {
            input_device,
            output_device,
            aec,
            block_mic_during_playback,
            barge_in_min_ms,
            output_rate,
            defaults: defaults_of(py, defaults.as_ref())?,
        };
        let engine = engine.engine();
        let mode = py.detach(|| LocalMode::start(&engine, &config))?;
        Ok(Self(Mutex::new(mode)))
    }

    /// Run until `stop()`, Ctrl-C or a device failure (see `failure`).
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        wait_while(py, || lock(&self.0).is_running(), || lock(&self.0).stop())
    }

    /// Stop: playback cut, streams and session closed. Safe to call twice.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| lock(&self.0).stop());
    }

    /// Whether it runs.
    #[getter]
    fn running(&self) -> bool {
        lock(&self.0).is_running()
    }

    /// Why it stopped by itself (the device error), or `None`.
    #[getter]
    fn failure(&self) -> Option<String> {
        lock(&self.0).failure()
    }

    /// The session's id.
    #[getter]
    fn session_id(&self) -> String {
        lock(&self.0).session().id().to_owned()
    }

    /// The devices opened: `{"input": name, "output": name}`.
    #[getter]
    fn devices<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let guard = lock(&self.0);
        let (i, o) = guard.devices();
        d.set_item("input", &i.device)?;
        d.set_item("output", &o.device)?;
        Ok(d)
    }
}

/// `speech-to-speech talk`: a microphone-and-speaker client for a Realtime
/// server. Connects and starts at once; `next_event` gives the transcripts.
#[pyclass(name = "TalkClient", module = "speech_to_speech._core", frozen)]
pub struct PyTalkClient(Mutex<TalkClient>);

#[pymethods]
impl PyTalkClient {
    #[new]
    #[pyo3(signature = (*, url, api_key=None, input_device=None, output_device=None, aec=true, block_mic_during_playback=false, noise_reduction=None, instructions=None, voice=None, transcription_model="gpt-4o-mini-transcribe".to_owned(), connect_timeout=10.0))]
    #[expect(clippy::too_many_arguments, reason = "keyword-only Python signature")]
    fn new(
        py: Python<'_>,
        url: String,
        api_key: Option<String>,
        input_device: Option<String>,
        output_device: Option<String>,
        aec: bool,
        block_mic_during_playback: bool,
        noise_reduction: Option<&str>,
        instructions: Option<String>,
        voice: Option<String>,
        transcription_model: String,
        connect_timeout: f64,
    ) -> PyResult<Self> {
        let config = TalkConfig {
            url,
            api_key,
            input_device,
            output_device,
            aec,
            block_mic_during_playback,
            noise_reduction: preset(noise_reduction)?,
            instructions,
            voice,
            transcription_model,
            connect_timeout: Duration::from_secs_f64(connect_timeout.max(0.1)),
        };
        let client = py.detach(|| TalkClient::start(&config))?;
        Ok(Self(Mutex::new(client)))
    }

    /// The next event as a dict (`type`: `connected`, `user_transcript`,
    /// `assistant_delta`, `assistant_done`, `interrupted`, `error`,
    /// `closed`), waiting up to `timeout` seconds; `None` on timeout.
    #[pyo3(signature = (timeout=0.1))]
    fn next_event<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let wait = Duration::from_secs_f64(timeout.max(0.0));
        let Some(ev) = py.detach(|| lock(&self.0).next_event(wait)) else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        match ev {
            TalkEvent::Connected { model } => {
                d.set_item("type", "connected")?;
                d.set_item("model", model)?;
            }
            TalkEvent::UserTranscript { text } => {
                d.set_item("type", "user_transcript")?;
                d.set_item("text", text)?;
            }
            TalkEvent::AssistantDelta { delta } => {
                d.set_item("type", "assistant_delta")?;
                d.set_item("delta", delta)?;
            }
            TalkEvent::AssistantDone { text } => {
                d.set_item("type", "assistant_done")?;
                d.set_item("text", text)?;
            }
            TalkEvent::Interrupted { item_id, played_ms } => {
                d.set_item("type", "interrupted")?;
                d.set_item("item_id", item_id)?;
                d.set_item("played_ms", played_ms)?;
            }
            TalkEvent::ServerError { message } => {
                d.set_item("type", "error")?;
                d.set_item("message", message)?;
            }
            TalkEvent::Closed { reason } => {
                d.set_item("type", "closed")?;
                d.set_item("reason", reason)?;
            }
        }
        Ok(Some(d))
    }

    /// Whether the conversation goes on.
    #[getter]
    fn running(&self) -> bool {
        lock(&self.0).is_running()
    }

    /// Close the connection and the devices. Safe to call twice.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| lock(&self.0).stop());
    }
}

/// The socket mode's client: microphone to `send_port`, `recv_port` to the
/// speaker. Connects and starts at once.
#[pyclass(name = "ListenAndPlay", module = "speech_to_speech._core", frozen)]
pub struct PyListenAndPlay(Mutex<ListenAndPlay>);

#[pymethods]
impl PyListenAndPlay {
    #[new]
    #[pyo3(signature = (*, host="localhost".to_owned(), send_port=DEFAULT_SEND_PORT, recv_port=DEFAULT_RECV_PORT, send_rate=DEFAULT_SOCKET_RATE, recv_rate=DEFAULT_SOCKET_RATE, input_device=None, output_device=None, aec=true, block_mic_during_playback=false))]
    #[expect(clippy::too_many_arguments, reason = "keyword-only Python signature")]
    fn new(
        py: Python<'_>,
        host: String,
        send_port: u16,
        recv_port: u16,
        send_rate: u32,
        recv_rate: u32,
        input_device: Option<String>,
        output_device: Option<String>,
        aec: bool,
        block_mic_during_playback: bool,
    ) -> PyResult<Self> {
        let config = ListenAndPlayConfig {
            host,
            send_port,
            recv_port,
            send_rate,
            recv_rate,
            input_device,
            output_device,
            aec,
            block_mic_during_playback,
        };
        let client = py.detach(|| ListenAndPlay::start(&config))?;
        Ok(Self(Mutex::new(client)))
    }

    /// Run until the server closes, a device fails, `stop()` or Ctrl-C.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        wait_while(py, || lock(&self.0).is_running(), || lock(&self.0).stop())
    }

    /// Why it ended by itself, or `None`.
    #[getter]
    fn ended(&self) -> Option<String> {
        lock(&self.0).ended()
    }

    /// Whether it runs.
    #[getter]
    fn running(&self) -> bool {
        lock(&self.0).is_running()
    }

    /// Close both connections and the devices. Safe to call twice.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| lock(&self.0).stop());
    }
}
