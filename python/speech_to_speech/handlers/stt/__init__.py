"""Speech-to-text backends; importing this package registers them all."""

from speech_to_speech.handlers.stt import (
    fake,
    faster_whisper,
    mlx_audio_whisper,
    mlx_whisper,
    openai_stt,
    paraformer,
    parakeet,
    whisper_transformers,
)

__all__ = [
    "fake",
    "faster_whisper",
    "mlx_audio_whisper",
    "mlx_whisper",
    "openai_stt",
    "paraformer",
    "parakeet",
    "whisper_transformers",
]
