"""Speech to text with Paraformer (Chinese) through FunASR."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.handlers.base import Cancellation, STTHandler, Transcript
from speech_to_speech.handlers.registry import register
from speech_to_speech.handlers.stt._common import final_only

__all__ = ["ParaformerSTT"]


@register("stt", "paraformer", extra="funasr", requires=["funasr", "torch"])
class ParaformerSTT(STTHandler):
    """``funasr.AutoModel`` with a Paraformer model (default ``paraformer-zh``).

    ``prompt`` is passed as FunASR hotwords.
    """

    def __init__(
        self, *, model: str | None = None, device: str = "cpu", language: str | None = "zh"
    ) -> None:
        self.model_name = model or "paraformer-zh"
        self.device = device
        self.language = language
        self._model: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._model is None:
                from funasr import AutoModel

                self._model = AutoModel(
                    model=self.model_name,
                    device=self.device,
                    disable_pbar=True,
                    disable_update=True,
                )

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
        kwargs: dict[str, Any] = {"hotword": prompt} if prompt else {}
        results = self._model.generate(input=np.asarray(audio, dtype=np.float32), **kwargs)
        text = "".join(str(r.get("text", "")) for r in results)
        # Paraformer separates Chinese characters with spaces.
        if (language or self.language or "").startswith("zh"):
            text = text.replace(" ", "")
        yield from final_only(text, language or self.language, cancel)
