"""--stt openai and --tts openai against real OpenAI-compatible servers installed from PyPI:
faster-whisper-server (on the bundled Whisper tiny.en) and local-tts-studio (on the bundled Piper
voice), each started here on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import hear
from speech_checks import (
    AUDIO,
    REFERENCES,
    backend_library,
    corpus_wer,
    free_port,
    read_wav,
    serve,
    wer,
)

from speech_to_speech.handlers import LLMConnectionError, STTHandler, create_handler
from speech_to_speech.models import piper_joe_voice, whisper_tiny_en_dir


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        backend_library(name.replace("-", "_"))  # skips, or fails in the backends tier
    return str(path)


@pytest.fixture(scope="module")
def whisper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    command = _tool("faster-whisper-server")
    port = free_port()
    log = tmp_path_factory.mktemp("fws") / "server.log"
    args = [command, str(whisper_tiny_en_dir()), "--host", "127.0.0.1", "--port", str(port)]
    with serve(args, f"http://127.0.0.1:{port}/health", log):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="module")
def piper_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    command = _tool("local-tts")
    data = tmp_path_factory.mktemp("local-tts")
    voices = data / "voices"
    voices.mkdir()
    model, config = piper_joe_voice()
    shutil.copy(model, voices / model.name)
    shutil.copy(config, voices / config.name)
    settings = {"voices_dir": str(voices), "api_default_voice": model.stem, "device": "cpu"}
    (data / "settings.json").write_text(json.dumps(settings))
    port = free_port()
    env = {**os.environ, "LOCAL_TTS_DATA_DIR": str(data)}
    args = [command, "--host", "127.0.0.1", "--port", str(port)]
    with serve(args, f"http://127.0.0.1:{port}/v1/models", data / "server.log", env=env):
        yield f"http://127.0.0.1:{port}/v1"


def test_openai_stt_transcribes_through_a_whisper_server(whisper_server: str) -> None:
    # The server loads the model on its first request: give that one time on a busy machine.
    stt = create_handler("stt", "openai", base_url=whisper_server, timeout=180)
    stt.setup()
    pairs = []
    for name, reference in REFERENCES.items():
        finals = list(stt.transcribe(read_wav(AUDIO / name)))
        assert len(finals) == 1 and finals[0].final and finals[0].language == "en"
        pairs.append((reference, finals[0].text))
    print(f"\nopenai STT via faster-whisper-server: WER {corpus_wer(pairs):.3f}: {pairs}")
    assert corpus_wer(pairs) <= 0.2
    # A prompt is passed on, cancel drops the result, empty audio needs no request.
    out = list(stt.transcribe(read_wav(AUDIO / "q_book.wav"), prompt="Books and reading."))
    assert wer(REFERENCES["q_book.wav"], out[0].text) <= 0.3
    cancel = threading.Event()
    cancel.set()
    assert list(stt.transcribe(read_wav(AUDIO / "q_book.wav"), cancel=cancel)) == []
    assert [t.text for t in stt.transcribe(np.zeros(0, dtype=np.float32))] == [""]


def test_openai_tts_round_trip_through_a_piper_server(
    piper_server: str, bundled_stt: STTHandler
) -> None:
    tts = create_handler("tts", "openai", base_url=piper_server, model="tts-1")
    tts.setup()
    sentence = "Hello, how are you today? The weather is very nice."
    chunks = list(tts.synthesize(sentence))
    # The server says it sends Piper's 22.05 kHz; audio arrives in 100 ms pieces.
    assert len(chunks) > 5 and {c.sample_rate for c in chunks} == {22_050}
    heard, seconds = hear(bundled_stt, tts, sentence)
    print(f"\nopenai TTS via local-tts-studio: {seconds:.2f} s of audio, heard {heard!r}")
    assert 2.0 < seconds < 8.0 and wer(sentence, heard) <= 0.25, heard
    cancel = threading.Event()
    cancel.set()
    assert list(tts.synthesize(sentence, cancel=cancel)) == []
    assert list(tts.synthesize("  ")) == []


def test_openai_speech_unreachable_server_is_a_clear_error() -> None:
    backend_library("openai")
    port = free_port()
    stt = create_handler("stt", "openai", base_url=f"http://127.0.0.1:{port}/v1", timeout=2)
    with pytest.raises(LLMConnectionError, match=r"openai STT at http://127\.0\.0\.1"):
        list(stt.transcribe(np.zeros(1600, dtype=np.float32)))
    tts = create_handler("tts", "openai", base_url=f"http://127.0.0.1:{port}/v1", timeout=2)
    with pytest.raises(LLMConnectionError, match=r"openai TTS at http://127\.0\.0\.1"):
        list(tts.synthesize("Hello."))
