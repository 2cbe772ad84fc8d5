//! Smart Turn v3 from Rust: verdicts on real audio, and the policy fed by the model.
//!
//! The model comes from `S2S_TURN_MODEL`, else from the `pipecat-ai` package
//! that `.ci/setup` installs into `.venv`; ONNX Runtime likewise from
//! `ORT_DYLIB_PATH`, else the `onnxruntime` wheel. Without them these tests
//! fail: run `.ci/setup`.

mod common;

use std::path::Path;

use speech_to_speech::vad::{
    Action, CommitReason, EndOfTurnConfig, EndOfTurnPolicy, SmartTurn, VadError, init_onnxruntime,
};

fn model() -> SmartTurn {
    let lib = common::onnxruntime_library()
        .expect("no libonnxruntime: run .ci/setup (pip install onnxruntime) or set ORT_DYLIB_PATH");
    init_onnxruntime(&lib).unwrap();
    let path = common::smart_turn_model().expect(
        "no smart-turn-v3.2-cpu.onnx: run .ci/setup (pip install --no-deps pipecat-ai) \
         or set S2S_TURN_MODEL",
    );
    SmartTurn::load(&path, 1).unwrap()
}

fn audio(name: &str) -> Vec<f32> {
    common::shared_audio(name)
        .unwrap_or_else(|| panic!("../shared/audio/{name} is missing beside the repository"))
}

/// `speech` followed by `ms` of silence, as the model sees a pause.
fn then_silence(speech: &[f32], ms: usize) -> Vec<f32> {
    let mut out = speech.to_vec();
    out.resize(speech.len() + ms * 16, 0.0);
    out
}

#[test]
fn a_finished_question_is_complete_and_a_cut_sentence_is_not() {
    let mut model = model();
    // "Tell me a fun fact about the ocean." and a 200 ms pause.
    let question = model
        .predict(&then_silence(&audio("q_ocean_fact.wav"), 200))
        .unwrap();
    assert!(
        question.complete && question.probability > 0.9,
        "{question:?}"
    );
    // Kennedy cut mid-sentence ("... ask not what your country can do for
    // you, ask what you can"): a real speaker who has not finished.
    let jfk = audio("jfk.wav");
    let cut = model
        .predict(&then_silence(&jfk[..jfk.len() * 3 / 4], 200))
        .unwrap();
    assert!(!cut.complete && cut.probability < 0.2, "{cut:?}");
    // "Stop. Wait a second, let me ask something else." and the same cut
    // before "something else".
    let wait = audio("interrupt_wait.wav");
    let whole = model.predict(&then_silence(&wait, 200)).unwrap();
    let part = model
        .predict(&then_silence(&wait[..wait.len() * 3 / 4], 200))
        .unwrap();
    assert!(whole.complete, "{whole:?}");
    assert!(!part.complete, "{part:?}");
}

#[test]
fn features_or_audio_give_the_same_verdict() {
    let mut model = model();
    let speech = then_silence(&audio("q_book.wav"), 200);
    let mut features = vec![0.0; speech_to_speech::vad::mel::FEATURES_LEN];
    speech_to_speech::vad::LogMel::new()
        .compute(&speech, &mut features)
        .unwrap();
    let a = model.predict(&speech).unwrap();
    let b = model.predict_features(&features).unwrap();
    assert!((a.probability - b.probability).abs() < 1e-6, "{a:?} {b:?}");
    assert!(matches!(
        model.predict_features(&features[1..]),
        Err(VadError::InvalidInput(_))
    ));
}

#[test]
fn the_policy_with_the_model_commits_early_and_holds_a_cut() {
    let mut model = model();
    let mut decide = |policy: &mut EndOfTurnPolicy, speech: &[f32], pause_at: u64| {
        policy.speech();
        let now = pause_at + 200;
        let Action::Decide { decision } = policy.pause(pause_at, now) else {
            panic!("the model is asked at the soft end");
        };
        let verdict = model.predict(&then_silence(speech, 200)).unwrap();
        policy.verdict(decision, Some(verdict.probability), now + 60)
    };
    let question = audio("q_ocean_fact.wav");
    let end = (question.len() / 16) as u64;
    let mut policy = EndOfTurnPolicy::new(EndOfTurnConfig::default(), true).unwrap();
    // Committed 260 ms into the pause: before the 500 ms silence rule.
    assert_eq!(
        decide(&mut policy, &question, end),
        Action::Commit(CommitReason::Complete)
    );

    let jfk = audio("jfk.wav");
    let cut = &jfk[..jfk.len() * 3 / 4];
    let mut policy = EndOfTurnPolicy::new(EndOfTurnConfig::default(), true).unwrap();
    let pause_at = (cut.len() / 16) as u64;
    assert_eq!(decide(&mut policy, cut, pause_at), Action::Wait);
    // 700 ms of pause: the silence rule would have ended the turn; this holds.
    assert_eq!(policy.tick(pause_at + 700), Action::Wait);
    // Kennedy goes on: the same turn continues.
    assert!(policy.speech());
    assert!(policy.in_turn());
}

#[test]
fn a_missing_model_file_names_the_install_line() {
    let lib = common::onnxruntime_library().expect("no libonnxruntime: run .ci/setup");
    init_onnxruntime(&lib).unwrap();
    let err = SmartTurn::load(Path::new("/nonexistent/smart-turn.onnx"), 1).unwrap_err();
    assert!(matches!(err, VadError::TurnModelNotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("pip install --no-deps \"pipecat-ai"),
        "{message}"
    );
    assert!(message.contains("--turn_model_path"), "{message}");
    // A file that is not the model.
    let not_it = common::env_or_venv("S2S_VAD_MODEL", "silero_vad/data", |n| {
        n == "silero_vad.onnx"
    })
    .expect("no silero_vad.onnx: run .ci/setup");
    let err = SmartTurn::load(&not_it, 1).unwrap_err();
    assert!(
        matches!(&err, VadError::Model(m) if m.contains("not a Smart Turn v3 model")),
        "{err:?}"
    );
    assert!(matches!(
        SmartTurn::load(Path::new("/nonexistent"), 0),
        Err(VadError::InvalidConfig(_))
    ));
}
