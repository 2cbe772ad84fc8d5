//! `POST /v1/audio/transcriptions`: an uploaded file through the engine's STT stage.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::decode::{DecodeError, decode_to};
use super::{ApiError, AudioApi, CancelOnDrop, MAX_UPLOAD_BYTES, report_failure, sse_event};
use crate::engine::backend::{Cancel, StageError, SttOptions, SttOutput};
use crate::engine::progress::beat;
use crate::engine::stages::{FailureReport, Job};
use crate::engine::{Engine, STT_RATE, Stage};

/// What the STT worker reports back, in order: the decode's outcome, then
/// the transcript as it comes.
enum Update {
    Decoded {
        duration: f64,
    },
    Refused(DecodeError),
    Partial(String),
    Final {
        text: String,
        language: Option<String>,
    },
    Failed(StageError),
}

/// One upload: decoded, then transcribed, on an STT worker.
struct TranscribeJob {
    engine: Arc<Engine>,
    file: Vec<u8>,
    filename: Option<String>,
    options: SttOptions,
    cancel: Cancel,
    tx: mpsc::UnboundedSender<Update>,
}

impl Job for TranscribeJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }

    fn on_failure(&self) -> Option<FailureReport> {
        Some(report_failure(&self.tx, Update::Failed))
    }

    fn run(self: Box<Self>) {
        let Self {
            engine,
            file,
            filename,
            options,
            cancel,
            tx,
        } = *self;
        let audio = match decode_to(file, filename.as_deref(), STT_RATE) {
            Ok((audio, duration)) => {
                let _ = tx.send(Update::Decoded { duration });
                audio
            }
            Err(e) => {
                let _ = tx.send(Update::Refused(e));
                return;
            }
        };
        let mut emit = |o: SttOutput| {
            beat();
            let _ = tx.send(match o {
                SttOutput::Partial(text) => Update::Partial(text),
                SttOutput::Final { text, language } => Update::Final { text, language },
            });
        };
        if let Err(e) = engine
            .stt()
            .transcribe(&audio, &options, &cancel, &mut emit)
        {
            let _ = tx.send(Update::Failed(e));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
    VerboseJson,
}

/// The request's fields.
struct Request {
    file: Vec<u8>,
    filename: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    format: Format,
    stream: bool,
}

fn multipart_error(e: &MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::new(
            e.status(),
            "invalid_multipart",
            None,
            format!("could not read the multipart body: {}", e.body_text()),
        )
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "file_too_large",
        Some("file"),
        format!(
            "the file is larger than {} MB",
            MAX_UPLOAD_BYTES / (1024 * 1024)
        ),
    )
}

async fn read_request(
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Request, ApiError> {
    let mut multipart = multipart.map_err(|r| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_multipart",
            None,
            format!(
                "{}: send the file as multipart/form-data with a 'file' field",
                r.body_text()
            ),
        )
    })?;
    let mut file = None;
    let mut filename = None;
    let mut text = std::collections::HashMap::new();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&e))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            filename = field.file_name().map(str::to_owned);
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e))? {
                if bytes.len() + chunk.len() > MAX_UPLOAD_BYTES {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            file = Some(bytes);
        } else {
            let value = field.text().await.map_err(|e| multipart_error(&e))?;
            text.insert(name, value);
        }
    }
    let file = file.ok_or_else(|| {
        ApiError::invalid(
            "missing_file",
            "file",
            "no 'file' field: upload the audio as 'file'",
        )
    })?;
    if file.is_empty() {
        return Err(ApiError::invalid(
            "empty_file",
            "file",
            "the uploaded file is empty",
        ));
    }
    let format = match text.get("response_format").map(String::as_str) {
        None | Some("json") => Format::Json,
        Some("text") => Format::Text,
        Some("verbose_json") => Format::VerboseJson,
        Some(other @ ("srt" | "vtt" | "diarized_json")) => {
            return Err(ApiError::invalid(
                "unsupported_response_format",
                "response_format",
                format!("'{other}' is not served here; use json, text or verbose_json"),
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_value",
                "response_format",
                format!("unknown response_format '{other}': use json, text or verbose_json"),
            ));
        }
    };
    let stream = match text.get("stream").map(|s| s.trim().to_ascii_lowercase()) {
        None => false,
        Some(s) if s == "true" || s == "1" => true,
        Some(s) if s == "false" || s == "0" || s.is_empty() => false,
        Some(s) => {
            return Err(ApiError::invalid(
                "invalid_value",
                "stream",
                format!("stream must be true or false, not '{s}'"),
            ));
        }
    };
    let non_empty = |k: &str| {
        text.get(k)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    Ok(Request {
        file,
        filename,
        language: non_empty("language"),
        prompt: non_empty("prompt"),
        format,
        stream,
    })
}

pub(super) async fn handle(
    State(api): State<Arc<AudioApi>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    if let Some(refused) = api.refuse_unauthorized(&headers) {
        return refused;
    }
    match transcribe(&api, multipart).await {
        Ok(response) | Err(response) => response,
    }
}

async fn transcribe(
    api: &AudioApi,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Response> {
    let request = read_request(multipart)
        .await
        .map_err(IntoResponse::into_response)?;
    let generation = Arc::new(AtomicU64::new(0));
    let guard = CancelOnDrop(Arc::clone(&generation));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let language = request.language.clone();
    let job = TranscribeJob {
        engine: Arc::clone(&api.engine),
        file: request.file,
        filename: request.filename,
        options: SttOptions {
            language: request.language,
            prompt: request.prompt,
        },
        cancel: Cancel::new(generation, 0),
        tx,
    };
    api.engine
        .submit(Stage::Stt, Box::new(job))
        .map_err(|e| ApiError::stage(&e).into_response())?;
    let duration = match rx.recv().await {
        Some(Update::Decoded { duration }) => duration,
        Some(Update::Refused(e)) => {
            return Err(ApiError::invalid("invalid_file", "file", e.0).into_response());
        }
        Some(Update::Failed(e)) => return Err(ApiError::stage(&e).into_response()),
        _ => return Err(ApiError::stage(&StageError::ShutDown("stt")).into_response()),
    };
    if request.stream {
        return Ok(stream_response(rx, guard));
    }
    let (text, detected) = loop {
        match rx.recv().await {
            Some(Update::Partial(_) | Update::Decoded { .. }) => {}
            Some(Update::Final { text, language }) => break (text.trim().to_owned(), language),
            Some(Update::Failed(e)) => return Err(ApiError::stage(&e).into_response()),
            // The backend ended without a final transcript: nothing was said.
            Some(Update::Refused(_)) | None => break (String::new(), None),
        }
    };
    drop(guard);
    let usage = json!({"type": "duration", "seconds": duration});
    Ok(match request.format {
        Format::Text => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response(),
        Format::Json => axum::Json(json!({"text": text, "usage": usage})).into_response(),
        Format::VerboseJson => axum::Json(json!({
            "task": "transcribe",
            "language": detected.or(language).unwrap_or_else(|| "unknown".to_owned()),
            "duration": duration,
            "text": text,
            "usage": usage,
        }))
        .into_response(),
    })
}

/// The state of a streamed transcript.
struct Transcript {
    rx: mpsc::UnboundedReceiver<Update>,
    /// The text sent in deltas so far.
    sent: String,
    done: bool,
    _guard: CancelOnDrop,
}

/// The transcript as Server-Sent Events: append-only deltas from the
/// backend's partial transcripts, the rest of the text at the final one,
/// then `transcript.text.done` with the whole text.
fn stream_response(rx: mpsc::UnboundedReceiver<Update>, guard: CancelOnDrop) -> Response {
    let state = Transcript {
        rx,
        sent: String::new(),
        done: false,
        _guard: guard,
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            let update = st.rx.recv().await;
            let event: Value = match update {
                Some(Update::Partial(text)) => {
                    let Some(delta) = text.strip_prefix(st.sent.as_str()).map(str::to_owned) else {
                        continue; // a revision of sent text: wait for the final
                    };
                    if delta.is_empty() {
                        continue;
                    }
                    st.sent.push_str(&delta);
                    json!({"type": "transcript.text.delta", "delta": delta})
                }
                Some(Update::Final { text, .. }) => {
                    st.done = true;
                    let text = text.trim().to_owned();
                    let mut out = Vec::new();
                    if let Some(rest) = text.strip_prefix(st.sent.as_str())
                        && !rest.is_empty()
                    {
                        out.extend_from_slice(&sse_event(
                            &json!({"type": "transcript.text.delta", "delta": rest}),
                        ));
                    }
                    out.extend_from_slice(&sse_event(
                        &json!({"type": "transcript.text.done", "text": text}),
                    ));
                    return Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), st));
                }
                Some(Update::Failed(e)) => {
                    st.done = true;
                    let body = ApiError::stage(&e).body();
                    return Some((Ok(sse_event(&body)), st));
                }
                Some(Update::Decoded { .. } | Update::Refused(_)) => continue,
                None => {
                    st.done = true;
                    let text = st.sent.clone();
                    json!({"type": "transcript.text.done", "text": text})
                }
            };
            return Some((Ok(sse_event(&event)), st));
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}
