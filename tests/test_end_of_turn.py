"""The learned end of turn in a session: Smart Turn v3 and the real Silero VAD.

Speech goes in at once, the silence after it in real time (20 ms chunks, 20 ms
apart), as a microphone or a Realtime client sends it: the policy's clock is
the audio, so the model's verdict has to be back within the silence it judges.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from handler_fakes import Transcript

from speech_to_speech import Engine, RealtimeServer, Session, float32_to_pcm16, resample
from speech_to_speech.flags import build_parser
from speech_to_speech.pipeline import _turn_model
from speech_to_speech.vad import load_silero_vad, load_smart_turn

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
SR = 16_000


def _speech(name: str) -> np.ndarray:
    """A clip without the silence it ends with (the test adds its own)."""
    with wave.open(str(AUDIO / name)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    last = int(np.nonzero(np.abs(audio) > 0.01)[0][-1])
    return audio[: last + SR // 50]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(
        stt="scripted",
        llm="scripted",
        tts="scripted",
        vad=load_silero_vad(),
        turn_model=load_smart_turn(),
    )


def _silence(session: Session, ms: int) -> None:
    chunk = np.zeros(SR // 50, np.float32)
    for _ in range(ms // 20):
        session.feed_audio(chunk)
        time.sleep(0.02)


def _turn_events(session: Session, wait_s: float = 0.5) -> list[str]:
    types = []
    while (ev := session.next_event(timeout=wait_s)) is not None:
        types.append(ev["type"])
    return types


def test_a_complete_question_ends_before_the_silence_rule(engine: Engine) -> None:
    session = engine.session(end_of_turn="auto")
    session.feed_audio(np.zeros(SR // 5, np.float32))
    session.feed_audio(_speech("q_ocean_fact.wav"))
    # 300 ms of silence, then nothing: the silence rule (500 ms) cannot end
    # this turn, only the model's "complete" can.
    _silence(session, 300)
    types = _turn_events(session)
    assert "speech_stopped" in types and "input_committed" in types, types


def test_a_mid_sentence_pause_holds_and_the_turn_goes_on(engine: Engine) -> None:
    session = engine.session(end_of_turn="high")
    jfk = _speech("jfk.wav")
    cut = len(jfk) * 3 // 4  # "... ask not what your country can do for you, ask what you can"
    session.feed_audio(np.zeros(SR // 5, np.float32))
    session.feed_audio(jfk[:cut])
    _silence(session, 700)  # past the 500 ms rule
    types = _turn_events(session)
    assert types.count("speech_started") == 1 and "speech_stopped" not in types, types
    session.feed_audio(jfk[cut:])
    _silence(session, 300)
    types = _turn_events(session)
    assert "speech_started" not in types, types
    assert types.count("speech_stopped") == 1, types


def test_without_the_model_the_silence_rule_ends_turns() -> None:
    # The same question and silence as above, no model: 300 ms is not enough.
    plain = Engine(stt="scripted", llm="scripted", tts="scripted", vad=load_silero_vad())
    session = plain.session(end_of_turn="auto")
    session.feed_audio(np.zeros(SR // 5, np.float32))
    session.feed_audio(_speech("q_ocean_fact.wav"))
    _silence(session, 300)
    assert "speech_stopped" not in _turn_events(session)
    _silence(session, 300)
    assert "speech_stopped" in _turn_events(session)


class _SlowStt:
    """Takes 250 ms a transcript, about what tiny.en takes on two cores."""

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, audio: Any, **kw: Any) -> Iterator[Transcript]:
        self.calls += 1
        time.sleep(0.25)
        yield Transcript("Tell me a fun fact about the ocean.", final=True)


def test_the_decision_waits_for_the_speculative_transcript() -> None:
    # Speculation starts at the 80 ms soft end, the model is due at 200 ms,
    # while STT still runs: it waits for the transcript rather than share
    # the CPU with it, and the turn still ends well before the silence rule.
    stt = _SlowStt()
    slow = Engine(
        stt=stt, llm="scripted", tts="scripted", vad=load_silero_vad(), turn_model=load_smart_turn()
    )
    session = slow.session(end_of_turn="auto")
    session.feed_audio(np.zeros(SR // 5, np.float32))
    session.feed_audio(_speech("q_ocean_fact.wav"))
    _silence(session, 600)
    timings = None
    while (ev := session.next_event(timeout=5)) is not None:
        if ev["type"] == "timings":
            timings = ev
            break
    assert timings is not None
    soft_end, stt_done = timings["soft_end_ms"], timings["stt_done_ms"]
    decision, commit = timings["decision_ms"], timings["commit_ms"]
    assert None not in (soft_end, stt_done, decision, commit), timings
    assert stt_done - soft_end >= 240, timings  # the transcript of the soft end
    assert stt_done <= decision <= commit, timings
    assert commit - soft_end < 500, timings  # 50 + 500 would be the rule
    assert stt.calls == 1, "the committed turn used the speculative transcript"


def _args(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def test_a_missing_model_stops_start_up_only_when_asked_for(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from speech_to_speech import ModelNotFoundError, vad

    def missing() -> str:
        raise ModelNotFoundError("the Smart Turn model is not installed: pip install pipecat-ai")

    monkeypatch.setattr(vad, "default_turn_model_path", missing)
    with pytest.raises(ModelNotFoundError, match="pip install"):
        _turn_model(_args("--turn_detector", "smart_turn"))
    with caplog.at_level(logging.WARNING):
        assert _turn_model(_args()) is None
    assert "silence rule" in caplog.text and "pip install" in caplog.text
    assert _turn_model(_args("--turn_detector", "silence")) is None


def test_an_explicit_path_that_is_wrong_stops_start_up(tmp_path: Path) -> None:
    from speech_to_speech import SpeechToSpeechError

    with pytest.raises(SpeechToSpeechError, match=r"nope\.onnx"):
        _turn_model(_args("--turn_model_path", str(tmp_path / "nope.onnx")))


# The Realtime path, through the official SDK.


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[RealtimeServer]:
    srv = RealtimeServer(engine, port=0, backends={"stt": "scripted"})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _pcm24(audio: np.ndarray) -> str:
    pcm = float32_to_pcm16(np.asarray(resample(audio, input_rate=SR, output_rate=24_000)))
    return base64.b64encode(pcm).decode()


async def _semantic_turn(server: RealtimeServer, speech: np.ndarray, silence_ms: int) -> list[str]:
    from openai import AsyncOpenAI
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    strict = TypeAdapter(RealtimeServerEvent)
    client = AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{server.port}/v1",
        api_key="x",
    )
    types: list[str] = []
    async with client.realtime.connect(model="gpt-realtime") as conn:
        # auto: the silence rule is 600 ms, the model is asked at 200 ms.
        td = {"type": "semantic_vad", "eagerness": "auto", "create_response": False}
        await conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": td}}}
        )
        await conn.input_audio_buffer.append(audio=_pcm24(np.zeros(SR // 5, np.float32)))
        await conn.input_audio_buffer.append(audio=_pcm24(speech))
        chunk = _pcm24(np.zeros(SR // 50, np.float32))
        for _ in range(silence_ms // 20):
            await conn.input_audio_buffer.append(audio=chunk)
            await asyncio.sleep(0.02)
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(conn.recv_bytes(), left)
            except TimeoutError:
                break
            event = strict.validate_json(raw)
            assert event.type != "error", event
            types.append(event.type)
    return types


@pytest.mark.asyncio
async def test_semantic_vad_with_the_official_sdk(server: RealtimeServer) -> None:
    # A finished question ends on 300 ms of silence (the rule needs 600) ...
    done = await _semantic_turn(server, _speech("q_ocean_fact.wav"), 300)
    assert "input_audio_buffer.committed" in done, done
    # ... and a sentence cut mid-clause waits through 900 ms.
    jfk = _speech("jfk.wav")
    held = await _semantic_turn(server, jfk[: len(jfk) * 3 // 4], 900)
    assert "input_audio_buffer.speech_started" in held, held
    assert "input_audio_buffer.committed" not in held, held
