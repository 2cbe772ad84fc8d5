//! The engine with scripted backends: event order, barge-in, speculation,
//! tools, failures and many concurrent sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use speech_to_speech::engine::backend::{SttOptions, Tool};
use speech_to_speech::engine::conversation::{Content, Item, ItemKind, ItemStatus};
use speech_to_speech::engine::events::{EngineEvent, ResponseStatus, StopReason};
use speech_to_speech::engine::scripted::{ScriptedLlm, ScriptedStt, ScriptedTts};
use speech_to_speech::engine::{
    Engine, EngineConfig, ResponseOptions, Session, SessionConfig, TurnInput,
};

fn engine(llm: ScriptedLlm, tts: ScriptedTts, config: EngineConfig) -> Arc<Engine> {
    Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::from_millis(5))),
        Arc::new(llm),
        Arc::new(tts),
        config,
    )
    .unwrap()
}

fn default_engine() -> Arc<Engine> {
    engine(
        ScriptedLlm::default(),
        ScriptedTts::default(),
        EngineConfig::default(),
    )
}

/// One second of 16 kHz audio at this peak level.
fn speech(level: f32) -> Vec<f32> {
    (0..16_000)
        .map(|i| level * (i as f32 * 0.05).sin().signum())
        .collect()
}

fn name(e: &EngineEvent) -> &'static str {
    e.name()
}

/// Events until (and including) the first `response_done`.
fn until_done(s: &Session) -> Vec<EngineEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        if let Some(e) = s.next_event(Some(Duration::from_millis(100))) {
            let done = matches!(e, EngineEvent::ResponseDone { .. });
            out.push(e);
            if done {
                // Timings follow the done event.
                if let Some(t) = s.next_event(Some(Duration::from_millis(200))) {
                    out.push(t);
                }
                return out;
            }
        }
    }
    panic!("no response.done within 10 s; got {:?}", names(&out));
}

fn names(events: &[EngineEvent]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = events.iter().map(name).collect();
    v.dedup_by(|a, b| *a == "audio_delta" && *b == "audio_delta");
    v
}

fn spoken_turn(s: &Session, level: f32) {
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 1000,
        audio: speech(level),
        hold_until_ms: None,
    });
}

fn done_status(events: &[EngineEvent]) -> (ResponseStatus, Option<StopReason>) {
    events
        .iter()
        .find_map(|e| match e {
            EngineEvent::ResponseDone { status, reason, .. } => Some((*status, *reason)),
            _ => None,
        })
        .unwrap()
}

fn transcript(events: &[EngineEvent]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            EngineEvent::ContentPartDone { text, .. } => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn a_full_turn_in_order() {
    let e = default_engine();
    let s = e
        .create_session(SessionConfig {
            transcription: Some(SttOptions::default()),
            speculation: false,
            ..SessionConfig::default()
        })
        .unwrap();
    spoken_turn(&s, 0.42);
    let ev = until_done(&s);
    assert_eq!(
        names(&ev),
        [
            "speech_started",
            "speech_stopped",
            "input_committed",
            "item_added",
            "item_done",
            "input_transcript_delta",
            "input_transcript_completed",
            "response_created",
            "output_item_added",
            "item_added",
            "content_part_added",
            "transcript_delta",
            "audio_delta",
            "transcript_delta",
            "audio_delta",
            "content_part_done",
            "output_item_done",
            "item_done",
            "response_done",
            "timings",
        ]
    );
    assert_eq!(done_status(&ev), (ResponseStatus::Completed, None));
    assert_eq!(transcript(&ev), "You said: level 42. That is all I know.");
    // 9 words of 100 ms at 24 kHz, in deltas of at most 200 ms.
    let audio: Vec<usize> = ev
        .iter()
        .filter_map(|e| match e {
            EngineEvent::AudioDelta { samples, .. } => Some(samples.len()),
            _ => None,
        })
        .collect();
    assert!(audio.iter().all(|&n| n <= 4800));
    // At least 20 ms each, but for the tail of the response.
    assert!(
        audio[..audio.len() - 1].iter().all(|&n| n >= 480),
        "{audio:?}"
    );
    let total: usize = audio.iter().sum();
    assert!((total as i64 - 9 * 2400).abs() <= 2, "total {total}");
    // The conversation holds the user transcript and the assistant's words.
    let items = s.items();
    assert_eq!(items.len(), 2);
    let ItemKind::Message { content, .. } = &items[0].kind else {
        panic!()
    };
    assert_eq!(content[0].text(), Some("level 42"));
    assert_eq!(items[1].status, ItemStatus::Completed);
}

/// A session with prefill on and a history window of 2 items.
fn windowed_session(e: &Arc<Engine>, instructions: &str) -> Session {
    e.create_session(SessionConfig {
        instructions: instructions.into(),
        chat_size: 2,
        ..SessionConfig::default()
    })
    .unwrap()
}

#[test]
fn speech_start_prefills_the_history_the_answer_begins_with() {
    let llm = Arc::new(ScriptedLlm::default());
    let e = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::from_millis(5))),
        Arc::clone(&llm) as Arc<dyn speech_to_speech::engine::LlmBackend>,
        Arc::new(ScriptedTts::default()),
        EngineConfig::default(),
    )
    .unwrap();
    let s = windowed_session(&e, "Be brief.");
    for level in [0.1, 0.2, 0.3] {
        spoken_turn(&s, level);
        until_done(&s);
    }
    let prefills = llm.prefills.lock().unwrap().clone();
    // One per turn: the system prompt, then the window of history that the
    // turn's prompt begins with (none yet, then the previous exchange).
    let roles: Vec<Vec<&str>> = prefills
        .iter()
        .map(|m| m.iter().map(|m| m.role).collect())
        .collect();
    assert_eq!(
        roles,
        [
            vec!["system"],
            vec!["system", "user", "assistant"],
            vec!["system", "user", "assistant"],
        ]
    );
    assert_eq!(prefills[2][1].content, "level 20");
    // The prompts of the answers began exactly so.
    let items = s.items();
    assert_eq!(items.len(), 6);

    // Off: no prefill.
    let s = e
        .create_session(SessionConfig {
            prefill: false,
            ..SessionConfig::default()
        })
        .unwrap();
    spoken_turn(&s, 0.5);
    until_done(&s);
    assert_eq!(llm.prefills.lock().unwrap().len(), 3);

    // Another conversation used the LLM a moment ago: its cache would not
    // survive, so there is no prefill.
    let s = e.create_session(SessionConfig::default()).unwrap();
    spoken_turn(&s, 0.6);
    until_done(&s);
    assert_eq!(llm.prefills.lock().unwrap().len(), 3);

    // Once that conversation has closed, nothing of it is left to evict: the
    // next one reads ahead at once.
    s.close();
    let s = e.create_session(SessionConfig::default()).unwrap();
    spoken_turn(&s, 0.7);
    until_done(&s);
    assert_eq!(llm.prefills.lock().unwrap().len(), 4);
}

/// What the LLM and the first synthesis did, in order, for the gate test.
#[derive(Default)]
struct Trace {
    log: std::sync::Mutex<Vec<&'static str>>,
    changed: std::sync::Condvar,
}

impl Trace {
    fn push(&self, what: &'static str) {
        self.log.lock().unwrap().push(what);
        self.changed.notify_all();
    }

    /// Wait until `what` is in the log (no clock: the condition itself).
    fn wait_for(&self, what: &str) {
        let log = self.log.lock().unwrap();
        let (_log, timeout) = self
            .changed
            .wait_timeout_while(log, Duration::from_secs(10), |l| !l.contains(&what))
            .unwrap();
        assert!(!timeout.timed_out(), "{what} never happened");
    }
}

/// The scripted answer, word by word, telling the trace when it is held at
/// the gate and when it is done.
struct GatedLlm(Arc<Trace>);
/// A TTS whose first synthesis waits, before its first chunk, until the LLM
/// is either held at the gate or finished: whichever the gate allows.
struct WaitingTts(ScriptedTts, Arc<Trace>);

impl speech_to_speech::engine::LlmBackend for GatedLlm {
    fn generate(
        &self,
        _request: &speech_to_speech::engine::backend::LlmRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
        emit: &mut dyn FnMut(speech_to_speech::engine::backend::LlmOutput),
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        let words = [
            "You", " said:", " hello.", " That", " is", " all", " I", " know.",
        ];
        for w in words {
            if cancel.is_held() {
                self.0.push("llm held");
            }
            cancel.hold();
            if cancel.is_cancelled() {
                return Ok(());
            }
            self.0.push("token");
            emit(speech_to_speech::engine::backend::LlmOutput::Text(w.into()));
            if w == " That" {
                // The word after a sentence end completes the first clause:
                // go on once its synthesis runs.
                self.0.wait_for("synthesis");
            }
        }
        self.0.push("llm done");
        Ok(())
    }
}

impl speech_to_speech::engine::TtsBackend for WaitingTts {
    fn synthesize(
        &self,
        request: &speech_to_speech::engine::backend::TtsRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
        emit: &mut dyn FnMut(speech_to_speech::engine::backend::TtsChunk),
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        let first = !self.1.log.lock().unwrap().contains(&"synthesis");
        self.1.push("synthesis");
        if first {
            // The LLM either stops at the gate or runs to its end meanwhile.
            let log = self.1.log.lock().unwrap();
            let (_log, timeout) = self
                .1
                .changed
                .wait_timeout_while(log, Duration::from_secs(10), |l| {
                    !l.contains(&"llm held") && !l.contains(&"llm done")
                })
                .unwrap();
            assert!(!timeout.timed_out());
        }
        self.0.synthesize(request, cancel, emit)
    }
}

#[test]
fn the_llm_waits_while_the_first_clause_is_synthesised() {
    for priority in [true, false] {
        let trace = Arc::new(Trace::default());
        let e = Engine::new(
            Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
            Arc::new(GatedLlm(Arc::clone(&trace))),
            Arc::new(WaitingTts(ScriptedTts::default(), Arc::clone(&trace))),
            EngineConfig {
                first_audio_priority: priority,
                ..EngineConfig::default()
            },
        )
        .unwrap();
        let s = e.create_session(SessionConfig::default()).unwrap();
        spoken_turn(&s, 0.42);
        let ev = until_done(&s);
        assert_eq!(done_status(&ev), (ResponseStatus::Completed, None));
        trace.wait_for("llm done");
        let log = trace.log.lock().unwrap().clone();
        let start = log.iter().position(|w| *w == "synthesis").unwrap();
        let during = log[start..]
            .iter()
            .take_while(|w| **w != "llm held")
            .filter(|w| **w == "token")
            .count();
        // "You said: hello." goes to TTS; "That is all I know." is still to
        // come. With the gate the LLM stops at its next token (one already
        // under way may finish) until the first chunk exists; without it,
        // the LLM writes the rest of the answer during the synthesis.
        if priority {
            assert!(log[start..].contains(&"llm held"), "{log:?}");
            assert!(
                during <= 1,
                "{during} tokens during the first synthesis: {log:?}"
            );
        } else {
            assert!(!log.contains(&"llm held"), "{log:?}");
            assert_eq!(during, 4, "{log:?}");
        }
    }
}

#[test]
fn barge_in_cancels_and_the_next_turn_works() {
    let (e, _llm, llm_watch, tts_watch) = speculative_engine(
        ScriptedLlm {
            per_token: Duration::from_millis(30),
            ..ScriptedLlm::default()
        },
        ScriptedTts::default(),
    );
    let s = e
        .create_session(SessionConfig {
            speculation: false,
            ..SessionConfig::default()
        })
        .unwrap();
    spoken_turn(&s, 0.1);
    // Wait for the first audio, then talk over it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no audio");
        if let Some(EngineEvent::AudioDelta { .. }) = s.next_event(Some(Duration::from_secs(1))) {
            break;
        }
    }
    s.turn_event(TurnInput::SpeechStarted {
        audio_start_ms: 2000,
    });
    let ev = until_done(&s);
    assert_eq!(
        done_status(&ev),
        (ResponseStatus::Cancelled, Some(StopReason::TurnDetected))
    );
    // The cancelled assistant item holds only what was spoken.
    let spoken = transcript(&ev);
    assert!(!spoken.is_empty() && spoken.len() < "You said: level 10. That is all I know.".len());
    assert!(!s.has_active_response());
    // speech_started follows the cancellation, and the next turn answers.
    assert!(matches!(
        s.next_event(Some(Duration::from_secs(1))),
        Some(EngineEvent::SpeechStarted { .. })
    ));
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 3000,
        audio: speech(0.2),
        hold_until_ms: None,
    });
    let ev = until_done(&s);
    assert_eq!(done_status(&ev).0, ResponseStatus::Completed);
    assert_eq!(transcript(&ev), "You said: level 20. That is all I know.");
    // Nothing of the cancelled response arrives afterwards: once every model
    // call has returned, only the turn's timings may still be queued.
    llm_watch.all_returned();
    tts_watch.all_returned();
    while let Some(ev) = s.try_next_event() {
        assert!(matches!(ev, EngineEvent::Timings { .. }), "{ev:?}");
    }
}

#[test]
fn speculation_is_held_until_commit_and_dropped_on_resumed_speech() {
    let (e, _llm, llm_watch, tts_watch) =
        speculative_engine(ScriptedLlm::default(), ScriptedTts::default());
    let s = e.create_session(SessionConfig::default()).unwrap();
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    s.turn_event(TurnInput::SoftEnd {
        audio_ms: 900,
        audio: speech(0.3),
    });
    // The speculative answer is computed (all of it, both clauses spoken)
    // but nothing is sent before the commit.
    llm_watch.finished();
    tts_watch.finished();
    tts_watch.finished();
    let early: Vec<_> = std::iter::from_fn(|| s.try_next_event()).collect();
    assert_eq!(names(&early), ["speech_started"]);
    // Resumed speech discards it; a new soft end and the commit answer.
    s.turn_event(TurnInput::SpeechResumed { audio_ms: 1000 });
    s.turn_event(TurnInput::SoftEnd {
        audio_ms: 1500,
        audio: speech(0.5),
    });
    // The new speculative answer is under way when the turn commits.
    llm_watch.started();
    llm_watch.started();
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 1800,
        audio: speech(0.6),
        hold_until_ms: None,
    });
    let ev = until_done(&s);
    let n = names(&ev);
    assert_eq!(
        &n[..4],
        [
            "speech_stopped",
            "input_committed",
            "item_added",
            "item_done"
        ]
    );
    assert_eq!(n.iter().filter(|x| **x == "response_created").count(), 1);
    // The transcript is the speculative one (of the second soft end).
    assert_eq!(transcript(&ev), "You said: level 50. That is all I know.");
    let Some(EngineEvent::Timings { timings, .. }) = ev.last() else {
        panic!("{n:?}")
    };
    assert!(timings.speculative);
    // Started before the commit, the response still reports the turn's times.
    assert!(timings.commit.is_some() && timings.speech_end.is_some());
    assert!(timings.commit <= timings.first_audio_out);
}

#[test]
fn sessions_do_not_cross_talk() {
    for n in [2usize, 10] {
        let e = engine(
            ScriptedLlm::default(),
            ScriptedTts::default(),
            EngineConfig {
                stt_workers: 2,
                llm_workers: 2,
                tts_workers: 2,
                ..EngineConfig::default()
            },
        );
        let sessions: Vec<Session> = (0..n)
            .map(|_| {
                e.create_session(SessionConfig {
                    speculation: false,
                    ..SessionConfig::default()
                })
                .unwrap()
            })
            .collect();
        for (i, s) in sessions.iter().enumerate() {
            spoken_turn(s, (i + 1) as f32 / 100.0);
        }
        for (i, s) in sessions.iter().enumerate() {
            let ev = until_done(s);
            assert_eq!(done_status(&ev).0, ResponseStatus::Completed);
            assert_eq!(
                transcript(&ev),
                format!("You said: level {}. That is all I know.", i + 1)
            );
        }
    }
}

#[test]
fn a_failing_model_fails_the_response_and_the_session_goes_on() {
    let e = engine(
        ScriptedLlm {
            fail: Some("model exploded".into()),
            ..ScriptedLlm::default()
        },
        ScriptedTts::default(),
        EngineConfig::default(),
    );
    let s = e.create_session(SessionConfig::default()).unwrap();
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 1000,
        audio: speech(0.1),
        hold_until_ms: None,
    });
    let ev = until_done(&s);
    let err = ev.iter().find_map(|e| match e {
        EngineEvent::ResponseDone { status, error, .. } => Some((*status, error.clone())),
        _ => None,
    });
    assert_eq!(
        err,
        Some((
            ResponseStatus::Failed,
            Some("llm backend failed: model exploded".into())
        ))
    );
    // A bad STT input fails the transcription with an error, not the session.
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 1000,
        audio: vec![f32::NAN; 16_000],
        hold_until_ms: None,
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut saw_error = false;
    while Instant::now() < deadline && !saw_error {
        if let Some(EngineEvent::Error { code, .. }) =
            s.next_event(Some(Duration::from_millis(100)))
        {
            saw_error = code == "transcription_failed";
        }
    }
    assert!(saw_error);
    assert!(!s.is_closed());
}

#[test]
fn tool_call_then_output_then_answer() {
    let e = default_engine();
    let s = e
        .create_session(SessionConfig {
            turn_detection: false,
            tools: vec![Tool {
                name: "get_weather".into(),
                description: "Weather in a city".into(),
                parameters: r#"{"type":"object"}"#.into(),
            }],
            ..SessionConfig::default()
        })
        .unwrap();
    s.add_item(user_text("item_q", "What is the weather?"), None)
        .unwrap();
    s.create_response(ResponseOptions::default()).unwrap();
    let ev = until_done(&s);
    let call = ev
        .iter()
        .find_map(|e| match e {
            EngineEvent::FunctionCallArgumentsDone {
                call_id, arguments, ..
            } => Some((call_id.clone(), arguments.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(call.1, r#"{"city":"Paris"}"#);
    s.add_item(
        Item {
            id: "item_out".into(),
            kind: ItemKind::FunctionCallOutput {
                call_id: call.0,
                output: "sunny".into(),
            },
            status: ItemStatus::Completed,
        },
        None,
    )
    .unwrap();
    s.create_response(ResponseOptions {
        audio_output: Some(false),
        ..ResponseOptions::default()
    })
    .unwrap();
    let ev = until_done(&s);
    assert!(names(&ev).contains(&"text_delta"));
    assert!(!names(&ev).contains(&"audio_delta"));
    assert_eq!(transcript(&ev), "The tool said sunny.");
}

#[test]
fn truncate_rewrites_the_text_to_what_was_heard() {
    let e = default_engine();
    let s = e
        .create_session(SessionConfig {
            speculation: false,
            ..SessionConfig::default()
        })
        .unwrap();
    spoken_turn(&s, 0.07);
    let ev = until_done(&s);
    let item_id = ev
        .iter()
        .find_map(|e| match e {
            EngineEvent::OutputItemAdded { item, .. } => Some(item.id.clone()),
            _ => None,
        })
        .unwrap();
    // Each word is 100 ms: after 250 ms the user heard "You said:" (2 words,
    // the third's middle at 250 ms counts as heard).
    s.truncate_item(&item_id, 0, 250).unwrap();
    let ItemKind::Message { content, .. } = s.item(&item_id).unwrap().kind else {
        panic!()
    };
    assert_eq!(content[0].text(), Some("You said: level"));
    assert!(s.truncate_item(&item_id, 0, 60_000).is_err());
}

#[test]
fn session_limit_and_close() {
    let e = engine(
        ScriptedLlm::default(),
        ScriptedTts::default(),
        EngineConfig {
            max_sessions: 2,
            ..EngineConfig::default()
        },
    );
    let a = e.create_session(SessionConfig::default()).unwrap();
    let b = e.create_session(SessionConfig::default()).unwrap();
    assert!(e.create_session(SessionConfig::default()).is_err());
    a.close();
    assert!(a.next_event(Some(Duration::from_millis(10))).is_none());
    assert!(e.create_session(SessionConfig::default()).is_ok());
    assert!(s_err_code(&b.commit_input(vec![0.0; 100])) == Some("input_audio_buffer_commit_empty"));
}

fn s_err_code<T>(
    r: &Result<T, speech_to_speech::engine::session::SessionError>,
) -> Option<&'static str> {
    r.as_ref()
        .err()
        .map(speech_to_speech::engine::session::SessionError::code)
}

/// A backend that panics on its first `n` calls, then behaves like the wrapped one.
struct PanicsFirst<B> {
    left: std::sync::atomic::AtomicUsize,
    inner: B,
}

impl<B> PanicsFirst<B> {
    fn new(n: usize, inner: B) -> Self {
        Self {
            left: std::sync::atomic::AtomicUsize::new(n),
            inner,
        }
    }

    fn should_panic(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl speech_to_speech::engine::LlmBackend for PanicsFirst<ScriptedLlm> {
    fn generate(
        &self,
        request: &speech_to_speech::engine::backend::LlmRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
        emit: &mut dyn FnMut(speech_to_speech::engine::backend::LlmOutput),
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        if self.should_panic() {
            // Half-way through an answer, like a bug in the glue would.
            emit(speech_to_speech::engine::backend::LlmOutput::Text(
                "Half an ".into(),
            ));
            panic!("forced LLM panic");
        }
        self.inner.generate(request, cancel, emit)
    }
}

impl speech_to_speech::engine::TtsBackend for PanicsFirst<ScriptedTts> {
    fn synthesize(
        &self,
        request: &speech_to_speech::engine::backend::TtsRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
        emit: &mut dyn FnMut(speech_to_speech::engine::backend::TtsChunk),
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        assert!(!self.should_panic(), "forced TTS panic");
        self.inner.synthesize(request, cancel, emit)
    }
}

fn failed_with_error_first(events: &[EngineEvent], stage: &str) {
    let n = names(events);
    let error_at = n.iter().position(|e| *e == "error");
    let done_at = n.iter().position(|e| *e == "response_done");
    assert!(
        error_at.is_some() && error_at < done_at,
        "an error event before response_done: {n:?}"
    );
    let (status, error) = events
        .iter()
        .find_map(|e| match e {
            EngineEvent::ResponseDone { status, error, .. } => Some((*status, error.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(status, ResponseStatus::Failed);
    let error = error.unwrap_or_default();
    assert!(
        error.contains(&format!("the {stage} stage failed unexpectedly"))
            && error.contains("forced"),
        "{error}"
    );
}

#[test]
fn a_panic_in_a_stage_job_fails_that_response_and_the_worker_goes_on() {
    // One worker per stage: if a panic killed it, nothing would ever run again.
    let llm = Arc::new(PanicsFirst::new(1, ScriptedLlm::default()));
    let tts = Arc::new(PanicsFirst::new(1, ScriptedTts::default()));
    let e = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::from_millis(5))),
        llm,
        tts,
        EngineConfig::default(),
    )
    .unwrap();
    let s = e.create_session(SessionConfig::default()).unwrap();

    // 1. The LLM job panics mid-answer.
    spoken_turn(&s, 0.1);
    failed_with_error_first(&until_done(&s), "llm");

    // 2. The next response on the same session: the LLM works, TTS panics.
    s.create_response(ResponseOptions::default()).unwrap();
    failed_with_error_first(&until_done(&s), "tts");

    // 3. And the one after that completes, with audio.
    s.create_response(ResponseOptions::default()).unwrap();
    let ev = until_done(&s);
    assert_eq!(
        done_status(&ev).0,
        ResponseStatus::Completed,
        "{:?}",
        names(&ev)
    );
    assert!(names(&ev).contains(&"audio_delta"));
    assert!(!s.is_closed());
}

// --- speculation and the conversation ---------------------------------------------------

/// Wraps a backend and tells the test, over channels, when calls start and end,
/// and which chats the LLM was asked (no sleeps to synchronise on).
struct Watched<B> {
    inner: B,
    started: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    finished: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    chats: std::sync::Mutex<Vec<Vec<(String, String)>>>,
}

struct Watch {
    started: std::sync::mpsc::Receiver<()>,
    finished: std::sync::mpsc::Receiver<()>,
}

impl Watch {
    /// Wait until every call that started has returned.
    fn all_returned(&self) {
        let started = self.started.try_iter().count();
        for _ in 0..started {
            self.finished();
        }
    }

    fn started(&self) {
        self.started
            .recv_timeout(Duration::from_secs(10))
            .expect("a call started");
    }
    fn finished(&self) {
        self.finished
            .recv_timeout(Duration::from_secs(10))
            .expect("a call finished");
    }
}

fn watched<B>(inner: B) -> (Arc<Watched<B>>, Watch) {
    let (s_tx, s_rx) = std::sync::mpsc::channel();
    let (f_tx, f_rx) = std::sync::mpsc::channel();
    (
        Arc::new(Watched {
            inner,
            started: std::sync::Mutex::new(s_tx),
            finished: std::sync::Mutex::new(f_tx),
            chats: std::sync::Mutex::new(Vec::new()),
        }),
        Watch {
            started: s_rx,
            finished: f_rx,
        },
    )
}

fn signal(which: &std::sync::Mutex<std::sync::mpsc::Sender<()>>) {
    let _ = which.lock().unwrap().send(());
}

impl<B> Watched<B> {
    fn last_chat(&self) -> Vec<(String, String)> {
        self.chats.lock().unwrap().last().cloned().unwrap()
    }
}

impl speech_to_speech::engine::LlmBackend for Watched<ScriptedLlm> {
    fn prefill(
        &self,
        request: &speech_to_speech::engine::backend::LlmRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        self.inner.prefill(request, cancel)
    }

    fn generate(
        &self,
        request: &speech_to_speech::engine::backend::LlmRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
        emit: &mut dyn FnMut(speech_to_speech::engine::backend::LlmOutput),
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        self.chats.lock().unwrap().push(
            request
                .messages
                .iter()
                .map(|m| (m.role.to_owned(), m.content.clone()))
                .collect(),
        );
        signal(&self.started);
        let r = self.inner.generate(request, cancel, emit);
        signal(&self.finished);
        r
    }
}

impl speech_to_speech::engine::TtsBackend for Watched<ScriptedTts> {
    fn synthesize(
        &self,
        request: &speech_to_speech::engine::backend::TtsRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
        emit: &mut dyn FnMut(speech_to_speech::engine::backend::TtsChunk),
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        signal(&self.started);
        let r = self.inner.synthesize(request, cancel, emit);
        signal(&self.finished);
        r
    }
}

/// (id, role, text) of every conversation item, in order.
fn conversation(s: &Session) -> Vec<(String, &'static str, String)> {
    s.items()
        .iter()
        .map(|i| match &i.kind {
            ItemKind::Message { role, content } => {
                let text = content
                    .iter()
                    .map(|c| match c {
                        Content::InputText(t) | Content::OutputText(t) => t.clone(),
                        Content::InputAudio { transcript, .. } => {
                            transcript.clone().unwrap_or_default()
                        }
                        Content::OutputAudio { transcript, .. } => transcript.clone(),
                    })
                    .collect::<String>();
                (i.id.clone(), role.as_str(), text)
            }
            ItemKind::FunctionCall { name, .. } => (i.id.clone(), "function_call", name.clone()),
            ItemKind::FunctionCallOutput { output, .. } => {
                (i.id.clone(), "function_call_output", output.clone())
            }
        })
        .collect()
}

/// Every (item id, `previous_item_id`) the client was told, in order.
fn announced(events: &[EngineEvent]) -> Vec<(String, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::InputCommitted {
                item_id,
                previous_item_id,
            } => Some((item_id.clone(), previous_item_id.clone())),
            EngineEvent::ItemAdded {
                item,
                previous_item_id,
            }
            | EngineEvent::ItemDone {
                item,
                previous_item_id,
            } => Some((item.id.clone(), previous_item_id.clone())),
            _ => None,
        })
        .collect()
}

/// What the client was told must be what the conversation holds: every
/// announced `previous_item_id` is the item before it, and no item is unannounced.
fn assert_client_view_matches(s: &Session, events: &[EngineEvent]) {
    let items = conversation(s);
    let ids: Vec<&str> = items.iter().map(|(id, _, _)| id.as_str()).collect();
    for (id, prev) in announced(events) {
        let pos = ids
            .iter()
            .position(|x| *x == id)
            .unwrap_or_else(|| panic!("announced item {id} is not in the conversation {ids:?}"));
        let before = pos.checked_sub(1).map(|p| ids[p].to_owned());
        assert_eq!(prev, before, "previous_item_id of {id} in {ids:?}");
    }
    let told: std::collections::HashSet<String> =
        announced(events).into_iter().map(|(id, _)| id).collect();
    for id in &ids {
        assert!(
            told.contains(*id),
            "item {id} was never announced: {items:?}"
        );
    }
}

fn speculative_engine(
    llm: ScriptedLlm,
    tts: ScriptedTts,
) -> (Arc<Engine>, Arc<Watched<ScriptedLlm>>, Watch, Watch) {
    let (llm, llm_watch) = watched(llm);
    let (tts, tts_watch) = watched(tts);
    let e = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::from_millis(1))),
        Arc::clone(&llm) as Arc<dyn speech_to_speech::engine::LlmBackend>,
        tts,
        EngineConfig::default(),
    )
    .unwrap();
    (e, llm, llm_watch, tts_watch)
}

/// A spoken turn with a pause in it: speculation starts at the soft end, the
/// LLM is under way, then the turn ends.
fn speculated_turn(s: &Session, level: f32, llm_watch: &Watch) {
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    pause_then_end(s, level, llm_watch);
}

/// The rest of [`speculated_turn`] after the start of speech.
fn pause_then_end(s: &Session, level: f32, llm_watch: &Watch) {
    s.turn_event(TurnInput::SoftEnd {
        audio_ms: 900,
        audio: speech(level),
    });
    llm_watch.started();
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 1200,
        audio: speech(level),
        hold_until_ms: None,
    });
}

/// A completed user text message.
fn user_text(id: &str, text: &str) -> Item {
    Item {
        id: id.into(),
        kind: ItemKind::Message {
            role: speech_to_speech::engine::conversation::Role::User,
            content: vec![Content::InputText(text.into())],
        },
        status: ItemStatus::Completed,
    }
}

fn drain(s: &Session) -> Vec<EngineEvent> {
    std::iter::from_fn(|| s.try_next_event()).collect()
}

fn config(instructions: &str) -> SessionConfig {
    SessionConfig {
        instructions: instructions.into(),
        prefill: false,
        ..SessionConfig::default()
    }
}

#[test]
fn a_discarded_speculation_leaves_no_trace() {
    let (e, llm, llm_watch, tts_watch) =
        speculative_engine(ScriptedLlm::default(), ScriptedTts::default());
    let s = e.create_session(config("Be brief.")).unwrap();
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    // A pause: STT and the LLM answer a partial turn ("level 30")...
    s.turn_event(TurnInput::SoftEnd {
        audio_ms: 900,
        audio: speech(0.3),
    });
    llm_watch.finished();
    tts_watch.finished();
    // ...and the user goes on: that answer must vanish without a trace.
    s.turn_event(TurnInput::SpeechResumed { audio_ms: 1000 });
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 2000,
        audio: speech(0.6),
        hold_until_ms: None,
    });
    let ev = until_done(&s);
    let items = conversation(&s);
    assert_eq!(
        items
            .iter()
            .map(|(_, r, t)| (*r, t.as_str()))
            .collect::<Vec<_>>(),
        [
            ("user", "level 60"),
            ("assistant", "You said: level 60. That is all I know."),
        ]
    );
    assert_client_view_matches(&s, &ev);
    assert_eq!(
        names(&ev)
            .iter()
            .filter(|n| **n == "response_created")
            .count(),
        1
    );
    // The next turn's LLM request holds only what the client saw.
    s.create_response(ResponseOptions::default()).unwrap();
    until_done(&s);
    assert_eq!(
        llm.last_chat(),
        [
            ("system".into(), "Be brief.".into()),
            ("user".into(), "level 60".into()),
            (
                "assistant".into(),
                "You said: level 60. That is all I know.".into()
            ),
        ]
    );
}

#[test]
fn a_commit_racing_a_speculative_answer_keeps_question_before_answer() {
    // The LLM is mid-answer (held back, unsent) when the turn commits.
    let (e, llm, llm_watch, _tts) = speculative_engine(
        ScriptedLlm {
            per_token: Duration::from_millis(15),
            ..ScriptedLlm::default()
        },
        ScriptedTts::default(),
    );
    let s = e.create_session(config("")).unwrap();
    speculated_turn(&s, 0.4, &llm_watch);
    let ev = until_done(&s);
    assert_eq!(
        conversation(&s)
            .iter()
            .map(|(_, r, t)| (*r, t.as_str()))
            .collect::<Vec<_>>(),
        [
            ("user", "level 40"),
            ("assistant", "You said: level 40. That is all I know."),
        ]
    );
    assert_client_view_matches(&s, &ev);
    // The speculative request was the answer the client got: one LLM call.
    assert_eq!(llm.chats.lock().unwrap().len(), 1);
    for (id, _, _) in conversation(&s) {
        assert!(s.item(&id).is_ok());
    }
}

#[test]
fn a_speculative_answer_finished_before_the_commit_is_sent_after_the_question() {
    let (e, llm, llm_watch, tts_watch) =
        speculative_engine(ScriptedLlm::default(), ScriptedTts::default());
    let s = e.create_session(config("")).unwrap();
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    s.turn_event(TurnInput::SoftEnd {
        audio_ms: 900,
        audio: speech(0.2),
    });
    llm_watch.finished();
    tts_watch.finished();
    tts_watch.finished();
    // The session's bookkeeping after the last clause returns.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.has_finished_speculation() {
        assert!(Instant::now() < deadline, "the held answer never finished");
        std::thread::yield_now();
    }
    // Everything is done and held; nothing was sent and nothing joined the conversation.
    assert_eq!(names(&drain(&s)), ["speech_started"]);
    assert!(s.items().is_empty());
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 1200,
        audio: speech(0.2),
        hold_until_ms: None,
    });
    let ev = until_done(&s);
    let n = names(&ev);
    assert_eq!(
        &n[..4],
        [
            "speech_stopped",
            "input_committed",
            "item_added",
            "item_done"
        ]
    );
    assert_eq!(done_status(&ev).0, ResponseStatus::Completed);
    assert!(n.contains(&"audio_delta"));
    assert_client_view_matches(&s, &ev);
    assert_eq!(conversation(&s).len(), 2);
    assert_eq!(
        llm.chats.lock().unwrap().len(),
        1,
        "the held answer was used"
    );
}

#[test]
fn three_spoken_turns_in_a_row_keep_the_conversation_in_order() {
    let (e, llm, llm_watch, _tts) =
        speculative_engine(ScriptedLlm::default(), ScriptedTts::default());
    let s = e.create_session(config("Sys.")).unwrap();
    let mut all = Vec::new();
    for level in [0.1f32, 0.2, 0.3] {
        speculated_turn(&s, level, &llm_watch);
        all.extend(until_done(&s));
        assert_client_view_matches(&s, &all);
    }
    let roles: Vec<(&str, String)> = conversation(&s)
        .into_iter()
        .map(|(_, r, t)| (r, t))
        .collect();
    let want: Vec<(&str, String)> = [10, 20, 30]
        .iter()
        .flat_map(|n| {
            [
                ("user", format!("level {n}")),
                (
                    "assistant",
                    format!("You said: level {n}. That is all I know."),
                ),
            ]
        })
        .collect();
    assert_eq!(roles, want);
    // The third answer's request: the history exactly as the client saw it.
    let mut expect = vec![("system".to_owned(), "Sys.".to_owned())];
    for (r, t) in &want[..5] {
        expect.push(((*r).to_owned(), t.clone()));
    }
    assert_eq!(llm.last_chat(), expect);
}

#[test]
fn a_speculative_answer_begins_with_the_history_read_ahead() {
    // A window of 2 items and an odd number of them (a question that was
    // never answered): the window the prefill read ahead must be the one the
    // speculative answer is asked with, or the LLM reads the history again.
    let (e, llm, llm_watch, _tts) =
        speculative_engine(ScriptedLlm::default(), ScriptedTts::default());
    let s = windowed_session(&e, "Sys.");
    spoken_turn(&s, 0.1);
    until_done(&s);
    s.add_item(user_text("item_unanswered", "Never mind."), None)
        .unwrap();
    llm_watch.all_returned();
    // The read-ahead is best effort (a response that starts first makes a
    // queued one stale, as the first turn's may have been): wait for this
    // one, as the user's speech would.
    let before = llm.inner.prefills.lock().unwrap().len();
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    let deadline = Instant::now() + Duration::from_secs(10);
    while llm.inner.prefills.lock().unwrap().len() <= before {
        assert!(
            Instant::now() < deadline,
            "the history was never read ahead"
        );
        std::thread::yield_now();
    }
    pause_then_end(&s, 0.2, &llm_watch);
    until_done(&s);
    let read_ahead: Vec<(String, String)> = llm
        .inner
        .prefills
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .iter()
        .map(|m| (m.role.to_owned(), m.content.clone()))
        .collect();
    assert_eq!(
        read_ahead,
        [
            ("system".to_owned(), "Sys.".to_owned()),
            ("user".to_owned(), "Never mind.".to_owned())
        ]
    );
    let asked = llm.last_chat();
    assert_eq!(asked[..read_ahead.len()], read_ahead[..], "{asked:?}");
    assert_eq!(asked.last().unwrap().1, "level 20");
}

/// A TTS that records the text of every synthesis.
struct Recording(ScriptedTts, Arc<std::sync::Mutex<Vec<String>>>);
impl speech_to_speech::engine::TtsBackend for Recording {
    fn synthesize(
        &self,
        request: &speech_to_speech::engine::backend::TtsRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
        emit: &mut dyn FnMut(speech_to_speech::engine::backend::TtsChunk),
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        self.1.lock().unwrap().push(request.text.clone());
        self.0.synthesize(request, cancel, emit)
    }
}

#[test]
fn a_long_first_sentence_goes_to_tts_in_two_parts() {
    let said = "the capital of France is a beautiful old city";
    let reply = format!("You said: {said}. That is all I know.");
    for (max_words, want) in [
        (
            speech_to_speech::engine::segmenter::DEFAULT_FIRST_MAX_WORDS,
            vec![
                "You said: the capital of France",
                "is a beautiful old city.",
                "That is all I know.",
            ],
        ),
        (
            0,
            vec![
                "You said: the capital of France is a beautiful old city.",
                "That is all I know.",
            ],
        ),
    ] {
        let texts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let e = Engine::new(
            Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
            Arc::new(ScriptedLlm::default()),
            Arc::new(Recording(ScriptedTts::default(), Arc::clone(&texts))),
            EngineConfig {
                first_clause_max_words: max_words,
                ..EngineConfig::default()
            },
        )
        .unwrap();
        let s = e.create_session(config("")).unwrap();
        s.add_item(user_text("item_q", said), None).unwrap();
        s.create_response(ResponseOptions::default()).unwrap();
        let ev = until_done(&s);
        assert_eq!(done_status(&ev), (ResponseStatus::Completed, None));
        // The client hears and reads the whole answer either way.
        assert_eq!(transcript(&ev), reply);
        assert_eq!(
            *texts.lock().unwrap(),
            want,
            "first_clause_max_words {max_words}"
        );
    }
}
