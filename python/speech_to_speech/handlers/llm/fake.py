"""Deterministic fake language model with scripted replies and tool calls, for protocol tests."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from speech_to_speech.handlers.base import (
    Cancellation,
    LLMEvent,
    LLMHandler,
    TextDelta,
    ToolCall,
    Usage,
    is_cancelled,
)
from speech_to_speech.handlers.conversation import tool_from_chat_format
from speech_to_speech.handlers.registry import register

__all__ = ["FakeLLM", "message_text"]

_STOP_WORDS = {"get", "set", "fetch", "find", "lookup", "current", "the"}


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of text parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p)


def _keywords(tool_name: str) -> list[str]:
    return [w for w in re.split(r"[_\W]+", tool_name.lower()) if w and w not in _STOP_WORDS]


def _arguments(tool: dict[str, Any], user_text: str) -> str:
    """Fill the tool's string parameters from the user text ("... in Paris?" -> "Paris")."""
    match = re.search(r"\b(?:in|for|about)\s+([^?.!,]+)", user_text, re.IGNORECASE)
    value = match.group(1).strip() if match else user_text.strip()
    props = (tool.get("parameters") or {}).get("properties") or {}
    args = {k: value for k, spec in props.items() if spec.get("type", "string") == "string"}
    return json.dumps(args)


@register("llm", "fake", description="Scripted replies and keyword-triggered tool calls (tests)")
class FakeLLM(LLMHandler):
    """A deterministic stand-in for an LLM.

    Rules, in order:

    * after a ``tool`` message: reply ``"The result is <tool output>."``;
    * when tools are given and ``tool_choice`` is not ``"none"``: call a tool
      forced by ``tool_choice``, else the first tool one of whose name words
      (``get_weather`` -> ``weather``) occurs in the last user message, else
      the first tool when ``tool_choice`` is ``"required"``. String parameters
      get the words after "in"/"for"/"about" in the user message;
    * otherwise the next reply of ``script`` (cycling per call), or, with no
      script, ``"You said: <last user message>"``.

    Text is streamed word by word (``"Hello"``, ``" world"``), truncated to
    ``max_tokens`` words, followed by a :class:`Usage` counting words.
    ``latency_ms`` is slept before each delta.
    """

    def __init__(
        self,
        *,
        script: Sequence[str] | None = None,
        latency_ms: float = 0.0,
        max_tokens: int = 256,
    ) -> None:
        self.script = list(script) if script else None
        self.latency_ms = latency_ms
        self.max_tokens = max_tokens
        self._next = itertools.cycle(self.script) if self.script else None
        self._lock = threading.Lock()

    def _pick_tool(
        self,
        tools: list[dict[str, Any]],
        tool_choice: str | dict[str, Any] | None,
        user_text: str,
    ) -> dict[str, Any] | None:
        if tool_choice == "none" or not tools:
            return None
        by_name = {t["name"]: t for t in (tool_from_chat_format(t) for t in tools)}
        if isinstance(tool_choice, dict):
            forced = tool_choice.get("name") or tool_choice.get("function", {}).get("name")
            if forced in by_name:
                return by_name[forced]
        lowered = user_text.lower()
        for tool in by_name.values():
            if any(re.search(rf"\b{re.escape(k)}", lowered) for k in _keywords(tool["name"])):
                return tool
        if tool_choice == "required":
            return next(iter(by_name.values()))
        return None

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
        input_tokens = sum(len(message_text(m).split()) for m in messages)
        last = messages[-1] if messages else {}
        user_text = next(
            (message_text(m) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        if last.get("role") != "tool":
            tool = self._pick_tool(tools or [], tool_choice, user_text)
            if tool is not None:
                if self.latency_ms:
                    time.sleep(self.latency_ms / 1000)
                if is_cancelled(cancel):
                    return
                arguments = _arguments(tool, user_text)
                digest = hashlib.sha1(
                    f"{len(messages)}:{tool['name']}:{arguments}".encode()
                ).hexdigest()
                yield ToolCall(f"call_{digest[:16]}", tool["name"], arguments)
                yield Usage(input_tokens, len(arguments.split()))
                return
            if self._next is not None:
                with self._lock:
                    reply = next(self._next)
            else:
                reply = f"You said: {user_text}"
        else:
            reply = f"The result is {message_text(last).strip()}."
        limit = max_tokens if max_tokens is not None else self.max_tokens
        words = reply.split()[: max(limit, 0)]
        for i, word in enumerate(words):
            if self.latency_ms:
                time.sleep(self.latency_ms / 1000)
            if is_cancelled(cancel):
                return
            yield TextDelta(word if i == 0 else " " + word)
        yield Usage(input_tokens, len(words))
