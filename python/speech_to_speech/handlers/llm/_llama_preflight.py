"""llama.cpp preflight: decode a long prompt in a child process before loading in-process.

A llama.cpp built for another CPU (``GGML_NATIVE`` on a machine that advertises
AVX-512 or AMX, or a wheel cached from such a machine) dies with SIGILL on the
first prompt long enough to take its fast kernels: 8 tokens or more for the
AMX ones. In the server that kills every session at the first answer. So
before the model is loaded in-process, a child process loads it and decodes
a prompt of at least :data:`MIN_PROMPT_TOKENS` tokens. A child killed by a
signal stops start-up with one line that names the signal and the reinstall
command. A passing verdict is cached per library build, CPU and model file, so
the next start costs nothing.

Run as ``python -m speech_to_speech.handlers.llm._llama_preflight MODEL`` it is
that child.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from speech_to_speech.handlers.base import LLMError

__all__ = [
    "MIN_PROMPT_TOKENS",
    "LlamaCppPreflightError",
    "check",
    "portable_cmake_args",
    "reinstall_command",
]

log = logging.getLogger(__name__)

#: The shortest prompt the child decodes (llama.cpp's AMX path starts at 8 tokens;
#: batched matrix kernels at 32).
MIN_PROMPT_TOKENS = 64

#: Environment variable: a folder for the verdict cache (default ``~/.cache/speech-to-speech``).
CACHE_ENV = "SPEECH_TO_SPEECH_CACHE"

_PROMPT = (
    "The quick brown fox jumps over the lazy dog while the early morning train "
    "rolls past the old station, and a voice on the platform announces that the "
    "next service to the coast will leave in twelve minutes from the far side. "
)


class LlamaCppPreflightError(LLMError):
    """llama.cpp cannot run on this machine (its test decode crashed or failed)."""


def portable_cmake_args(machine: str | None = None) -> str:
    """The llama.cpp build flags of an explicit, portable instruction-set baseline."""
    machine = (machine or platform.machine()).lower()
    if machine in ("x86_64", "amd64"):
        return (
            "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON "
            "-DGGML_F16C=ON -DGGML_BMI2=ON"
        )
    return "-DGGML_NATIVE=OFF"


def _llama_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def reinstall_command() -> str:
    """The one line that rebuilds llama-cpp-python portably, never from pip's cache."""
    version = _llama_version()
    pin = f"llama-cpp-python=={version}" if version else "llama-cpp-python"
    return (
        f'CMAKE_ARGS="{portable_cmake_args()}" pip install --no-cache-dir '
        f"--force-reinstall --no-deps '{pin}'"
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _library_files() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations)))
    return sorted(p for p in root.rglob("*") if ".so" in p.name or p.suffix in (".dylib", ".dll"))


def _cpu_identity() -> str:
    """What makes one CPU run code another cannot: its model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keep = []
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("model name", "flags", "Features", "CPU implementer", "CPU part"):
            keep.append(line.strip())
            if len(keep) >= 3:
                break
    return f"{platform.machine()}\n" + "\n".join(keep)


def fingerprint(model_path: str) -> str:
    """A key for one library build on one CPU with one model file."""
    parts: list[Any] = [_llama_version(), _cpu_identity()]
    for f in _library_files():
        st = f.stat()
        parts.append([f.name, st.st_size, st.st_mtime_ns])
    try:
        st = Path(model_path).stat()
        parts.append([str(Path(model_path).resolve()), st.st_size, st.st_mtime_ns])
    except OSError:
        parts.append(model_path)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _cache_file() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "speech-to-speech"
    )
    return Path(root) / "llama-preflight.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str) -> None:
    data = _read_cache(path)
    data[key] = {"verdict": "ok", "at": int(time.time())}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError as e:  # a read-only home only costs the check next time
        log.debug("could not cache the llama.cpp preflight verdict: %s", e)


def child_command(model_path: str) -> list[str]:
    """The command line of the child that decodes the test prompt."""
    return [sys.executable, "-m", __name__, model_path]


def check(
    model_path: str,
    *,
    child_argv: Sequence[str] | None = None,
    timeout_s: float = 300.0,
    use_cache: bool = True,
) -> bool:
    """Make sure llama.cpp can decode a long prompt here; returns whether a child ran.

    ``child_argv`` replaces the child's command line (tests use it to simulate
    a crash); ``use_cache=False`` neither reads nor writes the verdict cache.
    Raises :class:`LlamaCppPreflightError` with one line when the child dies
    on a signal or fails.
    """
    key = fingerprint(model_path)
    cache = _cache_file()
    if use_cache and key in _read_cache(cache):
        return False
    argv = list(child_argv or child_command(model_path))
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise LlamaCppPreflightError(
            f"llama-cpp: the test decode of a {MIN_PROMPT_TOKENS}-token prompt took over "
            f"{timeout_s:.0f} s in a child process; the model may be too large for this machine"
        ) from e
    if done.returncode < 0:
        name = _signal_name(-done.returncode)
        what = {
            "SIGILL": "an instruction this CPU cannot run (a build for another CPU)",
            "SIGSEGV": "a memory fault",
            "SIGBUS": "a bus error",
            "SIGKILL": "a kill (out of memory?)",
        }.get(name, "a crash")
        raise LlamaCppPreflightError(
            f"llama-cpp crashed with {name} ({what}) decoding a {MIN_PROMPT_TOKENS}-token test "
            f"prompt in a child process; reinstall llama-cpp-python for a portable CPU "
            f"baseline: {reinstall_command()}"
        )
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout or "").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else "no output"
        raise LlamaCppPreflightError(
            f"llama-cpp could not decode a test prompt in a child process "
            f"(exit status {done.returncode}): {last}"
        )
    elapsed = time.perf_counter() - started
    log.info("llama.cpp preflight passed in %.2f s: %s", elapsed, done.stdout.strip())
    if use_cache:
        _write_cache(cache, key)
    return True


def _child(model_path: str) -> int:
    """Load the model and decode a prompt of at least MIN_PROMPT_TOKENS tokens."""
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, n_ctx=512, n_threads=1, n_threads_batch=1, verbose=False)
    text = _PROMPT
    tokens = llm.tokenize(text.encode(), add_bos=True)
    while len(tokens) < MIN_PROMPT_TOKENS:
        text += _PROMPT
        tokens = llm.tokenize(text.encode(), add_bos=True)
    tokens = tokens[: min(len(tokens), 256)]
    llm.eval(tokens)
    print(f"decoded a {len(tokens)}-token prompt")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
