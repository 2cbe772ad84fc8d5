"""Speech to text with NVIDIA Parakeet TDT exported to ONNX, run by ``onnx-asr``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.handlers._onnx import onnx_providers
from speech_to_speech.handlers.base import STT_SAMPLE_RATE, Cancellation, STTHandler, Transcript
from speech_to_speech.handlers.registry import register
from speech_to_speech.handlers.stt._common import final_only

__all__ = ["ParakeetSTT"]


@register("stt", "parakeet-tdt", extra="parakeet", requires=["onnx_asr", "onnxruntime"])
class ParakeetSTT(STTHandler):
    """Parakeet TDT through ``onnx_asr.load_model`` on ONNX Runtime (CPU or CUDA).

    ``model`` is an onnx-asr model name (default ``nemo-parakeet-tdt-0.6b-v3``,
    multilingual, from the Hugging Face hub; ``nemo-parakeet-tdt-0.6b-v2`` is
    English only) or the local folder of an exported model, whose
    ``config.json`` names its type; ``model_dir`` is a local folder for a named
    model. ``compute_type`` ``int8`` picks the quantised export. ``device``
    ``auto`` runs on CUDA when ``onnxruntime-gpu`` is installed. Parakeet
    detects the language itself.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        model_dir: str | None = None,
        device: str = "auto",
        compute_type: str | None = None,
        language: str | None = None,
    ) -> None:
        self.model_name = model or "nemo-parakeet-tdt-0.6b-v3"
        self.model_dir = model_dir
        self.device = device
        self.quantization = "int8" if compute_type == "int8" else None
        self.language = language
        self._model: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import onnx_asr

            name: str | None = self.model_name
            folder = self.model_dir
            if folder is None and Path(self.model_name).is_dir():
                name, folder = None, self.model_name  # the type comes from its config.json
            self._model = onnx_asr.load_model(
                name,
                folder,
                quantization=self.quantization,
                providers=onnx_providers(self.device),
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
        text = self._model.recognize(
            np.asarray(audio, dtype=np.float32), sample_rate=STT_SAMPLE_RATE
        )
        yield from final_only(str(text), language or self.language, cancel)
