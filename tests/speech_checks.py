"""Helpers for the tests that run real models: test audio, word error rate, backend tiers."""

from __future__ import annotations

import importlib
import os
import re
import socket
import subprocess
import time
import urllib.request
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
AUDIO = SHARED / "audio"

# The recordings in ../shared/audio and what they say (see its README).
REFERENCES = {
    "jfk.wav": (
        "And so my fellow Americans, ask not what your country can do for you, "
        "ask what you can do for your country."
    ),
    "q_capital_france.wav": "What is the capital of France?",
    "q_ocean_fact.wav": "Tell me a fun fact about the ocean.",
    "q_book.wav": "Can you recommend a good book to read this weekend?",
    "interrupt_wait.wav": "Stop. Wait a second, let me ask something else.",
}

BACKENDS_TIER = os.environ.get("S2S_BACKENDS_TIER") == "1"
"""Set by `.ci/run` for the backends tier: a missing library there is a failure, not a skip."""


def read_wav(path: Path) -> npt.NDArray[np.float32]:
    """A 16 kHz mono PCM16 WAV file as float32."""
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16_000, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein distance over the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Word errors over every utterance divided by the reference words over all of them."""
    errors = sum(wer(ref, hyp) * max(len(words(ref)), 1) for ref, hyp in pairs)
    return errors / sum(max(len(words(ref)), 1) for ref, _ in pairs)


def backend_library(name: str) -> ModuleType:
    """Import a backend's library; skip without it, except in the backends tier (fail)."""
    if BACKENDS_TIER:
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is installed in the backends tier")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(
    command: list[str], ready_url: str, log_path: Path, *, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run a server process until the block ends; wait until ``ready_url`` answers first.

    Its output goes to a file (a pipe would fill up and block a chatty server).
    """
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    err = log_path.read_text(errors="replace")
                    raise RuntimeError(f"{command[0]} exited: {err[-2000:]}")
                try:
                    with urllib.request.urlopen(ready_url, timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
