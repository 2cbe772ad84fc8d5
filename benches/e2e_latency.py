"""Voice-to-voice latency through the real Realtime protocol, against the model floor.

    python benches/e2e_latency.py [--server-cmd CMD] [--turns N] [--concurrency K]
                                  [--turn-detector both|smart_turn|silence] [--tools-turns N]
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

With `--turn-detector both` (the default) it does all that twice in one run:
with Smart Turn deciding the end of turn (`--turn_detector smart_turn`; its
floor counts the 200 ms of silence a "complete" verdict waits) and with the
silence rule alone (`--turn_detector silence`, 500 ms). The top-level keys are
Smart Turn's; `silence_*` keys and `by_turn_detector` hold the rest.

When the server ends a turn at a pause and the user goes on ("Stop. | Wait a
second, ..."), it cancels that answer (`turn_detected`), or the answer, a short
one, is done before the user goes on; the turn is then timed from the end of
the whole utterance to the answer to it, and `early_commits` counts the answers
to a part of the utterance.

Playback is modelled as a client that plays each audio delta as it arrives:
`turns_with_stall` counts answers whose audio ran dry for more than 20 ms
after it began, and `stall_ms_total` adds up those gaps. A first clause sent
to TTS sooner must not leave a hole before the next one.

`--tools-turns N` adds a conversation that declares one function tool, as the
`openai-agents` Realtime runner always does, answering each function call
with a result like an agent would; `tools_first_token_p50_ms` (commit to the
LLM's first token, on the server's clock, first response of each turn) stands
beside `first_token_p50_ms` from the plain conversations of the same server.
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
# A gap in the answer's audio longer than this, once playback has begun, is a
# stall a listener hears: the client plays each delta as it arrives, at once.
STALL_MS = 20.0


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
    utterances: list[tuple[str, Any]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The models alone, one after another, per utterance (no silence counted yet)."""
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
                "models_ms": (t3 - t0) * 1000,
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
    tool_calls: int = 0
    # Responses cancelled because the user went on after a pause the server took
    # for the end of the turn ("Stop. | Wait a second, ...").
    early_commits: int = 0
    # Seconds of answer audio received, and the silence a client playing it as
    # it arrives would have heard inside it, waiting for the next delta.
    audio_s: float = 0.0
    stall_ms: float = 0.0

    def ms(self, t: float | None) -> float | None:
        return None if t is None else (t - self.speech_end) * 1000


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city"}},
        "required": ["location"],
    },
}


def function_output(call_id: str) -> dict[str, Any]:
    item = {"type": "function_call_output", "call_id": call_id, "output": "Sunny, 21 C"}
    return {"type": "conversation.item.create", "item": item}


def _delta_seconds(ev: dict[str, Any]) -> float:
    """Seconds of 16-bit audio at RATE in an output audio delta."""
    return len(base64.b64decode(ev.get("delta", ""))) / 2 / RATE


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
    tools: bool = False,
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
                        **({"tools": [WEATHER_TOOL], "tool_choice": "auto"} if tools else {}),
                    },
                }
            )
        )
        current: list[Turn | None] = [None]
        finished = asyncio.Event()
        # When the audio received so far finishes playing.
        play_end = [0.0]

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
                elif kind == "response.output_audio.delta":
                    seconds = _delta_seconds(ev)
                    if turn.first_audio is None:
                        turn.first_audio = now
                        play_end[0] = now
                    elif now > play_end[0] + STALL_MS / 1000:
                        turn.stall_ms += (now - play_end[0]) * 1000
                    play_end[0] = max(play_end[0], now) + seconds
                    turn.audio_s += seconds
                elif kind == "speech_to_speech.turn.timings":
                    # The first response of the turn is the one the user waits for.
                    turn.server = turn.server or ev.get("timings", {})
                elif kind == "response.done":
                    details = ev["response"].get("status_details") or {}
                    if details.get("reason") == "turn_detected" or now < turn.speech_end:
                        # The user went on speaking (the answer cancelled, or done
                        # already, as a short one to "Stop." can be, while the rest
                        # of the utterance is still to come): the answer that
                        # counts is the one to the whole utterance, timed from its end.
                        turn.early_commits += 1
                        turn.speech_stopped = turn.transcribed = None
                        turn.response_created = turn.first_audio = None
                        turn.server = {}
                        turn.audio_s = turn.stall_ms = 0.0
                        continue
                    calls = [o for o in ev["response"]["output"] if o["type"] == "function_call"]
                    if calls and turn.tool_calls < 2:
                        # Answer like an agent: the function's result, then a new response.
                        turn.tool_calls += 1
                        for call in calls:
                            await ws.send(json.dumps(function_output(call["call_id"])))
                        await ws.send(json.dumps({"type": "response.create"}))
                        continue
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
            # The user stops speaking where the voice in the clip ends, not
            # where the clip's own trailing silence ends.
            turn.speech_end = clock + sent / RATE + speech_end_s(audio, RATE)
            await send(audio)
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


def start_server(cmd: str | None, port: int, turn_detector: str) -> subprocess.Popen[bytes]:
    if cmd is None:
        argv = [sys.executable, "-m", "speech_to_speech", "--mode", "realtime"]
        argv += ["--port", str(port), "--turn_detector", turn_detector]
    else:
        argv = shlex.split(
            cmd.replace("{port}", str(port)).replace("{turn_detector}", turn_detector)
        )
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


# Silence the end of a turn waits for, by turn detector: Smart Turn's "complete" verdict
# ends a turn after 200 ms; the silence rule after the session's silence_duration_ms.
COMPLETE_SILENCE_MS = 200.0


def plot(runs: dict[str, dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(runs), figsize=(max(6, 5.5 * len(runs)), 4), sharey=True, squeeze=False
    )
    for ax, (detector, run) in zip(axes[0], runs.items(), strict=True):
        done = [t for t in run["turns"] if t.first_audio is not None]
        x = np.arange(len(done))
        stops = np.array([t.ms(t.speech_stopped) or 0 for t in done])
        trans = np.array([(t.ms(t.transcribed) or 0) for t in done])
        first = np.array([t.ms(t.first_audio) or 0 for t in done])
        ax.bar(x, stops, label="speech end -> speech_stopped (end of turn)")
        ax.bar(x, np.maximum(trans - stops, 0), bottom=stops, label="-> transcript")
        ax.bar(
            x,
            np.maximum(first - np.maximum(trans, stops), 0),
            bottom=np.maximum(trans, stops),
            label="-> first audio",
        )
        p50 = run["result"]["voice_to_voice_p50_ms"]
        ax.axhline(p50, color="C3", linestyle="-", label=f"voice-to-voice p50 ({p50:.0f} ms)")
        floor = run["result"]["floor_p50_ms"]
        if not np.isnan(floor):
            ax.axhline(
                floor,
                color="k",
                linestyle="--",
                label=f"sequential model floor p50 ({floor:.0f} ms)",
            )
        ax.set_xlabel("turn")
        ax.set_title(f"end of turn: {detector}")
        ax.legend(fontsize=7, loc="upper right")
    axes[0][0].set_ylabel("ms after the end of the user's speech")
    fig.suptitle("voice-to-voice latency per turn (bundled models, 2-core CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _server_ms(t: Turn, start: str, end: str) -> float | None:
    a, b = t.server.get(start), t.server.get(end)
    return None if a is None or b is None else float(b) - float(a)


def summarize(
    turns: list[Turn], floor_rows: list[dict[str, Any]], silence_ms: float
) -> dict[str, Any]:
    """The figures of one server configuration."""
    floor_by_utt = {r["utterance"]: r["models_ms"] + silence_ms for r in floor_rows}
    v2v = [t.ms(t.first_audio) for t in turns if t.first_audio is not None]
    overhead = [
        t.ms(t.first_audio) - floor_by_utt[t.utterance]
        for t in turns
        if t.first_audio is not None and t.utterance in floor_by_utt
    ]

    def p50(values: list[float | None]) -> float:
        return pct([v for v in values if v is not None], 50)

    return {
        "turns": len(turns),
        "turns_completed": sum(t.status == "completed" for t in turns),
        "voice_to_voice_p50_ms": pct(v2v, 50),  # type: ignore[arg-type]
        "voice_to_voice_p95_ms": pct(v2v, 95),  # type: ignore[arg-type]
        "floor_p50_ms": pct(list(floor_by_utt.values()), 50),
        "floor_silence_ms": silence_ms,
        "overhead_p50_ms": pct(overhead, 50),
        "overhead_p95_ms": pct(overhead, 95),
        "speech_stopped_p50_ms": p50([t.ms(t.speech_stopped) for t in turns]),
        "transcript_p50_ms": p50([t.ms(t.transcribed) for t in turns]),
        "response_created_p50_ms": p50([t.ms(t.response_created) for t in turns]),
        # Where the time goes after the end of the turn, on the server's clock.
        "stages_p50_ms": {
            "commit_to_stt_done": p50([_server_ms(t, "commit_ms", "stt_done_ms") for t in turns]),
            "commit_to_llm_first_token": p50(
                [_server_ms(t, "commit_ms", "llm_first_token_ms") for t in turns]
            ),
            "commit_to_first_clause": p50(
                [_server_ms(t, "commit_ms", "first_clause_ms") for t in turns]
            ),
            "first_clause_to_tts_first_chunk": p50(
                [_server_ms(t, "first_clause_ms", "tts_first_chunk_ms") for t in turns]
            ),
            "tts_first_chunk_to_audio_out": p50(
                [_server_ms(t, "tts_first_chunk_ms", "first_audio_out_ms") for t in turns]
            ),
            "commit_to_audio_out": p50(
                [_server_ms(t, "commit_ms", "first_audio_out_ms") for t in turns]
            ),
        },
        "speculative_turns": sum(bool(t.server.get("speculative")) for t in turns),
        "early_commits": sum(t.early_commits for t in turns),
        # Playback as a client hears it: answers whose audio ran dry mid-answer.
        "turns_with_stall": sum(t.stall_ms > 0 for t in turns),
        "stall_ms_total": round(sum(t.stall_ms for t in turns), 1),
        "first_token_p50_ms": p50(
            [_server_ms(t, "commit_ms", "llm_first_token_ms") for t in turns]
        ),
    }


def run_server(
    args: argparse.Namespace,
    detector: str,
    utterances: list[tuple[str, Any]],
) -> tuple[list[Turn], list[Turn], list[Turn]]:
    """The plain conversations, then the tool-bearing one, against one server; with
    ``--transport webrtc`` the plain turns ride WebRTC, and the WebSocket's same turns
    (the last list) alternate with them as the reference."""
    port = free_port()
    proc = start_server(args.server_cmd, port, detector)
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
        tool_turns: list[Turn] = []
        if args.tools_turns:
            tool_turns = asyncio.run(
                conversation(
                    index=0,
                    url=url,
                    utterances=utterances,
                    turns=args.tools_turns,
                    silence_ms=args.silence_ms,
                    start_delay=0,
                    tools=True,
                )
            )
    finally:
        stop_server(proc)
    return turns, tool_turns, reference


def print_turns(detector: str, turns: list[Turn], result: dict[str, Any]) -> None:
    print(f"== end of turn: {detector}")
    print(f"{'turn':>4} {'utterance':22} {'stopped':>8} {'transcr':>8} {'created':>8} {'audio':>8}")
    for i, t in enumerate(turns):
        cells = [
            t.ms(t.speech_stopped),
            t.ms(t.transcribed),
            t.ms(t.response_created),
            t.ms(t.first_audio),
        ]
        fmt = " ".join(f"{c:8.0f}" if c is not None else f"{'-':>8}" for c in cells)
        print(f"{i:4d} {t.utterance:22} {fmt}")
    for key in (
        "voice_to_voice_p50_ms",
        "voice_to_voice_p95_ms",
        "floor_p50_ms",
        "overhead_p50_ms",
    ):
        print(f"{key:24} {result[key]:8.1f}")
    print(f"{'stages_p50_ms':24} {json.dumps(result['stages_p50_ms'])}")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--server-cmd",
        default=None,
        help="command that starts the server; {port} and {turn_detector} are replaced",
    )
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--silence-ms", type=float, default=500)
    p.add_argument(
        "--turn-detector",
        choices=("both", "smart_turn", "silence"),
        default="both",
        help="the server's --turn_detector; both: Smart Turn, then the silence rule, same run",
    )
    p.add_argument(
        "--tools-turns",
        type=int,
        default=6,
        help="turns of a conversation that declares a function tool (0: none)",
    )
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="write a PNG chart (needs matplotlib)")
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
    floor_rows: list[dict[str, Any]] = []
    if not args.no_floor:
        floor_rows = measure_floor(utterances, args)
    detectors = ["smart_turn", "silence"] if args.turn_detector == "both" else [args.turn_detector]
    runs: dict[str, dict[str, Any]] = {}
    for detector in detectors:
        turns, tool_turns, reference = run_server(args, detector, utterances)
        silence = COMPLETE_SILENCE_MS if detector == "smart_turn" else args.silence_ms
        result = summarize(turns, floor_rows, silence)
        result["transport"] = args.transport
        if reference:
            from _webrtc_latency import compared

            result.update(compared(reference, turns))
        if tool_turns:
            result["tools_turns"] = len(tool_turns)
            result["tools_first_token_p50_ms"] = pct(
                [
                    v
                    for t in tool_turns
                    if (v := _server_ms(t, "commit_ms", "llm_first_token_ms")) is not None
                ],
                50,
            )
            result["tools_per_turn"] = [asdict(t) for t in tool_turns]
        result["per_turn"] = [
            {**asdict(t), "voice_to_voice_ms": t.ms(t.first_audio)} for t in turns
        ]
        runs[detector] = {"turns": turns, "result": result}
        print_turns(detector, turns, result)

    first = detectors[0]
    out: dict[str, Any] = {
        "turn_detector": first,
        "concurrency": args.concurrency,
        "silence_ms": args.silence_ms,
        **{k: v for k, v in runs[first]["result"].items() if k != "per_turn"},
    }
    for detector in detectors[1:]:
        for key in ("voice_to_voice_p50_ms", "voice_to_voice_p95_ms", "overhead_p50_ms"):
            out[f"{detector}_{key}"] = runs[detector]["result"][key]
    out["floor"] = floor_rows
    out["by_turn_detector"] = {d: r["result"] for d, r in runs.items()}
    for key, value in out.items():
        if key.endswith("_ms") and isinstance(value, float):
            print(f"{key:36} {value:8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if args.plot:
        plot(runs, args.plot)
    complete = all(r["result"]["turns_completed"] == r["result"]["turns"] for r in runs.values())
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
