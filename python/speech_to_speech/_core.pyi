"""Type stubs for the compiled core, checked by mypy.stubtest."""

from typing import final

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "AudioFormatError",
    "BufferTooSmallError",
    "OddByteCountError",
    "Resampler",
    "SpeechToSpeechError",
    "UnsupportedSampleRateError",
    "__version__",
    "alaw_decode",
    "alaw_encode",
    "float32_to_pcm16",
    "int16_to_pcm16",
    "mulaw_decode",
    "mulaw_encode",
    "pcm16_to_float32",
    "pcm16_to_int16",
    "resample",
]

class SpeechToSpeechError(Exception): ...
class AudioFormatError(SpeechToSpeechError): ...
class OddByteCountError(AudioFormatError): ...
class BufferTooSmallError(AudioFormatError): ...

# --- sample formats and G.711 ---
def pcm16_to_float32(data: bytes) -> npt.NDArray[np.float32]: ...
def pcm16_to_int16(data: bytes) -> npt.NDArray[np.int16]: ...
def float32_to_pcm16(samples: npt.NDArray[np.float32]) -> bytes: ...
def int16_to_pcm16(samples: npt.NDArray[np.int16]) -> bytes: ...
def mulaw_encode(samples: npt.NDArray[np.int16]) -> bytes: ...
def mulaw_decode(data: bytes) -> npt.NDArray[np.int16]: ...
def alaw_encode(samples: npt.NDArray[np.int16]) -> bytes: ...
def alaw_decode(data: bytes) -> npt.NDArray[np.int16]: ...

# --- resampling ---
class UnsupportedSampleRateError(AudioFormatError): ...

@final
class Resampler:
    """Streaming resampler for one mono float32 stream.

    Supported rates: 8000, 16000, 22050, 24000, 44100 and 48000 Hz, in any
    pair (equal rates pass samples through). The output is time-aligned with
    the input; a stream of n samples yields exactly
    ceil(n * output_rate / input_rate) samples once flushed.
    """

    def __new__(cls, *, input_rate: int, output_rate: int) -> Resampler: ...
    def process(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Resample the next chunk (any length); returns the output it completes."""
    def flush(self) -> npt.NDArray[np.float32]:
        """End the stream: return the held-back tail and start a new stream."""
    def reset(self) -> None:
        """Forget the stream without emitting its tail."""
    @property
    def input_rate(self) -> int: ...
    @property
    def output_rate(self) -> int: ...
    @property
    def delay(self) -> float:
        """Streaming latency in output samples (0.0 for equal rates)."""
    @property
    def delay_seconds(self) -> float:
        """Streaming latency in seconds."""

def resample(
    samples: npt.NDArray[np.float32], *, input_rate: int, output_rate: int
) -> npt.NDArray[np.float32]:
    """Resample a whole signal: ceil(len(samples) * output_rate / input_rate) samples."""
