//! The `OpenAI` Realtime-compatible WebSocket server: one session per connection.
//!
//! The server owns its tokio runtime ([`RealtimeServer::start`] /
//! [`RealtimeServer::stop`], a cancellation token for every task). Each
//! connection runs one task that selects between the socket (client events
//! are parsed and applied to the session at once) and the session's event
//! queue (woken through `set_notify`), so a reply to a client event and the
//! engine events it caused keep their order. Nothing here calls into Python.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::session::SessionError;
use crate::engine::{Engine, EngineError, Session, SessionConfig};
use crate::protocol::{
    AudioFormat, ClientEvent, Dialect, Encoder, SessionState, TurnDetection, VadDefaults,
    parse_client_event,
};

/// Errors from starting or stopping the server.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The address could not be bound. Pick another port or stop whatever holds it.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// `host:port`.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tokio runtime could not be built (out of threads or memory).
    #[error("could not start the server runtime: {0}")]
    Runtime(std::io::Error),
    /// `start` was called on a running server. Stop it first.
    #[error("the server is already running")]
    AlreadyRunning,
    /// A setting is out of range; the message names it.
    #[error("invalid server setting: {0}")]
    InvalidConfig(String),
}

/// Server settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Interface to bind (`127.0.0.1` by default: no auth needed locally).
    pub host: String,
    /// Port (0: any free port; read it back with [`RealtimeServer::local_addr`]).
    pub port: u16,
    /// When set, connections must present this key.
    pub api_key: Option<String>,
    /// Largest client message answered normally; larger ones get an error
    /// event, and more than twice this closes the connection.
    pub max_message_bytes: usize,
    /// What `/health` reports as the loaded backends.
    pub backends: Value,
    /// Runtime worker threads (0: one per core, at most 4).
    pub worker_threads: usize,
    /// A send that takes longer than this means the client stopped reading:
    /// the connection is closed.
    pub send_timeout: Duration,
    /// What a new session starts with (the command line's flags).
    pub defaults: SessionDefaults,
}

/// Server-wide starting values of every session, from the command line.
/// A client may change the protocol's fields with `session.update`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDefaults {
    /// System prompt (`instructions` until the client sets its own).
    pub instructions: String,
    /// Items of history the LLM sees (0: all).
    pub chat_size: usize,
    /// Start STT and the LLM at the soft end of speech.
    pub speculation: bool,
    /// Let the LLM read the history ahead while the user speaks.
    pub prefill: bool,
    /// Silence before that soft end, ms (`None`: derived from the turn's silence).
    pub soft_end_ms: Option<f64>,
    /// Input transcript deltas while the user speaks.
    pub live_transcription: bool,
    /// `server_vad.threshold`.
    pub threshold: f64,
    /// `server_vad.prefix_padding_ms`.
    pub prefix_padding_ms: u64,
    /// `server_vad.silence_duration_ms`.
    pub silence_duration_ms: u64,
    /// Shorter speech is not a turn, ms.
    pub min_speech_ms: f64,
    /// Longest turn, ms (`None`: unlimited).
    pub max_speech_ms: Option<f64>,
    /// PCM rate of a client that declares no input format. `OpenAI`'s is
    /// 24 kHz; clients of the original project send 16 kHz undeclared.
    pub input_rate: u32,
    /// Send input transcription events even when the client configured no
    /// transcription (the original project always does; `OpenAI` does not).
    pub always_transcribe: bool,
}

impl Default for SessionDefaults {
    fn default() -> Self {
        Self {
            instructions: String::new(),
            chat_size: 0,
            speculation: true,
            prefill: true,
            soft_end_ms: None,
            live_transcription: false,
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            min_speech_ms: 250.0,
            max_speech_ms: None,
            input_rate: 24_000,
            always_transcribe: false,
        }
    }
}

impl SessionDefaults {
    /// A new session's protocol state: the server's instructions and VAD values.
    fn seed(&self, state: SessionState) -> SessionState {
        let mut state = state.with_vad_defaults(VadDefaults {
            threshold: self.threshold,
            prefix_padding_ms: self.prefix_padding_ms,
            silence_duration_ms: self.silence_duration_ms,
        });
        state.instructions.clone_from(&self.instructions);
        state.input_format = AudioFormat::Pcm(self.input_rate);
        state
    }

    /// The engine config of `state`: its protocol fields, then the
    /// server-only settings the protocol has no field for. Runs on every
    /// `session.update`, so a client's update never loses a server flag.
    fn config_for(&self, state: &SessionState, config: &mut SessionConfig) {
        state.apply_to(config);
        config.chat_size = self.chat_size;
        config.speculation = self.speculation;
        config.prefill = self.prefill;
        config.live_transcription |= self.live_transcription;
        if self.always_transcribe && config.transcription.is_none() {
            config.transcription = Some(config.stt.clone());
        }
        config.vad.min_speech_ms = self.min_speech_ms;
        config.vad.max_speech_ms = self.max_speech_ms;
        // The soft end must come before the end of the turn to be of use.
        if let Some(ms) = self.soft_end_ms
            && ms < config.vad.min_silence_ms
        {
            config.vad.soft_end_ms = Some(ms);
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8765,
            api_key: None,
            max_message_bytes: 16 * 1024 * 1024,
            backends: Value::Null,
            worker_threads: 0,
            send_timeout: Duration::from_secs(10),
            defaults: SessionDefaults::default(),
        }
    }
}

struct App {
    engine: Arc<Engine>,
    config: ServerConfig,
    cancel: CancellationToken,
    connections: AtomicUsize,
}

struct Running {
    runtime: tokio::runtime::Runtime,
    cancel: CancellationToken,
    addr: SocketAddr,
    app: Arc<App>,
}

/// The Realtime server. Owns its runtime; dropping it stops it.
pub struct RealtimeServer {
    engine: Arc<Engine>,
    config: ServerConfig,
    running: Option<Running>,
}

impl std::fmt::Debug for RealtimeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeServer")
            .field("config", &self.config)
            .field("addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl RealtimeServer {
    /// A stopped server around `engine`.
    pub fn new(engine: Arc<Engine>, config: ServerConfig) -> Result<Self, TransportError> {
        if config.max_message_bytes < 1024 {
            return Err(TransportError::InvalidConfig(
                "max_message_bytes must be at least 1024".into(),
            ));
        }
        if config.api_key.as_deref().is_some_and(str::is_empty) {
            return Err(TransportError::InvalidConfig(
                "api_key must not be empty (leave it unset to disable auth)".into(),
            ));
        }
        Ok(Self {
            engine,
            config,
            running: None,
        })
    }

    /// Bind and start serving in the background; returns the bound address.
    pub fn start(&mut self) -> Result<SocketAddr, TransportError> {
        if self.running.is_some() {
            return Err(TransportError::AlreadyRunning);
        }
        let threads = match self.config.worker_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("s2s-realtime")
            .enable_all()
            .build()
            .map_err(TransportError::Runtime)?;
        let addr_text = format!("{}:{}", self.config.host, self.config.port);
        let bind_err = |source| TransportError::Bind {
            addr: addr_text.clone(),
            source,
        };
        let std_listener =
            std::net::TcpListener::bind((self.config.host.as_str(), self.config.port))
                .map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = std_listener.local_addr().map_err(bind_err)?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?
        };
        let cancel = CancellationToken::new();
        let app = Arc::new(App {
            engine: Arc::clone(&self.engine),
            config: self.config.clone(),
            cancel: cancel.clone(),
            connections: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/health", get(health))
            .route("/v1/realtime", get(realtime))
            .route("/realtime", get(realtime))
            .fallback(not_found)
            .with_state(Arc::clone(&app));
        // Events are small frames sent as they happen: Nagle's algorithm
        // would hold some back for up to 40 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("could not set TCP_NODELAY: {e}");
            }
        });
        let stop = cancel.clone();
        runtime.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("realtime server stopped: {e}");
            }
        });
        tracing::info!(%addr, "realtime server listening");
        self.running = Some(Running {
            runtime,
            cancel,
            addr,
            app,
        });
        Ok(addr)
    }

    /// Close every connection (their sessions are closed) and stop.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.cancel.cancel();
            if tokio::runtime::Handle::try_current().is_ok() {
                // Inside another runtime blocking is not allowed: let the
                // tasks wind down on their own.
                r.runtime.shutdown_background();
            } else {
                // Connections see the token and close with 1001; give them a moment.
                let app = Arc::clone(&r.app);
                r.runtime.block_on(async move {
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while app.connections.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                });
                r.runtime.shutdown_timeout(Duration::from_secs(1));
            }
            tracing::info!(addr = %r.addr, "realtime server stopped");
        }
    }

    /// The bound address while running.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.addr)
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.running
            .as_ref()
            .map_or(0, |r| r.app.connections.load(Ordering::Acquire))
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
}

impl Drop for RealtimeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn health(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "backends": app.config.backends,
        "sessions": app.engine.session_count(),
        "max_sessions": app.engine.config().max_sessions,
        "connections": app.connections.load(Ordering::Acquire),
    }))
    .into_response()
}

async fn not_found() -> Response {
    let body = json!({"error": {"type": "invalid_request_error", "code": "not_found",
        "message": "Not found: the Realtime API is served at /v1/realtime (WebSocket)."}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// Whether the request carries `key`, as a bearer token or the browser subprotocol.
fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let key = key.as_bytes();
    let same = |given: &[u8]| bool::from(given.ct_eq(key));
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .any(|t| same(t.trim().as_bytes()));
    let subprotocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("openai-insecure-api-key."))
        .any(|t| same(t.as_bytes()));
    bearer | subprotocol
}

async fn realtime(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Some(key) = &app.config.api_key
        && !authorized(&headers, key)
    {
        let body = json!({"error": {"type": "invalid_request_error", "code": "invalid_api_key",
            "message": "Missing or incorrect API key: send 'Authorization: Bearer KEY' or the subprotocol 'openai-insecure-api-key.KEY'."}});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let body = json!({"error": {"type": "invalid_request_error", "code": "websocket_required",
                "message": format!("{}: connect with a WebSocket client.", rejection.body_text())}});
            return (rejection.status(), axum::Json(body)).into_response();
        }
    };
    let beta = headers
        .get_all("openai-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("realtime=v1"));
    let dialect = if beta { Dialect::Beta } else { Dialect::Ga };
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let model = query
        .get("model")
        .cloned()
        .unwrap_or_else(|| "gpt-realtime".to_owned());
    let timings = query
        .get("timings")
        .is_some_and(|v| v == "1" || v == "true");
    let limit = app.config.max_message_bytes;
    // Read up to twice the limit so an oversize message can be answered
    // with an error event instead of a dropped connection.
    ws.protocols(["realtime"])
        .max_message_size(limit.saturating_mul(2))
        .max_frame_size(limit.saturating_mul(2))
        .on_upgrade(move |socket| async move {
            app.connections.fetch_add(1, Ordering::AcqRel);
            connection(&app, socket, dialect, model, timings).await;
            app.connections.fetch_sub(1, Ordering::AcqRel);
        })
}

/// Audio at `rate` as 16 kHz for STT (one-shot, with the resampler's tail).
fn to_stt_rate(samples: &[f32], rate: u32) -> Vec<f32> {
    let stt = crate::engine::STT_RATE;
    let Ok(mut r) = crate::audio::resample::Resampler::new(rate, stt) else {
        // Rates the resampler lacks were refused when the format was set.
        return samples.to_vec();
    };
    let mut out = vec![0.0; r.output_len_max(samples.len()) + r.flush_len()];
    let n = r.process_into(samples, &mut out).unwrap_or(0);
    let m = r.flush_into(&mut out[n..]).unwrap_or(0);
    out.truncate(n + m);
    out
}

/// WebSocket close codes the server ends a connection with (RFC 6455).
pub mod close_code {
    /// The client closed; the server answers with the same code.
    pub const NORMAL: u16 = 1000;
    /// A policy was broken (a client that stopped reading its events).
    pub const POLICY: u16 = 1008;
    /// The server is going away (stopped).
    pub const GOING_AWAY: u16 = 1001;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server failed.
    pub const INTERNAL: u16 = 1011;
    /// Try again later: the session limit is reached, or the server is
    /// draining (another replica can take the session).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// How long a closing server waits for the client's answering Close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The closing handshake: send a Close frame with `code`, then wait briefly
/// for the client's answer, so the client sees a clean close with that code
/// instead of a dropped connection (1006).
async fn close_with(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if tokio::time::timeout(CLOSE_WAIT, socket.send(frame))
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The client sent Close: answer it. The WebSocket layer has queued the
/// reply echoing the client's code; closing the sink sends it.
async fn answer_close(socket: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_WAIT, futures_util::SinkExt::close(socket)).await;
}

/// Events drained from the session per wake-up before the socket is looked at again.
const DRAIN_BATCH: usize = 512;

async fn connection(
    app: &App,
    mut socket: WebSocket,
    dialect: Dialect,
    model: String,
    timings: bool,
) {
    let mut state = app
        .config
        .defaults
        .seed(SessionState::new("sess_pending", &model));
    if !app.engine.has_vad() {
        state.turn_detection = TurnDetection::Disabled;
    }
    let mut config = SessionConfig::default();
    app.config.defaults.config_for(&state, &mut config);
    let session = match app.engine.create_session(config) {
        Ok(s) => s,
        Err(e) => {
            let (code, close) = match e {
                EngineError::SessionLimit(_) => {
                    ("session_limit_reached", close_code::TRY_AGAIN_LATER)
                }
                _ => ("session_failed", close_code::INTERNAL),
            };
            let mut enc = Encoder::new(dialect, &state);
            let kind = if close == close_code::TRY_AGAIN_LATER {
                "invalid_request_error"
            } else {
                "server_error"
            };
            let ev = enc.error_code(kind, code, &e.to_string(), None);
            let _ = socket.send(Message::Text(ev.to_string().into())).await;
            close_with(&mut socket, close, code).await;
            return;
        }
    };
    state.id = session.id().to_owned();
    // However the task ends (disconnect, shutdown, a dropped future), the
    // session is closed and its work cancelled.
    let _closer = CloseOnDrop(session.clone());
    let notify = Arc::new(Notify::new());
    let waker = Arc::clone(&notify);
    session.set_notify(Box::new(move || waker.notify_one()));
    let mut conn = Conn {
        enc: {
            let mut enc = Encoder::new(dialect, &state);
            enc.timings = timings;
            enc
        },
        state,
        session,
        dialect,
        max_message_bytes: app.config.max_message_bytes,
        replies: Vec::new(),
        idle_deadline: None,
        vad: app.engine.has_vad(),
        defaults: app.config.defaults.clone(),
        client_ids: 0,
        notify: Arc::clone(&notify),
    };
    conn.reset_idle();
    let created = conn.enc.session_event("session.created", &conn.state);
    let mut ok = send(&mut socket, &created, app.config.send_timeout).await;
    while ok {
        let idle = conn.idle_deadline;
        tokio::select! {
            () = app.cancel.cancelled() => {
                close_with(&mut socket, close_code::GOING_AWAY, "server shutting down").await;
                break;
            }
            msg = socket.recv() => {
                match msg {
                    Some(Ok(Message::Text(text))) => conn.on_text(&text),
                    Some(Ok(Message::Binary(_))) => conn.replies.push(conn.enc.error_code(
                        "invalid_request_error",
                        "invalid_message",
                        "Binary frames are not supported: send JSON text events.",
                        None,
                    )),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Err(e)) => {
                        // Past the read limit the frame cannot be read at all:
                        // say why before closing.
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("Space limit") {
                            let ev = conn.enc.error_code(
                                "invalid_request_error",
                                "message_too_large",
                                &format!("Closing: {text}. Split long audio into several appends."),
                                None,
                            );
                            let _ = send(&mut socket, &ev, app.config.send_timeout).await;
                            close_with(&mut socket, close_code::TOO_BIG, "message too large")
                                .await;
                        }
                        break;
                    }
                    Some(Ok(Message::Close(_))) => {
                        answer_close(&mut socket).await;
                        break;
                    }
                    None => break,
                }
                // The engine events a client event caused go out before its reply.
                ok = conn.flush(&mut socket, app.config.send_timeout).await;
            }
            () = notify.notified() => {
                ok = conn.flush(&mut socket, app.config.send_timeout).await;
                if ok && conn.session.overflowed() {
                    let ev = conn.enc.error_code(
                        "server_error",
                        "event_queue_overflow",
                        "The client reads events too slowly; closing the session.",
                        None,
                    );
                    let _ = send(&mut socket, &ev, app.config.send_timeout).await;
                    close_with(&mut socket, close_code::POLICY, "event queue overflow").await;
                    break;
                }
            }
            () = sleep_until(idle) => {
                conn.on_idle();
                ok = conn.flush(&mut socket, app.config.send_timeout).await;
            }
        }
    }
    conn.session.close();
}

struct CloseOnDrop(Session);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn send(socket: &mut WebSocket, ev: &Value, timeout: Duration) -> bool {
    let text = ev.to_string();
    matches!(
        tokio::time::timeout(timeout, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

struct Conn {
    session: Session,
    state: SessionState,
    enc: Encoder,
    dialect: Dialect,
    max_message_bytes: usize,
    /// Direct replies to client events, sent after the queued engine events.
    replies: Vec<Value>,
    idle_deadline: Option<Instant>,
    /// Whether the engine has a VAD (turn detection is possible).
    vad: bool,
    /// The server's settings, applied again on every `session.update`.
    defaults: SessionDefaults,
    /// Counter for ids of client items sent without one.
    client_ids: u64,
    /// Wakes the connection when the session queues events.
    notify: Arc<Notify>,
}

impl Conn {
    /// Send queued engine events (a batch), then the direct replies.
    async fn flush(&mut self, socket: &mut WebSocket, timeout: Duration) -> bool {
        let mut out = Vec::new();
        let mut n = 0;
        while n < DRAIN_BATCH {
            let Some(ev) = self.session.try_next_event() else {
                break;
            };
            n += 1;
            self.observe(&ev);
            self.enc.engine_event(ev, &mut out);
        }
        if n == DRAIN_BATCH {
            // More may be queued: store a wake-up so the loop comes back for
            // them after looking at the socket.
            self.notify.notify_one();
        }
        out.append(&mut self.replies);
        for ev in &out {
            if !send(socket, ev, timeout).await {
                return false;
            }
        }
        true
    }

    /// Track what the idle timeout needs to know.
    fn observe(&mut self, ev: &crate::engine::EngineEvent) {
        use crate::engine::EngineEvent as E;
        match ev {
            E::SpeechStarted { .. } | E::ResponseCreated { .. } => self.idle_deadline = None,
            E::ResponseDone { .. } => self.reset_idle(),
            _ => {}
        }
    }

    fn reset_idle(&mut self) {
        self.idle_deadline = self
            .state
            .turn_detection
            .idle_timeout_ms()
            .map(|ms| Instant::now() + Duration::from_millis(ms));
    }

    /// No speech for `idle_timeout_ms` after the last response: tell the
    /// client, and let the model prompt the user if responses are automatic.
    fn on_idle(&mut self) {
        self.idle_deadline = None;
        let end = self.session.input_position_ms() as u64;
        let start = end.saturating_sub(self.state.turn_detection.idle_timeout_ms().unwrap_or(0));
        let item_id = format!("item_idle_{end}");
        let ev = self.enc.timeout_triggered(start, end, &item_id);
        self.replies.push(ev);
        if let TurnDetection::ServerVad {
            create_response: true,
            ..
        } = self.state.turn_detection
            && !self.session.has_active_response()
            && let Err(e) = self
                .session
                .create_response(crate::engine::ResponseOptions::default())
        {
            self.session_error(&e, None);
        }
    }

    fn session_error(&mut self, e: &SessionError, event_id: Option<&str>) {
        let kind = if matches!(e, SessionError::Stage(_)) {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let ev = self
            .enc
            .error_code(kind, e.code(), &e.to_string(), event_id);
        self.replies.push(ev);
    }

    fn on_text(&mut self, text: &str) {
        if text.len() > self.max_message_bytes {
            let ev = self.enc.error_code(
                "invalid_request_error",
                "message_too_large",
                &format!(
                    "The message has {} bytes; the limit is {} (split long audio into several appends).",
                    text.len(),
                    self.max_message_bytes
                ),
                None,
            );
            self.replies.push(ev);
            return;
        }
        let sid = self.session.id().trim_start_matches("sess_").to_owned();
        let counter = &mut self.client_ids;
        let mut new_id = |prefix: &str| {
            *counter += 1;
            // Unique within the session; the engine's ids never use this form.
            format!("{prefix}_{sid}c{counter:X}")
        };
        match parse_client_event(text, self.dialect, &mut new_id) {
            Ok((event_id, ev)) => self.apply(event_id.as_deref(), ev),
            Err((event_id, e)) => {
                let ev = self.enc.error(&e, event_id.as_deref());
                self.replies.push(ev);
            }
        }
    }

    /// Take a validated `session.update` (or beta `transcription_session.update`):
    /// refuse turn detection without a VAD, hand it to the engine, answer it.
    fn change_session(
        &mut self,
        s: &Session,
        event_id: Option<&str>,
        next: Result<SessionState, crate::protocol::ProtocolError>,
        transcription: bool,
    ) -> Result<(), SessionError> {
        let next = match next {
            Ok(next) => next,
            Err(e) => {
                let ev = self.enc.error(&e, event_id);
                self.replies.push(ev);
                return Ok(());
            }
        };
        if next.turn_detection != TurnDetection::Disabled && !self.vad {
            let ev = self.enc.error_code(
                "invalid_request_error",
                "invalid_value",
                "Turn detection needs a VAD model, and this server has none: use turn_detection null (push-to-talk).",
                event_id,
            );
            self.replies.push(ev);
            return Ok(());
        }
        let defaults = &self.defaults;
        s.update_config(|c| defaults.config_for(&next, c))?;
        self.state = next;
        self.enc.set_session(&self.state);
        self.reset_idle();
        let ev = if transcription {
            self.enc.transcription_session_updated(&self.state)
        } else {
            self.enc.session_event("session.updated", &self.state)
        };
        self.replies.push(ev);
        Ok(())
    }

    fn apply(&mut self, event_id: Option<&str>, ev: ClientEvent) {
        let s = self.session.clone();
        let result: Result<(), SessionError> = match ev {
            ClientEvent::SessionUpdate(v) => {
                let mut next = self.state.clone();
                let checked = next.update(self.dialect, &v).map(|()| next);
                self.change_session(&s, event_id, checked, false)
            }
            ClientEvent::Append(bytes) => match self.state.input_format.decode(&bytes) {
                Ok(samples) if samples.is_empty() => Ok(()),
                Ok(samples) => {
                    // Long appends (seconds of audio at once) run the VAD for
                    // a while: keep that off the runtime's other tasks.
                    if samples.len() > self.state.input_format.rate() as usize {
                        tokio::task::block_in_place(|| s.feed_audio(&samples))
                    } else {
                        s.feed_audio(&samples)
                    }
                }
                Err(e) => {
                    let ev = self.enc.error(&e, event_id);
                    self.replies.push(ev);
                    return;
                }
            },
            ClientEvent::Commit => s.commit_buffer().map(|_| ()),
            ClientEvent::Clear => {
                s.clear_input();
                Ok(())
            }
            ClientEvent::ItemCreate {
                previous_item_id,
                item,
                audio: None,
            } => s.add_item(*item, previous_item_id.as_deref()),
            ClientEvent::ItemCreate {
                previous_item_id,
                item,
                audio: Some(bytes),
            } => match self.state.input_format.decode(&bytes) {
                Ok(samples) => {
                    let rate = self.state.input_format.rate();
                    let audio = to_stt_rate(&samples, rate);
                    s.add_audio_item(*item, previous_item_id.as_deref(), audio)
                }
                Err(e) => {
                    let ev = self.enc.error(&e, event_id);
                    self.replies.push(ev);
                    return;
                }
            },
            ClientEvent::ItemRetrieve(id) => s.item(&id).map(|item| {
                let ev = self.enc.item_retrieved(&item);
                self.replies.push(ev);
            }),
            ClientEvent::ItemTruncate {
                item_id,
                content_index,
                audio_end_ms,
            } => s.truncate_item(&item_id, content_index, audio_end_ms),
            ClientEvent::ItemDelete(id) => s.delete_item(&id),
            ClientEvent::ResponseCreate {
                mut options,
                metadata,
                references,
            } => {
                if let Some(input) = options.input.as_mut() {
                    for (pos, id) in references {
                        match s.item(&id) {
                            Ok(item) => input.insert(pos.min(input.len()), item),
                            Err(e) => {
                                self.session_error(&e, event_id);
                                return;
                            }
                        }
                    }
                }
                let audio = options.audio_output;
                let voice = options.voice.clone();
                let max = options.max_output_tokens;
                let oob = options.out_of_band;
                s.create_response(*options).map(|id| {
                    self.enc
                        .note_response(&id, metadata, audio, voice, max, oob);
                    self.idle_deadline = None;
                })
            }
            ClientEvent::ResponseCancel => {
                if !s.cancel_response() {
                    let ev = self.enc.error_code(
                        "invalid_request_error",
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                        event_id,
                    );
                    self.replies.push(ev);
                }
                Ok(())
            }
            ClientEvent::OutputAudioBufferClear => {
                let ev = self.enc.error_code(
                    "invalid_request_error",
                    "unsupported_event",
                    "output_audio_buffer.clear is only for WebRTC and SIP connections; over WebSocket the client owns playback: stop it and send conversation.item.truncate.",
                    event_id,
                );
                self.replies.push(ev);
                Ok(())
            }
            ClientEvent::TranscriptionSessionUpdate(v) => {
                let mut next = self.state.clone();
                let checked = next.update_transcription(&v).map(|()| next);
                self.change_session(&s, event_id, checked, true)
            }
        };
        if let Err(e) = result {
            self.session_error(&e, event_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{SessionDefaults, SessionState};
    use crate::engine::SessionConfig;
    use crate::protocol::Dialect;

    /// Every server-wide flag set away from its default.
    fn flags() -> SessionDefaults {
        SessionDefaults {
            instructions: "Server prompt.".into(),
            chat_size: 3,
            speculation: false,
            prefill: false,
            soft_end_ms: Some(150.0),
            live_transcription: true,
            threshold: 0.3,
            prefix_padding_ms: 120,
            silence_duration_ms: 700,
            min_speech_ms: 90.0,
            max_speech_ms: Some(20_000.0),
            input_rate: 24_000,
            always_transcribe: false,
        }
    }

    /// The engine config after the server's defaults and then the client's
    /// connect-time `session.update`, as the connection computes it.
    fn after_update(dialect: Dialect, update: &serde_json::Value) -> (SessionState, SessionConfig) {
        let d = flags();
        let mut state = d.seed(SessionState::new("sess_1", "gpt-realtime"));
        let mut config = SessionConfig::default();
        d.config_for(&state, &mut config);
        state.update(dialect, update).unwrap();
        d.config_for(&state, &mut config);
        (state, config)
    }

    fn assert_server_flags_kept(c: &SessionConfig) {
        assert_eq!(c.chat_size, 3);
        assert!(!c.speculation);
        assert!(!c.prefill);
        assert!(c.live_transcription, "--enable_live_transcription lost");
        assert_eq!(c.vad.soft_end_ms, Some(150.0), "--soft_end_ms lost");
        assert!((c.vad.min_speech_ms - 90.0).abs() < 1e-9);
        assert_eq!(c.vad.max_speech_ms, Some(20_000.0));
        assert!((c.vad.threshold - 0.3).abs() < 1e-6, "--thresh lost");
        assert!(
            (c.vad.speech_pad_ms - 120.0).abs() < 1e-9,
            "--speech_pad_ms lost"
        );
    }

    #[test]
    fn sdk_connect_time_updates_keep_every_server_flag() {
        // The official SDK's minimal update, openai-agents' GA update (semantic
        // VAD, a transcription model) and a beta update.
        let ga_minimal = json!({"type": "realtime", "model": "gpt-realtime"});
        let (state, c) = after_update(Dialect::Ga, &ga_minimal);
        assert_server_flags_kept(&c);
        assert!(
            (c.vad.min_silence_ms - 700.0).abs() < 1e-9,
            "--min_silence_ms lost"
        );
        assert_eq!(state.instructions, "Server prompt.");
        assert_eq!(c.instructions, "Server prompt.");

        let agents = json!({
            "type": "realtime", "model": "gpt-realtime-2.1", "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "gpt-4o-mini-transcribe"},
                    "turn_detection": {"type": "semantic_vad", "interrupt_response": true},
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "ash"},
            },
            "tools": [], "tool_choice": "auto",
        });
        let (_, c) = after_update(Dialect::Ga, &agents);
        assert_server_flags_kept(&c);

        let server_vad = json!({"type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad"}}}});
        let (state, c) = after_update(Dialect::Ga, &server_vad);
        assert_server_flags_kept(&c);
        assert!((c.vad.min_silence_ms - 700.0).abs() < 1e-9);
        assert_eq!(
            state.turn_detection,
            super::TurnDetection::server_vad(&crate::protocol::VadDefaults {
                threshold: 0.3,
                prefix_padding_ms: 120,
                silence_duration_ms: 700,
            })
        );

        let beta = json!({"modalities": ["audio", "text"], "voice": "alloy",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "create_response": true}});
        let (_, c) = after_update(Dialect::Beta, &beta);
        assert_server_flags_kept(&c);
    }

    #[test]
    fn a_client_may_still_change_the_protocol_fields() {
        let update = json!({"type": "realtime", "instructions": "Client prompt.",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.8,
                "prefix_padding_ms": 50, "silence_duration_ms": 300}}}});
        let (_, c) = after_update(Dialect::Ga, &update);
        assert_eq!(c.instructions, "Client prompt.");
        assert!((c.vad.threshold - 0.8).abs() < 1e-6);
        assert!((c.vad.speech_pad_ms - 50.0).abs() < 1e-9);
        assert!((c.vad.min_silence_ms - 300.0).abs() < 1e-9);
        // The server's soft end still comes before the end of the turn.
        assert_eq!(c.vad.soft_end_ms, Some(150.0));
        let short = json!({"type": "realtime", "audio": {"input": {"turn_detection":
            {"type": "server_vad", "silence_duration_ms": 100}}}});
        let (_, c) = after_update(Dialect::Ga, &short);
        assert!(c.vad.soft_end_ms.is_some_and(|ms| ms < 100.0));
    }
}
