"""Deterministic fake text-to-speech: one sine tone per word, for protocol tests."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator

import numpy as np

from speech_to_speech.handlers.base import AudioChunk, Cancellation, TTSHandler, is_cancelled
from speech_to_speech.handlers.registry import register

__all__ = ["FakeTTS", "word_frequency"]


def word_frequency(word: str) -> float:
    """The tone frequency (Hz) FakeTTS uses for ``word``: 200-999 Hz from a CRC of it."""
    return 200.0 + zlib.crc32(word.lower().encode()) % 800


@register("tts", "fake", description="A sine tone per word with word timings (tests)")
class FakeTTS(TTSHandler):
    """Yields one chunk per word: ``word_ms`` of a sine (divided by speed) at ``sample_rate``.

    The frequency depends only on the word (:func:`word_frequency`); each chunk
    carries that word's timing. ``latency_ms`` is slept before each chunk.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 24_000,
        word_ms: float = 100.0,
        amplitude: float = 0.3,
        latency_ms: float = 0.0,
        speed: float = 1.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.word_ms = word_ms
        self.amplitude = amplitude
        self.latency_ms = latency_ms
        self.speed = speed

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        cancel: Cancellation | None = None,
    ) -> Iterator[AudioChunk]:
        rate = self.speed * speed
        if rate <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        n = round(self.sample_rate * self.word_ms / 1000 / rate)
        t = np.arange(n, dtype=np.float64) / self.sample_rate
        for word in text.split():
            if self.latency_ms:
                time.sleep(self.latency_ms / 1000)
            if is_cancelled(cancel):
                return
            tone = self.amplitude * np.sin(2 * np.pi * word_frequency(word) * t)
            yield AudioChunk(
                tone.astype(np.float32), self.sample_rate, [(word, 0.0, n / self.sample_rate)]
            )
