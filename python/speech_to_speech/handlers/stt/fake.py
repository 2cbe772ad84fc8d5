"""Deterministic fake speech-to-text for protocol tests."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from speech_to_speech.handlers.base import Cancellation, STTHandler, Transcript, is_cancelled
from speech_to_speech.handlers.registry import register

__all__ = ["FakeSTT"]


@register("stt", "fake", description="Scripted transcripts, word-by-word partials (tests)")
class FakeSTT(STTHandler):
    """Returns the next transcript of ``script`` on each call, whatever the audio.

    Yields one partial per word (the growing prefix), then the final text.
    ``latency_ms`` is slept before each word to simulate model time.
    """

    def __init__(
        self,
        *,
        script: Sequence[str] = ("hello world",),
        latency_ms: float = 0.0,
        language: str | None = "en",
    ) -> None:
        if not script:
            raise ValueError("script must hold at least one transcript")
        self.script = list(script)
        self.latency_ms = latency_ms
        self.language = language
        self._next = itertools.cycle(self.script)
        self._lock = threading.Lock()

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: Cancellation | None = None,
    ) -> Iterator[Transcript]:
        with self._lock:
            text = next(self._next)
        lang = language or self.language
        words = text.split()
        for i in range(1, len(words) + 1):
            if self.latency_ms:
                time.sleep(self.latency_ms / 1000)
            if is_cancelled(cancel):
                return
            yield Transcript(" ".join(words[:i]), final=False, language=lang)
        if is_cancelled(cancel):
            return
        yield Transcript(text.strip(), final=True, language=lang)
