#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_queue_overflow_closes_with_an_error() {
    // A queue of 16 events cannot hold one spoken answer: the session must be
    // closed with a clear error rather than grow or lose events silently.
    let engine = Engine::new(
        Arc::new(FakeStt::new(Vec::new(), Duration::ZERO)),
        Arc::new(FakeLlm::default()),
        Arc::new(FakeTts::default()),
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
    let mut saw_error = false;
    for _ in 0..20 {
        send(
            &mut ws,
            json!({"type": "conversation.item.create", "item": {"type": "message",
            "role": "user", "content": [{"type": "input_text", "text": "a long question"}]}}),
        )
        .await;
        send(&mut ws, json!({"type": "response.create"})).await;
    }
    while let Some(ev) = recv(&mut ws).await {
        if ev["type"] == "error" && ev["error"]["code"] == "event_queue_overflow" {
            saw_error = true;
        }
    }
    assert!(saw_error);
    srv.stop();
}
