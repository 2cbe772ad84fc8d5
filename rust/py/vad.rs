//! Bindings for the Silero VAD and the turn state machine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use crate::vad::{
    self, SampleRate, SileroState, SileroVad, SileroVadOptions, TurnConfig, VadBackend, VadError,
    VadEvent, VadStream,
};

type SharedModel = Arc<Mutex<SileroVad>>;

/// Models opened by path with default options, shared while anyone holds
/// them: streams made with `model_path=` then share one model.
static BY_PATH: Mutex<Vec<(PathBuf, Weak<Mutex<SileroVad>>)>> = Mutex::new(Vec::new());

fn shared_model(path: &Path) -> Result<SharedModel, VadError> {
    let mut cache = BY_PATH.lock().unwrap_or_else(PoisonError::into_inner);
    cache.retain(|(_, model)| model.strong_count() > 0);
    if let Some(model) = cache
        .iter()
        .find(|(p, _)| p == path)
        .and_then(|(_, m)| m.upgrade())
    {
        return Ok(model);
    }
    let model = Arc::new(Mutex::new(SileroVad::new(
        path,
        &SileroVadOptions::default(),
    )?));
    cache.push((path.to_path_buf(), Arc::downgrade(&model)));
    Ok(model)
}

/// Lock the shared model. A panic while it was held leaves nothing half-done
/// that matters (inputs are rewritten on every call), so poisoning is ignored.
fn lock(model: &SharedModel) -> MutexGuard<'_, SileroVad> {
    model.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Run `f` without the GIL and turn its error into the matching exception.
fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, VadError> + Send,
) -> PyResult<T> {
    py.detach(f).map_err(PyErr::from)
}

fn copy_samples(samples: &PyReadonlyArray1<'_, f32>) -> Vec<f32> {
    samples.as_array().iter().copied().collect()
}

/// Load ONNX Runtime from the shared library at `path`, once per process.
#[pyfunction]
pub fn init_onnxruntime(py: Python<'_>, path: PathBuf) -> PyResult<()> {
    detached(py, || vad::init_onnxruntime(&path))
}

/// Whether ONNX Runtime has been loaded.
#[pyfunction]
pub fn onnxruntime_initialised() -> bool {
    vad::onnxruntime_initialised()
}

/// Per-chunk speech probabilities of a whole recording (a fresh model state;
/// a last partial chunk is zero-padded).
#[pyfunction]
#[pyo3(signature = (samples, *, model_path, sample_rate = 16000, backend = "auto"))]
pub fn speech_probabilities<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray1<'py, f32>,
    model_path: PathBuf,
    sample_rate: u32,
    backend: &str,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let samples = copy_samples(&samples);
    let backend: VadBackend = backend.parse()?;
    let probs = detached(py, || {
        let rate = SampleRate::from_hz(sample_rate)?;
        let options = SileroVadOptions {
            backend,
            ..SileroVadOptions::default()
        };
        SileroVad::new(&model_path, &options)?.speech_probabilities(&samples, rate)
    })?;
    Ok(PyArray1::from_vec(py, probs))
}

/// The Silero VAD model, which many streams share.
#[pyclass(name = "SileroVad", module = "speech_to_speech._core", frozen)]
pub struct PySileroVad {
    pub(crate) model: SharedModel,
    model_path: String,
    intra_op_threads: usize,
    backend: VadBackend,
}

impl PySileroVad {
    fn wrap(model: SharedModel, model_path: &Path, intra_op_threads: usize) -> Self {
        let backend = lock(&model).backend();
        Self {
            model,
            model_path: model_path.display().to_string(),
            intra_op_threads,
            backend,
        }
    }
}

#[pymethods]
impl PySileroVad {
    #[new]
    #[pyo3(signature = (model_path, *, intra_op_threads = 1, backend = "auto"))]
    fn new(
        py: Python<'_>,
        model_path: PathBuf,
        intra_op_threads: usize,
        backend: &str,
    ) -> PyResult<Self> {
        let options = SileroVadOptions {
            backend: backend.parse()?,
            intra_op_threads,
            ..SileroVadOptions::default()
        };
        let model = detached(py, || SileroVad::new(&model_path, &options))?;
        Ok(Self::wrap(
            Arc::new(Mutex::new(model)),
            &model_path,
            intra_op_threads,
        ))
    }

    /// The model file.
    #[getter]
    fn model_path(&self) -> &str {
        &self.model_path
    }

    /// ONNX Runtime threads per call (the native backend uses the caller's).
    #[getter]
    fn intra_op_threads(&self) -> usize {
        self.intra_op_threads
    }

    /// The backend that runs the model: "native" or "onnxruntime".
    #[getter]
    fn backend(&self) -> &'static str {
        self.backend.as_str()
    }

    /// Per-chunk probabilities of a whole recording, from a fresh state.
    #[pyo3(signature = (samples, *, sample_rate = 16000))]
    fn speech_probabilities<'py>(
        &self,
        py: Python<'py>,
        samples: PyReadonlyArray1<'py, f32>,
        sample_rate: u32,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let samples = copy_samples(&samples);
        let probs = detached(py, || {
            lock(&self.model).speech_probabilities(&samples, SampleRate::from_hz(sample_rate)?)
        })?;
        Ok(PyArray1::from_vec(py, probs))
    }

    /// One chunk per stream in one model call: `chunks[i]` (shape
    /// `[len(states), chunk]`) advances `states[i]`. Returns the probabilities.
    fn process_batch<'py>(
        &self,
        py: Python<'py>,
        mut states: Vec<PyRefMut<'py, PyVadState>>,
        chunks: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let view = chunks.as_array();
        let (rows, width) = view.dim();
        let data: Vec<f32> = view.iter().copied().collect();
        let mut refs: Vec<&mut SileroState> = states.iter_mut().map(|s| &mut s.state).collect();
        let mut probs = vec![0.0_f32; refs.len()];
        detached(py, || {
            if rows != refs.len() {
                return Err(VadError::InvalidInput(format!(
                    "{} states but {rows} chunk rows",
                    refs.len()
                )));
            }
            let chunk_refs: Vec<&[f32]> = if width == 0 {
                vec![&[]; rows]
            } else {
                data.chunks_exact(width).collect()
            };
            lock(&self.model).process_batch(&mut refs, &chunk_refs, &mut probs)
        })?;
        Ok(PyArray1::from_vec(py, probs))
    }

    fn __repr__(&self) -> String {
        format!(
            "SileroVad(model_path={:?}, backend={:?}, intra_op_threads={})",
            self.model_path,
            self.backend.as_str(),
            self.intra_op_threads
        )
    }
}

/// The recurrent state of one stream, for `SileroVad.process_batch`.
#[pyclass(name = "VadState", module = "speech_to_speech._core")]
pub struct PyVadState {
    state: SileroState,
}

#[pymethods]
impl PyVadState {
    #[new]
    #[pyo3(signature = (*, sample_rate = 16000))]
    fn new(sample_rate: u32) -> PyResult<Self> {
        Ok(Self {
            state: SileroState::new(SampleRate::from_hz(sample_rate)?),
        })
    }

    /// Samples per second (8000 or 16000).
    #[getter]
    fn sample_rate(&self) -> u32 {
        self.state.rate().hz()
    }

    /// Samples per model call.
    #[getter]
    fn chunk_size(&self) -> usize {
        self.state.rate().chunk_len()
    }

    /// Forget everything, as at the start of a stream.
    fn reset(&mut self) {
        self.state.reset();
    }
}

/// One turn event. `type` is one of `speech_started`, `soft_end`,
/// `speech_resumed`, `speech_stopped`, `utterance`; the fields that do not
/// apply are None.
#[pyclass(name = "VadEvent", module = "speech_to_speech._core", frozen)]
pub struct PyVadEvent {
    #[pyo3(get, name = "type")]
    kind: &'static str,
    #[pyo3(get)]
    audio_start_ms: Option<u64>,
    #[pyo3(get)]
    speech_start_ms: Option<u64>,
    #[pyo3(get)]
    audio_end_ms: Option<u64>,
    #[pyo3(get)]
    speech_end_ms: Option<u64>,
    #[pyo3(get)]
    audio_ms: Option<u64>,
    #[pyo3(get)]
    forced: bool,
    #[pyo3(get)]
    start_ms: Option<u64>,
    #[pyo3(get)]
    end_ms: Option<u64>,
    #[pyo3(get)]
    audio: Option<Py<PyArray1<f32>>>,
}

impl PyVadEvent {
    fn empty(kind: &'static str) -> Self {
        Self {
            kind,
            audio_start_ms: None,
            speech_start_ms: None,
            audio_end_ms: None,
            speech_end_ms: None,
            audio_ms: None,
            forced: false,
            start_ms: None,
            end_ms: None,
            audio: None,
        }
    }

    fn from_event(py: Python<'_>, event: VadEvent) -> Self {
        match event {
            VadEvent::SpeechStarted {
                audio_start_ms,
                speech_start_ms,
            } => Self {
                audio_start_ms: Some(audio_start_ms),
                speech_start_ms: Some(speech_start_ms),
                ..Self::empty("speech_started")
            },
            VadEvent::SoftEnd { audio_ms } => Self {
                audio_ms: Some(audio_ms),
                ..Self::empty("soft_end")
            },
            VadEvent::SpeechResumed { audio_ms } => Self {
                audio_ms: Some(audio_ms),
                ..Self::empty("speech_resumed")
            },
            VadEvent::SpeechStopped {
                audio_end_ms,
                speech_end_ms,
                forced,
            } => Self {
                audio_end_ms: Some(audio_end_ms),
                speech_end_ms: Some(speech_end_ms),
                forced,
                ..Self::empty("speech_stopped")
            },
            VadEvent::Utterance {
                audio,
                start_ms,
                end_ms,
            } => Self {
                start_ms: Some(start_ms),
                end_ms: Some(end_ms),
                audio: Some(PyArray1::from_vec(py, audio).unbind()),
                ..Self::empty("utterance")
            },
        }
    }
}

#[pymethods]
impl PyVadEvent {
    fn __repr__(&self, py: Python<'_>) -> String {
        let field =
            |name: &str, v: Option<u64>| v.map(|v| format!(", {name}={v}")).unwrap_or_default();
        let samples = self
            .audio
            .as_ref()
            .map(|a| format!(", samples={}", a.bind(py).len().unwrap_or_default()))
            .unwrap_or_default();
        format!(
            "VadEvent(type={:?}{}{}{}{}{}{}{}{}{samples})",
            self.kind,
            field("audio_start_ms", self.audio_start_ms),
            field("speech_start_ms", self.speech_start_ms),
            field("audio_end_ms", self.audio_end_ms),
            field("speech_end_ms", self.speech_end_ms),
            field("audio_ms", self.audio_ms),
            field("start_ms", self.start_ms),
            field("end_ms", self.end_ms),
            if self.forced { ", forced=True" } else { "" },
        )
    }
}

fn to_py_events(py: Python<'_>, events: Vec<VadEvent>) -> Vec<PyVadEvent> {
    events
        .into_iter()
        .map(|e| PyVadEvent::from_event(py, e))
        .collect()
}

/// VAD and turn detection for one audio stream.
#[pyclass(name = "VadStream", module = "speech_to_speech._core")]
pub struct PyVadStream {
    model: Py<PySileroVad>,
    stream: VadStream,
}

#[pymethods]
impl PyVadStream {
    #[new]
    #[pyo3(signature = (
        *,
        model_path = None,
        model = None,
        sample_rate = 16000,
        threshold = 0.5,
        neg_threshold = None,
        min_speech_ms = 250.0,
        min_silence_ms = 500.0,
        speech_pad_ms = 300.0,
        max_speech_ms = None,
        soft_end_ms = Some(vad::DEFAULT_SOFT_END_MS),
    ))]
    #[pyo3(
        text_signature = "(*, model_path=None, model=None, sample_rate=16000, threshold=0.5, \
                          neg_threshold=None, min_speech_ms=250.0, min_silence_ms=500.0, \
                          speech_pad_ms=300.0, max_speech_ms=None, soft_end_ms=50.0)"
    )]
    #[expect(clippy::too_many_arguments, reason = "keyword-only Python constructor")]
    fn new(
        py: Python<'_>,
        model_path: Option<PathBuf>,
        model: Option<Py<PySileroVad>>,
        sample_rate: u32,
        threshold: f32,
        neg_threshold: Option<f32>,
        min_speech_ms: f64,
        min_silence_ms: f64,
        speech_pad_ms: f64,
        max_speech_ms: Option<f64>,
        soft_end_ms: Option<f64>,
    ) -> PyResult<Self> {
        let config = TurnConfig {
            threshold,
            neg_threshold,
            min_speech_ms,
            min_silence_ms,
            speech_pad_ms,
            max_speech_ms,
            soft_end_ms,
        };
        let stream = VadStream::for_rate(sample_rate, &config)?;
        let model = match (model, model_path) {
            (Some(model), None) => model,
            (None, Some(path)) => {
                let model = detached(py, || shared_model(&path))?;
                Py::new(
                    py,
                    PySileroVad::wrap(model, &path, SileroVadOptions::default().intra_op_threads),
                )?
            }
            _ => {
                return Err(VadError::InvalidConfig(
                    "pass exactly one of model_path= and model=".to_owned(),
                )
                .into());
            }
        };
        Ok(Self { model, stream })
    }

    /// The shared model.
    #[getter]
    fn model(&self, py: Python<'_>) -> Py<PySileroVad> {
        self.model.clone_ref(py)
    }

    /// Samples per second the model sees.
    #[getter]
    fn sample_rate(&self) -> u32 {
        self.stream.sample_rate().hz()
    }

    /// Milliseconds of audio run through the model so far.
    #[getter]
    fn position_ms(&self) -> u64 {
        self.stream.position_ms()
    }

    /// True inside a turn.
    #[getter]
    fn in_speech(&self) -> bool {
        self.stream.in_speech()
    }

    /// Speech probability of the last chunk.
    #[getter]
    fn last_probability(&self) -> f32 {
        self.stream.last_probability()
    }

    /// Feed float32 samples; returns the events they caused.
    fn feed(
        &mut self,
        py: Python<'_>,
        samples: PyReadonlyArray1<'_, f32>,
    ) -> PyResult<Vec<PyVadEvent>> {
        let samples = copy_samples(&samples);
        let model = Arc::clone(&self.model.get().model);
        let stream = &mut self.stream;
        let events = detached(py, || {
            let mut events = Vec::new();
            stream.feed(&mut lock(&model), &samples, &mut events)?;
            Ok(events)
        })?;
        Ok(to_py_events(py, events))
    }

    /// End of input: run buffered samples and close an open turn.
    fn flush(&mut self, py: Python<'_>) -> PyResult<Vec<PyVadEvent>> {
        let model = Arc::clone(&self.model.get().model);
        let stream = &mut self.stream;
        let events = detached(py, || {
            let mut events = Vec::new();
            stream.flush(&mut lock(&model), &mut events)?;
            Ok(events)
        })?;
        Ok(to_py_events(py, events))
    }

    /// Forget all audio and state; times start again at 0.
    fn reset(&mut self) {
        self.stream.reset();
    }
}

/// Feed `chunks[i]` to `streams[i]`, running ready chunks of all streams as
/// one batch per round. All streams must share one `SileroVad`.
#[pyfunction]
pub fn feed_streams<'py>(
    py: Python<'py>,
    mut streams: Vec<PyRefMut<'py, PyVadStream>>,
    chunks: Vec<PyReadonlyArray1<'py, f32>>,
) -> PyResult<Vec<Vec<PyVadEvent>>> {
    let Some(first) = streams.first() else {
        return Ok(Vec::new());
    };
    let model = Arc::clone(&first.model.get().model);
    if streams
        .iter()
        .any(|s| !Arc::ptr_eq(&s.model.get().model, &model))
    {
        return Err(VadError::InvalidInput(
            "streams fed together must share one SileroVad (pass model=)".to_owned(),
        )
        .into());
    }
    let inputs: Vec<Vec<f32>> = chunks.iter().map(copy_samples).collect();
    let mut refs: Vec<&mut VadStream> = streams.iter_mut().map(|s| &mut s.stream).collect();
    let events = detached(py, || {
        let input_refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let mut events = vec![Vec::new(); refs.len()];
        vad::feed_batch(&mut lock(&model), &mut refs, &input_refs, &mut events)?;
        Ok(events)
    })?;
    Ok(events.into_iter().map(|e| to_py_events(py, e)).collect())
}
