//! Python surface of the Realtime server: start, serve, stop.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::engine::PyEngine;
use super::errors::{ServerAddressError, ServerConfigError, ServerError};
use crate::protocol::SessionDefaults;
use crate::transport::tls::TlsFiles;
use crate::transport::webrtc::{WebRtcConfig, WebRtcError};
use crate::transport::{
    DEFAULT_HEADER_TIMEOUT, DEFAULT_HOST, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PORT,
    DEFAULT_SEND_TIMEOUT, RealtimeServer, ServerConfig, TransportError,
};

impl From<TransportError> for PyErr {
    fn from(e: TransportError) -> Self {
        let msg = e.to_string();
        match e {
            TransportError::Bind { .. } | TransportError::WebRtc(WebRtcError::Bind { .. }) => {
                ServerAddressError::new_err(msg)
            }
            TransportError::InvalidConfig(_)
            | TransportError::WebRtc(WebRtcError::InvalidConfig(_) | WebRtcError::NoInterface) => {
                ServerConfigError::new_err(msg)
            }
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

/// A Python object as JSON (through the `json` module: plain data only).
pub(crate) fn to_json(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<serde_json::Value> {
    let text: String = py
        .import("json")?
        .getattr("dumps")?
        .call1((obj,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| ServerConfigError::new_err(format!("{what}: {e}")))
}

/// The address a host name stands for (`localhost` -> `127.0.0.1`).
fn ip_of(host: &str, what: &str) -> PyResult<IpAddr> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
        .ok_or_else(|| ServerConfigError::new_err(format!("{what} '{host}' is not an IP address")))
}

/// The WebRTC endpoint's settings: the server's host, one UDP port.
fn webrtc_config(
    engine: &PyEngine,
    host: &str,
    port: Option<u16>,
    public_ip: Option<&str>,
) -> PyResult<Option<WebRtcConfig>> {
    let Some(port) = port else {
        if public_ip.is_some() {
            return Err(ServerConfigError::new_err(
                "webrtc_public_ip needs WebRTC on (a webrtc_port)",
            ));
        }
        return Ok(None);
    };
    Ok(Some(WebRtcConfig {
        host: ip_of(host, "host")?,
        port,
        public_ip: public_ip
            .map(|ip| ip_of(ip, "webrtc_public_ip"))
            .transpose()?,
        // Calls are sessions: the engine's limit answers first; this is the backstop.
        max_calls: engine.engine().config().max_sessions.max(1),
        ..WebRtcConfig::default()
    }))
}

fn tls_files(cert: Option<PathBuf>, key: Option<PathBuf>) -> PyResult<Option<TlsFiles>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        _ => Err(ServerConfigError::new_err(
            "TLS needs both tls_cert and tls_key (PEM files)",
        )),
    }
}

/// The server-wide session settings, from a dict in the protocol's names
/// (see `SessionDefaults::from_json`).
pub(crate) fn session_defaults(py: Python<'_>, d: &Bound<'_, PyAny>) -> PyResult<SessionDefaults> {
    let value = to_json(py, d, "defaults")?;
    SessionDefaults::from_json(&value).map_err(|e| {
        let param = e.param.as_deref().unwrap_or("defaults");
        ServerConfigError::new_err(format!("invalid server default {param}: {}", e.message))
    })
}

#[pymethods]
impl PyRealtimeServer {
    /// A stopped server; `start()` binds and serves in the background.
    #[new]
    #[pyo3(
        signature = (engine, *, host=DEFAULT_HOST.to_owned(), port=DEFAULT_PORT, api_key=None, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, backends=None, defaults=None, max_connections=0, send_timeout_s=DEFAULT_SEND_TIMEOUT.as_secs_f64(), header_timeout_s=DEFAULT_HEADER_TIMEOUT.as_secs_f64(), webrtc_port=None, webrtc_public_ip=None, tls_cert=None, tls_key=None)
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
        max_connections: usize,
        send_timeout_s: f64,
        header_timeout_s: f64,
        webrtc_port: Option<u16>,
        webrtc_public_ip: Option<String>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
    ) -> PyResult<Self> {
        let seconds = |name: &str, s: f64| {
            if s.is_finite() && s > 0.0 && s <= 3600.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(ServerConfigError::new_err(format!(
                    "{name} must be between 0 and 3600 seconds, not {s}"
                )))
            }
        };
        let send_timeout = seconds("send_timeout_s", send_timeout_s)?;
        let header_timeout = seconds("header_timeout_s", header_timeout_s)?;
        let defaults = match defaults {
            None => SessionDefaults::default(),
            Some(d) => session_defaults(py, d.as_any())?,
        };
        let backends = match backends {
            None => serde_json::Value::Null,
            Some(d) => to_json(py, d.as_any(), "backends")?,
        };
        let webrtc = webrtc_config(&engine, &host, webrtc_port, webrtc_public_ip.as_deref())?;
        let config = ServerConfig {
            host: host.clone(),
            port,
            api_key,
            max_message_bytes,
            backends,
            defaults,
            max_connections,
            send_timeout,
            header_timeout,
            webrtc,
            tls: tls_files(tls_cert, tls_key)?,
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
                // Ctrl-C stops at once; any other exception a signal handler
                // raises (the command's SIGTERM asks for a drain) leaves the
                // server to the caller.
                if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
                    py.detach(|| self.with(RealtimeServer::stop));
                }
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

    /// Stop gracefully: refuse new sessions (`/health` answers 503 with
    /// `"status": "draining"`), let running responses finish for up to
    /// `timeout_s`, closing each session with 1001 once it has none, then
    /// stop. Returns the sessions still open at the deadline (closed with
    /// 1001 too). Releases the GIL while it waits.
    fn drain(&self, py: Python<'_>, timeout_s: f64) -> PyResult<usize> {
        if !(timeout_s.is_finite() && timeout_s >= 0.0) {
            return Err(ServerConfigError::new_err(format!(
                "timeout_s must be a number of seconds >= 0, not {timeout_s}"
            )));
        }
        let timeout = Duration::from_secs_f64(timeout_s);
        Ok(py.detach(|| self.with(|s| s.drain(timeout))))
    }

    /// Whether `drain()` has begun.
    #[getter]
    fn draining(&self) -> bool {
        self.with(|s| s.is_draining())
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
    /// The settings every session starts with, in the protocol's names (as
    /// `defaults=` takes them, with every default filled in).
    #[getter]
    fn defaults<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = self.with(|s| s.config().defaults.to_json());
        py.import("json")?
            .getattr("loads")?
            .call1((value.to_string(),))
    }

    /// The largest client message answered normally, in bytes.
    #[getter]
    fn max_message_bytes(&self) -> usize {
        self.with(|s| s.config().max_message_bytes)
    }

    /// Whether clients must present an API key.
    #[getter]
    fn requires_api_key(&self) -> bool {
        self.with(|s| s.config().api_key.is_some())
    }

    #[getter]
    fn url(&self) -> Option<String> {
        let scheme = if self.with(|s| s.config().tls.is_some()) {
            "wss"
        } else {
            "ws"
        };
        self.with(|s| {
            s.local_addr()
                .map(|a| format!("{scheme}://{a}/v1/realtime"))
        })
    }

    /// `http(s)://host:port` while running: the page at `/`, `POST
    /// /v1/realtime/calls`, `POST /v1/realtime/client_secrets`.
    #[getter]
    fn http_url(&self) -> Option<String> {
        let scheme = if self.with(|s| s.config().tls.is_some()) {
            "https"
        } else {
            "http"
        };
        self.with(|s| s.local_addr().map(|a| format!("{scheme}://{a}")))
    }

    /// The UDP port of the WebRTC calls while running; `None` when WebRTC is off.
    #[getter]
    fn webrtc_port(&self) -> Option<u16> {
        self.with(|s| s.webrtc_port())
    }

    /// The ICE candidates every call's answer carries, as `ip:port`.
    #[getter]
    fn webrtc_candidates(&self) -> Vec<String> {
        self.with(|s| {
            s.webrtc_candidates()
                .iter()
                .map(ToString::to_string)
                .collect()
        })
    }

    /// WebRTC calls open now.
    #[getter]
    fn calls(&self) -> usize {
        self.with(|s| s.calls())
    }

    fn __repr__(&self) -> String {
        match self.url() {
            Some(u) => format!("RealtimeServer(url={u:?})"),
            None => format!("RealtimeServer(host={:?}, stopped)", self.host),
        }
    }
}

/// Every default the core starts from, for the command line and the docs:
/// the server's (`host`, `port`, `max_message_bytes`), the engine's
/// (`max_sessions`, workers) and a session's settings in the protocol's
/// names (see `RealtimeServer(defaults=...)`).
pub(crate) fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let engine = crate::engine::EngineConfig::default();
    let value = serde_json::json!({
        "host": DEFAULT_HOST,
        "port": DEFAULT_PORT,
        "max_message_bytes": DEFAULT_MAX_MESSAGE_BYTES,
        "max_connections_extra": crate::transport::DEFAULT_EXTRA_CONNECTIONS,
        "send_timeout_s": DEFAULT_SEND_TIMEOUT.as_secs_f64(),
        "header_timeout_s": DEFAULT_HEADER_TIMEOUT.as_secs_f64(),
        "stage_timeout_s": crate::engine::DEFAULT_STAGE_TIMEOUT.as_secs_f64(),
        "max_sessions": engine.max_sessions,
        "stt_workers": engine.stt_workers,
        "llm_workers": engine.llm_workers,
        "tts_workers": engine.tts_workers,
        "first_audio_priority": engine.first_audio_priority,
        "first_clause_max_words": engine.first_clause_max_words,
        "session": SessionDefaults::default().to_json(),
        "socket": {
            "send_port": crate::transport::socket::DEFAULT_SEND_PORT,
            "recv_port": crate::transport::socket::DEFAULT_RECV_PORT,
            "rate": crate::transport::socket::DEFAULT_SOCKET_RATE,
            "chunk_samples": crate::transport::socket::DEFAULT_CHUNK_SAMPLES,
        },
        "websocket_output_rate": crate::transport::websocket::DEFAULT_OUTPUT_RATE,
        "local": {
            "barge_in_min_ms": crate::transport::local::DEFAULT_BARGE_IN_MIN_MS,
        },
    });
    py.import("json")?
        .getattr("loads")?
        .call1((value.to_string(),))
}
