"""Every mode end to end on the bundled models, through a PulseAudio microphone and speaker.

Each test runs the shipped commands as a user would (``speech-to-speech
--mode ...``, ``listen_and_play``, ``speech-to-speech talk``), plays a
question from ``../shared/audio`` into the virtual microphone (the null sink
``micsrc``, whose monitor is the default source), records the speaker sink's
monitor (``spk.monitor``) and transcribes the answer with the bundled STT.
The server's log (the core logs each turn's transcripts) is the test log.

The echo test routes the speaker back into the microphone (a PulseAudio
loopback, 60 ms, at ``S2S_ECHO_DB``, default -20 dB) and asks three questions
with echo cancellation off, then on: off, the agent interrupts itself (the
log's barge-in lines); on, it completes at least two answers and never
interrupts itself, also when the speaker stalls mid-answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from speech_checks import AUDIO, REFERENCES, free_port, wer
from test_audio_devices import pulse

from speech_to_speech.handlers import STTHandler

__all__ = ["pulse"]

websockets_sync = pytest.importorskip("websockets.sync.client")

SR = 16000
Samples = npt.NDArray[np.float32]
QUESTION = "q_capital_france.wav"
# The bundled LLM answers in a sentence or two: spoken, 0.5 to 30 s.
ANSWER_SECONDS = (0.5, 30.0)
# The bundled Whisper tiny.en on the question, as test_pipeline_local.py bounds it.
WER_BOUND = 0.5
# The speaker's level in the microphone for the echo test.
ECHO_DB = float(os.environ.get("S2S_ECHO_DB", "-20"))


def _env(pulse_dir: str) -> dict[str, str]:
    env = dict(os.environ, XDG_RUNTIME_DIR=pulse_dir, S2S_LOG="info", PYTHONUNBUFFERED="1")
    env.pop("CI", None)
    return env


def _read(path: Path) -> Samples:
    with wave.open(str(path)) as w:
        assert w.getframerate() == SR
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def _wait_for(log: Path, pattern: str, timeout: float, proc: subprocess.Popen[bytes]) -> str:
    """Wait until ``pattern`` appears in ``log``; the matching line."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if rx.search(line):
                return line
        if proc.poll() is not None:
            raise AssertionError(f"exited ({proc.returncode}) before {pattern!r}:\n{text[-3000:]}")
        time.sleep(0.1)
    text = log.read_text(errors="replace") if log.exists() else ""
    raise AssertionError(f"no {pattern!r} in {timeout} s:\n{text[-3000:]}")


@contextlib.contextmanager
def _run(args: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run a command, output to ``log``; Ctrl-C it at the end, which must stop it cleanly."""
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{args[:4]} did not stop on Ctrl-C") from None
            assert code in (0, 130), (args[:4], code, log.read_text(errors="replace")[-2000:])


@contextlib.contextmanager
def _record(path: Path, env: dict[str, str]) -> Iterator[None]:
    """Record the speaker's monitor at 16 kHz mono while the block runs."""
    args = ["parecord", "-d", "spk.monitor", "--rate", str(SR), "--channels", "1"]
    proc = subprocess.Popen([*args, "--file-format=wav", str(path)], env=env)
    try:
        deadline = time.monotonic() + 10
        while (not path.exists() or path.stat().st_size <= 44 + 3200) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.02)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def _speak(name: str, env: dict[str, str]) -> None:
    """Play a recording into the virtual microphone."""
    subprocess.run(["paplay", "-d", "micsrc", str(AUDIO / name)], check=True, env=env, timeout=30)


def _voiced(x: Samples, frame: int = SR // 50, floor: float = 0.01) -> npt.NDArray[np.bool_]:
    n = len(x) // frame
    rms = np.sqrt((x[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    return np.asarray(rms > floor)


def _answer(path: Path, timeout: float = 120.0, quiet_s: float = 2.0) -> Samples:
    """Wait until the recording holds an answer followed by ``quiet_s`` of silence; the answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        x = _read_partial(path)
        v = _voiced(x)
        if v.any():
            last = int(np.flatnonzero(v)[-1])
            if (len(v) - 1 - last) * 0.02 >= quiet_s:
                first = int(np.flatnonzero(v)[0])
                return x[first * SR // 50 : (last + 1) * SR // 50]
    raise AssertionError(f"no complete answer on the speaker in {timeout} s")


def _read_partial(path: Path) -> Samples:
    """The samples parecord has written so far (its header's length is not final yet)."""
    data = path.read_bytes()[44:]
    pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def _transcribe(stt: STTHandler, audio: Samples) -> str:
    return " ".join(t.text for t in stt.transcribe(audio) if t.final).strip()


def _check_answer(stt: STTHandler, answer: Samples) -> str:
    seconds = len(answer) / SR
    assert ANSWER_SECONDS[0] <= seconds <= ANSWER_SECONDS[1], seconds
    heard = _transcribe(stt, answer)
    assert len(heard.split()) >= 2, heard
    return heard


def _user_line(log: Path, proc: subprocess.Popen[bytes]) -> str:
    line = _wait_for(log, r' user: "', 120, proc)
    return line.split(' user: "', 1)[1].rstrip('"')


# The ALSA device that is PulseAudio (as on a desktop); its defaults are our null sinks.
DEVICES = ["--input_device", "pulse", "--output_device", "pulse"]


def _server(mode: str, extra: list[str]) -> list[str]:
    base = [sys.executable, "-m", "speech_to_speech", "--mode", mode]
    return [*base, "--max_new_tokens", "40", *extra]


def test_local_mode_answers_a_spoken_question(
    pulse: str, bundled_stt: STTHandler, tmp_path: Path
) -> None:
    env = _env(pulse)
    log = tmp_path / "local.log"
    aec = "on"
    with _run(_server("local", ["--aec", aec, *DEVICES]), log, env) as proc:
        _wait_for(log, "local mode: microphone", 120, proc)
        with _record(tmp_path / "spk.wav", env):
            _speak(QUESTION, env)
            said = _user_line(log, proc)
            answer = _answer(tmp_path / "spk.wav")
    assert wer(REFERENCES[QUESTION], said) <= WER_BOUND, said
    heard = _check_answer(bundled_stt, answer)
    print(f"\nlocal (aec {aec}): user {said!r}; answer {len(answer) / SR:.1f} s: {heard!r}")


def test_socket_mode_with_listen_and_play(
    pulse: str, bundled_stt: STTHandler, tmp_path: Path
) -> None:
    env = _env(pulse)
    send, recv = free_port(), free_port()
    ports = ["--send_port", str(send), "--recv_port", str(recv)]
    log = tmp_path / "server.log"
    with _run(_server("socket", ["--host", "127.0.0.1", *ports]), log, env) as server:
        _wait_for(log, "socket mode on", 120, server)
        client_log = tmp_path / "client.log"
        client = [sys.executable, "-m", "speech_to_speech.listen_and_play", "--host", "127.0.0.1"]
        with _run([*client, *ports, *DEVICES], client_log, env) as lp:
            _wait_for(log, "socket client .* connected", 30, lp)
            with _record(tmp_path / "spk.wav", env):
                _speak(QUESTION, env)
                said = _user_line(log, server)
                answer = _answer(tmp_path / "spk.wav")
    assert wer(REFERENCES[QUESTION], said) <= WER_BOUND, said
    heard = _check_answer(bundled_stt, answer)
    print(f"\nsocket: user {said!r}; answer {len(answer) / SR:.1f} s: {heard!r}")


def test_websocket_mode_answers_raw_pcm(bundled_stt: STTHandler, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = dict(os.environ, S2S_LOG="info", PYTHONUNBUFFERED="1")
    with _run(_server("websocket", ["--host", "127.0.0.1", "--port", str(port)]), log, env) as p:
        _wait_for(log, "plain WebSocket of raw", 120, p)
        with wave.open(str(AUDIO / QUESTION)) as w:
            speech = w.readframes(w.getnframes())
        pcm = bytes(SR // 2) + speech + bytes(SR * 3)
        events: list[dict[str, object]] = []
        audio = bytearray()
        with websockets_sync.connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
            hello = json.loads(ws.recv(timeout=10))
            assert hello["input_rate"] == 16000 and hello["output_rate"] == 16000
            for i in range(0, len(pcm), 3200):
                ws.send(pcm[i : i + 3200])
                time.sleep(0.1)  # a live microphone's pace
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                msg = ws.recv(timeout=120)
                if isinstance(msg, bytes):
                    audio += msg
                else:
                    events.append(json.loads(msg))
                    if events[-1]["type"] == "response_done":
                        break
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = ws.recv(timeout=1.5)
                    if isinstance(msg, bytes):
                        audio += msg
    said = next(str(e["transcript"]) for e in events if e["type"] == "input_transcript_completed")
    assert wer(REFERENCES[QUESTION], said) <= WER_BOUND, said
    answer = np.frombuffer(bytes(audio), dtype="<i2").astype(np.float32) / 32768.0
    heard = _check_answer(bundled_stt, answer)
    print(f"\nwebsocket: user {said!r}; answer {len(answer) / SR:.1f} s: {heard!r}")


def test_talk_client_against_the_realtime_server(
    pulse: str, bundled_stt: STTHandler, tmp_path: Path
) -> None:
    env = _env(pulse)
    port = free_port()
    log = tmp_path / "server.log"
    args = ["--host", "127.0.0.1", "--port", str(port)]
    with _run(_server("realtime", args), log, env) as server:
        _wait_for(log, "OpenAI Realtime API at", 120, server)
        talk_log = tmp_path / "talk.log"
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        talk = [sys.executable, "-m", "speech_to_speech", "talk", "--url", url]
        with _run([*talk, *DEVICES, "--log_level", "info"], talk_log, env) as client:
            _wait_for(talk_log, r"\[connected", 30, client)
            with _record(tmp_path / "spk.wav", env):
                _speak(QUESTION, env)
                said = _wait_for(talk_log, "^you: ", 120, client)[len("you: ") :]
                answer = _answer(tmp_path / "spk.wav")
    assert wer(REFERENCES[QUESTION], said) <= WER_BOUND, said
    heard = _check_answer(bundled_stt, answer)
    print(f"\ntalk: user {said!r}; answer {len(answer) / SR:.1f} s: {heard!r}")


@contextlib.contextmanager
def _echo_path(env: dict[str, str], gain_db: float) -> Iterator[None]:
    """The speaker heard by the microphone: a loopback from spk.monitor into micsrc.

    A fixed 60 ms path (``adjust_time=0``: no drift correction), as a room's.
    """
    loopback = [
        "module-loopback",
        "source=spk.monitor",
        "sink=micsrc",
        "latency_msec=60",
        "adjust_time=0",
    ]
    module = subprocess.run(
        ["pactl", "load-module", *loopback, "source_dont_move=true", "sink_dont_move=true"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    try:
        inputs = subprocess.run(
            ["pactl", "list", "short", "sink-inputs"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout
        rows = [line.split("\t") for line in inputs.splitlines()]
        ours = [row[0] for row in rows if row[3:4] == ["module-loopback.c"]]
        assert ours, inputs
        subprocess.run(
            ["pactl", "set-sink-input-volume", ours[0], f"{gain_db}dB"], check=True, env=env
        )
        yield
    finally:
        subprocess.run(["pactl", "unload-module", module], check=False, env=env)


def _count(log: Path, pattern: str) -> int:
    text = log.read_text(errors="replace") if log.exists() else ""
    return len(re.findall(pattern, text))


def _three_answers(env: dict[str, str], log: Path, wav: Path, aec: str) -> tuple[int, int]:
    """Ask three questions in local mode; (answers completed, self-interruptions)."""
    questions = ["q_capital_france.wav", "q_ocean_fact.wav", "q_book.wav"]
    with (
        _run(_server("local", ["--aec", aec, *DEVICES]), log, env) as proc,
        _record(wav, env),
    ):
        _wait_for(log, "local mode: microphone", 120, proc)
        for n, name in enumerate(questions, 1):
            _speak(name, env)
            deadline = time.monotonic() + 120
            while _count(log, r" response resp_\S+ (completed|cancelled|incomplete)") < n:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            if aec == "on":
                _answer(wav)  # the speaker has gone quiet
            else:
                # Without AEC the agent may answer its own voice, again and again:
                # the speaker need not go quiet, so wait a while at most.
                with contextlib.suppress(AssertionError):
                    _answer(wav, timeout=15.0)
    return _count(log, r" response resp_\S+ completed"), _count(log, "barge-in")


def test_echo_cancellation_keeps_the_agent_from_interrupting_itself(
    pulse: str, tmp_path: Path
) -> None:
    """Three answers with the speaker leaking into the microphone, AEC off then on.

    Off, the agent hears itself and stops (the log's barge-in lines). On, it
    holds its answers: at least two of three complete and it never
    interrupts itself. Measured here, ten runs with the barge-in guard
    (`--barge_in_min_ms` 500): off 5 to 9 self-interruptions per run, on 0 in
    every run. Before the guard, on gave 0 in three runs of five and 1 in
    two, after an output stall of the ALSA PulseAudio plugin, while AEC3
    re-converged; the reference is now kept in step through a stall
    (`test_echo_cancellation_holds_through_output_stalls`), so on must give 0.
    """
    env = _env(pulse)
    with _echo_path(env, ECHO_DB):
        off = _three_answers(env, tmp_path / "aec-off.log", tmp_path / "off.wav", "off")
        on = _three_answers(env, tmp_path / "aec-on.log", tmp_path / "on.wav", "on")
    print(f"\necho at {ECHO_DB} dB: (answers completed, self-interruptions) off {off}, on {on}")
    assert off[1] >= 1, (tmp_path / "aec-off.log").read_text()
    assert on[1] == 0, (tmp_path / "aec-on.log").read_text()
    assert on[0] >= 2, (tmp_path / "aec-on.log").read_text()


def _stall_speaker(env: dict[str, str], times: int, stall_s: float, every_s: float) -> None:
    """Suspend the speaker sink for ``stall_s``, ``times`` times: its playback stops
    while the microphone goes on, as when an audio server or a starved device stalls."""
    for _ in range(times):
        subprocess.run(["pactl", "suspend-sink", "spk", "1"], check=True, env=env)
        time.sleep(stall_s)
        subprocess.run(["pactl", "suspend-sink", "spk", "0"], check=True, env=env)
        time.sleep(every_s)


def test_echo_cancellation_holds_through_output_stalls(pulse: str, tmp_path: Path) -> None:
    """The speaker stalls four times in each of two answers (150 ms each), AEC on.

    A stall stops the playback callback, so the echo reference stops, while the
    microphone goes on. Fed as it came, AEC3 lost the delay it had found at each
    stall and let the echo through for up to a second: in three runs of this
    test the agent interrupted itself once each time, and the barge-in guard
    dropped 1 to 4 more bursts of echo (256-384 ms). The microphone now gives the far
    end the silence the speaker played during the stall (`FarEndClock`). A stall
    here also moves the echo's delay (AEC3's estimate falls by 20-30 ms at each
    one) and re-finding it let bursts of echo of up to 1.25 s through, which
    interrupted the agent in 2 of 12 runs; for 3 s after a stall the barge-in
    minimum is 2 s, and the agent finishes both answers.
    """
    env = _env(pulse)
    log = tmp_path / "local.log"
    wav = tmp_path / "spk.wav"
    story = "Answer with a long story of at least six sentences."
    args = ["--aec", "on", "--init_chat_prompt", story, "--max_new_tokens", "100", *DEVICES]
    with (
        _echo_path(env, ECHO_DB),
        _run(_server("local", args), log, env) as proc,
        _record(wav, env),
    ):
        _wait_for(log, "local mode: microphone", 120, proc)
        for n, name in enumerate(["q_ocean_fact.wav", "q_book.wav"], 1):
            heard = len(_read_partial(wav))
            _speak(name, env)
            deadline = time.monotonic() + 120
            while not _voiced(_read_partial(wav)[heard:]).any():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            time.sleep(0.8)
            _stall_speaker(env, times=4, stall_s=0.15, every_s=0.8)
            while _count(log, r" response resp_\S+ (completed|cancelled|incomplete)") < n:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            _answer(wav)  # the speaker has gone quiet
    text = log.read_text()
    stalls = _count(log, "the speaker stalled for")
    dropped = _count(log, "shorter than the barge-in minimum")
    print(
        f"\noutput stalls: {stalls} bridged, {_count(log, 'barge-in:')} self-interruptions, "
        f"{dropped} echo bursts dropped by the barge-in guard"
    )
    assert stalls >= 4, text
    assert _count(log, "barge-in:") == 0, text
    assert _count(log, r" response resp_\S+ completed") == 2, text


def test_local_barge_in_through_the_echo_needs_sustained_speech(pulse: str, tmp_path: Path) -> None:
    """Laptop speakers: the answer leaks into the microphone, AEC on.

    While the answer plays, a fragment of speech (0.34 s of voice, where a turn
    needs 0.25 s) is dropped, as the echo canceller's leftovers are (`--barge_in_min_ms`,
    500 ms); a sentence stops the answer and is answered in its turn.
    """
    env = _env(pulse)
    with wave.open(str(AUDIO / "q_book.wav")) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    # "Can you..." cut after 380 ms: its first 40 ms are silent, the rest voice.
    word = tmp_path / "fragment.wav"
    with wave.open(str(word), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm[: SR * 38 // 100].tobytes())
    log = tmp_path / "local.log"
    story = "Answer with a long story of at least six sentences."
    args = ["--aec", "on", "--init_chat_prompt", story, *DEVICES]
    with (
        _echo_path(env, ECHO_DB),
        _run(_server("local", args), log, env) as proc,
        _record(tmp_path / "spk.wav", env),
    ):
        _wait_for(log, "local mode: microphone", 120, proc)
        _speak("q_ocean_fact.wav", env)
        deadline = time.monotonic() + 120
        while not _voiced(_read_partial(tmp_path / "spk.wav")).any():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(1.0)
        subprocess.run(["paplay", "-d", "micsrc", str(word)], check=True, env=env, timeout=30)
        _wait_for(log, "shorter than the barge-in minimum", 10, proc)
        assert _count(log, "barge-in:") == 0, log.read_text()
        _speak("interrupt_wait.wav", env)
        line = _wait_for(log, r"barge-in: the user spoke \d+ ms into the answer", 15, proc)
        # What interrupted is the user's next turn, and it is answered.
        _wait_for(log, r'user: ".*(?i:wait|second|ask)', 60, proc)
        deadline = time.monotonic() + 60
        while _count(log, r" response resp_\S+ completed") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    text = log.read_text()
    print(f"\nlocal barge-in through the echo: {line.strip()}")
    assert _count(log, "barge-in:") == 1, text


def test_talk_stops_playback_and_truncates_when_the_user_barges_in(
    pulse: str, tmp_path: Path
) -> None:
    env = _env(pulse)
    port = free_port()
    log = tmp_path / "server.log"
    args = ["--host", "127.0.0.1", "--port", str(port)]
    with _run(_server("realtime", args), log, env) as server:
        _wait_for(log, "OpenAI Realtime API at", 120, server)
        talk_log = tmp_path / "talk.log"
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        story = "Answer with a long story of at least six sentences."
        talk = [sys.executable, "-m", "speech_to_speech", "talk", "--url", url]
        # No echo path here, so no echo canceller: only the barge-in is under test.
        flags = [*DEVICES, "--aec", "off", "--instructions", story]
        with _run([*talk, *flags], talk_log, env) as client:
            _wait_for(talk_log, r"\[connected", 30, client)
            wav = tmp_path / "spk.wav"
            with _record(wav, env):
                _speak("q_ocean_fact.wav", env)
                deadline = time.monotonic() + 120
                while not _voiced(_read_partial(wav)).any():
                    assert time.monotonic() < deadline, talk_log.read_text()
                    time.sleep(0.05)
                time.sleep(0.5)
                _speak("interrupt_wait.wav", env)
                line = _wait_for(talk_log, r"\[interrupted after \d+ ms\]", 30, client)
    played_ms = int(re.search(r"after (\d+) ms", line).group(1))  # type: ignore[union-attr]
    # What the speaker's monitor heard of the answer: its voiced 20 ms frames
    # (a lower bound; pauses between words are not counted) and its span from
    # first to last voice (an upper bound; stalls while the TTS catches up count).
    voiced = _voiced(_read(wav))
    frames = np.flatnonzero(voiced)
    voiced_ms, span_ms = 20 * len(frames), 20 * (int(frames[-1]) - int(frames[0]) + 1)
    print(f"\ntalk barge-in: {line.strip()}; recorded {voiced_ms} ms voiced, {span_ms} ms span")
    assert played_ms >= 100, line
    assert voiced_ms - 200 <= played_ms <= span_ms + 300, (played_ms, voiced_ms, span_ms)


def test_local_mode_stops_with_one_line_when_its_audio_server_goes(tmp_path: Path) -> None:
    """The devices disappear (their PulseAudio server is killed): a clear error, exit 1."""
    from test_audio_devices import start_pulse, stop_pulse

    if shutil.which("pulseaudio") is None:
        pytest.skip("PulseAudio is not installed")
    runtime_dir = start_pulse()
    env = _env(runtime_dir)
    log = tmp_path / "local.log"
    try:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                _server("local", DEVICES), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        try:
            _wait_for(log, "local mode: microphone", 120, proc)
        finally:
            stop_pulse(runtime_dir)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text(errors="replace")
    assert code == 1, text[-2000:]
    last = [line for line in text.splitlines() if line.startswith("speech-to-speech: ")]
    assert len(last) == 1 and ("microphone" in last[0] or "speaker" in last[0]), text[-2000:]
    assert "Traceback" not in text
    print(f"\n{last[0]}")
