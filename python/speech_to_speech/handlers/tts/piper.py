"""Text to speech with Piper (ONNX VITS voices); the default TTS backend."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from speech_to_speech.handlers.base import AudioChunk, Cancellation, TTSHandler, is_cancelled
from speech_to_speech.handlers.registry import register

__all__ = ["PiperTTS"]

log = logging.getLogger(__name__)


@register("tts", "piper", extra="piper", requires=["piper", "onnxruntime"])
class PiperTTS(TTSHandler):
    """Piper voices via ``piper-tts``; defaults to the bundled en_US-joe-medium (22.05 kHz).

    ``voice`` (constructor or per call) is the path of a Piper ``.onnx`` voice
    whose config sits beside it as ``.onnx.json``. One chunk is yielded per
    sentence, as Piper synthesises them. ``speed`` (constructor) is a base
    rate multiplied with the per-call ``speed``; it maps to Piper's
    ``length_scale`` as the voice's own length scale divided by the speed.
    """

    def __init__(
        self,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        use_cuda: bool = False,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        warmup: bool = True,
    ) -> None:
        self.voice = voice
        self.speed = speed
        self.use_cuda = use_cuda
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self.warmup = warmup
        self._voices: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _load(self, voice: str | None) -> Any:
        key = voice or ""
        with self._lock:
            loaded = self._voices.get(key)
            if loaded is not None:
                return loaded
            from piper import PiperVoice

            config: Path | None
            if voice:
                # Piper reads the config from <voice>.onnx.json beside the model.
                model, config = Path(voice), None
            else:
                from speech_to_speech.models import piper_joe_voice

                model, config = piper_joe_voice()
            log.info("loading Piper voice %s", model)
            loaded = PiperVoice.load(model, config_path=config, use_cuda=self.use_cuda)
            self._voices[key] = loaded
            return loaded

    def setup(self) -> None:
        default = self._load(self.voice)
        self.sample_rate = int(default.config.sample_rate)
        if self.warmup:
            for _ in self.synthesize("Hello."):
                pass

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        cancel: Cancellation | None = None,
    ) -> Iterator[AudioChunk]:
        from piper import SynthesisConfig

        rate = self.speed * speed
        if rate <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        # A per-call voice is a Piper voice file; a Realtime client's voice
        # name ("alloy", ...) means "the server's voice".
        if voice is not None and not (voice.endswith(".onnx") and Path(voice).is_file()):
            voice = None
        piper_voice = self._load(voice or self.voice)
        syn_config = SynthesisConfig(
            length_scale=float(piper_voice.config.length_scale) / rate,
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
        )
        if is_cancelled(cancel) or not text.strip():
            return
        for chunk in piper_voice.synthesize(text, syn_config=syn_config):
            if is_cancelled(cancel):
                return
            samples = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
            yield AudioChunk(samples, int(chunk.sample_rate))
