//! `POST /v1/audio/speech`: text through the engine's TTS stage, streamed as it is spoken.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::decode::convert_rate;
use super::{ApiError, AudioApi, CancelOnDrop, MAX_SPEECH_INPUT_CHARS, report_failure, sse_event};
use crate::audio::flac::Flac;
use crate::audio::ogg_opus::OggOpus;
use crate::audio::pcm::f32_to_pcm16;
use crate::audio::resample::{Resampler, SUPPORTED_RATES};
use crate::engine::backend::{Cancel, StageError, TtsChunk, TtsRequest};
use crate::engine::progress::beat;
use crate::engine::segmenter::Segmenter;
use crate::engine::stages::{FailureReport, Job};
use crate::engine::{Engine, Stage};

/// `OpenAI`'s PCM rate; audio at another rate is converted to it.
const OUTPUT_RATE: u32 = 24_000;

enum Update {
    /// The response's next bytes: 16-bit little-endian mono samples at [`OUTPUT_RATE`],
    /// or the encoder's output for them.
    Audio(Vec<u8>),
    Done,
    Failed(StageError),
}

/// Converts the backend's chunks to PCM16 at [`OUTPUT_RATE`] on the worker.
struct Converter {
    from: u32,
    resampler: Option<Resampler>,
    out: Vec<f32>,
}

impl Converter {
    fn new(from: u32) -> Self {
        let resampler = (from != OUTPUT_RATE && SUPPORTED_RATES.contains(&from))
            .then(|| Resampler::new(from, OUTPUT_RATE).ok())
            .flatten();
        Self {
            from,
            resampler,
            out: Vec::new(),
        }
    }

    fn push(&mut self, samples: &[f32]) -> Vec<u8> {
        match &mut self.resampler {
            Some(r) => {
                self.out.resize(r.output_len_max(samples.len()), 0.0);
                let n = r.process_into(samples, &mut self.out).unwrap_or(0);
                f32_to_pcm16(&self.out[..n])
            }
            None => f32_to_pcm16(&convert_rate(samples, self.from, OUTPUT_RATE)),
        }
    }

    fn finish(&mut self) -> Vec<u8> {
        match &mut self.resampler {
            Some(r) => {
                self.out.resize(r.flush_len(), 0.0);
                let n = r.flush_into(&mut self.out).unwrap_or(0);
                f32_to_pcm16(&self.out[..n])
            }
            None => Vec::new(),
        }
    }
}

/// One request: its clauses spoken in order on a TTS worker.
struct SpeakJob {
    engine: Arc<Engine>,
    clauses: Vec<String>,
    voice: Option<String>,
    speed: f64,
    cancel: Cancel,
    tx: mpsc::UnboundedSender<Update>,
    /// The encoder of an `opus` or `flac` response: it runs here, on the TTS worker,
    /// not on the server's async threads (Opus takes about 1 % of real time).
    coder: Option<Coder>,
}

/// Where a job's audio goes: encoded first for a compressed response.
struct Sink {
    tx: mpsc::UnboundedSender<Update>,
    coder: Option<Coder>,
    failed: bool,
}

impl Sink {
    fn audio(&mut self, pcm: Vec<u8>) {
        if self.failed || pcm.is_empty() {
            return;
        }
        let bytes = match self.coder.as_mut().map(|c| c.push(&pcm)) {
            None => pcm,
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return self.fail(&e),
        };
        if !bytes.is_empty() {
            let _ = self.tx.send(Update::Audio(bytes));
        }
    }

    fn done(&mut self) {
        if self.failed {
            return;
        }
        match self.coder.as_mut().map(Coder::finish) {
            Some(Err(e)) => return self.fail(&e),
            Some(Ok(bytes)) if !bytes.is_empty() => {
                let _ = self.tx.send(Update::Audio(bytes));
            }
            _ => {}
        }
        let _ = self.tx.send(Update::Done);
    }

    fn fail(&mut self, e: &opus::Error) {
        tracing::warn!("the Opus encoder failed: {e}");
        self.failed = true;
        let _ = self.tx.send(Update::Failed(StageError::Backend {
            stage: "tts",
            message: format!("the Opus encoder failed: {e}"),
        }));
    }
}

impl Job for SpeakJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }

    fn on_failure(&self) -> Option<FailureReport> {
        Some(report_failure(&self.tx, Update::Failed))
    }

    fn run(mut self: Box<Self>) {
        let backend = Arc::clone(self.engine.tts());
        let mut converter: Option<Converter> = None;
        let mut sink = Sink {
            tx: self.tx.clone(),
            coder: self.coder.take(),
            failed: false,
        };
        for text in &self.clauses {
            let request = TtsRequest {
                text: text.clone(),
                voice: self.voice.clone(),
                speed: self.speed,
            };
            let mut emit = |chunk: TtsChunk| {
                beat();
                if chunk.samples.is_empty() || chunk.sample_rate == 0 {
                    return;
                }
                if converter
                    .as_ref()
                    .is_some_and(|c| c.from != chunk.sample_rate)
                    && let Some(c) = converter.as_mut()
                {
                    sink.audio(c.finish());
                    converter = None;
                }
                let c = converter.get_or_insert_with(|| Converter::new(chunk.sample_rate));
                sink.audio(c.push(&chunk.samples));
            };
            if let Err(e) = backend.synthesize(&request, &self.cancel, &mut emit) {
                let _ = self.tx.send(Update::Failed(e));
                return;
            }
            if self.cancel.is_cancelled() || sink.failed {
                return;
            }
        }
        if let Some(c) = converter.as_mut() {
            sink.audio(c.finish());
        }
        sink.done();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Wav,
    Pcm,
    /// Ogg Opus, as `OpenAI` serves it.
    Opus,
    /// FLAC (lossless).
    Flac,
}

/// The encoder of a compressed response.
enum Coder {
    Opus(OggOpus),
    Flac(Flac),
}

impl Coder {
    fn new(format: Format) -> Result<Option<Self>, opus::Error> {
        Ok(match format {
            Format::Opus => Some(Self::Opus(OggOpus::new(
                OUTPUT_RATE,
                getrandom::u32().unwrap_or(0x5325_0001),
            )?)),
            Format::Flac => Some(Self::Flac(Flac::new(OUTPUT_RATE))),
            Format::Wav | Format::Pcm => None,
        })
    }

    /// What goes before the first audio.
    fn header(&mut self) -> Vec<u8> {
        match self {
            Self::Opus(o) => o.headers(),
            Self::Flac(f) => f.header(),
        }
    }

    fn push(&mut self, pcm: &[u8]) -> Result<Vec<u8>, opus::Error> {
        match self {
            Self::Opus(o) => o.push(pcm),
            Self::Flac(f) => Ok(f.push(pcm)),
        }
    }

    fn finish(&mut self) -> Result<Vec<u8>, opus::Error> {
        match self {
            Self::Opus(o) => o.finish(),
            Self::Flac(f) => Ok(f.finish()),
        }
    }
}

struct Request {
    input: String,
    voice: Option<String>,
    speed: f64,
    format: Format,
    sse: bool,
}

fn parse(body: &[u8]) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid("invalid_json", "body", format!("the body is not JSON: {e}"))
    })?;
    let obj = value.as_object().ok_or_else(|| {
        ApiError::invalid("invalid_json", "body", "the body must be a JSON object")
    })?;
    let string = |key: &'static str| -> Result<Option<String>, ApiError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(
                "invalid_type",
                key,
                format!("'{key}' must be a string"),
            )),
        }
    };
    let input = string("input")?.unwrap_or_default();
    if input.trim().is_empty() {
        return Err(ApiError::invalid(
            "missing_input",
            "input",
            "'input' must be non-empty text",
        ));
    }
    if input.chars().count() > MAX_SPEECH_INPUT_CHARS {
        return Err(ApiError::invalid(
            "input_too_long",
            "input",
            format!("'input' is longer than {MAX_SPEECH_INPUT_CHARS} characters"),
        ));
    }
    let format = match string("response_format")?.as_deref() {
        // OpenAI's default is mp3, which no encoder here writes: WAV is what
        // every player reads, so a request that names no format gets it.
        None | Some("wav") => Format::Wav,
        Some("pcm") => Format::Pcm,
        Some("opus") => Format::Opus,
        Some("flac") => Format::Flac,
        Some(other @ ("mp3" | "aac")) => {
            return Err(ApiError::invalid(
                "unsupported_response_format",
                "response_format",
                format!(
                    "'{other}' is not served here; use opus (Ogg), flac, wav or pcm (16-bit mono, 24 kHz)"
                ),
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_value",
                "response_format",
                format!("unknown response_format '{other}': use opus, flac, wav or pcm"),
            ));
        }
    };
    let sse = match string("stream_format")?.as_deref() {
        None | Some("audio") => false,
        Some("sse") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "invalid_value",
                "stream_format",
                format!("unknown stream_format '{other}': use audio or sse"),
            ));
        }
    };
    if sse && format != Format::Pcm && obj.contains_key("response_format") {
        return Err(ApiError::invalid(
            "invalid_value",
            "response_format",
            "stream_format 'sse' carries pcm audio: ask for response_format 'pcm'",
        ));
    }
    let speed = match obj.get("speed") {
        None | Some(Value::Null) => 1.0,
        Some(v) => match v.as_f64() {
            Some(s) if (0.25..=4.0).contains(&s) => s,
            _ => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    "speed",
                    "'speed' must be a number from 0.25 to 4.0",
                ));
            }
        },
    };
    Ok(Request {
        input,
        voice: string("voice")?.filter(|v| !v.trim().is_empty()),
        speed,
        format: if sse { Format::Pcm } else { format },
        sse,
    })
}

/// The state of a response body as it streams.
struct St {
    rx: mpsc::UnboundedReceiver<Update>,
    /// The first update, read before the status was chosen.
    pending: Option<Update>,
    /// What goes before the first audio (the WAV header, or the encoder's).
    opening: Vec<u8>,
    done: bool,
    _guard: CancelOnDrop,
}

/// A WAV header for a stream of unknown length (sizes at their maximum, as
/// streaming servers write them; readers take the data to the end).
fn wav_header(rate: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * 2).to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h
}

pub(super) async fn handle(
    State(api): State<Arc<AudioApi>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = api.refuse_unauthorized(&headers) {
        return refused;
    }
    let request = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let mut coder = match Coder::new(request.format) {
        Ok(c) => c,
        Err(e) => {
            let e = StageError::Backend {
                stage: "tts",
                message: format!("the Opus encoder did not start: {e}"),
            };
            return ApiError::stage(&e).into_response();
        }
    };
    let opening = match coder.as_mut() {
        Some(c) => c.header(),
        None if request.format == Format::Wav => wav_header(OUTPUT_RATE),
        None => Vec::new(),
    };
    let mut segmenter = Segmenter::default();
    let mut clauses = segmenter.push(&request.input);
    clauses.extend(segmenter.finish());
    clauses.retain(|c| !c.trim().is_empty());
    let generation = Arc::new(AtomicU64::new(0));
    let guard = CancelOnDrop(Arc::clone(&generation));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let job = SpeakJob {
        engine: Arc::clone(&api.engine),
        clauses,
        voice: request.voice,
        speed: request.speed,
        cancel: Cancel::new(generation, 0),
        tx,
        coder,
    };
    if let Err(e) = api.engine.submit(Stage::Tts, Box::new(job)) {
        return ApiError::stage(&e).into_response();
    }
    // The first result decides the status: audio (200, streamed) or a failure.
    let first = match rx.recv().await {
        Some(Update::Failed(e)) => return ApiError::stage(&e).into_response(),
        None => return ApiError::stage(&StageError::ShutDown("tts")).into_response(),
        Some(first) => first,
    };
    let (format, sse) = (request.format, request.sse);
    let state = St {
        rx,
        pending: Some(first),
        opening,
        done: false,
        _guard: guard,
    };
    let chunks = futures_util::stream::unfold(state, move |mut st| async move {
        if st.done {
            return None;
        }
        let update = match st.pending.take() {
            Some(u) => Some(u),
            None => st.rx.recv().await,
        };
        let mut out = std::mem::take(&mut st.opening);
        match update {
            Some(Update::Audio(pcm)) => {
                if sse {
                    let audio = base64::engine::general_purpose::STANDARD.encode(&pcm);
                    out.extend_from_slice(&sse_event(
                        &json!({"type": "speech.audio.delta", "audio": audio}),
                    ));
                } else {
                    out.extend_from_slice(&pcm);
                }
            }
            Some(Update::Done) | None => {
                st.done = true;
                if sse {
                    out.extend_from_slice(&sse_event(&json!({"type": "speech.audio.done"})));
                }
            }
            Some(Update::Failed(e)) => {
                st.done = true;
                tracing::warn!("speech request failed after its first audio: {e}");
                if sse {
                    out.extend_from_slice(&sse_event(&ApiError::stage(&e).body()));
                } else {
                    // The status is sent: end the body early so the client
                    // sees a broken transfer rather than a clean short file.
                    return Some((Err(std::io::Error::other(e.to_string())), st));
                }
            }
        }
        Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), st))
    });
    let content_type = match (sse, format) {
        (true, _) => "text/event-stream",
        (false, Format::Wav) => "audio/wav",
        (false, Format::Pcm) => "audio/pcm",
        (false, Format::Opus) => "audio/ogg",
        (false, Format::Flac) => "audio/flac",
    };
    let mut response = Body::from_stream(chunks).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("x-sample-rate", HeaderValue::from(OUTPUT_RATE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_field_by_field() {
        let err = |body: &str| parse(body.as_bytes()).err().map(|e| (e.code, e.param));
        assert_eq!(err("nope"), Some(("invalid_json", Some("body"))));
        assert_eq!(
            err(r#"{"voice": "a"}"#),
            Some(("missing_input", Some("input")))
        );
        assert_eq!(
            err(r#"{"input": "hi", "response_format": "mp3"}"#),
            Some(("unsupported_response_format", Some("response_format")))
        );
        assert_eq!(
            err(r#"{"input": "hi", "response_format": "opus", "stream_format": "sse"}"#),
            Some(("invalid_value", Some("response_format")))
        );
        let opus = parse(br#"{"input": "hi", "response_format": "opus"}"#).unwrap();
        assert!(!opus.sse && opus.format == Format::Opus);
        assert_eq!(
            err(r#"{"input": "hi", "response_format": "ogg"}"#),
            Some(("invalid_value", Some("response_format")))
        );
        assert_eq!(
            err(r#"{"input": "hi", "speed": 9}"#),
            Some(("invalid_value", Some("speed")))
        );
        let long = format!(
            r#"{{"input": "{}"}}"#,
            "a".repeat(MAX_SPEECH_INPUT_CHARS + 1)
        );
        assert_eq!(err(&long), Some(("input_too_long", Some("input"))));
        let ok = parse(br#"{"input": "hi", "stream_format": "sse", "speed": 1.5}"#).unwrap();
        assert!(ok.sse && ok.format == Format::Pcm && (ok.speed - 1.5).abs() < 1e-9);
    }

    #[test]
    fn the_converter_brings_piper_rate_to_24k() {
        let mut c = Converter::new(22050);
        let mut bytes = c.push(&vec![0.25; 22050]);
        bytes.extend(c.finish());
        assert!(
            (bytes.len() as i64 / 2 - 24000).abs() < 64,
            "{}",
            bytes.len() / 2
        );
        assert_eq!(wav_header(24000).len(), 44);
    }
}
