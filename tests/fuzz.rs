//! Property-based fuzzing on stable Rust (proptest): the client-event parser
//! and dispatcher (every event type, both dialects, fields mutated to any JSON
//! type), the audio decoders (PCM16 at odd lengths, G.711, base64), and raw
//! WebSocket frames sent to a live server. A panic, a hang (each case runs
//! under a deadline) or an unbounded answer fails the case; a crash found is
//! kept below as a regression test.
//!
//! CI runs a bounded number of cases (`S2S_FUZZ_CASES`, default below);
//! `benches/fuzz.sh MINUTES` runs these targets with fresh seeds for longer.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::ws::recv;
use futures_util::SinkExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use speech_to_speech::engine::scripted::{ScriptedLlm, ScriptedStt, ScriptedTts};
use speech_to_speech::engine::{Engine, EngineConfig};
use speech_to_speech::protocol::{
    AudioFormat, Dialect, OpenOptions, RealtimeSession, SessionDefaults, parse_client_event,
};
use speech_to_speech::transport::{RealtimeServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Cases per target: `S2S_FUZZ_CASES`, else `default`.
fn runner(default: u32) -> TestRunner {
    let cases = std::env::var("S2S_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Inputs a target tried (printed for `benches/fuzz.sh`, which adds them up).
fn report(target: &str, inputs: &AtomicU64) {
    let n = inputs.load(Ordering::Relaxed);
    eprintln!("fuzz: {target}: {n} inputs");
}

const EVENT_TYPES: &[&str] = &[
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.delete",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
];

const FIELDS: &[&str] = &[
    "event_id",
    "session",
    "audio",
    "item",
    "previous_item_id",
    "item_id",
    "content_index",
    "audio_end_ms",
    "response",
];

const SESSION_FIELDS: &[&str] = &[
    "type",
    "instructions",
    "voice",
    "modalities",
    "output_modalities",
    "audio",
    "turn_detection",
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "tools",
    "tool_choice",
    "temperature",
    "max_response_output_tokens",
    "max_output_tokens",
    "tracing",
    "truncation",
    "include",
    "speed",
];

const ITEM_FIELDS: &[&str] = &[
    "id",
    "type",
    "role",
    "content",
    "call_id",
    "name",
    "arguments",
    "output",
    "status",
];

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::from)),
        ".{0,24}".prop_map(Value::String),
        prop::sample::select(EVENT_TYPES).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((".{0,10}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A value a client might plausibly send for some field: the right type
/// most of the time, with the protocol's enumerations.
fn plausible() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(
            &[
                "pcm16",
                "g711_ulaw",
                "g711_alaw",
                "audio/pcm",
                "audio/pcmu",
                "audio/pcma",
                "server_vad",
                "semantic_vad",
                "none",
                "auto",
                "required",
                "message",
                "function_call",
                "function_call_output",
                "user",
                "assistant",
                "system",
                "input_text",
                "input_audio",
                "text",
                "audio",
                "realtime",
                "transcription",
            ][..]
        )
        .prop_map(Value::from),
        prop::collection::vec(any::<u8>(), 0..600)
            .prop_map(|b| Value::from(base64::engine::general_purpose::STANDARD.encode(b))),
        (0u64..200_000).prop_map(Value::from),
        (-1.0f64..3.0).prop_map(Value::from),
        any_json(),
    ]
}

fn object(keys: &'static [&'static str], value: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop::collection::vec((prop::sample::select(keys), value), 0..7)
        .prop_map(|kv| {
            Value::Object(
                kv.into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<_, _>>(),
            )
        })
        .boxed()
}

/// A client event: a known or random `type`, known fields with plausible,
/// nested or arbitrary values.
fn client_event() -> impl Strategy<Value = Value> {
    let content = prop::collection::vec(
        object(
            &["type", "text", "audio", "transcript"],
            plausible().boxed(),
        ),
        0..3,
    )
    .prop_map(Value::Array);
    let item = object(
        ITEM_FIELDS,
        prop_oneof![4 => plausible(), 2 => content].boxed(),
    );
    let format = object(&["type", "rate"], plausible().boxed());
    let io = object(
        &[
            "format",
            "turn_detection",
            "transcription",
            "voice",
            "speed",
            "noise_reduction",
        ],
        prop_oneof![
            format,
            object(
                &[
                    "type",
                    "threshold",
                    "silence_duration_ms",
                    "prefix_padding_ms",
                    "create_response",
                    "interrupt_response",
                    "idle_timeout_ms",
                    "eagerness",
                    "model",
                    "language"
                ],
                plausible().boxed()
            ),
            plausible()
        ]
        .boxed(),
    );
    let audio = object(&["input", "output"], prop_oneof![io, plausible()].boxed());
    let session = object(
        SESSION_FIELDS,
        prop_oneof![2 => plausible(), 1 => audio].boxed(),
    );
    let response = object(
        &[
            "conversation",
            "input",
            "instructions",
            "modalities",
            "output_modalities",
            "tools",
            "tool_choice",
            "metadata",
            "max_output_tokens",
            "voice",
            "audio",
        ],
        plausible().boxed(),
    );
    let kind = prop_oneof![
        8 => prop::sample::select(EVENT_TYPES).prop_map(Value::from),
        1 => any_json(),
    ];
    let fields = object(
        FIELDS,
        prop_oneof![
            3 => plausible(),
            1 => session,
            1 => item,
            1 => response,
        ]
        .boxed(),
    );
    (kind, fields, prop::option::weighted(0.9, Just(()))).prop_map(|(kind, mut fields, typed)| {
        if typed.is_some()
            && let Value::Object(m) = &mut fields
        {
            m.insert("type".to_owned(), kind);
        }
        fields
    })
}

/// Valid events of every type, in both dialects' shapes.
fn templates() -> Vec<Value> {
    let audio = base64::engine::general_purpose::STANDARD.encode([0u8; 960]);
    vec![
        json!({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief.",
            "output_modalities": ["audio"], "tools": [{"type": "function", "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": "auto", "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 300,
            "create_response": true, "idle_timeout_ms": 5000}, "transcription": {"model": "whisper-1"}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy", "speed": 1.0}}}}),
        json!({"type": "session.update", "session": {"modalities": ["text", "audio"],
            "input_audio_format": "g711_alaw", "output_audio_format": "pcm16", "voice": "alloy",
            "turn_detection": {"type": "semantic_vad", "eagerness": "high"}, "temperature": 0.8,
            "max_response_output_tokens": "inf", "input_audio_transcription": {"model": "whisper-1"}}}),
        json!({"type": "transcription_session.update", "session": {"input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": "en"}}}),
        json!({"type": "input_audio_buffer.append", "audio": audio}),
        json!({"type": "input_audio_buffer.commit", "event_id": "e1"}),
        json!({"type": "input_audio_buffer.clear"}),
        json!({"type": "conversation.item.create", "previous_item_id": "root", "item": {"id": "item_a",
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}),
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
            "content": [{"type": "input_audio", "audio": audio}]}}),
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": "ok"}]}}),
        json!({"type": "conversation.item.create", "item": {"type": "function_call", "call_id": "c1",
            "name": "get_weather", "arguments": "{}"}}),
        json!({"type": "conversation.item.create", "item": {"type": "function_call_output",
            "call_id": "c1", "output": "{\"sky\": \"clear\"}"}}),
        json!({"type": "conversation.item.retrieve", "item_id": "item_a"}),
        json!({"type": "conversation.item.delete", "item_id": "item_a"}),
        json!({"type": "conversation.item.truncate", "item_id": "item_a", "content_index": 0,
            "audio_end_ms": 100}),
        json!({"type": "response.create", "response": {"instructions": "Answer.",
            "output_modalities": ["text"], "conversation": "none", "metadata": {"k": "v"},
            "input": [{"type": "item_reference", "id": "item_a"}, {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "why?"}]}], "max_output_tokens": 16,
            "tool_choice": "none"}}),
        json!({"type": "response.create"}),
        json!({"type": "response.cancel"}),
        json!({"type": "output_audio_buffer.clear"}),
    ]
}

/// Every JSON pointer into `v` below its root.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            out.push(p.clone());
            pointers(x, &p, out);
        }),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| {
            let p = format!("{at}/{i}");
            out.push(p.clone());
            pointers(x, &p, out);
        }),
        _ => {}
    }
}

/// A valid event with up to three fields replaced by any JSON or removed.
fn mutated_event() -> impl Strategy<Value = Value> {
    let edits = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            prop::option::weighted(0.8, any_json()),
        ),
        0..4,
    );
    (prop::sample::select(templates()), edits).prop_map(|(mut v, edits)| {
        for (at, with) in edits {
            let mut all = Vec::new();
            pointers(&v, "", &mut all);
            if all.is_empty() {
                break;
            }
            let p = at.get(&all).clone();
            let (parent, key) = p.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            match (v.pointer_mut(parent), with) {
                (Some(Value::Object(m)), Some(x)) => {
                    m.insert(key, x);
                }
                (Some(Value::Object(m)), None) => {
                    m.remove(&key);
                }
                (Some(Value::Array(a)), Some(x)) => a[key.parse::<usize>().unwrap()] = x,
                (Some(Value::Array(a)), None) => {
                    a.remove(key.parse::<usize>().unwrap());
                }
                _ => {}
            }
        }
        v
    })
}

/// A text frame: a client event, or text that is not one.
fn text_frame() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => client_event().prop_map(|v| v.to_string()),
        6 => mutated_event().prop_map(|v| v.to_string()),
        1 => ".{0,200}",
        1 => client_event().prop_flat_map(|v| {
            // A valid event cut anywhere: truncated JSON.
            let s = v.to_string();
            let n = s.len();
            (Just(s), 0..=n).prop_map(|(s, cut)| {
                let mut cut = cut;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s[..cut].to_owned()
            })
        }),
    ]
}

fn dialect() -> impl Strategy<Value = Dialect> {
    prop_oneof![Just(Dialect::Ga), Just(Dialect::Beta)]
}

fn engine() -> Arc<Engine> {
    Engine::new(
        Arc::new(ScriptedStt::new(vec!["hello".to_owned()], Duration::ZERO)),
        Arc::new(ScriptedLlm::default()),
        Arc::new(ScriptedTts::default()),
        EngineConfig {
            max_sessions: 8,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn open(engine: &Arc<Engine>, dialect: Dialect) -> RealtimeSession {
    RealtimeSession::open(
        engine,
        &SessionDefaults::default(),
        OpenOptions {
            dialect,
            model: "fuzz".to_owned(),
            timings: false,
            max_message_bytes: 64 * 1024,
            session: Vec::new(),
            media_rate: None,
        },
    )
    .map_err(|(ev, _)| ev)
    .unwrap()
    .0
}

/// Drain the session until `kind` arrives (the session still answers).
fn until(rt: &mut RealtimeSession, kind: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let mut out = Vec::new();
        rt.drain(&mut out, 256);
        let done = out.iter().any(|e| e["type"] == kind);
        seen.extend(out);
        if done {
            return seen;
        }
        assert!(Instant::now() < deadline, "no {kind} within 10 s: {seen:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every fuzzed session was released (within 10 s: a closed session's last
/// job may still be finishing).
fn no_session_left(engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.session_count() > 0 {
        assert!(Instant::now() < deadline, "sessions leaked");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check_wire_event(ev: &Value) {
    assert!(ev["type"].is_string(), "an event without a type: {ev}");
    if ev["type"] == "error" {
        let e = &ev["error"];
        assert!(e["type"].is_string() && e["message"].is_string(), "{ev}");
    }
}

#[test]
fn parser_never_panics_on_any_text() {
    let inputs = AtomicU64::new(0);
    let accepted = std::sync::Mutex::new(std::collections::BTreeSet::new());
    runner(2_000)
        .run(&(text_frame(), dialect()), |(text, dialect)| {
            inputs.fetch_add(1, Ordering::Relaxed);
            let mut n = 0;
            let mut new_id = |p: &str| {
                n += 1;
                format!("{p}_{n}")
            };
            match parse_client_event(&text, dialect, &mut new_id) {
                Ok(_) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    let kind = v["type"].as_str().unwrap_or_default().to_owned();
                    accepted.lock().unwrap().insert(kind);
                }
                Err((_, e)) => {
                    prop_assert!(!e.code.is_empty() && !e.message.is_empty());
                    let body = e.to_error_body(None);
                    prop_assert!(
                        body["type"].is_string() && body["message"].is_string(),
                        "{body}"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    // The generator reaches past the first checks: most event types were
    // also generated valid, not only refused.
    let accepted = accepted.into_inner().unwrap();
    eprintln!("fuzz: parser accepted {accepted:?}");
    if inputs.load(Ordering::Relaxed) >= 1_000 {
        assert!(accepted.len() >= 11, "only {accepted:?} ever parsed");
    }
    report("parser", &inputs);
}

#[test]
fn dispatcher_survives_any_event_sequence_and_keeps_answering() {
    let inputs = AtomicU64::new(0);
    let engine = engine();
    runner(300)
        .run(
            &(dialect(), prop::collection::vec(text_frame(), 1..12)),
            |(dialect, frames)| {
                let mut rt = open(&engine, dialect);
                for text in &frames {
                    inputs.fetch_add(1, Ordering::Relaxed);
                    let t0 = Instant::now();
                    rt.on_text(text);
                    prop_assert!(
                        t0.elapsed() < Duration::from_secs(2),
                        "on_text took {:?} on {text}",
                        t0.elapsed()
                    );
                    let mut out = Vec::new();
                    rt.drain(&mut out, 1024);
                    // One client event is answered in a bounded number of events.
                    prop_assert!(out.len() < 1024, "{} events for {text}", out.len());
                    out.iter().for_each(check_wire_event);
                }
                // The session still works: a clear is acknowledged.
                rt.on_text(r#"{"type":"input_audio_buffer.clear"}"#);
                until(&mut rt, "input_audio_buffer.cleared")
                    .iter()
                    .for_each(check_wire_event);
                rt.session().close();
                Ok(())
            },
        )
        .unwrap();
    no_session_left(&engine);
    report("dispatcher", &inputs);
}

#[test]
fn audio_decoders_take_any_bytes() {
    let inputs = AtomicU64::new(0);
    let format = prop_oneof![
        (8_000u32..=96_000).prop_map(AudioFormat::Pcm),
        Just(AudioFormat::Pcmu),
        Just(AudioFormat::Pcma),
    ];
    runner(2_000)
        .run(
            &(format, prop::collection::vec(any::<u8>(), 0..4_097)),
            |(format, bytes)| {
                inputs.fetch_add(1, Ordering::Relaxed);
                match (format, format.decode(&bytes)) {
                    (AudioFormat::Pcm(_), Ok(s)) => {
                        prop_assert!(bytes.len() % 2 == 0 && s.len() == bytes.len() / 2);
                    }
                    (AudioFormat::Pcm(_), Err(e)) => {
                        prop_assert!(bytes.len() % 2 == 1, "{e:?}");
                        prop_assert_eq!(e.code, "invalid_audio");
                    }
                    (_, Ok(s)) => prop_assert_eq!(s.len(), bytes.len()),
                    (_, Err(e)) => prop_assert!(false, "G.711 refused bytes: {e:?}"),
                }
                if let Ok(s) = format.decode(&bytes) {
                    prop_assert!(s.iter().all(|x| (-1.0..=1.0).contains(x)));
                    // Encoding back gives the same length on the wire.
                    let again = format.encode(&s);
                    prop_assert_eq!(again.len(), bytes.len());
                }
                Ok(())
            },
        )
        .unwrap();
    report("audio", &inputs);
}

#[test]
fn appends_of_any_audio_in_any_format_are_answered() {
    const FORMATS: &[&str] = &["pcm16", "g711_ulaw", "g711_alaw"];
    let inputs = AtomicU64::new(0);
    let engine = engine();
    runner(200)
        .run(
            &(
                prop::sample::select(FORMATS),
                prop::collection::vec(
                    prop_oneof![
                        prop::collection::vec(any::<u8>(), 0..3_001)
                            .prop_map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
                        // Not base64, or base64 without its padding.
                        ".{0,64}",
                        "[A-Za-z0-9+/]{1,63}",
                    ],
                    1..6,
                ),
            ),
            |(format, audios)| {
                let mut rt = open(&engine, Dialect::Beta);
                rt.on_text(
                    &json!({"type": "session.update", "session": {"input_audio_format": format,
                        "turn_detection": null}})
                    .to_string(),
                );
                for audio in &audios {
                    inputs.fetch_add(1, Ordering::Relaxed);
                    rt.on_text(
                        &json!({"type": "input_audio_buffer.append", "audio": audio}).to_string(),
                    );
                    let mut out = Vec::new();
                    rt.drain(&mut out, 1024);
                    out.iter().for_each(check_wire_event);
                }
                rt.on_text(r#"{"type":"input_audio_buffer.clear"}"#);
                until(&mut rt, "input_audio_buffer.cleared");
                rt.session().close();
                Ok(())
            },
        )
        .unwrap();
    report("appends", &inputs);
}

/// One WebSocket frame as bytes: any opcode, flags, mask, and a declared
/// length that may disagree with the payload (up to 2^63).
fn ws_frame() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        any::<bool>(),
        0u8..8,
        0u8..16,
        prop::option::weighted(0.9, any::<[u8; 4]>()),
        prop::collection::vec(any::<u8>(), 0..300),
        prop_oneof![
            4 => Just(None),
            1 => any::<u64>().prop_map(Some),
        ],
    )
        .prop_map(|(fin, rsv, opcode, mask, payload, declared)| {
            let mut f = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
            let len = declared.unwrap_or(payload.len() as u64);
            let m = if mask.is_some() { 0x80 } else { 0x00 };
            if len < 126 {
                f.push(m | len as u8);
            } else if len <= 0xFFFF {
                f.push(m | 0x7E);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                f.push(m | 0x7F);
                f.extend_from_slice(&len.to_be_bytes());
            }
            if let Some(key) = mask {
                f.extend_from_slice(&key);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            } else {
                f.extend(payload);
            }
            f
        });
    prop_oneof![
        6 => structured,
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn live_server_survives_any_websocket_frames() {
    let inputs = AtomicU64::new(0);
    let engine = engine();
    let mut server = RealtimeServer::new(
        Arc::clone(&engine),
        ServerConfig {
            port: 0,
            worker_threads: 2,
            max_message_bytes: 64 * 1024,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let port = server.start().unwrap().port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/v1/realtime");
    runner(150)
        .run(&prop::collection::vec(ws_frame(), 1..5), |frames| {
            inputs.fetch_add(frames.len() as u64, Ordering::Relaxed);
            rt.block_on(async {
                let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
                assert_eq!(recv(&mut ws).await.unwrap()["type"], "session.created");
                let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
                    unreachable!("a ws:// connection is plain TCP")
                };
                for f in &frames {
                    if tcp.write_all(f).await.is_err() {
                        break;
                    }
                }
                // The server answers or closes, within bounded time (no hang
                // waiting for a 2^63-byte frame to arrive).
                let _ = tcp.shutdown().await;
                let mut sink = vec![0u8; 64 * 1024];
                let ended = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        match tcp.read(&mut sink).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                })
                .await;
                assert!(
                    ended.is_ok(),
                    "the server kept the connection after {frames:?}"
                );
                // A fresh client is still served.
                let (mut ok, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
                assert_eq!(recv(&mut ok).await.unwrap()["type"], "session.created");
                ok.send(Message::Text(
                    r#"{"type":"input_audio_buffer.clear"}"#.into(),
                ))
                .await
                .unwrap();
                loop {
                    let ev = recv(&mut ok).await.expect("no answer after bad frames");
                    if ev["type"] == "input_audio_buffer.cleared" {
                        break;
                    }
                }
                ok.close(None).await.unwrap();
            });
            Ok(())
        })
        .unwrap();
    no_session_left(&engine);
    server.stop();
    report("websocket", &inputs);
}
