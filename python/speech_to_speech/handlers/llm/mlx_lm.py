"""LLM with ``mlx-lm`` on Apple silicon."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from speech_to_speech.handlers.base import (
    Cancellation,
    LLMEvent,
    LLMHandler,
    TextDelta,
    Usage,
    is_cancelled,
)
from speech_to_speech.handlers.conversation import tool_to_chat_format
from speech_to_speech.handlers.llm._tool_text import ToolCallSplitter, hf_messages
from speech_to_speech.handlers.registry import register

__all__ = ["MLXLLM"]

log = logging.getLogger(__name__)


@register("llm", "mlx-lm", extra="mlx", requires=["mlx_lm"])
class MLXLLM(LLMHandler):
    """``mlx_lm.load`` + ``mlx_lm.stream_generate`` with the tokenizer's chat template.

    Tool calls as for the ``transformers`` backend (``<tool_call>`` blocks).
    Default model ``mlx-community/Qwen2.5-1.5B-Instruct-4bit``.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        temperature: float | None = 0.0,
        max_tokens: int | None = 256,
    ) -> None:
        self.model_name = model or "mlx-community/Qwen2.5-1.5B-Instruct-4bit"
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._model is None:
                from mlx_lm import load

                log.info("loading %s", self.model_name)
                self._model, self._tokenizer = load(self.model_name)

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
        if self._model is None:
            self.setup()
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        use_tools = bool(tools) and tool_choice != "none"
        prompt = self._tokenizer.apply_chat_template(
            hf_messages(messages),
            tools=[tool_to_chat_format(t) for t in tools or []] if use_tools else None,
            add_generation_prompt=True,
        )
        temp = self.temperature if temperature is None else temperature
        splitter = ToolCallSplitter()
        prompt_tokens = generation_tokens = 0
        with self._lock:
            for response in stream_generate(
                self._model,
                self._tokenizer,
                prompt,
                max_tokens=(self.max_tokens if max_tokens is None else max_tokens) or 256,
                sampler=make_sampler(temp=temp or 0.0),
            ):
                if is_cancelled(cancel):
                    return
                prompt_tokens = int(response.prompt_tokens)
                generation_tokens = int(response.generation_tokens)
                shown = splitter.feed(response.text)
                if shown:
                    yield TextDelta(shown)
        rest, calls = splitter.finish()
        if rest:
            yield TextDelta(rest)
        yield from calls
        yield Usage(prompt_tokens, generation_tokens)
