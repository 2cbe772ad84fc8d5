"""LLM over any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, llama.cpp server...)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from speech_to_speech.handlers.base import (
    Cancellation,
    LLMEvent,
    LLMHandler,
    LLMResponseError,
    TextDelta,
    ToolCall,
    Usage,
    is_cancelled,
)
from speech_to_speech.handlers.conversation import tool_choice_to_chat_format, tool_to_chat_format
from speech_to_speech.handlers.llm._openai import OpenAIEndpoint, map_openai_errors
from speech_to_speech.handlers.registry import register

__all__ = ["ChatCompletionsLLM"]

log = logging.getLogger(__name__)


@register("llm", "chat-completions", extra="openai", requires=["openai"])
class ChatCompletionsLLM(OpenAIEndpoint, LLMHandler):
    """Streams ``/v1/chat/completions`` with native tool calls through the ``openai`` SDK.

    ``base_url`` of ``None`` means ``$OPENAI_BASE_URL`` or api.openai.com;
    ``api_key`` of ``None`` means ``$OPENAI_API_KEY`` (a placeholder is sent to
    custom servers that need none). ``model`` of ``None`` asks the server's
    ``/v1/models`` in ``setup()`` and takes the first (meant for single-model
    servers). ``max_tokens_field`` is ``"max_tokens"`` or
    ``"max_completion_tokens"`` (newer OpenAI models accept only the latter).
    ``stream_usage`` requests a final usage chunk (``stream_options``).
    Retries are off by default: a voice turn is better failed fast.
    """

    api_name = "chat-completions"

    def __init__(
        self,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 0,
        temperature: float | None = None,
        max_tokens: int | None = 256,
        max_tokens_field: str = "max_tokens",
        stream_usage: bool = True,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.model = model
        self._endpoint(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_tokens_field = max_tokens_field
        self.stream_usage = stream_usage
        self.extra_body = extra_body

    def setup(self) -> None:
        self._connect()
        with self._lock:
            if self.model is None:
                with map_openai_errors(self._where()):
                    models = list(self._client.models.list())
                if not models:
                    raise LLMResponseError(f"{self._where()}: no model listed; pass --llm_model")
                self.model = str(models[0].id)
                log.info("using model %s from %s", self.model, self._where())

    def _request(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        if tools:
            body["tools"] = [tool_to_chat_format(t) for t in tools]
            if tool_choice is not None:
                body["tool_choice"] = tool_choice_to_chat_format(tool_choice)
        temp = self.temperature if temperature is None else temperature
        if temp is not None:
            body["temperature"] = temp
        limit = self.max_tokens if max_tokens is None else max_tokens
        if limit is not None:
            body[self.max_tokens_field] = limit
        if self.extra_body:
            body["extra_body"] = self.extra_body
        return body

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
        if self._client is None or self.model is None:
            self.setup()
        body = self._request(messages, tools, tool_choice, temperature, max_tokens)
        # Tool calls stream as fragments keyed by index: id and name first, then arguments.
        calls: dict[int, dict[str, str]] = {}
        usage: Usage | None = None
        finished = False
        with map_openai_errors(self._where()):
            stream = self._client.chat.completions.create(**body)
            try:
                for chunk in stream:
                    if is_cancelled(cancel):
                        return
                    if chunk.usage is not None:
                        usage = Usage(
                            int(chunk.usage.prompt_tokens or 0),
                            int(chunk.usage.completion_tokens or 0),
                        )
                    for choice in chunk.choices or []:
                        finished |= choice.finish_reason is not None
                        delta = choice.delta
                        if delta is None:
                            continue
                        # A refusal is what the model says instead of an answer: speak it.
                        text = delta.content or getattr(delta, "refusal", None)
                        if text:
                            yield TextDelta(text)
                        for tc in delta.tool_calls or []:
                            acc = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                            if tc.id:
                                acc["id"] = tc.id
                            if tc.function is not None:
                                if tc.function.name and not acc["name"]:
                                    acc["name"] = tc.function.name
                                if tc.function.arguments:
                                    acc["args"] += tc.function.arguments
            finally:
                stream.close()
        if not finished:
            # Every server sends a finish_reason last; without it the
            # connection ended mid-answer, and what came is not the answer.
            raise LLMResponseError(
                f"{self._where()}: the stream ended without a finish_reason "
                "(the server or a proxy cut the connection); the answer is incomplete"
            )
        for index in sorted(calls):
            acc = calls[index]
            yield ToolCall(acc["id"] or f"call_{index}", acc["name"], acc["args"] or "{}")
        if usage is not None:
            yield usage
