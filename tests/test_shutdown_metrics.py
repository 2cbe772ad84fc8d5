"""Graceful shutdown of the ``speech-to-speech`` server on SIGTERM, and ``GET /metrics``
read by the reference Prometheus (OpenMetrics) parser."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from speech_to_speech._core import Engine, RealtimeServer

LONG = " ".join(["Tell me about the sea and the ships and the sailors on them."] * 3)

# The command's realtime mode on scripted models: the flags parsed as the
# command parses them, then `run_realtime`, which owns the SIGTERM handling.
SERVE = textwrap.dedent(
    """
    import logging, sys
    from speech_to_speech._core import Engine
    from speech_to_speech.flags import build_parser
    from speech_to_speech.server import run_realtime

    logging.basicConfig(level=logging.INFO)
    args = build_parser().parse_args(sys.argv[1:])
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", scripted_pace_ms=60.0)
    sys.exit(run_realtime(args, engine, {"stt": "scripted"}))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        ev: dict[str, Any] = json.loads(ws.recv(timeout=20))
        if ev["type"] == kind:
            return ev
        assert ev["type"] != "error", ev


def _ask(ws: ClientConnection, text: str) -> None:
    assert json.loads(ws.recv(timeout=20))["type"] == "session.created"
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    ws.send(json.dumps({"type": "response.create"}))
    _until(ws, "response.output_audio.delta")


@pytest.fixture
def command() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The server with ``--drain_s 20``, up and answering /health."""
    yield from _command("20")


@pytest.fixture
def short_drain() -> Iterator[tuple[subprocess.Popen[str], int]]:
    yield from _command("0.5")


def _command(drain_s: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "--port", str(port), "--drain_s", drain_s],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _health(port)[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_sigterm_drains_lets_the_response_finish_and_exits_0(
    command: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = command
    with connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
        _ask(ws, LONG)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # /health tells a load balancer to stop sending.
        while (health := _health(port))[0] == 200:
            assert time.monotonic() - t0 < 5
            time.sleep(0.01)
        assert health == (503, health[1]) and health[1]["status"] == "draining", health
        # New sessions are refused while the old one finishes.
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/v1/realtime", open_timeout=5)
        assert refused.value.response.status_code == 503
        done = _until(ws, "response.done")
        assert done["response"]["status"] == "completed"
        # Then the session closes with 1001 (going away).
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert proc.wait(20) == 0
    assert proc.stderr is not None
    assert "drained (0 session(s) still answering were closed)" in proc.stderr.read()


def test_sigterm_cuts_a_response_longer_than_drain_s(
    short_drain: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = short_drain
    with connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
        _ask(ws, LONG * 3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert time.monotonic() - t0 < 5
    assert proc.wait(20) == 0
    assert proc.stderr is not None
    assert "drained (1 session(s) still answering were closed)" in proc.stderr.read()


def test_metrics_parse_with_the_reference_parser_and_count_what_happened() -> None:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted")
    server = RealtimeServer(engine, port=0)
    server.start()
    try:
        with connect(f"ws://127.0.0.1:{server.port}/v1/realtime") as ws:
            _ask(ws, "Hello there.")
            _until(ws, "response.done")
            ws.send("{not json")
            assert json.loads(ws.recv(timeout=10))["error"]["code"] == "invalid_json"
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics") as r:
                assert r.headers["Content-Type"].startswith("application/openmetrics-text")
                text = r.read().decode()
    finally:
        server.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("s2s_sessions", ())] == 1
    assert samples[("s2s_responses_total", (("status", "completed"),))] == 1
    invalid_json = (("code", "invalid_json"), ("kind", "invalid_request_error"))
    assert samples[("s2s_errors_total", invalid_json)] == 1
    latency = families["s2s_stage_latency_seconds"]
    assert latency.type == "histogram"
    counts = {s.labels["stage"]: s.value for s in latency.samples if s.name.endswith("_count")}
    assert counts["llm_first_token"] == 1 and counts["tts_first_chunk"] >= 1, counts
    for name in ("s2s_event_queue_depth", "s2s_worker_busy_seconds", "s2s_stage_jobs"):
        assert any(n.startswith(name) for n in families), (name, sorted(families))
    # Every family the server declares is one of its own.
    assert all(n.startswith("s2s_") for n in families), sorted(families)
