"""LLM over the OpenAI Responses API (``/v1/responses``), streamed."""

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
from speech_to_speech.handlers.conversation import tool_from_chat_format
from speech_to_speech.handlers.llm._openai import OpenAIEndpoint, map_openai_errors
from speech_to_speech.handlers.registry import register

__all__ = ["ResponsesLLM", "messages_to_input", "tool_choice_to_responses"]

log = logging.getLogger(__name__)


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))


def _content(role: str, content: Any) -> str | list[dict[str, Any]]:
    """Chat content (a string or typed parts) as Responses message content."""
    if content is None or isinstance(content, str):
        return content or ""
    part_type = "output_text" if role == "assistant" else "input_text"
    parts: list[dict[str, Any]] = []
    for p in content:
        if not isinstance(p, dict):
            continue
        if p.get("type") in ("text", "input_text", "output_text"):
            parts.append({"type": part_type, "text": p.get("text", "")})
        elif p.get("type") == "image_url":
            url = p["image_url"]["url"] if isinstance(p["image_url"], dict) else p["image_url"]
            parts.append({"type": "input_image", "image_url": url})
        else:
            parts.append(p)
    return parts


def messages_to_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Map OpenAI chat messages to Responses input items.

    System, user and assistant text become ``message`` items; an assistant's
    ``tool_calls`` become ``function_call`` items and tool messages
    ``function_call_output`` items, linked by ``call_id``.
    """
    items: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": m.get("tool_call_id", ""),
                    "output": _text(m.get("content")),
                }
            )
            continue
        if role not in ("system", "developer", "user", "assistant"):
            raise ValueError(f"unsupported chat message role {role!r}")
        content = _content(role, m.get("content"))
        if content:
            items.append({"type": "message", "role": role, "content": content})
        for call in m.get("tool_calls") or []:
            fn = call.get("function", {})
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id", ""),
                    "name": fn.get("name", ""),
                    "arguments": fn.get("arguments") or "{}",
                }
            )
    return items


def tool_choice_to_responses(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """Accept a Realtime/Responses or Chat Completions ``tool_choice``; return the Responses one."""
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" not in choice:
        return {"type": "function", "name": choice.get("function", {}).get("name")}
    return choice


@register("llm", "responses-api", extra="openai", requires=["openai"])
class ResponsesLLM(OpenAIEndpoint, LLMHandler):
    """Streams ``client.responses.create(stream=True)`` through the ``openai`` SDK.

    The whole history is sent each turn (``store=False`` by default), so the
    handler stays stateless. Options as for ``chat-completions``; ``model``
    defaults to ``gpt-4.1-mini``. ``reasoning_effort`` is passed as
    ``reasoning={"effort": ...}`` when set.
    """

    api_name = "responses-api"

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
        store: bool = False,
        reasoning_effort: str | None = None,
    ) -> None:
        self.model = model or "gpt-4.1-mini"
        self._endpoint(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.store = store
        self.reasoning_effort = reasoning_effort

    def setup(self) -> None:
        self._connect()

    def _request(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "input": messages_to_input(messages),
            "stream": True,
            "store": self.store,
        }
        if tools:
            body["tools"] = [{"strict": False, **tool_from_chat_format(t)} for t in tools]
            if tool_choice is not None:
                body["tool_choice"] = tool_choice_to_responses(tool_choice)
        temp = self.temperature if temperature is None else temperature
        if temp is not None:
            body["temperature"] = temp
        limit = self.max_tokens if max_tokens is None else max_tokens
        if limit is not None:
            body["max_output_tokens"] = limit
        if self.reasoning_effort:
            body["reasoning"] = {"effort": self.reasoning_effort}
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
        if self._client is None:
            self.setup()
        body = self._request(messages, tools, tool_choice, temperature, max_tokens)
        # Function-call items by item id: call_id and name from output_item.added,
        # arguments from the deltas, all confirmed by output_item.done.
        calls: dict[str, dict[str, str]] = {}
        emitted: set[str] = set()
        with map_openai_errors(self._where()):
            stream = self._client.responses.create(**body)
            try:
                for event in stream:
                    if is_cancelled(cancel):
                        return
                    kind = event.type
                    if kind in ("response.output_text.delta", "response.refusal.delta"):
                        if event.delta:
                            yield TextDelta(event.delta)
                    elif kind in ("response.output_item.added", "response.output_item.done"):
                        item = event.item
                        if item.type != "function_call":
                            continue
                        key = item.id or item.call_id
                        acc = calls.setdefault(key, {"call_id": "", "name": "", "args": ""})
                        acc["call_id"] = item.call_id or acc["call_id"]
                        acc["name"] = item.name or acc["name"]
                        if kind == "response.output_item.done":
                            args = item.arguments or acc["args"] or "{}"
                            emitted.add(key)
                            yield ToolCall(acc["call_id"], acc["name"], args)
                    elif kind == "response.function_call_arguments.delta":
                        calls.setdefault(event.item_id, {"call_id": "", "name": "", "args": ""})[
                            "args"
                        ] += event.delta
                    elif kind == "response.function_call_arguments.done":
                        acc = calls.setdefault(
                            event.item_id, {"call_id": "", "name": "", "args": ""}
                        )
                        acc["args"] = event.arguments
                    elif kind in ("response.completed", "response.incomplete"):
                        response = event.response
                        if kind == "response.incomplete":
                            details = getattr(response, "incomplete_details", None)
                            log.info("response incomplete: %s", getattr(details, "reason", None))
                        # A server that skips output_item.done still gets its calls out.
                        for key, acc in calls.items():
                            if key not in emitted and acc["name"]:
                                emitted.add(key)
                                yield ToolCall(
                                    acc["call_id"] or key, acc["name"], acc["args"] or "{}"
                                )
                        if response.usage is not None:
                            yield Usage(
                                int(response.usage.input_tokens),
                                int(response.usage.output_tokens),
                            )
                        return
                    elif kind == "response.failed":
                        error = getattr(event.response, "error", None)
                        message = getattr(error, "message", None) or "response failed"
                        code = getattr(error, "code", None)
                        raise LLMResponseError(
                            f"{self._where()}: {message}" + (f" ({code})" if code else "")
                        )
                    elif kind == "error":
                        code = getattr(event, "code", None)
                        raise LLMResponseError(
                            f"{self._where()}: {event.message}" + (f" ({code})" if code else "")
                        )
            finally:
                stream.close()
        # Neither completed nor failed: the connection ended mid-answer.
        raise LLMResponseError(
            f"{self._where()}: the stream ended before response.completed "
            "(the server or a proxy cut the connection); the answer is incomplete"
        )
