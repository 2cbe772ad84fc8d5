//! `OpenAI`-compatible HTTP endpoints next to `/v1/realtime`, on the server's own models.
//!
//! * `POST /v1/audio/transcriptions`: a multipart upload (WAV, MP3, FLAC or
//!   Ogg Vorbis) transcribed by the engine's STT stage; `json`, `text` or
//!   `verbose_json`, or with `stream=true` Server-Sent Events
//!   (`transcript.text.delta`, then `transcript.text.done`).
//! * `POST /v1/audio/speech`: text spoken by the engine's TTS stage, streamed
//!   as it is synthesised: `wav` or `pcm` (16-bit mono, 24 kHz), or with
//!   `stream_format: "sse"` as `speech.audio.delta` events.
//! * `GET /v1/models`: the backends the server was started with.
//!
//! Jobs go through the engine's stage queues, the same worker pools the
//! realtime sessions use, so one model copy serves both. Decoding an upload
//! runs on the STT worker too, never on a tokio task. Auth is the
//! WebSocket's: with an API key set, `Authorization: Bearer KEY`. Every
//! refusal is a 4xx in `OpenAI`'s error shape, naming the parameter.

mod decode;
mod speech;
mod transcriptions;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::engine::Engine;

/// The largest upload `/v1/audio/transcriptions` takes (`OpenAI`'s limit).
pub const MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;
/// The longest `input` `/v1/audio/speech` takes, in characters (`OpenAI`'s limit).
pub const MAX_SPEECH_INPUT_CHARS: usize = 4096;

/// What the endpoints need from the server.
pub(crate) struct AudioApi {
    pub(crate) engine: Arc<Engine>,
    pub(crate) api_key: Option<String>,
    /// The backends by stage (`{"stt": "faster-whisper", ...}`), for `/v1/models`.
    pub(crate) backends: Value,
    pub(crate) authorized: fn(&HeaderMap, &str) -> bool,
}

impl AudioApi {
    /// The 401 for a request without the key, if one is required.
    fn refuse_unauthorized(&self, headers: &HeaderMap) -> Option<Response> {
        let key = self.api_key.as_deref()?;
        if (self.authorized)(headers, key) {
            return None;
        }
        Some(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                None,
                "Missing or incorrect API key: send 'Authorization: Bearer KEY'.",
            )
            .into_response(),
        )
    }

    /// The backend of `stage`, if the server was told it.
    fn backend(&self, stage: &str) -> Option<&str> {
        self.backends.get(stage).and_then(Value::as_str)
    }
}

/// The routes, with their state; merged into the realtime server's router.
pub(crate) fn router(api: AudioApi) -> Router {
    let api = Arc::new(api);
    Router::new()
        .route(
            "/v1/audio/transcriptions",
            post(transcriptions::handle)
                // Room for the multipart framing and the other fields; the file
                // itself is held to MAX_UPLOAD_BYTES while it is read.
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES + 1024 * 1024)),
        )
        .route(
            "/v1/audio/speech",
            post(speech::handle).layer(DefaultBodyLimit::max(1024 * 1024)),
        )
        .route("/v1/models", get(models))
        .with_state(api)
}

/// A refusal in `OpenAI`'s error shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    param: Option<&'static str>,
    message: String,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        param: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            param,
            message: message.into(),
        }
    }

    /// A 400 about `param`.
    fn invalid(code: &'static str, param: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, Some(param), message)
    }

    /// The model stage failed or is unavailable.
    fn stage(e: &crate::engine::backend::StageError) -> Self {
        use crate::engine::backend::StageError;
        let (status, code) = match e {
            StageError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_overloaded"),
            StageError::ShutDown(_) => (StatusCode::SERVICE_UNAVAILABLE, "server_shutting_down"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "model_error"),
        };
        Self::new(status, code, None, e.to_string())
    }

    fn body(&self) -> Value {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        json!({"error": {"message": self.message, "type": kind, "param": self.param,
            "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

async fn models(
    axum::extract::State(api): axum::extract::State<Arc<AudioApi>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = api.refuse_unauthorized(&headers) {
        return refused;
    }
    let mut data: Vec<Value> = Vec::new();
    for id in ["stt", "llm", "tts"].iter().filter_map(|s| api.backend(s)) {
        if !data.iter().any(|m| m["id"] == id) {
            data.push(json!({"id": id, "object": "model", "created": 0,
                "owned_by": "speech-to-speech"}));
        }
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"object": "list", "data": data})),
    )
        .into_response()
}

/// Stops a job when its request goes away (the client disconnected): its
/// [`Cancel`](crate::engine::backend::Cancel) watches this counter.
struct CancelOnDrop(Arc<std::sync::atomic::AtomicU64>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A Server-Sent Events body from a stream of JSON events.
fn sse_event(event: &Value) -> axum::body::Bytes {
    axum::body::Bytes::from(format!("data: {event}\n\n"))
}

/// A job's panic or timeout, sent to its request as the stage's failure.
fn report_failure<U: Send + 'static>(
    tx: &tokio::sync::mpsc::UnboundedSender<U>,
    failed: fn(crate::engine::backend::StageError) -> U,
) -> crate::engine::stages::FailureReport {
    let tx = tx.clone();
    Box::new(move |e| {
        let _ = tx.send(failed(e));
    })
}
