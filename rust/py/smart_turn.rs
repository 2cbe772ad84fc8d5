//! Bindings for the Smart Turn end-of-turn model, its front end and the end-of-turn policy.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use numpy::{PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::prelude::*;

use crate::vad::end_of_turn::{
    DEFAULT_COMPLETE_SILENCE_MS, DEFAULT_COMPLETE_THRESHOLD, DEFAULT_DECISION_SILENCE_MS,
    DEFAULT_HOLD_THRESHOLD, DEFAULT_RECHECK_MS, SILENCE_RULE_MS,
};
use crate::vad::mel::{FEATURES_LEN, N_FRAMES, N_MELS, WINDOW_SAMPLES};
use crate::vad::{
    Action, Eagerness, EndOfTurnConfig, EndOfTurnPolicy, LogMel, SmartTurn, SmartTurnOptions,
    TurnVerdict, VadError,
};

/// Copy the last 8 s of `samples` (all the model reads) into `buffer`.
fn stage(samples: &PyReadonlyArray1<'_, f32>, buffer: &mut Vec<f32>) {
    let view = samples.as_array();
    buffer.clear();
    buffer.extend(view.iter().skip(view.len().saturating_sub(WINDOW_SAMPLES)));
}

/// Whether a transcript sounds like the speaker will go on (a last word such
/// as "the" or "and", a trailing comma): the hint that holds a turn.
#[pyfunction]
#[must_use]
pub fn sounds_unfinished(text: &str) -> bool {
    crate::engine::session::sounds_unfinished(text)
}

/// Whisper log-mel features of the last 8 s of 16 kHz `samples`: float32 `[80, 800]`.
#[pyfunction]
pub fn log_mel_features<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray1<'py, f32>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let mut audio = Vec::new();
    stage(&samples, &mut audio);
    let features = py.detach(|| {
        let mut out = vec![0.0_f32; FEATURES_LEN];
        LogMel::new().compute(&audio, &mut out).map(|()| out)
    })?;
    let array = numpy::PyArray1::from_vec(py, features);
    array.reshape([N_MELS, N_FRAMES])
}

/// The model's answer: the probability that the turn is over, and whether it
/// is above the threshold.
#[pyclass(name = "TurnVerdict", module = "speech_to_speech._core", frozen)]
pub struct PyTurnVerdict {
    #[pyo3(get)]
    probability: f32,
    #[pyo3(get)]
    complete: bool,
}

impl From<TurnVerdict> for PyTurnVerdict {
    fn from(v: TurnVerdict) -> Self {
        Self {
            probability: v.probability,
            complete: v.complete,
        }
    }
}

#[pymethods]
impl PyTurnVerdict {
    fn __repr__(&self) -> String {
        format!(
            "TurnVerdict(probability={:.4}, complete={})",
            self.probability,
            if self.complete { "True" } else { "False" }
        )
    }
}

struct Inner {
    audio: Vec<f32>,
    features: Vec<f32>,
}

/// The Smart Turn v3 model on ONNX Runtime, with its front end in Rust.
#[pyclass(name = "SmartTurn", module = "speech_to_speech._core", frozen)]
pub struct PySmartTurn {
    /// Shared with an engine that uses it for its sessions' end of turn.
    pub(crate) model: Arc<Mutex<SmartTurn>>,
    inner: Mutex<Inner>,
    model_path: String,
    intra_op_threads: usize,
    threshold: f32,
}

impl PySmartTurn {
    /// Run `f` on the model with the GIL released.
    fn detached(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut SmartTurn) -> Result<TurnVerdict, VadError> + Send,
    ) -> PyResult<PyTurnVerdict> {
        let model = &self.model;
        Ok(py
            .detach(|| f(&mut model.lock().unwrap_or_else(PoisonError::into_inner)))?
            .into())
    }
}

#[pymethods]
impl PySmartTurn {
    #[new]
    #[pyo3(signature = (model_path, *, intra_op_threads = 1, threshold = 0.5, allow_spinning = false))]
    fn new(
        py: Python<'_>,
        model_path: PathBuf,
        intra_op_threads: usize,
        threshold: f32,
        allow_spinning: bool,
    ) -> PyResult<Self> {
        let options = SmartTurnOptions {
            intra_op_threads,
            allow_spinning,
            threshold,
        };
        let model = py.detach(|| SmartTurn::with_options(&model_path, &options))?;
        Ok(Self {
            model: Arc::new(Mutex::new(model)),
            inner: Mutex::new(Inner {
                audio: Vec::with_capacity(WINDOW_SAMPLES),
                features: Vec::with_capacity(FEATURES_LEN),
            }),
            model_path: model_path.display().to_string(),
            intra_op_threads,
            threshold,
        })
    }

    /// The model file.
    #[getter]
    fn model_path(&self) -> &str {
        &self.model_path
    }

    /// ONNX Runtime threads per decision.
    #[getter]
    fn intra_op_threads(&self) -> usize {
        self.intra_op_threads
    }

    /// Probability above which a turn is complete.
    #[getter]
    fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The verdict on a turn's 16 kHz audio so far (the last 8 s are used).
    fn predict(
        &self,
        py: Python<'_>,
        samples: PyReadonlyArray1<'_, f32>,
    ) -> PyResult<PyTurnVerdict> {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        stage(&samples, &mut inner.audio);
        let audio = &inner.audio;
        self.detached(py, |m| m.predict(audio))
    }

    /// The model alone on precomputed features (`[80, 800]` flattened or not).
    fn predict_features(
        &self,
        py: Python<'_>,
        features: numpy::PyReadonlyArrayDyn<'_, f32>,
    ) -> PyResult<PyTurnVerdict> {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *guard;
        inner.features.clear();
        inner.features.extend(features.as_array().iter());
        let features = &inner.features;
        self.detached(py, |m| m.predict_features(features))
    }

    fn __repr__(&self) -> String {
        format!(
            "SmartTurn(model_path={:?}, intra_op_threads={}, threshold={})",
            self.model_path, self.intra_op_threads, self.threshold
        )
    }
}

/// The end-of-turn policy of one stream: feed it speech, pauses, verdicts
/// and time (milliseconds of audio); it answers "wait", "decide" or
/// "commit" (then `reason` says why).
#[pyclass(name = "EndOfTurnPolicy", module = "speech_to_speech._core")]
pub struct PyEndOfTurnPolicy {
    policy: EndOfTurnPolicy,
    decision: u64,
    reason: Option<&'static str>,
}

impl PyEndOfTurnPolicy {
    fn action(&mut self, action: Action) -> &'static str {
        match action {
            Action::Wait => "wait",
            Action::Decide { decision } => {
                self.decision = decision;
                "decide"
            }
            Action::Commit(reason) => {
                self.reason = Some(reason.as_str());
                "commit"
            }
        }
    }
}

#[pymethods]
impl PyEndOfTurnPolicy {
    #[new]
    #[pyo3(signature = (
        *,
        model = true,
        eagerness = "auto",
        decision_silence_ms = DEFAULT_DECISION_SILENCE_MS,
        complete_silence_ms = DEFAULT_COMPLETE_SILENCE_MS,
        silence_ms = SILENCE_RULE_MS,
        max_wait_ms = None,
        recheck_ms = Some(DEFAULT_RECHECK_MS),
        complete_threshold = DEFAULT_COMPLETE_THRESHOLD,
        hold_threshold = DEFAULT_HOLD_THRESHOLD,
    ))]
    #[pyo3(
        text_signature = "(*, model=True, eagerness='auto', decision_silence_ms=200, \
                          complete_silence_ms=200, \
                          silence_ms=500, max_wait_ms=None, recheck_ms=600, \
                          complete_threshold=0.5, hold_threshold=0.1)"
    )]
    #[expect(clippy::too_many_arguments, reason = "keyword-only Python constructor")]
    fn new(
        model: bool,
        eagerness: &str,
        decision_silence_ms: u64,
        complete_silence_ms: u64,
        silence_ms: u64,
        max_wait_ms: Option<u64>,
        recheck_ms: Option<u64>,
        complete_threshold: f32,
        hold_threshold: f32,
    ) -> PyResult<Self> {
        let eagerness: Eagerness = eagerness.parse()?;
        let config = EndOfTurnConfig {
            decision_silence_ms,
            complete_silence_ms,
            silence_ms,
            max_wait_ms: max_wait_ms.unwrap_or(eagerness.max_wait_ms()),
            recheck_ms,
            complete_threshold,
            hold_threshold,
        };
        Ok(Self {
            policy: EndOfTurnPolicy::new(config, model)?,
            decision: 0,
            reason: None,
        })
    }

    /// Speech is going on; True when it resumes a paused turn.
    fn speech(&mut self) -> bool {
        self.policy.speech()
    }

    /// The VAD's soft end: silence since `silence_start_ms`, now `now_ms`
    /// ("decide" once the silence reaches `decision_silence_ms`, maybe at a
    /// later `tick`).
    fn pause(&mut self, silence_start_ms: u64, now_ms: u64) -> &'static str {
        let action = self.policy.pause(silence_start_ms, now_ms);
        self.action(action)
    }

    /// The answer to decision `decision`: the probability that the turn is
    /// over, or None if the model failed.
    fn verdict(&mut self, decision: u64, probability: Option<f32>, now_ms: u64) -> &'static str {
        let action = self.policy.verdict(decision, probability, now_ms);
        self.action(action)
    }

    /// Silence goes on.
    fn tick(&mut self, now_ms: u64) -> &'static str {
        let action = self.policy.tick(now_ms);
        self.action(action)
    }

    /// Close any open turn.
    fn reset(&mut self) {
        self.policy.reset();
    }

    /// The number of the last "decide".
    #[getter]
    fn decision(&self) -> u64 {
        self.decision
    }

    /// Why the last "commit" happened: `complete`, `silence_rule` or `max_wait`.
    #[getter]
    fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// True while a turn is open.
    #[getter]
    fn in_turn(&self) -> bool {
        self.policy.in_turn()
    }

    /// Whether the model is asked (False: the silence rule alone).
    #[getter]
    fn model(&self) -> bool {
        self.policy.uses_model()
    }

    /// Silence after which the model is asked.
    #[getter]
    fn decision_silence_ms(&self) -> u64 {
        self.policy.config().decision_silence_ms
    }

    /// Silence after which a complete turn ends.
    #[getter]
    fn complete_silence_ms(&self) -> u64 {
        self.policy.config().complete_silence_ms
    }

    /// The silence rule.
    #[getter]
    fn silence_ms(&self) -> u64 {
        self.policy.config().silence_ms
    }

    /// The eagerness ceiling.
    #[getter]
    fn max_wait_ms(&self) -> u64 {
        self.policy.config().max_wait_ms
    }

    /// How often an incomplete pause is asked about again (None: never).
    #[getter]
    fn recheck_ms(&self) -> Option<u64> {
        self.policy.config().recheck_ms
    }

    /// Probability above which the turn is complete.
    #[getter]
    fn complete_threshold(&self) -> f32 {
        self.policy.config().complete_threshold
    }

    /// Probability at or below which the turn is held.
    #[getter]
    fn hold_threshold(&self) -> f32 {
        self.policy.config().hold_threshold
    }
}
