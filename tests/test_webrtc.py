"""The WebRTC transport (`POST /v1/realtime/calls`), driven by aiortc (a stack written by others).

The server is the core's echo harness (`_core.WebRtcEchoServer`): the real
UDP endpoint, HTTP handler and call tasks, with every decoded audio frame
sent back on the call's track and every `oai-events` JSON message echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from scipy import signal

from speech_to_speech import resample
from speech_to_speech._core import WebRtcEchoServer

AUDIO_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
RATE = 48000
FRAME = 960

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _speech(name: str = "q_capital_france.wav") -> np.ndarray:
    path = AUDIO_DIR / name
    if not path.exists():
        pytest.skip("shared test audio not found")
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 16000
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    return np.asarray(resample(audio, input_rate=16000, output_rate=RATE), dtype=np.float32)


class ArrayTrack(MediaStreamTrack):
    """A microphone that plays `samples` (48 kHz) in real time, then silence."""

    kind = "audio"

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__()
        self._pcm = np.clip(samples * 32767.0, -32768, 32767).astype("<i2")
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self._pcm[self._pts : self._pts + FRAME]
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), "<i2")])
        # Stereo with the same samples in both channels: a mono frame would be
        # upmixed by aiortc's encoder (libswresample), 3 dB down.
        stereo = np.repeat(chunk, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


@dataclass
class Client:
    """One aiortc peer connection to the server, with what it received."""

    pc: RTCPeerConnection
    call_id: str = ""
    answer: str = ""
    channel: Any = None
    messages: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    audio: list[np.ndarray] = field(default_factory=list)
    audio_times: list[float] = field(default_factory=list)
    got_audio: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def received(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)

    async def next_message(self, kind: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next message (of type `kind`, skipping others)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            msg = await asyncio.wait_for(self.messages.get(), timeout=max(left, 0.01))
            if kind is None or msg.get("type") == kind:
                return msg

    async def samples_until(self, n: int, timeout: float = 20.0) -> np.ndarray:
        """Wait until `n` samples have been received."""
        deadline = time.monotonic() + timeout
        while sum(len(a) for a in self.audio) < n:
            self.got_audio.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"only {sum(len(a) for a in self.audio)} of {n} samples came back"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.got_audio.wait(), timeout=min(left, 1.0))
        return self.received()


def _offer_pc(track: MediaStreamTrack | None, audio: bool, channel: bool) -> Client:
    # No STUN server: host candidates only (aiortc would otherwise ask Google's).
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client = Client(pc=pc)
    if track is not None:
        pc.addTrack(track)
    elif audio:
        pc.addTransceiver("audio", direction="recvonly")
    if channel:
        client.channel = pc.createDataChannel("oai-events")

        @client.channel.on("open")
        def _open() -> None:
            client.opened.set()

        @client.channel.on("message")
        def _message(data: str | bytes) -> None:
            client.messages.put_nowait(json.loads(data))

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "connected":
            client.connected.set()
        if pc.connectionState in ("closed", "failed"):
            client.ended.set()

    @pc.on("track")
    def _track(remote: MediaStreamTrack) -> None:
        async def read() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await remote.recv()
                    pcm = frame.to_ndarray().astype(np.float32).reshape(-1) / 32768.0
                    channels = len(frame.layout.channels)
                    mono = pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm
                    assert frame.sample_rate == RATE
                    client.audio.append(mono)
                    client.audio_times.append(time.monotonic())
                    client.got_audio.set()

        client.tasks.append(asyncio.ensure_future(read()))

    return client


async def _closed(server: WebRtcEchoServer, call_id: str) -> str | None:
    """How call `call_id` ended, waiting in a thread so the event loop (and
    aiortc with it) keeps running meanwhile."""
    return await asyncio.to_thread(server.wait_closed, call_id, 10.0)


async def _post(url: str, body: bytes | str, content_type: str | None) -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    async with httpx.AsyncClient(timeout=10.0) as http:
        return await http.post(f"{url}/v1/realtime/calls", content=body, headers=headers)


async def _offer(client: Client) -> str:
    offer = await client.pc.createOffer()
    await client.pc.setLocalDescription(offer)
    return client.pc.localDescription.sdp


@contextlib.asynccontextmanager
async def connect(
    server: WebRtcEchoServer,
    track: MediaStreamTrack | None = None,
    *,
    audio: bool = True,
    channel: bool = True,
) -> AsyncIterator[Client]:
    """A connected call (data channel open when there is one)."""
    client = _offer_pc(track, audio, channel)
    try:
        response = await _post(server.url, await _offer(client), "application/sdp")
        assert response.status_code == 201, response.text
        assert response.headers["content-type"] == "application/sdp"
        location = response.headers["location"]
        assert location.startswith("/v1/realtime/calls/rtc_")
        client.call_id = location.rsplit("/", 1)[1]
        client.answer = response.text
        answer = RTCSessionDescription(sdp=response.text, type="answer")
        await client.pc.setRemoteDescription(answer)
        await asyncio.wait_for(client.connected.wait(), timeout=10)
        if channel:
            await asyncio.wait_for(client.opened.wait(), timeout=10)
        yield client
    finally:
        for t in client.tasks:
            t.cancel()
        await client.pc.close()


@pytest.fixture(scope="module")
def server() -> Iterator[WebRtcEchoServer]:
    with WebRtcEchoServer() as s:
        yield s


def _envelope(x: np.ndarray, rate: int, ms: int = 20) -> np.ndarray:
    hop = rate * ms // 1000
    n = len(x) // hop
    return np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1))


def _best_alignment(sent: np.ndarray, got: np.ndarray, rate: int) -> tuple[float, int]:
    """Peak normalised cross-correlation of `got` against `sent`, and its lag (samples)."""
    corr = signal.correlate(got, sent, mode="valid", method="fft")
    lag = int(np.argmax(np.abs(corr)))
    window = got[lag : lag + len(sent)]
    score = float(corr[lag] / (np.linalg.norm(sent) * np.linalg.norm(window) + 1e-12))
    return score, lag


@pytest.mark.parametrize("echo_rate", [48000, 24000])
async def test_spoken_question_comes_back_as_the_same_speech(echo_rate: int) -> None:
    speech = _speech()
    with WebRtcEchoServer(echo_rate=echo_rate) as server:
        async with connect(server, ArrayTrack(speech)) as client:
            # The question, plus up to a second of the path's delay.
            got = await client.samples_until(len(speech) + RATE)
        assert await _closed(server, client.call_id) == "hang_up"
        latencies = np.array(server.latencies_ms())
    # Compare at 16 kHz: speech, not Opus's high band.
    sent16 = np.asarray(resample(speech, input_rate=RATE, output_rate=16000))
    got16 = np.asarray(resample(got.astype(np.float32), input_rate=RATE, output_rate=16000))
    score, lag = _best_alignment(sent16, got16, 16000)
    assert score > 0.8, f"echo correlates {score:.2f} with the question"
    # The echo starts when the question does (the received track starts with it).
    assert lag < 16000 * 0.3, f"echo lags by {lag / 16:.0f} ms"
    env_sent = _envelope(sent16, 16000)
    env_got = _envelope(got16[lag : lag + len(sent16)], 16000)
    assert np.corrcoef(env_sent, env_got)[0, 1] > 0.95
    level = np.sqrt(np.mean(got16[lag : lag + len(sent16)] ** 2)) / np.sqrt(np.mean(sent16**2))
    assert 0.7 < level < 1.3, f"echo level {level:.2f} of the question's"
    # Every frame went through the server: decoded, queued, paced and encoded.
    assert len(latencies) >= len(speech) // FRAME
    p50, p99 = np.percentile(latencies, [50, 99])
    print(f"echo_rate={echo_rate}: server in->out p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p50 < 5.0, f"server path p50 {p50:.1f} ms"


async def test_events_ride_oai_events_both_ways(server: WebRtcEchoServer) -> None:
    async with connect(server) as client:
        sent = {"type": "session.update", "event_id": "evt_1", "session": {"instructions": "Hi"}}
        client.channel.send(json.dumps(sent))
        assert await client.next_message() == sent
        # Text that is not JSON is answered with the protocol's error, and the call goes on.
        client.channel.send("this is not json")
        err = await client.next_message()
        assert err["type"] == "error"
        assert err["error"]["code"] == "invalid_json"
        assert err["error"]["type"] == "invalid_request_error"
        # A binary message that is not text gets an error too.
        client.channel.send(b"\xff\xfe\x00")
        err = await client.next_message()
        assert (err["type"], err["error"]["code"]) == ("error", "invalid_json")
        big = {"type": "conversation.item.create", "item": {"text": "x" * 100_000}}
        client.channel.send(json.dumps(big))
        assert await client.next_message() == big
    assert await _closed(server, client.call_id) == "hang_up"


async def test_clear_stops_the_outgoing_audio_at_once(server: WebRtcEchoServer) -> None:
    async with connect(server, audio=True) as client:
        client.channel.send(json.dumps({"type": "echo.tone", "seconds": 5, "hz": 440}))
        await client.next_message("output_audio_buffer.started")
        await client.samples_until(RATE // 2)
        client.channel.send(json.dumps({"type": "output_audio_buffer.clear"}))
        cleared = await client.next_message("output_audio_buffer.cleared")
        cleared_at = time.monotonic()
        # The backlog was dropped, not sent: what came and what was dropped
        # make up the tone, and little came after the clear.
        assert cleared["dropped_ms"] > 3000
        client.channel.send(json.dumps({"type": "ping"}))
        await client.next_message("ping")
        await asyncio.sleep(0.5)  # silence must last: nothing more may arrive
        got_ms = len(client.received()) * 1000 / RATE
        assert 4800 < got_ms + cleared["dropped_ms"] < 5200, (got_ms, cleared["dropped_ms"])
        late = [t for t in client.audio_times if t > cleared_at + 0.1]
        assert not late, f"{len(late)} frames arrived after the clear"


async def test_hang_up_either_side_ends_the_call(server: WebRtcEchoServer) -> None:
    async with connect(server) as client:
        assert server.calls >= 1
        client.channel.send(json.dumps({"type": "echo.hang_up"}))
        assert await _closed(server, client.call_id) == "local"
        await asyncio.wait_for(client.ended.wait(), timeout=10)
    async with connect(server) as client:
        pass
    assert await _closed(server, client.call_id) == "hang_up"
    assert server.calls == 0


async def test_one_port_on_every_interface_and_the_public_ip_advertised() -> None:
    with WebRtcEchoServer(webrtc_host="0.0.0.0", public_ip="203.0.113.7") as server:
        port = server.webrtc_port
        assert f"127.0.0.1:{port}" in server.candidates
        assert f"203.0.113.7:{port}" in server.candidates
        assert all(c.endswith(f":{port}") for c in server.candidates)
        async with connect(server) as client:
            assert f" 203.0.113.7 {port} typ host" in client.answer
            assert "a=ice-lite" in client.answer
            client.channel.send(json.dumps({"type": "hello"}))
            assert await client.next_message() == {"type": "hello"}
        assert await _closed(server, client.call_id) == "hang_up"


async def test_ice_failure_ends_a_call_that_never_connects() -> None:
    with WebRtcEchoServer(connect_timeout=1.0) as server:
        client = _offer_pc(None, audio=True, channel=True)
        try:
            response = await _post(server.url, await _offer(client), "application/sdp")
            assert response.status_code == 201
            call_id = response.headers["location"].rsplit("/", 1)[1]
            # The answer is never applied: no connectivity check reaches the server.
            assert server.calls == 1
            assert await _closed(server, call_id) == "ice_failed"
            assert server.calls == 0
        finally:
            await client.pc.close()


def _strip_opus(sdp: str) -> str:
    """The offer's audio without Opus: only the G.711 codecs aiortc also offers."""
    lines = sdp.splitlines()
    opus = {ln.split()[0].split(":")[1] for ln in lines if "opus/48000" in ln.lower()}
    opus_lines = tuple(f"a={a}:{pt}" for a in ("rtpmap", "fmtp", "rtcp-fb") for pt in opus)
    out = []
    for line in lines:
        if line.startswith("m=audio"):
            parts = line.split()
            out.append(" ".join(parts[:3] + [p for p in parts[3:] if p not in opus]))
        elif line.split(" ")[0] not in opus_lines:
            out.append(line)
    return "\r\n".join(out) + "\r\n"


async def _refused(
    server: WebRtcEchoServer, body: str, content_type: str | None, status: int, code: str
) -> str:
    response = await _post(server.url, body, content_type)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    err = response.json()["error"]
    assert err["code"] == code, err
    assert err["type"] == "invalid_request_error"
    assert err["message"]
    return str(err["message"])


async def test_bad_offers_get_clear_errors_and_calls_go_on(server: WebRtcEchoServer) -> None:
    async with connect(server) as survivor:
        await _refused(server, "hello", "application/sdp", 400, "invalid_sdp")
        await _refused(server, "v=0\r\nm=audio nonsense\r\n", "application/sdp", 400, "invalid_sdp")
        await _refused(server, "", "application/sdp", 400, "invalid_sdp")
        await _refused(server, "{}", "application/json", 415, "unsupported_media_type")

        no_audio = _offer_pc(None, audio=False, channel=True)
        try:
            msg = await _refused(server, await _offer(no_audio), "application/sdp", 400, "no_audio")
            assert "audio" in msg
        finally:
            await no_audio.pc.close()

        pcmu_only = _offer_pc(ArrayTrack(np.zeros(RATE, np.float32)), audio=True, channel=True)
        try:
            sdp = _strip_opus(await _offer(pcmu_only))
            assert "opus" not in sdp.lower() and "PCMU/8000" in sdp
            msg = await _refused(server, sdp, "application/sdp", 400, "unsupported_codec")
            assert "PCMU/8000" in msg
        finally:
            await pcmu_only.pc.close()

        # The call that was up all along still works.
        survivor.channel.send(json.dumps({"type": "still.there"}))
        assert await survivor.next_message() == {"type": "still.there"}
    assert await _closed(server, survivor.call_id) == "hang_up"


async def test_multipart_form_with_sdp_and_session(server: WebRtcEchoServer) -> None:
    client = _offer_pc(None, audio=True, channel=True)
    try:
        sdp = await _offer(client)
        session = {"type": "realtime", "instructions": "Be brief."}
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.post(
                f"{server.url}/v1/realtime/calls",
                files={"sdp": (None, sdp), "session": (None, json.dumps(session))},
            )
        assert response.status_code == 201, response.text
        answer = RTCSessionDescription(sdp=response.text, type="answer")
        await client.pc.setRemoteDescription(answer)
        await asyncio.wait_for(client.opened.wait(), timeout=10)
        client.channel.send(json.dumps({"type": "hello"}))
        assert await client.next_message() == {"type": "hello"}
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.post(
                f"{server.url}/v1/realtime/calls", files={"session": (None, "{}")}
            )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "missing_required_parameter"
    finally:
        await client.pc.close()


async def test_more_calls_than_the_limit_are_refused() -> None:
    with WebRtcEchoServer(max_calls=1) as server:
        async with connect(server) as first:
            second = _offer_pc(None, audio=True, channel=True)
            try:
                offer = await _offer(second)
                await _refused(server, offer, "application/sdp", 429, "session_limit_reached")
            finally:
                await second.pc.close()
            first.channel.send(json.dumps({"type": "still.there"}))
            assert await first.next_message() == {"type": "still.there"}
        assert await _closed(server, first.call_id) == "hang_up"
        # The slot is free again.
        async with connect(server):
            pass
