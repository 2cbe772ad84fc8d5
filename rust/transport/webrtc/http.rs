//! `POST /v1/realtime/calls`: reading the offer (SDP body or multipart form) and writing the answer or the error.
//!
//! The router of the Realtime server mounts [`post_call`] (or calls
//! [`parse_call_request`] and [`answer_response`] itself). `OpenAI`'s
//! semantics: the body is the SDP offer (`application/sdp`), or a
//! `multipart/form-data` form with an `sdp` field and an optional `session`
//! field (the session config as JSON); the answer is `201 Created` with the
//! SDP answer as `application/sdp` and `Location: /v1/realtime/calls/{id}`.
//! Every refusal is JSON `{"error": {...}}` with a status that says whose
//! fault it was.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::call::Call;
use super::config::CallId;
use super::endpoint::WebRtcEndpoint;
use super::sdp::OfferError;

/// Largest request body read: an SDP offer is a few kilobytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The path calls live under.
pub const CALLS_PATH: &str = "/v1/realtime/calls";

/// A parsed `POST /v1/realtime/calls`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    /// The SDP offer.
    pub sdp: String,
    /// The `session` field of a multipart form: the session config to start
    /// with (validated by the session, not here).
    pub session: Option<Value>,
}

/// A refused request, answered as `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status.
    pub status: StatusCode,
    /// `invalid_request_error` or `server_error`.
    pub kind: &'static str,
    /// A stable code (`invalid_sdp`, `no_audio`, `unsupported_codec`, ...).
    pub code: &'static str,
    /// What was wrong and what to send instead.
    pub message: String,
    /// The offending form field, if any.
    pub param: Option<&'static str>,
}

impl HttpError {
    fn invalid(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: None,
        }
    }

    fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// The JSON body, in `OpenAI`'s error shape.
    pub fn body(&self) -> Value {
        json!({"error": {
            "type": self.kind,
            "code": self.code,
            "message": self.message,
            "param": self.param,
        }})
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<&OfferError> for HttpError {
    fn from(e: &OfferError) -> Self {
        let bad =
            |code| HttpError::invalid(StatusCode::BAD_REQUEST, code, e.to_string()).param("sdp");
        match e {
            OfferError::Malformed(_) | OfferError::Rejected(_) => bad("invalid_sdp"),
            OfferError::NoAudio => bad("no_audio"),
            OfferError::NoCommonCodec { .. } => bad("unsupported_codec"),
            OfferError::TooManyCalls { .. } => HttpError::invalid(
                StatusCode::TOO_MANY_REQUESTS,
                "session_limit_reached",
                e.to_string(),
            ),
            OfferError::Closed => HttpError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "server_error",
                code: "server_shutting_down",
                message: e.to_string(),
                param: None,
            },
            _ => HttpError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "server_error",
                code: "server_error",
                message: e.to_string(),
                param: None,
            },
        }
    }
}

/// Read the offer from a request's `Content-Type` and body.
///
/// `application/sdp` (and `text/plain`, what `fetch` sends for a string
/// body, or no type at all) is the SDP itself; `multipart/form-data` holds
/// `sdp` and optionally `session`.
pub fn parse_call_request(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<CallRequest, HttpError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(HttpError::invalid(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "The body has {} bytes; an SDP offer is a few kilobytes (limit {MAX_BODY_BYTES}).",
                body.len()
            ),
        ));
    }
    let (mime, params) = split_content_type(content_type.unwrap_or(""));
    match mime.as_str() {
        "" | "application/sdp" | "text/plain" => Ok(CallRequest {
            sdp: utf8(body, "sdp")?,
            session: None,
        }),
        "multipart/form-data" => {
            let boundary = params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.as_str())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| {
                    HttpError::invalid(
                        StatusCode::BAD_REQUEST,
                        "invalid_multipart",
                        "The multipart/form-data Content-Type has no boundary.",
                    )
                })?;
            parse_form(body, boundary)
        }
        other => Err(HttpError::invalid(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type '{other}' is not accepted: send the SDP offer as application/sdp, or a multipart/form-data form with 'sdp' (and optionally 'session')."
            ),
        )),
    }
}

fn utf8(bytes: &[u8], param: &'static str) -> Result<String, HttpError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        HttpError::invalid(
            StatusCode::BAD_REQUEST,
            "invalid_sdp",
            format!("The '{param}' is not UTF-8 text."),
        )
        .param(param)
    })
}

/// `type/subtype` in lower case, and the `key=value` parameters (quotes removed).
fn split_content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = value.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect();
    (mime, params)
}

/// The `sdp` and `session` fields of a `multipart/form-data` body (RFC 7578).
fn parse_form(body: &[u8], boundary: &str) -> Result<CallRequest, HttpError> {
    let bad = |m: &str| HttpError::invalid(StatusCode::BAD_REQUEST, "invalid_multipart", m);
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut sdp = None;
    let mut session = None;
    let mut closed = false;
    // Everything before the first delimiter is preamble.
    let mut pieces = split_on(body, delimiter).into_iter().skip(1).peekable();
    if pieces.peek().is_none() {
        return Err(bad("The form has no part with its boundary."));
    }
    for piece in pieces {
        if piece.starts_with(b"--") {
            closed = true;
            break;
        }
        let piece = piece
            .strip_prefix(b"\r\n")
            .or_else(|| piece.strip_prefix(b"\n"))
            .unwrap_or(piece);
        let piece = piece
            .strip_suffix(b"\r\n")
            .or_else(|| piece.strip_suffix(b"\n"))
            .unwrap_or(piece);
        let (head, value) = split_once(piece, b"\r\n\r\n")
            .or_else(|| split_once(piece, b"\n\n"))
            .ok_or_else(|| bad("A form part has no blank line after its headers."))?;
        let head =
            std::str::from_utf8(head).map_err(|_| bad("A form part's headers are not text."))?;
        let name = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .find_map(|(_, v)| {
                split_content_type(v)
                    .1
                    .into_iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("name"))
                    .map(|(_, v)| v)
            })
            .ok_or_else(|| bad("A form part has no Content-Disposition name."))?;
        match name.as_str() {
            "sdp" => sdp = Some(utf8(value, "sdp")?),
            "session" => {
                let v: Value = serde_json::from_slice(value).map_err(|e| {
                    HttpError::invalid(
                        StatusCode::BAD_REQUEST,
                        "invalid_session",
                        format!("The 'session' field is not valid JSON: {e}."),
                    )
                    .param("session")
                })?;
                if !v.is_object() {
                    return Err(HttpError::invalid(
                        StatusCode::BAD_REQUEST,
                        "invalid_session",
                        "The 'session' field must be a JSON object (the session config).",
                    )
                    .param("session"));
                }
                session = Some(v);
            }
            // Other fields are not ours to refuse.
            _ => {}
        }
    }
    if !closed {
        return Err(bad("The form does not end with its closing boundary."));
    }
    let sdp = sdp.ok_or_else(|| {
        HttpError::invalid(
            StatusCode::BAD_REQUEST,
            "missing_required_parameter",
            "The form has no 'sdp' field: put the SDP offer in a field named 'sdp'.",
        )
        .param("sdp")
    })?;
    Ok(CallRequest { sdp, session })
}

fn split_once<'a>(data: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = data.windows(sep.len()).position(|w| w == sep)?;
    Some((&data[..at], &data[at + sep.len()..]))
}

fn split_on<'a>(mut data: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some((head, tail)) = split_once(data, sep) {
        out.push(head);
        data = tail;
    }
    out.push(data);
    out
}

/// `/v1/realtime/calls/{id}`.
pub fn call_location(id: &CallId) -> String {
    format!("{CALLS_PATH}/{id}")
}

/// `201 Created`, the SDP answer, and `Location` naming the call.
pub fn answer_response(id: &CallId, answer_sdp: String) -> Response {
    let mut response = (StatusCode::CREATED, answer_sdp).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(location) = HeaderValue::from_str(&call_location(id)) {
        headers.insert(header::LOCATION, location);
    }
    response
}

/// Answer `POST /v1/realtime/calls` on `endpoint`: parse the request,
/// accept the offer, hand the call (and the form's `session`) to `on_call`
/// and build the `201`; or the error response.
pub fn post_call(
    endpoint: &WebRtcEndpoint,
    headers: &HeaderMap,
    body: &[u8],
    on_call: impl FnOnce(Call, Option<Value>),
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let request = match parse_call_request(content_type, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match endpoint.accept_offer(&request.sdp) {
        Ok((id, answer, call)) => {
            on_call(call, request.session);
            answer_response(&id, answer)
        }
        Err(e) => {
            tracing::info!("WebRTC offer refused: {e}");
            HttpError::from(&e).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";

    fn form(boundary: &str, parts: &[(&str, &str)]) -> Vec<u8> {
        let mut out = String::new();
        for (name, value) in parts {
            let _ = write!(
                out,
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            );
        }
        let _ = write!(out, "--{boundary}--\r\n");
        out.into_bytes()
    }

    #[test]
    fn sdp_bodies() {
        for ct in [
            Some("application/sdp"),
            Some("Application/SDP; charset=utf-8"),
            Some("text/plain;charset=UTF-8"),
            None,
        ] {
            let r = parse_call_request(ct, SDP.as_bytes()).unwrap();
            assert_eq!(r.sdp, SDP);
            assert_eq!(r.session, None);
        }
    }

    #[test]
    fn multipart_form_with_sdp_and_session() {
        let session = r#"{"type":"realtime","instructions":"Be brief."}"#;
        let body = form("XyZ", &[("sdp", SDP), ("session", session)]);
        let r = parse_call_request(Some("multipart/form-data; boundary=\"XyZ\""), &body).unwrap();
        assert_eq!(r.sdp, SDP);
        assert_eq!(r.session.unwrap()["instructions"], "Be brief.");
        // The session is optional; unknown fields are ignored.
        let body = form("b", &[("other", "x"), ("sdp", SDP)]);
        let r = parse_call_request(Some("multipart/form-data; boundary=b"), &body).unwrap();
        assert_eq!((r.sdp.as_str(), r.session), (SDP, None));
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        let code = |ct: &str, body: &[u8]| parse_call_request(Some(ct), body).unwrap_err();
        let e = code("multipart/form-data", b"");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "invalid_multipart")
        );
        let e = code(
            "multipart/form-data; boundary=b",
            &form("b", &[("session", "{}")]),
        );
        assert_eq!(
            (e.code, e.param),
            ("missing_required_parameter", Some("sdp"))
        );
        let e = code(
            "multipart/form-data; boundary=b",
            &form("b", &[("sdp", SDP), ("session", "nope")]),
        );
        assert_eq!((e.code, e.param), ("invalid_session", Some("session")));
        let e = code(
            "multipart/form-data; boundary=b",
            &form("b", &[("sdp", SDP), ("session", "[1]")]),
        );
        assert_eq!(e.code, "invalid_session");
        let truncated = format!("--b\r\nContent-Disposition: form-data; name=\"sdp\"\r\n\r\n{SDP}");
        let e = code("multipart/form-data; boundary=b", truncated.as_bytes());
        assert_eq!(e.code, "invalid_multipart");
        let e = code("application/json", b"{}");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        );
        let e = code("application/sdp", &[0xff, 0xfe]);
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "invalid_sdp"));
        let e = code("application/sdp", &vec![b'a'; MAX_BODY_BYTES + 1]);
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.body()["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn offer_errors_map_to_statuses() {
        let status = |e: OfferError| HttpError::from(&e).status;
        assert_eq!(status(OfferError::NoAudio), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(OfferError::Malformed("x".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(OfferError::TooManyCalls { max: 1 }),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(status(OfferError::Closed), StatusCode::SERVICE_UNAVAILABLE);
        let e = HttpError::from(&OfferError::NoCommonCodec {
            offered: vec!["PCMU/8000".into()],
        });
        assert_eq!(e.code, "unsupported_codec");
        assert!(e.message.contains("PCMU/8000"));
    }

    #[test]
    fn answers_are_201_with_location() {
        let id = CallId("rtc_abc".into());
        let r = answer_response(&id, "v=0\r\n".into());
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()[header::LOCATION], "/v1/realtime/calls/rtc_abc");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/sdp");
    }
}
