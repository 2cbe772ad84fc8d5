//! The realtime server end to end over a real socket, without Python: fake
//! backends, no VAD (push-to-talk), a raw WebSocket client.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::ws::{Ws, recv};
use futures_util::SinkExt;
use serde_json::{Value, json};
use speech_to_speech::engine::scripted::{ScriptedLlm, ScriptedStt, ScriptedTts};
use speech_to_speech::engine::{Engine, EngineConfig};
use speech_to_speech::transport::{RealtimeServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn server(max_sessions: usize, api_key: Option<&str>) -> RealtimeServer {
    let engine = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
        Arc::new(ScriptedLlm::default()),
        Arc::new(ScriptedTts::default()),
        EngineConfig {
            max_sessions,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let mut s = RealtimeServer::new(
        engine,
        ServerConfig {
            port: 0,
            api_key: api_key.map(str::to_owned),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    s.start().unwrap();
    s
}

async fn connect(port: u16, beta: bool) -> Ws {
    let mut req = format!("ws://127.0.0.1:{port}/v1/realtime?model=m")
        .into_client_request()
        .unwrap();
    if beta {
        req.headers_mut()
            .insert("OpenAI-Beta", "realtime=v1".parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn until(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let ev = recv(ws).await.expect("connection ended");
        assert!(ev["event_id"].as_str().unwrap().starts_with("event_"));
        if ev["type"] == kind {
            return ev;
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_talk_text_and_audio_turns() {
    let srv = server(4, None);
    let port = srv.local_addr().unwrap().port();
    let mut ws = connect(port, false).await;
    let created = until(&mut ws, "session.created").await;
    // No VAD in this engine: the session starts in push-to-talk.
    assert!(created["session"]["audio"]["input"]["turn_detection"].is_null());

    // 500 ms of a 0.3 tone as PCM16 at 24 kHz, then commit and respond.
    let pcm: Vec<u8> = (0..12_000)
        .flat_map(|i| {
            let x = if (i / 20) % 2 == 0 { 9830i16 } else { -9830 };
            x.to_le_bytes()
        })
        .collect();
    let audio = base64::engine::general_purpose::STANDARD.encode(&pcm);
    send(
        &mut ws,
        json!({"type": "input_audio_buffer.append", "audio": audio}),
    )
    .await;
    send(&mut ws, json!({"type": "input_audio_buffer.commit"})).await;
    let committed = until(&mut ws, "input_audio_buffer.committed").await;
    send(&mut ws, json!({"type": "response.create"})).await;
    let done = until(&mut ws, "response.done").await;
    assert_eq!(done["response"]["status"], "completed");
    let transcript = done["response"]["output"][0]["content"][0]["transcript"]
        .as_str()
        .unwrap();
    // The fake STT hears the peak level (0.3, give or take the resampler's ripple).
    assert!(
        transcript.starts_with("You said: level 3") && transcript.ends_with("That is all I know."),
        "{transcript}"
    );
    assert!(committed["item_id"].as_str().unwrap().starts_with("item_"));

    // A malformed event is answered and the session goes on.
    ws.send(Message::Text("{oops".into())).await.unwrap();
    let err = until(&mut ws, "error").await;
    assert_eq!(err["error"]["code"], "invalid_json");
    send(
        &mut ws,
        json!({"type": "response.create", "event_id": "e1",
        "response": {"output_modalities": ["text"]}}),
    )
    .await;
    let done = until(&mut ws, "response.done").await;
    assert_eq!(
        done["response"]["output"][0]["content"][0]["type"],
        "output_text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beta_names_limit_auth_and_health() {
    let srv = server(1, Some("k"));
    let port = srv.local_addr().unwrap().port();
    // Refused before the upgrade without the key.
    let refused =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/realtime")).await;
    assert!(refused.unwrap_err().to_string().contains("401"));

    let mut req = format!("ws://127.0.0.1:{port}/realtime")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "realtime, openai-insecure-api-key.k".parse().unwrap(),
    );
    req.headers_mut()
        .insert("OpenAI-Beta", "realtime=v1".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "realtime");
    let created = until(&mut ws, "session.created").await;
    assert_eq!(created["session"]["input_audio_format"], "pcm16");
    send(
        &mut ws,
        json!({"type": "conversation.item.create", "item": {"type": "message",
        "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}),
    )
    .await;
    until(&mut ws, "conversation.item.created").await;
    send(&mut ws, json!({"type": "response.create"})).await;
    until(&mut ws, "response.audio.delta").await;
    until(&mut ws, "response.done").await;

    // One session is the limit: the next one gets an error and a close.
    let mut req = format!("ws://127.0.0.1:{port}/v1/realtime")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", "Bearer k".parse().unwrap());
    let (mut second, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let err = recv(&mut second).await.unwrap();
    assert_eq!(err["error"]["code"], "session_limit_reached");
    assert!(recv(&mut second).await.is_none());

    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tcp.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"sessions\":1"), "{body}");
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_queue_overflow_closes_with_an_error() {
    // A client that stops reading for a second while a long answer streams:
    // the socket fills, the writer blocks, and the 16 events the session may
    // queue run out. The session must be closed with a clear error (once
    // the client reads again) rather than grow or lose events silently.
    let engine = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
        Arc::new(ScriptedLlm::default()),
        Arc::new(ScriptedTts::default()),
        EngineConfig {
            session_event_capacity: 16,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let mut srv = RealtimeServer::new(
        engine,
        ServerConfig {
            port: 0,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let port = srv.start().unwrap().port();
    let mut ws = connect(port, false).await;
    until(&mut ws, "session.created").await;
    // The fake LLM repeats the question: 3000 words, 300 s of fake speech,
    // about 19 MB of audio deltas.
    let text = "word ".repeat(3000);
    send(
        &mut ws,
        json!({"type": "conversation.item.create", "item": {"type": "message",
        "role": "user", "content": [{"type": "input_text", "text": text}]}}),
    )
    .await;
    send(&mut ws, json!({"type": "response.create"})).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut saw_error = false;
    while let Some(ev) = recv(&mut ws).await {
        if ev["type"] == "error" && ev["error"]["code"] == "event_queue_overflow" {
            saw_error = true;
        }
    }
    assert!(saw_error);
    srv.stop();
}
