"""Speech to text with Whisper on Hugging Face transformers (PyTorch)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.handlers.base import (
    STT_SAMPLE_RATE,
    Cancellation,
    STTHandler,
    Transcript,
)
from speech_to_speech.handlers.registry import register
from speech_to_speech.handlers.stt._common import final_only

__all__ = ["TransformersWhisperSTT"]

log = logging.getLogger(__name__)


@register("stt", "whisper", extra="transformers", requires=["transformers", "torch"])
class TransformersWhisperSTT(STTHandler):
    """Whisper through ``transformers.pipeline("automatic-speech-recognition")``.

    ``model`` is a hub id or a local directory (default
    ``openai/whisper-large-v3-turbo``; ``python -m speech_to_speech.convert
    whisper-hf DIR`` writes the bundled tiny.en as one); ``device`` is ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps``; ``compute_type``
    ``float16``/``bfloat16``/``float32``.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str = "float32",
        language: str | None = "en",
        beam_size: int = 1,
        max_new_tokens: int = 128,
    ) -> None:
        self.model_name = model or "openai/whisper-large-v3-turbo"
        self.device = device
        self.compute_type = compute_type if compute_type in ("float16", "bfloat16") else "float32"
        self.language = language
        self.beam_size = beam_size
        self.max_new_tokens = max_new_tokens
        self._pipe: Any = None
        self._multilingual = True
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._pipe is not None:
                return
            import torch
            from transformers import pipeline

            log.info("loading transformers Whisper %s on %s", self.model_name, self.device)
            self._pipe = pipeline(
                "automatic-speech-recognition",
                model=self.model_name,
                device=self.device,
                dtype=getattr(torch, self.compute_type),
            )
            # English-only checkpoints (*.en) take no language or task tokens.
            config = self._pipe.model.generation_config
            self._multilingual = bool(getattr(config, "is_multilingual", True))

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: Cancellation | None = None,
    ) -> Iterator[Transcript]:
        if self._pipe is None:
            self.setup()
        lang = language or self.language
        generate_kwargs: dict[str, Any] = {
            "num_beams": self.beam_size,
            "max_new_tokens": self.max_new_tokens,
        }
        if self._multilingual:
            generate_kwargs["task"] = "transcribe"
            if lang and lang != "auto":
                generate_kwargs["language"] = lang
        elif lang not in (None, "auto", "en"):
            raise ValueError(f"{self.model_name} is English-only; it cannot transcribe {lang!r}")
        if prompt:
            tokenizer = self._pipe.tokenizer
            generate_kwargs["prompt_ids"] = tokenizer.get_prompt_ids(prompt, return_tensors="pt")
        result = self._pipe(
            {"raw": np.asarray(audio, dtype=np.float32), "sampling_rate": STT_SAMPLE_RATE},
            generate_kwargs=generate_kwargs,
        )
        text = str(result["text"])
        if prompt and text.lstrip().startswith(prompt.strip()):
            # Some transformers versions return the prompt in front of the transcript.
            text = text.lstrip()[len(prompt.strip()) :]
        yield from final_only(text, lang if lang != "auto" else None, cancel)
