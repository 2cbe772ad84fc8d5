"""Text to speech with Kyutai's Pocket TTS (``pocket-tts`` package, CPU-friendly)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from speech_to_speech.handlers.base import AudioChunk, Cancellation, TTSHandler, is_cancelled
from speech_to_speech.handlers.registry import register

__all__ = ["PocketTTS"]


def _model_source(name: str | None) -> dict[str, str]:
    """``load_model``'s argument for ``name``: a config file or URL, else a language name."""
    if not name:
        return {}
    if "://" in name or name.endswith((".yaml", ".yml")):
        return {"config": name}
    return {"language": name}


@register("tts", "pocket", extra="pocket-tts", requires=["pocket_tts", "torch"])
class PocketTTS(TTSHandler):
    """``pocket_tts.TTSModel``: voice state from an audio prompt, then ``generate_audio``.

    ``model`` is a Pocket TTS language (``english``, ``french``, ...) or a config
    file (local path, ``https://`` or ``hf://``); default the package's English.

    ``voice`` is a Pocket voice name (``alba``, ...), a local wav file or an
    ``hf://`` URL of a reference clip; states are computed once per voice and
    cached. Pocket TTS has no speed parameter (``speed`` is ignored). One
    chunk per call.
    """

    def __init__(self, *, model: str | None = None, voice: str | None = None) -> None:
        self.model_name = model
        self.voice = voice or "alba"
        self._model: Any = None
        self._states: dict[str, Any] = {}
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._model is None:
                from pocket_tts import TTSModel

                self._model = TTSModel.load_model(**_model_source(self.model_name))
                self.sample_rate = int(self._model.sample_rate)
                self._state(self.voice)

    def _state(self, voice: str) -> Any:
        state = self._states.get(voice)
        if state is None:
            state = self._model.get_state_for_audio_prompt(voice)
            self._states[voice] = state
        return state

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        cancel: Cancellation | None = None,
    ) -> Iterator[AudioChunk]:
        if self._model is None:
            self.setup()
        if is_cancelled(cancel) or not text.strip():
            return
        with self._lock:
            audio = self._model.generate_audio(self._state(voice or self.voice), text)
        if is_cancelled(cancel):
            return
        samples = np.asarray(audio.detach().cpu().numpy(), dtype=np.float32).reshape(-1)
        yield AudioChunk(samples, self.sample_rate)
