"""Injected faults in Python handlers and in a remote LLM endpoint.

In each test one session meets the fault while others run on the same engine
(one worker per stage): the faulty response fails naming its stage, the others
complete, and the engine keeps serving. (Faults in the transport, and hung
calls without Python, are in tests/server_faults.rs and tests/faults.rs.)
"""

from __future__ import annotations

import json
import threading
import time
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from handler_fakes import Chunk, Text, Transcript, until_done

import speech_to_speech as s2s
from speech_to_speech.handlers.llm.chat_completions import ChatCompletionsLLM
from speech_to_speech.vad import load_silero_vad

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio" / "q_capital_france.wav"


class Faults:
    """Handlers that misbehave on a marker: speech for STT, the word MARK for the others.

    ``raise``: the call raises. ``hang``: it blocks, ignoring its cancel token
    as a stuck library would, until ``release`` is set. ``slow``: each output
    takes 10x its duration in real time.
    """

    def __init__(self, mode: str, stage: str) -> None:
        self.mode = mode
        self.stage = stage
        self.release = threading.Event()
        self.hung = threading.Event()

    def _fault(self, stage: str, marked: bool) -> None:
        if stage != self.stage or not marked:
            return
        if self.mode == "raise":
            raise RuntimeError(f"injected {stage} fault")
        if self.mode == "hang":
            self.hung.set()
            self.release.wait(60)

    def transcribe(self, audio: Any, **kw: Any) -> Iterator[Transcript]:
        level = round(float(np.abs(audio).max()) * 100)
        # Speech (not a constant level) is the STT's marker.
        self._fault("stt", float(np.ptp(audio)) > 0.01)
        yield Transcript(f"level {level} MARK" if level == 50 else f"level {level}", final=True)

    def generate(self, messages: list[dict[str, Any]], **kw: Any) -> Iterator[Text]:
        last = str(messages[-1]["content"]) if messages else ""
        self._fault("llm", "MARK" in last)
        for i, w in enumerate(f"You said {last}. Goodbye.".split()):
            if kw["cancel"].is_set():
                return
            yield Text(w if i == 0 else " " + w)

    def synthesize(self, text: str, **kw: Any) -> Iterator[Chunk]:
        self._fault("tts", "MARK" in text)
        slow = self.mode == "slow" and "MARK" in text
        for _ in text.split():
            if slow:
                time.sleep(0.2)  # 20 ms of audio in 200 ms: 10x real time
            yield Chunk(np.full(320 if slow else 1600, 0.1, dtype=np.float32), 16000)


def _speech_turn(session: s2s.Session) -> None:
    """A spoken question and a second of silence: the VAD ends the turn, which wants an answer."""
    with wave.open(str(AUDIO), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    speech = pcm.astype(np.float32) / 32768.0
    silence = np.zeros(16000, np.float32)
    session.feed_audio(np.concatenate([silence[:3200], speech, silence]))


def _bad_turn(session: s2s.Session, stage: str) -> None:
    if stage == "stt":
        _speech_turn(session)
    else:
        _turn(session, 0.5)


def _turn(session: s2s.Session, level: float) -> None:
    session.commit_audio(np.full(16000, level, dtype=np.float32))
    session.create_response()


def _others(engine: s2s.Engine, n: int = 3) -> list[s2s.Session]:
    sessions = [engine.session() for _ in range(n)]
    for i, s in enumerate(sessions):
        _turn(s, 0.1 + 0.1 * i)
    return sessions


def _all_complete(sessions: list[s2s.Session]) -> None:
    for i, s in enumerate(sessions):
        done = until_done(s, 20.0)[-1]
        assert done["status"] == "completed", done
        assert f"level {10 + 10 * i}" in done["output"][0]["text"], done


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
def test_a_raising_handler_fails_its_response_naming_the_stage(stage: str) -> None:
    h = Faults("raise", stage)
    engine = s2s.Engine(stt=h, llm=h, tts=h, vad=load_silero_vad() if stage == "stt" else None)
    bad = engine.session()
    _bad_turn(bad, stage)
    others = _others(engine)
    events = until_done(bad, 20.0)
    done = events[-1]
    assert done["status"] == "failed", done
    assert f"injected {stage} fault" in done["error"] and stage in done["error"].lower(), done
    errors = [e for e in events if e["type"] == "error"]
    assert errors and all(stage in e["message"].lower() for e in errors), events
    _all_complete(others)
    # The faulty session goes on: its next turn is answered.
    _turn(bad, 0.3)
    assert until_done(bad, 20.0)[-1]["status"] == "completed"


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
def test_a_hanging_handler_times_out_and_its_worker_is_replaced(stage: str) -> None:
    h = Faults("hang", stage)
    vad = load_silero_vad() if stage == "stt" else None
    engine = s2s.Engine(stt=h, llm=h, tts=h, vad=vad, **{f"{stage}_timeout_s": 1.0})
    try:
        bad = engine.session()
        _bad_turn(bad, stage)
        assert h.hung.wait(10)
        t0 = time.monotonic()
        # The others queue behind the hung call on the stage's one worker.
        others = _others(engine)
        done = until_done(bad, 20.0)[-1]
        assert done["status"] == "failed", done
        assert stage in done["error"].lower() and "timed out" in done["error"].lower(), done
        _all_complete(others)
        # Served within the timeout plus their own (fast) work, not after the hang.
        assert time.monotonic() - t0 < 8
        workers = engine.workers(stage)
        assert workers["serving"] == 1 and workers["abandoned"] == 1, workers
    finally:
        h.release.set()
    # Once the stuck call returns, its thread ends.
    deadline = time.monotonic() + 10
    while engine.workers(stage)["abandoned"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_slow_tts_at_10x_real_time_queues_a_bounded_amount_and_everyone_is_answered() -> None:
    h = Faults("slow", "tts")
    engine = s2s.Engine(stt=h, llm=h, tts=h, tts_workers=2, tts_timeout_s=5.0)
    slow = [engine.session() for _ in range(4)]
    for s in slow:
        _turn(s, 0.5)
    others = _others(engine, 2)
    pending = {id(s): s for s in slow + others}
    done: dict[int, dict[str, Any]] = {}
    depth = []
    deadline = time.monotonic() + 60
    while pending:
        assert time.monotonic() < deadline, len(pending)
        depth.append(engine.workers("tts")["queued"])
        for key, s in list(pending.items()):
            ev = s.next_event(timeout=0.01)
            if ev is not None and ev["type"] == "response_done":
                done[key] = ev
                del pending[key]
    # Slow is not stuck: output keeps coming, so no timeout fires and all complete.
    assert all(d["status"] == "completed" for d in done.values()), done
    # The queue holds the clauses asked for (two a response), never more: it does
    # not grow with the time the stage is behind.
    assert 0 < max(depth) <= 2 * len(done), max(depth)
    assert depth[-1] == 0


# --- a remote LLM endpoint that refuses, stalls mid-stream or returns garbage ---


class _Endpoint(BaseHTTPRequestHandler):
    mode = "ok"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        mode = type(self).mode
        if mode == "refuse":
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "overloaded", "type": "server_error"}}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if mode == "garbage":
            self.wfile.write(b"data: {this is not json\n\n")
            self.wfile.flush()
            return
        words = ["Hello", " again", "."]
        for i, w in enumerate(words):
            chunk = {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            if mode == "stall" and i == 0:
                time.sleep(30)
                return
        if mode == "cut":
            return  # the connection closes mid-answer: no finish_reason, no [DONE]
        last = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def endpoint() -> Iterator[tuple[str, type[_Endpoint]]]:
    handler = type("Endpoint", (_Endpoint,), {"mode": "ok"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("fault", ["refuse", "stall", "garbage", "cut"])
def test_a_broken_remote_llm_fails_the_turn_and_the_next_works_once_it_is_back(
    endpoint: tuple[str, type[_Endpoint]], fault: str
) -> None:
    url, handler = endpoint
    llm = ChatCompletionsLLM(model="m", base_url=url, api_key="x", timeout=30.0)
    llm.setup()
    h = Faults("none", "none")
    engine = s2s.Engine(stt=h, llm=llm, tts=h, llm_timeout_s=1.5)
    session = engine.session()
    handler.mode = fault
    session.add_text("hello")
    session.create_response()
    t0 = time.monotonic()
    done = until_done(session, 20.0)[-1]
    assert done["status"] == "failed", done
    assert "llm" in done["error"].lower(), done
    # Failed fast: the stage timeout bounds a stall, whatever the client's own timeout.
    assert time.monotonic() - t0 < 10
    handler.mode = "ok"
    session.add_text("hello again")
    session.create_response()
    done = until_done(session, 20.0)[-1]
    assert done["status"] == "completed", done
    assert done["output"][0]["text"] == "Hello again."
