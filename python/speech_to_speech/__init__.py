"""speech-to-speech: a voice-agent server with a Rust audio core.

The compiled core lives in :mod:`speech_to_speech._core`; this package
re-exports its public pieces.
"""

from speech_to_speech._core import (
    AudioFormatError,
    AudioQueue,
    BufferTooSmallError,
    OddByteCountError,
    Queue,
    QueueClosedError,
    QueueConfigError,
    QueueEmptyError,
    QueueError,
    QueueFullError,
    QueueTimeoutError,
    SpeechToSpeechError,
    __version__,
    alaw_decode,
    alaw_encode,
    float32_to_pcm16,
    int16_to_pcm16,
    mulaw_decode,
    mulaw_encode,
    pcm16_to_float32,
    pcm16_to_int16,
)

__all__ = [
    "AudioFormatError",
    "AudioQueue",
    "BufferTooSmallError",
    "OddByteCountError",
    "Queue",
    "QueueClosedError",
    "QueueConfigError",
    "QueueEmptyError",
    "QueueError",
    "QueueFullError",
    "QueueTimeoutError",
    "SpeechToSpeechError",
    "__version__",
    "alaw_decode",
    "alaw_encode",
    "float32_to_pcm16",
    "int16_to_pcm16",
    "mulaw_decode",
    "mulaw_encode",
    "pcm16_to_float32",
    "pcm16_to_int16",
]
