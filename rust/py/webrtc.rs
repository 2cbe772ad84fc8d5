//! Python surface of the WebRTC echo server: a test hook, not a product feature.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use pyo3::prelude::*;

use super::errors::{ServerAddressError, ServerConfigError, ServerError};
use crate::transport::webrtc::echo::{EchoConfig, EchoError, EchoServer};
use crate::transport::webrtc::{WebRtcConfig, WebRtcError};

impl From<EchoError> for PyErr {
    fn from(e: EchoError) -> Self {
        let msg = e.to_string();
        match e {
            EchoError::WebRtc(WebRtcError::Bind { .. }) | EchoError::Io(_) => {
                ServerAddressError::new_err(msg)
            }
            EchoError::WebRtc(WebRtcError::InvalidConfig(_)) | EchoError::Rate(_) => {
                ServerConfigError::new_err(msg)
            }
            _ => ServerError::new_err(msg),
        }
    }
}

fn ip(text: &str, what: &str) -> PyResult<IpAddr> {
    text.parse()
        .map_err(|_| ServerConfigError::new_err(format!("{what} '{text}' is not an IP address")))
}

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            ServerConfigError::new_err(format!("{what} must be a positive number of seconds"))
        })
}

/// FOR TESTS: a WebRTC echo server on `POST /v1/realtime/calls`.
///
/// Every decoded audio frame goes back out on the call's track, and every
/// JSON message on `oai-events` comes back (text that is not JSON gets the
/// Realtime `error` event). It runs the real endpoint, HTTP handler and call
/// tasks, so a WebRTC client can be tested against them without models.
#[pyclass(name = "WebRtcEchoServer", module = "speech_to_speech._core", frozen)]
pub struct PyWebRtcEchoServer {
    inner: EchoServer,
    http: SocketAddr,
}

impl PyWebRtcEchoServer {
    fn with<T>(&self, f: impl FnOnce(&EchoServer) -> T) -> T {
        f(&self.inner)
    }
}

#[pymethods]
impl PyWebRtcEchoServer {
    /// Start serving at once (HTTP on `host:port`, WebRTC on `webrtc_host:webrtc_port`).
    #[new]
    #[pyo3(
        signature = (*, host="127.0.0.1", port=0, webrtc_host="127.0.0.1", webrtc_port=0, public_ip=None, echo_rate=48000, max_calls=64, connect_timeout=30.0, disconnect_timeout=10.0),
        text_signature = "(*, host='127.0.0.1', port=0, webrtc_host='127.0.0.1', webrtc_port=0, public_ip=None, echo_rate=48000, max_calls=64, connect_timeout=30.0, disconnect_timeout=10.0)"
    )]
    #[expect(clippy::too_many_arguments, reason = "keyword-only Python signature")]
    fn new(
        py: Python<'_>,
        host: &str,
        port: u16,
        webrtc_host: &str,
        webrtc_port: u16,
        public_ip: Option<&str>,
        echo_rate: u32,
        max_calls: usize,
        connect_timeout: f64,
        disconnect_timeout: f64,
    ) -> PyResult<Self> {
        let config = EchoConfig {
            http_addr: SocketAddr::new(ip(host, "host")?, port),
            webrtc: WebRtcConfig {
                host: ip(webrtc_host, "webrtc_host")?,
                port: webrtc_port,
                public_ip: public_ip.map(|p| ip(p, "public_ip")).transpose()?,
                max_calls,
                connect_timeout: seconds(connect_timeout, "connect_timeout")?,
                disconnect_timeout: seconds(disconnect_timeout, "disconnect_timeout")?,
                ..WebRtcConfig::default()
            },
            echo_rate,
        };
        let server = py.detach(|| EchoServer::start(config))?;
        let http = server.http_addr();
        Ok(Self {
            inner: server,
            http,
        })
    }

    /// End every call and stop. Safe to call twice.
    fn stop(&self, py: Python<'_>) {
        py.detach(|| self.with(EchoServer::stop));
    }

    /// `http://host:port`.
    #[getter]
    fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The UDP port every call uses.
    #[getter]
    fn webrtc_port(&self) -> u16 {
        self.with(|s| s.endpoint().port())
    }

    /// The ICE candidates answers carry, as `ip:port`.
    #[getter]
    fn candidates(&self) -> Vec<String> {
        self.with(|s| {
            s.endpoint()
                .candidate_addrs()
                .iter()
                .map(ToString::to_string)
                .collect()
        })
    }

    /// Calls now open.
    #[getter]
    fn calls(&self) -> usize {
        self.with(|s| s.endpoint().calls())
    }

    /// Per echoed frame so far: ms from its packet's arrival to its echo's departure.
    fn latencies_ms(&self) -> Vec<f64> {
        self.with(|s| {
            s.latencies()
                .iter()
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect()
        })
    }

    /// Ended calls so far: (call id, reason).
    fn closed_calls(&self) -> Vec<(String, String)> {
        self.with(EchoServer::closed)
    }

    /// Wait (GIL released) until call `call_id` ends; its reason
    /// (`hang_up`, `ice_failed`, `local`, ...), or None after `timeout` s.
    #[pyo3(signature = (call_id, timeout=10.0))]
    fn wait_closed(&self, py: Python<'_>, call_id: &str, timeout: f64) -> PyResult<Option<String>> {
        let timeout = seconds(timeout, "timeout")?;
        Ok(py.detach(|| self.inner.wait_closed(call_id, timeout)))
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.stop(py);
    }

    fn __repr__(&self) -> String {
        format!(
            "WebRtcEchoServer(url={:?}, webrtc_port={})",
            self.url(),
            self.webrtc_port()
        )
    }
}
