//! Python handlers as engine backends, and the in-process engine/session API.
//!
//! A handler is any Python object with the stage's streaming method
//! (`transcribe`, `generate` or `synthesize`) returning an iterator. The
//! engine calls it from its stage worker threads, which take the GIL only for
//! the duration of the call; model libraries release it while they compute.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::engine::backend::{
    Cancel, LlmBackend, LlmOutput, LlmRequest, StageError, SttBackend, SttOptions, SttOutput, Tool,
    ToolChoice, TtsBackend, TtsChunk, TtsRequest, TurnModel,
};
use crate::engine::conversation::{Content, Item, ItemKind, ItemStatus, Role};
use crate::engine::events::{EngineEvent, StopReason};
use crate::engine::scripted::{ScriptedLlm, ScriptedStt, ScriptedTts};
use crate::engine::segmenter::DEFAULT_FIRST_MAX_WORDS;
use crate::engine::{
    DEFAULT_MAX_SESSIONS, Engine, EngineConfig, ResponseOptions, Session, SessionConfig,
};

use super::smart_turn::PySmartTurn;
use super::vad::PySileroVad;
use crate::vad::{Eagerness, EndOfTurnConfig};

/// The cancellation flag a handler polls between tokens or chunks.
#[pyclass(name = "CancelToken", module = "speech_to_speech._core", frozen)]
pub struct PyCancelToken(Cancel);

#[pymethods]
impl PyCancelToken {
    /// Whether the work was cancelled (barge-in, a cancel, a closed session,
    /// or the interpreter exiting).
    fn is_set(&self) -> bool {
        self.0.is_cancelled() || PYTHON_EXITING.load(Ordering::Relaxed)
    }
}

fn stage_err(stage: &'static str, py: Python<'_>, e: &PyErr) -> StageError {
    let kind = e
        .get_type(py)
        .name()
        .map_or_else(|_| "Exception".to_owned(), |n| n.to_string());
    StageError::Backend {
        stage,
        message: format!("{kind}: {}", e.value(py)),
    }
}

/// Set once the interpreter starts to exit: workers no longer enter Python.
static PYTHON_EXITING: AtomicBool = AtomicBool::new(false);
/// Stage workers inside a Python call (or about to enter one).
static IN_PYTHON: AtomicUsize = AtomicUsize::new(0);
/// How long interpreter exit waits for handlers to return (they see their
/// cancel token set and stop at their next token or chunk).
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// Counts a worker in Python for as long as it lives.
struct InPython;

impl Drop for InPython {
    fn drop(&mut self) {
        IN_PYTHON.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Run `f` attached to the interpreter, on a stage worker thread.
///
/// A thread that takes the GIL while the interpreter finalizes is ended by
/// `CPython` from under its Rust frames, which crashes the process. So once
/// Python starts to exit ([`shutdown_workers`], run by `atexit` before
/// finalization) no worker enters Python any more: its job fails and the
/// worker goes on.
fn attach_stage<F>(stage: &'static str, f: F) -> Result<(), StageError>
where
    F: for<'py> FnOnce(Python<'py>) -> Result<(), StageError>,
{
    // Count first, then look at the flag: `shutdown_workers` sets the flag
    // first, then waits for the count, so one of the two sees the other.
    IN_PYTHON.fetch_add(1, Ordering::SeqCst);
    let _counted = InPython;
    if PYTHON_EXITING.load(Ordering::SeqCst) {
        return Err(StageError::ShutDown(stage));
    }
    Python::try_attach(f).unwrap_or(Err(StageError::ShutDown(stage)))
}

/// Stop stage workers from entering Python and wait (GIL released) for
/// those inside a handler to return. Registered with `atexit` when the
/// module loads; idempotent.
#[pyfunction]
pub fn shutdown_workers(py: Python<'_>) {
    PYTHON_EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + EXIT_WAIT;
        while IN_PYTHON.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}

/// A Python STT handler.
struct PyStt(Py<PyAny>);
/// A Python LLM handler.
struct PyLlm(Py<PyAny>);
/// A Python TTS handler.
struct PyTts(Py<PyAny>);

impl SttBackend for PyStt {
    fn transcribe(
        &self,
        audio: &[f32],
        options: &SttOptions,
        cancel: &Cancel,
        emit: &mut dyn FnMut(SttOutput),
    ) -> Result<(), StageError> {
        attach_stage("stt", |py| {
            let mut run = || -> PyResult<()> {
                let kwargs = PyDict::new(py);
                kwargs.set_item("language", options.language.as_deref())?;
                kwargs.set_item("prompt", options.prompt.as_deref())?;
                kwargs.set_item("cancel", PyCancelToken(cancel.clone()))?;
                let arr = PyArray1::from_slice(py, audio);
                let it = self
                    .0
                    .bind(py)
                    .call_method("transcribe", (arr,), Some(&kwargs))?
                    .try_iter()?;
                for item in it {
                    let item = item?;
                    let text: String = item.getattr("text")?.extract()?;
                    let is_final: bool = item.getattr("final")?.extract()?;
                    if is_final {
                        let language: Option<String> = item.getattr("language")?.extract()?;
                        emit(SttOutput::Final { text, language });
                    } else {
                        emit(SttOutput::Partial(text));
                    }
                    if cancel.is_cancelled() {
                        break;
                    }
                }
                Ok(())
            };
            run().map_err(|e| stage_err("stt", py, &e))
        })
    }
}

fn messages_to_py<'py>(py: Python<'py>, req: &LlmRequest) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for m in &req.messages {
        let d = PyDict::new(py);
        d.set_item("role", m.role)?;
        d.set_item("content", &m.content)?;
        if !m.tool_calls.is_empty() {
            let calls = PyList::empty(py);
            for (id, name, args) in &m.tool_calls {
                let f = PyDict::new(py);
                f.set_item("name", name)?;
                f.set_item("arguments", args)?;
                let c = PyDict::new(py);
                c.set_item("id", id)?;
                c.set_item("type", "function")?;
                c.set_item("function", f)?;
                calls.append(c)?;
            }
            d.set_item("tool_calls", calls)?;
        }
        if let Some(id) = &m.tool_call_id {
            d.set_item("tool_call_id", id)?;
        }
        list.append(d)?;
    }
    Ok(list)
}

fn tools_to_py<'py>(py: Python<'py>, tools: &[Tool]) -> PyResult<Option<Bound<'py, PyList>>> {
    if tools.is_empty() {
        return Ok(None);
    }
    let loads = py.import("json")?.getattr("loads")?;
    let list = PyList::empty(py);
    for t in tools {
        let d = PyDict::new(py);
        d.set_item("type", "function")?;
        d.set_item("name", &t.name)?;
        d.set_item("description", &t.description)?;
        d.set_item("parameters", loads.call1((&t.parameters,))?)?;
        list.append(d)?;
    }
    Ok(Some(list))
}

fn tool_choice_to_py<'py>(py: Python<'py>, c: &ToolChoice) -> PyResult<Bound<'py, PyAny>> {
    Ok(match c {
        ToolChoice::Auto => "auto".into_pyobject(py)?.into_any(),
        ToolChoice::None => "none".into_pyobject(py)?.into_any(),
        ToolChoice::Required => "required".into_pyobject(py)?.into_any(),
        ToolChoice::Function(name) => {
            let d = PyDict::new(py);
            d.set_item("type", "function")?;
            d.set_item("name", name)?;
            d.into_any()
        }
    })
}

impl LlmBackend for PyLlm {
    fn generate(
        &self,
        request: &LlmRequest,
        cancel: &Cancel,
        emit: &mut dyn FnMut(LlmOutput),
    ) -> Result<(), StageError> {
        attach_stage("llm", |py| {
            let mut run = || -> PyResult<()> {
                let kwargs = PyDict::new(py);
                kwargs.set_item("tools", tools_to_py(py, &request.tools)?)?;
                kwargs.set_item("tool_choice", tool_choice_to_py(py, &request.tool_choice)?)?;
                kwargs.set_item("temperature", request.temperature)?;
                kwargs.set_item("max_tokens", request.max_tokens)?;
                kwargs.set_item("cancel", PyCancelToken(cancel.clone()))?;
                let it = self
                    .0
                    .bind(py)
                    .call_method("generate", (messages_to_py(py, request)?,), Some(&kwargs))?
                    .try_iter()?;
                for item in it {
                    let item = item?;
                    if item.hasattr("call_id")? {
                        emit(LlmOutput::ToolCall {
                            call_id: item.getattr("call_id")?.extract()?,
                            name: item.getattr("name")?.extract()?,
                            arguments: item.getattr("arguments")?.extract()?,
                        });
                    } else if item.hasattr("input_tokens")? {
                        emit(LlmOutput::Usage {
                            input_tokens: item.getattr("input_tokens")?.extract()?,
                            output_tokens: item.getattr("output_tokens")?.extract()?,
                        });
                    } else {
                        emit(LlmOutput::Text(item.getattr("text")?.extract()?));
                    }
                    if cancel.is_cancelled() {
                        break;
                    }
                    if cancel.is_held() {
                        // The first clause is being synthesised: leave it the CPU.
                        py.detach(|| cancel.hold());
                    }
                }
                Ok(())
            };
            run().map_err(|e| stage_err("llm", py, &e))
        })
    }

    fn prefill(&self, request: &LlmRequest, cancel: &Cancel) -> Result<(), StageError> {
        attach_stage("llm", |py| {
            let run = || -> PyResult<()> {
                let handler = self.0.bind(py);
                // Handlers that do not derive from LLMHandler may lack it.
                if !handler.hasattr("prefill")? {
                    return Ok(());
                }
                let kwargs = PyDict::new(py);
                kwargs.set_item("tools", tools_to_py(py, &request.tools)?)?;
                kwargs.set_item("cancel", PyCancelToken(cancel.clone()))?;
                handler.call_method("prefill", (messages_to_py(py, request)?,), Some(&kwargs))?;
                Ok(())
            };
            run().map_err(|e| stage_err("llm", py, &e))
        })
    }
}

impl TtsBackend for PyTts {
    fn synthesize(
        &self,
        request: &TtsRequest,
        cancel: &Cancel,
        emit: &mut dyn FnMut(TtsChunk),
    ) -> Result<(), StageError> {
        attach_stage("tts", |py| {
            let mut run = || -> PyResult<()> {
                let kwargs = PyDict::new(py);
                kwargs.set_item("voice", request.voice.as_deref())?;
                kwargs.set_item("speed", request.speed)?;
                kwargs.set_item("cancel", PyCancelToken(cancel.clone()))?;
                let it = self
                    .0
                    .bind(py)
                    .call_method("synthesize", (&request.text,), Some(&kwargs))?
                    .try_iter()?;
                let np = py.import("numpy")?;
                for item in it {
                    let item = item?;
                    let samples = np
                        .call_method1("ascontiguousarray", (item.getattr("samples")?, "float32"))?;
                    let samples: PyReadonlyArray1<'_, f32> = samples.extract()?;
                    let words: Option<Vec<(String, f64, f64)>> = match item.getattr("words") {
                        Ok(w) => w.extract()?,
                        Err(_) => None,
                    };
                    emit(TtsChunk {
                        samples: samples.as_slice()?.to_vec(),
                        sample_rate: item.getattr("sample_rate")?.extract()?,
                        words,
                    });
                    if cancel.is_cancelled() {
                        break;
                    }
                }
                Ok(())
            };
            run().map_err(|e| stage_err("tts", py, &e))
        })
    }
}

/// The shared models and their worker pools.
#[pyclass(name = "Engine", module = "speech_to_speech._core", frozen)]
pub struct PyEngine(Arc<Engine>);

impl PyEngine {
    /// The engine, for the transports.
    pub(crate) fn engine(&self) -> Arc<Engine> {
        Arc::clone(&self.0)
    }
}

/// A stage call's default timeout, seconds.
const DEFAULT_TIMEOUT_S: f64 = crate::engine::DEFAULT_STAGE_TIMEOUT.as_secs_f64();

/// A stage timeout in seconds (`None`: never), checked.
fn timeout(name: &str, seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            if s.is_finite() && s > 0.0 && s <= 86_400.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(PyValueError::new_err(format!(
                    "{name} must be between 0 and 86400 seconds (None: no timeout), not {s}"
                )))
            }
        })
        .transpose()
}

/// A stage given as a string: `"scripted"` selects the core's scripted test
/// backend; any other string is refused (handlers are objects: create them
/// with `speech_to_speech.handlers.create_handler`, which also has Python
/// fakes under the name `"fake"`). `None` for a handler object.
fn scripted(stage: &str, obj: &Bound<'_, PyAny>) -> PyResult<Option<()>> {
    let Ok(name) = obj.extract::<String>() else {
        return Ok(None);
    };
    if name == "scripted" {
        return Ok(Some(()));
    }
    Err(PyValueError::new_err(format!(
        "{stage}={name:?} is not a handler: pass a handler object \
         (speech_to_speech.handlers.create_handler({stage:?}, {name:?})), \
         or \"scripted\" for the core's scripted test backend"
    )))
}

#[pymethods]
impl PyEngine {
    /// Wrap three handlers (or the string `"scripted"` for the core's
    /// scripted test backends) in worker pools.
    #[new]
    #[expect(clippy::too_many_arguments, reason = "keyword-only Python signature")]
    #[pyo3(signature = (*, stt, llm, tts, vad=None, stt_workers=1, llm_workers=1, tts_workers=1, max_sessions=DEFAULT_MAX_SESSIONS, first_audio_priority=true, first_clause_max_words=DEFAULT_FIRST_MAX_WORDS, turn_model=None, stt_timeout_s=Some(DEFAULT_TIMEOUT_S), llm_timeout_s=Some(DEFAULT_TIMEOUT_S), tts_timeout_s=Some(DEFAULT_TIMEOUT_S), scripted_pace_ms=0.0))]
    fn new(
        stt: &Bound<'_, PyAny>,
        llm: &Bound<'_, PyAny>,
        tts: &Bound<'_, PyAny>,
        vad: Option<PyRef<'_, PySileroVad>>,
        stt_workers: usize,
        llm_workers: usize,
        tts_workers: usize,
        max_sessions: usize,
        first_audio_priority: bool,
        first_clause_max_words: usize,
        turn_model: Option<PyRef<'_, PySmartTurn>>,
        stt_timeout_s: Option<f64>,
        llm_timeout_s: Option<f64>,
        tts_timeout_s: Option<f64>,
        scripted_pace_ms: f64,
    ) -> PyResult<Self> {
        if !(0.0..=10_000.0).contains(&scripted_pace_ms) {
            return Err(PyValueError::new_err(
                "scripted_pace_ms must be between 0 and 10000",
            ));
        }
        // The scripted backends' pace: per LLM token and per TTS word.
        let pace = Duration::from_secs_f64(scripted_pace_ms / 1000.0);
        let stt: Arc<dyn SttBackend> = if scripted("stt", stt)?.is_some() {
            Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO))
        } else {
            Arc::new(PyStt(stt.clone().unbind()))
        };
        let llm: Arc<dyn LlmBackend> = if scripted("llm", llm)?.is_some() {
            Arc::new(ScriptedLlm {
                per_token: pace,
                ..ScriptedLlm::default()
            })
        } else {
            Arc::new(PyLlm(llm.clone().unbind()))
        };
        let tts: Arc<dyn TtsBackend> = if scripted("tts", tts)?.is_some() {
            Arc::new(ScriptedTts {
                per_word: pace,
                ..ScriptedTts::default()
            })
        } else {
            Arc::new(PyTts(tts.clone().unbind()))
        };
        let config = EngineConfig {
            stt_workers,
            llm_workers,
            tts_workers,
            max_sessions,
            first_audio_priority,
            first_clause_max_words,
            stt_timeout: timeout("stt_timeout_s", stt_timeout_s)?,
            llm_timeout: timeout("llm_timeout_s", llm_timeout_s)?,
            tts_timeout: timeout("tts_timeout_s", tts_timeout_s)?,
            ..EngineConfig::default()
        };
        let engine = Engine::new(stt, llm, tts, config)?;
        let engine = match vad {
            Some(v) => engine.with_vad(Arc::clone(&v.model)),
            None => engine,
        };
        Ok(Self(match turn_model {
            Some(t) => engine.with_turn_model(Arc::clone(&t.model) as Arc<dyn TurnModel>)?,
            None => engine,
        }))
    }

    /// Open a session.
    #[expect(
        clippy::too_many_arguments,
        clippy::fn_params_excessive_bools,
        reason = "keyword-only Python signature"
    )]
    #[pyo3(signature = (*, instructions="", input_rate=16000, output_rate=24000, turn_detection=true, audio_output=true, voice=None, speed=1.0, transcription=false, live_transcription=false, speculation=true, prefill=true, chat_size=0, temperature=None, max_output_tokens=None, end_of_turn=None, silence_ms=500.0, noise_reduction=None))]
    fn session(
        &self,
        instructions: &str,
        input_rate: u32,
        output_rate: u32,
        turn_detection: bool,
        audio_output: bool,
        voice: Option<String>,
        speed: f64,
        transcription: bool,
        live_transcription: bool,
        speculation: bool,
        prefill: bool,
        chat_size: usize,
        temperature: Option<f64>,
        max_output_tokens: Option<u32>,
        end_of_turn: Option<&str>,
        silence_ms: f64,
        noise_reduction: Option<&str>,
    ) -> PyResult<PySession> {
        // `noise_reduction`: near_field or far_field (RNNoise before the VAD).
        let noise_reduction = noise_reduction
            .map(str::parse::<crate::audio::ns::NsPreset>)
            .transpose()?;
        // `end_of_turn`: the eagerness of the learned end of turn (low,
        // medium, high, auto), or None for the silence rule alone.
        let end_of_turn = end_of_turn
            .map(|e| e.parse::<Eagerness>().map(EndOfTurnConfig::for_eagerness))
            .transpose()?;
        let vad = crate::vad::TurnConfig {
            min_silence_ms: silence_ms,
            ..crate::vad::TurnConfig::default()
        };
        let config = SessionConfig {
            end_of_turn,
            vad,
            instructions: instructions.to_owned(),
            input_rate,
            output_rate,
            turn_detection,
            audio_output,
            voice,
            speed,
            transcription: transcription.then(SttOptions::default),
            live_transcription,
            speculation,
            prefill,
            chat_size,
            temperature,
            max_output_tokens,
            noise_reduction,
            ..SessionConfig::default()
        };
        Ok(PySession(self.0.create_session(config)?))
    }

    /// Sessions open now.
    #[getter]
    fn sessions(&self) -> usize {
        self.0.session_count()
    }

    /// The engine's settings: worker counts, session limit, first-audio priority.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.0.config();
        let d = PyDict::new(py);
        d.set_item("stt_workers", c.stt_workers)?;
        d.set_item("llm_workers", c.llm_workers)?;
        d.set_item("tts_workers", c.tts_workers)?;
        d.set_item("max_sessions", c.max_sessions)?;
        d.set_item("first_audio_priority", c.first_audio_priority)?;
        d.set_item("first_clause_max_words", c.first_clause_max_words)?;
        d.set_item("turn_model", self.0.has_turn_model())?;
        for (name, t) in [
            ("stt_timeout_s", c.stt_timeout),
            ("llm_timeout_s", c.llm_timeout),
            ("tts_timeout_s", c.tts_timeout),
        ] {
            d.set_item(name, t.map(|t| t.as_secs_f64()))?;
        }
        Ok(d)
    }

    /// Session objects not yet freed, closed ones whose last job still
    /// runs included (a number that stays above `sessions` is a leak).
    #[getter]
    fn session_objects(&self) -> usize {
        self.0.session_objects()
    }

    /// A stage's worker threads: `{"serving": n, "abandoned": m}` (abandoned
    /// ones are left in a call that timed out, and end when it returns).
    fn workers<'py>(&self, py: Python<'py>, stage: &str) -> PyResult<Bound<'py, PyDict>> {
        let stage = match stage {
            "stt" => crate::engine::Stage::Stt,
            "llm" => crate::engine::Stage::Llm,
            "tts" => crate::engine::Stage::Tts,
            other => {
                return Err(PyValueError::new_err(format!(
                    "stage must be 'stt', 'llm' or 'tts', not {other:?}"
                )));
            }
        };
        let (serving, alive) = self.0.workers(stage);
        let d = PyDict::new(py);
        d.set_item("serving", serving)?;
        d.set_item("abandoned", alive.saturating_sub(serving))?;
        d.set_item("queued", self.0.queue_depth(stage))?;
        Ok(d)
    }
}

/// One conversation: feed it audio or text, read its events.
#[pyclass(name = "Session", module = "speech_to_speech._core", frozen)]
pub struct PySession(Session);

fn user_text_item(id: String, text: &str) -> Item {
    Item {
        id,
        kind: ItemKind::Message {
            role: Role::User,
            content: vec![Content::InputText(text.to_owned())],
        },
        status: ItemStatus::Completed,
    }
}

#[pymethods]
impl PySession {
    /// The session id.
    #[getter]
    fn id(&self) -> &str {
        self.0.id()
    }

    /// Feed float32 input audio at the session's input rate. With turn
    /// detection (and a VAD), turns are detected and answered; without it the
    /// audio is buffered until `commit()`. Releases the GIL.
    fn feed_audio(&self, py: Python<'_>, audio: PyReadonlyArray1<'_, f32>) -> PyResult<()> {
        let samples = audio.as_slice()?;
        let s = &self.0;
        Ok(py.detach(|| s.feed_audio(samples))?)
    }

    /// Commit the buffered input audio as a user turn; returns the item id.
    fn commit(&self, py: Python<'_>) -> PyResult<String> {
        let s = self.0.clone();
        Ok(py.detach(move || s.commit_buffer())?)
    }

    /// Commit 16 kHz float32 audio as a user turn; returns the item id.
    fn commit_audio(&self, py: Python<'_>, audio: PyReadonlyArray1<'_, f32>) -> PyResult<String> {
        let samples = audio.as_slice()?.to_vec();
        let s = self.0.clone();
        Ok(py.detach(move || s.commit_input(samples))?)
    }

    /// Add a user text message; returns its item id.
    fn add_text(&self, py: Python<'_>, text: &str) -> PyResult<String> {
        let s = self.0.clone();
        let text = text.to_owned();
        py.detach(move || {
            let id = format!("item_text_{}", s.items().len());
            s.add_item(user_text_item(id.clone(), &text), None)?;
            Ok(id)
        })
    }

    /// Start a response; returns its id.
    #[pyo3(signature = (*, instructions=None, audio_output=None))]
    fn create_response(
        &self,
        py: Python<'_>,
        instructions: Option<String>,
        audio_output: Option<bool>,
    ) -> PyResult<String> {
        let s = self.0.clone();
        let options = ResponseOptions {
            instructions,
            audio_output,
            ..ResponseOptions::default()
        };
        Ok(py.detach(move || s.create_response(options))?)
    }

    /// Cancel the active response; false if there was none.
    fn cancel_response(&self, py: Python<'_>) -> bool {
        let s = self.0.clone();
        py.detach(move || s.cancel_response())
    }

    /// The next event as a dict, waiting up to `timeout` seconds (None:
    /// forever); None on timeout or once the session is closed. Releases
    /// the GIL while it waits.
    #[pyo3(signature = (timeout=None))]
    fn next_event<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let timeout = timeout
            .map(|t| Duration::try_from_secs_f64(t.max(0.0)))
            .transpose()
            .map_err(|e| PyValueError::new_err(format!("bad timeout: {e}")))?;
        let s = self.0.clone();
        let ev = py.detach(move || s.next_event(timeout));
        ev.map(|e| event_to_py(py, &e)).transpose()
    }

    /// Close the session and cancel its work.
    fn close(&self) {
        self.0.close();
    }
}

fn item_to_py<'py>(py: Python<'py>, item: &Item) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &item.id)?;
    d.set_item("status", item.status.as_str())?;
    match &item.kind {
        ItemKind::Message { role, content } => {
            d.set_item("type", "message")?;
            d.set_item("role", role.as_str())?;
            let text: Vec<&str> = content.iter().filter_map(Content::text).collect();
            d.set_item("text", text.join(" "))?;
        }
        ItemKind::FunctionCall {
            call_id,
            name,
            arguments,
        } => {
            d.set_item("type", "function_call")?;
            d.set_item("call_id", call_id)?;
            d.set_item("name", name)?;
            d.set_item("arguments", arguments)?;
        }
        ItemKind::FunctionCallOutput { call_id, output } => {
            d.set_item("type", "function_call_output")?;
            d.set_item("call_id", call_id)?;
            d.set_item("output", output)?;
        }
    }
    Ok(d)
}

/// An engine event as a dict: `type` is [`EngineEvent::name`], the other
/// keys are the event's fields (audio as a float32 array, items as dicts).
fn event_to_py<'py>(py: Python<'py>, e: &EngineEvent) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("type", e.name())?;
    let item = |i: &Item| item_to_py(py, i);
    match e {
        EngineEvent::SpeechStarted {
            item_id,
            audio_start_ms,
        } => {
            d.set_item("item_id", item_id)?;
            d.set_item("audio_start_ms", audio_start_ms)?;
        }
        EngineEvent::SpeechStopped {
            item_id,
            audio_end_ms,
        } => {
            d.set_item("item_id", item_id)?;
            d.set_item("audio_end_ms", audio_end_ms)?;
        }
        EngineEvent::InputCommitted {
            item_id,
            previous_item_id,
        } => {
            d.set_item("item_id", item_id)?;
            d.set_item("previous_item_id", previous_item_id)?;
        }
        EngineEvent::InputCleared => {}
        EngineEvent::ItemAdded {
            item: i,
            previous_item_id,
        }
        | EngineEvent::ItemDone {
            item: i,
            previous_item_id,
        } => {
            d.set_item("item", item(i)?)?;
            d.set_item("previous_item_id", previous_item_id)?;
        }
        EngineEvent::ItemDeleted { item_id } => d.set_item("item_id", item_id)?,
        EngineEvent::ItemTruncated {
            item_id,
            content_index,
            audio_end_ms,
        } => {
            d.set_item("item_id", item_id)?;
            d.set_item("content_index", content_index)?;
            d.set_item("audio_end_ms", audio_end_ms)?;
        }
        EngineEvent::InputTranscriptDelta { item_id, delta } => {
            d.set_item("item_id", item_id)?;
            d.set_item("delta", delta)?;
        }
        EngineEvent::InputTranscriptCompleted {
            item_id,
            transcript,
            audio_seconds,
        } => {
            d.set_item("item_id", item_id)?;
            d.set_item("transcript", transcript)?;
            d.set_item("audio_seconds", audio_seconds)?;
        }
        EngineEvent::InputTranscriptFailed { item_id, message } => {
            d.set_item("item_id", item_id)?;
            d.set_item("message", message)?;
        }
        EngineEvent::Timings {
            response_id,
            timings,
        } => {
            d.set_item("response_id", response_id)?;
            d.set_item("soft_end_ms", timings.soft_end)?;
            d.set_item("decision_ms", timings.decision)?;
            d.set_item("commit_ms", timings.commit)?;
            d.set_item("stt_done_ms", timings.stt_done)?;
            d.set_item("llm_first_token_ms", timings.llm_first_token)?;
            d.set_item("first_clause_ms", timings.first_clause)?;
            d.set_item("tts_first_chunk_ms", timings.tts_first_chunk)?;
            d.set_item("first_audio_out_ms", timings.first_audio_out)?;
            d.set_item("speculative", timings.speculative)?;
        }
        EngineEvent::Error {
            kind,
            code,
            message,
        } => {
            d.set_item("kind", *kind)?;
            d.set_item("code", *code)?;
            d.set_item("message", message)?;
        }
        _ => response_fields(py, e, &d)?,
    }
    Ok(d)
}

/// The fields of a response's events (see [`event_to_py`]).
fn response_fields<'py>(py: Python<'py>, e: &EngineEvent, d: &Bound<'py, PyDict>) -> PyResult<()> {
    let item = |i: &Item| item_to_py(py, i);
    match e {
        EngineEvent::ResponseCreated { response_id } => d.set_item("response_id", response_id)?,
        EngineEvent::OutputItemAdded {
            response_id,
            output_index,
            item: i,
        }
        | EngineEvent::OutputItemDone {
            response_id,
            output_index,
            item: i,
        } => {
            d.set_item("response_id", response_id)?;
            d.set_item("output_index", output_index)?;
            d.set_item("item", item(i)?)?;
        }
        EngineEvent::ContentPartAdded {
            response_id,
            item_id,
            output_index,
            audio,
        } => {
            d.set_item("response_id", response_id)?;
            d.set_item("item_id", item_id)?;
            d.set_item("output_index", output_index)?;
            d.set_item("audio", audio)?;
        }
        EngineEvent::AudioDelta {
            response_id,
            item_id,
            output_index,
            samples,
        } => {
            d.set_item("response_id", response_id)?;
            d.set_item("item_id", item_id)?;
            d.set_item("output_index", output_index)?;
            d.set_item("audio", PyArray1::from_slice(py, samples))?;
        }
        EngineEvent::TranscriptDelta {
            response_id,
            item_id,
            output_index,
            delta,
        }
        | EngineEvent::TextDelta {
            response_id,
            item_id,
            output_index,
            delta,
        } => {
            d.set_item("response_id", response_id)?;
            d.set_item("item_id", item_id)?;
            d.set_item("output_index", output_index)?;
            d.set_item("delta", delta)?;
        }
        EngineEvent::ContentPartDone {
            response_id,
            item_id,
            output_index,
            audio,
            text,
        } => {
            d.set_item("response_id", response_id)?;
            d.set_item("item_id", item_id)?;
            d.set_item("output_index", output_index)?;
            d.set_item("audio", audio)?;
            d.set_item("text", text)?;
        }
        EngineEvent::FunctionCallArgumentsDelta {
            response_id,
            item_id,
            output_index,
            call_id,
            delta,
        } => {
            d.set_item("response_id", response_id)?;
            d.set_item("item_id", item_id)?;
            d.set_item("output_index", output_index)?;
            d.set_item("call_id", call_id)?;
            d.set_item("delta", delta)?;
        }
        EngineEvent::FunctionCallArgumentsDone {
            response_id,
            item_id,
            output_index,
            call_id,
            name,
            arguments,
        } => {
            d.set_item("response_id", response_id)?;
            d.set_item("item_id", item_id)?;
            d.set_item("output_index", output_index)?;
            d.set_item("call_id", call_id)?;
            d.set_item("name", name)?;
            d.set_item("arguments", arguments)?;
        }
        EngineEvent::ResponseDone {
            response_id,
            status,
            reason,
            output,
            usage,
            error,
        } => {
            d.set_item("response_id", response_id)?;
            d.set_item("status", status.as_str())?;
            d.set_item("reason", reason.map(StopReason::as_str))?;
            d.set_item("error", error.as_deref())?;
            let items = PyList::empty(py);
            for i in output {
                items.append(item(i)?)?;
            }
            d.set_item("output", items)?;
            d.set_item("input_tokens", usage.input_tokens)?;
            d.set_item("output_tokens", usage.output_tokens)?;
        }
        _ => {}
    }
    Ok(())
}
