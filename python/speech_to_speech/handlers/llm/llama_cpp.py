"""LLM with llama.cpp (llama-cpp-python) on a local GGUF model; the default LLM backend."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np

from speech_to_speech.handlers.base import (
    Cancellation,
    LLMError,
    LLMEvent,
    LLMHandler,
    TextDelta,
    ToolCall,
    Usage,
    is_cancelled,
)
from speech_to_speech.handlers.conversation import tool_from_chat_format, tool_to_chat_format
from speech_to_speech.handlers.registry import register

__all__ = ["LlamaCppLLM", "normalize_messages"]

log = logging.getLogger(__name__)

_DEFAULT_SYSTEM = "You are a helpful assistant."
# Tokens read per step of a prefill; between steps it gives way to a waiting generation.
_PREFILL_STEP = 16
# Stands for the next user message while the prompt prefix is rendered.
_SENTINEL = "\u2063prefill\u2063"
# How a reply begins when the model may also call a function.
_MESSAGE = "message:"
# A reply may not end before this many tokens unless it has words by then.
_EMPTY_REPLY_TOKENS = 8


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rewrite OpenAI chat messages into plain system/user/assistant text messages.

    Small chat templates know no tool roles, so an assistant's tool calls are
    written out as ``functions.<name>:\\n<arguments>`` (the format the
    function-calling prompt asks for) and a tool output becomes a user message
    ``Result of <name>: <output>``. A system message is added when missing.
    """
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        text = _text(m.get("content"))
        if role == "tool":
            name = names.get(str(m.get("tool_call_id")), "the function")
            out.append({"role": "user", "content": f"Result of {name}: {text}"})
            continue
        if role == "developer":
            role = "system"
        calls = m.get("tool_calls") or []
        lines = [text] if text else []
        for call in calls:
            fn = call.get("function", {})
            names[str(call.get("id"))] = fn.get("name", "")
            lines.append(f"functions.{fn.get('name', '')}:\n{fn.get('arguments') or '{}'}")
        out.append({"role": role, "content": "\n".join(lines)})
    if not out or out[0]["role"] != "system":
        out.insert(0, {"role": "system", "content": _DEFAULT_SYSTEM})
    return out


def _marked(chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``chat`` with each assistant reply written as the model writes one with tools on
    (``message: ...``), so the history a turn reads is what the last turn generated.
    """
    return [
        {**m, "content": f"{_MESSAGE} {m['content']}"}
        if m["role"] == "assistant" and not m["content"].startswith(("functions.", _MESSAGE))
        else m
        for m in chat
    ]


def _decision_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The conversation with the tool list and answer format appended to the system message."""
    lines = ["", "You have access to the following functions:"]
    for t in tools:
        lines.append(f"functions.{t['name']}: {t.get('description', '')}")
        lines.append(json.dumps(t.get("parameters") or {}))
    lines += [
        "",
        f"To answer the user with a message, begin with '{_MESSAGE}'.",
        "To call a function, begin with 'functions.<function_name>:'.",
    ]
    out = [dict(m) for m in messages]
    out[0]["content"] = out[0]["content"] + "\n".join(lines)
    return out


@register("llm", "llama-cpp", extra="llama-cpp", requires=["llama_cpp"])
class LlamaCppLLM(LLMHandler):
    """A GGUF model through ``llama_cpp.Llama``; defaults to the bundled SmolLM2-135M-Instruct.

    Text streams from ``create_chat_completion(stream=True)`` with the
    model's own chat template. With tools, the function list goes into the
    system message and the reply begins with ``message:`` or
    ``functions.<name>:``:

    * ``tool_choice={"type": "function", "name": ...}`` always yields that call,
      its arguments generated under a grammar from the tool's JSON schema
      (reliable, whatever the model);
    * ``"auto"`` (or ``None`` with tools) first lets the model pick between
      ``message:`` and ``functions.<name>:``, then either streams a message or
      generates the arguments; ``"required"`` removes the message option. The
      pick is read from the logits at the prompt's end, token by token along
      each option's own tokens while more than one is left (one decode for
      one tool), rather than sampled under a grammar one token at a time. How
      well it picks depends on the model: SmolLM2-135M picks poorly.
    * the pick, the message and the arguments all extend one prompt, and the
      history is written the way the model wrote it (``message: ...``), so
      llama.cpp's cache keeps the conversation from one turn to the next and
      a tool-bearing turn reads only what is new, like a plain one (it used
      to read the whole prompt twice a turn: 3-4.5 s to the first token by
      the fifth turn against 0.15 s without tools);
    * one call per turn at most; tool outputs in the history are shown to the
      model as user messages (see :func:`normalize_messages`).

    A GGUF run with another ``chat_format`` or chat handler than its own
    template uses llama-cpp-python's ``chatml-function-calling`` for tools.

    Before the model loads, a child process decodes a 64-token prompt with the
    same library (``preflight=True``, see :mod:`._llama_preflight`): a build
    for another CPU then stops start-up with one line instead of killing the
    server at the first answer. The verdict is cached per library build.

    One ``Llama`` context serves one generation at a time: calls from several
    threads are serialised by a lock. ``n_threads`` (generation) and
    ``n_threads_batch`` (prompt) default to half the cores; ``n_threads_batch``
    follows ``n_threads`` when only that is given.

    :meth:`prefill` reads the conversation so far into llama.cpp's KV cache
    while the user speaks (the engine calls it at the start of speech);
    ``generate`` then reuses that cached prefix, so the answer only has the
    new user message to read. Reading the prompt costs about 5 ms a token on
    one core of the 2-core CI machine: a three-message history is 300 ms that
    prefill takes off the answer's path. It only runs when the model is idle,
    reads in steps of 16 tokens, and stops as soon as a generation waits.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_gpu_layers: int = 0,
        chat_format: str | None = None,
        temperature: float | None = 0.7,
        max_tokens: int | None = 256,
        seed: int | None = None,
        warmup: bool = True,
        verbose: bool = False,
        preflight: bool = True,
    ) -> None:
        self.model_path = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_threads_batch = n_threads_batch
        self.n_gpu_layers = n_gpu_layers
        self.chat_format = chat_format
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.warmup = warmup
        self.verbose = verbose
        self.preflight = preflight
        self._llm: Any = None
        self._by_piece: dict[bytes, list[int]] | None = None
        self._lock = threading.Lock()
        # Generations waiting for the lock; a prefill gives way to them.
        self._waiting = 0
        self._count_lock = threading.Lock()
        self._formatter: Any = None

    def setup(self) -> None:
        with self._lock:
            if self._llm is not None:
                return
            from llama_cpp import Llama

            from speech_to_speech.models import smollm2_gguf

            path = self.model_path or str(smollm2_gguf())
            if self.preflight:
                # A llama.cpp built for another CPU dies on its first long prompt;
                # find out in a child process, not in the server (cached per build).
                from speech_to_speech.handlers.llm import _llama_preflight

                _llama_preflight.check(path)
            log.info("loading GGUF model %s (n_ctx=%d)", path, self.n_ctx)
            kwargs: dict[str, Any] = {
                "model_path": path,
                "n_ctx": self.n_ctx,
                "n_gpu_layers": self.n_gpu_layers,
                "verbose": self.verbose,
            }
            # llama.cpp's threads spin while they wait, so using every core for the
            # prompt (its default) collapses when STT/TTS or anything else runs: on a
            # busy 2-core machine, first tokens took 0.6-3.7 s with 1+2 threads and
            # 0.16-0.3 s with 1+1. Both default to half the cores.
            threads = self.n_threads or max((os.cpu_count() or 2) // 2, 1)
            kwargs["n_threads"] = threads
            kwargs["n_threads_batch"] = self.n_threads_batch or threads
            if self.chat_format:
                kwargs["chat_format"] = self.chat_format
            if self.seed is not None:
                kwargs["seed"] = self.seed
            self._llm = Llama(**kwargs)
        if self.warmup:
            for _ in self.generate([{"role": "user", "content": "Hi"}], max_tokens=1):
                pass
            # The vocabulary by text for the tool pick (about 0.3 s), not on a first turn.
            self._pieces()

    def _sampling(self, temperature: float | None, max_tokens: int | None) -> dict[str, Any]:
        temp = self.temperature if temperature is None else temperature
        limit = self.max_tokens if max_tokens is None else max_tokens
        out: dict[str, Any] = {"max_tokens": limit}
        if temp is not None:
            out["temperature"] = temp
        return out

    def _grammar(self, rule: str) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        return LlamaGrammar.from_string(rule, verbose=False)

    def _choose(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], required: bool
    ) -> str | None:
        """Let the model pick a function name, or None for a message, under a grammar
        (the ``chatml-function-calling`` path, for chat formats other than the GGUF's own).
        """
        options = [f'"functions.{t["name"]}:"' for t in tools]
        if not required:
            options.insert(0, f'"{_MESSAGE}"')
        result = self._llm.create_chat_completion(
            messages=_decision_messages(messages, tools),
            grammar=self._grammar("root ::= " + " | ".join(options)),
            temperature=0.0,
            max_tokens=32,
        )
        text = str(result["choices"][0]["message"]["content"] or "").strip()
        for t in tools:
            if text.startswith(f"functions.{t['name']}:"):
                return str(t["name"])
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
        if self._llm is None:
            self.setup()
        chat = normalize_messages(messages)
        sampling = self._sampling(temperature, max_tokens)
        realtime_tools = [tool_from_chat_format(t) for t in tools or []]
        function: str | None = None
        if realtime_tools and isinstance(tool_choice, dict):
            function = tool_choice.get("name") or tool_choice.get("function", {}).get("name")
            if function not in {t["name"] for t in realtime_tools}:
                raise ValueError(f"tool_choice names an unknown tool {function!r}")
        use_tools = bool(realtime_tools) and tool_choice != "none"
        with self._exclusive():
            if is_cancelled(cancel):
                return
            try:
                if use_tools and self._template() is not None:
                    yield from self._generate_with_tools(
                        chat=chat,
                        tools=realtime_tools,
                        function=function,
                        required=tool_choice == "required",
                        sampling=sampling,
                        cancel=cancel,
                    )
                    return
                if use_tools and function is None:
                    function = self._choose(
                        chat, realtime_tools, required=tool_choice == "required"
                    )
                if function is not None:
                    from llama_cpp import llama_chat_format

                    stream = llama_chat_format.chatml_function_calling(
                        llama=self._llm,
                        messages=chat,
                        tools=[tool_to_chat_format(t) for t in realtime_tools],
                        tool_choice={"type": "function", "function": {"name": function}},
                        stream=True,
                        **sampling,
                    )
                else:
                    stream = self._llm.create_chat_completion(
                        messages=chat, stream=True, **sampling
                    )
                yield from self._consume(stream, cancel)
            except ValueError as e:
                # llama-cpp-python reports a prompt longer than n_ctx this way.
                raise LLMError(f"llama-cpp: {e}") from e

    def _generate_with_tools(
        self,
        *,
        chat: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        function: str | None,
        required: bool,
        sampling: dict[str, Any],
        cancel: Cancellation | None,
    ) -> Iterator[LLMEvent]:
        """A message or one function call, every step extending the one tool prompt."""
        llm = self._llm
        prompt, stop = self._render(_decision_messages(_marked(chat), tools))
        if function is None:
            options = {f"functions.{t['name']}:": t["name"] for t in tools}
            if not required:
                options = {_MESSAGE: None, **options}
            function = options[self._pick(prompt, list(options))]
        if is_cancelled(cancel):
            return
        if function is None:
            prompt = prompt + self._tokens(_MESSAGE)
            stream = llm.create_completion(
                prompt=prompt,
                stream=True,
                stop=stop,
                logits_processor=self._no_empty_reply(len(prompt)),
                **sampling,
            )
            yield from self._consume_text(stream, cancel, len(prompt))
            return
        tool = next(t for t in tools if t["name"] == function)
        prompt = prompt + self._tokens(f"functions.{function}:\n")
        from llama_cpp.llama_grammar import LlamaGrammar

        schema = json.dumps(tool.get("parameters") or {"type": "object"})
        # Streamed, so that a cancelled response stops between tokens: under the
        # grammar a token costs ~1.5x a free one (31 against 20 ms on one core of
        # the CI machine), and arguments that ramble run to max_tokens.
        stream = llm.create_completion(
            prompt=prompt,
            grammar=LlamaGrammar.from_json_schema(schema, verbose=False),
            stream=True,
            **sampling,
        )
        parts: list[str] = []
        try:
            for chunk in stream:
                if is_cancelled(cancel):
                    return
                parts.append(str(chunk["choices"][0].get("text") or ""))
        finally:
            stream.close()
        text = "".join(parts).strip()
        if text:
            try:
                json.loads(text)
            except ValueError:
                # The grammar only lets the JSON end: it was cut off at max_tokens
                # (a small model can ramble inside a string until then).
                raise LLMError(
                    f"llama-cpp: the arguments of {function} did not end within "
                    f"max_tokens={sampling['max_tokens']}; raise the response's token "
                    "limit or use a larger model"
                ) from None
        yield ToolCall(f"call_{uuid.uuid4().hex[:24]}", function, text or "{}")
        yield Usage(len(prompt), len(self._tokens(text)) if text else 0)

    def _pick(self, prompt: list[int], options: list[str]) -> str:
        """The option the model ranks first after ``prompt``, read from the logits.

        The same greedy walk as sampling at temperature 0 under a grammar of the
        options: at each step the highest-scoring token whose text starts what is
        left of some option wins, and the options it does not fit drop out. Only a
        step that leaves several options needs the next logits: one decode in all
        when the first token settles it, instead of one per token of the chosen
        option under the grammar.
        """
        pieces = self._pieces()
        left = {o: o.encode("utf-8") for o in options}
        taken: list[int] = []
        while len(left) > 1:
            scores = self._next_scores(prompt + taken)
            best: tuple[float, int, bytes] | None = None
            for rest in left.values():
                for n in range(1, len(rest) + 1):
                    for token in pieces.get(rest[:n], ()):
                        if best is None or float(scores[token]) > best[0]:
                            best = (float(scores[token]), token, rest[:n])
            if best is None:  # no token spells any option: cannot happen with a byte vocabulary
                break
            taken.append(best[1])
            piece = best[2]
            left = {o: rest[len(piece) :] for o, rest in left.items() if rest.startswith(piece)}
        return next(iter(left))

    def _pieces(self) -> dict[bytes, list[int]]:
        """The vocabulary by text (each token's bytes), built once."""
        if self._by_piece is None:
            llm = self._llm
            index: dict[bytes, list[int]] = {}
            for token in range(llm.n_vocab()):
                piece = bytes(llm.detokenize([token]))
                if piece:
                    index.setdefault(piece, []).append(token)
            self._by_piece = index
        return self._by_piece

    def _next_scores(self, prompt: list[int]) -> Any:
        """The logits of the token after ``prompt`` (read through llama.cpp's cache)."""
        from llama_cpp import LogitsProcessorList

        seen: list[Any] = []

        def grab(input_ids: Any, scores: Any) -> Any:
            if not seen:
                seen.append(np.array(scores, dtype=np.float32, copy=True))
            return scores

        self._llm.create_completion(
            prompt=prompt,
            max_tokens=1,
            temperature=0.0,
            logits_processor=LogitsProcessorList([grab]),
        )
        return seen[0]

    def _no_empty_reply(self, start: int) -> Any:
        """A logits processor that keeps the end of turn from ending a reply that has no
        words yet (the first tokens after ``start``).

        Right after ``message:`` SmolLM2-135M often ends its turn at once: 9 of 20
        sampled replies to five questions without history were empty, 1 of 12 with a
        greeting before them, so a session with tools declared answered with silence.
        """
        from llama_cpp import LogitsProcessorList

        llm = self._llm
        end = llm.token_eos()

        def processor(input_ids: Any, scores: Any) -> Any:
            generated = [int(t) for t in input_ids[start:]]
            if (
                len(generated) < _EMPTY_REPLY_TOKENS
                and not bytes(llm.detokenize(generated)).strip()
            ):
                scores[end] = -float("inf")
            return scores

        return LogitsProcessorList([processor])

    def _tokens(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _render(self, chat: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
        """``chat`` in the GGUF's template up to the assistant's turn: tokens, stop strings."""
        result = self._template()(messages=chat)
        tokens = self._llm.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        stop = (
            result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        )
        return list(tokens), stop

    def prefill(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        cancel: Cancellation | None = None,
    ) -> None:
        if self._llm is None:
            return
        chat = normalize_messages(messages)
        if tools:
            # The prompt of a tool-bearing turn (see _generate_with_tools).
            chat = _decision_messages(_marked(chat), [tool_from_chat_format(t) for t in tools])
        prefix = self._prompt_prefix(chat)
        if prefix is None:
            return
        # Only an idle model: a running or waiting generation would evict the prefix.
        if self._waiting or not self._lock.acquire(blocking=False):
            return
        try:
            llm = self._llm
            text, add_bos = prefix
            tokens = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
            cached = llm._input_ids
            same = 0
            for a, b in zip(cached, tokens, strict=False):
                if a != b:
                    break
                same += 1
            if same == len(tokens):
                return
            # eval() drops whatever the cache holds past n_tokens.
            llm.n_tokens = same
            for i in range(same, len(tokens), _PREFILL_STEP):
                if is_cancelled(cancel) or self._waiting:
                    break
                llm.eval(tokens[i : i + _PREFILL_STEP])
            # The logits are those of the prefix: the next generate must decode.
            llm._requires_eval = True
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the model, counted as waiting (so a prefill gives way) until it is ours."""
        with self._count_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._count_lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._lock.release()

    def _template(self) -> Any:
        """The GGUF's own chat template as a formatter; None when the model runs with
        another chat format or handler.
        """
        llm = self._llm
        if llm.chat_handler is not None or llm.chat_format != "chat_template.default":
            return None
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            def token_text(token: int) -> str:
                if token == -1:
                    return ""
                return bytes(llm.detokenize([token], special=True)).decode("utf-8", "replace")

            self._formatter = Jinja2ChatFormatter(
                template=llm.metadata["tokenizer.chat_template"],
                eos_token=token_text(llm.token_eos()),
                bos_token=token_text(llm.token_bos()),
                stop_token_ids=[llm.token_eos()],
            )
        return self._formatter

    def _prompt_prefix(self, chat: list[dict[str, Any]]) -> tuple[str, bool] | None:
        """The prompt text ``chat`` plus a next user message starts with, and whether
        it takes a BOS token; None when the chat format is not the GGUF's own template.
        """
        formatter = self._template()
        if formatter is None:
            return None
        result = formatter(messages=[*chat, {"role": "user", "content": _SENTINEL}])
        cut = result.prompt.find(_SENTINEL)
        if cut <= 0:
            return None
        return result.prompt[:cut], not result.added_special

    def _consume_text(
        self, stream: Iterator[Any], cancel: Cancellation | None, prompt_tokens: int
    ) -> Iterator[LLMEvent]:
        """Text from ``create_completion(stream=True)`` chunks, the first one's leading space
        (after ``message:``) dropped.
        """
        generated = 0
        started = False
        try:
            for chunk in stream:
                if is_cancelled(cancel):
                    return
                generated += 1
                text = str(chunk["choices"][0].get("text") or "")
                if not started:
                    text = text.lstrip()
                    started = bool(text)
                if text:
                    yield TextDelta(text)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        yield Usage(prompt_tokens, generated)

    def _consume(self, stream: Iterator[Any], cancel: Cancellation | None) -> Iterator[LLMEvent]:
        """Turn llama-cpp-python's OpenAI-shaped chunk dicts into handler events."""
        calls: dict[int, dict[str, str]] = {}
        generated: list[str] = []
        try:
            for chunk in stream:
                if is_cancelled(cancel):
                    return
                for choice in chunk.get("choices", []):
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        generated.append(content)
                        yield TextDelta(content)
                    for tc in delta.get("tool_calls") or []:
                        acc = calls.setdefault(tc.get("index", 0), {"id": "", "name": "", "a": ""})
                        acc["id"] = acc["id"] or tc.get("id") or ""
                        fn = tc.get("function") or {}
                        acc["name"] = acc["name"] or fn.get("name") or ""
                        acc["a"] += fn.get("arguments") or ""
                        generated.append(fn.get("arguments") or "")
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        for index in sorted(calls):
            acc = calls[index]
            yield ToolCall(acc["id"] or f"call_{index}", acc["name"], acc["a"].strip() or "{}")
        text = "".join(generated)
        output_tokens = len(self._llm.tokenize(text.encode(), add_bos=False)) if text else 0
        # The context holds the prompt plus what was generated.
        yield Usage(max(int(self._llm.n_tokens) - output_tokens, 0), output_tokens)
