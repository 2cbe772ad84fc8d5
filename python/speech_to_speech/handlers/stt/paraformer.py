"""Speech to text with Paraformer (Chinese): FunASR's ONNX export on ``funasr-onnx``, or FunASR."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.handlers.base import Cancellation, STTHandler, Transcript
from speech_to_speech.handlers.registry import register
from speech_to_speech.handlers.stt._common import final_only

__all__ = ["ParaformerONNXSTT", "ParaformerSTT"]

# funasr-onnx pins numpy<=1.26.4, which the rest of the stack has outgrown; its
# code runs on numpy 2, so it is installed without its dependencies.
_ONNX_INSTALL = (
    "pip install 'speech-to-speech[paraformer]' && pip install --no-deps 'funasr-onnx>=0.4'"
)


@register(
    "stt",
    "paraformer",
    extra="paraformer",
    requires=["funasr_onnx", "kaldi_native_fbank", "onnxruntime"],
    install=_ONNX_INSTALL,
)
class ParaformerONNXSTT(STTHandler):
    """``funasr_onnx.Paraformer`` on an exported model folder (``model.onnx`` or
    ``model_quant.onnx``, ``config.yaml``, ``am.mvn``, ``tokens.json``).

    ``model`` is that folder or a ModelScope id, downloaded by ``funasr-onnx``
    through ``modelscope`` (default
    ``damo/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-pytorch``).
    ``compute_type`` ``int8`` picks ``model_quant.onnx``. ``device`` ``cuda:N``
    runs on GPU N (``onnxruntime-gpu``).
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str | None = None,
        cpu_threads: int = 0,
        language: str | None = "zh",
    ) -> None:
        self.model_name = (
            model or "damo/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
        )
        self.device = device
        self.quantize = compute_type == "int8"
        self.cpu_threads = cpu_threads
        self.language = language
        self._model: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._model is None:
                from funasr_onnx import Paraformer

                device_id = -1
                if self.device.startswith("cuda"):
                    device_id = int(self.device.partition(":")[2] or 0)
                self._model = Paraformer(
                    self.model_name,
                    batch_size=1,
                    device_id=device_id,
                    quantize=self.quantize,
                    intra_op_num_threads=self.cpu_threads or 4,
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
        samples = np.asarray(audio, dtype=np.float32)
        text = ""
        if samples.size >= 400:  # one 25 ms frame; less has no features at all
            with self._lock:
                results = self._model(samples)
            # "preds" is the text, or (text, tokens) from funasr-onnx's post-processing.
            preds = [r.get("preds", "") for r in results]
            text = "".join(str(p[0] if isinstance(p, tuple | list) else p) for p in preds)
        if (language or self.language or "").startswith("zh"):
            text = text.replace(" ", "")
        yield from final_only(text, language or self.language, cancel)


@register("stt", "paraformer-torch", extra="funasr", requires=["funasr", "torch"])
class ParaformerSTT(STTHandler):
    """``funasr.AutoModel`` (PyTorch) with a Paraformer model (default ``paraformer-zh``).

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
