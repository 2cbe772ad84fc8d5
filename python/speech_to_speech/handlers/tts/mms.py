"""Text to speech with Meta's MMS-TTS (VITS) through transformers' ``VitsModel``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from speech_to_speech.handlers.base import AudioChunk, Cancellation, TTSHandler, is_cancelled
from speech_to_speech.handlers.registry import register

__all__ = ["MMSTTS"]


@register("tts", "facebookMMS", extra="transformers", requires=["transformers", "torch"])
class MMSTTS(TTSHandler):
    """``VitsModel`` + its tokenizer; ``model`` (or ``voice``) is an MMS checkpoint.

    One checkpoint per language: ``facebook/mms-tts-eng`` (default),
    ``facebook/mms-tts-fra``, ... The rate comes from the model config
    (16 kHz for MMS). ``speed`` sets VITS' ``speaking_rate``.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        voice: str | None = None,
        speed: float = 1.0,
        device: str = "cpu",
        seed: int | None = 0,
    ) -> None:
        self.model_name = model or voice or "facebook/mms-tts-eng"
        self.speed = speed
        self.device = device
        self.seed = seed
        self._models: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def _load(self, name: str) -> tuple[Any, Any]:
        loaded = self._models.get(name)
        if loaded is None:
            from transformers import AutoTokenizer, VitsModel

            model = VitsModel.from_pretrained(name).to(self.device)
            model.eval()
            loaded = (model, AutoTokenizer.from_pretrained(name))
            self._models[name] = loaded
        return loaded

    def setup(self) -> None:
        with self._lock:
            model, _ = self._load(self.model_name)
        self.sample_rate = int(model.config.sampling_rate)

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        cancel: Cancellation | None = None,
    ) -> Iterator[AudioChunk]:
        import torch

        if is_cancelled(cancel) or not text.strip():
            return
        with self._lock:
            model, tokenizer = self._load(voice or self.model_name)
            inputs = tokenizer(text, return_tensors="pt").to(self.device)
            model.speaking_rate = self.speed * speed
            if self.seed is not None:
                # VITS samples durations and noise; a fixed seed makes a clause sound the same.
                torch.manual_seed(self.seed)
            with torch.no_grad():
                waveform = model(**inputs).waveform
        if is_cancelled(cancel):
            return
        samples = np.asarray(waveform[0].cpu().numpy(), dtype=np.float32)
        yield AudioChunk(samples, int(model.config.sampling_rate))
