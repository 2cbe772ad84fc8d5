"""The socket and websocket modes over real connections, and the mode flags.

The engine runs the core's scripted STT, LLM and TTS with the real Silero VAD:
the transcript of a turn is "level N" (N the input's peak in hundredths) and
the answer "You said: level N." is spoken as 100 ms of tone per word, so these
tests are fast and see exactly what crossed the connection. The same modes on
the bundled models, through a PulseAudio microphone and speaker, are in
``test_modes_pulse.py``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from speech_checks import AUDIO

import speech_to_speech as s2s
from speech_to_speech import cli
from speech_to_speech._core import SocketServer, WebSocketServer
from speech_to_speech.vad import load_silero_vad

websockets_sync = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

RATE = 16000
# The scripted answer, "You said: level N. That is all I know.", is 100 ms of tone a word.
ANSWER_WORDS = 9


def _question() -> bytes:
    """'What is the capital of France?' as 16 kHz PCM16, 0.3 s of silence before, 1.5 s after."""
    path: Path = AUDIO / "q_capital_france.wav"
    if not path.exists():
        pytest.skip("shared test audio not found")
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE
        speech = w.readframes(w.getnframes())
    return bytes(2 * RATE * 3 // 10) + speech + bytes(2 * RATE * 3 // 2)


def _peak_level(pcm: bytes) -> int:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return round(float(np.abs(x).max()) * 100.0)


@pytest.fixture(scope="module")
def engine() -> s2s.Engine:
    return s2s.Engine(
        stt="scripted", llm="scripted", tts="scripted", vad=load_silero_vad(), max_sessions=16
    )


@pytest.fixture(scope="module")
def ws_server(engine: s2s.Engine) -> Iterator[WebSocketServer]:
    server = WebSocketServer(engine, port=0, max_message_bytes=64 * 1024)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sock_server(engine: s2s.Engine) -> Iterator[SocketServer]:
    server = SocketServer(engine, host="127.0.0.1", send_port=0, recv_port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- websocket


def _ws_turn(url: str, pcm: bytes) -> tuple[dict[str, Any], list[dict[str, Any]], bytes]:
    """Send a spoken turn in 100 ms frames; the announcement, the events, the answer's audio."""
    with websockets_sync.connect(url, max_size=None) as ws:
        hello = json.loads(ws.recv(timeout=10))
        step = RATE // 10 * 2
        for i in range(0, len(pcm), step):
            ws.send(pcm[i : i + step])
        events: list[dict[str, Any]] = []
        audio = bytearray()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=30)
            if isinstance(msg, bytes):
                audio += msg
                continue
            events.append(json.loads(msg))
            if events[-1]["type"] == "response_done":
                break
        # The answer is paced to real time: the last audio comes after response_done.
        try:
            while True:
                msg = ws.recv(timeout=1.0)
                if isinstance(msg, bytes):
                    audio += msg
        except TimeoutError:
            pass
    return hello, events, bytes(audio)


def test_websocket_announces_the_rates_then_answers_a_spoken_turn(
    ws_server: WebSocketServer,
) -> None:
    pcm = _question()
    hello, events, audio = _ws_turn(f"{ws_server.url}?output_rate=24000", pcm)
    assert hello["type"] == "session_created"
    assert (hello["input_rate"], hello["output_rate"], hello["events"]) == (16000, 24000, True)
    types = [e["type"] for e in events]
    for kind in ("speech_started", "speech_stopped", "input_transcript_completed"):
        assert kind in types, types
    assert types[-1] == "response_done", types
    assert events[-1]["status"] == "completed"
    heard = next(e for e in events if e["type"] == "input_transcript_completed")
    assert heard["transcript"] == f"level {_peak_level(pcm)}"
    said = "".join(e["delta"] for e in events if e["type"] == "transcript_delta")
    assert said.strip().startswith(f"You said: level {_peak_level(pcm)}.")
    assert len(said.split()) == ANSWER_WORDS
    # 100 ms a word at 24 kHz, as PCM16.
    assert abs(len(audio) - ANSWER_WORDS * 2400 * 2) <= 2 * 240, len(audio)
    assert all(v is not None for e in events for v in e.values())


def test_websocket_output_rate_can_be_changed_by_a_message(ws_server: WebSocketServer) -> None:
    with websockets_sync.connect(f"{ws_server.url}?events=0") as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert (hello["output_rate"], hello["events"]) == (16000, False)
        ws.send(json.dumps({"type": "session_update", "output_rate": 48000}))
        updated = json.loads(ws.recv(timeout=10))
        assert updated["type"] == "session_updated" and updated["output_rate"] == 48000
        ws.send(json.dumps({"type": "session_update", "output_rate": 12345}))
        err = json.loads(ws.recv(timeout=10))
        assert err["type"] == "error" and err["code"] == "invalid_value"
        assert "12345" in err["message"] and "48000" in err["message"]


def test_websocket_bad_input_gets_an_error_frame_and_the_conversation_goes_on(
    ws_server: WebSocketServer, engine: s2s.Engine
) -> None:
    with websockets_sync.connect(ws_server.url, max_size=None) as ws:
        json.loads(ws.recv(timeout=10))
        cases: list[tuple[str | bytes, str]] = [
            ("not json at all {", "invalid_json"),
            ("[1, 2]", "invalid_json"),
            (json.dumps({"type": "dance"}), "unknown_message"),
            (b"\x00\x01\x02", "odd_byte_count"),
            (bytes(100 * 1024), "message_too_large"),
        ]
        for frame, code in cases:
            ws.send(frame)
            err = json.loads(ws.recv(timeout=10))
            assert (err["type"], err["code"]) == ("error", code), (frame[:20], err)
            assert err["message"]
        # Still the same conversation: a commit of nothing is refused, politely.
        ws.send(json.dumps({"type": "session_update"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "session_updated"
    # A frame over twice the limit closes that connection with 1009; others go on.
    server = WebSocketServer(engine, port=0, max_message_bytes=1024)
    server.start()
    try:
        with (
            websockets_sync.connect(server.url) as big,
            websockets_sync.connect(server.url) as other,
        ):
            json.loads(big.recv(timeout=10))
            json.loads(other.recv(timeout=10))
            big.send(bytes(4096))
            err = json.loads(big.recv(timeout=10))
            assert (err["type"], err["code"]) == ("error", "message_too_large"), err
            with pytest.raises(ConnectionClosed) as closed:
                big.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            other.send(json.dumps({"type": "session_update"}))
            assert json.loads(other.recv(timeout=10))["type"] == "session_updated"
    finally:
        server.stop()


def test_websocket_refuses_an_unsupported_rate_before_upgrading(
    ws_server: WebSocketServer,
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        websockets_sync.connect(f"{ws_server.url}?output_rate=12345")
    assert refused.value.response.status_code == 400
    assert b"12345" in refused.value.response.body
    with pytest.raises(s2s.ServerError, match="output_rate"):
        WebSocketServer(s2s.Engine(stt="scripted", llm="scripted", tts="scripted"), output_rate=7)


# ------------------------------------------------------------------- socket


def _connect_pair(server: SocketServer) -> tuple[socket.socket, socket.socket]:
    assert server.send_port is not None and server.recv_port is not None
    mic = socket.create_connection(("127.0.0.1", server.send_port), timeout=10)
    spk = socket.create_connection(("127.0.0.1", server.recv_port), timeout=10)
    return mic, spk


def _read_answer(spk: socket.socket, quiet: float = 1.5) -> bytes:
    """Read until the server has sent nothing for ``quiet`` seconds after the answer began."""
    got = bytearray()
    deadline = time.monotonic() + 30
    spk.settimeout(quiet)
    while time.monotonic() < deadline:
        try:
            chunk = spk.recv(65536)
        except TimeoutError:
            if got and any(got):
                break
            continue
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_socket_answers_in_exact_chunks_and_serves_two_clients_at_once(
    sock_server: SocketServer,
) -> None:
    pcm = _question()
    quiet = np.frombuffer(pcm, dtype="<i2") // 4  # a second client, a quarter as loud
    pairs = [_connect_pair(sock_server), _connect_pair(sock_server)]
    answers: list[bytes] = [b"", b""]

    def talk(i: int, data: bytes) -> None:
        mic, spk = pairs[i]
        for j in range(0, len(data), 2048):
            mic.sendall(data[j : j + 2048])
        answers[i] = _read_answer(spk)

    threads = [
        threading.Thread(target=talk, args=(0, pcm)),
        threading.Thread(target=talk, args=(1, quiet.astype("<i2").tobytes())),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sock_server.conversations == 2
    for mic, spk in pairs:
        mic.close()
        spk.close()
    chunk_bytes = 1024 * 2
    for answer in answers:
        # Whole chunks only, the tone of the answer's words at 16 kHz among them.
        assert len(answer) % chunk_bytes == 0, len(answer)
        samples = np.frombuffer(answer, dtype="<i2")
        voiced = int(np.count_nonzero(np.abs(samples) > 100))
        assert ANSWER_WORDS * 1600 * 0.8 <= voiced <= ANSWER_WORDS * 1600 * 1.05, voiced
    deadline = time.monotonic() + 10
    while sock_server.conversations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sock_server.conversations == 0


def test_socket_survives_odd_bytes_and_a_client_leaving_mid_answer(
    sock_server: SocketServer,
) -> None:
    pcm = _question()
    # Writes split inside a sample, and a stray byte at the end: the samples still line up.
    mic, spk = _connect_pair(sock_server)
    mic.sendall(pcm[:1001])
    mic.sendall(pcm[1001:])
    mic.sendall(b"\x00")
    answer = _read_answer(spk)
    assert np.count_nonzero(np.abs(np.frombuffer(answer, dtype="<i2")) > 100) > 1600
    mic.close()
    spk.close()
    # A client that leaves while the answer plays.
    mic, spk = _connect_pair(sock_server)
    mic.sendall(pcm)
    spk.settimeout(30)
    first = spk.recv(4096)
    assert first
    while not any(first):
        first = spk.recv(4096)
    mic.close()
    spk.close()
    # The server serves the next client as before.
    mic, spk = _connect_pair(sock_server)
    mic.sendall(pcm)
    assert np.count_nonzero(np.frombuffer(_read_answer(spk), dtype="<i2")) > 1600
    mic.close()
    spk.close()
    assert sock_server.running


# -------------------------------------------------------------------- flags


def test_talk_refuses_a_bad_url_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["talk", "--url", "http://127.0.0.1:1/v1/realtime"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ws://" in err
    assert cli.main(["talk", "--url", f"ws://127.0.0.1:{_free_port()}/v1/realtime"]) == 2
    assert "could not connect" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_mode_flags_reach_the_session_defaults() -> None:
    from speech_to_speech.flags import build_parser
    from speech_to_speech.server import session_defaults

    args = build_parser().parse_args(["--mode", "socket", "--noise_reduction", "far_field"])
    assert session_defaults(args)["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    args = build_parser().parse_args([])
    assert "noise_reduction" not in session_defaults(args)["audio"]["input"]
    assert (args.send_port, args.recv_port, args.list_play_chunk_size) == (12345, 12346, 1024)


def test_unsupported_rates_are_refused_before_anything_opens(engine: s2s.Engine) -> None:
    with pytest.raises(s2s.ServerError, match="12345"):
        SocketServer(engine, send_rate=12345)
    with pytest.raises(s2s.ServerError, match="7"):
        SocketServer(engine, recv_rate=7)
    with pytest.raises(s2s.SpeechToSpeechError, match="12345"):
        s2s._core.ListenAndPlay(host="127.0.0.1", send_port=1, recv_port=2, send_rate=12345)


def test_a_session_takes_noise_reduction_and_refuses_an_unknown_preset(
    engine: s2s.Engine,
) -> None:
    pcm = np.frombuffer(_question(), dtype="<i2").astype(np.float32) / 32768.0
    session = engine.session(input_rate=RATE, transcription=True, noise_reduction="near_field")
    for i in range(0, len(pcm), 320):
        session.feed_audio(pcm[i : i + 320])
    deadline = time.monotonic() + 30
    heard = None
    while heard is None and time.monotonic() < deadline:
        ev = session.next_event(timeout=0.5)
        if ev is not None and ev["type"] == "input_transcript_completed":
            heard = ev["transcript"]
    # RNNoise runs before the VAD (its effect is measured in rust/engine/input.rs's
    # tests): clean speech still makes a turn.
    assert heard is not None and heard.startswith("level ")
    session.close()
    with pytest.raises(s2s.NoiseReductionError, match="near_field"):
        engine.session(noise_reduction="loud")  # type: ignore[arg-type]
