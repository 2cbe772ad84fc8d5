"""Model handlers for the STT, LLM and TTS stages, their registry and test fakes.

The engine creates handlers by stage and backend name
(:func:`create_handler` or :func:`build_handlers` from CLI arguments), calls
``setup()`` once, then calls ``transcribe`` / ``generate`` / ``synthesize``
from its stage worker threads.
"""

from speech_to_speech.handlers.base import (
    STT_SAMPLE_RATE,
    AudioChunk,
    BackendNotImplementedError,
    Cancellation,
    HandlerError,
    LLMAuthError,
    LLMConnectionError,
    LLMError,
    LLMEvent,
    LLMHandler,
    LLMResponseError,
    MissingExtraError,
    STTHandler,
    TextDelta,
    ToolCall,
    Transcript,
    TTSHandler,
    UnknownBackendError,
    Usage,
    is_cancelled,
)
from speech_to_speech.handlers.conversation import build_chat_messages
from speech_to_speech.handlers.registry import (
    STAGES,
    BackendInfo,
    Stage,
    available_backends,
    backend_info,
    build_handlers,
    create_handler,
    register,
    registered_backends,
)

__all__ = [
    "STAGES",
    "STT_SAMPLE_RATE",
    "AudioChunk",
    "BackendInfo",
    "BackendNotImplementedError",
    "Cancellation",
    "HandlerError",
    "LLMAuthError",
    "LLMConnectionError",
    "LLMError",
    "LLMEvent",
    "LLMHandler",
    "LLMResponseError",
    "MissingExtraError",
    "STTHandler",
    "Stage",
    "TTSHandler",
    "TextDelta",
    "ToolCall",
    "Transcript",
    "UnknownBackendError",
    "Usage",
    "available_backends",
    "backend_info",
    "build_chat_messages",
    "build_handlers",
    "create_handler",
    "is_cancelled",
    "register",
    "registered_backends",
]
