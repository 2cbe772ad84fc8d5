"""Text to speech over any OpenAI-compatible ``POST /v1/audio/speech`` endpoint, streamed as PCM."""

from __future__ import annotations

from collections.abc import Iterator

from speech_to_speech._core import pcm16_to_float32
from speech_to_speech.handlers.base import AudioChunk, Cancellation, TTSHandler, is_cancelled
from speech_to_speech.handlers.llm._openai import OpenAIEndpoint, map_openai_errors
from speech_to_speech.handlers.registry import register

__all__ = ["OpenAITTS"]

# OpenAI's PCM: 16-bit mono little-endian at 24 kHz.
_OPENAI_PCM_RATE = 24_000


@register("tts", "openai", extra="openai", requires=["openai"])
class OpenAITTS(OpenAIEndpoint, TTSHandler):
    """Streams ``/v1/audio/speech`` with ``response_format="pcm"`` (OpenAI, Speaches, vLLM,
    Kokoro and Piper servers, ...) through the ``openai`` SDK.

    PCM is 16-bit mono little-endian at 24 kHz in OpenAI's API; a server that
    says otherwise in an ``X-Sample-Rate`` header is believed, and
    ``sample_rate`` sets the rate for servers that say nothing. ``model``
    defaults to ``gpt-4o-mini-tts`` and ``voice`` to ``alloy``; ``instructions``
    is sent when set. A chunk is yielded every ``chunk_ms`` of audio received.
    """

    api_name = "openai TTS"

    def __init__(
        self,
        *,
        model: str | None = None,
        voice: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        speed: float = 1.0,
        instructions: str | None = None,
        sample_rate: int = _OPENAI_PCM_RATE,
        chunk_ms: int = 100,
        timeout: float = 30.0,
        max_retries: int = 0,
    ) -> None:
        self.model = model or "gpt-4o-mini-tts"
        self.voice = voice or "alloy"
        self.speed = speed
        self.instructions = instructions
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self._endpoint(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)

    def setup(self) -> None:
        with map_openai_errors(self._where()):
            self._connect()

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        cancel: Cancellation | None = None,
    ) -> Iterator[AudioChunk]:
        if is_cancelled(cancel) or not text.strip():
            return
        if self._client is None:
            self.setup()
        rate = self.speed * speed
        if rate <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        kwargs: dict[str, object] = {}
        if self.instructions:
            kwargs["instructions"] = self.instructions
        if abs(rate - 1.0) > 1e-6:
            kwargs["speed"] = rate
        with (
            map_openai_errors(self._where()),
            self._client.audio.speech.with_streaming_response.create(
                model=self.model,
                voice=voice or self.voice,
                input=text,
                response_format="pcm",
                **kwargs,
            ) as response,
        ):
            sample_rate = int(response.headers.get("x-sample-rate") or self.sample_rate)
            size = max(2, sample_rate * self.chunk_ms // 1000 * 2)
            pending = b""
            for data in response.iter_bytes(size):
                if is_cancelled(cancel):
                    return
                pending += data
                whole = len(pending) - len(pending) % 2
                if whole:
                    yield AudioChunk(pcm16_to_float32(pending[:whole]), sample_rate)
                    pending = pending[whole:]
