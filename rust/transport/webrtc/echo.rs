//! An echo server over WebRTC, for tests and measurements: audio in goes back out, `oai-events` messages come back.
//!
//! It serves `POST /v1/realtime/calls` (the real handler, [`super::http::post_call`])
//! on its own runtime. Each call's task sends every decoded frame back
//! (through the same resampling, queueing, pacing and encoding as any
//! outgoing audio; at [`EchoConfig::echo_rate`] when that is not 48 kHz)
//! and logs how long each frame took from the arrival of its packet to the
//! departure of its echo. On `oai-events` it returns each JSON message as
//! it came, answers text that is not JSON with the Realtime `error` event
//! (`invalid_json`), and sends `output_audio_buffer.started` / `.stopped` /
//! `.cleared` as the outgoing audio starts, runs out or is cleared. A few
//! messages drive it: `output_audio_buffer.clear` clears the outgoing audio,
//! `echo.tone` (`seconds`, `hz`) queues a tone all at once (a backlog to
//! clear), `echo.hang_up` ends the call from the server's side.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::call::{Call, CallEvent, CallHandle};
use super::config::{SAMPLE_RATE, WebRtcConfig, WebRtcError};
use super::endpoint::WebRtcEndpoint;
use super::http::{CALLS_PATH, post_call};
use crate::audio::resample::{ResampleError, Resampler};
use crate::protocol::{Dialect, parse_client_event};

/// Echo server settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EchoConfig {
    /// HTTP address (`POST /v1/realtime/calls`); port 0 picks a free one.
    pub http_addr: SocketAddr,
    /// The WebRTC endpoint.
    pub webrtc: WebRtcConfig,
    /// The rate echoed audio is handed back at: 48000 sends the decoded
    /// frames as they are; another rate resamples them down first, so the
    /// echo also goes through the outgoing resampler (as a session's
    /// 24 kHz audio does).
    pub echo_rate: u32,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            webrtc: WebRtcConfig::default(),
            echo_rate: SAMPLE_RATE,
        }
    }
}

/// Errors from starting the echo server.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EchoError {
    /// The WebRTC endpoint could not start.
    #[error(transparent)]
    WebRtc(#[from] WebRtcError),
    /// The HTTP port could not be bound, or the runtime not built.
    #[error("echo server: {0}")]
    Io(#[from] std::io::Error),
    /// `echo_rate` is not a rate the resampler converts.
    #[error(transparent)]
    Rate(#[from] ResampleError),
}

/// What the echo calls did, for the test to read.
#[derive(Debug, Default)]
struct Log {
    /// Per echoed frame: packet arrival to echo departure.
    latencies: Vec<Duration>,
    /// Ended calls: (id, reason).
    closed: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Shared {
    log: Mutex<Log>,
    changed: Condvar,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut log);
        self.changed.notify_all();
        out
    }
}

/// A running echo server; stops when dropped.
pub struct EchoServer {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    cancel: CancellationToken,
    http_addr: SocketAddr,
    endpoint: WebRtcEndpoint,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("http_addr", &self.http_addr)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct App {
    endpoint: WebRtcEndpoint,
    shared: Arc<Shared>,
    echo_rate: u32,
    runtime: tokio::runtime::Handle,
}

impl EchoServer {
    /// Bind both ports and serve in the background.
    pub fn start(config: EchoConfig) -> Result<Self, EchoError> {
        // Fail on a bad rate now rather than in every call.
        Resampler::new(SAMPLE_RATE, config.echo_rate)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s2s-webrtc-echo")
            .enable_all()
            .build()?;
        let cancel = CancellationToken::new();
        let endpoint = WebRtcEndpoint::bind(config.webrtc, runtime.handle(), cancel.clone())?;
        let std_listener = std::net::TcpListener::bind(config.http_addr)?;
        std_listener.set_nonblocking(true)?;
        let http_addr = std_listener.local_addr()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let shared = Arc::new(Shared::default());
        let app = App {
            endpoint: endpoint.clone(),
            shared: Arc::clone(&shared),
            echo_rate: config.echo_rate,
            runtime: runtime.handle().clone(),
        };
        let router = Router::new().route(CALLS_PATH, post(calls)).with_state(app);
        let stop = cancel.clone();
        runtime.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("echo server stopped: {e}");
            }
        });
        Ok(Self {
            runtime: Mutex::new(Some(runtime)),
            cancel,
            http_addr,
            endpoint,
            shared,
        })
    }

    /// The HTTP address (`http://{addr}/v1/realtime/calls`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The WebRTC endpoint.
    pub fn endpoint(&self) -> &WebRtcEndpoint {
        &self.endpoint
    }

    /// Arrival-to-departure time of every echoed frame so far.
    pub fn latencies(&self) -> Vec<Duration> {
        self.shared.with(|l| l.latencies.clone())
    }

    /// Ended calls so far: (id, [`super::CloseReason::as_str`]).
    pub fn closed(&self) -> Vec<(String, String)> {
        self.shared.with(|l| l.closed.clone())
    }

    /// Wait until call `id` has ended; its close reason, or `None` on timeout.
    pub fn wait_closed(&self, id: &str, timeout: Duration) -> Option<String> {
        let find = |log: &Log| {
            log.closed
                .iter()
                .find(|(c, _)| c == id)
                .map(|(_, r)| r.clone())
        };
        let log = self
            .shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (log, _) = self
            .shared
            .changed
            .wait_timeout_while(log, timeout, |log| find(log).is_none())
            .unwrap_or_else(PoisonError::into_inner);
        find(&log)
    }

    /// End every call and stop serving. Safe to call twice.
    pub fn stop(&self) {
        self.cancel.cancel();
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            // Calls send their DTLS close on cancel; give them a moment.
            let endpoint = self.endpoint.clone();
            if tokio::runtime::Handle::try_current().is_err() {
                runtime.block_on(async move {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while endpoint.calls() > 0 && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                });
            }
            runtime.shutdown_background();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn calls(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    post_call(&app.endpoint, &headers, &body, |call, _session| {
        app.runtime
            .spawn(echo(call, app.echo_rate, Arc::clone(&app.shared)));
    })
}

/// One call's echo loop.
async fn echo(call: Call, rate: u32, shared: Arc<Shared>) {
    let Call { handle, mut events } = call;
    let id = handle.id().to_string();
    let mut down = (rate != SAMPLE_RATE)
        .then(|| Resampler::new(SAMPLE_RATE, rate).ok())
        .flatten();
    let mut event_ids = 0u64;
    let mut reply = |handle: &CallHandle, mut v: Value| {
        event_ids += 1;
        v["event_id"] = json!(format!("event_echo{event_ids:06}"));
        let _ = handle.send_text(v.to_string());
    };
    while let Some(ev) = events.recv().await {
        match ev {
            CallEvent::Audio(frame) => {
                let samples = match &mut down {
                    Some(r) => {
                        let mut out = vec![0.0; r.output_len(frame.samples.len())];
                        match r.process_into(&frame.samples, &mut out) {
                            Ok(n) => out.truncate(n),
                            Err(_) => out.clear(),
                        }
                        out
                    }
                    None => frame.samples,
                };
                let _ = handle.send_audio_marked(samples, rate, frame.arrival);
            }
            CallEvent::MarkSent { origin, sent } => {
                let took = sent.saturating_duration_since(origin);
                shared.with(|l| l.latencies.push(took));
            }
            CallEvent::Message(text) => on_message(&handle, &text, &mut reply),
            CallEvent::InvalidMessage(reason) => reply(
                &handle,
                json!({"type": "error", "error": {"type": "invalid_request_error",
                    "code": "invalid_json", "message": reason, "param": null, "event_id": null}}),
            ),
            CallEvent::OutputStarted => {
                reply(&handle, json!({"type": "output_audio_buffer.started"}));
            }
            CallEvent::OutputStopped => {
                reply(&handle, json!({"type": "output_audio_buffer.stopped"}));
            }
            CallEvent::OutputCleared { dropped_samples } => reply(
                &handle,
                json!({"type": "output_audio_buffer.cleared",
                    "dropped_ms": dropped_samples * 1000 / u64::from(SAMPLE_RATE)}),
            ),
            CallEvent::Closed(reason) => {
                shared.with(|l| l.closed.push((id.clone(), reason.as_str().to_owned())));
                break;
            }
            _ => {}
        }
    }
}

fn on_message(handle: &CallHandle, text: &str, reply: &mut impl FnMut(&CallHandle, Value)) {
    let mut new_id = |prefix: &str| format!("{prefix}_echo");
    if let Err((event_id, e)) = parse_client_event(text, Dialect::Ga, &mut new_id)
        && e.code == "invalid_json"
    {
        reply(
            handle,
            json!({"type": "error", "error": e.to_error_body(event_id.as_deref())}),
        );
        return;
    }
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match v["type"].as_str() {
        Some("output_audio_buffer.clear") => {
            let _ = handle.clear_audio();
        }
        Some("echo.hang_up") => {
            let _ = handle.hang_up();
        }
        Some("echo.tone") => {
            let seconds = v["seconds"].as_f64().unwrap_or(1.0).clamp(0.0, 60.0);
            let hz = v["hz"].as_f64().unwrap_or(440.0);
            let rate = 24_000u32;
            let n = (seconds * f64::from(rate)) as usize;
            let step = std::f64::consts::TAU * hz / f64::from(rate);
            let tone = (0..n)
                .map(|i| (0.3 * (step * i as f64).sin()) as f32)
                .collect();
            let _ = handle.send_audio(tone, rate);
        }
        // Everything else comes back as it was sent.
        _ => {
            let _ = handle.send_text(text.to_owned());
        }
    }
}
