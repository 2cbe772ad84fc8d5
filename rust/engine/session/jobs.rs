//! The stage jobs of a session: transcribe, prefill, generate, speak.
//!
//! A job carries its session and generation; a stale one is skipped before
//! it runs, and a running one stops at the next output. Its results go back
//! to the session through `Shared`'s `on_*` methods.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::{Shared, SttPurpose};
use crate::engine::backend::{
    Cancel, Gate, LlmOutput, LlmRequest, StageError, SttOptions, SttOutput, TtsChunk, TtsRequest,
};
use crate::engine::metrics::Latency;
use crate::engine::progress::{beat, claim_result};
use crate::engine::stages::{FailureReport, Job};

/// How long after another session's LLM job a prefill is not worth it.
pub(super) const PREFILL_QUIET: Duration = Duration::from_secs(3);

pub(super) struct SttJob {
    pub(super) session: Arc<Shared>,
    pub(super) audio: Vec<f32>,
    pub(super) options: SttOptions,
    pub(super) purpose: SttPurpose,
    pub(super) cancel: Cancel,
}

impl Job for SttJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled() || self.session.out.is_closed()
    }

    fn on_failure(&self) -> Option<FailureReport> {
        let session = Arc::clone(&self.session);
        let purpose = self.purpose.clone();
        let generation = self.cancel.generation();
        Some(Box::new(move |e: StageError| {
            session.on_stt(&purpose, generation, Err(e.to_string()));
        }))
    }

    fn run(self: Box<Self>) {
        let backend = Arc::clone(self.session.engine.stt());
        let mut text = None;
        let mut emit = |o: SttOutput| {
            beat();
            if let SttOutput::Final { text: t, .. } = o {
                text = Some(t);
            }
        };
        let started = Instant::now();
        let result = backend.transcribe(&self.audio, &self.options, &self.cancel, &mut emit);
        if result.is_ok() {
            self.session
                .engine
                .metrics()
                .observe(Latency::Stt, started.elapsed());
        }
        if self.cancel.is_cancelled() || !claim_result() {
            return;
        }
        let out = match result {
            Ok(()) => Ok(text.unwrap_or_default().trim().to_owned()),
            Err(e) => Err(e.to_string()),
        };
        self.session
            .on_stt(&self.purpose, self.cancel.generation(), out);
    }
}

pub(super) struct LlmJob {
    pub(super) session: Arc<Shared>,
    pub(super) request: LlmRequest,
    pub(super) response_id: String,
    pub(super) cancel: Cancel,
}

impl Job for LlmJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn on_failure(&self) -> Option<FailureReport> {
        let session = Arc::clone(&self.session);
        let response_id = self.response_id.clone();
        Some(Box::new(move |e: StageError| {
            session.on_llm_done(&response_id, Err(e));
        }))
    }

    fn run(self: Box<Self>) {
        self.session.engine.note_llm_use(self.session.key());
        let backend = Arc::clone(self.session.engine.llm());
        let session = Arc::clone(&self.session);
        let rid = self.response_id.clone();
        let cancel = self.cancel.clone();
        let started = Instant::now();
        let mut first = true;
        let mut emit = |o: LlmOutput| {
            beat();
            if first && !matches!(o, LlmOutput::Usage { .. }) {
                first = false;
                let metrics = session.engine.metrics();
                metrics.observe(Latency::LlmFirstToken, started.elapsed());
            }
            if !cancel.is_cancelled() {
                session.on_llm_output(&rid, o);
            }
        };
        let result = backend.generate(&self.request, &self.cancel, &mut emit);
        self.session.engine.note_llm_use(self.session.key());
        if !self.cancel.is_cancelled() && claim_result() {
            self.session.on_llm_done(&self.response_id, result);
        }
    }
}

pub(super) struct PrefillJob {
    pub(super) session: Arc<Shared>,
    pub(super) request: LlmRequest,
    pub(super) cancel: Cancel,
}

impl Job for PrefillJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled() || self.session.out.is_closed()
    }

    fn run(self: Box<Self>) {
        self.session.engine.note_llm_use(self.session.key());
        let started = std::time::Instant::now();
        match self
            .session
            .engine
            .llm()
            .prefill(&self.request, &self.cancel)
        {
            Ok(()) => tracing::debug!(
                ms = started.elapsed().as_secs_f64() * 1000.0,
                messages = self.request.messages.len(),
                "LLM prefill"
            ),
            // The response that follows calls the model again and reports
            // any real failure to the client.
            Err(e) => tracing::warn!(error = %e, "LLM prefill failed"),
        }
    }
}

pub(super) struct TtsJob {
    pub(super) session: Arc<Shared>,
    pub(super) response_id: String,
    pub(super) index: usize,
    pub(super) request: TtsRequest,
    pub(super) cancel: Cancel,
    /// The response's LLM gate, closed until this clause's first chunk
    /// exists (the first clause only).
    pub(super) gate: Option<Arc<Gate>>,
}

impl Job for TtsJob {
    fn is_stale(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn on_failure(&self) -> Option<FailureReport> {
        let session = Arc::clone(&self.session);
        let response_id = self.response_id.clone();
        let gate = self.gate.clone();
        Some(Box::new(move |e: StageError| {
            if let Some(g) = &gate {
                g.open();
            }
            session.fail_response(&response_id, &e);
        }))
    }

    fn run(self: Box<Self>) {
        let backend = Arc::clone(self.session.engine.tts());
        let session = Arc::clone(&self.session);
        let rid = self.response_id.clone();
        let cancel = self.cancel.clone();
        let index = self.index;
        let gate = self.gate.clone();
        if let Some(g) = &gate {
            g.close();
        }
        let started = Instant::now();
        let mut first = true;
        let mut emit = |c: TtsChunk| {
            beat();
            if let Some(g) = &gate {
                g.open();
            }
            if first {
                first = false;
                let metrics = session.engine.metrics();
                metrics.observe(Latency::TtsFirstChunk, started.elapsed());
            }
            if !cancel.is_cancelled() {
                session.on_tts(&rid, index, Some(c), None);
            }
        };
        let result = backend.synthesize(&self.request, &self.cancel, &mut emit);
        if let Some(g) = &self.gate {
            g.open();
        }
        if !self.cancel.is_cancelled() && claim_result() {
            self.session
                .on_tts(&self.response_id, self.index, None, Some(result));
        }
    }
}

/// One end-of-turn decision: the model on the turn's audio so far.
pub(super) struct TurnJob {
    pub(super) session: Arc<Shared>,
    pub(super) decision: u64,
    pub(super) audio: Vec<f32>,
}

impl Job for TurnJob {
    fn is_stale(&self) -> bool {
        self.session.out.is_closed()
    }

    fn on_failure(&self) -> Option<FailureReport> {
        let session = Arc::clone(&self.session);
        let decision = self.decision;
        Some(Box::new(move |_| session.on_turn_verdict(decision, None)))
    }

    fn run(self: Box<Self>) {
        let probability = self.session.engine.turn_model().and_then(|m| {
            m.predict(&self.audio)
                .inspect_err(|e| tracing::warn!("end-of-turn model failed: {e}"))
                .ok()
        });
        if claim_result() {
            self.session.on_turn_verdict(self.decision, probability);
        }
    }
}
