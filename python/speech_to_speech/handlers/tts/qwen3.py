"""Text to speech with Qwen3-TTS (``qwen-tts`` package, PyTorch)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from speech_to_speech.handlers.base import AudioChunk, Cancellation, TTSHandler, is_cancelled
from speech_to_speech.handlers.registry import register

__all__ = ["Qwen3TTS"]


@register("tts", "qwen3", extra="qwen-tts", requires=["qwen_tts", "torch"])
class Qwen3TTS(TTSHandler):
    """``Qwen3TTSModel.generate_custom_voice`` with a preset speaker.

    ``model`` defaults to ``Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice``; ``voice``
    is a preset speaker (``Ryan``, ``Aiden``, ``Vivian``...), ``language`` a
    language name (``English``, ``Chinese``, ``Auto``...). ``instruct`` is an
    optional style instruction (1.7B models). Qwen3-TTS has no speed
    parameter; ``speed`` != 1 is turned into an instruction. One chunk per
    call (the package's non-streaming API).
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        voice: str | None = None,
        language: str = "English",
        instruct: str | None = None,
        speed: float = 1.0,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> None:
        self.model_name = model or "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice"
        self.voice = voice or "Ryan"
        self.language = language
        self.instruct = instruct
        self.speed = speed
        self.device = device
        self.dtype = dtype
        self._model: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._model is None:
                import torch
                from qwen_tts import Qwen3TTSModel

                self._model = Qwen3TTSModel.from_pretrained(
                    self.model_name, device_map=self.device, dtype=getattr(torch, self.dtype)
                )

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        cancel: Cancellation | None = None,
    ) -> Iterator[AudioChunk]:
        if self._model is None:
            self.setup()
        if is_cancelled(cancel) or not text.strip():
            return
        rate = self.speed * speed
        instruct = self.instruct
        if abs(rate - 1.0) > 0.05:
            pace = "Speak faster than usual." if rate > 1 else "Speak slower than usual."
            instruct = f"{instruct} {pace}" if instruct else pace
        kwargs: dict[str, Any] = {
            "text": text,
            "language": self.language,
            "speaker": voice or self.voice,
        }
        if instruct:
            kwargs["instruct"] = instruct
        with self._lock:
            wavs, sample_rate = self._model.generate_custom_voice(**kwargs)
        if is_cancelled(cancel):
            return
        self.sample_rate = int(sample_rate)
        yield AudioChunk(np.asarray(wavs[0], dtype=np.float32).reshape(-1), int(sample_rate))
