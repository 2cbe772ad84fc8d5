"""The engine driven from Python: Python handlers as callbacks, events out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from handler_fakes import Chunk, Text, Transcript, until_done

import speech_to_speech as s2s


class EchoStt:
    """Transcribes the peak level of the audio, so sessions are told apart."""

    def __init__(self) -> None:
        self.threads: set[int] = set()

    def transcribe(self, audio: Any, **kw: Any) -> Iterator[Transcript]:
        self.threads.add(threading.get_ident())
        assert audio.dtype == np.float32 and kw["cancel"].is_set() is False
        yield Transcript(f"level {round(float(np.abs(audio).max()) * 100)}", final=True)


class WordsLlm:
    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.fail = fail
        self.delay = delay
        self.seen: list[list[dict[str, Any]]] = []

    def generate(self, messages: list[dict[str, Any]], **kw: Any) -> Iterator[Text]:
        self.seen.append(messages)
        if self.fail:
            raise RuntimeError("the model is on fire")
        for i, w in enumerate(f"You said {messages[-1]['content']}. Goodbye now.".split()):
            if kw["cancel"].is_set():
                return
            time.sleep(self.delay)
            yield Text(w if i == 0 else " " + w)


class ToneTts:
    def synthesize(self, text: str, **kw: Any) -> Iterator[Chunk]:
        for _ in text.split():
            yield Chunk(np.full(1600, 0.1, dtype=np.float32), 16000)


def _level_audio(level: float) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.full(16000, level, dtype=np.float32)


def test_python_handlers_answer_a_committed_turn() -> None:
    stt, llm = EchoStt(), WordsLlm()
    engine = s2s.Engine(stt=stt, llm=llm, tts=ToneTts())
    session = engine.session(instructions="Be brief.", output_rate=24000, transcription=True)
    session.commit_audio(_level_audio(0.25))
    session.create_response()
    events = until_done(session)
    types = [e["type"] for e in events]
    assert types.index("input_transcript_completed") < types.index("response_created")
    done = events[-1]
    assert done["status"] == "completed"
    assert done["output"][0]["text"] == "You said level 25. Goodbye now."
    audio = np.concatenate([e["audio"] for e in events if e["type"] == "audio_delta"])
    # 6 words x 100 ms, resampled from 16 kHz to 24 kHz.
    assert abs(len(audio) - 6 * 2400) <= 2
    assert llm.seen[0][0] == {"role": "system", "content": "Be brief."}
    # Handlers run on the engine's worker threads, never the caller's.
    assert stt.threads and threading.main_thread().ident not in stt.threads


def test_a_raising_handler_fails_the_response_not_the_session() -> None:
    engine = s2s.Engine(stt=EchoStt(), llm=WordsLlm(fail=True), tts=ToneTts())
    session = engine.session()
    session.add_text("hello")
    session.create_response()
    done = until_done(session)[-1]
    assert done["status"] == "failed"
    assert "RuntimeError: the model is on fire" in done["error"]
    session.add_text("again")
    session.create_response()
    assert until_done(session)[-1]["status"] == "failed"


def test_cancel_stops_a_running_response() -> None:
    engine = s2s.Engine(stt=EchoStt(), llm=WordsLlm(delay=0.05), tts=ToneTts())
    session = engine.session()
    session.add_text("hello there")
    session.create_response()
    with pytest.raises(s2s.SessionError) as refused:
        session.create_response()
    assert refused.value.code == "conversation_already_has_active_response"
    assert str(refused.value).startswith("conversation already has an active response")
    # Cancel once the answer is under way: its first audio is out.
    while (ev := session.next_event(timeout=5)) is not None and ev["type"] != "audio_delta":
        pass
    assert ev is not None
    assert session.cancel_response()
    done = until_done(session)[-1]
    assert (done["status"], done["reason"]) == ("cancelled", "client_cancelled")


def test_sessions_share_models_without_cross_talk() -> None:
    engine = s2s.Engine(stt=EchoStt(), llm=WordsLlm(), tts=ToneTts(), max_sessions=10)
    sessions = [engine.session() for _ in range(10)]
    assert engine.sessions == 10
    with pytest.raises(s2s.SessionLimitError):
        engine.session()
    for i, s in enumerate(sessions):
        s.commit_audio(_level_audio((i + 1) / 100))
        s.create_response()
    for i, s in enumerate(sessions):
        assert until_done(s)[-1]["output"][0]["text"] == f"You said level {i + 1}. Goodbye now."
    for s in sessions:
        s.close()
    assert engine.sessions == 0


def test_next_event_releases_the_gil() -> None:
    engine = s2s.Engine(stt="scripted", llm="scripted", tts="scripted")
    session = engine.session()
    counter = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal counter
        while not stop.is_set():
            counter += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = counter
        assert session.next_event(timeout=0.3) is None
        assert counter - before > 1000
    finally:
        stop.set()
        t.join()


def test_empty_commit_is_a_clear_error() -> None:
    session = s2s.Engine(stt="scripted", llm="scripted", tts="scripted").session()
    with pytest.raises(s2s.SessionError) as empty:
        session.commit_audio(np.zeros(100, dtype=np.float32))
    assert empty.value.code == "input_audio_buffer_commit_empty"
    assert "buffer too small" in str(empty.value)


def test_each_turn_is_logged_on_one_line_with_its_timings() -> None:
    import subprocess
    import sys

    code = (
        "import numpy as np, speech_to_speech as s2s\n"
        "assert s2s.init_logging('info')\n"
        "s = s2s.Engine(stt='scripted', llm='scripted', tts='scripted').session()\n"
        "s.commit_audio(np.full(16000, 0.3, dtype=np.float32))\n"
        "s.create_response()\n"
        "while (e := s.next_event(timeout=5)) is not None and e['type'] != 'timings': pass\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [line for line in out.stderr.splitlines() if " turn" in line]
    assert len(lines) == 1, out.stderr
    for key in ("commit_to_stt_ms", "commit_to_first_token_ms", "commit_to_audio_ms", "status"):
        assert key in lines[0], lines[0]
    assert "INFO" in lines[0]


_EXIT_MID_RESPONSE = """
import sys, time
import numpy as np
import speech_to_speech as s2s
from dataclasses import dataclass

@dataclass
class T:
    text: str
    final: bool = True
    language: str | None = None

class Stt:
    def transcribe(self, audio, **kw):
        yield T("hello")

class Llm:
    def generate(self, messages, **kw):
        for i in range(200):
            time.sleep(0.002)  # releases the GIL: the main thread can exit meanwhile
            yield type("D", (), {"text": f" word{i}."})()

class Tts:
    def synthesize(self, text, **kw):
        time.sleep(0.01)
        yield type("C", (), {"samples": np.zeros(160, np.float32), "sample_rate": 16000,
                              "words": None})()

engine = s2s.Engine(stt=Stt(), llm=Llm(), tts=Tts())
sessions = [engine.session() for _ in range(4)]
for s in sessions:
    s.add_text("go")
    s.create_response()
time.sleep(float(sys.argv[1]))
print("exiting", flush=True)
# The interpreter shuts down while every stage has jobs running and queued.
"""


def test_workers_survive_interpreter_shutdown(tmp_path: Any) -> None:
    """Stage workers never panic when the interpreter goes away under them."""
    import subprocess
    import sys

    script = tmp_path / "exit_mid_response.py"
    script.write_text(_EXIT_MID_RESPONSE)
    for delay in ("0.0", "0.05", "0.2"):
        done = subprocess.run(
            [sys.executable, str(script), delay],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "exiting" in done.stdout
        assert "panicked" not in done.stderr, done.stderr[-2000:]
        assert "Fatal Python error" not in done.stderr, done.stderr[-2000:]
