"""Text to speech with Kokoro-82M through the ``kokoro`` package (PyTorch, weights from a hub)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from speech_to_speech.handlers.base import AudioChunk, Cancellation, TTSHandler, is_cancelled
from speech_to_speech.handlers.registry import register

__all__ = ["KokoroTorchTTS"]


@register("tts", "kokoro-torch", extra="kokoro-torch", requires=["kokoro", "torch"])
class KokoroTorchTTS(TTSHandler):
    """``kokoro.KPipeline`` at 24 kHz; one chunk per segment the pipeline splits the text into.

    ``lang_code`` is Kokoro's language letter (``a`` American English, ``b``
    British, ``e`` Spanish, ``f`` French, ``j`` Japanese, ``z`` Chinese...);
    ``voice`` a Kokoro voice name (default ``af_heart``) or a ``.pt`` file.
    Word timings come from the pipeline's tokens when it provides them.
    """

    sample_rate = 24_000

    def __init__(
        self,
        *,
        voice: str | None = None,
        lang_code: str = "a",
        speed: float = 1.0,
        device: str | None = None,
        repo_id: str = "hexgrad/Kokoro-82M",
    ) -> None:
        self.voice = voice or "af_heart"
        self.lang_code = lang_code
        self.speed = speed
        self.device = device
        self.repo_id = repo_id
        self._pipeline: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._pipeline is None:
                from kokoro import KPipeline

                self._pipeline = KPipeline(
                    lang_code=self.lang_code, repo_id=self.repo_id, device=self.device
                )
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
        if self._pipeline is None:
            self.setup()
        with self._lock:
            for result in self._pipeline(text, voice=voice or self.voice, speed=self.speed * speed):
                if is_cancelled(cancel):
                    return
                audio = result.audio
                if audio is None:
                    continue
                samples = np.asarray(audio.detach().cpu().numpy(), dtype=np.float32).reshape(-1)
                words = None
                tokens = getattr(result, "tokens", None)
                if tokens:
                    words = [
                        (str(t.text), float(t.start_ts), float(t.end_ts))
                        for t in tokens
                        if t.start_ts is not None and t.end_ts is not None
                    ] or None
                yield AudioChunk(samples, self.sample_rate, words)
