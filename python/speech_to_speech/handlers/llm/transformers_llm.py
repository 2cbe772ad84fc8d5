"""LLM with Hugging Face transformers (PyTorch), streamed through ``TextIteratorStreamer``."""

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

__all__ = ["TransformersLLM"]

log = logging.getLogger(__name__)


@register("llm", "transformers", extra="transformers", requires=["transformers", "torch"])
class TransformersLLM(LLMHandler):
    """A causal LM from ``AutoModelForCausalLM`` with its tokenizer's chat template.

    Tools are handed to ``apply_chat_template(tools=...)``; calls the model
    writes as ``<tool_call>{"name", "arguments"}</tool_call>`` (Qwen, Hermes,
    SmolLM3 templates) become :class:`ToolCall` events. ``tool_choice`` is
    not enforced (the prompt decides). Default model
    ``HuggingFaceTB/SmolLM2-1.7B-Instruct``.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        temperature: float | None = 0.0,
        max_tokens: int | None = 256,
    ) -> None:
        self.model_name = model or "HuggingFaceTB/SmolLM2-1.7B-Instruct"
        self.device = device
        self.dtype = dtype
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            log.info("loading %s on %s", self.model_name, self.device)
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
            self._model = AutoModelForCausalLM.from_pretrained(
                self.model_name, torch_dtype=dtype
            ).to(self.device)
            self._model.eval()

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
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        class _Cancelled(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return is_cancelled(cancel)

        use_tools = bool(tools) and tool_choice != "none"
        inputs = self._tokenizer.apply_chat_template(
            hf_messages(messages),
            tools=[tool_to_chat_format(t) for t in tools or []] if use_tools else None,
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        ).to(self._model.device)
        temp = self.temperature if temperature is None else temperature
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        gen_kwargs: dict[str, Any] = {
            **inputs,
            "streamer": streamer,
            "max_new_tokens": (self.max_tokens if max_tokens is None else max_tokens) or 256,
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
            "do_sample": bool(temp),
        }
        if temp:
            gen_kwargs["temperature"] = temp
        outputs: dict[str, Any] = {}

        def run() -> None:
            outputs["ids"] = self._model.generate(**gen_kwargs)

        prompt_tokens = int(inputs["input_ids"].shape[-1])
        splitter = ToolCallSplitter()
        with self._lock:
            worker = threading.Thread(target=run, name="transformers-generate", daemon=True)
            worker.start()
            try:
                for piece in streamer:
                    if is_cancelled(cancel):
                        return
                    shown = splitter.feed(piece)
                    if shown:
                        yield TextDelta(shown)
            finally:
                worker.join()
        rest, calls = splitter.finish()
        if rest:
            yield TextDelta(rest)
        yield from calls
        ids = outputs.get("ids")
        generated = int(ids.shape[-1]) - prompt_tokens if ids is not None else 0
        yield Usage(prompt_tokens, generated)
