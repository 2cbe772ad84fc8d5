//! Injected faults in the engine, without Python: a model call that hangs at
//! each stage is failed by the stage's timeout and its worker replaced, so
//! the other sessions' turns complete on the same one-worker stage.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use speech_to_speech::engine::backend::{
    Cancel, LlmBackend, LlmOutput, LlmRequest, StageError, SttBackend, SttOptions, SttOutput,
    TtsBackend, TtsChunk, TtsRequest,
};
use speech_to_speech::engine::events::{EngineEvent, ResponseStatus};
use speech_to_speech::engine::scripted::{ScriptedLlm, ScriptedStt, ScriptedTts};
use speech_to_speech::engine::{
    Engine, EngineConfig, ResponseOptions, Session, SessionConfig, Stage, TurnInput,
};

/// A gate the hung call waits on; the test opens it at the end.
#[derive(Default)]
struct Release {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Release {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// Wraps a backend: its first call hangs (ignoring its cancel token, as a
/// stuck library would) until released; the calls after it pass through.
struct HangsFirst<B> {
    inner: B,
    left: AtomicUsize,
    release: Arc<Release>,
    /// Whether the hung call saw its cancel token set when it was released.
    saw_cancel: Arc<Mutex<Option<bool>>>,
}

impl<B> HangsFirst<B> {
    fn new(inner: B, release: &Arc<Release>) -> Self {
        Self {
            inner,
            left: AtomicUsize::new(1),
            release: Arc::clone(release),
            saw_cancel: Arc::new(Mutex::new(None)),
        }
    }

    fn hang(&self, cancel: &Cancel) -> bool {
        let first = self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if first {
            self.release.wait();
            *self.saw_cancel.lock().unwrap() = Some(cancel.is_cancelled());
        }
        first
    }
}

impl SttBackend for HangsFirst<ScriptedStt> {
    fn transcribe(
        &self,
        audio: &[f32],
        options: &SttOptions,
        cancel: &Cancel,
        emit: &mut dyn FnMut(SttOutput),
    ) -> Result<(), StageError> {
        if self.hang(cancel) {
            emit(SttOutput::Final {
                text: "too late".into(),
                language: None,
            });
            return Ok(());
        }
        self.inner.transcribe(audio, options, cancel, emit)
    }
}

impl LlmBackend for HangsFirst<ScriptedLlm> {
    fn generate(
        &self,
        request: &LlmRequest,
        cancel: &Cancel,
        emit: &mut dyn FnMut(LlmOutput),
    ) -> Result<(), StageError> {
        if self.hang(cancel) {
            emit(LlmOutput::Text("too late".into()));
            return Ok(());
        }
        self.inner.generate(request, cancel, emit)
    }
}

impl TtsBackend for HangsFirst<ScriptedTts> {
    fn synthesize(
        &self,
        request: &TtsRequest,
        cancel: &Cancel,
        emit: &mut dyn FnMut(TtsChunk),
    ) -> Result<(), StageError> {
        if self.hang(cancel) {
            return Ok(());
        }
        self.inner.synthesize(request, cancel, emit)
    }
}

const TIMEOUT: Duration = Duration::from_millis(400);

fn config() -> EngineConfig {
    EngineConfig {
        stt_timeout: Some(TIMEOUT),
        llm_timeout: Some(TIMEOUT),
        tts_timeout: Some(TIMEOUT),
        ..EngineConfig::default()
    }
}

/// One second of 16 kHz audio at this peak level.
fn speech(level: f32) -> Vec<f32> {
    (0..16_000)
        .map(|i| level * (i as f32 * 0.05).sin().signum())
        .collect()
}

fn spoken_turn(s: &Session, level: f32) {
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 1000,
        audio: speech(level),
        hold_until_ms: None,
    });
}

/// Events up to the first `response_done`: (its status, its error, every event).
fn until_done(s: &Session) -> (ResponseStatus, Option<String>, Vec<EngineEvent>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(e) = s.next_event(Some(Duration::from_millis(50))) {
            if let EngineEvent::ResponseDone { status, error, .. } = &e {
                let done = (*status, error.clone());
                seen.push(e);
                return (done.0, done.1, seen);
            }
            seen.push(e);
        }
    }
    let names: Vec<_> = seen.iter().map(EngineEvent::name).collect();
    panic!("no response_done within 10 s: {names:?}");
}

/// The hung session's response fails naming the stage, within about the
/// timeout; a second session's turn then completes on the replacement
/// worker while the hung call is still stuck; once released, the abandoned
/// thread ends and never reports.
fn hung_call_is_failed_and_replaced(stage: Stage, engine: &Arc<Engine>, release: &Release) {
    let a = engine.create_session(SessionConfig::default()).unwrap();
    let b = engine.create_session(SessionConfig::default()).unwrap();
    let started = Instant::now();
    spoken_turn(&a, 0.3);
    let (status, error, events) = until_done(&a);
    let took = started.elapsed();
    assert_eq!(status, ResponseStatus::Failed, "{stage:?}");
    let error = error.unwrap_or_default();
    assert!(
        error.contains(&format!("the {} stage timed out", stage.name())),
        "{error}"
    );
    // An error event went out before response_done, naming the stage.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EngineEvent::Error { message, .. }
            if message.contains(stage.name()))),
        "{stage:?}"
    );
    assert!(
        took >= TIMEOUT && took < TIMEOUT * 4 + Duration::from_secs(1),
        "{stage:?} failed after {took:?}"
    );
    assert_eq!(
        engine.workers(stage),
        (1, 2),
        "{stage:?}: one serving, one abandoned"
    );

    // The other session: a full answer, on the stage's one serving worker.
    spoken_turn(&b, 0.5);
    let (status, _, events) = until_done(&b);
    assert_eq!(status, ResponseStatus::Completed, "{stage:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EngineEvent::AudioDelta { .. }))
    );
    // And the hung session goes on too.
    spoken_turn(&a, 0.4);
    assert_eq!(until_done(&a).0, ResponseStatus::Completed, "{stage:?}");

    // The stuck call returns: its late answer is dropped, and its thread ends.
    release.open();
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.workers(stage) != (1, 1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(engine.workers(stage), (1, 1), "{stage:?}");
    std::thread::sleep(Duration::from_millis(50));
    while let Some(e) = a.try_next_event() {
        let late = match &e {
            EngineEvent::TextDelta { delta, .. } | EngineEvent::TranscriptDelta { delta, .. } => {
                delta.contains("too late")
            }
            EngineEvent::InputTranscriptCompleted { transcript, .. } => {
                transcript.contains("too late")
            }
            _ => false,
        };
        assert!(!late, "a timed-out call reported: {e:?}");
    }
    let metrics = engine.metrics();
    let label = speech_to_speech::engine::metrics::StageLabel {
        stage: stage.name(),
    };
    assert_eq!(metrics.stage_timeouts.get_or_create(&label).get(), 1);
}

#[test]
fn a_hung_stt_call_times_out_and_its_worker_is_replaced() {
    let release = Arc::new(Release::default());
    let stt = HangsFirst::new(ScriptedStt::new(Vec::new(), Duration::ZERO), &release);
    let saw_cancel = Arc::clone(&stt.saw_cancel);
    let engine = Engine::new(
        Arc::new(stt),
        Arc::new(ScriptedLlm::default()),
        Arc::new(ScriptedTts::default()),
        config(),
    )
    .unwrap();
    hung_call_is_failed_and_replaced(Stage::Stt, &engine, &release);
    // The hung call's cancel token read as set once it was given up on.
    assert_eq!(*saw_cancel.lock().unwrap(), Some(true));
}

#[test]
fn a_hung_llm_call_times_out_and_its_worker_is_replaced() {
    let release = Arc::new(Release::default());
    let llm = HangsFirst::new(ScriptedLlm::default(), &release);
    let saw_cancel = Arc::clone(&llm.saw_cancel);
    let engine = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
        Arc::new(llm),
        Arc::new(ScriptedTts::default()),
        config(),
    )
    .unwrap();
    hung_call_is_failed_and_replaced(Stage::Llm, &engine, &release);
    assert_eq!(*saw_cancel.lock().unwrap(), Some(true));
}

#[test]
fn a_hung_tts_call_times_out_and_its_worker_is_replaced() {
    let release = Arc::new(Release::default());
    let tts = HangsFirst::new(ScriptedTts::default(), &release);
    let saw_cancel = Arc::clone(&tts.saw_cancel);
    let engine = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
        Arc::new(ScriptedLlm::default()),
        Arc::new(tts),
        config(),
    )
    .unwrap();
    hung_call_is_failed_and_replaced(Stage::Tts, &engine, &release);
    assert_eq!(*saw_cancel.lock().unwrap(), Some(true));
}

/// A backend that hangs on every call: the pool replaces workers only up to
/// its cap, then the stage's queue refuses work with a clear error; nothing
/// grows without bound.
#[test]
fn a_backend_that_always_hangs_cannot_make_the_pool_grow_without_end() {
    let release = Arc::new(Release::default());
    let llm = HangsFirst::new(ScriptedLlm::default(), &release);
    llm.left.store(usize::MAX, Ordering::Release);
    let engine = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
        Arc::new(llm),
        Arc::new(ScriptedTts::default()),
        EngineConfig {
            llm_timeout: Some(Duration::from_millis(50)),
            queue_capacity: 4,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let s = engine
        .create_session(SessionConfig {
            prefill: false,
            ..SessionConfig::default()
        })
        .unwrap();
    for _ in 0..20 {
        spoken_turn(&s, 0.3);
        let (status, _, _) = until_done(&s);
        assert_eq!(status, ResponseStatus::Failed);
    }
    let (_, alive) = engine.workers(Stage::Llm);
    // workers * 2 + 4 threads at most.
    assert!(alive <= 6, "{alive} LLM threads");
    release.open();
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.workers(Stage::Llm) != (1, 1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(engine.workers(Stage::Llm), (1, 1));
}

/// Closing a session mid-response cancels its model work at the next
/// output, and the session's memory is freed once that job ends.
#[test]
fn a_closed_session_cancels_its_work_and_is_freed() {
    let engine = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
        Arc::new(ScriptedLlm {
            per_token: Duration::from_millis(20),
            ..ScriptedLlm::default()
        }),
        Arc::new(ScriptedTts::default()),
        EngineConfig::default(),
    )
    .unwrap();
    let s = engine.create_session(SessionConfig::default()).unwrap();
    spoken_turn(&s, 0.3);
    // Wait until the answer streams, then vanish.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no audio");
        if let Some(EngineEvent::AudioDelta { .. }) = s.next_event(Some(Duration::from_millis(50)))
        {
            break;
        }
    }
    assert_eq!(engine.session_objects(), 1);
    let closed = Instant::now();
    s.close();
    drop(s);
    while engine.session_objects() > 0 {
        assert!(
            closed.elapsed() < Duration::from_millis(500),
            "the session's job did not stop"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(engine.session_count(), 0);
}

#[test]
fn a_failed_transcript_fails_the_response_the_client_asked_for() {
    // Push-to-talk: the client commits, then asks for a response, which waits
    // for the transcript; the STT call hangs and times out. The response
    // fails naming the stage; the LLM never answers words it did not get.
    let release = Arc::new(Release::default());
    let stt = HangsFirst::new(ScriptedStt::new(Vec::new(), Duration::ZERO), &release);
    let engine = Engine::new(
        Arc::new(stt),
        Arc::new(ScriptedLlm::default()),
        Arc::new(ScriptedTts::default()),
        config(),
    )
    .unwrap();
    let s = engine
        .create_session(SessionConfig {
            turn_detection: false,
            ..SessionConfig::default()
        })
        .unwrap();
    s.commit_input(speech(0.5)).unwrap();
    let id = s.create_response(ResponseOptions::default()).unwrap();
    let (status, error, events) = until_done(&s);
    assert_eq!(status, ResponseStatus::Failed);
    assert!(
        error.as_deref().unwrap_or_default().contains("stt"),
        "{error:?}"
    );
    assert!(
        events.iter().any(
            |e| matches!(e, EngineEvent::ResponseCreated { response_id } if *response_id == id)
        )
    );
    assert!(
        !events.iter().any(|e| matches!(
            e,
            EngineEvent::TextDelta { .. } | EngineEvent::AudioDelta { .. }
        )),
        "{:?}",
        events.iter().map(EngineEvent::name).collect::<Vec<_>>()
    );
    // The session goes on: the next turn is answered.
    s.commit_input(speech(0.5)).unwrap();
    s.create_response(ResponseOptions::default()).unwrap();
    assert_eq!(until_done(&s).0, ResponseStatus::Completed);
    release.open();
}
