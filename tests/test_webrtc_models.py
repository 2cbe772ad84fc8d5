"""Spoken conversations over WebRTC on the bundled models: aiortc, and a real browser.

The server is the command line's (``build_server`` on the flags' defaults,
the bundled Whisper tiny.en, SmolLM2 and Piper). Two clients written by
others hold a conversation with it over ``POST /v1/realtime/calls``:

* aiortc: a spoken question as its audio track; the events on ``oai-events``
  validated with the SDK's types; the answer track transcribed back to the
  words the agent said; then a barge-in mid-answer.
* headless Chromium (Debian's ``chromium``), its fake microphone playing a
  question from ``../shared/audio``, driven over the DevTools protocol: it
  opens ``GET /``, connects over WebRTC, and the page shows the user's
  transcript and the reply, with audio played. With auth on (scripted models),
  the page asks for the key, says when it is missing or wrong, and calls over
  WebRTC and the WebSocket with an ephemeral key it minted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
import time
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from speech_checks import REFERENCES, free_port, read_wav, serve, wer
from test_realtime_conformance import strict

from speech_to_speech import RealtimeServer, resample
from speech_to_speech.flags import defaults
from speech_to_speech.handlers.registry import create_handler
from speech_to_speech.pipeline import engine_from_args
from speech_to_speech.server import build_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
from _webrtc_client import RATE, Call, Microphone, open_call

websockets = pytest.importorskip("websockets")

AUDIO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
DOCS = Path(__file__).resolve().parents[1] / "docs"

pytestmark = pytest.mark.asyncio(loop_scope="module")


def clip(name: str) -> np.ndarray:
    path = AUDIO_DIR / name
    if not path.exists():
        pytest.skip("shared test audio not found")
    return np.asarray(resample(read_wav(path), input_rate=16000, output_rate=RATE), np.float32)


@pytest.fixture(scope="module")
def server() -> Iterator[RealtimeServer]:
    args = defaults()
    args.port = 0
    engine, backends = engine_from_args(args)
    server = build_server(args, engine, backends)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def whisper() -> Any:
    stt = create_handler("stt", "faster-whisper")
    stt.setup()
    return stt


def heard(stt: Any, audio48: np.ndarray) -> str:
    audio16 = np.asarray(resample(audio48.astype(np.float32), input_rate=RATE, output_rate=16000))
    return " ".join(t.text for t in stt.transcribe(audio16) if t.final)


def events(call: Call) -> list[dict[str, Any]]:
    for _, ev in call.events:
        strict(ev, beta=False)
    return [ev for _, ev in call.events]


async def test_aiortc_holds_a_spoken_conversation_and_barges_in(
    server: RealtimeServer, whisper: Any
) -> None:
    mic = Microphone()
    session = {
        "type": "realtime",
        # Whisper tiny.en hears English only: the answer must be English to be heard back
        # (SmolLM2 answers the capital of France in broken French and the ocean fact with a
        # run of digits that Whisper cannot hear back, over the WebSocket too: a book it is).
        "instructions": "You are a helpful assistant. Answer in one short plain English sentence.",
        "audio": {"input": {"transcription": {"model": "whisper-1"}}},
    }
    async with open_call(server.http_url, mic, session=session) as call:
        await call.next_event("session.created")
        # Turn 1: a question, a spoken answer.
        mic.say(clip("q_book.wav"))
        done = await call.next_event("response.done", timeout=90)
        done_at = time.perf_counter()
        await call.next_event("output_audio_buffer.stopped", timeout=60)
        seen = events(call)
        user = next(
            e for e in seen if e["type"] == "conversation.item.input_audio_transcription.completed"
        )
        assert wer(REFERENCES["q_book.wav"], user["transcript"]) <= 0.5, user
        assert done["response"]["status"] == "completed"
        said = done["response"]["output"][0]["content"][0]["transcript"]
        assert said.strip()
        assert "response.output_audio.delta" not in [e["type"] for e in seen]
        # The answer track says what the transcript says.
        answer = call.received()
        assert len(answer) > RATE // 2
        back = heard(whisper, answer)
        assert wer(said, back) <= 0.35, (user["transcript"], said, back)
        assert call.first_rtp_after(done_at + 0.2 + len(answer) / RATE) is None

        # Turn 2: a long answer, interrupted while it plays.
        call.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "You tell long stories. Always answer with at least "
                    "eight long sentences.",
                },
            }
        )
        await call.next_event("session.updated")
        mic.say(clip("q_ocean_fact.wav"))
        started = await call.next_event("output_audio_buffer.started", timeout=90)
        await asyncio.sleep(0.5)
        mic.say(clip("interrupt_wait.wav"))
        cleared = await call.next_event("output_audio_buffer.cleared", timeout=20)
        truncated = await call.next_event("conversation.item.truncated", timeout=10)
        seen = events(call)
    assert cleared["response_id"] == started["response_id"]
    cut = next(
        e
        for e in seen
        if e["type"] == "response.done" and e["response"]["id"] == started["response_id"]
    )
    assert cut["response"]["status"] == "cancelled", cut["response"]["status"]
    assert cut["response"]["status_details"]["reason"] == "turn_detected"
    assert truncated["item_id"] == cut["response"]["output"][0]["id"]
    assert 300 < truncated["audio_end_ms"] < 5000, truncated


# --- a real browser -----------------------------------------------------------------------


def _fake_mic_wav(path: Path) -> None:
    """The question at 48 kHz after a second of silence, then a long silence: Chromium
    loops the file, and the question must be asked once."""
    speech = clip("q_book.wav")
    audio = np.concatenate([np.zeros(RATE), speech, np.zeros(RATE * 60)])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(audio * 32767, -32768, 32767).astype("<i2").tobytes())


class DevTools:
    """A page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    async def eval(self, expression: str) -> Any:
        r = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    tmp = tmp_path_factory.mktemp("chromium")
    wav = tmp / "question_48k.wav"
    _fake_mic_wav(wav)
    port = free_port()
    command = [
        exe,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        f"--remote-debugging-port={port}",
        f"--user-data-dir={tmp / 'profile'}",
        "--window-size=1280,860",
        "about:blank",
    ]
    targets = f"http://127.0.0.1:{port}/json"
    with serve(command, targets, tmp / "chromium.log"):
        with urllib.request.urlopen(targets, timeout=5) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        assert pages, "Chromium opened no page"
        yield pages[0]["webSocketDebuggerUrl"], tmp


async def test_chromium_talks_to_the_page_over_webrtc(
    server: RealtimeServer, chromium: tuple[str, Path]
) -> None:
    debugger, tmp = chromium
    async with websockets.connect(debugger, max_size=None) as ws:
        page = DevTools(ws)
        await page.call(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=860,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.call("Page.enable")
        await page.call("Page.navigate", url=f"{server.http_url}/?autostart=1")
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            state = await page.eval(
                "JSON.stringify({connected: !!(window.s2s && s2s.connected),"
                " transport: window.s2s && s2s.transport,"
                " msgs: window.s2s ? s2s.transcriptText() : [],"
                " latencies: window.s2s ? s2s.latencies : [], peak: window.s2s ? s2s.agentPeak : 0,"
                " events: window.s2s ? s2s.events.length : 0})"
            )
            state = json.loads(state)
            agents = [m for m in state["msgs"] if m["who"] == "agent" and m["text"].strip("…")]
            if agents and state["latencies"] and state["peak"] > 0.01:
                break
        # Let the answer play a little longer for the picture.
        await asyncio.sleep(2.0)
        received = await page.eval("s2s.inboundBytes()")
        state = json.loads(
            await page.eval(
                "JSON.stringify({msgs: s2s.transcriptText(), latencies: s2s.latencies,"
                " peak: s2s.agentPeak, transport: s2s.transport})"
            )
        )
        shot = await page.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        (tmp / "page.png").write_bytes(png)
        if os.environ.get("S2S_UPDATE_SCREENSHOT") == "1":
            DOCS.mkdir(exist_ok=True)
            (DOCS / "page.png").write_bytes(png)
        await page.eval("s2s.connected && document.getElementById('connect').click()")
    assert state["transport"] == "webrtc"
    users = [m["text"] for m in state["msgs"] if m["who"] == "user"]
    agents = [m for m in state["msgs"] if m["who"] == "agent"]
    assert users and wer(REFERENCES["q_book.wav"], users[0]) <= 0.5, state
    assert agents and agents[0]["text"].strip() and agents[0]["text"] != "…", state
    # The page measured the turn, and the answer was heard: WebAudio level and RTP bytes.
    assert state["latencies"] and 0 < state["latencies"][0] < 10_000, state
    assert "ms" in agents[0]["meta"], state
    assert state["peak"] > 0.01, state
    assert received > 2000, received


async def _wait_for(page: DevTools, expression: str, timeout: float = 30.0) -> Any:
    """Poll ``expression`` in the page until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await page.eval(expression)
        if value:
            return value
        assert time.monotonic() < deadline, f"the page never got {expression}"
        await asyncio.sleep(0.2)


async def test_the_page_asks_for_the_key_and_calls_with_an_ephemeral_one(
    chromium: tuple[str, Path],
) -> None:
    from speech_to_speech import Engine
    from speech_to_speech.vad import load_silero_vad

    key = "sk-page-test"
    engine = Engine(stt="scripted", llm="scripted", tts="scripted", vad=load_silero_vad())
    server = RealtimeServer(engine, port=0, webrtc_port=0, api_key=key)
    server.start()
    debugger, _ = chromium
    try:
        async with websockets.connect(debugger, max_size=None) as ws:
            page = DevTools(ws)
            await page.call("Page.enable")
            await page.call("Page.navigate", url=f"{server.http_url}/")
            await _wait_for(page, "window.s2s !== undefined && document.readyState === 'complete'")
            # Record what the page sends where, with which key.
            await page.eval(
                "window.sent = []; const f = window.fetch; window.fetch = (u, o) => {"
                " sent.push([String(u), (o && o.headers && o.headers.Authorization) || '']);"
                " return f(u, o); }; true"
            )
            toast = "document.getElementById('toast').textContent"
            click = "document.getElementById('connect').click(); true"
            # No key: the page says the server needs one, and stays disconnected.
            await page.eval(click)
            assert "needs its API key" in await _wait_for(page, toast)
            # A wrong key: refused, said so.
            await page.eval(f"document.getElementById('apiKey').value = 'wrong'; {click}")
            assert "refused" in await _wait_for(page, f"{toast}.includes('refused') && {toast}")
            assert not await page.eval("s2s.connected")
            # The server's key: the page mints an ephemeral key and calls with it, over
            # WebRTC, then over the WebSocket.
            for transport in ("webrtc", "websocket"):
                await page.eval(
                    f"document.getElementById('apiKey').value = '{key}';"
                    f" document.getElementById('transport').value = '{transport}'; {click}"
                )
                await _wait_for(page, "s2s.connected && s2s.events.length > 0")
                assert await page.eval("s2s.transport") == transport
                await page.eval(click)  # hang up
                await _wait_for(page, "!s2s.connected")
            sent = await page.eval("sent")
    finally:
        server.stop()
    mints = [auth for url, auth in sent if url.endswith("/v1/realtime/client_secrets")]
    calls = [auth for url, auth in sent if "/v1/realtime/calls" in url]
    assert mints and all(a in ("", "Bearer wrong", f"Bearer {key}") for a in mints), mints
    assert len(calls) == 1 and calls[0].startswith("Bearer ek_"), calls
