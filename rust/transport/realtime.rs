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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::keys::Keys;
use super::session_task::{CloseOnDrop, sleep_until};
use super::tls::{TlsFiles, TlsListener};
use super::web::{self, Web};
use super::webrtc::{WebRtcConfig, WebRtcEndpoint, WebRtcError};
use crate::engine::metrics::ReasonLabel;
use crate::engine::{Engine, Stage};
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
/// How long a client may take to send its HTTP request head unless told
/// otherwise (a slowloris client is cut off after this).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A send to a client that takes longer than this means it stopped reading.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connections beyond the session limit that the server keeps open
/// (health checks, scrapes, clients being told the limit is reached) unless
/// told otherwise; more are closed as soon as they are accepted.
pub const DEFAULT_EXTRA_CONNECTIONS: usize = 128;

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
    /// Longest a client may take to send an HTTP request head.
    pub header_timeout: Duration,
    /// Most TCP connections open at once (WebSocket sessions and plain
    /// HTTP requests together); one more is closed as soon as it is
    /// accepted. 0: the engine's session limit plus
    /// [`DEFAULT_EXTRA_CONNECTIONS`].
    pub max_connections: usize,
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
            send_timeout: DEFAULT_SEND_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: 0,
            defaults: SessionDefaults::default(),
            webrtc: None,
            tls: None,
        }
    }
}

struct App {
    engine: Arc<Engine>,
    config: ServerConfig,
    /// The server's key and the ephemeral keys it minted.
    keys: Arc<Keys>,
    /// Stops everything: every connection closes with 1001.
    cancel: CancellationToken,
    /// Draining: no new sessions, `/health` says so, and each session is
    /// closed with 1001 once it has no response running.
    drain: CancellationToken,
    draining: AtomicBool,
    /// WebSocket sessions open.
    connections: AtomicUsize,
    /// TCP connections still speaking HTTP (not upgraded).
    http_connections: AtomicUsize,
    max_connections: usize,
    metrics: TransportMetrics,
}

/// The server's own metrics, beside the engine's.
struct TransportMetrics {
    registry: Registry,
    refused: Family<ReasonLabel, Counter>,
    closed: Family<ReasonLabel, Counter>,
    connections: Gauge,
    http_connections: Gauge,
    sessions: Gauge,
    session_objects: Gauge,
    draining: Gauge,
    queue_depth: Family<crate::engine::metrics::StageLabel, Gauge>,
    workers: Family<WorkerLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    stage: &'static str,
    state: &'static str,
}

impl TransportMetrics {
    fn new(engine: &Engine) -> Self {
        let mut registry = Registry::with_prefix("s2s");
        engine.metrics().register(&mut registry);
        let m = Self {
            registry,
            refused: Family::default(),
            closed: Family::default(),
            connections: Gauge::default(),
            http_connections: Gauge::default(),
            sessions: Gauge::default(),
            session_objects: Gauge::default(),
            draining: Gauge::default(),
            queue_depth: Family::default(),
            workers: Family::default(),
        };
        let mut registry = m.registry;
        registry.register(
            "connections_refused",
            "Connections refused, by reason (connection_limit, session_limit, draining, unauthorized)",
            m.refused.clone(),
        );
        registry.register(
            "connections_closed",
            "WebSocket connections ended, by reason",
            m.closed.clone(),
        );
        registry.register(
            "websocket_connections",
            "WebSocket connections open",
            m.connections.clone(),
        );
        registry.register(
            "http_connections",
            "TCP connections open that have not upgraded to WebSocket",
            m.http_connections.clone(),
        );
        registry.register("sessions", "Sessions open", m.sessions.clone());
        registry.register(
            "session_objects",
            "Session objects not yet freed (closed sessions whose last job still runs included)",
            m.session_objects.clone(),
        );
        registry.register(
            "draining",
            "1 while the server drains before stopping",
            m.draining.clone(),
        );
        registry.register(
            "stage_queue_depth",
            "Jobs waiting in a stage's queue",
            m.queue_depth.clone(),
        );
        registry.register(
            "stage_workers",
            "Stage worker threads: serving the queue, or abandoned to a hung call",
            m.workers.clone(),
        );
        Self { registry, ..m }
    }

    fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    fn close(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabel { reason }).inc();
    }
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
        if self.config.header_timeout.is_zero() || self.config.send_timeout.is_zero() {
            return Err(TransportError::InvalidConfig(
                "header_timeout and send_timeout must be positive".into(),
            ));
        }
        let cancel = CancellationToken::new();
        let max_connections = match self.config.max_connections {
            0 => self
                .engine
                .config()
                .max_sessions
                .saturating_add(DEFAULT_EXTRA_CONNECTIONS),
            n => n,
        };
        let tls = match &self.config.tls {
            Some(files) => Some(files.acceptor().map_err(TransportError::InvalidConfig)?),
            None => None,
        };
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
            drain: CancellationToken::new(),
            draining: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            http_connections: AtomicUsize::new(0),
            max_connections,
            metrics: TransportMetrics::new(&self.engine),
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
            .route("/metrics", get(metrics))
            .route("/v1/realtime", get(realtime))
            .route("/realtime", get(realtime))
            .fallback(not_found)
            .with_state(Arc::clone(&app))
            .merge(super::audio_api::router(super::audio_api::AudioApi {
                engine: Arc::clone(&self.engine),
                api_key: self.config.api_key.clone(),
                backends: self.config.backends.clone(),
                authorized,
            }))
            .merge(web::routes(web));
        if let Some(acceptor) = tls {
            // HTTPS (the page on a phone): axum's own accept loop over the
            // TLS listener; the connection limit and the header deadline
            // are those of the plain HTTP loop only.
            let listener = {
                let _guard = runtime.enter();
                TlsListener::new(listener, acceptor, cancel.clone()).map_err(bind_err)?
            };
            spawn_serve(&runtime, listener, router, cancel.clone());
        } else {
            runtime.spawn(accept_loop(listener, router, Arc::clone(&app)));
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

    /// Stop gracefully: refuse new sessions (`/health` answers 503
    /// `draining`), let each session's running response finish and close
    /// the session with 1001 (going away) once it has none, for up to
    /// `timeout`; then [`stop`](Self::stop), which closes what is left with
    /// 1001 too. Returns the sessions still open at the deadline. Blocks the
    /// calling thread (not a runtime's).
    pub fn drain(&mut self, timeout: Duration) -> usize {
        let Some(r) = &self.running else { return 0 };
        let app = Arc::clone(&r.app);
        app.draining.store(true, Ordering::Release);
        app.drain.cancel();
        tracing::info!(
            sessions = app.connections.load(Ordering::Acquire),
            "draining: no new sessions; open ones close when their response ends"
        );
        let deadline = std::time::Instant::now() + timeout;
        while app.connections.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let cut = app.connections.load(Ordering::Acquire);
        if cut > 0 {
            tracing::warn!(
                sessions = cut,
                "drain time is up: closing the sessions still answering"
            );
        }
        self.stop();
        cut
    }

    /// Whether [`drain`](Self::drain) has begun.
    pub fn is_draining(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.app.draining.load(Ordering::Acquire))
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
    let draining = app.draining.load(Ordering::Acquire);
    let body = axum::Json(json!({
        "status": if draining { "draining" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "backends": app.config.backends,
        "sessions": app.engine.session_count(),
        "session_objects": app.engine.session_objects(),
        "max_sessions": app.engine.config().max_sessions,
        "connections": app.connections.load(Ordering::Acquire),
    }));
    // A load balancer stops sending new sessions to a draining server.
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, body).into_response()
}

/// `GET /metrics`: the engine's and the server's metrics, `OpenMetrics` text.
async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(key) = &app.config.api_key
        && !authorized(&headers, key)
    {
        app.metrics.refuse("unauthorized");
        return unauthorized();
    }
    let m = &app.metrics;
    let engine = &app.engine;
    m.connections
        .set(i64::try_from(app.connections.load(Ordering::Acquire)).unwrap_or(i64::MAX));
    m.http_connections
        .set(i64::try_from(app.http_connections.load(Ordering::Acquire)).unwrap_or(i64::MAX));
    m.sessions
        .set(i64::try_from(engine.session_count()).unwrap_or(i64::MAX));
    m.session_objects
        .set(i64::try_from(engine.session_objects()).unwrap_or(i64::MAX));
    m.draining
        .set(i64::from(app.draining.load(Ordering::Acquire)));
    for stage in Stage::ALL {
        let label = crate::engine::metrics::StageLabel {
            stage: stage.name(),
        };
        let depth = engine.queue_depth(stage);
        m.queue_depth
            .get_or_create(&label)
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        let (serving, alive) = engine.workers(stage);
        for (state, n) in [
            ("serving", serving),
            ("abandoned", alive.saturating_sub(serving)),
        ] {
            m.workers
                .get_or_create(&WorkerLabel {
                    stage: stage.name(),
                    state,
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn unauthorized() -> Response {
    let body = json!({"error": {"type": "invalid_request_error", "code": "invalid_api_key",
        "message": "Missing or incorrect API key: send 'Authorization: Bearer KEY' or the subprotocol 'openai-insecure-api-key.KEY'."}});
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

/// Accept TCP connections until the server stops: past `max_connections`
/// a connection is closed at once; the others speak HTTP/1 with a deadline
/// on the request head (slowloris), and upgrade to WebSocket.
async fn accept_loop(listener: tokio::net::TcpListener, router: Router, app: Arc<App>) {
    loop {
        let tcp = tokio::select! {
            () = app.cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors, most likely: let some close first.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let open =
            app.http_connections.load(Ordering::Acquire) + app.connections.load(Ordering::Acquire);
        if open >= app.max_connections {
            app.metrics.refuse("connection_limit");
            drop(tcp);
            continue;
        }
        // Events are small frames sent as they happen: Nagle's algorithm
        // would hold some back for up to 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("could not set TCP_NODELAY: {e}");
        }
        app.http_connections.fetch_add(1, Ordering::AcqRel);
        let counted = HttpConnection(Arc::clone(&app));
        let service = TowerToHyperService::new(router.clone());
        let stop = app.cancel.clone();
        let header_timeout = app.config.header_timeout;
        tokio::spawn(async move {
            let _counted = counted;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!("HTTP connection ended: {e}");
                    }
                }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSE_WAIT, conn).await;
                }
            }
        });
    }
}

/// Counts a connection that speaks HTTP for as long as it does.
struct HttpConnection(Arc<App>);

impl Drop for HttpConnection {
    fn drop(&mut self) {
        self.0.http_connections.fetch_sub(1, Ordering::AcqRel);
    }
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
        Err(e) => {
            app.metrics.refuse("unauthorized");
            return e.into_response();
        }
    };
    if app.draining.load(Ordering::Acquire) {
        app.metrics.refuse("draining");
        let body = json!({"error": {"type": "server_error", "code": "server_draining",
            "message": "The server is shutting down: connect again (another replica takes the session)."}});
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            axum::Json(body),
        )
            .into_response();
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
pub(crate) async fn close_with(socket: &mut WebSocket, code: u16, reason: &str) {
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
pub(crate) async fn answer_close(socket: &mut WebSocket) {
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
            app.metrics.refuse(if refusal == OpenRefusal::SessionLimit {
                "session_limit"
            } else {
                "session_failed"
            });
            let _ = tokio::time::timeout(
                app.config.send_timeout,
                socket.send(Message::Text(error.to_string().into())),
            )
            .await;
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
    let mut drain_seen = false;
    let mut reason = "client_stopped_reading";
    while ok {
        if drain_seen && !rt.session().is_busy() {
            // Draining, and no response to finish: what the session has
            // queued goes out, then the client reconnects elsewhere.
            while flush(&mut rt, &mut socket, &notify, timeout).await
                && rt.session().has_queued_events()
            {}
            close_with(&mut socket, close_code::GOING_AWAY, "server shutting down").await;
            reason = "drained";
            break;
        }
        let idle = rt.idle_deadline().map(Instant::from_std);
        tokio::select! {
            () = app.cancel.cancelled() => {
                close_with(&mut socket, close_code::GOING_AWAY, "server shutting down").await;
                reason = "server_stopped";
                break;
            }
            () = app.drain.cancelled(), if !drain_seen => drain_seen = true,
            msg = socket.recv() => {
                match msg {
                    Some(Ok(Message::Text(text))) => rt.on_text(&text),
                    Some(Ok(Message::Binary(_))) => rt.on_binary(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Err(e)) => {
                        // Past the read limit the frame cannot be read at all:
                        // say why before closing.
                        let text = e.to_string();
                        reason = "protocol_error";
                        if text.contains("too long") || text.contains("Space limit") {
                            let ev = rt.error_event(
                                "invalid_request_error",
                                "message_too_large",
                                &format!("Closing: {text}. Split long audio into several appends."),
                            );
                            let _ = send(&mut socket, &ev, timeout).await;
                            close_with(&mut socket, close_code::TOO_BIG, "message too large")
                                .await;
                            reason = "message_too_large";
                        }
                        break;
                    }
                    Some(Ok(Message::Close(_))) => {
                        answer_close(&mut socket).await;
                        reason = "client_closed";
                        break;
                    }
                    None => {
                        reason = "client_vanished";
                        break;
                    }
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
                    reason = "event_queue_overflow";
                    break;
                }
            }
            () = sleep_until(idle) => {
                rt.on_idle();
                ok = flush(&mut rt, &mut socket, &notify, timeout).await;
            }
        }
    }
    app.metrics.close(reason);
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

/// Whether the request carries the server's own key (a bearer token or the
/// `openai-insecure-api-key.` subprotocol): `/metrics` and the audio
/// endpoints, which ephemeral keys do not open.
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
