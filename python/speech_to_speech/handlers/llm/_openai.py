"""Shared pieces of the OpenAI-SDK backends: client construction and error mapping."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from speech_to_speech.handlers.base import (
    LLMAuthError,
    LLMConnectionError,
    LLMError,
    LLMResponseError,
)

__all__ = ["OpenAIEndpoint", "make_client", "map_openai_errors", "resolve_api_key"]

# The SDK refuses to build a client without a key; local servers ignore it.
_PLACEHOLDER_KEY = "sk-no-key-required"


def resolve_api_key(api_key: str | None, base_url: str | None) -> str:
    """The key from the option, else ``$OPENAI_API_KEY``, else a placeholder for custom servers.

    Raises :class:`LLMAuthError` when talking to api.openai.com without a key.
    """
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if base_url or os.environ.get("OPENAI_BASE_URL"):
        return _PLACEHOLDER_KEY
    raise LLMAuthError(
        "no API key for api.openai.com: pass --llm_api_key or set OPENAI_API_KEY "
        "(or point --llm_base_url at a local server)"
    )


def make_client(
    *, base_url: str | None, api_key: str | None, timeout: float, max_retries: int
) -> Any:
    """An ``openai.OpenAI`` client."""
    import openai

    return openai.OpenAI(
        base_url=base_url,
        api_key=resolve_api_key(api_key, base_url),
        timeout=timeout,
        max_retries=max_retries,
    )


class OpenAIEndpoint:
    """Where an OpenAI-SDK backend connects, and its client, made once by ``_connect``."""

    #: Names the backend in error messages.
    api_name = "openai"

    def _endpoint(
        self, *, base_url: str | None, api_key: str | None, timeout: float, max_retries: int
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self._client: Any = None
        self._lock = threading.Lock()

    def _where(self) -> str:
        return f"{self.api_name} at {self.base_url or 'the default OpenAI endpoint'}"

    def _connect(self) -> None:
        with self._lock:
            if self._client is None:
                self._client = make_client(
                    base_url=self.base_url,
                    api_key=self.api_key,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                )


@contextmanager
def map_openai_errors(what: str) -> Iterator[None]:
    """Re-raise the SDK's exceptions as :class:`LLMError` subclasses with a one-line message."""
    import openai

    try:
        yield
    except LLMError:
        raise
    except openai.APITimeoutError as e:
        raise LLMConnectionError(f"{what}: request timed out ({e})") from e
    except openai.APIConnectionError as e:
        cause = e.__cause__ or e
        raise LLMConnectionError(f"{what}: cannot connect: {cause}") from e
    except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
        raise LLMAuthError(
            f"{what}: the server refused the API key (HTTP {e.status_code}): {e.message}"
        ) from e
    except openai.APIStatusError as e:
        raise LLMResponseError(f"{what}: HTTP {e.status_code}: {e.message}") from e
    except openai.OpenAIError as e:
        raise LLMResponseError(f"{what}: {e}") from e
