"""qwen3 and chatTTS: their weights exist only on model hubs, so here their library's model
class is replaced by a recorder and everything up to the download is tested: what the handler
asks the library for, how it streams, cancels and fails. The real model runs are skipped with
the missing piece named."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
from speech_checks import backend_library

from speech_to_speech.handlers import create_handler


class FakeQwen3TTSModel:
    """What ``qwen_tts.Qwen3TTSModel`` offers the handler, recording the calls."""

    loaded: ClassVar[list[dict[str, Any]]] = []

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @classmethod
    def from_pretrained(cls, name: str, **kwargs: Any) -> FakeQwen3TTSModel:
        cls.loaded.append({"name": name, **kwargs})
        return cls()

    def generate_custom_voice(self, **kwargs: Any) -> tuple[list[np.ndarray], int]:
        self.calls.append(kwargs)
        return [np.full(2400, 0.25, dtype=np.float32)], 24_000


@pytest.fixture
def qwen_tts(monkeypatch: pytest.MonkeyPatch) -> type[FakeQwen3TTSModel]:
    backend_library("torch")
    module = types.ModuleType("qwen_tts")
    module.Qwen3TTSModel = FakeQwen3TTSModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "qwen_tts", module)
    monkeypatch.setattr(
        importlib.util, "find_spec", _with_module("qwen_tts", importlib.util.find_spec)
    )
    FakeQwen3TTSModel.loaded = []
    return FakeQwen3TTSModel


def _with_module(name: str, real: Any) -> Any:
    def find_spec(module: str, package: str | None = None) -> Any:
        if module == name:
            return importlib.machinery.ModuleSpec(name, None)
        return real(module, package)

    return find_spec


def test_qwen3_maps_arguments_and_speed(qwen_tts: type[FakeQwen3TTSModel]) -> None:
    import torch

    tts = create_handler("tts", "qwen3", voice="Vivian", language="Chinese", device="cuda:0")
    tts.setup()
    assert qwen_tts.loaded == [
        {
            "name": "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice",
            "device_map": "cuda:0",
            "dtype": torch.float32,
        }
    ]
    chunks = list(tts.synthesize("你好。"))
    assert len(chunks) == 1 and chunks[0].sample_rate == 24_000 and tts.sample_rate == 24_000
    model: Any = getattr(tts, "_model")  # noqa: B009
    assert model.calls[-1] == {"text": "你好。", "language": "Chinese", "speaker": "Vivian"}
    # No speed parameter in Qwen3-TTS: a pace instruction instead; a per-call voice wins.
    list(tts.synthesize("Hi.", voice="Ryan", speed=1.5))
    assert model.calls[-1]["speaker"] == "Ryan"
    assert model.calls[-1]["instruct"] == "Speak faster than usual."
    cancel = threading.Event()
    cancel.set()
    assert list(tts.synthesize("Hi.", cancel=cancel)) == []
    assert list(tts.synthesize("  ")) == []


def test_qwen3_real_model() -> None:
    pytest.skip(
        "not run here: Qwen3-TTS weights (Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice) come only from "
        "the Hugging Face hub, and qwen-tts 0.1.1 pins transformers==4.57.3, older than the "
        "transformers 5 that mlx-lm and mlx-audio need in this tier"
    )


@pytest.fixture
def chattts(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The real ``ChatTTS`` package, with ``Chat``'s hub loading and inference recorded."""
    backend_library("torch")
    ChatTTS = backend_library("ChatTTS")
    record: dict[str, Any] = {"infer": []}

    def load(self: Any, **kwargs: Any) -> bool:
        record["load"] = kwargs
        return record.get("load_ok", True)

    def sample_random_speaker(self: Any) -> str:
        return "speaker-from-seed"

    def infer(self: Any, text: list[str], **kwargs: Any) -> Iterator[list[np.ndarray]]:
        record["infer"].append({"text": text, **kwargs})
        for _ in range(3):
            yield [np.full(1200, 0.1, dtype=np.float32)]
        yield [np.zeros(0, dtype=np.float32)]

    monkeypatch.setattr(ChatTTS.Chat, "load", load)
    monkeypatch.setattr(ChatTTS.Chat, "sample_random_speaker", sample_random_speaker)
    monkeypatch.setattr(ChatTTS.Chat, "infer", infer)
    return record


def test_chattts_streams_with_the_real_inference_parameters(chattts: Any) -> None:
    tts = create_handler("tts", "chatTTS", speed=1.2)
    tts.setup()
    assert chattts["load"] == {"compile": False}
    chunks = list(tts.synthesize("Hello there."))
    assert [len(c.samples) for c in chunks] == [1200, 1200, 1200]  # streamed, empty tail dropped
    assert all(c.sample_rate == 24_000 for c in chunks)
    call = chattts["infer"][-1]
    assert call["text"] == ["Hello there."] and call["stream"] is True
    params = call["params_infer_code"]
    # The library's own parameter class, filled in by the handler.
    assert dataclasses.is_dataclass(params)
    assert params.spk_emb == "speaker-from-seed" and params.prompt == "[speed_6]"
    list(tts.synthesize("Hi.", voice="another-speaker", speed=2.0))
    params = chattts["infer"][-1]["params_infer_code"]
    assert params.spk_emb == "another-speaker" and params.prompt == "[speed_9]"
    cancel = threading.Event()
    out = []
    for chunk in tts.synthesize("Hello there.", cancel=cancel):
        out.append(chunk)
        cancel.set()
    assert len(out) == 1


def test_chattts_load_failure_is_an_error(chattts: Any) -> None:
    chattts["load_ok"] = False
    tts = create_handler("tts", "chatTTS")
    with pytest.raises(RuntimeError, match="ChatTTS failed to load"):
        tts.setup()


def test_chattts_real_model() -> None:
    pytest.skip(
        "not run here: ChatTTS downloads its weights (2Noise/ChatTTS) from the Hugging Face "
        "hub in Chat.load(); no package ships them"
    )
