//! The realtime server under hostile or broken clients, over real sockets:
//! slowloris on the upgrade, a connection flood, a thousand connections past
//! the session limit, a client that vanishes or stops reading; and a
//! graceful drain. Live sessions keep their event latency throughout.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ws::{Ws, recv};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use speech_to_speech::engine::scripted::{ScriptedLlm, ScriptedStt, ScriptedTts};
use speech_to_speech::engine::{Engine, EngineConfig};
use speech_to_speech::transport::{RealtimeServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn engine(max_sessions: usize, llm: ScriptedLlm) -> Arc<Engine> {
    Engine::new(
        Arc::new(ScriptedStt::new(Vec::new(), Duration::ZERO)),
        Arc::new(llm),
        Arc::new(ScriptedTts::default()),
        EngineConfig {
            max_sessions,
            ..EngineConfig::default()
        },
    )
    .unwrap()
}

fn start(engine: Arc<Engine>, config: ServerConfig) -> (RealtimeServer, u16) {
    let mut s = RealtimeServer::new(
        engine,
        ServerConfig {
            port: 0,
            worker_threads: 2,
            ..config
        },
    )
    .unwrap();
    let port = s.start().unwrap().port();
    (s, port)
}

async fn connect(port: u16) -> Ws {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/realtime"))
            .await
            .unwrap();
    assert_eq!(recv(&mut ws).await.unwrap()["type"], "session.created");
    ws
}

async fn until(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let ev = recv(ws)
            .await
            .unwrap_or_else(|| panic!("ended before {kind}"));
        if ev["type"] == kind {
            return ev;
        }
    }
}

async fn send(ws: &mut Ws, v: &Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// One event round trip on a live session: `input_audio_buffer.clear` to
/// `input_audio_buffer.cleared`.
async fn round_trip(ws: &mut Ws) -> Duration {
    let t0 = Instant::now();
    send(ws, &json!({"type": "input_audio_buffer.clear"})).await;
    until(ws, "input_audio_buffer.cleared").await;
    t0.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median round trip over `n` probes, 5 ms apart.
async fn probe(ws: &mut Ws, n: usize) -> Duration {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(round_trip(ws).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    median(v)
}

async fn http_get(port: u16, path: &str) -> String {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    body
}

/// Whether the server closed `tcp` within `within` (EOF or a reset).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The live session is not starved while the attack runs: its median round
/// trip under load stays within twice its idle figure, or within 20 ms. The
/// attacking clients run in this same process on the same cores, so on a
/// small busy machine the round trip grows by their CPU alone (CI saw 0.5 ms
/// idle and 2.2 ms loaded); a server that stalls its sessions on the flood
/// (an accept loop or a handshake blocking the runtime) costs hundreds of ms.
/// Both figures are printed; the ratio is a measurement, not the assertion.
fn assert_not_starved(idle: Duration, loaded: Duration, what: &str) {
    eprintln!("{what}: live session round trip {loaded:?} under load, {idle:?} idle");
    let bound = (idle * 2).max(Duration::from_millis(20));
    assert!(
        loaded <= bound,
        "{what}: live session round trip {loaded:?} under load, {idle:?} idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_silent_connections_are_cut_at_the_header_timeout() {
    let (_srv, port) = start(
        engine(4, ScriptedLlm::default()),
        ServerConfig {
            header_timeout: Duration::from_millis(800),
            ..ServerConfig::default()
        },
    );
    let mut live = connect(port).await;
    let idle = probe(&mut live, 40).await;
    // 50 slowloris clients: a request head one byte every 100 ms, never done.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(tcp);
    }
    // And 50 that connect and say nothing.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut cut = 0;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for tcp in &mut slow {
                if tcp.write_all(b"X").await.is_err() {
                    cut += 1;
                }
            }
        }
        let mut closed = 0;
        for tcp in &mut slow {
            if closed_within(tcp, Duration::from_millis(100)).await {
                closed += 1;
            }
        }
        (cut, closed)
    });
    let loaded = probe(&mut live, 40).await;
    let (_, closed) = trickle.await.unwrap();
    assert_eq!(closed, 50, "slowloris connections still open after 3 s");
    for tcp in &mut silent {
        assert!(closed_within(tcp, Duration::from_secs(2)).await);
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_not_starved(idle, loaded, "slowloris");
    // The live session still answers a whole turn.
    send(
        &mut live,
        &json!({"type": "conversation.item.create", "item": {"type": "message",
            "role": "user", "content": [{"type": "input_text", "text": "hi"}]}}),
    )
    .await;
    send(&mut live, &json!({"type": "response.create"})).await;
    assert_eq!(
        until(&mut live, "response.done").await["response"]["status"],
        "completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_limit_is_refused_at_once() {
    let (_srv, port) = start(
        engine(4, ScriptedLlm::default()),
        ServerConfig {
            max_connections: 40,
            // Longer than the flood takes on a loaded machine: the idle
            // slots stay taken throughout, so every later connection is one
            // past the limit.
            header_timeout: Duration::from_secs(60),
            ..ServerConfig::default()
        },
    );
    let mut live = connect(port).await;
    let idle = probe(&mut live, 40).await;
    // 2,000 connections that never send a byte, opened as fast as possible.
    let flood = tokio::spawn(async move {
        let mut conns = Vec::new();
        for _ in 0..2000 {
            if let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)).await {
                conns.push(tcp);
            }
        }
        let mut held = 0;
        for tcp in &mut conns {
            if !closed_within(tcp, Duration::from_millis(20)).await {
                held += 1;
            }
        }
        // While the flood holds its slots, each new connection is refused at once.
        let mut slowest = Duration::ZERO;
        for _ in 0..50 {
            let t0 = Instant::now();
            if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await {
                assert!(closed_within(&mut tcp, Duration::from_secs(1)).await);
            }
            slowest = slowest.max(t0.elapsed());
        }
        (held, slowest, conns)
    });
    let loaded = probe(&mut live, 40).await;
    let (held, slowest, conns) = flood.await.unwrap();
    // The live session is one of the 40; 39 idle ones wait out their header
    // timeout; every other connection was closed as soon as it was accepted.
    assert!(held <= 39, "{held} held");
    assert!(slowest < Duration::from_millis(200), "{slowest:?}");
    assert_not_starved(idle, loaded, "connection flood");
    drop(conns);
    let metrics = {
        // The flood's connections are closed: a scrape gets in.
        tokio::time::sleep(Duration::from_millis(100)).await;
        http_get(port, "/metrics").await
    };
    assert!(
        metrics.contains(r#"s2s_connections_refused_total{reason="connection_limit"}"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sessions_past_the_limit_are_refused_fast() {
    let (_srv, port) = start(engine(4, ScriptedLlm::default()), ServerConfig::default());
    let mut live = Vec::new();
    for _ in 0..4 {
        live.push(connect(port).await);
    }
    let idle = probe(&mut live[0], 40).await;
    let crowd = tokio::spawn(async move {
        let mut times = Vec::new();
        let mut codes = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..1000 {
            tasks.spawn(async move {
                let t0 = Instant::now();
                let url = format!("ws://127.0.0.1:{port}/v1/realtime");
                let outcome = match tokio_tungstenite::connect_async(url).await {
                    Ok((mut ws, _)) => {
                        let mut code = None;
                        while let Ok(Some(msg)) =
                            tokio::time::timeout(Duration::from_secs(5), ws.next()).await
                        {
                            match msg {
                                Ok(Message::Text(t)) => {
                                    let v: Value = serde_json::from_str(&t).unwrap();
                                    assert_eq!(v["error"]["code"], "session_limit_reached");
                                }
                                Ok(Message::Close(f)) => {
                                    code = f.map(|f| f.code);
                                    break;
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                        code
                    }
                    // Past the connection limit: closed before the upgrade.
                    Err(_) => None,
                };
                (t0.elapsed(), outcome)
            });
            if tasks.len() >= 200 {
                let (t, c) = tasks.join_next().await.unwrap().unwrap();
                times.push(t);
                codes.push(c);
            }
        }
        while let Some(r) = tasks.join_next().await {
            let (t, c) = r.unwrap();
            times.push(t);
            codes.push(c);
        }
        (times, codes)
    });
    let loaded = probe(&mut live[0], 40).await;
    let (times, codes) = crowd.await.unwrap();
    assert_eq!(times.len(), 1000);
    // Every one was refused: told to try again later (1013), or closed before upgrading.
    assert!(
        codes
            .iter()
            .all(|c| c.is_none_or(|c| c == CloseCode::Again)),
        "{codes:?}"
    );
    assert!(codes.iter().filter(|c| c.is_some()).count() >= 100);
    let p99 = {
        let mut t = times.clone();
        t.sort();
        t[t.len() * 99 / 100]
    };
    assert!(p99 < Duration::from_secs(2), "p99 refusal {p99:?}");
    assert_not_starved(idle, loaded, "1,000 connections past the limit");
    // The four live sessions all still work.
    for ws in &mut live {
        round_trip(ws).await;
    }
}

/// Ask for an answer 3,000 words long and wait for its first audio.
async fn ask_long(ws: &mut Ws) {
    let long = "word ".repeat(3000);
    let item = json!({"type": "conversation.item.create", "item": {"type": "message",
        "role": "user", "content": [{"type": "input_text", "text": long}]}});
    send(ws, &item).await;
    send(ws, &json!({"type": "response.create"})).await;
    until(ws, "response.output_audio.delta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_or_stuck_client_is_closed_and_its_work_cancelled() {
    // A slow answer: 3,000 words at 2 ms each, about 6 s of LLM work.
    let engine = engine(
        4,
        ScriptedLlm {
            per_token: Duration::from_millis(2),
            ..ScriptedLlm::default()
        },
    );
    let (_srv, port) = start(
        Arc::clone(&engine),
        ServerConfig {
            send_timeout: Duration::from_millis(500),
            ..ServerConfig::default()
        },
    );
    // 1. The client vanishes mid-response (its socket simply closes).
    let mut ws = connect(port).await;
    ask_long(&mut ws).await;
    assert_eq!(engine.session_objects(), 1);
    let t0 = Instant::now();
    drop(ws);
    while engine.session_objects() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(2), "session still held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let vanished = t0.elapsed();

    // 2. The client stops reading: its TCP window fills, the server's send
    // times out, and the session is closed and freed.
    let mut ws = connect(port).await;
    ask_long(&mut ws).await;
    let t0 = Instant::now();
    // Never read again; keep the socket open.
    while engine.session_objects() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "a client that stopped reading still holds its session"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stuck = t0.elapsed();
    drop(ws);
    assert_eq!(engine.session_count(), 0);
    // Another client is served normally afterwards.
    let mut ws = connect(port).await;
    round_trip(&mut ws).await;
    eprintln!("freed {vanished:?} after a vanish, {stuck:?} after a client stopped reading");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_responses_finish_then_closes_with_1001() {
    let engine = engine(
        4,
        ScriptedLlm {
            per_token: Duration::from_millis(20),
            ..ScriptedLlm::default()
        },
    );
    let (srv, port) = start(Arc::clone(&engine), ServerConfig::default());
    let srv = Arc::new(std::sync::Mutex::new(srv));
    let mut busy = connect(port).await;
    let mut idle = connect(port).await;
    send(
        &mut busy,
        &json!({"type": "conversation.item.create", "item": {"type": "message",
            "role": "user", "content": [{"type": "input_text", "text": "one two three four"}]}}),
    )
    .await;
    send(&mut busy, &json!({"type": "response.create"})).await;
    until(&mut busy, "response.created").await;
    let draining = {
        let srv = Arc::clone(&srv);
        std::thread::spawn(move || srv.lock().unwrap().drain(Duration::from_secs(10)))
    };
    // The idle session is closed at once with 1001.
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), idle.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(close.unwrap().code, CloseCode::Away);
    // While draining: /health says so with a 503, and new sessions are refused.
    let health = http_get(port, "/health").await;
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(health.contains(r#""status":"draining""#), "{health}");
    let refused =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/realtime")).await;
    assert!(refused.unwrap_err().to_string().contains("503"));
    // The busy session's response completes, then it is closed with 1001.
    let done = until(&mut busy, "response.done").await;
    assert_eq!(done["response"]["status"], "completed");
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), busy.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => break f,
            Ok(Some(Ok(_))) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(close.unwrap().code, CloseCode::Away);
    let cut = tokio::task::spawn_blocking(move || draining.join().unwrap())
        .await
        .unwrap();
    assert_eq!(
        cut, 0,
        "every session closed on its own before the deadline"
    );
    assert!(!srv.lock().unwrap().is_running());
}
