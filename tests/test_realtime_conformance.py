"""Wire conformance for strict Realtime clients, over a raw WebSocket.

Clients from other voice frameworks validate every event with their own
models, reject keys and nulls their types do not have, track items by id and
expect OpenAI's event order. These tests hold the server to that: every event
is validated against the official SDK's types with extra fields forbidden and
no null placeholders, the exact event sequences of typical responses are
asserted in both dialects, and the WebSocket closing handshake is checked
with the close codes a client receives.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from _wer import wer
from pydantic import BaseModel, TypeAdapter

from speech_to_speech import Engine, RealtimeServer, float32_to_pcm16, resample
from speech_to_speech.vad import load_silero_vad

websockets = pytest.importorskip("websockets")
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent  # noqa: E402
from openai.types.realtime import RealtimeServerEvent as GaServerEvent  # noqa: E402

AUDIO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
GA = TypeAdapter(GaServerEvent)
BETA = TypeAdapter(BetaServerEvent)
# Nulls that mean something, as OpenAI sends them: the first item has no
# previous item; push-to-talk has no turn detection.
MEANINGFUL_NULLS = {"previous_item_id", "turn_detection"}

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _extras(model: Any, path: str) -> list[str]:
    """Paths of keys the SDK's types do not have, anywhere in a validated event."""
    found: list[str] = []
    if isinstance(model, BaseModel):
        for key in model.model_extra or {}:
            found.append(f"{path}.{key}")
        for name in type(model).model_fields:
            found += _extras(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list | tuple):
        for i, x in enumerate(model):
            found += _extras(x, f"{path}[{i}]")
    elif isinstance(model, dict):
        for k, x in model.items():
            found += _extras(x, f"{path}.{k}")
    return found


def _nulls(data: Any, path: str = "") -> list[str]:
    """Paths of null fields that are placeholders, not meaning."""
    found: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            if v is None and k not in MEANINGFUL_NULLS:
                found.append(f"{path}.{k}")
            found += _nulls(v, f"{path}.{k}")
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _nulls(v, f"{path}[{i}]")
    return found


def strict(data: dict[str, Any], beta: bool) -> Any:
    """Validate one server event as a strict client does; returns the SDK object."""
    event = (BETA if beta else GA).validate_python(data)
    assert data.get("event_id"), data
    extras = _extras(event, data["type"])
    assert not extras, f"keys the SDK types do not have: {extras}"
    nulls = _nulls(data, data["type"])
    assert not nulls, f"null placeholders: {nulls}"
    return event


class Raw:
    """A raw WebSocket client that validates every event strictly."""

    def __init__(self, ws: Any, beta: bool) -> None:
        self.ws = ws
        self.beta = beta
        self.seen: list[dict[str, Any]] = []

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        strict(data, self.beta)
        self.seen.append(data)
        return data

    async def until(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            data = await self.recv(max(0.01, deadline - loop.time()))
            if data["type"] == kind:
                return data

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    def mark(self) -> int:
        return len(self.seen)

    def types(self, since: int = 0) -> list[str]:
        return [e["type"] for e in self.seen[since:]]


async def _connect(server: RealtimeServer, beta: bool = False, **kw: Any) -> Any:
    headers = {"OpenAI-Beta": "realtime=v1"} if beta else {}
    return await websockets.connect(
        f"ws://127.0.0.1:{server.port}/v1/realtime?model=gpt-realtime",
        additional_headers=headers,
        max_size=2**24,
        **kw,
    )


class TextThenTool:
    """An LLM that says a sentence and then calls a tool: two output items."""

    def generate(self, messages: list[dict[str, Any]], **kw: Any) -> Iterator[SimpleNamespace]:
        if messages[-1]["role"] == "tool":
            yield SimpleNamespace(text="It is sunny.")
            return
        for w in ("Let", " me", " check", " that."):
            yield SimpleNamespace(text=w)
        yield SimpleNamespace(call_id="call_1", name="get_weather", arguments='{"city":"Paris"}')


def _serve(engine: Engine, **kw: Any) -> Iterator[RealtimeServer]:
    server = RealtimeServer(engine, port=0, **kw)
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
    yield from _serve(
        Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad, max_sessions=16)
    )


@pytest.fixture(scope="module")
def two_items_server() -> Iterator[RealtimeServer]:
    yield from _serve(Engine(stt="scripted", llm=TextThenTool(), tts="scripted"))


@pytest_asyncio.fixture(loop_scope="module", params=[False, True], ids=["ga", "beta"])
async def raw(request: pytest.FixtureRequest, server: RealtimeServer) -> AsyncIterator[Raw]:
    ws = await _connect(server, beta=request.param)
    try:
        client = Raw(ws, request.param)
        await client.until("session.created")
        yield client
    finally:
        await ws.close()


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _session(c: Raw, *, text: bool = False, tools: bool = False) -> dict[str, Any]:
    if c.beta:
        s: dict[str, Any] = {"modalities": ["text"] if text else ["audio", "text"]}
    else:
        s = {"type": "realtime", "output_modalities": ["text"] if text else ["audio"]}
    if tools:
        s["tools"] = [WEATHER_TOOL]
    return {"type": "session.update", "session": s}


async def _ask(c: Raw, text: str) -> list[dict[str, Any]]:
    """Add a user message, ask for a response; the events from the ask to response.done."""
    start = c.mark()
    await c.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        }
    )
    await c.send({"type": "response.create"})
    await c.until("response.done")
    return c.seen[start:]


def _skeleton(events: list[dict[str, Any]]) -> list[str]:
    """Event types with runs of the same delta collapsed to one."""
    out: list[str] = []
    for e in events:
        t = e["type"]
        if t.endswith(".delta") and out and out[-1] == t:
            continue
        out.append(t)
    return out


def _names(beta: bool) -> dict[str, str]:
    if beta:
        return {
            "added": "conversation.item.created",
            "audio": "response.audio",
            "transcript": "response.audio_transcript",
            "text": "response.text",
        }
    return {
        "added": "conversation.item.added",
        "audio": "response.output_audio",
        "transcript": "response.output_audio_transcript",
        "text": "response.output_text",
    }


def _item_done(beta: bool) -> list[str]:
    # Beta has no conversation.item.done.
    return [] if beta else ["conversation.item.done"]


async def test_text_answer_sequence(raw: Raw) -> None:
    n = _names(raw.beta)
    await raw.send(_session(raw, text=True))
    await raw.until("session.updated")
    events = await _ask(raw, "Hello there")
    assert _skeleton(events) == [
        n["added"],
        *_item_done(raw.beta),
        "response.created",
        "response.output_item.added",
        n["added"],
        "response.content_part.added",
        f"{n['text']}.delta",
        f"{n['text']}.done",
        "response.content_part.done",
        "response.output_item.done",
        *_item_done(raw.beta),
        "response.done",
    ]
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == "You said: Hello there. That is all I know."


async def test_audio_answer_sequence(raw: Raw) -> None:
    n = _names(raw.beta)
    await raw.send(_session(raw))
    await raw.until("session.updated")
    events = await _ask(raw, "Hello again")
    # Each clause: its transcript delta, then its audio.
    body = [f"{n['transcript']}.delta", f"{n['audio']}.delta"]
    skeleton = _skeleton(events)
    head = [
        n["added"],
        *_item_done(raw.beta),
        "response.created",
        "response.output_item.added",
        n["added"],
        "response.content_part.added",
    ]
    tail = [
        f"{n['audio']}.done",
        f"{n['transcript']}.done",
        "response.content_part.done",
        "response.output_item.done",
        *_item_done(raw.beta),
        "response.done",
    ]
    assert skeleton[: len(head)] == head, skeleton
    assert skeleton[-len(tail) :] == tail, skeleton
    middle = skeleton[len(head) : -len(tail)]
    assert middle and len(middle) % 2 == 0 and middle == body * (len(middle) // 2), middle


async def test_function_call_sequence(raw: Raw) -> None:
    n = _names(raw.beta)
    await raw.send(_session(raw, text=True, tools=True))
    await raw.until("session.updated")
    events = await _ask(raw, "What is the weather in Paris?")
    assert _skeleton(events) == [
        n["added"],
        *_item_done(raw.beta),
        "response.created",
        "response.output_item.added",
        n["added"],
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        *_item_done(raw.beta),
        "response.done",
    ]

    def first(kind: str, after: int = 0) -> tuple[int, dict[str, Any]]:
        return next((i, e) for i, e in enumerate(events) if i >= after and e["type"] == kind)

    at, out_added = first("response.output_item.added")
    added = out_added["item"]
    assert added["type"] == "function_call" and added["status"] == "in_progress"
    assert added["arguments"] == ""
    conv_added = first(n["added"], at)[1]["item"]
    assert conv_added["id"] == added["id"] and conv_added["status"] == "in_progress"
    assert conv_added["arguments"] == ""
    args_done = first("response.function_call_arguments.done")[1]
    assert args_done["arguments"] == '{"city":"Paris"}' and args_done["item_id"] == added["id"]
    out_done = first("response.output_item.done")[1]["item"]
    assert out_done["status"] == "completed" and out_done["arguments"] == '{"city":"Paris"}'


@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
async def test_two_output_items_follow_one_another(
    two_items_server: RealtimeServer, beta: bool
) -> None:
    n = _names(beta)
    ws = await _connect(two_items_server, beta=beta)
    try:
        c = Raw(ws, beta)
        await c.until("session.created")
        await c.send(_session(c, text=True, tools=True))
        await c.until("session.updated")
        events = await _ask(c, "Weather?")
    finally:
        await ws.close()
    assert _skeleton(events) == [
        n["added"],
        *_item_done(beta),
        "response.created",
        # The message, from start to end...
        "response.output_item.added",
        n["added"],
        "response.content_part.added",
        f"{n['text']}.delta",
        f"{n['text']}.done",
        "response.content_part.done",
        "response.output_item.done",
        *_item_done(beta),
        # ...then the function call.
        "response.output_item.added",
        n["added"],
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        *_item_done(beta),
        "response.done",
    ]
    indexes = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert indexes == [0, 1]
    output = events[-1]["response"]["output"]
    assert [o["type"] for o in output] == ["message", "function_call"]
    # What the client was told is what the conversation holds, in order.
    added = [e for e in events if e["type"] == n["added"]]
    for before, after in itertools.pairwise(added):
        assert after["previous_item_id"] == before["item"]["id"]


async def test_every_event_type_validates_strictly(raw: Raw, question: np.ndarray) -> None:
    """Drive one session through most of the protocol; `Raw.recv` checks each event."""
    c = raw
    if c.beta:
        # Beta has no idle timeout (nor its event).
        session: dict[str, Any] = {
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad"},
            "tools": [WEATHER_TOOL],
        }
    else:
        session = {
            "type": "realtime",
            "tools": [WEATHER_TOOL],
            "audio": {
                "input": {
                    "transcription": {"model": "gpt-4o-mini-transcribe"},
                    "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000},
                    "noise_reduction": {"type": "near_field"},
                },
                "output": {"voice": "marin"},
            },
        }
    await c.send({"type": "session.update", "session": session})
    await c.until("session.updated")
    # A spoken turn: VAD, commit, transcription, an audio answer.
    step = 2400
    for i in range(0, len(question), step):
        pcm = float32_to_pcm16(np.ascontiguousarray(question[i : i + step]))
        await c.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    await c.until("response.done", timeout=20)
    # Tools, retrieve, truncate, delete, clear, cancel and errors.
    events = await _ask(c, "What is the weather?")
    call = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    await c.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"},
        }
    )
    await c.send({"type": "response.create"})
    done = await c.until("response.done")
    answer = done["response"]["output"][0]["id"]
    await c.send({"type": "conversation.item.retrieve", "item_id": answer})
    await c.send(
        {
            "type": "conversation.item.truncate",
            "item_id": answer,
            "content_index": 0,
            "audio_end_ms": 50,
        }
    )
    await c.until("conversation.item.truncated")
    await c.send({"type": "conversation.item.delete", "item_id": answer})
    await c.until("conversation.item.deleted")
    await c.send({"type": "input_audio_buffer.clear"})
    await c.until("input_audio_buffer.cleared")
    await c.send({"type": "response.cancel"})
    assert (await c.until("error"))["error"]["code"] == "response_cancel_not_active"
    await c.send({"type": "no.such.event"})
    await c.until("error")
    await c.send({"type": "conversation.item.retrieve", "item_id": "missing"})
    await c.until("error")
    if not c.beta:
        # Idle: no speech for 5 s after the last response.
        await c.until("input_audio_buffer.timeout_triggered", timeout=10)
    seen = set(c.types())
    for kind in (
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "response.created",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.done",
        "error",
    ):
        assert kind in seen, kind


async def test_transcription_session_update_validates_strictly(server: RealtimeServer) -> None:
    ws = await _connect(server, beta=True)
    try:
        c = Raw(ws, True)
        await c.until("session.created")
        await c.send(
            {
                "type": "transcription_session.update",
                "session": {"input_audio_transcription": {"model": "whisper-1"}},
            }
        )
        await c.until("transcription_session.updated")
    finally:
        await ws.close()


# --- the closing handshake ------------------------------------------------------------


async def test_a_client_close_is_answered_with_the_same_code(server: RealtimeServer) -> None:
    for code in (1000, 4001):
        ws = await _connect(server)
        await ws.recv()
        await ws.close(code=code, reason="bye")
        # The server's answering Close frame echoes the code: no 1006.
        assert ws.protocol.close_rcvd is not None, (
            "the server dropped the connection without a Close"
        )
        assert ws.protocol.close_rcvd.code == code


async def test_session_limit_closes_with_1013(vad: Any) -> None:
    for server in _serve(
        Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad, max_sessions=1)
    ):
        first = await _connect(server)
        await first.recv()
        second = await _connect(server)
        error = json.loads(await second.recv())
        assert error["error"]["code"] == "session_limit_reached"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(second.recv(), 5)
        assert second.protocol.close_rcvd is not None and second.protocol.close_rcvd.code == 1013
        await first.close()


async def test_an_oversize_message_closes_with_1009(vad: Any) -> None:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad)
    for server in _serve(engine, max_message_bytes=1024):
        ws = await _connect(server)
        await ws.recv()
        big = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 4096})
        await ws.send(big)
        error = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error["error"]["code"] == "message_too_large"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009


async def test_server_stop_closes_with_1001(vad: Any) -> None:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=vad)
    server = RealtimeServer(engine, port=0)
    server.start()
    try:
        ws = await _connect(server)
        await ws.recv()
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        # Going away: a normal closure for clients (ConnectionClosedOK).
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1001
    finally:
        server.stop()


# --- clients written for the original project --------------------------------------------


def _wav16k(name: str) -> np.ndarray:
    with wave.open(str(AUDIO_DIR / name), "rb") as w:
        assert w.getframerate() == 16000
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def question() -> np.ndarray:
    """'What is the capital of France?' at 24 kHz, with silence around it."""
    speech = np.asarray(
        resample(_wav16k("q_capital_france.wav"), input_rate=16000, output_rate=24000),
        dtype=np.float32,
    )
    return np.concatenate([np.zeros(4800, np.float32), speech, np.zeros(36000, np.float32)])


async def _original_client_turn(server: RealtimeServer, audio16k: np.ndarray) -> dict[str, Any]:
    """What the original project's synthetic client does: no session.update, 16 kHz PCM16
    in 20 ms appends, 1.5 s of silence, then read until response.done."""
    ws = await _connect(server)
    info: dict[str, Any] = {"transcript_in": None, "transcript_out": ""}
    try:
        first = json.loads(await ws.recv())
        assert first["type"] == "session.created"
        info["format"] = first["session"]["audio"]["input"]["format"]
        pcm = float32_to_pcm16(
            np.concatenate([audio16k, np.zeros(24000, np.float32)]).astype(np.float32)
        )
        for i in range(0, len(pcm), 640):
            chunk = base64.b64encode(pcm[i : i + 640]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if event["type"] == "conversation.item.input_audio_transcription.completed":
                info["transcript_in"] = event["transcript"]
            elif event["type"] == "response.output_audio_transcript.done":
                info["transcript_out"] = event["transcript"]
            elif event["type"] == "response.done":
                return info
    finally:
        await ws.close()


async def test_a_client_of_the_original_project_with_compat_original(vad: Any) -> None:
    """16 kHz undeclared, transcripts expected without asking: `--compat original`."""
    from speech_to_speech.handlers.registry import create_handler

    stt = create_handler("stt", "faster-whisper")
    stt.setup()
    audio = _wav16k("q_capital_france.wav")
    engine = Engine(stt=stt, llm="scripted", tts="scripted", vad=vad)
    # OpenAI's defaults: the audio is taken for 24 kHz and no transcript is sent.
    for server in _serve(engine):
        plain = await _original_client_turn(server, audio)
    assert plain["format"] == {"type": "audio/pcm", "rate": 24000}
    assert plain["transcript_in"] is None
    # The server-wide defaults the original project's clients expect.
    compat = {
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
        "speech_to_speech": {"always_transcribe": True},
    }
    for server in _serve(engine, defaults=compat):
        turn = await _original_client_turn(server, audio)
    assert turn["format"] == {"type": "audio/pcm", "rate": 16000}
    heard = turn["transcript_in"]
    # Whisper tiny.en hears this synthetic voice as "... capital and friends?".
    assert wer("What is the capital of France?", heard) <= 0.35, heard
    assert turn["transcript_out"].startswith("You said:")
