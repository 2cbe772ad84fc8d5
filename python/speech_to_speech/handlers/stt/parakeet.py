"""Speech to text with NVIDIA Parakeet TDT exported to ONNX, run by ``onnx-asr``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.handlers.base import STT_SAMPLE_RATE, Cancellation, STTHandler, Transcript
from speech_to_speech.handlers.registry import register
from speech_to_speech.handlers.stt._common import final_only

__all__ = ["ParakeetSTT"]


@register("stt", "parakeet-tdt", extra="parakeet", requires=["onnx_asr", "onnxruntime"])
class ParakeetSTT(STTHandler):
    """Parakeet TDT through ``onnx_asr.load_model`` on ONNX Runtime (CPU or CUDA).

    ``model`` is an onnx-asr model name (default ``nemo-parakeet-tdt-0.6b-v3``,
    multilingual; ``nemo-parakeet-tdt-0.6b-v2`` is English only) or, with
    ``model_dir``, the local folder of an exported model. ``compute_type``
    ``int8`` picks the quantised export. Parakeet detects the language itself.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        model_dir: str | None = None,
        device: str = "cpu",
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

            providers = (
                ["CUDAExecutionProvider", "CPUExecutionProvider"]
                if self.device.startswith("cuda")
                else ["CPUExecutionProvider"]
            )
            self._model = onnx_asr.load_model(
                self.model_name,
                self.model_dir,
                quantization=self.quantization,
                providers=providers,
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
