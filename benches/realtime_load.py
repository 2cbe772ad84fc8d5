"""Load benchmark of the Realtime server: N sessions streaming audio at real-time pace.

The server (fake STT/LLM/TTS, real Silero VAD) runs in a child process so its
memory and CPU can be read from /proc; the clients are plain `websockets`
connections in this process. Each session streams "What is the capital of
France?" (24 kHz PCM16) with silence after, in 20 ms appends at real-time
pace, waits for the VAD turn's response, then sends `response.create` once
more on a text item.

Latencies reported:

* ``speech_stopped``: the wall time at which the server had received the
  audio up to ``audio_end_ms + silence_duration_ms`` (the point at which the
  turn can end) to the arrival of ``input_audio_buffer.speech_stopped``. The
  VAD decides at the end of a 32 ms window, and ``audio_end_ms`` is that
  window's end, so this is the time from the append that completed the
  deciding window to the event. (At 24 kHz the resampler in front of the VAD
  holds back 2.8 ms of each append; the VAD stream starts 2.8 ms of silence
  ahead so that a window never waits for the next append.)
* ``reaction``: the last append sent before ``speech_stopped`` arrived to its
  arrival (the server's own reaction time).
* ``first_audio``: ``response.create`` sent to the first
  ``response.output_audio.delta`` received.

The clients share the machine with the server, so their own scheduling is
part of every figure.

Usage: python benches/realtime_load.py --sessions 100 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "q_capital_france.wav"
SILENCE_MS = 500
CHUNK_MS = 20


def _serve(max_sessions: int, pace_ms: float = 0.0) -> None:
    """The server on scripted models (``pace_ms`` per LLM token and TTS word) and the real VAD."""
    from speech_to_speech import Engine, RealtimeServer
    from speech_to_speech.vad import load_silero_vad

    engine = Engine(
        stt="scripted",
        llm="scripted",
        tts="scripted",
        vad=load_silero_vad(),
        max_sessions=max_sessions,
        scripted_pace_ms=pace_ms,
    )
    server = RealtimeServer(engine, port=0)
    server.start()
    print(server.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _audio(lead_ms: int = 200, rate: int = 24000) -> np.ndarray:
    from speech_to_speech import resample

    with wave.open(str(AUDIO), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    speech = pcm.astype(np.float32) / 32768.0
    if rate != 16000:
        speech = np.asarray(resample(speech, input_rate=16000, output_rate=rate), np.float32)
    lead = np.zeros(rate * lead_ms // 1000, np.float32)
    return np.concatenate([lead, speech, np.zeros(rate, np.float32)])


def _chunks(audio: np.ndarray, rate: int) -> list[str]:
    step = rate * CHUNK_MS // 1000
    out = []
    for i in range(0, len(audio) - step + 1, step):
        pcm = (np.clip(audio[i : i + step], -1, 1) * 32767).astype("<i2").tobytes()
        out.append(
            json.dumps(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
            )
        )
    return out


def _proc_stat(pid: int) -> tuple[int, float]:
    """(RSS in kB, CPU seconds) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


async def _session(
    url: str, chunks: list[str], start: asyncio.Event, out: dict[str, Any], rate: int
) -> None:
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "session.created", first
        if rate != 24000:
            fmt = {"type": "audio/pcm", "rate": rate}
            update = {"type": "realtime", "audio": {"input": {"format": fmt}}}
            await ws.send(json.dumps({"type": "session.update", "session": update}))
            while json.loads(await ws.recv())["type"] != "session.updated":
                pass
        out["connected"] = True
        await start.wait()
        sent_at: list[float] = []
        events: list[tuple[float, dict[str, Any]]] = []

        async def reader() -> None:
            # Parse only what is measured: the client shares the CPU with
            # the server, and JSON-decoding every audio delta in Python
            # would be most of its work.
            async for raw in ws:
                now = time.perf_counter()
                if '"type":"response.output_audio.delta"' in raw:
                    events.append((now, {"type": "response.output_audio.delta"}))
                    continue
                ev = json.loads(raw)
                events.append((now, ev))
                if ev["type"] == "response.done" and out.get("phase") == "manual":
                    return

        task = asyncio.create_task(reader())
        # Sessions start spread over one second, as independent callers would.
        await asyncio.sleep(out["offset_s"])
        t0 = time.perf_counter()
        for i, c in enumerate(chunks):
            # Real-time pace against an absolute schedule (no drift).
            delay = t0 + i * CHUNK_MS / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(c)
            sent_at.append(time.perf_counter())
        # Wait for the VAD turn's response to finish.
        deadline = time.perf_counter() + 20
        while time.perf_counter() < deadline and not any(
            e["type"] == "response.done" for _, e in events
        ):
            await asyncio.sleep(0.01)
        stopped = [(t, e) for t, e in events if e["type"] == "input_audio_buffer.speech_stopped"]
        if stopped:
            t_ev, ev = stopped[0]
            # audio_end_ms includes the closing silence: it is the audio the
            # server had consumed when it decided the turn was over.
            ready_ms = ev["audio_end_ms"]
            idx = min(len(sent_at) - 1, max(0, -(-ready_ms // CHUNK_MS) - 1))
            out["speech_stopped_ms"] = (t_ev - sent_at[idx]) * 1000
            # Reaction: from the last append sent before the event arrived.
            last = max(t for t in sent_at if t <= t_ev)
            out["reaction_ms"] = (t_ev - last) * 1000
        out["phase"] = "manual"
        n_before = len(events)
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "again"}],
                    },
                }
            )
        )
        t_create = time.perf_counter()
        await ws.send(json.dumps({"type": "response.create"}))
        try:
            await asyncio.wait_for(task, 20)
        except asyncio.TimeoutError:
            task.cancel()
        audio = [t for t, e in events[n_before:] if e["type"] == "response.output_audio.delta"]
        if audio:
            out["first_audio_ms"] = (audio[0] - t_create) * 1000
        out["completed"] = any(
            e["type"] == "response.done" and e["response"]["status"] == "completed"
            for _, e in events[n_before:]
        )
        out["errors"] = [e for _, e in events if e["type"] == "error"]


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))], 2)


async def _run(n: int, rate: int) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--sessions", str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=bench"
        await asyncio.sleep(0.3)
        rss0, _ = _proc_stat(proc.pid)
        # Lead-in silences of 200..506 ms in 34 ms steps: the turn ends in a
        # different 32 ms VAD window each time, so the window ends fall at
        # every place in the 20 ms appends, as they do for real callers.
        variants = [_chunks(_audio(200 + 34 * k, rate), rate) for k in range(10)]
        start = asyncio.Event()
        outs: list[dict[str, Any]] = [{"offset_s": i / n} for i in range(n)]
        tasks = [
            asyncio.create_task(_session(url, variants[i % len(variants)], start, o, rate))
            for i, o in enumerate(outs)
        ]
        while sum(1 for o in outs if o.get("connected")) < n and not any(t.done() for t in tasks):
            await asyncio.sleep(0.05)
        rss1, cpu0 = _proc_stat(proc.pid)
        client0 = time.process_time()
        t0 = time.perf_counter()
        start.set()
        # Sample the peak RSS while the sessions stream.
        peak = rss1
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.2)
            peak = max(peak, _proc_stat(proc.pid)[0])
        wall = time.perf_counter() - t0
        _, cpu1 = _proc_stat(proc.pid)
        client_cpu = time.process_time() - client0
        failures = [t.exception() for t in tasks if t.exception() is not None]
    finally:
        proc.terminate()
        proc.wait(10)
    stopped = [o["speech_stopped_ms"] for o in outs if "speech_stopped_ms" in o]
    first = [o["first_audio_ms"] for o in outs if "first_audio_ms" in o]
    reaction = [o["reaction_ms"] for o in outs if "reaction_ms" in o]
    return {
        "sessions": n,
        "input_rate": rate,
        "sessions_completed": sum(1 for o in outs if o.get("completed")),
        "p50_event_latency_ms": _pct(stopped, 50),
        "p99_event_latency_ms": _pct(stopped, 99),
        "p50_reaction_ms": _pct(reaction, 50),
        "p99_reaction_ms": _pct(reaction, 99),
        "p50_first_audio_ms": _pct(first, 50),
        "p99_first_audio_ms": _pct(first, 99),
        "mean_event_latency_ms": round(statistics.fmean(stopped), 2) if stopped else None,
        "rss_idle_kb": rss0,
        "rss_connected_kb": rss1,
        "rss_peak_kb": peak,
        "rss_per_session_kb": round((peak - rss0) / n, 1),
        "cpu_percent": round(100 * (cpu1 - cpu0) / wall, 1),
        "client_cpu_percent": round(100 * client_cpu / wall, 1),
        "wall_s": round(wall, 2),
        "client_failures": [repr(f) for f in failures][:5],
        "errors": sum(len(o.get("errors", [])) for o in outs),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--rate", type=int, default=24000, help="input PCM rate (24000 is the protocol's)"
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        _serve(max(64, args.sessions))
        return 0
    result = asyncio.run(_run(args.sessions, args.rate))
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
