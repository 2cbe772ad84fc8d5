"""An aiortc client for ``POST /v1/realtime/calls``: a microphone, the answer track, the events.

aiortc is a WebRTC stack written by others, so what it accepts is what a
browser-grade client accepts. Used by ``e2e_latency.py --transport webrtc``
and by the tests (``tests/test_webrtc_session.py``), which is why it keeps
the arrival time of everything it receives:

* ``Microphone``: a 48 kHz track that plays what ``say()`` queued, in real
  time on an absolute schedule, and silence in between; ``time_of(n)`` is
  when sample ``n`` went to the encoder.
* ``Call``: the peer connection, the ``oai-events`` channel (``events``,
  each with its arrival time), the answer's RTP packets as they reach the
  socket (``rtp_times``, before aiortc's jitter buffer, which holds a burst's
  first frame until four more have come) and its decoded audio
  (``audio``, after it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

RATE = 48_000
FRAME = 960  # 20 ms


class Microphone(MediaStreamTrack):
    """A microphone that plays the queued speech in real time, silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue = np.zeros(0, np.float32)
        self._pts = 0
        self._start: float | None = None

    def say(self, samples: np.ndarray[Any, np.dtype[np.float32]]) -> int:
        """Queue ``samples`` (48 kHz) after what is queued; returns the index
        (in the track's samples) of the first of them."""
        first = self._pts + len(self._queue)
        self._queue = np.concatenate([self._queue, samples.astype(np.float32)])
        return first

    @property
    def sent(self) -> int:
        """Samples handed to the encoder so far."""
        return self._pts

    def queued(self) -> int:
        """Samples still waiting to be played."""
        return len(self._queue)

    def time_of(self, index: int) -> float:
        """When sample ``index`` goes (went) to the encoder, on ``time.perf_counter``."""
        start = self._start if self._start is not None else time.perf_counter()
        return start + index / RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.perf_counter()
        wait = self._start + self._pts / RATE - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self._queue[:FRAME]
        self._queue = self._queue[FRAME:]
        if len(chunk) < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), np.float32)])
        pcm = np.clip(chunk * 32767.0, -32768, 32767).astype("<i2")
        # Stereo with the same samples in both channels: a mono frame would be
        # upmixed by aiortc's encoder (libswresample), 3 dB down.
        frame = av.AudioFrame.from_ndarray(np.repeat(pcm, 2).reshape(1, -1), "s16", "stereo")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


class CallRefused(Exception):
    """The server answered the offer with an error: ``status`` and its ``error`` object."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{status}: {error}")
        self.status = status
        self.error = error


@dataclass
class Call:
    """One call: the peer connection and what came back, with arrival times."""

    pc: RTCPeerConnection
    channel: Any = None
    call_id: str = ""
    answer_sdp: str = ""
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    rtp_times: list[float] = field(default_factory=list)
    audio: list[tuple[float, np.ndarray[Any, np.dtype[np.float32]]]] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _seen: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def next_event(self, kind: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The next event not yet taken (of type ``kind``, passing over others)."""
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.events):
                _, ev = self.events[self._seen]
                self._seen += 1
                if kind is None or ev.get("type") == kind:
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [e["type"] for _, e in self.events[-12:]]
                raise TimeoutError(f"no {kind or 'event'} in {timeout} s; last: {seen}")
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(left, 0.5))

    def types(self) -> list[str]:
        return [e["type"] for _, e in self.events]

    def received(self, since: float = 0.0) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The decoded answer audio that arrived after ``since`` (48 kHz mono)."""
        chunks = [a for t, a in self.audio if t >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def first_rtp_after(self, t: float) -> float | None:
        return next((x for x in self.rtp_times if x >= t), None)

    def first_audio_after(self, t: float) -> float | None:
        return next((x for x, _ in self.audio if x >= t), None)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


def _peer(mic: MediaStreamTrack | None, audio: bool, channel: bool) -> Call:
    # No STUN server: host candidates only (aiortc would otherwise ask Google's).
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    call = Call(pc=pc)
    if mic is not None:
        pc.addTrack(mic)
    elif audio:
        pc.addTransceiver("audio", direction="recvonly")
    if channel:
        call.channel = pc.createDataChannel("oai-events")

        @call.channel.on("open")
        def _open() -> None:
            call.opened.set()

        @call.channel.on("message")
        def _message(data: str | bytes) -> None:
            call.events.append((time.perf_counter(), json.loads(data)))
            call._arrived.set()

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "connected":
            call.connected.set()
        if pc.connectionState in ("closed", "failed"):
            call.ended.set()

    @pc.on("track")
    def _track(remote: MediaStreamTrack) -> None:
        receiver = next(r for r in pc.getReceivers() if r.track is remote)
        handle = receiver._handle_rtp_packet  # aiortc's per-packet entry point

        async def on_packet(packet: Any, arrival_time_ms: int) -> None:
            call.rtp_times.append(time.perf_counter())
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = on_packet  # type: ignore[method-assign]

        async def read() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await remote.recv()
                    pcm = frame.to_ndarray().astype(np.float32).reshape(-1) / 32768.0
                    channels = len(frame.layout.channels)
                    mono = pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm
                    call.audio.append((time.perf_counter(), mono.astype(np.float32)))

        call._tasks.append(asyncio.ensure_future(read()))

    return call


async def offer_sdp(call: Call) -> str:
    offer = await call.pc.createOffer()
    await call.pc.setLocalDescription(offer)
    return str(call.pc.localDescription.sdp)


async def post_offer(
    base_url: str,
    sdp: str,
    *,
    key: str | None = None,
    session: dict[str, Any] | None = None,
    query: str = "",
    verify: Any = True,
) -> httpx.Response:
    """``POST /v1/realtime/calls``: the SDP itself, or the form with ``session``."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"{base_url}/v1/realtime/calls{query}"
    async with httpx.AsyncClient(timeout=10.0, verify=verify) as http:
        if session is None:
            headers["Content-Type"] = "application/sdp"
            return await http.post(url, content=sdp, headers=headers)
        form = {"sdp": (None, sdp), "session": (None, json.dumps(session))}
        return await http.post(url, files=form, headers=headers)


@contextlib.asynccontextmanager
async def open_call(
    base_url: str,
    mic: MediaStreamTrack | None = None,
    *,
    key: str | None = None,
    session: dict[str, Any] | None = None,
    query: str = "",
    audio: bool = True,
    channel: bool = True,
    timeout: float = 10.0,
) -> AsyncIterator[Call]:
    """A connected call (its data channel open when it has one); hung up at the end.
    Raises ``CallRefused`` when the server refuses the offer."""
    call = _peer(mic, audio, channel)
    try:
        response = await post_offer(
            base_url, await offer_sdp(call), key=key, session=session, query=query
        )
        if response.status_code != 201:
            raise CallRefused(response.status_code, response.json().get("error", {}))
        call.call_id = response.headers["location"].rsplit("/", 1)[1]
        call.answer_sdp = response.text
        answer = RTCSessionDescription(sdp=response.text, type="answer")
        await call.pc.setRemoteDescription(answer)
        await asyncio.wait_for(call.connected.wait(), timeout=timeout)
        if channel:
            await asyncio.wait_for(call.opened.wait(), timeout=timeout)
        yield call
    finally:
        await call.close()
