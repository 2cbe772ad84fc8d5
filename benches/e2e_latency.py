"""Voice-to-voice latency through the real Realtime protocol, against the model floor.

    python benches/e2e_latency.py [--server-cmd CMD] [--turns N] [--concurrency K]
                                  [--json PATH] [--plot PNG]

It starts the server (by default the README's realtime command on the bundled
models, on a free port), connects as an ordinary Realtime client and, turn
after turn, streams an utterance from ../shared/audio at real-time pace in
20 ms appends followed by silence, as a microphone would. On the client's
clock it records the end of the user's speech (known from the audio it sent),
`speech_stopped`, the input transcription, `response.created` and the first
`response.output_audio.delta`; the server's own per-stage timings arrive in
`speech_to_speech.turn.timings` events (an extension sent only to clients that
ask for it with `?timings=1`).

In the same run, before the server starts, it measures the model floor: the
same utterances through the same STT, the LLM up to its first clause and TTS up
to its first chunk, called directly one after another, plus the configured
silence. `overhead` is voice-to-voice minus that floor: what the pipeline adds
(negative when speculation hides model time inside the silence).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import speech_to_speech as s2s
from speech_to_speech.flags import DEFAULT_SYSTEM_PROMPT

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
UTTERANCES = ["q_capital_france.wav", "q_ocean_fact.wav", "q_book.wav", "interrupt_wait.wav"]
RATE = 24_000
CHUNK = RATE // 50  # 20 ms


def speech_end_s(audio: np.ndarray[Any, np.dtype[np.float32]], rate: int) -> float:
    """Where the speech in a clip ends: the last 10 ms frame within 30 dB of the loudest."""
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-12
    voiced = np.nonzero(20 * np.log10(rms / rms.max()) > -30)[0]
    return float((voiced[-1] + 1) * hop / rate) if len(voiced) else len(audio) / rate


def load_utterances() -> list[tuple[str, np.ndarray[Any, np.dtype[np.float32]]]]:
    out = []
    for name in UTTERANCES:
        with wave.open(str(SHARED / name)) as w:
            pcm = w.readframes(w.getnframes())
            rate = w.getframerate()
        audio = s2s.pcm16_to_float32(pcm)
        out.append(
            (
                name,
                audio if rate == 16000 else s2s.resample(audio, input_rate=rate, output_rate=16000),
            )
        )
    return out


# --- the model floor ------------------------------------------------------------------------

_CLAUSE_END = re.compile(r"[.!?](\s|$)|[,;:](\s|$)")


def first_clause_done(text: str) -> bool:
    """Whether `text` holds a speakable first clause (the engine's rule)."""
    for m in _CLAUSE_END.finditer(text):
        if m.group(0)[0] in ".!?":
            return True
        if len(text[: m.start()].split()) >= 3:
            return True
    return False


def measure_floor(
    utterances: list[tuple[str, Any]], silence_ms: float, args: argparse.Namespace
) -> list[dict[str, float]]:
    from speech_to_speech.handlers.registry import create_handler

    stt = create_handler("stt", args.stt)
    llm = create_handler("llm", args.llm)
    tts = create_handler("tts", args.tts)
    for h in (stt, llm, tts):
        h.setup()
    rows = []
    for name, audio in utterances:
        t0 = time.perf_counter()
        text = next(t.text for t in stt.transcribe(audio) if t.final)
        t1 = time.perf_counter()
        reply = ""
        messages = [
            {"role": "system", "content": args.system_prompt},
            {"role": "user", "content": text},
        ]
        for ev in llm.generate(messages):
            reply += getattr(ev, "text", "")
            if first_clause_done(reply):
                break
        t2 = time.perf_counter()
        clause = reply.strip() or "Okay."
        next(iter(tts.synthesize(clause)))
        t3 = time.perf_counter()
        rows.append(
            {
                "utterance": name,
                "stt_ms": (t1 - t0) * 1000,
                "llm_first_clause_ms": (t2 - t1) * 1000,
                "tts_first_chunk_ms": (t3 - t2) * 1000,
                "floor_ms": silence_ms + (t3 - t0) * 1000,
            }
        )
    return rows


# --- the client -----------------------------------------------------------------------------


@dataclass
class Turn:
    conversation: int
    utterance: str
    speech_end: float = 0.0
    speech_stopped: float | None = None
    transcribed: float | None = None
    response_created: float | None = None
    first_audio: float | None = None
    done: float | None = None
    status: str | None = None
    transcript: str = ""
    server: dict[str, Any] = field(default_factory=dict)

    def ms(self, t: float | None) -> float | None:
        return None if t is None else (t - self.speech_end) * 1000


def _pcm(samples: np.ndarray[Any, np.dtype[np.float32]]) -> str:
    return base64.b64encode(s2s.float32_to_pcm16(samples)).decode()


async def conversation(
    *,
    index: int,
    url: str,
    utterances: list[tuple[str, Any]],
    turns: int,
    silence_ms: float,
    start_delay: float,
) -> list[Turn]:
    import websockets

    await asyncio.sleep(start_delay)
    results: list[Turn] = []
    async with websockets.connect(url, max_size=None) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "session.created", first
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "audio": {
                            "input": {
                                "format": {"type": "audio/pcm", "rate": RATE},
                                "transcription": {"model": "whisper-1"},
                                "turn_detection": {
                                    "type": "server_vad",
                                    "silence_duration_ms": int(silence_ms),
                                },
                            }
                        },
                    },
                }
            )
        )
        current: list[Turn | None] = [None]
        finished = asyncio.Event()

        async def reader() -> None:
            async for raw in ws:
                ev = json.loads(raw)
                now = time.perf_counter()
                turn = current[0]
                kind = ev["type"]
                if turn is None:
                    continue
                if kind == "input_audio_buffer.speech_stopped" and turn.speech_stopped is None:
                    turn.speech_stopped = now
                elif kind == "conversation.item.input_audio_transcription.completed":
                    turn.transcribed = turn.transcribed or now
                    turn.transcript = ev.get("transcript", "")
                elif kind == "response.created" and turn.response_created is None:
                    turn.response_created = now
                elif kind == "response.output_audio.delta" and turn.first_audio is None:
                    turn.first_audio = now
                elif kind == "speech_to_speech.turn.timings":
                    turn.server = ev.get("timings", {})
                elif kind == "response.done":
                    turn.done = now
                    turn.status = ev["response"]["status"]
                    finished.set()
                elif kind == "error":
                    print(f"[conv {index}] error: {ev['error']}", file=sys.stderr)

        read_task = asyncio.create_task(reader())
        clock = time.perf_counter()
        sent = 0

        async def send(samples: np.ndarray[Any, np.dtype[np.float32]]) -> None:
            # Real-time pace on an absolute schedule: 20 ms of audio every 20 ms.
            nonlocal sent
            for i in range(0, len(samples), CHUNK):
                piece = samples[i : i + CHUNK]
                due = clock + sent / RATE
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": _pcm(piece)})
                )
                sent += len(piece)

        silence = np.zeros(CHUNK, dtype=np.float32)
        await send(np.zeros(RATE // 2, dtype=np.float32))
        for k in range(turns):
            name, audio16 = utterances[(k + index) % len(utterances)]
            audio = s2s.resample(audio16, input_rate=16000, output_rate=RATE)
            turn = Turn(conversation=index, utterance=name)
            current[0] = turn
            finished.clear()
            start = sent
            await send(audio)
            # The user stopped speaking where the voice in the clip ends, not
            # where the clip's own trailing silence ends.
            turn.speech_end = clock + start / RATE + speech_end_s(audio, RATE)
            # Keep the microphone open: silence until the answer is done.
            deadline = time.perf_counter() + 60
            while not finished.is_set() and time.perf_counter() < deadline:
                await send(silence)
            # The user listens to the answer before speaking again.
            await send(np.zeros(RATE, dtype=np.float32))
            results.append(turn)
        read_task.cancel()
    return results


# --- the server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(cmd: str | None, port: int, silence_ms: float) -> subprocess.Popen[bytes]:
    if cmd is None:
        argv = [sys.executable, "-m", "speech_to_speech", "--mode", "realtime", "--port", str(port)]
    else:
        argv = shlex.split(cmd.replace("{port}", str(port)))
    proc = subprocess.Popen(argv, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(argv)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become healthy in 300 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        proc.kill()


# --- report ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), q))


def plot(turns: list[Turn], floor_p50: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in turns if t.first_audio is not None]
    x = np.arange(len(done))
    stops = np.array([t.ms(t.speech_stopped) or 0 for t in done])
    trans = np.array([(t.ms(t.transcribed) or 0) for t in done])
    first = np.array([t.ms(t.first_audio) or 0 for t in done])
    fig, ax = plt.subplots(figsize=(max(6, len(done) * 0.35), 4))
    ax.bar(x, stops, label="speech end -> speech_stopped (VAD silence)")
    ax.bar(x, np.maximum(trans - stops, 0), bottom=stops, label="-> transcript")
    ax.bar(
        x,
        np.maximum(first - np.maximum(trans, stops), 0),
        bottom=np.maximum(trans, stops),
        label="-> first audio",
    )
    ax.axhline(
        floor_p50,
        color="k",
        linestyle="--",
        label=f"sequential model floor p50 ({floor_p50:.0f} ms)",
    )
    ax.set_xlabel("turn")
    ax.set_ylabel("ms after the end of the user's speech")
    ax.set_title("voice-to-voice latency per turn")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--server-cmd", default=None, help="command that starts the server; {port} is replaced"
    )
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--silence-ms", type=float, default=500)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("--no-floor", action="store_true", help="skip the in-process floor")
    p.add_argument("--stt", default="faster-whisper")
    p.add_argument("--llm", default="llama-cpp")
    p.add_argument("--tts", default="piper")
    p.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT, help="as the server's default")
    p.add_argument(
        "--transport",
        choices=("websocket", "webrtc"),
        default="websocket",
        help="webrtc: over POST /v1/realtime/calls (aiortc), against the WebSocket in the same run",
    )
    args = p.parse_args()

    utterances = load_utterances()
    floor_rows: list[dict[str, float]] = []
    if not args.no_floor:
        floor_rows = measure_floor(utterances, args.silence_ms, args)
    port = free_port()
    proc = start_server(args.server_cmd, port, args.silence_ms)
    reference: list[Turn] = []
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=s2s&timings=1"
        per_conv = max(1, args.turns // args.concurrency)

        async def run_all(turns: int = per_conv) -> list[list[Turn]]:
            return await asyncio.gather(
                *(
                    conversation(
                        index=i,
                        url=url,
                        utterances=utterances,
                        turns=turns,
                        silence_ms=args.silence_ms,
                        start_delay=i * 0.7,
                    )
                    for i in range(args.concurrency)
                )
            )

        if args.transport == "webrtc":
            from _webrtc_latency import both_transports

            reference, turns = asyncio.run(
                both_transports(
                    run_all,
                    base_url=f"http://127.0.0.1:{port}",
                    utterances=utterances,
                    turns=args.turns,
                    silence_ms=args.silence_ms,
                    new_turn=lambda i, name: Turn(conversation=i, utterance=name),
                    speech_end_s=speech_end_s,
                )
            )
        else:
            turns = [t for conv in asyncio.run(run_all()) for t in conv]
    finally:
        stop_server(proc)

    floor_by_utt = {r["utterance"]: r["floor_ms"] for r in floor_rows}
    v2v = [t.ms(t.first_audio) for t in turns if t.first_audio is not None]
    overhead = [
        t.ms(t.first_audio) - floor_by_utt[t.utterance]  # type: ignore[operator]
        for t in turns
        if t.first_audio is not None and t.utterance in floor_by_utt
    ]
    floors = [r["floor_ms"] for r in floor_rows]
    result = {
        "transport": args.transport,
        "turns": len(turns),
        "turns_completed": sum(t.status == "completed" for t in turns),
        "concurrency": args.concurrency,
        "silence_ms": args.silence_ms,
        "voice_to_voice_p50_ms": pct(v2v, 50),
        "voice_to_voice_p95_ms": pct(v2v, 95),
        "floor_p50_ms": pct(floors, 50),
        "overhead_p50_ms": pct(overhead, 50),
        "overhead_p95_ms": pct(overhead, 95),
        "speech_stopped_p50_ms": pct(
            [t.ms(t.speech_stopped) for t in turns if t.speech_stopped], 50
        ),
        "transcript_p50_ms": pct([t.ms(t.transcribed) for t in turns if t.transcribed], 50),
        "response_created_p50_ms": pct(
            [t.ms(t.response_created) for t in turns if t.response_created], 50
        ),
        "floor": floor_rows,
        "per_turn": [{**asdict(t), "voice_to_voice_ms": t.ms(t.first_audio)} for t in turns],
    }
    if args.transport == "webrtc":
        from _webrtc_latency import compared

        result.update(compared(reference, turns))
    print(
        f"{'turn':>4} {'utterance':22} {'stopped':>8} {'transcr':>8} "
        f"{'created':>8} {'audio':>8} {'floor':>8}"
    )
    for i, t in enumerate(turns):
        cells = [
            t.ms(t.speech_stopped),
            t.ms(t.transcribed),
            t.ms(t.response_created),
            t.ms(t.first_audio),
        ]
        fmt = " ".join(f"{c:8.0f}" if c is not None else f"{'-':>8}" for c in cells)
        print(f"{i:4d} {t.utterance:22} {fmt} {floor_by_utt.get(t.utterance, float('nan')):8.0f}")
    for key in (
        "voice_to_voice_p50_ms",
        "voice_to_voice_p95_ms",
        "floor_p50_ms",
        "overhead_p50_ms",
        *(("websocket_voice_to_voice_p50_ms", "webrtc_added_p50_ms") if reference else ()),
    ):
        print(f"{key:24} {result[key]:8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(turns, result["floor_p50_ms"], args.plot)
    completed = result["turns_completed"] == len(turns)
    return 0 if completed and all(t.status == "completed" for t in reference) else 1


if __name__ == "__main__":
    sys.exit(main())
