"""The audio device layer against a real PulseAudio server with null sinks (.ci/pulseaudio).

The virtual microphone is the monitor of the null sink ``micsrc``: what
``paplay -d micsrc`` plays is what the device layer captures. The virtual
speaker is the null sink ``spk``: what the device layer plays is recorded
from ``spk.monitor`` with ``parecord``. Both go through ALSA's PulseAudio
plugin, as on a desktop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import speech_to_speech as s2s
from speech_to_speech import cli

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLIP = SHARED / "audio" / "q_capital_france.wav"
SR = 16000
Samples = npt.NDArray[np.float32]


def read_wav(path: Path) -> tuple[Samples, int]:
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return (pcm.astype(np.float32) / 32768.0).astype(np.float32), w.getframerate()


def match(recorded: Samples, reference: Samples) -> tuple[float, float]:
    """Best normalised correlation of `reference` inside `recorded`, and the level (dB)."""
    n = 1 << int(np.ceil(np.log2(len(recorded) + len(reference))))
    c = np.fft.irfft(np.fft.rfft(recorded, n) * np.conj(np.fft.rfft(reference, n)), n)
    lag = int(np.argmax(np.abs(c[: max(len(recorded) - len(reference), 1)])))
    seg = recorded[lag : lag + len(reference)]
    ref = reference[: len(seg)]
    corr = float(np.dot(seg, ref) / np.sqrt(np.dot(seg, seg) * np.dot(ref, ref) + 1e-12))
    level = 10 * float(np.log10((np.dot(seg, seg) + 1e-12) / (np.dot(ref, ref) + 1e-12)))
    return corr, level


def start_pulse() -> str:
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "pulseaudio"), "start"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def stop_pulse(runtime_dir: str) -> None:
    subprocess.run(["bash", str(ROOT / ".ci" / "pulseaudio"), "stop", runtime_dir], check=False)


@contextlib.contextmanager
def own_pulse() -> Iterator[str]:
    """A PulseAudio server of our own while the block runs; its runtime dir."""
    runtime_dir = start_pulse()
    old = os.environ.get("XDG_RUNTIME_DIR")
    # The ALSA plugin, inside this process, finds the server through this.
    os.environ["XDG_RUNTIME_DIR"] = runtime_dir
    try:
        yield runtime_dir
    finally:
        if old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = old
        stop_pulse(runtime_dir)


def running_server() -> str | None:
    """The runtime dir of a PulseAudio server with our sinks that is already up (.ci/run's)."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime_dir or shutil.which("pactl") is None:
        return None
    sinks = subprocess.run(
        ["pactl", "list", "short", "sinks"], check=False, capture_output=True, text=True, timeout=10
    )
    names = {line.split("\t")[1] for line in sinks.stdout.splitlines() if "\t" in line}
    return runtime_dir if sinks.returncode == 0 and {"spk", "micsrc"} <= names else None


@pytest.fixture(scope="module")
def pulse() -> Iterator[str]:
    """A PulseAudio server with the null sinks: .ci/run's, or one of our own for this module."""
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install pulseaudio, pulseaudio-utils, libasound2-plugins")
        pytest.skip(
            "PulseAudio is not installed: apt-get install pulseaudio pulseaudio-utils "
            "libasound2-plugins"
        )
    existing = running_server()
    if existing is not None:
        yield existing
        return
    with own_pulse() as runtime_dir:
        yield runtime_dir


def pa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, timeout=30)


def test_devices_are_listed_with_the_pulse_device(pulse: str) -> None:
    devices = s2s.list_audio_devices()
    assert [d["index"] for d in devices] == list(range(len(devices)))
    by_name = {d["name"]: d for d in devices}
    assert by_name["pulse"]["is_input"] and by_name["pulse"]["is_output"]
    assert any(d["default_input"] for d in devices) and any(d["default_output"] for d in devices)


def test_list_devices_flag_prints_the_devices(
    pulse: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--list_devices"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if " pulse " in line)
    assert "in/out" in line and "PulseAudio" in line
    assert any(line.startswith("*") for line in out.splitlines())


def test_capture_records_what_is_played_into_the_virtual_microphone(pulse: str) -> None:
    clip, rate = read_wav(CLIP)
    assert rate == SR
    mic = s2s.AudioInput(device="pulse", sample_rate=SR)
    assert mic.info["device"] == "pulse"
    # The stream is live once it delivers audio (silence from the idle sink).
    assert len(mic.read(SR // 10, timeout=5.0)) == SR // 10
    player = subprocess.Popen(["paplay", "-d", "micsrc", str(CLIP)])
    captured = mic.read(len(clip) + SR, timeout=10.0)
    assert player.wait(timeout=10) == 0
    mic.close()
    assert len(captured) == len(clip) + SR
    corr, level = match(captured, clip)
    print(f"\ncaptured {CLIP.name}: correlation {corr:.3f}, level {level:+.1f} dB")
    assert corr > 0.9
    assert abs(level) < 3.0
    assert mic.overruns == 0


@pytest.mark.parametrize("device_rate", [None, 44100])
def test_playback_is_heard_on_the_speaker_monitor(
    pulse: str, tmp_path: Path, device_rate: int | None
) -> None:
    clip, _ = read_wav(CLIP)
    out = s2s.AudioOutput(device="pulse", sample_rate=SR, device_rate=device_rate)
    assert out.info["device_rate"] == (device_rate or SR)
    wav = tmp_path / "spk.wav"
    recorder = subprocess.Popen(
        [
            "parecord",
            "-d",
            "spk.monitor",
            "--rate",
            str(SR),
            "--channels",
            "1",
            "--file-format=wav",
            str(wav),
        ]
    )
    try:
        # parecord is recording once its file grows past the WAV header.
        deadline = time.monotonic() + 10
        while (not wav.exists() or wav.stat().st_size <= 44 + 3200) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert out.write(clip) == len(clip)
        out.finish()
        assert out.wait_idle(10.0)
        # Until the recording holds the whole clip after what came before.
        target = wav.stat().st_size + 2 * (len(clip) + SR // 2)
        while wav.stat().st_size < target and time.monotonic() < deadline + 10:
            time.sleep(0.02)
    finally:
        recorder.terminate()
        recorder.wait(timeout=10)
    recorded, rate = read_wav(wav)
    assert rate == SR
    corr, level = match(recorded, clip)
    rate_used = out.info["device_rate"]
    print(f"\nplayed at device rate {rate_used}: correlation {corr:.3f}, level {level:+.1f} dB")
    assert corr > 0.9
    assert abs(level) < 3.0
    # Everything was played, counted at our rate; no underrun mid-clip.
    assert abs(out.played_samples - len(clip)) <= SR // 100
    assert abs(out.played_ms - len(clip) * 1000 // SR) <= 10
    assert out.underruns == 0
    out.close()


def test_clear_stops_playback_now_and_later_audio_plays(pulse: str) -> None:
    out = s2s.AudioOutput(device="pulse", sample_rate=SR, buffer_ms=5000)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(3 * SR) / SR)).astype(np.float32)
    out.write(tone)
    deadline = time.monotonic() + 5
    while out.played_ms < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    out.clear()
    assert out.wait_idle(1.0)
    stopped_at = out.played_ms
    assert 300 <= stopped_at < 1500
    out.write(tone[: SR // 2])
    out.finish()
    assert out.wait_idle(5.0)
    assert abs(out.played_ms - stopped_at - 500) <= 15
    out.close()


def test_underruns_are_counted_mid_utterance_not_at_its_end(pulse: str) -> None:
    out = s2s.AudioOutput(device="pulse", sample_rate=SR)
    chunk = np.full(SR // 5, 0.1, dtype=np.float32)
    out.write(chunk)
    out.finish()
    assert out.wait_idle(5.0)
    time.sleep(0.2)
    assert out.underruns == 0
    # The writer stalls mid-utterance: the device plays silence and counts it.
    out.write(chunk)
    assert out.wait_idle(5.0)
    deadline = time.monotonic() + 5
    while out.underruns == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert out.underruns > 0
    out.close()


def test_a_missing_device_is_a_clear_error(pulse: str) -> None:
    with pytest.raises(s2s.AudioDeviceNotFoundError, match=r"no input device .*no-such-mic.*pulse"):
        s2s.AudioInput(device="no-such-mic")
    with pytest.raises(s2s.AudioDeviceNotFoundError, match='no output device "9999"'):
        s2s.AudioOutput(device="9999")
    index = next(d["index"] for d in s2s.list_audio_devices() if d["name"] == "pulse")
    assert s2s.AudioOutput(device=str(index)).info["device"] == "pulse"


def test_an_unsupported_rate_is_a_clear_error(pulse: str) -> None:
    with pytest.raises(
        s2s.UnsupportedDeviceRateError, match=r"does not support 1000000 Hz; it supports .*Hz"
    ):
        s2s.AudioInput(device="pulse", device_rate=1_000_000)
    with pytest.raises(s2s.UnsupportedSampleRateError):
        s2s.AudioOutput(device="pulse", sample_rate=12345)


def test_a_server_that_goes_away_fails_the_stream_with_a_clear_error() -> None:
    if shutil.which("pulseaudio") is None:
        pytest.skip("PulseAudio is not installed")
    with own_pulse() as runtime_dir:
        mic = s2s.AudioInput(device="pulse", sample_rate=SR)
        assert len(mic.read(SR // 10, timeout=5.0)) == SR // 10
        stop_pulse(runtime_dir)
        errors: list[BaseException] = []

        def drain() -> None:
            try:
                while True:
                    mic.read(SR // 10, timeout=1.0)
            except s2s.AudioDeviceError as e:
                errors.append(e)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        reader.join(timeout=15)
        assert errors, "the stream never reported the lost server"
        assert isinstance(errors[0], s2s.AudioStreamError)
        assert 'input stream on "pulse" failed' in str(errors[0])
