"""Type stubs for the compiled core, checked by mypy.stubtest."""

from typing import Any, final
from typing import Any, Literal, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "AudioFormatError",
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

__version__: str
__all__ = [
    "AudioFormatError",
    "BufferTooSmallError",
    "CancelToken",
    "Engine",
    "OddByteCountError",
    "Session",
    "SessionLimitError",
    "SpeechToSpeechError",
    "StageFailedError",
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

class SpeechToSpeechError(Exception): ...
class AudioFormatError(SpeechToSpeechError): ...
class OddByteCountError(AudioFormatError): ...
class BufferTooSmallError(AudioFormatError): ...
class SessionLimitError(SpeechToSpeechError): ...
class StageFailedError(SpeechToSpeechError): ...

# --- sample formats and G.711 ---
def pcm16_to_float32(data: bytes) -> npt.NDArray[np.float32]: ...
def pcm16_to_int16(data: bytes) -> npt.NDArray[np.int16]: ...
def float32_to_pcm16(samples: npt.NDArray[np.float32]) -> bytes: ...
def int16_to_pcm16(samples: npt.NDArray[np.int16]) -> bytes: ...
def mulaw_encode(samples: npt.NDArray[np.int16]) -> bytes: ...
def mulaw_decode(data: bytes) -> npt.NDArray[np.int16]: ...
def alaw_encode(samples: npt.NDArray[np.int16]) -> bytes: ...
def alaw_decode(data: bytes) -> npt.NDArray[np.int16]: ...

# --- engine ---
@final
class CancelToken:
    def is_set(self) -> bool: ...

@final
class Session:
    @property
    def id(self) -> str: ...
    def commit_audio(self, audio: npt.NDArray[np.float32]) -> str: ...
    def add_text(self, text: str) -> str: ...
    def create_response(
        self, *, instructions: str | None = None, audio_output: bool | None = None
    ) -> str: ...
    def cancel_response(self) -> bool: ...
    def next_event(self, timeout: float | None = None) -> dict[str, Any] | None: ...
    def close(self) -> None: ...

@final
class Engine:
    def __new__(
        cls,
        *,
        stt: object,
        llm: object,
        tts: object,
        stt_workers: int = 1,
        llm_workers: int = 1,
        tts_workers: int = 1,
        max_sessions: int = 64,
    ) -> Engine: ...
    def session(
        self,
        *,
        instructions: str = "",
        output_rate: int = 24000,
        audio_output: bool = True,
        voice: str | None = None,
        speed: float = 1.0,
        transcription: bool = False,
        speculation: bool = True,
        chat_size: int = 0,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
    ) -> Session: ...
    @property
    def sessions(self) -> int: ...
# --- queues ---
class QueueError(SpeechToSpeechError): ...
class QueueFullError(QueueError): ...
class QueueEmptyError(QueueError): ...
class QueueClosedError(QueueError): ...
class QueueTimeoutError(QueueError): ...
class QueueConfigError(QueueError): ...

@final
class Queue:
    """A bounded, thread-safe FIFO of Python objects with an overflow policy."""

    def __new__(
        cls,
        *,
        capacity: int,
        overflow: Literal["reject", "drop_newest", "drop_oldest", "block"] = "reject",
    ) -> Queue: ...
    def try_push(self, item: object) -> bool: ...
    def push(self, item: object, timeout: float | None = None) -> bool: ...
    def try_pop(self) -> Any: ...
    def pop(self, timeout: float | None = None) -> Any: ...
    def close(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def capacity(self) -> int: ...
    @property
    def overflow(self) -> Literal["reject", "drop_newest", "drop_oldest", "block"]: ...
    @property
    def pushed(self) -> int: ...
    @property
    def popped(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    def __len__(self) -> int: ...
