use serde_json::json;

use super::*;
use crate::engine::SessionConfig;
use crate::engine::conversation::{Item, ItemKind, ItemStatus};
use crate::engine::events::EngineEvent;

fn ids() -> impl FnMut(&str) -> String {
    let mut n = 0;
    move |p: &str| {
        n += 1;
        format!("{p}_{n}")
    }
}

#[test]
fn defaults_match_the_protocol() {
    let s = SessionState::new("sess_1", "gpt-realtime");
    let v = s.to_json(Dialect::Ga);
    assert_eq!(v["type"], "realtime");
    assert_eq!(
        v["audio"]["input"]["format"],
        json!({"type": "audio/pcm", "rate": 24000})
    );
    assert_eq!(v["audio"]["input"]["turn_detection"]["type"], "server_vad");
    assert_eq!(
        v["audio"]["input"]["turn_detection"]["silence_duration_ms"],
        500
    );
    let b = s.to_json(Dialect::Beta);
    assert_eq!(b["input_audio_format"], "pcm16");
    assert_eq!(b["turn_detection"]["prefix_padding_ms"], 300);
}

#[test]
fn session_update_is_partial_and_all_or_nothing() {
    let mut s = SessionState::new("sess_1", "m");
    s.update(
        Dialect::Ga,
        &json!({"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcmu"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}}),
    )
    .unwrap();
    assert_eq!(s.input_format, AudioFormat::Pcmu);
    assert_eq!(s.output_format, AudioFormat::Pcm(24_000));
    let before = s.clone();
    let err = s
        .update(
            Dialect::Ga,
            &json!({"instructions": "x", "audio": {"output": {"speed": 9}}}),
        )
        .unwrap_err();
    assert_eq!(err.param.as_deref(), Some("session.audio.output.speed"));
    assert_eq!(s, before);
    let mut c = SessionConfig::default();
    s.apply_to(&mut c);
    assert_eq!(c.input_rate, 8_000);
    assert!((c.vad.min_silence_ms - 300.0).abs() < 1e-9);
    s.update(
        Dialect::Ga,
        &json!({"audio": {"input": {"turn_detection": null}}}),
    )
    .unwrap();
    s.apply_to(&mut c);
    assert!(!c.turn_detection);
}

#[test]
fn client_events_parse_and_errors_echo_the_event_id() {
    let mut new_id = ids();
    let (id, ev) = parse_client_event(
        r#"{"type":"input_audio_buffer.append","event_id":"e1","audio":"AAAA"}"#,
        Dialect::Ga,
        &mut new_id,
    )
    .unwrap();
    assert_eq!(id.as_deref(), Some("e1"));
    assert_eq!(ev, ClientEvent::Append(vec![0, 0, 0]));
    for (text, code) in [
        ("not json", "invalid_json"),
        (r#"{"type":"nope","event_id":"e2"}"#, "invalid_event"),
        (
            r#"{"type":"input_audio_buffer.append","event_id":"e2","audio":"%%"}"#,
            "invalid_base64",
        ),
        (
            r#"{"type":"conversation.item.truncate","event_id":"e2","item_id":"x"}"#,
            "missing_required_parameter",
        ),
        (
            r#"{"type":"response.create","event_id":"e2","response":{"conversation":"x"}}"#,
            "invalid_value",
        ),
    ] {
        let (eid, err) = parse_client_event(text, Dialect::Ga, &mut new_id).unwrap_err();
        assert_eq!(err.code, code, "{text}");
        if code != "invalid_json" {
            assert_eq!(eid.as_deref(), Some("e2"));
        }
    }
}

#[test]
fn encoder_names_follow_the_dialect() {
    let s = SessionState::new("sess_1", "m");
    for (dialect, name, ctype) in [
        (Dialect::Ga, "response.output_audio.delta", "output_audio"),
        (Dialect::Beta, "response.audio.delta", "audio"),
    ] {
        let mut enc = Encoder::new(dialect, &s);
        let mut out = Vec::new();
        enc.engine_event(
            EngineEvent::AudioDelta {
                response_id: "r".into(),
                item_id: "i".into(),
                output_index: 0,
                samples: vec![0.0; 240],
            },
            &mut out,
        );
        assert_eq!(out[0]["type"], name);
        assert_eq!(out[0]["content_index"], 0);
        assert!(out[0]["event_id"].as_str().unwrap().starts_with("event_"));
        let item = Item {
            id: "i".into(),
            kind: ItemKind::Message {
                role: crate::engine::conversation::Role::Assistant,
                content: vec![crate::engine::conversation::Content::OutputAudio {
                    transcript: "hi".into(),
                    duration_ms: 1.0,
                    clauses: Vec::new(),
                }],
            },
            status: ItemStatus::Completed,
        };
        assert_eq!(enc.item(&item)["content"][0]["type"], ctype);
    }
}
