//! The server's HTTP routes besides the WebSocket: WebRTC calls, ephemeral client keys, and the browser page.
//!
//! * `POST /v1/realtime/calls`: an SDP offer (or a multipart form with `sdp`
//!   and `session`) in, `201` with the SDP answer and `Location` out; the
//!   call then runs a Realtime session ([`super::calls`]).
//! * `POST /v1/realtime/client_secrets`: an ephemeral key (`ek_...`) with an
//!   expiry and an optional session config, minted with the server's key
//!   ([`super::keys`]).
//! * `GET /`: the browser client ([`super::page`]).
//!
//! The WebSocket route mounts these with one `merge`; nothing here knows the
//! WebSocket server.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::calls::serve_call;
use super::keys::{DEFAULT_TTL, Keys, TTL_RANGE};
use super::page;
use super::webrtc::WebRtcEndpoint;
use super::webrtc::http::{HttpError, answer_response, parse_call_request};
use crate::engine::Engine;
use crate::protocol::{
    Dialect, OpenOptions, OpenRefusal, ProtocolError, RealtimeSession, SessionDefaults,
    session_resource,
};

/// The model name a session reports when the client names none.
const DEFAULT_MODEL: &str = "gpt-realtime";

/// What the routes share.
pub struct Web {
    /// The models every session runs on.
    pub engine: Arc<Engine>,
    /// The server's key and its ephemeral keys.
    pub keys: Arc<Keys>,
    /// What a new session starts with.
    pub defaults: SessionDefaults,
    /// Largest client message answered normally.
    pub max_message_bytes: usize,
    /// The UDP endpoint of the calls; `None`: WebRTC is off.
    pub endpoint: Option<WebRtcEndpoint>,
    /// Cancelled when the server stops: calls hang up.
    pub cancel: CancellationToken,
}

/// The routes, ready to merge into the WebSocket server's router.
pub fn routes(web: Web) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/v1/realtime/calls", post(calls))
        .route("/v1/realtime/client_secrets", post(client_secrets))
        .with_state(Arc::new(web))
}

fn invalid(status: StatusCode, code: &'static str, message: String) -> HttpError {
    HttpError {
        status,
        kind: "invalid_request_error",
        code,
        message,
        param: None,
    }
}

fn refused(e: &ProtocolError) -> Response {
    let mut body = e.to_error_body(None);
    if let Some(o) = body.as_object_mut() {
        o.remove("event_id");
    }
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": body })),
    )
        .into_response()
}

/// `POST /v1/realtime/client_secrets`: `{"expires_after": {"anchor":
/// "created_at", "seconds": N}, "session": {...}}`, both optional; answered
/// with `{"value": "ek_...", "expires_at": T, "session": {...}}`.
async fn client_secrets(State(web): State<Arc<Web>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = web.keys.check_minter(&headers) {
        return e.into_response();
    }
    let request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("The body is not valid JSON: {e}.");
                return invalid(StatusCode::BAD_REQUEST, "invalid_json", msg).into_response();
            }
        }
    };
    let ttl = match expiry(&request) {
        Ok(ttl) => ttl,
        Err(e) => return refused(&e),
    };
    let session_id = match random_id("sess_") {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let mut state =
        RealtimeSession::starting_state(&web.engine, &web.defaults, &session_id, DEFAULT_MODEL);
    let session = match request.get("session") {
        None | Some(Value::Null) => None,
        Some(v) => {
            match RealtimeSession::checked_update(&state, v, web.engine.has_vad()) {
                Ok(next) => state = next,
                Err(e) => return refused(&e),
            }
            Some(v.clone())
        }
    };
    match web.keys.mint(ttl, session) {
        Ok(minted) => axum::Json(json!({
            "value": minted.value,
            "expires_at": minted.expires_at,
            "session": session_resource(&state, minted.expires_at),
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The life a mint request asks for.
fn expiry(request: &Value) -> Result<Duration, ProtocolError> {
    let Some(obj) = request.as_object() else {
        return Err(ProtocolError::invalid(
            "invalid_request",
            "The body must be a JSON object.",
            None,
        ));
    };
    let Some(after) = obj.get("expires_after").filter(|v| !v.is_null()) else {
        return Ok(DEFAULT_TTL);
    };
    let p = "expires_after";
    let after = after
        .as_object()
        .ok_or_else(|| ProtocolError::value(p, "expires_after must be an object."))?;
    if let Some(anchor) = after.get("anchor")
        && anchor != "created_at"
    {
        return Err(ProtocolError::value(
            "expires_after.anchor",
            format!("Invalid anchor {anchor}: only 'created_at' is supported."),
        ));
    }
    let (lo, hi) = TTL_RANGE;
    match after.get("seconds") {
        None => Ok(DEFAULT_TTL),
        Some(s) => match s.as_u64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(ProtocolError::value(
                "expires_after.seconds",
                format!("expires_after.seconds must be an integer from {lo} to {hi}, got {s}."),
            )),
        },
    }
}

fn random_id(prefix: &str) -> Result<String, HttpError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| HttpError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        code: "server_error",
        message: format!("no OS randomness: {e}"),
        param: None,
    })?;
    let mut id = prefix.to_owned();
    for b in bytes {
        let _ = write!(id, "{b:02x}");
    }
    Ok(id)
}

/// `POST /v1/realtime/calls`: auth, the offer, a session (counted against
/// the session limit), the answer; the call then runs on its own task.
async fn calls(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(endpoint) = &web.endpoint else {
        let msg = "WebRTC is off on this server (start it without --webrtc off); use the WebSocket at /v1/realtime.";
        return invalid(StatusCode::NOT_FOUND, "webrtc_disabled", msg.into()).into_response();
    };
    let grant = match web.keys.check(&headers) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let request = match parse_call_request(content_type, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let model = query
        .get("model")
        .cloned()
        .unwrap_or_else(|| DEFAULT_MODEL.to_owned());
    let mut configs: Vec<Value> = grant.session().cloned().into_iter().collect();
    if let Some(form) = request.session {
        // Refuse a bad form here, with the reason, rather than open a session without it.
        let mut state = RealtimeSession::starting_state(&web.engine, &web.defaults, "", &model);
        for v in configs.iter().chain(std::iter::once(&form)) {
            match RealtimeSession::checked_update(&state, v, web.engine.has_vad()) {
                Ok(next) => state = next,
                Err(e) => return refused(&e),
            }
        }
        configs.push(form);
    }
    let beta = headers
        .get_all("openai-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("realtime=v1"));
    let options = OpenOptions {
        dialect: if beta { Dialect::Beta } else { Dialect::Ga },
        model,
        timings: query
            .get("timings")
            .is_some_and(|v| v == "1" || v == "true"),
        max_message_bytes: web.max_message_bytes,
        session: configs,
        media_rate: Some(super::webrtc::SAMPLE_RATE),
    };
    let (rt, created) = match RealtimeSession::open(&web.engine, &web.defaults, options) {
        Ok(opened) => opened,
        Err((ev, refusal)) => {
            let status = match refusal {
                OpenRefusal::SessionLimit => StatusCode::TOO_MANY_REQUESTS,
                OpenRefusal::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let body = json!({ "error": ev["error"] });
            return (status, axum::Json(body)).into_response();
        }
    };
    match endpoint.accept_offer(&request.sdp) {
        Ok((id, answer, call)) => {
            // An offer without a data channel gets audio only.
            let silent = !request.sdp.contains("m=application");
            tracing::info!(call = %id, session = %rt.session().id(), "WebRTC call opened");
            tokio::spawn(serve_call(rt, created, call, silent, web.cancel.clone()));
            answer_response(&id, answer)
        }
        Err(e) => {
            rt.session().close();
            tracing::info!("WebRTC offer refused: {e}");
            HttpError::from(&e).into_response()
        }
    }
}

/// `GET /`: the browser client, told whether it must ask for a key,
/// whether WebRTC is on and whether turn detection is available.
async fn index(State(web): State<Arc<Web>>) -> Response {
    let config = json!({
        "auth": web.keys.required(),
        "webrtc": web.endpoint.is_some(),
        "vad": web.engine.has_vad(),
    });
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page::html(&config),
    )
        .into_response()
}
