"""Type stubs for the compiled core, checked by mypy.stubtest."""

import os
from collections.abc import Sequence
from typing import Any, Literal, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULTS",
    "AudioDeviceError",
    "AudioDeviceNotFoundError",
    "AudioFormatError",
    "AudioInput",
    "AudioOutput",
    "AudioQueue",
    "AudioStreamError",
    "BufferTooSmallError",
    "CancelToken",
    "ConnectionFailedError",
    "EchoCanceller",
    "EndOfTurnPolicy",
    "Engine",
    "EngineError",
    "ListenAndPlay",
    "LocalMode",
    "ModelError",
    "ModelNotFoundError",
    "NoiseReductionError",
    "NoiseSuppressor",
    "OddByteCountError",
    "OnnxRuntimeNotFoundError",
    "OnnxRuntimeNotInitialisedError",
    "Queue",
    "QueueClosedError",
    "QueueConfigError",
    "QueueEmptyError",
    "QueueError",
    "QueueFullError",
    "QueueTimeoutError",
    "RealtimeServer",
    "Resampler",
    "ServerAddressError",
    "ServerConfigError",
    "ServerError",
    "Session",
    "SessionError",
    "SessionLimitError",
    "SileroVad",
    "SmartTurn",
    "SocketServer",
    "SpeechToSpeechError",
    "StageFailedError",
    "TalkClient",
    "TurnVerdict",
    "UnsupportedDeviceRateError",
    "UnsupportedSampleRateError",
    "VadConfigError",
    "VadError",
    "VadEvent",
    "VadInputError",
    "VadState",
    "VadStream",
    "WebRtcEchoServer",
    "WebSocketServer",
    "__version__",
    "alaw_decode",
    "alaw_encode",
    "feed_streams",
    "float32_to_pcm16",
    "init_logging",
    "init_onnxruntime",
    "int16_to_pcm16",
    "list_audio_devices",
    "log_mel_features",
    "mulaw_decode",
    "mulaw_encode",
    "onnxruntime_initialised",
    "pcm16_to_float32",
    "pcm16_to_int16",
    "resample",
    "shutdown_workers",
    "sounds_unfinished",
    "speech_probabilities",
]

__version__: str

class SpeechToSpeechError(Exception): ...
class AudioFormatError(SpeechToSpeechError): ...
class OddByteCountError(AudioFormatError): ...
class BufferTooSmallError(AudioFormatError): ...

class EngineError(SpeechToSpeechError):
    code: str

class SessionLimitError(EngineError): ...

class SessionError(SpeechToSpeechError):
    code: str

class StageFailedError(SessionError): ...
class ServerError(SpeechToSpeechError): ...
class ServerAddressError(ServerError): ...
class ServerConfigError(ServerError): ...
class ConnectionFailedError(SpeechToSpeechError): ...
class VadError(SpeechToSpeechError): ...
class OnnxRuntimeNotFoundError(VadError): ...
class OnnxRuntimeNotInitialisedError(VadError): ...
class ModelNotFoundError(VadError): ...
class ModelError(VadError): ...
class VadConfigError(VadError): ...
class VadInputError(VadError): ...

# --- sample formats and G.711 ---
def pcm16_to_float32(data: bytes) -> npt.NDArray[np.float32]: ...
def pcm16_to_int16(data: bytes) -> npt.NDArray[np.int16]: ...
def float32_to_pcm16(samples: npt.NDArray[np.float32]) -> bytes: ...
def int16_to_pcm16(samples: npt.NDArray[np.int16]) -> bytes: ...
def mulaw_encode(samples: npt.NDArray[np.int16]) -> bytes: ...
def mulaw_decode(data: bytes) -> npt.NDArray[np.int16]: ...
def alaw_encode(samples: npt.NDArray[np.int16]) -> bytes: ...
def alaw_decode(data: bytes) -> npt.NDArray[np.int16]: ...
def init_logging(level: str | None = None) -> bool: ...
def shutdown_workers() -> None: ...

#: Every default the core starts from: host, port, max_message_bytes,
#: max_sessions, workers, first_audio_priority, first_clause_max_words, and
#: ``session`` (a session's settings in the protocol's names).
DEFAULTS: dict[str, Any]

# --- engine ---
@final
class CancelToken:
    def is_set(self) -> bool: ...

@final
class Session:
    @property
    def id(self) -> str: ...
    def feed_audio(self, audio: npt.NDArray[np.float32]) -> None: ...
    def commit(self) -> str: ...
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
        vad: SileroVad | None = None,
        stt_workers: int = 1,
        llm_workers: int = 1,
        tts_workers: int = 1,
        max_sessions: int = ...,  # DEFAULTS["max_sessions"]
        first_audio_priority: bool = True,
        first_clause_max_words: int = ...,  # DEFAULTS["first_clause_max_words"]
        turn_model: SmartTurn | None = None,
        stt_timeout_s: float | None = ...,  # DEFAULTS["stage_timeout_s"]
        llm_timeout_s: float | None = ...,
        tts_timeout_s: float | None = ...,
        scripted_pace_ms: float = 0.0,
    ) -> Engine: ...
    def session(
        self,
        *,
        instructions: str = "",
        input_rate: int = 16000,
        output_rate: int = 24000,
        turn_detection: bool = True,
        audio_output: bool = True,
        voice: str | None = None,
        speed: float = 1.0,
        transcription: bool = False,
        live_transcription: bool = False,
        speculation: bool = True,
        prefill: bool = True,
        chat_size: int = 0,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        end_of_turn: Literal["low", "medium", "high", "auto"] | None = None,
        silence_ms: float = 500.0,
        noise_reduction: Literal["near_field", "far_field"] | None = None,
    ) -> Session: ...
    @property
    def sessions(self) -> int: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def session_objects(self) -> int: ...
    def workers(self, stage: str) -> dict[str, int]: ...

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
    def waiting(self) -> int: ...
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

# --- VAD ---
def init_onnxruntime(path: str | os.PathLike[str]) -> None: ...
def onnxruntime_initialised() -> bool: ...
def speech_probabilities(
    samples: npt.NDArray[np.float32],
    *,
    model_path: str | os.PathLike[str],
    sample_rate: int = 16000,
    backend: Literal["auto", "native", "onnxruntime"] = "auto",
) -> npt.NDArray[np.float32]: ...

@final
class SileroVad:
    def __new__(
        cls,
        model_path: str | os.PathLike[str],
        *,
        intra_op_threads: int = 1,
        backend: Literal["auto", "native", "onnxruntime"] = "auto",
    ) -> SileroVad: ...
    @property
    def model_path(self) -> str: ...
    @property
    def intra_op_threads(self) -> int: ...
    @property
    def backend(self) -> Literal["native", "onnxruntime"]: ...
    def speech_probabilities(
        self, samples: npt.NDArray[np.float32], *, sample_rate: int = 16000
    ) -> npt.NDArray[np.float32]: ...
    def process_batch(
        self, states: Sequence[VadState], chunks: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]: ...

@final
class VadState:
    def __new__(cls, *, sample_rate: int = 16000) -> VadState: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def chunk_size(self) -> int: ...
    def reset(self) -> None: ...

@final
class VadEvent:
    @property
    def type(
        self,
    ) -> Literal["speech_started", "soft_end", "speech_resumed", "speech_stopped", "utterance"]: ...
    @property
    def audio_start_ms(self) -> int | None: ...
    @property
    def speech_start_ms(self) -> int | None: ...
    @property
    def audio_end_ms(self) -> int | None: ...
    @property
    def speech_end_ms(self) -> int | None: ...
    @property
    def audio_ms(self) -> int | None: ...
    @property
    def forced(self) -> bool: ...
    @property
    def start_ms(self) -> int | None: ...
    @property
    def end_ms(self) -> int | None: ...
    @property
    def audio(self) -> npt.NDArray[np.float32] | None: ...

@final
class VadStream:
    def __new__(
        cls,
        *,
        model_path: str | os.PathLike[str] | None = None,
        model: SileroVad | None = None,
        sample_rate: int = 16000,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_speech_ms: float = 250.0,
        min_silence_ms: float = 500.0,
        speech_pad_ms: float = 300.0,
        max_speech_ms: float | None = None,
        soft_end_ms: float | None = 50.0,
    ) -> VadStream: ...
    @property
    def model(self) -> SileroVad: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def position_ms(self) -> int: ...
    @property
    def in_speech(self) -> bool: ...
    @property
    def last_probability(self) -> float: ...
    def feed(self, samples: npt.NDArray[np.float32]) -> list[VadEvent]: ...
    def flush(self) -> list[VadEvent]: ...
    def reset(self) -> None: ...

def feed_streams(
    streams: Sequence[VadStream], chunks: Sequence[npt.NDArray[np.float32]]
) -> list[list[VadEvent]]: ...

# --- end of turn (Smart Turn v3) ---
def log_mel_features(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
def sounds_unfinished(text: str) -> bool: ...

@final
class TurnVerdict:
    @property
    def probability(self) -> float: ...
    @property
    def complete(self) -> bool: ...

@final
class SmartTurn:
    def __new__(
        cls,
        model_path: str | os.PathLike[str],
        *,
        intra_op_threads: int = 1,
        threshold: float = 0.5,
        allow_spinning: bool = False,
    ) -> SmartTurn: ...
    @property
    def model_path(self) -> str: ...
    @property
    def intra_op_threads(self) -> int: ...
    @property
    def threshold(self) -> float: ...
    def predict(self, samples: npt.NDArray[np.float32]) -> TurnVerdict: ...
    def predict_features(self, features: npt.NDArray[np.float32]) -> TurnVerdict: ...

@final
class EndOfTurnPolicy:
    def __new__(
        cls,
        *,
        model: bool = True,
        eagerness: Literal["low", "medium", "high", "auto"] = "auto",
        decision_silence_ms: int = 200,
        complete_silence_ms: int = 200,
        silence_ms: int = 500,
        max_wait_ms: int | None = None,
        recheck_ms: int | None = 600,
        complete_threshold: float = 0.5,
        hold_threshold: float = 0.1,
    ) -> EndOfTurnPolicy: ...
    def speech(self) -> bool: ...
    def pause(self, silence_start_ms: int, now_ms: int) -> Literal["wait", "decide", "commit"]: ...
    def verdict(
        self, decision: int, probability: float | None, now_ms: int
    ) -> Literal["wait", "decide", "commit"]: ...
    def tick(self, now_ms: int) -> Literal["wait", "decide", "commit"]: ...
    def reset(self) -> None: ...
    @property
    def decision(self) -> int: ...
    @property
    def reason(self) -> Literal["complete", "silence_rule", "max_wait"] | None: ...
    @property
    def in_turn(self) -> bool: ...
    @property
    def model(self) -> bool: ...
    @property
    def decision_silence_ms(self) -> int: ...
    @property
    def complete_silence_ms(self) -> int: ...
    @property
    def silence_ms(self) -> int: ...
    @property
    def max_wait_ms(self) -> int: ...
    @property
    def recheck_ms(self) -> int | None: ...
    @property
    def complete_threshold(self) -> float: ...
    @property
    def hold_threshold(self) -> float: ...

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

# --- audio front end: echo cancellation, noise suppression, devices ---
class NoiseReductionError(SpeechToSpeechError): ...
class AudioDeviceError(SpeechToSpeechError): ...
class AudioDeviceNotFoundError(AudioDeviceError): ...
class UnsupportedDeviceRateError(AudioDeviceError): ...
class AudioStreamError(AudioDeviceError): ...

@final
class EchoCanceller:
    """Acoustic echo canceller (WebRTC AEC3) for one mono float32 stream.

    Rates: 16000, 32000 or 48000 Hz. Feed what the speaker played with
    push_far_end (any length) and run whole 10 ms frames of microphone
    capture through process; the output lags the capture by `latency`.
    """

    def __new__(cls, *, sample_rate: int = 16000) -> EchoCanceller: ...
    def push_far_end(self, samples: npt.NDArray[np.float32]) -> None:
        """Feed far-end (speaker) samples, any length."""
    def process(self, mic: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Remove the echo from whole 10 ms frames of microphone capture."""
    @property
    def sample_rate(self) -> int: ...
    @property
    def frame_len(self) -> int: ...
    @property
    def latency(self) -> int: ...
    def metrics(self) -> dict[str, float]:
        """AEC3's own estimates: echo_return_loss_db, erle_db, delay_ms."""

@final
class NoiseSuppressor:
    """RNNoise noise suppressor for one mono float32 stream at any supported rate.

    process returns as many samples as it is given: the denoised input,
    `latency` samples late (plus RNNoise's own 10 ms).
    """

    def __new__(
        cls,
        *,
        sample_rate: int = 16000,
        type: Literal["near_field", "far_field"] | str = "near_field",
    ) -> NoiseSuppressor: ...
    def process(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Denoise the next chunk (any length)."""
    def reset(self) -> None: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def latency(self) -> int: ...
    @property
    def speech_probability(self) -> float: ...

def list_audio_devices() -> list[dict[str, Any]]:
    """Every audio device the host lists: index, name, description, is_input,
    is_output, default_input, default_output."""

@final
class AudioInput:
    """A microphone stream: mono float32 at sample_rate; capture runs in Rust."""

    def __new__(
        cls,
        *,
        device: str | None = None,
        sample_rate: int = 16000,
        device_rate: int | None = None,
        buffer_ms: int = 1000,
    ) -> AudioInput: ...
    def read(self, n: int, timeout: float | None = None) -> npt.NDArray[np.float32]:
        """Read n samples, waiting up to timeout seconds; fewer only on timeout."""
    @property
    def info(self) -> dict[str, Any]: ...
    @property
    def overruns(self) -> int: ...
    def close(self) -> None: ...

@final
class AudioOutput:
    """A speaker stream: write mono float32 at sample_rate; playback runs in Rust."""

    def __new__(
        cls,
        *,
        device: str | None = None,
        sample_rate: int = 16000,
        device_rate: int | None = None,
        buffer_ms: int = 1000,
        reference_rate: int | None = None,
    ) -> AudioOutput: ...
    def write(self, samples: npt.NDArray[np.float32], timeout: float | None = None) -> int:
        """Queue samples for playback; returns how many were taken."""
    def finish(self, timeout: float | None = None) -> None:
        """End the utterance (queue the resampler's tail)."""
    def clear(self) -> None:
        """Drop everything queued, now (barge-in)."""
    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued has played; returns whether it did."""
    def feed_reference(self, aec: EchoCanceller) -> int:
        """Move what was played since the last call into aec's far end."""
    @property
    def played_samples(self) -> int: ...
    @property
    def played_ms(self) -> int: ...
    @property
    def underruns(self) -> int: ...
    @property
    def queued(self) -> int: ...
    @property
    def info(self) -> dict[str, Any]: ...
    def close(self) -> None: ...

@final
class AudioQueue:
    """A bounded ring of float32 samples from one producer to one consumer thread."""

    def __new__(
        cls,
        *,
        capacity: int,
        overflow: Literal["reject", "drop_newest", "block"] = "drop_newest",
    ) -> AudioQueue: ...
    def push(self, samples: npt.NDArray[np.float32], timeout: float | None = None) -> int: ...
    def pop(self, max_samples: int, timeout: float | None = None) -> npt.NDArray[np.float32]: ...
    def try_pop(self, max_samples: int) -> npt.NDArray[np.float32]: ...
    def skip(self, n: int) -> int: ...
    def close(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def waiting(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def overflow(self) -> Literal["reject", "drop_newest", "block"]: ...
    @property
    def pushed(self) -> int: ...
    @property
    def popped(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    def __len__(self) -> int: ...

@final
class RealtimeServer:
    def __new__(
        cls,
        engine: Engine,
        *,
        host: str = ...,  # DEFAULTS["host"]
        port: int = ...,  # DEFAULTS["port"]
        api_key: str | None = None,
        max_message_bytes: int = ...,  # DEFAULTS["max_message_bytes"]
        backends: dict[str, Any] | None = None,
        defaults: dict[str, Any] | None = None,
        max_connections: int = 0,
        send_timeout_s: float = ...,  # DEFAULTS["send_timeout_s"]
        header_timeout_s: float = ...,  # DEFAULTS["header_timeout_s"]
        webrtc_port: int | None = None,
        webrtc_public_ip: str | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
    ) -> RealtimeServer: ...
    def start(self) -> None: ...
    def serve_forever(self) -> None: ...
    def stop(self) -> None: ...
    def drain(self, timeout_s: float) -> int: ...
    @property
    def draining(self) -> bool: ...
    @property
    def port(self) -> int | None: ...
    @property
    def host(self) -> str: ...
    @property
    def running(self) -> bool: ...
    @property
    def sessions(self) -> int: ...
    @property
    def defaults(self) -> dict[str, Any]: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def requires_api_key(self) -> bool: ...
    @property
    def url(self) -> str | None: ...
    @property
    def http_url(self) -> str | None: ...
    @property
    def webrtc_port(self) -> int | None: ...
    @property
    def webrtc_candidates(self) -> list[str]: ...
    @property
    def calls(self) -> int: ...

@final
class SocketServer:
    def __new__(
        cls,
        engine: Engine,
        *,
        host: str = ...,  # DEFAULTS["host"]
        send_port: int = ...,  # DEFAULTS["socket"]["send_port"]
        recv_port: int = ...,  # DEFAULTS["socket"]["recv_port"]
        send_rate: int = ...,  # DEFAULTS["socket"]["rate"]
        recv_rate: int = ...,  # DEFAULTS["socket"]["rate"]
        list_play_chunk_size: int = ...,  # DEFAULTS["socket"]["chunk_samples"]
        defaults: dict[str, Any] | None = None,
    ) -> SocketServer: ...
    def start(self) -> None: ...
    def serve_forever(self) -> None: ...
    def stop(self) -> None: ...
    @property
    def send_port(self) -> int | None: ...
    @property
    def recv_port(self) -> int | None: ...
    @property
    def running(self) -> bool: ...
    @property
    def conversations(self) -> int: ...

@final
class WebSocketServer:
    def __new__(
        cls,
        engine: Engine,
        *,
        host: str = ...,  # DEFAULTS["host"]
        port: int = ...,  # DEFAULTS["port"]
        output_rate: int = ...,  # DEFAULTS["websocket_output_rate"]
        max_message_bytes: int = ...,  # DEFAULTS["max_message_bytes"]
        defaults: dict[str, Any] | None = None,
    ) -> WebSocketServer: ...
    def start(self) -> None: ...
    def serve_forever(self) -> None: ...
    def stop(self) -> None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def url(self) -> str | None: ...
    @property
    def running(self) -> bool: ...
    @property
    def connections(self) -> int: ...

@final
class LocalMode:
    def __new__(
        cls,
        engine: Engine,
        *,
        input_device: str | None = None,
        output_device: str | None = None,
        aec: bool = True,
        block_mic_during_playback: bool = False,
        barge_in_min_ms: float = 500.0,
        output_rate: int = 24000,
        defaults: dict[str, Any] | None = None,
    ) -> LocalMode: ...
    def serve_forever(self) -> None: ...
    def stop(self) -> None: ...
    @property
    def running(self) -> bool: ...
    @property
    def failure(self) -> str | None: ...
    @property
    def session_id(self) -> str: ...
    @property
    def devices(self) -> dict[str, str]: ...

@final
class TalkClient:
    def __new__(
        cls,
        *,
        url: str,
        api_key: str | None = None,
        input_device: str | None = None,
        output_device: str | None = None,
        aec: bool = True,
        block_mic_during_playback: bool = False,
        noise_reduction: Literal["near_field", "far_field"] | None = None,
        instructions: str | None = None,
        voice: str | None = None,
        transcription_model: str = ...,  # "gpt-4o-mini-transcribe"
        connect_timeout: float = 10.0,
    ) -> TalkClient: ...
    def next_event(self, timeout: float = 0.1) -> dict[str, Any] | None: ...
    @property
    def running(self) -> bool: ...
    def stop(self) -> None: ...

@final
class ListenAndPlay:
    def __new__(
        cls,
        *,
        host: str = ...,  # "localhost"
        send_port: int = ...,  # DEFAULTS["socket"]["send_port"]
        recv_port: int = ...,  # DEFAULTS["socket"]["recv_port"]
        send_rate: int = ...,  # DEFAULTS["socket"]["rate"]
        recv_rate: int = ...,  # DEFAULTS["socket"]["rate"]
        input_device: str | None = None,
        output_device: str | None = None,
        aec: bool = True,
        block_mic_during_playback: bool = False,
    ) -> ListenAndPlay: ...
    def serve_forever(self) -> None: ...
    @property
    def ended(self) -> str | None: ...
    @property
    def running(self) -> bool: ...
    def stop(self) -> None: ...

@final
class WebRtcEchoServer:
    """For tests: a WebRTC echo server on ``POST /v1/realtime/calls``."""

    def __new__(
        cls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webrtc_host: str = "127.0.0.1",
        webrtc_port: int = 0,
        public_ip: str | None = None,
        echo_rate: int = 48000,
        max_calls: int = 64,
        connect_timeout: float = 30.0,
        disconnect_timeout: float = 10.0,
    ) -> WebRtcEchoServer: ...
    def stop(self) -> None: ...
    @property
    def url(self) -> str: ...
    @property
    def webrtc_port(self) -> int: ...
    @property
    def candidates(self) -> list[str]: ...
    @property
    def calls(self) -> int: ...
    def latencies_ms(self) -> list[float]: ...
    def closed_calls(self) -> list[tuple[str, str]]: ...
    def wait_closed(self, call_id: str, timeout: float = 10.0) -> str | None: ...
    def __enter__(self) -> WebRtcEchoServer: ...
    def __exit__(self, *args: object) -> None: ...
