"""Audio in, answer out: the real Silero VAD drives turns in the engine."""

from __future__ import annotations

import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import speech_to_speech as s2s
from speech_to_speech.vad import load_silero_vad

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


def _wav(name: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    with wave.open(str(SHARED / name)) as w:
        assert w.getframerate() == 16000
        data = w.readframes(w.getnframes())
    return s2s.pcm16_to_float32(data)


@dataclass
class _Transcript:
    text: str
    final: bool
    language: str | None = None


class DurationStt:
    """Says how long the utterance was, so the test can check the audio."""

    def __init__(self) -> None:
        self.lengths: list[float] = []

    def transcribe(self, audio: Any, **kw: Any) -> Iterator[_Transcript]:
        self.lengths.append(len(audio) / 16000)
        yield _Transcript(f"{len(audio) / 16000:.1f} seconds", final=True)


def _run(session: s2s.Session, audio: np.ndarray[Any, np.dtype[np.float32]], rate: int) -> None:
    step = rate // 50  # 20 ms
    for i in range(0, len(audio), step):
        session.feed_audio(audio[i : i + step])


def _events_until_done(session: s2s.Session, timeout: float = 10.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = session.next_event(timeout=0.1)
        if ev is not None:
            events.append(ev)
            if ev["type"] == "response_done":
                return events
    raise AssertionError([e["type"] for e in events])


def test_a_spoken_question_is_detected_committed_and_answered() -> None:
    stt = DurationStt()
    engine = s2s.Engine(stt=stt, llm="scripted", tts="scripted", vad=load_silero_vad())
    session = engine.session(input_rate=16000, speculation=False)
    speech = _wav("q_capital_france.wav")
    silence = np.zeros(16000, dtype=np.float32)
    _run(session, np.concatenate([silence, speech, silence]), 16000)
    events = _events_until_done(session)
    types = [e["type"] for e in events]
    order = [
        "speech_started",
        "speech_stopped",
        "input_committed",
        "response_created",
        "audio_delta",
    ]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions), types
    started = next(e for e in events if e["type"] == "speech_started")
    stopped = next(e for e in events if e["type"] == "speech_stopped")
    # The question starts ~1.0 s in (minus 300 ms of padding) and lasts 2.2 s,
    # and the turn ends after 500 ms of silence.
    assert 500 <= started["audio_start_ms"] <= 1100
    assert 3000 <= stopped["audio_end_ms"] <= 3900
    assert events[-1]["status"] == "completed"
    assert len(stt.lengths) == 1 and 2.0 < stt.lengths[0] < 3.5


def test_input_at_24k_is_resampled_for_the_vad() -> None:
    engine = s2s.Engine(stt=DurationStt(), llm="scripted", tts="scripted", vad=load_silero_vad())
    session = engine.session(input_rate=24000, speculation=True)
    speech = s2s.resample(_wav("q_book.wav"), input_rate=16000, output_rate=24000)
    silence = np.zeros(24000, dtype=np.float32)
    _run(session, np.concatenate([silence, speech, silence]), 24000)
    events = _events_until_done(session)
    assert events[-1]["status"] == "completed"
    assert sum(e["type"] == "speech_started" for e in events) == 1


def test_push_to_talk_buffers_until_commit() -> None:
    stt = DurationStt()
    engine = s2s.Engine(stt=stt, llm="scripted", tts="scripted")
    session = engine.session(input_rate=24000, turn_detection=False)
    session.feed_audio(np.zeros(48000, dtype=np.float32))
    assert session.next_event(timeout=0.2) is None
    session.commit()
    session.create_response()
    events = _events_until_done(session)
    assert "speech_started" not in [e["type"] for e in events]
    assert abs(stt.lengths[0] - 2.0) < 0.01


class CountingStt:
    """A word per voiced half second: a transcript that grows as speech goes on."""

    def transcribe(self, audio: Any, **kw: Any) -> Iterator[_Transcript]:
        blocks = audio[: len(audio) // 8000 * 8000].reshape(-1, 8000)
        n = int((np.sqrt((blocks**2).mean(axis=1)) > 0.02).sum())
        yield _Transcript(" ".join(f"w{i}" for i in range(n)), final=True)


def test_live_transcription_sends_append_only_deltas() -> None:
    engine = s2s.Engine(stt=CountingStt(), llm="scripted", tts="scripted", vad=load_silero_vad())
    session = engine.session(input_rate=16000, transcription=True, live_transcription=True)
    silence = np.zeros(16000, np.float32)
    audio = np.concatenate([silence, _wav("jfk.wav"), silence])
    step = 320
    for i in range(0, len(audio), step):
        session.feed_audio(audio[i : i + step])
        time.sleep(0.001)  # let the STT worker keep up, as it would in real time
    events = _events_until_done(session, timeout=20)
    types = [e["type"] for e in events]
    deltas = [e["delta"] for e in events if e["type"] == "input_transcript_delta"]
    final = next(e for e in events if e["type"] == "input_transcript_completed")["transcript"]
    # JFK pauses after "fellow Americans": the first turn is about 3 s long.
    assert len(deltas) >= 2, types
    assert types.index("input_transcript_delta") < types.index("speech_stopped")
    # The deltas agree with the final transcript (the last live run may have
    # seen a little more or less audio than the committed turn).
    live, done = "".join(deltas).split(), final.split()
    k = min(len(live), len(done))
    assert live[:k] == done[:k] and abs(len(live) - len(done)) <= 1, (live, done)
