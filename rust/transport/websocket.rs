//! `--mode websocket`: a plain WebSocket of raw PCM, one conversation per connection.
//!
//! Not the Realtime protocol: binary frames carry raw 16 kHz int16 mono PCM
//! in, and the answer's int16 mono PCM out, at the output rate (16 kHz
//! unless `?output_rate=` or a `session_update` message says otherwise).
//! The first frame the server sends is a JSON text frame announcing the
//! rates:
//!
//! ```json
//! {"type": "session_created", "session_id": "sess_...", "input_rate": 16000, "output_rate": 16000, "events": true}
//! ```
//!
//! With `events` (on unless `?events=0`), JSON text frames also carry the
//! turn events and both sides' words, named as the engine names them
//! (`speech_started`, `input_transcript_completed`, `transcript_delta`,
//! `response_done`, ...). A client may send JSON text frames:
//! `{"type": "session_update", "output_rate": 24000}` (answered with
//! `session_updated`), `{"type": "commit"}` (end the turn now),
//! `{"type": "cancel"}` (stop the answer) and `{"type": "clear"}` (forget
//! the speech so far). Anything else, an odd-length binary frame or a frame
//! over the size limit is answered with an `error` frame and the
//! conversation goes on; a frame over twice the limit closes it (1009).
//!
//! The answer is paced to real time (see [`super::raw`]), so a client that
//! simply plays what it receives falls silent soon after the user barges in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::raw::{Out, Outgoing, check_rate, log_event, open_session};
use super::realtime::{TransportError, answer_close, close_code, close_with};
use super::runtime::{ConversationGuard, Served, sleep_until};
use crate::audio::pcm::{f32_to_pcm16, pcm16_to_f32};
use crate::engine::events::StopReason;
use crate::engine::{Engine, EngineError, EngineEvent, ResponseOptions, STT_RATE, Session};
use crate::protocol::SessionDefaults;

/// The rate of the answer's audio unless the client asks for another.
pub const DEFAULT_OUTPUT_RATE: u32 = 16_000;

/// Settings of the plain WebSocket server.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSocketConfig {
    /// Interface to bind.
    pub host: String,
    /// Port (0: any free port).
    pub port: u16,
    /// Rate of the answer unless a client asks for another.
    pub output_rate: u32,
    /// Largest frame answered normally; up to twice this gets an error
    /// frame, more closes the connection.
    pub max_message_bytes: usize,
    /// What every session starts with (the command line's settings).
    pub defaults: SessionDefaults,
    /// Runtime worker threads (0: one per core, at most 4).
    pub worker_threads: usize,
    /// A send that takes longer means the client stopped reading.
    pub send_timeout: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            host: super::realtime::DEFAULT_HOST.to_owned(),
            port: super::realtime::DEFAULT_PORT,
            output_rate: DEFAULT_OUTPUT_RATE,
            max_message_bytes: super::realtime::DEFAULT_MAX_MESSAGE_BYTES,
            defaults: SessionDefaults::default(),
            worker_threads: 0,
            send_timeout: Duration::from_secs(10),
        }
    }
}

struct App {
    engine: Arc<Engine>,
    config: WebSocketConfig,
    cancel: tokio_util::sync::CancellationToken,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// The plain WebSocket server. Owns its runtime; dropping it stops it.
pub struct WebSocketServer {
    engine: Arc<Engine>,
    config: WebSocketConfig,
    running: Option<(Served, SocketAddr)>,
}

impl std::fmt::Debug for WebSocketServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketServer")
            .field("config", &self.config)
            .field("addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl WebSocketServer {
    /// A stopped server around `engine`.
    pub fn new(engine: Arc<Engine>, config: WebSocketConfig) -> Result<Self, TransportError> {
        check_rate(config.output_rate)
            .map_err(|e| TransportError::InvalidConfig(format!("output_rate: {e}")))?;
        if config.max_message_bytes < 1024 {
            return Err(TransportError::InvalidConfig(
                "max_message_bytes must be at least 1024".into(),
            ));
        }
        Ok(Self {
            engine,
            config,
            running: None,
        })
    }

    /// Bind and serve `ws://host:port/` in the background; returns the address.
    pub fn start(&mut self) -> Result<SocketAddr, TransportError> {
        if self.running.is_some() {
            return Err(TransportError::AlreadyRunning);
        }
        let served = Served::new(self.config.worker_threads, "s2s-websocket")?;
        let (listener, addr) = served.bind(&self.config.host, self.config.port)?;
        let app = Arc::new(App {
            engine: Arc::clone(&self.engine),
            config: self.config.clone(),
            cancel: served.cancel.clone(),
            connections: Arc::clone(&served.connections),
        });
        let router = Router::new()
            .route("/", get(upgrade))
            .route("/health", get(health))
            .fallback(not_found)
            .with_state(app);
        let stop = served.cancel.clone();
        served.runtime.spawn(async move {
            let serving = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = serving {
                tracing::error!("websocket server stopped: {e}");
            }
        });
        tracing::info!("plain WebSocket server at ws://{addr}/ (raw 16 kHz PCM16 in)");
        self.running = Some((served, addr));
        Ok(addr)
    }

    /// Close every connection and stop.
    pub fn stop(&mut self) {
        if let Some((served, _)) = self.running.take() {
            served.stop();
        }
    }

    /// The bound address while running.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|(_, a)| *a)
    }

    /// Whether it is serving.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.running.as_ref().map_or(0, |(s, _)| s.open())
    }

    /// The settings.
    pub fn config(&self) -> &WebSocketConfig {
        &self.config
    }
}

impl Drop for WebSocketServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn health(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "mode": "websocket",
        "sessions": app.engine.session_count(),
        "connections": app.connections.load(std::sync::atomic::Ordering::Acquire),
    }))
    .into_response()
}

async fn not_found() -> Response {
    let body = json!({"error": {"code": "not_found",
        "message": "Not found: the plain WebSocket is served at / (raw PCM16 frames)."}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// What a connection asks for in its query string.
struct Params {
    output_rate: u32,
    events: bool,
}

fn params(app: &App, query: &HashMap<String, String>) -> Result<Params, String> {
    let output_rate = match query.get("output_rate") {
        None => app.config.output_rate,
        Some(r) => r
            .parse::<u32>()
            .ok()
            .and_then(|r| check_rate(r).ok())
            .ok_or_else(|| format!("unsupported output_rate {r:?}: {}", rates()))?,
    };
    let events = match query.get("events").map(String::as_str) {
        None | Some("1" | "true") => true,
        Some("0" | "false") => false,
        Some(other) => return Err(format!("events must be 0 or 1, not {other:?}")),
    };
    Ok(Params {
        output_rate,
        events,
    })
}

fn rates() -> String {
    let list: Vec<String> = crate::audio::resample::SUPPORTED_RATES
        .iter()
        .map(u32::to_string)
        .collect();
    format!("use one of {} Hz", list.join(", "))
}

async fn upgrade(
    State(app): State<Arc<App>>,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let body = json!({"error": {"code": "websocket_required",
                "message": format!("{}: connect with a WebSocket client.", rejection.body_text())}});
            return (rejection.status(), axum::Json(body)).into_response();
        }
    };
    let params = match params(&app, &query) {
        Ok(p) => p,
        Err(message) => {
            let body = json!({"error": {"code": "invalid_value", "message": message}});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let limit = app.config.max_message_bytes;
    ws.max_message_size(limit.saturating_mul(2))
        .max_frame_size(limit.saturating_mul(2))
        .on_upgrade(move |socket| async move {
            let _guard = ConversationGuard::new(&app.connections);
            connection(&app, socket, params).await;
        })
}

fn error_frame(code: &str, message: &str) -> String {
    json!({"type": "error", "code": code, "message": message}).to_string()
}

/// The JSON frame of an engine event a client may want (`None`: not sent).
fn event_json(ev: &EngineEvent) -> Option<Value> {
    let v = match ev {
        EngineEvent::SpeechStarted {
            item_id,
            audio_start_ms,
        } => json!({"item_id": item_id, "audio_start_ms": audio_start_ms}),
        EngineEvent::SpeechStopped {
            item_id,
            audio_end_ms,
        } => json!({"item_id": item_id, "audio_end_ms": audio_end_ms}),
        EngineEvent::InputTranscriptDelta { item_id, delta } => {
            json!({"item_id": item_id, "delta": delta})
        }
        EngineEvent::InputTranscriptCompleted {
            item_id,
            transcript,
            ..
        } => json!({"item_id": item_id, "transcript": transcript}),
        EngineEvent::ResponseCreated { response_id } => json!({"response_id": response_id}),
        EngineEvent::TranscriptDelta {
            response_id,
            item_id,
            delta,
            ..
        }
        | EngineEvent::TextDelta {
            response_id,
            item_id,
            delta,
            ..
        } => json!({"response_id": response_id, "item_id": item_id, "delta": delta}),
        EngineEvent::ContentPartDone {
            response_id,
            item_id,
            text,
            ..
        } => json!({"response_id": response_id, "item_id": item_id, "text": text}),
        EngineEvent::ResponseDone {
            response_id,
            status,
            reason,
            error,
            ..
        } => json!({"response_id": response_id, "status": status.as_str(),
            "reason": reason.map(StopReason::as_str), "error": error}),
        EngineEvent::Error { code, message, .. } => json!({"code": code, "message": message}),
        _ => return None,
    };
    let mut v = v;
    if let Value::Object(map) = &mut v {
        map.retain(|_, x| !x.is_null());
        map.insert("type".into(), ev.name().into());
    }
    Some(v)
}

/// One connection's session and what it still has to send.
struct Conversation {
    session: Session,
    out: Outgoing,
    events: bool,
    max_message_bytes: usize,
}

impl Conversation {
    fn announce(&mut self, kind: &str) {
        let c = self.session.config();
        let frame = json!({"type": kind, "session_id": self.session.id(),
            "input_rate": c.input_rate, "output_rate": c.output_rate, "events": self.events});
        self.out.push(Out::Text(frame.to_string()));
    }

    fn error(&mut self, code: &str, message: &str) {
        tracing::info!("{} client error {code}: {message}", self.session.id());
        self.out.push(Out::Text(error_frame(code, message)));
    }

    fn binary(&mut self, pcm: &[u8]) {
        if pcm.len() > self.max_message_bytes {
            let m = format!(
                "binary frame of {} bytes is over the {}-byte limit: dropped; send audio in \
                 frames of 20 to 200 ms",
                pcm.len(),
                self.max_message_bytes
            );
            return self.error("message_too_large", &m);
        }
        match pcm16_to_f32(pcm) {
            Ok(samples) => {
                if let Err(e) = self.session.feed_audio(&samples) {
                    self.error(e.code(), &e.to_string());
                }
            }
            Err(e) => self.error(
                "odd_byte_count",
                &format!("{e}: the frame was dropped; send whole 16-bit samples"),
            ),
        }
    }

    fn text(&mut self, text: &str) {
        let Ok(msg @ Value::Object(_)) = serde_json::from_str::<Value>(text) else {
            let shown: String = text.chars().take(40).collect();
            return self.error(
                "invalid_json",
                &format!("text frames must be JSON objects with a type; got {shown:?}"),
            );
        };
        match msg.get("type").and_then(Value::as_str) {
            Some("session_update") => self.update(&msg),
            Some("commit") => {
                let done = self
                    .session
                    .commit_buffer()
                    .and_then(|_| self.session.create_response(ResponseOptions::default()));
                if let Err(e) = done {
                    self.error(e.code(), &e.to_string());
                }
            }
            Some("cancel") => {
                self.session.cancel_response();
            }
            Some("clear") => self.session.clear_input(),
            other => {
                let m = format!(
                    "unknown message type {other:?}: use session_update, commit, cancel or clear"
                );
                self.error("unknown_message", &m);
            }
        }
    }

    fn update(&mut self, msg: &Value) {
        if let Some(rate) = msg.get("output_rate") {
            let Some(rate) = rate
                .as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .and_then(|r| check_rate(r).ok())
            else {
                return self.error(
                    "invalid_value",
                    &format!("unsupported output_rate {rate}: {}", rates()),
                );
            };
            if let Err(e) = self.session.update_config(|c| c.output_rate = rate) {
                return self.error(e.code(), &e.to_string());
            }
        }
        if let Some(events) = msg.get("events") {
            let Some(events) = events.as_bool() else {
                return self.error("invalid_value", "events must be true or false");
            };
            self.events = events;
        }
        self.announce("session_updated");
    }

    /// Handle the queued engine events; false when events were lost.
    fn engine_events(&mut self) -> bool {
        while let Some(ev) = self.session.try_next_event() {
            log_event(self.session.id(), &ev);
            if matches!(ev, EngineEvent::SpeechStarted { .. }) {
                let dropped = self.out.barge_in();
                if dropped > 0 {
                    tracing::info!(
                        "{} barge-in: the user spoke during the answer; {} ms of it dropped",
                        self.session.id(),
                        dropped as u64 * 1000 / u64::from(self.session.config().output_rate)
                    );
                }
            }
            if let EngineEvent::AudioDelta { samples, .. } = &ev {
                self.out
                    .push(Out::Audio(f32_to_pcm16(samples), samples.len()));
            } else if self.events
                && let Some(v) = event_json(&ev)
            {
                self.out.push(Out::Text(v.to_string()));
            }
        }
        !self.session.overflowed()
    }

    /// Send what may go now; false when the client stopped reading.
    async fn send_ready(&mut self, socket: &mut WebSocket, timeout: Duration) -> bool {
        while let Some(out) = self.out.pop_ready(Instant::now()) {
            let msg = match out {
                Out::Audio(bytes, _) => Message::Binary(bytes.into()),
                Out::Text(text) => Message::Text(text.into()),
            };
            if !matches!(
                tokio::time::timeout(timeout, socket.send(msg)).await,
                Ok(Ok(()))
            ) {
                return false;
            }
        }
        true
    }
}

async fn connection(app: &App, mut socket: WebSocket, params: Params) {
    let session = match open_session(
        &app.engine,
        &app.config.defaults,
        STT_RATE,
        params.output_rate,
    ) {
        Ok(s) => s,
        Err(e) => {
            let (code, close, reason) = match e {
                EngineError::SessionLimit(_) => (
                    "session_limit_reached",
                    close_code::TRY_AGAIN_LATER,
                    "session_limit_reached",
                ),
                _ => ("server_error", close_code::INTERNAL, "session_failed"),
            };
            let _ = socket
                .send(Message::Text(error_frame(code, &e.to_string()).into()))
                .await;
            close_with(&mut socket, close, reason).await;
            return;
        }
    };
    tracing::info!("{} websocket client connected", session.id());
    let wake = Arc::new(Notify::new());
    let waker = Arc::clone(&wake);
    session.set_notify(Box::new(move || waker.notify_one()));
    let mut conv = Conversation {
        out: Outgoing::new(params.output_rate),
        session,
        events: params.events,
        max_message_bytes: app.config.max_message_bytes,
    };
    conv.announce("session_created");
    let timeout = app.config.send_timeout;
    let reason = loop {
        let deadline = conv.out.deadline(Instant::now());
        tokio::select! {
            () = app.cancel.cancelled() => {
                close_with(&mut socket, close_code::GOING_AWAY, "server shutting down").await;
                break "the server is stopping".to_owned();
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(pcm))) => conv.binary(&pcm),
                Some(Ok(Message::Text(text))) => conv.text(&text),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) => {
                    answer_close(&mut socket).await;
                    break "the client closed".to_owned();
                }
                Some(Err(e)) => {
                    let text = e.to_string();
                    if text.contains("too long") || text.contains("Space limit") {
                        let frame = error_frame("message_too_large", &format!(
                            "closing: {text}; send audio in frames of 20 to 200 ms"));
                        let _ = tokio::time::timeout(timeout, socket.send(Message::Text(frame.into()))).await;
                        close_with(&mut socket, close_code::TOO_BIG, "message too large").await;
                    }
                    break format!("connection failed: {text}");
                }
                None => break "the client went away".to_owned(),
            },
            () = wake.notified() => {
                if !conv.engine_events() {
                    let frame = error_frame("event_queue_overflow",
                        "the client reads too slowly; closing the session");
                    let _ = tokio::time::timeout(timeout, socket.send(Message::Text(frame.into()))).await;
                    close_with(&mut socket, close_code::POLICY, "event queue overflow").await;
                    break "event queue overflow".to_owned();
                }
            }
            () = sleep_until(deadline) => {
                if !conv.send_ready(&mut socket, timeout).await {
                    break "the client stopped reading".to_owned();
                }
            }
        }
    };
    tracing::info!(
        "{} websocket client disconnected: {reason}",
        conv.session.id()
    );
    conv.session.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::{ResponseStatus, Usage};

    #[test]
    fn events_are_named_as_the_engine_names_them_without_nulls() {
        let done = EngineEvent::ResponseDone {
            response_id: "resp_1".into(),
            status: ResponseStatus::Cancelled,
            reason: Some(StopReason::TurnDetected),
            output: Vec::new(),
            usage: Usage::default(),
            error: None,
        };
        assert_eq!(
            event_json(&done).unwrap(),
            json!({"type": "response_done", "response_id": "resp_1", "status": "cancelled",
                "reason": "turn_detected"})
        );
        let audio = EngineEvent::AudioDelta {
            response_id: "r".into(),
            item_id: "i".into(),
            output_index: 0,
            samples: vec![0.0; 4],
        };
        assert!(event_json(&audio).is_none());
        let heard = EngineEvent::InputTranscriptCompleted {
            item_id: "item_1".into(),
            transcript: "hello".into(),
            audio_seconds: 1.0,
        };
        assert_eq!(
            event_json(&heard).unwrap(),
            json!({"type": "input_transcript_completed", "item_id": "item_1", "transcript": "hello"})
        );
    }
}
