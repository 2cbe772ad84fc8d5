"""Text-to-speech backends; importing this package registers them all."""

from speech_to_speech.handlers.tts import (
    chattts,
    fake,
    kokoro,
    kokoro_torch,
    mms,
    openai_tts,
    piper,
    pocket,
    qwen3,
)

__all__ = [
    "chattts",
    "fake",
    "kokoro",
    "kokoro_torch",
    "mms",
    "openai_tts",
    "piper",
    "pocket",
    "qwen3",
]
