"""The WebRTC side of ``e2e_latency.py --transport webrtc``: the same conversation as the
WebSocket client's, over ``POST /v1/realtime/calls`` with aiortc, and the comparison.

The user's speech goes out on the call's audio track (``Microphone``, real time
on an absolute schedule), so the end of the user's speech is when the last voiced
sample went to the encoder, as the WebSocket client's is when it was appended.
The first answer audio is the first RTP packet of the answer reaching the socket,
as the WebSocket client's is the first ``response.output_audio.delta`` reaching
it: neither counts a playback buffer. Events ride ``oai-events`` with their
arrival times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from _webrtc_client import RATE, Call, Microphone, open_call

import speech_to_speech as s2s


def _fill(turn: Any, call: Call, since: int) -> None:
    """The turn's client-side times from the events that arrived after index ``since``."""
    for at, ev in call.events[since:]:
        kind = ev["type"]
        if kind == "input_audio_buffer.speech_stopped" and turn.speech_stopped is None:
            turn.speech_stopped = at
        elif kind == "conversation.item.input_audio_transcription.completed":
            turn.transcribed = turn.transcribed or at
            turn.transcript = ev.get("transcript", "")
        elif kind == "response.created" and turn.response_created is None:
            turn.response_created = at
        elif kind == "speech_to_speech.turn.timings":
            turn.server = ev.get("timings", {})
        elif kind == "response.done" and turn.done is None:
            turn.done = at
            turn.status = ev["response"]["status"]


async def webrtc_conversation(
    *,
    index: int,
    base_url: str,
    utterances: list[tuple[str, Any]],
    turns: int,
    silence_ms: float,
    new_turn: Callable[[int, str], Any],
    speech_end_s: Callable[[np.ndarray[Any, np.dtype[np.float32]], int], float],
) -> list[Any]:
    """``turns`` spoken turns in one call; each a ``new_turn(index, utterance)``
    (``e2e_latency.Turn``) with its times filled in."""
    mic = Microphone()
    session = {
        "type": "realtime",
        "audio": {
            "input": {
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": int(silence_ms)},
            }
        },
    }
    results = []
    async with open_call(base_url, mic, session=session, query="?model=s2s&timings=1") as call:
        await call.next_event("session.created")
        mic.say(np.zeros(RATE // 2, np.float32))
        for k in range(turns):
            name, audio16 = utterances[(k + index) % len(utterances)]
            audio = np.asarray(s2s.resample(audio16, input_rate=16000, output_rate=RATE))
            turn = new_turn(index, name)
            since = len(call.events)
            first = mic.say(audio)
            turn.speech_end = mic.time_of(first + round(speech_end_s(audio, RATE) * RATE))
            await call.next_event("response.done", timeout=60)
            # The answer plays out (the server says when), then the user listens a second.
            await call.next_event("output_audio_buffer.stopped", timeout=60)
            mic.say(np.zeros(RATE, np.float32))
            while mic.queued() > 0:
                await asyncio.sleep(0.05)
            _fill(turn, call, since)
            turn.first_audio = call.first_rtp_after(turn.speech_end)
            results.append(turn)
    return results


async def both_transports(
    run_websocket: Callable[[int], Awaitable[list[list[Any]]]],
    *,
    base_url: str,
    utterances: list[tuple[str, Any]],
    turns: int,
    silence_ms: float,
    new_turn: Callable[[int, str], Any],
    speech_end_s: Callable[[np.ndarray[Any, np.dtype[np.float32]], int], float],
    rounds: int = 2,
) -> tuple[list[Any], list[Any]]:
    """The WebSocket's turns and WebRTC's, on the same server in the same run:
    rounds of ``turns / rounds`` turns each, the transports taking turns, so that
    neither gets all the cold or all the warm ones. The same utterances in the same
    order on both."""
    each = max(1, turns // rounds)
    websocket: list[Any] = []
    webrtc: list[Any] = []
    for _ in range(rounds):
        websocket += [t for conv in await run_websocket(each) for t in conv]
        webrtc += await webrtc_conversation(
            index=0,
            base_url=base_url,
            utterances=utterances,
            turns=each,
            silence_ms=silence_ms,
            new_turn=new_turn,
            speech_end_s=speech_end_s,
        )
    return websocket, webrtc


def compared(websocket: list[Any], webrtc: list[Any]) -> dict[str, Any]:
    """What WebRTC adds to voice-to-voice over the WebSocket measured in the same run:
    p50 against p50, and the median of per-utterance differences (each utterance's
    median on both), which the mix of utterances does not sway."""

    def v2v(turns: list[Any], name: str | None = None) -> list[float]:
        return [
            t.ms(t.first_audio)
            for t in turns
            if t.first_audio is not None and name in (None, t.utterance)
        ]

    def p50(values: list[float]) -> float:
        return float(np.median(values)) if values else float("nan")

    def server_gap(turns: list[Any], start: str, end: str) -> float:
        """The median of the server's own ``end - start`` (``speech_to_speech.turn.timings``)."""
        gaps = [t.server[end] - t.server[start] for t in turns if {start, end} <= t.server.keys()]
        return p50(gaps)

    names = sorted({t.utterance for t in webrtc} & {t.utterance for t in websocket})
    paired = [p50(v2v(webrtc, n)) - p50(v2v(websocket, n)) for n in names]
    ws50, rtc50 = p50(v2v(websocket)), p50(v2v(webrtc))
    return {
        "websocket_turns": len(websocket),
        "websocket_turns_completed": sum(t.status == "completed" for t in websocket),
        "websocket_voice_to_voice_p50_ms": ws50,
        "websocket_voice_to_voice_p95_ms": float(np.percentile(v2v(websocket), 95))
        if v2v(websocket)
        else float("nan"),
        "webrtc_added_p50_ms": rtc50 - ws50,
        "webrtc_added_paired_p50_ms": p50(paired),
        "webrtc_over_websocket_p50": rtc50 / ws50 if ws50 else float("nan"),
        # Where the time went, on the server's clock: the transport's own part (the first
        # synthesised chunk to its frame on the wire, or its delta sent) and the models'
        # (commit to the first chunk), which the client's CPU use on a small machine sways.
        "server_tts_to_wire_p50_ms": {
            "webrtc": server_gap(webrtc, "tts_first_chunk_ms", "first_audio_out_ms"),
            "websocket": server_gap(websocket, "tts_first_chunk_ms", "first_audio_out_ms"),
        },
        "server_commit_to_tts_p50_ms": {
            "webrtc": server_gap(webrtc, "commit_ms", "tts_first_chunk_ms"),
            "websocket": server_gap(websocket, "commit_ms", "tts_first_chunk_ms"),
        },
        "websocket_per_turn": [
            {"utterance": t.utterance, "voice_to_voice_ms": t.ms(t.first_audio), "server": t.server}
            for t in websocket
        ],
    }
