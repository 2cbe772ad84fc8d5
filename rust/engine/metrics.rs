//! What an operator can scrape: the engine's counters, gauges and latency
//! histograms, kept in `prometheus-client` types (atomics; a histogram takes
//! a short lock per observation, which happens per turn or per job, never per
//! audio frame) and encoded in the Prometheus text format by
//! [`Metrics::encode`].

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A stage label (`stt`, `llm`, `tts`, or a latency's name).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// The stage.
    pub stage: &'static str,
}

/// A response status label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `completed`, `cancelled`, `failed` or `incomplete`.
    pub status: &'static str,
}

/// An error label: the `error` event's type and code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// `invalid_request_error` or `server_error`.
    pub kind: String,
    /// The stable code (`invalid_json`, `response_failed`, ...).
    pub code: String,
}

/// A reason label (why a connection was refused or closed).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: &'static str,
}

/// The latencies the engine measures, each a `stage` of
/// `s2s_stage_latency_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// From an input append's arrival to the turn event (speech started or
    /// stopped) it caused: the VAD's reaction time.
    VadDecision,
    /// One transcription call.
    Stt,
    /// From the start of an LLM call to its first output.
    LlmFirstToken,
    /// From the start of a TTS call to its first audio chunk.
    TtsFirstChunk,
    /// From the end of the user's voice to the first audio of the answer:
    /// commit to first audio out, plus the silence that ended the turn.
    VoiceToVoice,
}

impl Latency {
    fn label(self) -> StageLabel {
        StageLabel {
            stage: match self {
                Latency::VadDecision => "vad_decision",
                Latency::Stt => "stt",
                Latency::LlmFirstToken => "llm_first_token",
                Latency::TtsFirstChunk => "tts_first_chunk",
                Latency::VoiceToVoice => "voice_to_voice",
            },
        }
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 33 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 17,
    ))
}

type LatencyFamily = Family<StageLabel, Histogram, fn() -> Histogram>;

/// The engine's metrics; one set per engine, shared by its sessions and pools.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Sessions opened since start.
    pub sessions_opened: Counter,
    /// Sessions refused at the limit.
    pub sessions_refused: Counter,
    /// User turns committed.
    pub turns: Counter,
    /// Responses finished, by status.
    pub responses: Family<StatusLabel, Counter>,
    /// `error` events sent, by type and code.
    pub errors: Family<ErrorLabel, Counter>,
    /// Latencies, by what was measured.
    pub latency: LatencyFamily,
    /// Jobs run, by stage.
    pub jobs: Family<StageLabel, Counter>,
    /// Jobs refused because the stage's queue was full, by stage.
    pub jobs_refused: Family<StageLabel, Counter>,
    /// Time workers spent running jobs, by stage.
    pub worker_busy_seconds: Family<StageLabel, Counter<f64, AtomicU64>>,
    /// Workers running a job now, by stage.
    pub workers_busy: Family<StageLabel, Gauge>,
    /// Jobs that made no progress within the stage's timeout, by stage.
    pub stage_timeouts: Family<StageLabel, Counter>,
    /// Workers left behind in a hung call and replaced, by stage.
    pub workers_abandoned: Family<StageLabel, Counter>,
    /// Events queued for transports, all sessions together.
    pub event_queue_depth: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            sessions_opened: Counter::default(),
            sessions_refused: Counter::default(),
            turns: Counter::default(),
            responses: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            jobs: Family::default(),
            jobs_refused: Family::default(),
            worker_busy_seconds: Family::default(),
            workers_busy: Family::default(),
            stage_timeouts: Family::default(),
            workers_abandoned: Family::default(),
            event_queue_depth: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Record a latency.
    pub fn observe(&self, what: Latency, took: Duration) {
        self.latency
            .get_or_create(&what.label())
            .observe(took.as_secs_f64());
    }

    /// Count an `error` event.
    pub fn error(&self, kind: &str, code: &str) {
        let label = ErrorLabel {
            kind: kind.to_owned(),
            code: code.to_owned(),
        };
        self.errors.get_or_create(&label).inc();
    }

    /// Register every metric in `registry` (names get its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sessions_opened",
            "Sessions opened",
            self.sessions_opened.clone(),
        );
        registry.register(
            "sessions_refused",
            "Sessions refused at the session limit",
            self.sessions_refused.clone(),
        );
        registry.register("turns", "User turns committed", self.turns.clone());
        registry.register(
            "responses",
            "Responses finished, by status",
            self.responses.clone(),
        );
        registry.register(
            "errors",
            "Error events sent to clients, by type and code",
            self.errors.clone(),
        );
        registry.register_with_unit(
            "stage_latency",
            "Latency by stage: vad_decision (append to turn event), stt (a transcription), \
             llm_first_token, tts_first_chunk (from the call's start), voice_to_voice \
             (end of the user's voice to the first audio out)",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register("stage_jobs", "Stage jobs run", self.jobs.clone());
        registry.register(
            "stage_jobs_refused",
            "Stage jobs refused because the stage's queue was full",
            self.jobs_refused.clone(),
        );
        registry.register_with_unit(
            "worker_busy",
            "Time stage workers spent running jobs",
            Unit::Seconds,
            self.worker_busy_seconds.clone(),
        );
        registry.register(
            "workers_busy",
            "Stage workers running a job now",
            self.workers_busy.clone(),
        );
        registry.register(
            "stage_timeouts",
            "Stage calls that made no progress within the stage's timeout",
            self.stage_timeouts.clone(),
        );
        registry.register(
            "workers_abandoned",
            "Workers left in a hung call and replaced",
            self.workers_abandoned.clone(),
        );
        registry.register(
            "event_queue_depth",
            "Events queued for transports, all sessions together",
            self.event_queue_depth.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_the_text_format() {
        let m = Metrics::default();
        m.turns.inc();
        m.observe(Latency::Stt, Duration::from_millis(3));
        m.error("invalid_request_error", "invalid_json");
        let mut r = Registry::with_prefix("s2s");
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains("s2s_turns_total 1"), "{text}");
        assert!(
            text.contains(
                r#"s2s_errors_total{kind="invalid_request_error",code="invalid_json"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"s2s_stage_latency_seconds_count{stage="stt"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
