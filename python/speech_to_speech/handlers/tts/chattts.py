"""Text to speech with ChatTTS (PyTorch), streamed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from speech_to_speech.handlers.base import AudioChunk, Cancellation, TTSHandler, is_cancelled
from speech_to_speech.handlers.registry import register

__all__ = ["ChatTTSHandler"]


@register("tts", "chatTTS", extra="chattts", requires=["ChatTTS", "torch"])
class ChatTTSHandler(TTSHandler):
    """``ChatTTS.Chat().infer(stream=True)`` at 24 kHz.

    ``voice`` is a speaker embedding string as returned by
    ``Chat.sample_random_speaker()``; without one a random speaker is drawn
    once in ``setup()`` (seeded by ``seed``) and kept. ChatTTS has no speed
    control beyond its ``[speed_N]`` prompt tag, which ``speed`` sets.
    """

    sample_rate = 24_000

    def __init__(
        self,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        seed: int = 0,
        compile: bool = False,
        device: str | None = None,
    ) -> None:
        self.voice = voice
        self.speed = speed
        self.seed = seed
        self.compile = compile
        self.device = device
        self._chat: Any = None
        self._speaker: str | None = voice
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._chat is not None:
                return
            import ChatTTS
            import torch

            chat = ChatTTS.Chat()
            kwargs: dict[str, Any] = {"compile": self.compile}
            if self.device:
                kwargs["device"] = torch.device(self.device)
            if not chat.load(**kwargs):
                raise RuntimeError("ChatTTS failed to load its models")
            if self._speaker is None:
                torch.manual_seed(self.seed)
                self._speaker = chat.sample_random_speaker()
            self._chat = chat

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        cancel: Cancellation | None = None,
    ) -> Iterator[AudioChunk]:
        if self._chat is None:
            self.setup()
        import ChatTTS

        # ChatTTS speed tags run 0-9 with 5 as normal.
        level = max(0, min(9, round(5 * self.speed * speed)))
        params = ChatTTS.Chat.InferCodeParams(
            spk_emb=voice or self._speaker, prompt=f"[speed_{level}]"
        )
        with self._lock:
            for wavs in self._chat.infer([text], stream=True, params_infer_code=params):
                if is_cancelled(cancel):
                    return
                samples = np.asarray(wavs[0], dtype=np.float32).reshape(-1)
                if samples.size:
                    yield AudioChunk(samples, self.sample_rate)
