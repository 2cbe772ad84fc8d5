"""Soak test of the Realtime server: N sessions for M minutes, every kind of traffic mixed.

The server (scripted STT/LLM/TTS, the real Silero VAD) runs in a child process
so that its memory, file descriptors and threads can be read from /proc. Each
client, in this process, loops until the time is up, picking at random (seeded):

* ``turn``: speech streamed at real-time pace in 40 ms appends, then silence;
  the VAD ends the turn and the response must complete;
* ``barge_in``: a text question answered slowly, speech streamed over the
  answer once its first audio arrives; the response must end (cancelled, or
  completed if it was already done);
* ``truncate``: a spoken answer, then ``conversation.item.truncate`` of it;
* ``tool``: a question the scripted model answers with a ``get_weather``
  call, its output sent back, and the follow-up response;
* ``bad``: invalid JSON, an unknown event, bad base64, an odd-length append:
  each must be answered with an ``error`` event naming it, and nothing else;
* ``reconnect``: the connection closed, and a new one opened.

Figures (``--json`` prints them as one JSON object on stdout):

* ``rss_growth_percent``: server RSS from minute 2 (or mid-run, for runs of
  4 minutes or less) to the end, under the same load;
* ``fd_growth``, ``thread_growth``: open descriptors and threads of the idle
  server after a warm-up round, against the idle server after the run;
* ``sessions_leaked``: sessions the server still holds once every client is gone;
* ``errors_unexpected``: error events nobody provoked, responses that failed or
  never ended, timeouts, dropped connections;
* ``latency_observations``: what ``/metrics`` counted per latency stage.

Targets (``--check`` exits 1 when missed): RSS growth <= 5 %, the rest 0.

Usage: python benches/soak.py --minutes 20 --sessions 20 --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "q_capital_france.wav"
RATE = 24_000
CHUNK_MS = 40
SAMPLE_EVERY_S = 5.0
EVENT_TIMEOUT_S = 30.0
ACTIONS = ("turn", "barge_in", "truncate", "tool", "bad", "reconnect")
WEIGHTS = (4, 2, 2, 2, 2, 1)
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _serve(max_sessions: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from realtime_load import _serve as serve

    # Answers paced (15 ms a token and a word) so that a barge-in meets a running answer.
    serve(max_sessions, pace_ms=15.0)


def _speech() -> bytes:
    """'What is the capital of France?' as 24 kHz PCM16, 200 ms of silence before, 1 s after."""
    from speech_to_speech import float32_to_pcm16, resample

    with wave.open(str(AUDIO), "rb") as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    speech = np.asarray(
        resample(pcm.astype(np.float32) / 32768.0, input_rate=rate, output_rate=RATE), np.float32
    )
    silence = np.zeros(RATE // 5, np.float32)
    tail = np.zeros(RATE, np.float32)
    return float32_to_pcm16(np.concatenate([silence, speech, tail]).astype(np.float32))


class Unexpected(Exception):
    """Something the soak counts in ``errors_unexpected``."""


@dataclass
class Tally:
    """What the clients did and what went wrong."""

    actions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    errors_expected: int = 0
    errors_unexpected: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, what: str) -> None:
        self.errors_unexpected += 1
        if len(self.problems) < 20:
            self.problems.append(what)


class Client:
    """One Realtime connection with strict bookkeeping of the events it gets."""

    def __init__(self, url: str, tally: Tally) -> None:
        self.url = url
        self.tally = tally
        self.ws: Any = None

    async def connect(self) -> None:
        import websockets

        self.ws = await websockets.connect(self.url, max_size=None, open_timeout=EVENT_TIMEOUT_S)
        created = await self.next()
        if created["type"] != "session.created":
            raise Unexpected(f"first event {created['type']}")
        await self.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "tools": [WEATHER_TOOL],
                    "audio": {"input": {"turn_detection": {"type": "server_vad"}}},
                },
            }
        )
        await self.until("session.updated")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def next(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), EVENT_TIMEOUT_S)
        ev: dict[str, Any] = json.loads(raw)
        return ev

    async def until(self, *kinds: str) -> dict[str, Any]:
        """The next event of one of ``kinds``; an ``error`` on the way is unexpected."""
        while True:
            ev = await self.next()
            if ev["type"] in kinds:
                return ev
            if ev["type"] == "error":
                raise Unexpected(f"error while waiting for {kinds}: {ev['error']}")

    async def stream(self, pcm: bytes, stop: asyncio.Event | None = None) -> None:
        """Append ``pcm`` at real-time pace."""
        step = RATE * 2 * CHUNK_MS // 1000
        t0 = time.monotonic()
        for i, at in enumerate(range(0, len(pcm), step)):
            if stop is not None and stop.is_set():
                return
            audio = base64.b64encode(pcm[at : at + step]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": audio})
            delay = t0 + (i + 1) * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def response_done(self) -> dict[str, Any]:
        done = await self.until("response.done")
        response: dict[str, Any] = done["response"]
        if response["status"] == "failed":
            raise Unexpected(f"response failed: {response.get('status_details')}")
        return response

    async def text(self, text: str) -> None:
        await self.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": text}],
                },
            }
        )
        await self.until("conversation.item.added", "conversation.item.created")


async def _turn(c: Client, speech: bytes) -> None:
    streaming = asyncio.create_task(c.stream(speech))
    try:
        await c.until("input_audio_buffer.speech_stopped")
        response = await c.response_done()
        if response["status"] != "completed":
            raise Unexpected(f"turn ended {response['status']}")
    finally:
        await streaming


async def _barge_in(c: Client, speech: bytes) -> None:
    story = " ".join(
        ["Tell me a long story about the sea and the ships and the sailors on them."] * 3
    )
    await c.text(story)
    await c.send({"type": "response.create"})
    await c.until("response.output_audio.delta")
    streaming = asyncio.create_task(c.stream(speech))
    try:
        # The answer ends (cancelled by the speech, or completed just before it), and
        # the turn that interrupted is answered in its turn: two response.done, in
        # whatever order they interleave with the speech events.
        statuses: list[str] = []
        stopped = False
        while not (stopped and len(statuses) == 2):
            ev = await c.next()
            if ev["type"] == "error":
                raise Unexpected(f"error during a barge-in: {ev['error']}")
            if ev["type"] == "input_audio_buffer.speech_stopped":
                stopped = True
            elif ev["type"] == "response.done":
                statuses.append(ev["response"]["status"])
        if statuses[0] not in ("cancelled", "completed") or statuses[1] != "completed":
            raise Unexpected(f"barge-in responses ended {statuses}")
    finally:
        await streaming


async def _truncate(c: Client) -> None:
    await c.text("Say something I can cut short.")
    await c.send({"type": "response.create"})
    response = await c.response_done()
    item = next(o for o in response["output"] if o["type"] == "message")
    await c.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item["id"],
            "content_index": 0,
            "audio_end_ms": 50,
        }
    )
    await c.until("conversation.item.truncated")


async def _tool(c: Client) -> None:
    await c.text("What is the weather in Paris?")
    await c.send({"type": "response.create"})
    response = await c.response_done()
    calls = [o for o in response["output"] if o["type"] == "function_call"]
    if not calls:
        raise Unexpected(f"no tool call in {response['output']}")
    await c.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": calls[0]["call_id"],
                "output": '{"sky": "clear"}',
            },
        }
    )
    await c.until("conversation.item.added", "conversation.item.created")
    await c.send({"type": "response.create"})
    follow_up = await c.response_done()
    if follow_up["status"] != "completed":
        raise Unexpected(f"tool follow-up ended {follow_up['status']}")


BAD_EVENTS = (
    ("{not json", "invalid_json"),
    ('{"type": "no.such.event"}', "invalid_event"),
    ('{"type": "input_audio_buffer.append", "audio": "@@@"}', "invalid_base64"),
    ('{"type": "input_audio_buffer.append", "audio": "AA=="}', "invalid_audio"),
)


async def _bad(c: Client, rng: random.Random) -> None:
    text, code = rng.choice(BAD_EVENTS)
    await c.ws.send(text)
    ev = await c.next()
    if ev["type"] != "error" or ev["error"].get("code") != code:
        raise Unexpected(f"{text!r} answered {ev}")
    c.tally.errors_expected += 1
    # The session goes on.
    await c.send({"type": "input_audio_buffer.clear"})
    await c.until("input_audio_buffer.cleared")


async def _client(
    url: str, speech: bytes, deadline: float, seed: int, tally: Tally, *, warm_up: bool
) -> None:
    rng = random.Random(seed)
    c = Client(url, tally)
    try:
        await c.connect()
        while time.monotonic() < deadline:
            action = "turn" if warm_up else rng.choices(ACTIONS, WEIGHTS)[0]
            try:
                if action == "turn":
                    await _turn(c, speech)
                elif action == "barge_in":
                    await _barge_in(c, speech)
                elif action == "truncate":
                    await _truncate(c)
                elif action == "tool":
                    await _tool(c)
                elif action == "bad":
                    await _bad(c, rng)
                else:
                    await c.close()
                    await c.connect()
                tally.actions[action] += 1
            except (Unexpected, TimeoutError, OSError) as e:
                tally.problem(f"{action}: {type(e).__name__}: {e}")
                await c.close()
                await c.connect()
            except Exception as e:  # the connection dropped under us
                tally.problem(f"{action}: {type(e).__name__}: {e}")
                await c.close()
                await c.connect()
            if warm_up:
                return
    finally:
        await c.close()


def _proc(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def _latency_counts(port: int) -> dict[str, float]:
    """Observations per stage of ``s2s_stage_latency_seconds`` in ``/metrics``, as the
    reference OpenMetrics parser reads them."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        s.labels["stage"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "s2s_stage_latency_seconds"
        for s in f.samples
        if s.name.endswith("_count")
    }


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
        body: dict[str, Any] = json.loads(r.read())
        return body


async def _idle(port: int, pid: int) -> dict[str, int]:
    """The server's figures once it holds no session (up to 10 s to release them)."""
    for _ in range(100):
        if _health(port)["sessions"] == 0:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    return _proc(pid)


async def _soak(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    speech = _speech()
    tally = Tally()
    # Warm-up: every session does one turn, so that everything made lazily exists.
    far = time.monotonic() + 3600
    await asyncio.gather(
        *(_client(url, speech, far, i, tally, warm_up=True) for i in range(args.sessions))
    )
    before = await _idle(port, pid)
    start = time.monotonic()
    end = start + args.minutes * 60
    base_at = 120.0 if args.minutes > 4 else args.minutes * 30
    samples: list[dict[str, float]] = []

    async def sample() -> None:
        while time.monotonic() < end:
            samples.append({"t": time.monotonic() - start, **_proc(pid)})
            await asyncio.sleep(SAMPLE_EVERY_S)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(
        *(
            _client(url, speech, end, args.seed * 1000 + i, tally, warm_up=False)
            for i in range(args.sessions)
        )
    )
    sampler.cancel()
    base = next(s for s in samples if s["t"] >= base_at - SAMPLE_EVERY_S / 2)
    last = samples[-1]
    after = await _idle(port, pid)
    leaked = _health(port)["sessions"]
    latency_counts = _latency_counts(port)
    return {
        "minutes": args.minutes,
        "sessions": args.sessions,
        "rss_growth_percent": round(100 * (last["rss_kib"] / base["rss_kib"] - 1), 2),
        "rss_kib": {
            "at_base": base["rss_kib"],
            "at_end": last["rss_kib"],
            "max": max(s["rss_kib"] for s in samples),
            "idle_after": after["rss_kib"],
        },
        "rss_base_at_s": round(base["t"], 1),
        "fd_growth": after["fds"] - before["fds"],
        "thread_growth": after["threads"] - before["threads"],
        "idle_before": before,
        "idle_after": after,
        "sessions_leaked": leaked,
        "errors_unexpected": tally.errors_unexpected,
        "errors_expected": tally.errors_expected,
        "actions": tally.actions,
        "problems": tally.problems,
        "latency_observations": latency_counts,
    }


def _targets_met(r: dict[str, Any]) -> bool:
    return (
        r["rss_growth_percent"] <= 5.0
        and r["fd_growth"] == 0
        and r["thread_growth"] == 0
        and r["sessions_leaked"] == 0
        and r["errors_unexpected"] == 0
    )


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        _serve(args.serve)
        return 0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(args.sessions + 8)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        result = asyncio.run(_soak(args, port, server.pid))
    finally:
        server.terminate()
        server.wait(30)
    result["targets_met"] = _targets_met(result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 1 if args.check and not result["targets_met"] else 0


if __name__ == "__main__":
    sys.exit(main())
