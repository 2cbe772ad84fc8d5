"""The handler contract: output types, cancellation and the three stage base classes.

The Rust engine calls these handlers from its stage worker threads. A handler
holds no session state: one instance serves every session, so everything a call
needs (audio, messages, text, options) comes in as arguments, and everything it
produces comes out of the returned iterator. Iterators are lazy; the engine
pulls items one at a time and may stop pulling at any point (the handler must
then release what it holds when the generator is closed).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from speech_to_speech._core import SpeechToSpeechError

__all__ = [
    "STT_SAMPLE_RATE",
    "AudioChunk",
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
    "TTSHandler",
    "TextDelta",
    "ToolCall",
    "Transcript",
    "UnknownBackendError",
    "Usage",
    "is_cancelled",
]

STT_SAMPLE_RATE = 16_000
"""Sample rate of the audio every STT handler receives (mono float32)."""


# --- errors -------------------------------------------------------------------------------


class HandlerError(SpeechToSpeechError):
    """Base of the errors raised by handlers and the handler registry."""


class MissingExtraError(HandlerError, ImportError):
    """A backend's Python dependencies are not installed; the message names the pip extra."""


class UnknownBackendError(HandlerError, ValueError):
    """No backend of that name is registered for the stage."""


class BackendNotImplementedError(HandlerError, NotImplementedError):
    """The backend is registered (its name is reserved) but has no implementation yet."""


class LLMError(HandlerError):
    """Base of the errors raised by LLM handlers while generating."""


class LLMConnectionError(LLMError):
    """The LLM endpoint could not be reached or timed out. Check the base URL and the server."""


class LLMAuthError(LLMError):
    """The LLM endpoint refused the credentials (HTTP 401/403). Check the API key."""


class LLMResponseError(LLMError):
    """The LLM endpoint answered with an error (bad request, failed response, rate limit...)."""


# --- outputs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transcript:
    """A transcript of one utterance: partials while decoding, then exactly one final."""

    text: str
    final: bool
    language: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of assistant text, in generation order."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete function call requested by the model.

    ``arguments`` is the JSON text of the arguments object, as the model wrote it.
    """

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one generation; emitted once, last, when the backend knows them."""

    input_tokens: int
    output_tokens: int


LLMEvent = TextDelta | ToolCall | Usage
"""What :meth:`LLMHandler.generate` yields."""


@dataclass(frozen=True, slots=True, eq=False)
class AudioChunk:
    """A piece of synthesised speech at the backend's native rate.

    ``samples`` is mono float32 in [-1, 1]. ``words`` optionally gives
    ``(word, start_s, end_s)`` timings relative to the start of this chunk.
    """

    samples: npt.NDArray[np.float32]
    sample_rate: int
    words: list[tuple[str, float, float]] | None = None

    @property
    def duration(self) -> float:
        """Length of the chunk in seconds."""
        return len(self.samples) / self.sample_rate


# --- cancellation -------------------------------------------------------------------------


@runtime_checkable
class Cancellation(Protocol):
    """A flag the engine sets to stop a running job (``threading.Event`` satisfies it)."""

    def is_set(self) -> bool: ...


def is_cancelled(cancel: Cancellation | None) -> bool:
    """True when ``cancel`` is given and set."""
    return cancel is not None and cancel.is_set()


# --- stage base classes -------------------------------------------------------------------


class _Handler(abc.ABC):  # noqa: B024 - the stage subclasses add the abstract method
    """Shared lifecycle: construct with backend options, then ``setup()`` once."""

    #: Registry name of the backend (set by the ``register`` decorator).
    backend_name: ClassVar[str] = ""

    def setup(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Load the model and warm it up. Called once, before the first job."""


class STTHandler(_Handler):
    """Speech to text."""

    @abc.abstractmethod
    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: Cancellation | None = None,
    ) -> Iterator[Transcript]:
        """Transcribe one utterance of mono float32 audio at 16 kHz.

        Yields zero or more partial transcripts, then exactly one final one
        (``final=True``; its text is stripped). ``language`` overrides the
        handler's default language; ``prompt`` is context text (previous turn,
        names) for backends that accept it. When ``cancel`` is set the handler
        stops early; it then yields nothing more, not even a final.
        """


class LLMHandler(_Handler):
    """Chat completion with tools."""

    @abc.abstractmethod
    def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cancel: Cancellation | None = None,
    ) -> Iterator[LLMEvent]:
        """Stream a reply to ``messages``.

        ``messages`` is in the OpenAI chat format: dicts with ``role`` among
        system/user/assistant/tool; an assistant message may carry
        ``tool_calls`` (``[{"id", "type": "function", "function": {"name",
        "arguments"}}]``) and a tool message carries ``tool_call_id`` and its
        output as ``content``.

        ``tools`` are Realtime-style function tools
        (``{"type": "function", "name", "description", "parameters"}``);
        ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` or
        ``{"type": "function", "name": ...}``. ``None`` for ``temperature`` and
        ``max_tokens`` means the handler's configured default.

        Yields :class:`TextDelta` items as text is generated, a
        :class:`ToolCall` for each complete function call, and at most one
        :class:`Usage` at the end. Stops early when ``cancel`` is set.
        Raises an :class:`LLMError` subclass when a remote endpoint fails.
        """

    def prefill(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        cancel: Cancellation | None = None,
    ) -> None:
        """Read ``messages`` ahead: the history the next ``generate`` call's messages begin with.

        The engine calls it when the user starts speaking, so that a local
        model has the conversation so far in its cache and the answer only
        reads the new user message. A hint: the default does nothing, and an
        implementation should give way (return early) when ``cancel`` is set
        or a generation is waiting.
        """
        del messages, tools, cancel


class TTSHandler(_Handler):
    """Text to speech."""

    #: Native output rate; backends set it in ``__init__`` or ``setup()``.
    sample_rate: int = 0

    @abc.abstractmethod
    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        cancel: Cancellation | None = None,
    ) -> Iterator[AudioChunk]:
        """Speak ``text`` (usually one clause), yielding chunks at the native rate.

        ``voice`` overrides the handler's default voice (its meaning is
        backend-specific: a speaker name, or a voice file); ``speed`` > 1 is
        faster. Backends that can stream yield several chunks per text. Stops
        early when ``cancel`` is set.
        """
