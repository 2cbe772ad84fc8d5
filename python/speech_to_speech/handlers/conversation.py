"""Building the chat message list an LLM handler receives from a conversation history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "build_chat_messages",
    "tool_choice_to_chat_format",
    "tool_from_chat_format",
    "tool_to_chat_format",
]


def _turn_starts(history: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the user messages, each of which starts a turn."""
    return [i for i, m in enumerate(history) if m.get("role") == "user"]


def build_chat_messages(
    history: Sequence[dict[str, Any]],
    *,
    system_prompt: str | None = None,
    chat_size: int | None = None,
) -> list[dict[str, Any]]:
    """Return ``[system] + the last chat_size turns of history``.

    A turn starts at a user message and runs to the next one, so it keeps an
    assistant message together with its tool calls and the tool outputs that
    answer them (cutting between a ``tool_calls`` message and its ``tool``
    replies makes OpenAI-compatible servers reject the request). Any system
    messages in ``history`` are kept in place if they fall inside the window.
    ``chat_size`` of ``None`` or <= 0 keeps the whole history. Messages are
    shallow-copied; the input is not modified.
    """
    start = 0
    if chat_size is not None and chat_size > 0:
        starts = _turn_starts(history)
        if len(starts) > chat_size:
            start = starts[-chat_size]
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.extend(dict(m) for m in history[start:])
    return messages


def tool_from_chat_format(tool: dict[str, Any]) -> dict[str, Any]:
    """Accept a tool in either the Realtime/Responses shape or the Chat Completions shape.

    Returns the Realtime shape ``{"type": "function", "name", "description", "parameters"}``.
    """
    if "function" in tool and isinstance(tool["function"], dict):
        fn = tool["function"]
        return {
            "type": "function",
            "name": fn["name"],
            "description": fn.get("description", ""),
            "parameters": fn.get("parameters", {"type": "object", "properties": {}}),
        }
    return dict(tool)


def tool_to_chat_format(tool: dict[str, Any]) -> dict[str, Any]:
    """Convert a Realtime-style function tool to the Chat Completions ``tools`` entry."""
    t = tool_from_chat_format(tool)
    function: dict[str, Any] = {
        "name": t["name"],
        "parameters": t.get("parameters") or {"type": "object", "properties": {}},
    }
    if t.get("description"):
        function["description"] = t["description"]
    return {"type": "function", "function": function}


def tool_choice_to_chat_format(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """Convert a Realtime ``tool_choice`` to the Chat Completions form."""
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        name = choice.get("name") or choice.get("function", {}).get("name")
        return {"type": "function", "function": {"name": name}}
    return choice
