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
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::keys::Keys;
use super::session_task::{CloseOnDrop, sleep_until};
use super::tls::{TlsFiles, TlsListener};
use super::web::{self, Web};
use super::webrtc::{WebRtcConfig, WebRtcEndpoint, WebRtcError};
use crate::engine::Engine;
use crate::protocol::{Dialect, OpenOptions, OpenRefusal, RealtimeSession, SessionDefaults};

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
    /// The WebRTC endpoint could not start (its UDP port, its settings).
    #[error("WebRTC: {0}")]
    WebRtc(#[from] WebRtcError),
}

/// The interface the server binds unless told otherwise (local only: no
/// auth is needed there).
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The port the server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8765;
/// The largest client message answered normally unless told otherwise
/// (`OpenAI` accepts up to 15 MiB of audio in one append).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

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
    /// WebRTC calls (`POST /v1/realtime/calls`) on one UDP port; `None`: off.
    pub webrtc: Option<WebRtcConfig>,
    /// Serve HTTPS and WSS with these files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            api_key: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            backends: Value::Null,
            worker_threads: 0,
            send_timeout: Duration::from_secs(10),
            defaults: SessionDefaults::default(),
            webrtc: None,
            tls: None,
        }
    }
}

struct App {
    engine: Arc<Engine>,
    config: ServerConfig,
    keys: Arc<Keys>,
    cancel: CancellationToken,
    connections: AtomicUsize,
}

struct Running {
    runtime: tokio::runtime::Runtime,
    cancel: CancellationToken,
    addr: SocketAddr,
    app: Arc<App>,
    endpoint: Option<WebRtcEndpoint>,
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
        let tls = match &self.config.tls {
            Some(files) => Some(files.acceptor().map_err(TransportError::InvalidConfig)?),
            None => None,
        };
        let cancel = CancellationToken::new();
        let endpoint = match &self.config.webrtc {
            Some(c) => Some(WebRtcEndpoint::bind(
                c.clone(),
                runtime.handle(),
                cancel.clone(),
            )?),
            None => None,
        };
        let keys = Arc::new(Keys::new(self.config.api_key.clone()));
        let app = Arc::new(App {
            engine: Arc::clone(&self.engine),
            config: self.config.clone(),
            keys: Arc::clone(&keys),
            cancel: cancel.clone(),
            connections: AtomicUsize::new(0),
        });
        let web = Web {
            engine: Arc::clone(&self.engine),
            keys,
            defaults: self.config.defaults.clone(),
            max_message_bytes: self.config.max_message_bytes,
            endpoint: endpoint.clone(),
            cancel: cancel.clone(),
        };
        let router = Router::new()
            .route("/health", get(health))
            .route("/v1/realtime", get(realtime))
            .route("/realtime", get(realtime))
            .fallback(not_found)
            .with_state(Arc::clone(&app))
            .merge(web::routes(web));
        if let Some(acceptor) = tls {
            let listener = {
                let _guard = runtime.enter();
                TlsListener::new(listener, acceptor, cancel.clone()).map_err(bind_err)?
            };
            spawn_serve(&runtime, listener, router, cancel.clone());
        } else {
            // Events are small frames sent as they happen: Nagle's algorithm
            // would hold some back for up to 40 ms.
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::warn!("could not set TCP_NODELAY: {e}");
                }
            });
            spawn_serve(&runtime, listener, router, cancel.clone());
        }
        tracing::info!(%addr, "realtime server listening");
        self.running = Some(Running {
            runtime,
            cancel,
            addr,
            app,
            endpoint,
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

    /// The UDP port of the WebRTC calls while running (`None`: WebRTC is off).
    pub fn webrtc_port(&self) -> Option<u16> {
        self.endpoint().map(WebRtcEndpoint::port)
    }

    /// The ICE candidates every call's answer carries.
    pub fn webrtc_candidates(&self) -> Vec<SocketAddr> {
        self.endpoint()
            .map(WebRtcEndpoint::candidate_addrs)
            .unwrap_or_default()
    }

    /// WebRTC calls open now.
    pub fn calls(&self) -> usize {
        self.endpoint().map_or(0, WebRtcEndpoint::calls)
    }

    fn endpoint(&self) -> Option<&WebRtcEndpoint> {
        self.running.as_ref().and_then(|r| r.endpoint.as_ref())
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

/// Serve `router` on `listener` until `stop`.
fn spawn_serve<L>(
    runtime: &tokio::runtime::Runtime,
    listener: L,
    router: Router,
    stop: CancellationToken,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    runtime.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("realtime server stopped: {e}");
        }
    });
}

async fn not_found() -> Response {
    let body = json!({"error": {"type": "invalid_request_error", "code": "not_found",
        "message": "Not found: the Realtime API is served at /v1/realtime (WebSocket)."}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn realtime(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let grant = match app.keys.check(&headers) {
        Ok(grant) => grant,
        Err(e) => return e.into_response(),
    };
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
            let session = grant.session().cloned().into_iter().collect();
            connection(&app, socket, dialect, model, timings, session).await;
            app.connections.fetch_sub(1, Ordering::AcqRel);
        })
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
    session: Vec<Value>,
) {
    let options = OpenOptions {
        dialect,
        model,
        timings,
        max_message_bytes: app.config.max_message_bytes,
        session,
        media_rate: None,
    };
    let (mut rt, created) = match RealtimeSession::open(&app.engine, &app.config.defaults, options)
    {
        Ok(opened) => opened,
        Err((error, refusal)) => {
            let (code, reason) = match refusal {
                OpenRefusal::SessionLimit => (close_code::TRY_AGAIN_LATER, "session_limit_reached"),
                OpenRefusal::Failed => (close_code::INTERNAL, "session_failed"),
            };
            let _ = socket.send(Message::Text(error.to_string().into())).await;
            close_with(&mut socket, code, reason).await;
            return;
        }
    };
    // However the task ends (disconnect, shutdown, a dropped future), the
    // session is closed and its work cancelled.
    let _closer = CloseOnDrop(rt.session().clone());
    let notify = Arc::new(Notify::new());
    let waker = Arc::clone(&notify);
    rt.session()
        .set_notify(Box::new(move || waker.notify_one()));
    let timeout = app.config.send_timeout;
    let mut ok = send(&mut socket, &created, timeout).await;
    while ok {
        let idle = rt.idle_deadline().map(Instant::from_std);
        tokio::select! {
            () = app.cancel.cancelled() => {
                close_with(&mut socket, close_code::GOING_AWAY, "server shutting down").await;
                break;
            }
            msg = socket.recv() => {
                match msg {
                    Some(Ok(Message::Text(text))) => rt.on_text(&text),
                    Some(Ok(Message::Binary(_))) => rt.on_binary(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Err(e)) => {
                        // Past the read limit the frame cannot be read at all:
                        // say why before closing.
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("Space limit") {
                            let ev = rt.error_event(
                                "invalid_request_error",
                                "message_too_large",
                                &format!("Closing: {text}. Split long audio into several appends."),
                            );
                            let _ = send(&mut socket, &ev, timeout).await;
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
                ok = flush(&mut rt, &mut socket, &notify, timeout).await;
            }
            () = notify.notified() => {
                ok = flush(&mut rt, &mut socket, &notify, timeout).await;
                if ok && rt.session().overflowed() {
                    let ev = rt.error_event(
                        "server_error",
                        "event_queue_overflow",
                        "The client reads events too slowly; closing the session.",
                    );
                    let _ = send(&mut socket, &ev, timeout).await;
                    close_with(&mut socket, close_code::POLICY, "event queue overflow").await;
                    break;
                }
            }
            () = sleep_until(idle) => {
                rt.on_idle();
                ok = flush(&mut rt, &mut socket, &notify, timeout).await;
            }
        }
    }
    rt.session().close();
}

/// Send the session's pending wire events (a batch of engine events, then
/// the replies to client events); false when the client stopped reading.
async fn flush(
    rt: &mut RealtimeSession,
    socket: &mut WebSocket,
    notify: &Notify,
    timeout: Duration,
) -> bool {
    let mut out = Vec::new();
    if rt.drain(&mut out, DRAIN_BATCH) {
        // More may be queued: store a wake-up so the loop comes back for
        // them after looking at the socket.
        notify.notify_one();
    }
    for ev in &out {
        if !send(socket, ev, timeout).await {
            return false;
        }
    }
    true
}

async fn send(socket: &mut WebSocket, ev: &Value, timeout: Duration) -> bool {
    let text = ev.to_string();
    matches!(
        tokio::time::timeout(timeout, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}
