"""The OpenAI Realtime-compatible server, driven by the official `openai` SDK.

Fake STT/LLM/TTS (deterministic, in Rust or tiny Python handlers) and the real
Silero VAD. Every server event is validated strictly against the SDK's pydantic
types, as `openai-agents` does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from openai import AsyncOpenAI
from pydantic import TypeAdapter

from speech_to_speech import (
    Engine,
    RealtimeServer,
    ServerAddressError,
    alaw_decode,
    float32_to_pcm16,
    mulaw_encode,
    resample,
)
from speech_to_speech.vad import load_silero_vad

pytest.importorskip("websockets")
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeServerEvent as GaServerEvent

AUDIO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
GA = TypeAdapter(GaServerEvent)
BETA = TypeAdapter(BetaServerEvent)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _load(name: str, rate: int) -> np.ndarray:
    with wave.open(str(AUDIO_DIR / name), "rb") as w:
        assert w.getframerate() == 16000
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    if rate == 16000:
        return audio
    return np.asarray(resample(audio, input_rate=16000, output_rate=rate), dtype=np.float32)


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    """'What is the capital of France?' at 24 kHz, with 1.5 s of silence after."""
    if not (AUDIO_DIR / "q_capital_france.wav").exists():
        pytest.skip("shared test audio not found")
    speech = _load("q_capital_france.wav", 24000)
    return np.concatenate([np.zeros(4800, np.float32), speech, np.zeros(36000, np.float32)])


class SlowLlm:
    """Answers word by word, slowly, so a response is still running when the user speaks.

    70 words at 60 ms: 4.2 s. Speculation starts it at the soft end, half a second
    before the commit, and a barge-in over WebRTC comes about a second after the first
    audio: 35 words (2.1 s) were sometimes done by then (seen once in CI).
    """

    def generate(self, messages: list[dict[str, Any]], **kw: Any) -> Iterator[SimpleNamespace]:
        cancel = kw["cancel"]
        text = " ".join(f"This is sentence number {n}." for n in range(1, 15))
        for i, w in enumerate(text.split()):
            if cancel.is_set():
                return
            time.sleep(0.06)
            yield SimpleNamespace(text=w if i == 0 else " " + w)


def _serve(engine: Engine, **kw: Any) -> Iterator[RealtimeServer]:
    server = RealtimeServer(engine, port=0, backends={"stt": "fake"}, **kw)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vad() -> Any:
    return load_silero_vad()


@pytest.fixture(scope="module")
def server(vad: Any) -> Iterator[RealtimeServer]:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad, max_sessions=32)
    yield from _serve(engine)


@pytest.fixture(scope="module")
def slow_server(vad: Any) -> Iterator[RealtimeServer]:
    engine = Engine(stt="scripted", llm=SlowLlm(), tts="scripted", vad=vad)
    yield from _serve(engine)


def _client(server: RealtimeServer, api_key: str = "x") -> AsyncOpenAI:
    # The beta client always uses wss:// unless told the WebSocket URL.
    return AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{server.port}/v1",
        api_key=api_key,
    )


class Conn:
    """An SDK connection whose every event is validated strictly."""

    def __init__(self, conn: Any, beta: bool) -> None:
        self.conn = conn
        self.adapter = BETA if beta else GA
        self.seen: list[Any] = []

    async def recv(self, timeout: float = 10.0) -> Any:
        raw = await asyncio.wait_for(self.conn.recv_bytes(), timeout)
        data = json.loads(raw)
        assert data["event_id"].startswith("event_"), data
        event = self.adapter.validate_python(data)
        self.seen.append(event)
        return event

    async def until(self, kind: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            event = await self.recv(max(0.01, deadline - time.monotonic()))
            if event.type == kind:
                return event
            assert event.type != "error", event

    async def send(self, event: dict[str, Any]) -> None:
        await self.conn.send(event)

    async def stream(
        self, audio: np.ndarray, rate: int = 24000, chunk_ms: int = 100, real_time: bool = False
    ) -> None:
        """Send `audio`: at once, or paced like a microphone (for what must happen in a pause)."""
        step = rate * chunk_ms // 1000
        for i in range(0, len(audio), step):
            pcm = float32_to_pcm16(np.ascontiguousarray(audio[i : i + step]))
            await self.conn.input_audio_buffer.append(audio=base64.b64encode(pcm).decode())
            if real_time:
                await asyncio.sleep(chunk_ms / 1000)

    def types(self) -> list[str]:
        return [e.type for e in self.seen]


async def _open(server: RealtimeServer, beta: bool = False) -> AsyncIterator[Conn]:
    client = _client(server)
    manager = (
        client.beta.realtime.connect(model="gpt-realtime")
        if beta
        else client.realtime.connect(model="gpt-realtime")
    )
    async with manager as raw:
        yield Conn(raw, beta)


@pytest_asyncio.fixture(loop_scope="module")
async def conn(server: RealtimeServer) -> AsyncIterator[Conn]:
    async for c in _open(server):
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def beta_conn(server: RealtimeServer) -> AsyncIterator[Conn]:
    async for c in _open(server, beta=True):
        yield c


async def test_session_created_first_with_defaults(conn: Conn) -> None:
    first = await conn.recv()
    assert first.type == "session.created"
    s = first.session
    assert s.type == "realtime"
    assert s.audio.input.format.type == "audio/pcm" and s.audio.input.format.rate == 24000
    td = s.audio.input.turn_detection
    assert td.type == "server_vad"
    assert (td.threshold, td.prefix_padding_ms, td.silence_duration_ms) == (0.5, 300, 500)


async def test_session_update_round_trip(conn: Conn) -> None:
    await conn.until("session.created")
    await conn.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "Be brief.",
                "output_modalities": ["text"],
                "audio": {
                    "input": {
                        "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
                        "transcription": {"model": "gpt-4o-mini-transcribe"},
                    },
                    "output": {"voice": "marin", "format": {"type": "audio/pcmu"}},
                },
            },
        }
    )
    updated = await conn.until("session.updated")
    s = updated.session
    assert s.instructions == "Be brief."
    assert s.output_modalities == ["text"]
    assert s.audio.input.turn_detection.type == "semantic_vad"
    assert s.audio.input.turn_detection.eagerness == "high"
    assert s.audio.input.transcription.model == "gpt-4o-mini-transcribe"
    assert s.audio.output.format.type == "audio/pcmu"
    assert s.audio.output.voice == "marin"
    # Partial: what was not sent is kept.
    await conn.send(
        {"type": "session.update", "session": {"type": "realtime", "instructions": "x"}}
    )
    again = (await conn.until("session.updated")).session
    assert again.output_modalities == ["text"] and again.audio.output.voice == "marin"


async def _spoken_turn(c: Conn, question: np.ndarray) -> dict[str, Any]:
    await c.until("session.created")
    await c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"transcription": {"model": "whisper-1"}}},
            },
        }
    )
    await c.until("session.updated")
    await c.stream(question)
    done = await c.until("response.done", timeout=20)
    return {"done": done, "types": c.types()}


async def test_full_spoken_turn(conn: Conn, question: np.ndarray) -> None:
    result = await _spoken_turn(conn, question)
    types = result["types"]
    for kind in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ):
        assert kind in types, (kind, types)
    order = [
        types.index(k)
        for k in (
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "response.created",
            "response.done",
        )
    ]
    assert order == sorted(order)
    done = result["done"].response
    assert done.status == "completed"
    assert done.usage.output_tokens > 0
    transcript = done.output[0].content[0].transcript
    assert transcript.startswith("You said: level")
    stt = next(
        e for e in conn.seen if e.type == "conversation.item.input_audio_transcription.completed"
    )
    assert stt.transcript.startswith("level") and stt.usage.seconds > 1.0
    deltas = [e for e in conn.seen if e.type == "response.output_audio.delta"]
    sizes = {len(base64.b64decode(d.delta)) // 2 for d in deltas}
    assert max(sizes) <= 4800  # <= 200 ms at 24 kHz
    started = next(e for e in conn.seen if e.type == "input_audio_buffer.speech_started")
    stopped = next(e for e in conn.seen if e.type == "input_audio_buffer.speech_stopped")
    assert started.item_id == stopped.item_id
    assert 0 <= started.audio_start_ms < stopped.audio_end_ms


async def test_full_spoken_turn_beta(beta_conn: Conn, question: np.ndarray) -> None:
    c = beta_conn
    first = await c.recv()
    assert first.type == "session.created"
    assert first.session.input_audio_format == "pcm16"
    await c.send(
        {"type": "session.update", "session": {"input_audio_transcription": {"model": "whisper-1"}}}
    )
    await c.until("session.updated")
    await c.stream(question)
    done = await c.until("response.done", timeout=20)
    types = c.types()
    assert done.response.status == "completed"
    for kind in (
        "response.audio.delta",
        "response.audio_transcript.done",
        "conversation.item.created",
        "input_audio_buffer.committed",
    ):
        assert kind in types, kind
    assert "response.output_audio.delta" not in types
    assert done.response.output[0].content[0].type == "audio"


async def test_push_to_talk(conn: Conn, question: np.ndarray) -> None:
    await conn.until("session.created")
    await conn.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        }
    )
    s = (await conn.until("session.updated")).session
    assert s.audio.input.turn_detection is None
    await conn.stream(question)
    await conn.send({"type": "input_audio_buffer.commit"})
    committed = await conn.until("input_audio_buffer.committed")
    await conn.send({"type": "response.create"})
    done = await conn.until("response.done", timeout=20)
    assert done.response.status == "completed"
    assert "input_audio_buffer.speech_started" not in conn.types()
    user = done.response.output[0]
    assert user.role == "assistant"
    assert committed.item_id


async def test_create_response_false(conn: Conn, question: np.ndarray) -> None:
    await conn.until("session.created")
    await conn.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "create_response": False}}
                },
            },
        }
    )
    await conn.until("session.updated")
    await conn.stream(question)
    await conn.until("input_audio_buffer.committed", timeout=10)
    with pytest.raises(asyncio.TimeoutError):
        await conn.until("response.created", timeout=1.0)
    await conn.send({"type": "response.create"})
    done = await conn.until("response.done")
    assert done.response.status == "completed"


async def test_text_only_response(conn: Conn) -> None:
    await conn.until("session.created")
    await conn.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello"}],
            },
        }
    )
    added = await conn.until("conversation.item.added")
    assert added.item.content[0].text == "hello"
    await conn.send(
        {
            "type": "response.create",
            "response": {"output_modalities": ["text"], "metadata": {"topic": "greeting"}},
        }
    )
    done = await conn.until("response.done")
    types = conn.types()
    assert "response.output_text.delta" in types and "response.output_text.done" in types
    assert "response.output_audio.delta" not in types
    assert done.response.output[0].content[0].type == "output_text"
    assert done.response.output[0].content[0].text == "You said: hello. That is all I know."
    assert done.response.metadata == {"topic": "greeting"}


async def test_tool_call_round_trip(conn: Conn) -> None:
    await conn.until("session.created")
    await conn.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "tools": [
                    {
                        "type": "function",
                        "name": "get_weather",
                        "description": "Weather in a city",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    }
                ],
            },
        }
    )
    await conn.until("session.updated")
    await conn.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What's the weather in Paris?"}],
            },
        }
    )
    await conn.send({"type": "response.create"})
    args = await conn.until("response.function_call_arguments.done")
    item_done = await conn.until("response.output_item.done")
    assert item_done.item.type == "function_call" and item_done.item.status == "completed"
    assert json.loads(args.arguments) == {"city": "Paris"}
    done = await conn.until("response.done")
    assert done.response.output[0].type == "function_call"
    await conn.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": args.call_id,
                "output": '{"temp": 21}',
            },
        }
    )
    await conn.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    done = await conn.until("response.done")
    assert done.response.output[0].content[0].text == 'The tool said {"temp": 21}.'


async def test_g711_in_and_out(conn: Conn, question: np.ndarray) -> None:
    await conn.until("session.created")
    await conn.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"format": {"type": "audio/pcma"}},
                },
            },
        }
    )
    s = (await conn.until("session.updated")).session
    assert s.audio.input.format.type == "audio/pcmu"
    audio8k = np.asarray(resample(question, input_rate=24000, output_rate=8000), np.float32)
    ulaw = mulaw_encode((audio8k * 32767).astype(np.int16))
    for i in range(0, len(ulaw), 800):
        await conn.send(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(ulaw[i : i + 800]).decode(),
            }
        )
    await conn.until("response.done", timeout=20)
    deltas = [
        base64.b64decode(e.delta) for e in conn.seen if e.type == "response.output_audio.delta"
    ]
    assert deltas and max(len(d) for d in deltas) <= 1600  # 1 byte a sample, <= 200 ms at 8 kHz
    pcm = alaw_decode(b"".join(deltas))
    assert np.abs(pcm).max() > 1000  # a tone, not silence


async def test_barge_in_and_truncate(slow_server: RealtimeServer, question: np.ndarray) -> None:
    async for c in _open(slow_server):
        await c.until("session.created")
        await c.stream(question)
        first_audio = await c.until("response.output_audio.delta", timeout=20)
        await c.stream(question[:60000])  # the user talks over the answer
        done = await c.until("response.done", timeout=20)
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "turn_detected"
        types = c.types()
        assert "response.output_audio_transcript.done" in types
        assert types.index("response.done") < len(types)
        await c.until("input_audio_buffer.speech_started", timeout=10)
        spoken = [
            base64.b64decode(e.delta)
            for e in c.seen
            if e.type == "response.output_audio.delta" and e.item_id == first_audio.item_id
        ]
        total_ms = sum(len(d) for d in spoken) // 48
        assert total_ms > 200
        await c.send({"type": "conversation.item.retrieve", "item_id": first_audio.item_id})
        before = (await c.until("conversation.item.retrieved")).item.content[0].transcript
        await c.send(
            {
                "type": "conversation.item.truncate",
                "item_id": first_audio.item_id,
                "content_index": 0,
                "audio_end_ms": 100,
            }
        )
        truncated = await c.until("conversation.item.truncated")
        assert truncated.audio_end_ms == 100
        await c.send({"type": "conversation.item.retrieve", "item_id": first_audio.item_id})
        after = (await c.until("conversation.item.retrieved")).item.content[0].transcript
        assert len(after) < len(before), (before, after)
        # Past the end of the audio: an error, and the session goes on.
        await c.send(
            {
                "type": "conversation.item.truncate",
                "item_id": first_audio.item_id,
                "content_index": 0,
                "audio_end_ms": 10**6,
                "event_id": "evt_t",
            }
        )
        err = await c.until("error")
        assert err.error.event_id == "evt_t"


async def test_response_cancel(slow_server: RealtimeServer) -> None:
    async for c in _open(slow_server):
        await c.until("session.created")
        await c.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            }
        )
        await c.send({"type": "response.create"})
        await c.until("response.output_audio.delta", timeout=10)
        await c.send({"type": "response.cancel"})
        done = await c.until("response.done")
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"


ERROR_CASES: list[tuple[str, Any, str]] = [
    ("not json", "{nope", "invalid_json"),
    ("unknown event", {"type": "session.destroy"}, "invalid_event"),
    ("no type", {"foo": 1}, "missing_required_parameter"),
    ("bad base64", {"type": "input_audio_buffer.append", "audio": "%%%"}, "invalid_base64"),
    ("odd pcm16 bytes", {"type": "input_audio_buffer.append", "audio": "AAAA"}, "invalid_audio"),
    ("empty commit", {"type": "input_audio_buffer.commit"}, "input_audio_buffer_commit_empty"),
    ("unknown item", {"type": "conversation.item.retrieve", "item_id": "nope"}, "item_not_found"),
    ("delete unknown", {"type": "conversation.item.delete", "item_id": "nope"}, "item_not_found"),
    (
        "truncate unknown",
        {
            "type": "conversation.item.truncate",
            "item_id": "nope",
            "content_index": 0,
            "audio_end_ms": 5,
        },
        "item_not_found",
    ),
    (
        "bad item type",
        {"type": "conversation.item.create", "item": {"type": "image"}},
        "invalid_value",
    ),
    (
        "bad role",
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "robot", "content": []},
        },
        "invalid_value",
    ),
    (
        "bad rate",
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 1000}}},
            },
        },
        "invalid_value",
    ),
    (
        "bad format",
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"format": {"type": "audio/opus"}}}},
        },
        "invalid_value",
    ),
    (
        "bad threshold",
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}},
            },
        },
        "invalid_value",
    ),
    (
        "bad modalities",
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["video"]}},
        "invalid_value",
    ),
    (
        "bad session type",
        {"type": "session.update", "session": {"type": "transcription"}},
        "invalid_value",
    ),
    (
        "bad tool",
        {"type": "session.update", "session": {"type": "realtime", "tools": [{}]}},
        "missing_required_parameter",
    ),
    ("cancel nothing", {"type": "response.cancel"}, "response_cancel_not_active"),
    (
        "bad conversation",
        {"type": "response.create", "response": {"conversation": "x"}},
        "invalid_value",
    ),
    ("output buffer clear", {"type": "output_audio_buffer.clear"}, "unsupported_event"),
    ("json array", "[1, 2]", "invalid_json"),
    (
        "bad base64 audio in an item",
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": "!!!"}],
            },
        },
        "invalid_base64",
    ),
    ("type not a string", {"type": 5}, "invalid_value"),
    ("session not an object", {"type": "session.update", "session": []}, "invalid_value"),
    (
        "negative content_index",
        {
            "type": "conversation.item.truncate",
            "item_id": "x",
            "content_index": -1,
            "audio_end_ms": 1,
        },
        "invalid_value",
    ),
    (
        "fractional audio_end_ms",
        {
            "type": "conversation.item.truncate",
            "item_id": "x",
            "content_index": 0,
            "audio_end_ms": 1.5,
        },
        "invalid_value",
    ),
    (
        "insert after a missing item",
        {
            "type": "conversation.item.create",
            "item": {
                "id": "dup",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}],
            },
            "previous_item_id": "missing",
        },
        "item_not_found",
    ),
    (
        "bad tool_choice",
        {"type": "response.create", "response": {"tool_choice": {"type": "mcp"}}},
        "invalid_value",
    ),
    (
        "bad max tokens",
        {"type": "response.create", "response": {"max_output_tokens": 0}},
        "invalid_value",
    ),
]


@pytest.mark.parametrize(("name", "event", "code"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
async def test_error_cases(conn: Conn, name: str, event: Any, code: str) -> None:
    await conn.until("session.created")
    if isinstance(event, dict):
        event = {**event, "event_id": "evt_client_1"}
        await conn.conn.send_raw(json.dumps(event))
    else:
        await conn.conn.send_raw(event)
    err = await _next_error(conn)
    assert err.error.code == code, err
    assert isinstance(err.error.message, str) and err.error.message
    if isinstance(event, dict):
        assert err.error.event_id == "evt_client_1"
    # The session is alive: a valid event still gets its answer.
    await conn.send(
        {"type": "session.update", "session": {"type": "realtime", "instructions": "ok"}}
    )
    assert (await conn.until("session.updated")).session.instructions == "ok"


async def _next_error(c: Conn) -> Any:
    while True:
        e = await c.recv()
        if e.type == "error":
            return e


async def test_oversize_message_is_answered(vad: Any) -> None:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad)
    for server in _serve(engine, max_message_bytes=64 * 1024):
        async for c in _open(server):
            await c.until("session.created")
            big = base64.b64encode(bytes(80 * 1024)).decode()
            await c.send({"type": "input_audio_buffer.append", "audio": big})
            err = await _next_error(c)
            assert err.error.code == "message_too_large"
            await c.send({"type": "input_audio_buffer.clear"})
            await c.until("input_audio_buffer.cleared")
            # Far past the limit the frame is not read: an error, then a close.
            huge = base64.b64encode(bytes(200 * 1024)).decode()
            await c.send({"type": "input_audio_buffer.append", "audio": huge})
            err = await _next_error(c)
            assert err.error.code == "message_too_large"


async def test_large_append_within_limit(conn: Conn) -> None:
    await conn.until("session.created")
    # A 15 MiB event of silence (over the websockets library's 1 MiB default).
    pcm = bytes(15 * 1024 * 1024 // 4 * 3)
    await conn.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    await conn.send({"type": "input_audio_buffer.clear"})
    await conn.until("input_audio_buffer.cleared", timeout=60)


async def _one_turn(server: RealtimeServer, audio: np.ndarray, instructions: str) -> list[str]:
    async for c in _open(server):
        await c.until("session.created")
        await c.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "instructions": instructions},
            }
        )
        await c.until("session.updated")
        await c.stream(audio)
        done = await c.until("response.done", timeout=60)
        assert done.response.status == "completed"
        return [done.response.output[0].content[0].transcript]
    return []


@pytest.mark.parametrize("n", [2, 20])
async def test_concurrent_sessions_no_cross_talk(
    server: RealtimeServer, question: np.ndarray, n: int
) -> None:
    # Each session speaks at its own level; the fake STT hears "level N", so
    # every answer must quote its own session's level.
    gains = [0.2 + 0.8 * i / max(1, n - 1) for i in range(n)]
    results = await asyncio.gather(
        *(
            _one_turn(server, question * g / np.abs(question).max(), f"s{i}")
            for i, g in enumerate(gains)
        )
    )
    for g, (text,) in zip(gains, results, strict=True):
        level = int(text.split("level ")[1].split(".")[0])
        assert abs(level - round(g * 100)) <= 2, (g, text)


async def test_session_limit_reached(vad: Any) -> None:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad, max_sessions=1)
    for server in _serve(engine):
        async for c in _open(server):
            await c.until("session.created")
            async for other in _open(server):
                err = await other.recv()
                assert err.type == "error" and err.error.code == "session_limit_reached"
                with pytest.raises(Exception, match=r"1013|closed|Closed"):
                    await other.recv(timeout=5)
            assert server.sessions >= 1


async def test_auth(vad: Any) -> None:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad)
    for server in _serve(engine, api_key="sekret"):
        async with _client(server, api_key="sekret").realtime.connect(model="gpt-realtime") as ok:
            assert (await Conn(ok, False).recv()).type == "session.created"
        with pytest.raises(Exception, match="401"):
            async with _client(server, api_key="wrong").realtime.connect(model="m") as bad:
                await bad.recv()
        import websockets

        url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=m"
        async with websockets.connect(
            url, subprotocols=["realtime", "openai-insecure-api-key.sekret"]
        ) as ws:
            assert ws.subprotocol == "realtime"
            assert json.loads(await ws.recv())["type"] == "session.created"
        with pytest.raises(Exception, match="401"):
            async with websockets.connect(url):
                pass


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_health_and_port(server: RealtimeServer) -> None:
    body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health").read())
    assert body["status"] == "ok" and body["backends"] == {"stt": "fake"}
    assert isinstance(body["sessions"], int) and body["max_sessions"] == 32
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nope")
    assert e.value.code == 404
    with pytest.raises(ServerAddressError):
        RealtimeServer(
            Engine(stt="scripted", llm="scripted", tts="scripted"), port=server.port or 0
        ).start()


async def test_openai_agents_realtime_runner(server: RealtimeServer, question: np.ndarray) -> None:
    """`openai-agents` validates every event strictly: one spoken turn and one tool call."""
    pytest.importorskip("agents")
    from agents import function_tool
    from agents.realtime import RealtimeAgent, RealtimeRunner

    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    agent = RealtimeAgent(name="assistant", instructions="Be brief.", tools=[get_weather])
    config: Any = {
        "url": f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime",
        "api_key": "x",
    }
    seen: list[str] = []

    async def next_of(session: Any, kind: str) -> Any:
        async for event in session:
            seen.append(event.type)
            assert event.type != "error", event
            if event.type == "raw_model_event" and event.data.type == "error":
                raise AssertionError(event.data)
            if event.type == kind:
                return event
        raise AssertionError(f"session ended before {kind}")

    async def until(session: Any, kind: str) -> Any:
        return await asyncio.wait_for(next_of(session, kind), 20)

    async with await RealtimeRunner(agent).run(model_config=config) as session:
        pcm = float32_to_pcm16(np.ascontiguousarray(question))
        for i in range(0, len(pcm), 4800):
            await session.send_audio(pcm[i : i + 4800])
        await until(session, "agent_end")
        assert "audio" in seen and "audio_end" in seen
        await session.send_message("What's the weather in Paris?")
        await until(session, "tool_end")
        await until(session, "agent_end")
    assert calls == ["Paris"]


async def test_idle_timeout_triggers(conn: Conn) -> None:
    await conn.until("session.created")
    td = {"type": "server_vad", "idle_timeout_ms": 1000}
    await conn.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": td}}},
        }
    )
    s = (await conn.until("session.updated")).session
    assert s.audio.input.turn_detection.idle_timeout_ms == 1000
    t0 = time.monotonic()
    await conn.until("input_audio_buffer.timeout_triggered", timeout=5)
    assert 0.9 < time.monotonic() - t0 < 3
    done = await conn.until("response.done")
    assert done.response.status == "completed"


async def test_interrupt_response_false_keeps_answering(
    slow_server: RealtimeServer, question: np.ndarray
) -> None:
    async for c in _open(slow_server):
        await c.until("session.created")
        td = {"type": "server_vad", "interrupt_response": False}
        await c.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": td}}},
            }
        )
        await c.until("session.updated")
        await c.stream(question)
        await c.until("response.output_audio.delta", timeout=20)
        await c.stream(question[:60000])
        done = await c.until("response.done", timeout=20)
        assert done.response.status == "completed"


async def test_random_garbage_never_kills_the_session(conn: Conn) -> None:
    """Mutated client events: every one is answered or applied; the session survives."""
    import random

    rng = random.Random(5)
    await conn.until("session.created")
    base: list[dict[str, Any]] = [
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "turn_detection": None,
                    }
                },
            },
        },
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "x"}],
            },
        },
        {
            "type": "conversation.item.truncate",
            "item_id": "a",
            "content_index": 0,
            "audio_end_ms": 0,
        },
        {
            "type": "response.create",
            "response": {"output_modalities": ["text"], "tools": [], "tool_choice": "auto"},
        },
        {"type": "input_audio_buffer.append", "audio": "AAAA"},
    ]
    junk: list[Any] = [None, -1, 2**70, 1.5, "", "x" * 300, [], {}, [1, {}], True, {"a": [None]}]

    def mutate(v: Any, depth: int = 0) -> Any:
        if isinstance(v, dict) and v and depth < 6:
            k = rng.choice(list(v))
            out = dict(v)
            out[k] = rng.choice(junk) if rng.random() < 0.5 else mutate(v[k], depth + 1)
            return out
        if isinstance(v, list) and v and depth < 6:
            return [mutate(x, depth + 1) for x in v]
        return rng.choice(junk)

    for _ in range(300):
        await conn.conn.send_raw(json.dumps(mutate(rng.choice(base))))
    await conn.conn.send_raw(
        json.dumps(
            {
                "type": "session.update",
                "event_id": "last",
                "session": {"type": "realtime", "instructions": "ok"},
            }
        )
    )
    # Everything before the last update was answered or applied, in order;
    # every answer validates against the SDK's types.
    errors = 0
    while True:
        ev = await conn.recv(timeout=20)
        errors += ev.type == "error"
        if ev.type == "session.updated" and ev.session.instructions == "ok":
            break
    assert errors > 100


async def test_stop_closes_every_session() -> None:
    import websockets

    engine = Engine(stt="scripted", llm="scripted", tts="scripted")
    server = RealtimeServer(engine, port=0)
    server.start()
    url = f"ws://127.0.0.1:{server.port}/v1/realtime"
    clients = [await websockets.connect(url) for _ in range(3)]
    for ws in clients:
        assert json.loads(await ws.recv())["type"] == "session.created"
    assert engine.sessions == 3 and server.sessions == 3
    await asyncio.to_thread(server.stop)
    assert engine.sessions == 0 and not server.running and server.port is None
    for ws in clients:
        with pytest.raises(websockets.ConnectionClosedOK, match="1001"):
            await ws.recv()
    server.stop()  # twice is fine


async def test_out_of_band_response(conn: Conn) -> None:
    await conn.until("session.created")
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "sum"}]}
    await conn.send(
        {
            "type": "response.create",
            "response": {
                "conversation": "none",
                "output_modalities": ["text"],
                "input": [item],
                "metadata": {"purpose": "summary"},
                "instructions": "Summarise.",
            },
        }
    )
    done = await conn.until("response.done")
    assert done.response.conversation_id is None
    assert done.response.metadata == {"purpose": "summary"}
    assert done.response.output[0].content[0].text == "You said: sum. That is all I know."
    # Nothing joined the conversation.
    assert "conversation.item.added" not in conn.types()
    await conn.send({"type": "conversation.item.retrieve", "item_id": done.response.output[0].id})
    assert (await _next_error(conn)).error.code == "item_not_found"


async def test_beta_flat_session_fields(beta_conn: Conn) -> None:
    c = beta_conn
    await c.until("session.created")
    await c.send(
        {
            "type": "session.update",
            "session": {
                "modalities": ["text"],
                "input_audio_format": "g711_ulaw",
                "output_audio_format": "g711_alaw",
                "turn_detection": None,
                "voice": "verse",
                "temperature": 0.6,
                "max_response_output_tokens": 200,
            },
        }
    )
    s = (await c.until("session.updated")).session
    assert s.modalities == ["text"] and s.turn_detection is None
    assert (s.input_audio_format, s.output_audio_format) == ("g711_ulaw", "g711_alaw")
    assert (s.voice, s.temperature, s.max_response_output_tokens) == ("verse", 0.6, 200)
    await c.send({"type": "session.update", "session": {"input_audio_format": "opus"}})
    err = await _next_error(c)
    assert err.error.param == "session.input_audio_format"


async def test_live_input_transcription(conn: Conn, question: np.ndarray) -> None:
    """A live transcription model gets deltas at the pauses in speech, before the commit."""
    await conn.until("session.created")
    transcription = {"model": "gpt-live-transcribe"}
    await conn.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"transcription": transcription}}},
        }
    )
    await conn.until("session.updated")
    # The pause comes in real time: the delta is due while the user is silent,
    # before the silence rule ends the turn.
    await conn.stream(question[:-36000])
    await conn.stream(question[-36000:], chunk_ms=20, real_time=True)
    completed = await conn.until("conversation.item.input_audio_transcription.completed")
    types = conn.types()
    kind = "conversation.item.input_audio_transcription.delta"
    assert types.index(kind) < types.index("input_audio_buffer.committed")
    deltas = [e.delta for e in conn.seen if e.type == kind]
    assert "".join(deltas) == completed.transcript
    assert all(e.item_id == completed.item_id for e in conn.seen if e.type == kind)
    await conn.until("response.done")


async def test_out_of_band_input_with_item_reference(conn: Conn) -> None:
    await conn.until("session.created")
    item = {
        "id": "ref1",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "remember"}],
    }
    await conn.send({"type": "conversation.item.create", "item": item})
    await conn.until("conversation.item.done")
    response = {
        "conversation": "none",
        "output_modalities": ["text"],
        "input": [{"type": "item_reference", "id": "ref1"}],
    }
    await conn.send({"type": "response.create", "response": response})
    done = await conn.until("response.done")
    assert done.response.output[0].content[0].text == "You said: remember. That is all I know."
    response["input"] = [{"type": "item_reference", "id": "nope"}]
    await conn.send({"type": "response.create", "response": response})
    assert (await _next_error(conn)).error.code == "item_not_found"


class PausingStt:
    """Hears an unfinished sentence in short audio, the whole one in long audio."""

    def transcribe(self, audio: np.ndarray, **kw: Any) -> Iterator[SimpleNamespace]:
        text = "what is the capital of France?" if len(audio) > 16000 * 3.5 else "what is the"
        yield SimpleNamespace(text=text, final=True, language="en")


@pytest.mark.parametrize("unfinished", [True, False])
async def test_semantic_vad_waits_for_an_unfinished_sentence(
    vad: Any, question: np.ndarray, unfinished: bool
) -> None:
    # The fake STT hears "level N": a finished phrase, so the pause ends the turn.
    stt: Any = PausingStt() if unfinished else "scripted"
    engine = Engine(stt=stt, llm="scripted", tts="scripted", vad=vad)
    for server in _serve(engine):
        async for c in _open(server):
            await c.until("session.created")
            td = {"type": "semantic_vad", "eagerness": "high"}
            session = {"audio": {"input": {"turn_detection": td, "transcription": {}}}}
            await c.send({"type": "session.update", "session": {"type": "realtime", **session}})
            await c.until("session.updated")
            speech = question[4800:-36000]
            pause = np.zeros(24000 * 8 // 10, np.float32)  # longer than high's 300 ms
            # At a microphone's pace: sent at once, the second turn's speech could reach
            # the session before the first turn's transcript (a loaded CI box), and a
            # turn held for its transcript takes speech that follows as its own.
            audio = np.concatenate([pause, speech, pause, speech, pause, pause, pause])
            await c.stream(audio, real_time=True)
            done = await c.until("response.done", timeout=20)
            if not unfinished:
                # Two turns; the second one barges in on the first answer.
                await c.until("input_audio_buffer.committed", timeout=20)
                assert c.types().count("input_audio_buffer.speech_started") == 2
                return
            types = c.types()
            assert types.count("input_audio_buffer.speech_started") == 1, types
            assert types.count("input_audio_buffer.committed") == 1, types
            completed = next(
                e
                for e in c.seen
                if e.type == "conversation.item.input_audio_transcription.completed"
            )
            assert completed.transcript == "what is the capital of France?"
            assert done.response.status == "completed"


async def test_turn_timings_extension_only_when_asked(
    server: RealtimeServer, question: np.ndarray
) -> None:
    import websockets

    async def turn(query: str) -> list[dict[str, Any]]:
        url = f"ws://127.0.0.1:{server.port}/v1/realtime?model=x{query}"
        events: list[dict[str, Any]] = []
        async with websockets.connect(url, max_size=None) as ws:
            audio = np.concatenate([question, np.zeros(24000, np.float32)])
            for i in range(0, len(audio), 4800):
                append = {
                    "type": "input_audio_buffer.append",
                    "audio": s2s_pcm(audio[i : i + 4800]),
                }
                await ws.send(json.dumps(append))
            while True:
                ev = json.loads(await asyncio.wait_for(ws.recv(), 20))
                events.append(ev)
                if ev["type"] == "response.done":
                    break
            # The timings follow response.done.
            with contextlib.suppress(TimeoutError):
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 1)))
        return events

    asked = await turn("&timings=1")
    timings = [e for e in asked if e["type"] == "speech_to_speech.turn.timings"]
    assert len(timings) == 1
    t = timings[0]["timings"]
    assert t["commit_ms"] <= t["first_audio_out_ms"]
    assert t["stt_done_ms"] is not None and t["tts_first_chunk_ms"] is not None
    plain = await turn("")
    assert not [e for e in plain if e["type"].startswith("speech_to_speech.")]


def s2s_pcm(samples: np.ndarray) -> str:
    from speech_to_speech import float32_to_pcm16

    return base64.b64encode(float32_to_pcm16(samples.astype(np.float32))).decode()


async def test_item_create_with_audio_is_transcribed(conn: Conn, question: np.ndarray) -> None:
    await conn.until("session.created")
    await conn.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "output_modalities": ["text"],
                "audio": {
                    "input": {"turn_detection": None, "transcription": {"model": "whisper-1"}}
                },
            },
        }
    )
    await conn.until("session.updated")
    peak = round(float(np.abs(question).max()) * 100)
    item = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "audio": s2s_pcm(question)}],
    }
    await conn.send({"type": "conversation.item.create", "item": item})
    # The response waits for the transcript of the item just added.
    await conn.send({"type": "response.create"})
    done = await conn.until("response.done", timeout=20)
    heard = [
        e for e in conn.seen if e.type == "conversation.item.input_audio_transcription.completed"
    ]
    assert [e.transcript for e in heard] == [f"level {peak}"]
    assert done.response.output[0].content[0].text == f"You said: level {peak}. That is all I know."


async def test_beta_transcription_session(beta_conn: Conn, question: np.ndarray) -> None:
    c = beta_conn
    await c.until("session.created")
    await c.send(
        {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            },
        }
    )
    updated = await c.until("transcription_session.updated")
    assert updated.session.input_audio_transcription.model == "whisper-1"
    assert updated.session.turn_detection.silence_duration_ms == 500
    # A transcription session transcribes each turn and answers nothing.
    await c.stream(np.concatenate([question, np.zeros(24000, np.float32)]))
    done = await c.until("conversation.item.input_audio_transcription.completed", timeout=20)
    assert done.transcript.startswith("level ")
    with contextlib.suppress(TimeoutError):
        await c.until("response.created", timeout=1.0)
        raise AssertionError("a transcription session must not respond")
    await c.send({"type": "transcription_session.update", "session": {"turn_detection": 5}})
    assert (await _next_error(c)).error.param is not None
