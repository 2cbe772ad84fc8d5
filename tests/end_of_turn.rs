//! The learned end of turn inside a session: real audio through the real
//! Silero VAD, a scripted end-of-turn model whose verdicts the test chooses.
//!
//! Silence is fed in real time (20 ms chunks, 20 ms apart), as a microphone
//! or a Realtime client sends it: the policy's clock is the audio, and a
//! scripted verdict (microseconds) is back long before the next chunk. Fed
//! all at once, the silence rule would win every race with the model, which
//! is the policy's promise ("never wait longer than without a model"), not
//! what these tests are about.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use speech_to_speech::engine::backend::{StageError, TurnModel};
use speech_to_speech::engine::scripted::{ScriptedLlm, ScriptedStt, ScriptedTts};
use speech_to_speech::engine::{Engine, EngineConfig, EngineEvent, Session, SessionConfig};
use speech_to_speech::vad::{EndOfTurnConfig, SileroVad, SileroVadOptions};

/// Answers with the probability the test sets; `None` fails.
struct ScriptedTurnModel {
    answer: Mutex<Option<f32>>,
    calls: Mutex<Vec<usize>>,
}

impl ScriptedTurnModel {
    fn answer(&self, p: Option<f32>) {
        *self.answer.lock().unwrap() = p;
    }
}

impl TurnModel for ScriptedTurnModel {
    fn predict(&self, audio: &[f32]) -> Result<f32, StageError> {
        self.calls.lock().unwrap().push(audio.len());
        (*self.answer.lock().unwrap()).ok_or_else(|| StageError::Backend {
            stage: "turn",
            message: "scripted failure".to_owned(),
        })
    }
}

fn vad() -> Arc<Mutex<SileroVad>> {
    let path = common::env_or_venv("S2S_VAD_MODEL", "silero_vad/data", |n| {
        n == "silero_vad.onnx"
    })
    .expect("no silero_vad.onnx: run `bash .ci/setup --test` or set S2S_VAD_MODEL");
    Arc::new(Mutex::new(
        SileroVad::new(&path, &SileroVadOptions::default()).unwrap(),
    ))
}

fn session(answer: Option<f32>) -> (Session, Arc<ScriptedTurnModel>) {
    session_hearing(answer, None)
}

/// A session whose STT hears `transcript` (with speculation, so the words
/// are known at the soft end); `None`: no speculation, the audio level.
fn session_hearing(
    answer: Option<f32>,
    transcript: Option<&str>,
) -> (Session, Arc<ScriptedTurnModel>) {
    let script = transcript.map(|t| vec![t.to_owned()]).unwrap_or_default();
    let model = Arc::new(ScriptedTurnModel {
        answer: Mutex::new(answer),
        calls: Mutex::new(Vec::new()),
    });
    let engine = Engine::new(
        Arc::new(ScriptedStt::new(script, Duration::ZERO)),
        Arc::new(ScriptedLlm::default()),
        Arc::new(ScriptedTts::default()),
        EngineConfig::default(),
    )
    .unwrap()
    .with_vad(vad())
    .with_turn_model(Arc::clone(&model) as Arc<dyn TurnModel>)
    .unwrap();
    let s = engine
        .create_session(SessionConfig {
            input_rate: 16_000,
            end_of_turn: Some(EndOfTurnConfig::default()),
            speculation: transcript.is_some(),
            ..SessionConfig::default()
        })
        .unwrap();
    (s, model)
}

fn speech(name: &str) -> Vec<f32> {
    common::shared_audio(name).expect("shared test audio")
}

/// `ms` of silence, fed in real time.
fn silence(s: &Session, ms: usize) {
    let chunk = vec![0.0; 20 * 16];
    for _ in 0..ms / 20 {
        s.feed_audio(&chunk).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The turn events so far (waiting a moment for the model's worker).
fn events(s: &Session, wait: Duration) -> Vec<EngineEvent> {
    let mut out = Vec::new();
    while let Some(e) = s.next_event(Some(wait)) {
        out.push(e);
    }
    out
}

fn stopped(events: &[EngineEvent]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::SpeechStopped {
                item_id,
                audio_end_ms,
            } => Some((item_id.clone(), *audio_end_ms)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_complete_turn_ends_before_the_silence_rule_would() {
    let (s, model) = session(Some(0.9));
    silence(&s, 300);
    // jfk.wav ends on its last word (the other clips end in silence).
    s.feed_audio(&speech("jfk.wav")).unwrap();
    // 300 ms of silence: the soft end (200 ms) asks the model, which says
    // complete; 200 ms of silence is enough then. The silence rule would
    // need 500 ms: no more audio comes, so only the model can end the turn.
    silence(&s, 300);
    let ev = events(&s, Duration::from_millis(500));
    let ends = stopped(&ev);
    assert_eq!(
        ends.len(),
        1,
        "{:?}",
        ev.iter().map(EngineEvent::name).collect::<Vec<_>>()
    );
    // The last decision saw the whole turn: the speech and its padding
    // (pauses inside the speech, fed at once, asked too, too late to count).
    let calls = model.calls.lock().unwrap();
    assert!(*calls.last().unwrap() > 10 * 16_000, "{calls:?}");
    assert!(
        ev.iter()
            .any(|e| matches!(e, EngineEvent::InputCommitted { .. }))
    );
}

#[test]
fn an_unfinished_turn_waits_past_the_silence_rule_and_goes_on() {
    // The first pause is judged unfinished (twice: at the soft end and at the
    // recheck 600 ms later); after more speech the turn is complete.
    let (s, model) = session(Some(0.05));
    silence(&s, 300);
    let words = speech("jfk.wav");
    let (first, rest) = words.split_at(words.len() / 2);
    s.feed_audio(first).unwrap();
    // 1 s of silence: twice the silence rule, and no end of turn.
    silence(&s, 1000);
    let ev = events(&s, Duration::from_millis(500));
    assert!(
        stopped(&ev).is_empty(),
        "{:?}",
        ev.iter().map(EngineEvent::name).collect::<Vec<_>>()
    );
    let started: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            EngineEvent::SpeechStarted { item_id, .. } => Some(item_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1);
    // The speaker goes on: the same turn, then the end.
    let asked = model.calls.lock().unwrap().len();
    assert!(asked >= 2, "asked {asked} times");
    model.answer(Some(0.9));
    s.feed_audio(rest).unwrap();
    silence(&s, 300);
    let ev = events(&s, Duration::from_millis(500));
    assert!(
        !ev.iter()
            .any(|e| matches!(e, EngineEvent::SpeechStarted { .. })),
        "a new turn started"
    );
    let ends = stopped(&ev);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].0, started[0], "the turn is the one that began");
    assert!(model.calls.lock().unwrap().len() > asked);
}

fn ends_by_the_silence_rule(answer: Option<f32>) {
    let (s, _) = session(answer);
    silence(&s, 300);
    s.feed_audio(&speech("jfk.wav")).unwrap();
    silence(&s, 300);
    assert!(stopped(&events(&s, Duration::from_millis(300))).is_empty());
    silence(&s, 300);
    assert_eq!(stopped(&events(&s, Duration::from_millis(500))).len(), 1);
}

#[test]
fn an_unsure_verdict_leaves_the_silence_rule() {
    // 0.3 is neither complete nor unfinished: 300 ms of silence is not enough,
    // 500 ms is.
    ends_by_the_silence_rule(Some(0.3));
}

#[test]
fn a_failed_model_leaves_the_silence_rule() {
    ends_by_the_silence_rule(None);
}

#[test]
fn words_that_stop_mid_phrase_hold_a_turn_the_model_ended() {
    // The model calls the pause complete, but the words end on "the": the
    // turn waits (1.5 s from the end of speech), then ends on its own.
    let (s, _) = session_hearing(Some(0.9), Some("I want to go to the."));
    silence(&s, 300);
    s.feed_audio(&speech("jfk.wav")).unwrap();
    silence(&s, 700);
    let ev = events(&s, Duration::from_millis(300));
    assert!(
        stopped(&ev).is_empty(),
        "{:?}",
        ev.iter().map(EngineEvent::name).collect::<Vec<_>>()
    );
    silence(&s, 1200);
    let ev = events(&s, Duration::from_millis(500));
    assert_eq!(stopped(&ev).len(), 1);

    // Words that end a sentence leave the model's verdict alone.
    let (s, _) = session_hearing(Some(0.9), Some("ask what you can do for your country."));
    silence(&s, 300);
    s.feed_audio(&speech("jfk.wav")).unwrap();
    silence(&s, 300);
    assert_eq!(stopped(&events(&s, Duration::from_millis(500))).len(), 1);
}
