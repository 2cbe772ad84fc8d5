"""Tool calls written in the text stream (``<tool_call>{json}</tool_call>``, Hermes/Qwen style).

Local chat templates (Qwen, Hermes, SmolLM3, ...) have the model write its
function calls as JSON between tags. :class:`ToolCallSplitter` lets the text
around them stream while holding back anything that may be the start of a tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

from speech_to_speech.handlers.base import ToolCall

__all__ = ["ToolCallSplitter", "hf_messages"]

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ToolCallSplitter:
    """Splits streamed model text into plain text and ``<tool_call>`` blocks."""

    def __init__(self) -> None:
        self._buffer = ""
        self._in_call = False
        self._calls: list[ToolCall] = []

    def feed(self, text: str) -> str:
        """Add generated text; return the text that can be shown now."""
        self._buffer += text
        shown: list[str] = []
        while True:
            if self._in_call:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    break
                self._add_call(self._buffer[:end])
                self._buffer = self._buffer[end + len(CLOSE) :]
                self._in_call = False
            else:
                start = self._buffer.find(OPEN)
                if start < 0:
                    keep = _partial_suffix(self._buffer, OPEN)
                    shown.append(self._buffer[: len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    break
                shown.append(self._buffer[:start])
                self._buffer = self._buffer[start + len(OPEN) :]
                self._in_call = True
        return "".join(shown)

    def finish(self) -> tuple[str, list[ToolCall]]:
        """End of generation: the held-back text and every complete call seen."""
        rest = ""
        if self._in_call:
            # An unclosed call (token budget ran out): keep it if its JSON is whole.
            self._add_call(self._buffer)
        else:
            rest = self._buffer
        self._buffer = ""
        return rest, self._calls

    def _add_call(self, body: str) -> None:
        try:
            data = json.loads(body.strip())
        except ValueError:
            return
        if not isinstance(data, dict) or "name" not in data:
            return
        args = data.get("arguments", data.get("parameters", {}))
        arguments = args if isinstance(args, str) else json.dumps(args)
        digest = hashlib.sha1(f"{len(self._calls)}:{body}".encode()).hexdigest()[:16]
        self._calls.append(ToolCall(f"call_{digest}", str(data["name"]), arguments))


def hf_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages in the shape Hugging Face chat templates expect.

    Templates index tool-call arguments as a mapping, so the JSON strings are parsed.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        m = dict(message)
        if m.get("content") is None:
            m["content"] = ""
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = dict(call.get("function", {}))
                with contextlib.suppress(ValueError):
                    fn["arguments"] = json.loads(fn.get("arguments") or "{}")
                calls.append({**call, "type": "function", "function": fn})
            m["tool_calls"] = calls
        out.append(m)
    return out
