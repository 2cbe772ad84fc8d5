"""Speech to text with Whisper from ``mlx-audio`` (Apple silicon only)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.handlers.base import Cancellation, STTHandler, Transcript
from speech_to_speech.handlers.registry import register
from speech_to_speech.handlers.stt._common import final_only

__all__ = ["MLXAudioWhisperSTT"]


@register("stt", "mlx-audio-whisper", extra="mlx-audio", requires=["mlx_audio"])
class MLXAudioWhisperSTT(STTHandler):
    """An ``mlx-audio`` STT model (``mlx_audio.stt.utils.load_model``), Whisper by default.

    Defaults to ``mlx-community/whisper-large-v3-turbo``; ``model.generate``
    takes the 16 kHz array and returns an object with ``.text``.
    """

    def __init__(
        self, *, model: str | None = None, language: str | None = "en", warmup: bool = True
    ) -> None:
        self.model_name = model or "mlx-community/whisper-large-v3-turbo"
        self.language = language
        self.warmup = warmup
        self._model: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._model is None:
                from mlx_audio.stt.utils import load_model

                self._model = load_model(self.model_name)
        if self.warmup:
            for _ in self.transcribe(np.zeros(16_000, dtype=np.float32)):
                pass

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: Cancellation | None = None,
    ) -> Iterator[Transcript]:
        if self._model is None:
            self.setup()
        import mlx.core as mx

        lang = language or self.language
        kwargs: dict[str, Any] = {}
        if lang and lang != "auto":
            kwargs["language"] = lang
        if prompt:
            kwargs["initial_prompt"] = prompt
        result = self._model.generate(mx.array(np.asarray(audio, dtype=np.float32)), **kwargs)
        detected = lang if lang != "auto" else getattr(result, "language", None)
        yield from final_only(str(result.text), detected, cancel)
