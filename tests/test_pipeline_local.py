"""A whole spoken turn on the bundled local models (CPU, no network)."""

from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _wer import wer

import speech_to_speech as s2s
from speech_to_speech.handlers.registry import create_handler
from speech_to_speech.pipeline import build_engine

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


def _wav(name: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    with wave.open(str(SHARED / name)) as w:
        return s2s.pcm16_to_float32(w.readframes(w.getnframes()))


@pytest.fixture(scope="module")
def engine() -> s2s.Engine:
    return build_engine(max_new_tokens=48)


def test_a_spoken_question_gets_a_spoken_answer(engine: s2s.Engine) -> None:
    session = engine.session(input_rate=16000, output_rate=24000, transcription=True)
    silence = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([silence, _wav("q_capital_france.wav"), silence])
    for i in range(0, len(audio), 320):
        session.feed_audio(audio[i : i + 320])
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ev = session.next_event(timeout=0.5)
        if ev is None:
            continue
        events.append(ev)
        if ev["type"] == "response_done":
            break
    types = [e["type"] for e in events]
    assert "response_done" in types, types
    heard = next(e for e in events if e["type"] == "input_transcript_completed")["transcript"]
    assert wer("What is the capital of France?", heard) <= 0.5, heard
    done = events[-1]
    assert done["status"] == "completed", done
    reply = done["output"][0]["text"]
    assert reply.strip()
    speech = np.concatenate([e["audio"] for e in events if e["type"] == "audio_delta"])
    # What the agent said, heard back by the same Whisper model.
    stt = create_handler("stt", "faster-whisper")
    stt.setup()
    back = s2s.resample(speech, input_rate=24000, output_rate=16000)
    transcript = next(t.text for t in stt.transcribe(back) if t.final)
    assert wer(reply, transcript) <= 0.35, (reply, transcript)
