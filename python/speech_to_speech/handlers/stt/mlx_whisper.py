"""Speech to text with Whisper on Apple MLX (``mlx-whisper``, Apple silicon only)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.handlers.base import Cancellation, STTHandler, Transcript
from speech_to_speech.handlers.registry import register
from speech_to_speech.handlers.stt._common import final_only

__all__ = ["MLXWhisperSTT"]


@register("stt", "whisper-mlx", extra="mlx", requires=["mlx_whisper"])
class MLXWhisperSTT(STTHandler):
    """``mlx_whisper.transcribe`` with an MLX Whisper checkpoint (hub id or local path).

    Defaults to ``mlx-community/whisper-large-v3-turbo``.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        language: str | None = "en",
        beam_size: int = 1,
        warmup: bool = True,
    ) -> None:
        self.model_name = model or "mlx-community/whisper-large-v3-turbo"
        self.language = language
        # mlx-whisper decodes greedily; beam search is not implemented there.
        self.beam_size = beam_size
        self.warmup = warmup
        self._mlx_whisper: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._mlx_whisper is None:
                import mlx_whisper

                self._mlx_whisper = mlx_whisper
        if self.warmup:
            # The first call downloads/loads the weights and compiles the kernels.
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
        if self._mlx_whisper is None:
            self.setup()
        lang = language or self.language
        if lang == "auto":
            lang = None
        result = self._mlx_whisper.transcribe(
            np.asarray(audio, dtype=np.float32),
            path_or_hf_repo=self.model_name,
            language=lang,
            initial_prompt=prompt,
            condition_on_previous_text=False,
            verbose=None,
        )
        yield from final_only(str(result["text"]), lang or result.get("language"), cancel)
