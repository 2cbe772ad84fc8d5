"""Speech to text over any OpenAI-compatible ``POST /v1/audio/transcriptions`` endpoint."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from speech_to_speech._core import float32_to_pcm16
from speech_to_speech.handlers.base import STT_SAMPLE_RATE, Cancellation, STTHandler, Transcript
from speech_to_speech.handlers.llm._openai import OpenAIEndpoint, map_openai_errors
from speech_to_speech.handlers.registry import register
from speech_to_speech.handlers.stt._common import final_only

__all__ = ["OpenAISTT", "wav_bytes"]


def wav_bytes(audio: npt.NDArray[np.float32], sample_rate: int = STT_SAMPLE_RATE) -> bytes:
    """Mono float32 audio as a 16-bit PCM WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(float32_to_pcm16(np.asarray(audio, dtype=np.float32)))
    return out.getvalue()


@register("stt", "openai", extra="openai", requires=["openai"])
class OpenAISTT(OpenAIEndpoint, STTHandler):
    """Sends each utterance as a WAV file to ``/v1/audio/transcriptions`` (OpenAI, Speaches,
    vLLM, faster-whisper-server, ...) through the ``openai`` SDK.

    ``base_url`` of ``None`` means ``$OPENAI_BASE_URL`` or api.openai.com and
    ``api_key`` of ``None`` ``$OPENAI_API_KEY`` (a placeholder for custom
    servers); ``model`` defaults to ``whisper-1``. ``language`` and the
    per-call ``prompt`` are passed on; ``auto`` lets the server detect.
    """

    api_name = "openai STT"

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        language: str | None = "en",
        timeout: float = 30.0,
        max_retries: int = 0,
    ) -> None:
        self.model = model or "whisper-1"
        self.language = language
        self._endpoint(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)

    def setup(self) -> None:
        with map_openai_errors(self._where()):
            self._connect()

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: Cancellation | None = None,
    ) -> Iterator[Transcript]:
        lang = language or self.language
        if np.asarray(audio).size == 0:
            yield from final_only("", lang if lang != "auto" else None, cancel)
            return
        if self._client is None:
            self.setup()
        kwargs: dict[str, object] = {}
        if lang and lang != "auto":
            kwargs["language"] = lang
        if prompt:
            kwargs["prompt"] = prompt
        with map_openai_errors(self._where()):
            result = self._client.audio.transcriptions.create(
                model=self.model,
                file=("utterance.wav", wav_bytes(audio), "audio/wav"),
                response_format="json",
                **kwargs,
            )
        text = result if isinstance(result, str) else str(getattr(result, "text", ""))
        yield from final_only(text, lang if lang != "auto" else None, cancel)
