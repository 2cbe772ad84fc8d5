//! The seam every transport sits on: a plain-WebSocket transport written on
//! the engine's session API in a few dozen lines, then used by a client.
//!
//! The skeleton of `--mode websocket`: binary frames of 16 kHz int16 mono PCM
//! in (push-to-talk here: a `commit` text frame ends the turn), the answer's
//! audio out as binary frames, and the engine events as small JSON text
//! frames named by `EngineEvent::name`. Nothing in it knows the Realtime
//! protocol or reaches into the engine: it only moves bytes to and from a
//! `Session`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use speech_to_speech::audio::pcm::{f32_to_pcm16, pcm16_to_f32};
use speech_to_speech::engine::backend::SttOptions;
use speech_to_speech::engine::scripted::{ScriptedLlm, ScriptedStt, ScriptedTts};
use speech_to_speech::engine::{
    Engine, EngineConfig, EngineEvent, ResponseOptions, Session, SessionConfig,
};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as M;

/// The whole transport: one session per connection.
async fn plain_websocket(State(engine): State<Arc<Engine>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| async move {
        let config = SessionConfig {
            input_rate: 16_000,
            output_rate: 16_000,
            turn_detection: false,
            transcription: Some(SttOptions::default()),
            ..SessionConfig::default()
        };
        if let Ok(session) = engine.create_session(config) {
            serve(socket, session).await;
        }
    })
}

async fn serve(mut socket: WebSocket, session: Session) {
    let wake = Arc::new(Notify::new());
    let waker = Arc::clone(&wake);
    session.set_notify(Box::new(move || waker.notify_one()));
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(pcm))) => match pcm16_to_f32(&pcm) {
                    Ok(samples) => { let _ = session.feed_audio(&samples); }
                    Err(e) => { let _ = socket.send(error(&e.to_string())).await; }
                },
                Some(Ok(Message::Text(t))) if t.as_str() == "commit" => {
                    let _ = session.commit_buffer();
                    let _ = session.create_response(ResponseOptions::default());
                }
                Some(Ok(Message::Text(_))) => {
                    let _ = socket.send(error("unknown text frame")).await;
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            () = wake.notified() => {
                while let Some(ev) = session.try_next_event() {
                    let frame = match &ev {
                        EngineEvent::AudioDelta { samples, .. } => {
                            Message::Binary(f32_to_pcm16(samples).into())
                        }
                        other => Message::Text(json!({"type": other.name()}).to_string().into()),
                    };
                    if socket.send(frame).await.is_err() {
                        session.close();
                        return;
                    }
                }
            }
        }
    }
    session.close();
}

fn error(message: &str) -> Message {
    Message::Text(
        json!({"type": "error", "message": message})
            .to_string()
            .into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_websocket_transport_is_a_thin_layer_over_the_session_api() {
    let engine = Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
        Arc::new(ScriptedLlm::default()),
        Arc::new(ScriptedTts::default()),
        EngineConfig::default(),
    )
    .unwrap();
    let app = Router::new()
        .route("/", get(plain_websocket))
        .with_state(Arc::clone(&engine));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/"))
        .await
        .unwrap();
    // One second of "speech" at level 0.3, in 20 ms frames, then the turn's end.
    let frame = f32_to_pcm16(&[0.3f32; 320]);
    for _ in 0..50 {
        ws.send(M::Binary(frame.clone().into())).await.unwrap();
    }
    ws.send(M::Text("commit".into())).await.unwrap();
    let mut names = Vec::new();
    let mut audio_samples = 0;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        match msg {
            M::Binary(b) => audio_samples += b.len() / 2,
            M::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                let name = v["type"].as_str().unwrap().to_owned();
                let done = name == "response_done";
                names.push(name);
                if done {
                    break;
                }
            }
            _ => {}
        }
    }
    // The scripted answer, "You said: level 30. That is all I know.", is
    // nine words of 100 ms each.
    assert_eq!(audio_samples, 9 * 1600, "{names:?}");
    for want in [
        "input_committed",
        "input_transcript_completed",
        "response_created",
        "transcript_delta",
        "response_done",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    // Bad input gets an error and the session goes on.
    ws.send(M::Binary(vec![1u8, 2, 3].into())).await.unwrap();
    loop {
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let text = reply.to_text().unwrap().to_owned();
        if text.contains("\"error\"") {
            assert!(text.contains("odd"), "{text}");
            break;
        }
    }
    ws.close(None).await.unwrap();
}
