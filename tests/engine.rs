//! The engine with scripted backends: event order, barge-in, speculation,
//! tools, failures and many concurrent sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use speech_to_speech::engine::backend::{SttOptions, Tool};
use speech_to_speech::engine::conversation::{Content, Item, ItemKind, ItemStatus};
use speech_to_speech::engine::events::{EngineEvent, ResponseStatus, StopReason};
use speech_to_speech::engine::fake::{FakeLlm, FakeStt, FakeTts};
use speech_to_speech::engine::{
    Engine, EngineConfig, ResponseOptions, Session, SessionConfig, TurnInput,
};

fn engine(llm: FakeLlm, tts: FakeTts, config: EngineConfig) -> Arc<Engine> {
    Engine::new(
        Arc::new(FakeStt::new(Vec::new(), Duration::from_millis(5))),
        Arc::new(llm),
        Arc::new(tts),
        config,
    )
    .unwrap()
}

fn default_engine() -> Arc<Engine> {
    engine(
        FakeLlm::default(),
        FakeTts::default(),
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
    match e {
        EngineEvent::SpeechStarted { .. } => "speech_started",
        EngineEvent::SpeechStopped { .. } => "speech_stopped",
        EngineEvent::InputCommitted { .. } => "committed",
        EngineEvent::InputCleared => "cleared",
        EngineEvent::ItemAdded { .. } => "item_added",
        EngineEvent::ItemDone { .. } => "item_done",
        EngineEvent::ItemDeleted { .. } => "item_deleted",
        EngineEvent::ItemTruncated { .. } => "item_truncated",
        EngineEvent::InputTranscriptDelta { .. } => "transcript_delta",
        EngineEvent::InputTranscriptCompleted { .. } => "transcript_completed",
        EngineEvent::InputTranscriptFailed { .. } => "transcript_failed",
        EngineEvent::ResponseCreated { .. } => "response_created",
        EngineEvent::OutputItemAdded { .. } => "output_item_added",
        EngineEvent::ContentPartAdded { .. } => "content_part_added",
        EngineEvent::AudioDelta { .. } => "audio_delta",
        EngineEvent::TranscriptDelta { .. } => "audio_transcript_delta",
        EngineEvent::TextDelta { .. } => "text_delta",
        EngineEvent::ContentPartDone { .. } => "content_part_done",
        EngineEvent::FunctionCallArgumentsDelta { .. } => "args_delta",
        EngineEvent::FunctionCallArgumentsDone { .. } => "args_done",
        EngineEvent::OutputItemDone { .. } => "output_item_done",
        EngineEvent::ResponseDone { .. } => "response_done",
        EngineEvent::Timings { .. } => "timings",
        EngineEvent::Error { .. } => "error",
        _ => "other",
    }
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
            "committed",
            "item_added",
            "item_done",
            "transcript_delta",
            "transcript_completed",
            "response_created",
            "output_item_added",
            "item_added",
            "content_part_added",
            "audio_transcript_delta",
            "audio_delta",
            "audio_transcript_delta",
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

#[test]
fn speech_start_prefills_the_history_the_answer_begins_with() {
    let llm = Arc::new(FakeLlm::default());
    let e = Engine::new(
        Arc::new(FakeStt::new(Vec::new(), Duration::from_millis(5))),
        Arc::clone(&llm) as Arc<dyn speech_to_speech::engine::LlmBackend>,
        Arc::new(FakeTts::default()),
        EngineConfig::default(),
    )
    .unwrap();
    let s = e
        .create_session(SessionConfig {
            instructions: "Be brief.".into(),
            chat_size: 2,
            ..SessionConfig::default()
        })
        .unwrap();
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
}

/// Records when the LLM emits text and when each synthesis starts and first yields.
#[derive(Default)]
struct Clock {
    tokens: std::sync::Mutex<Vec<Instant>>,
    synth: std::sync::Mutex<Vec<(Instant, Option<Instant>)>>,
}

struct TimedLlm(FakeLlm, Arc<Clock>);
struct TimedTts(FakeTts, Arc<Clock>);

impl speech_to_speech::engine::LlmBackend for TimedLlm {
    fn generate(
        &self,
        request: &speech_to_speech::engine::backend::LlmRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
        emit: &mut dyn FnMut(speech_to_speech::engine::backend::LlmOutput),
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        self.0.generate(request, cancel, &mut |o| {
            self.1.tokens.lock().unwrap().push(Instant::now());
            emit(o);
        })
    }
}

impl speech_to_speech::engine::TtsBackend for TimedTts {
    fn synthesize(
        &self,
        request: &speech_to_speech::engine::backend::TtsRequest,
        cancel: &speech_to_speech::engine::backend::Cancel,
        emit: &mut dyn FnMut(speech_to_speech::engine::backend::TtsChunk),
    ) -> Result<(), speech_to_speech::engine::backend::StageError> {
        let i = {
            let mut synth = self.1.synth.lock().unwrap();
            synth.push((Instant::now(), None));
            synth.len() - 1
        };
        self.0.synthesize(request, cancel, &mut |c| {
            self.1.synth.lock().unwrap()[i]
                .1
                .get_or_insert_with(Instant::now);
            emit(c);
        })
    }
}

#[test]
fn the_llm_waits_while_the_first_clause_is_synthesised() {
    for priority in [true, false] {
        let clock = Arc::new(Clock::default());
        let e = Engine::new(
            Arc::new(FakeStt::new(Vec::new(), Duration::from_millis(5))),
            Arc::new(TimedLlm(
                FakeLlm {
                    per_token: Duration::from_millis(5),
                    ..FakeLlm::default()
                },
                Arc::clone(&clock),
            )),
            Arc::new(TimedTts(
                FakeTts {
                    per_word: Duration::from_millis(60),
                    ..FakeTts::default()
                },
                Arc::clone(&clock),
            )),
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
        let (start, first) = clock.synth.lock().unwrap()[0];
        let first = first.unwrap();
        let during = clock
            .tokens
            .lock()
            .unwrap()
            .iter()
            .filter(|&&t| t > start && t < first)
            .count();
        // "You said: level 42." goes to TTS; "That is all I know." is still
        // to come: five tokens in 60 ms unless the LLM waits (it looks at
        // the gate between tokens, so one already under way may finish).
        if priority {
            assert!(during <= 1, "{during} tokens during the first synthesis");
        } else {
            assert!(during >= 3, "{during} tokens during the first synthesis");
        }
    }
}

#[test]
fn barge_in_cancels_and_the_next_turn_works() {
    let e = engine(
        FakeLlm {
            per_token: Duration::from_millis(30),
            ..FakeLlm::default()
        },
        FakeTts::default(),
        EngineConfig::default(),
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
    });
    let ev = until_done(&s);
    assert_eq!(done_status(&ev).0, ResponseStatus::Completed);
    assert_eq!(transcript(&ev), "You said: level 20. That is all I know.");
    // Nothing of the cancelled response arrives afterwards.
    std::thread::sleep(Duration::from_millis(400));
    while let Some(ev) = s.try_next_event() {
        assert!(matches!(ev, EngineEvent::Timings { .. }), "{ev:?}");
    }
}

#[test]
fn speculation_is_held_until_commit_and_dropped_on_resumed_speech() {
    let e = default_engine();
    let s = e.create_session(SessionConfig::default()).unwrap();
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    s.turn_event(TurnInput::SoftEnd {
        audio_ms: 900,
        audio: speech(0.3),
    });
    // The speculative answer is computed but nothing is sent before commit.
    std::thread::sleep(Duration::from_millis(300));
    let early: Vec<_> = std::iter::from_fn(|| s.try_next_event()).collect();
    assert_eq!(names(&early), ["speech_started"]);
    // Resumed speech discards it; a new soft end and the commit answer.
    s.turn_event(TurnInput::SpeechResumed { audio_ms: 1000 });
    s.turn_event(TurnInput::SoftEnd {
        audio_ms: 1500,
        audio: speech(0.5),
    });
    std::thread::sleep(Duration::from_millis(300));
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 1800,
        audio: speech(0.6),
    });
    let ev = until_done(&s);
    let n = names(&ev);
    assert_eq!(
        &n[..4],
        ["speech_stopped", "committed", "item_added", "item_done"]
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
            FakeLlm::default(),
            FakeTts::default(),
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
        FakeLlm {
            fail: Some("model exploded".into()),
            ..FakeLlm::default()
        },
        FakeTts::default(),
        EngineConfig::default(),
    );
    let s = e.create_session(SessionConfig::default()).unwrap();
    s.turn_event(TurnInput::SpeechStarted { audio_start_ms: 0 });
    s.turn_event(TurnInput::SpeechStopped {
        audio_end_ms: 1000,
        audio: speech(0.1),
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
    s.add_item(
        Item {
            id: "item_q".into(),
            kind: ItemKind::Message {
                role: speech_to_speech::engine::conversation::Role::User,
                content: vec![Content::InputText("What is the weather?".into())],
            },
            status: ItemStatus::Completed,
        },
        None,
    )
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
        FakeLlm::default(),
        FakeTts::default(),
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
