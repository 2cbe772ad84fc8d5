"""The llama.cpp preflight: a child that dies on a signal becomes one clear line, not a crash."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import pytest

from speech_to_speech import cli
from speech_to_speech.handlers.llm import _llama_preflight as preflight
from speech_to_speech.handlers.llm._llama_preflight import LlamaCppPreflightError

pytest.importorskip("llama_cpp")

# A stand-in for a llama.cpp built for another CPU: the child kills itself with
# the signal an unsupported instruction raises. No crashing library is shipped.
_DIE_SIGILL = [
    sys.executable,
    "-c",
    "import os, signal; os.kill(os.getpid(), signal.SIGILL)",
]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(preflight.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_child_killed_by_sigill_is_one_line_naming_the_signal_and_the_fix() -> None:
    with pytest.raises(LlamaCppPreflightError) as info:
        preflight.check("/nonexistent/model.gguf", child_argv=_DIE_SIGILL)
    message = str(info.value)
    assert "\n" not in message
    assert "SIGILL" in message
    # The exact reinstall command: portable flags, never pip's wheel cache.
    assert preflight.reinstall_command() in message
    assert "-DGGML_NATIVE=OFF" in message
    assert "--no-cache-dir" in message
    assert "--force-reinstall" in message


def test_other_signals_and_failures_are_named_too() -> None:
    segv = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    with pytest.raises(LlamaCppPreflightError, match="SIGSEGV"):
        preflight.check("m.gguf", child_argv=segv)
    failing = [sys.executable, "-c", "import sys; sys.exit('bad magic in m.gguf')"]
    with pytest.raises(LlamaCppPreflightError, match=r"exit status 1\): bad magic in m.gguf"):
        preflight.check("m.gguf", child_argv=failing)


def test_a_failed_verdict_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    from speech_to_speech.models import smollm2_gguf

    model = str(smollm2_gguf())
    monkeypatch.setattr(preflight, "child_command", lambda _path: _DIE_SIGILL)
    for _ in range(2):
        with pytest.raises(LlamaCppPreflightError, match="SIGILL"):
            preflight.check(model)


def test_the_real_library_passes_and_the_verdict_is_cached(_private_cache: Path) -> None:
    from speech_to_speech.models import smollm2_gguf

    model = str(smollm2_gguf())
    assert preflight.check(model) is True  # a child decoded >= 64 tokens
    assert (_private_cache / "llama-preflight.json").exists()
    assert preflight.check(model) is False  # cached: no child this time


def test_the_child_decodes_at_least_64_tokens(capfd: pytest.CaptureFixture[str]) -> None:
    from speech_to_speech.models import smollm2_gguf

    assert preflight._child(str(smollm2_gguf())) == 0
    out = capfd.readouterr().out
    count = int(out.split("a ", 1)[1].split("-token", 1)[0])
    assert count >= preflight.MIN_PROMPT_TOKENS


def test_the_server_refuses_to_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`speech-to-speech` on a crashing llama.cpp: exit 2, one line, no server."""
    monkeypatch.setattr(preflight, "child_command", lambda _path: _DIE_SIGILL)
    started: list[argparse.Namespace] = []

    def no_server(args: argparse.Namespace, *_: object) -> int:
        started.append(args)
        return 0

    monkeypatch.setattr("speech_to_speech.server.build_server", no_server)
    status = cli.main(["--stt", "fake", "--tts", "fake", "--llm", "llama-cpp", "--port", "0"])
    err = capsys.readouterr().err
    assert status == 2
    assert not started
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("speech-to-speech:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("speech-to-speech: llama-cpp crashed with SIGILL")
    assert "CMAKE_ARGS=" in lines[0]


def test_signal_names() -> None:
    assert preflight._signal_name(int(signal.SIGILL)) == "SIGILL"
    assert preflight._signal_name(999) == "signal 999"
