//! Python surface of the Realtime server: start, serve, stop.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::engine::PyEngine;
use super::errors::{ServerAddressError, ServerConfigError, ServerError};
use crate::protocol::SessionDefaults;
use crate::transport::{RealtimeServer, ServerConfig, TransportError};

impl From<TransportError> for PyErr {
    fn from(e: TransportError) -> Self {
        let msg = e.to_string();
        match e {
            TransportError::Bind { .. } => ServerAddressError::new_err(msg),
            TransportError::InvalidConfig(_) => ServerConfigError::new_err(msg),
            _ => ServerError::new_err(msg),
        }
    }
}

/// The `OpenAI` Realtime-compatible WebSocket server around an engine.
#[pyclass(name = "RealtimeServer", module = "speech_to_speech._core", frozen)]
pub struct PyRealtimeServer {
    inner: Mutex<RealtimeServer>,
    host: String,
}

impl PyRealtimeServer {
    fn with<T>(&self, f: impl FnOnce(&mut RealtimeServer) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

/// Read the server-wide session defaults from a dict of CLI values.
fn session_defaults(d: &Bound<'_, PyDict>) -> PyResult<SessionDefaults> {
    let mut out = SessionDefaults::default();
    for (k, v) in d.iter() {
        let key: String = k.extract()?;
        match key.as_str() {
            "instructions" => out.instructions = v.extract()?,
            "chat_size" => out.chat_size = v.extract()?,
            "speculation" => out.speculation = v.extract()?,
            "prefill" => out.prefill = v.extract()?,
            "soft_end_ms" => out.soft_end_ms = v.extract()?,
            "live_transcription" => out.live_transcription = v.extract()?,
            "threshold" => out.threshold = v.extract()?,
            "prefix_padding_ms" => out.prefix_padding_ms = v.extract()?,
            "silence_duration_ms" => out.silence_duration_ms = v.extract()?,
            "min_speech_ms" => out.min_speech_ms = v.extract()?,
            "input_rate" => {
                let rate: u32 = v.extract()?;
                if !(8_000..=96_000).contains(&rate) {
                    return Err(ServerConfigError::new_err(format!(
                        "input_rate {rate} is out of range: use 8000 to 96000 Hz"
                    )));
                }
                out.input_rate = rate;
            }
            "always_transcribe" => out.always_transcribe = v.extract()?,
            "max_speech_ms" => {
                let ms: Option<f64> = v.extract()?;
                out.max_speech_ms = ms.filter(|m| m.is_finite());
            }
            other => {
                return Err(ServerConfigError::new_err(format!(
                    "unknown session default '{other}'"
                )));
            }
        }
    }
    Ok(out)
}

#[pymethods]
impl PyRealtimeServer {
    /// A stopped server; `start()` binds and serves in the background.
    #[new]
    #[pyo3(
        signature = (engine, *, host="127.0.0.1".to_owned(), port=8765, api_key=None, max_message_bytes=16*1024*1024, backends=None, defaults=None),
        text_signature = "(engine, *, host='127.0.0.1', port=8765, api_key=None, max_message_bytes=16777216, backends=None, defaults=None)"
    )]
    #[expect(clippy::too_many_arguments, reason = "keyword-only Python signature")]
    fn new(
        py: Python<'_>,
        engine: PyRef<'_, PyEngine>,
        host: String,
        port: u16,
        api_key: Option<String>,
        max_message_bytes: usize,
        backends: Option<Bound<'_, PyDict>>,
        defaults: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let defaults = match defaults {
            None => SessionDefaults::default(),
            Some(d) => session_defaults(&d)?,
        };
        let backends = match backends {
            None => serde_json::Value::Null,
            Some(d) => {
                let text: String = py
                    .import("json")?
                    .getattr("dumps")?
                    .call1((d,))?
                    .extract()?;
                serde_json::from_str(&text)
                    .map_err(|e| ServerConfigError::new_err(format!("backends: {e}")))?
            }
        };
        let config = ServerConfig {
            host: host.clone(),
            port,
            api_key,
            max_message_bytes,
            backends,
            defaults,
            ..ServerConfig::default()
        };
        let server = RealtimeServer::new(engine.engine(), config)?;
        Ok(Self {
            inner: Mutex::new(server),
            host,
        })
    }

    /// Bind and start serving; returns at once.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.with(RealtimeServer::start))?;
        Ok(())
    }

    /// Block until `stop()` is called (from another thread) or Ctrl-C.
    /// The GIL is released while waiting; signals are checked every 100 ms.
    fn serve_forever(&self, py: Python<'_>) -> PyResult<()> {
        if !self.with(|s| s.is_running()) {
            self.start(py)?;
        }
        loop {
            py.detach(|| std::thread::sleep(Duration::from_millis(100)));
            if let Err(e) = py.check_signals() {
                py.detach(|| self.with(RealtimeServer::stop));
                return Err(e);
            }
            if !self.with(|s| s.is_running()) {
                return Ok(());
            }
        }
    }

    /// Close every connection and stop serving. Safe to call twice.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.with(RealtimeServer::stop));
    }

    /// The bound port (useful with `port=0`); `None` while stopped.
    #[getter]
    fn port(&self) -> Option<u16> {
        self.with(|s| s.local_addr().map(|a| a.port()))
    }

    /// The interface it binds.
    #[getter]
    fn host(&self) -> String {
        self.host.clone()
    }

    /// Whether it is serving.
    #[getter]
    fn running(&self) -> bool {
        self.with(|s| s.is_running())
    }

    /// Open WebSocket sessions.
    #[getter]
    fn sessions(&self) -> usize {
        self.with(|s| s.connections())
    }

    /// `ws://host:port/v1/realtime` while running.
    #[getter]
    fn url(&self) -> Option<String> {
        self.with(|s| s.local_addr().map(|a| format!("ws://{a}/v1/realtime")))
    }

    fn __repr__(&self) -> String {
        match self.url() {
            Some(u) => format!("RealtimeServer(url={u:?})"),
            None => format!("RealtimeServer(host={:?}, stopped)", self.host),
        }
    }
}
