"""Shared fixtures for the tests that run real models."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.signal import resample_poly
from speech_checks import backend_library

from speech_to_speech.handlers import STTHandler, TTSHandler, create_handler


@pytest.fixture(scope="session")
def bundled_stt() -> STTHandler:
    """The default STT (faster-whisper on the bundled tiny.en), for TTS round trips."""
    handler = create_handler("stt", "faster-whisper", cpu_threads=2)
    handler.setup()
    return handler


def hear(stt: STTHandler, tts: TTSHandler, text: str) -> tuple[str, float]:
    """Speak ``text`` with ``tts`` and transcribe it with ``stt``: (transcript, audio seconds)."""
    chunks = list(tts.synthesize(text))
    assert chunks, "no audio"
    rate = chunks[0].sample_rate
    for chunk in chunks:
        assert chunk.sample_rate == rate and chunk.samples.dtype == np.float32
        assert chunk.samples.ndim == 1 and np.isfinite(chunk.samples).all()
    audio: npt.NDArray[np.float32] = np.concatenate([c.samples for c in chunks])
    if rate != 16_000:
        g = np.gcd(rate, 16_000)
        audio = resample_poly(audio, 16_000 // g, rate // g).astype(np.float32)
    finals = [t for t in stt.transcribe(audio) if t.final]
    assert len(finals) == 1
    return finals[0].text, len(audio) / 16_000


@pytest.fixture(scope="session")
def whisper_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Whisper tiny.en converted from the bundled CTranslate2 model to Hugging Face format."""
    backend_library("safetensors")
    from speech_to_speech.convert import whisper_ct2_to_hf

    t0 = time.perf_counter()
    out = whisper_ct2_to_hf(tmp_path_factory.mktemp("whisper-hf"))
    print(f"\nwhisper CTranslate2 -> HF: {time.perf_counter() - t0:.2f} s")
    return out


@pytest.fixture(scope="session")
def whisper_mlx_dir(whisper_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights in mlx-whisper's layout."""
    from speech_to_speech.convert import whisper_hf_to_mlx

    return whisper_hf_to_mlx(tmp_path_factory.mktemp("whisper-mlx"), whisper_hf_dir)


@pytest.fixture(scope="session")
def smollm2_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct from the bundled GGUF, dequantised, in Hugging Face format."""
    backend_library("transformers")
    backend_library("gguf")
    from speech_to_speech.convert import smollm2_gguf_to_hf

    t0 = time.perf_counter()
    out = smollm2_gguf_to_hf(tmp_path_factory.mktemp("smollm2-hf"))
    print(f"\nSmolLM2 GGUF -> HF: {time.perf_counter() - t0:.2f} s")
    return out
