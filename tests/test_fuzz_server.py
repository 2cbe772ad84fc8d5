"""Hypothesis over a live Realtime server: any client event (known types with fields of
any JSON type, any text, binary frames) is answered without closing the connection,
and the session keeps working after it. (The Rust fuzz targets are tests/fuzz.rs.)"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from speech_to_speech._core import Engine, RealtimeServer

EVENT_TYPES = [
    "session.update",
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
    "transcription_session.update",
]
FIELDS = [
    "session",
    "audio",
    "item",
    "item_id",
    "content_index",
    "audio_end_ms",
    "response",
    "event_id",
    "previous_item_id",
]
NESTED = [
    "type",
    "audio",
    "input",
    "output",
    "format",
    "rate",
    "turn_detection",
    "role",
    "content",
    "text",
    "instructions",
    "tools",
    "voice",
    "output_modalities",
    "modalities",
    "call_id",
    "output",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["audio/pcm", "audio/pcmu", "pcm16", "g711_ulaw", "server_vad", "user"])
    | st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(NESTED) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)

events = st.builds(
    lambda kind, fields: json.dumps({**fields, "type": kind}),
    st.sampled_from(EVENT_TYPES) | st.text(max_size=20),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
)

frames = st.lists(
    st.one_of(
        events,
        events.map(lambda s: s[: len(s) // 2]),
        st.text(max_size=100),
        st.binary(max_size=100),
    ),
    min_size=1,
    max_size=6,
)


@pytest.fixture(scope="module")
def server() -> Iterator[RealtimeServer]:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", max_sessions=4)
    s = RealtimeServer(engine, port=0)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _answered(ws: ClientConnection) -> list[dict[str, Any]]:
    """Events up to the acknowledgement of a clear: the session still answers."""
    ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
    seen = []
    while True:
        ev: dict[str, Any] = json.loads(ws.recv(timeout=10))
        seen.append(ev)
        if ev["type"] == "input_audio_buffer.cleared":
            return seen


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=frames)
def test_any_frames_are_answered_and_the_session_goes_on(
    server: RealtimeServer, frames: list[str | bytes]
) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/v1/realtime", max_size=None) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
        for frame in frames:
            ws.send(frame)
        for ev in _answered(ws):
            assert isinstance(ev["type"], str), ev
            if ev["type"] == "error":
                assert ev["error"]["type"] in ("invalid_request_error", "server_error"), ev
                assert ev["error"]["message"], ev


def test_no_session_is_left_after_the_fuzzing(server: RealtimeServer) -> None:
    """Runs after the fuzzing (file order): every fuzzed connection's session is gone."""
    deadline = time.monotonic() + 10
    while server.sessions:
        assert time.monotonic() < deadline, server.sessions
        time.sleep(0.01)
