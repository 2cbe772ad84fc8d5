"""Helpers shared by the STT backends that return a whole transcript at once."""

from __future__ import annotations

from collections.abc import Iterator

from speech_to_speech.handlers.base import Cancellation, Transcript, is_cancelled

__all__ = ["final_only"]


def final_only(
    text: str, language: str | None, cancel: Cancellation | None
) -> Iterator[Transcript]:
    """Yield the single final transcript unless the job was cancelled meanwhile."""
    if not is_cancelled(cancel):
        yield Transcript(text.strip(), final=True, language=language)
