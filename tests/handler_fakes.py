"""What Python handlers in the engine tests yield, and waiting for a response's end."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

import speech_to_speech as s2s


@dataclass
class Transcript:
    text: str
    final: bool
    language: str | None = None


@dataclass
class Text:
    text: str


@dataclass
class Chunk:
    samples: np.ndarray[Any, np.dtype[np.float32]]
    sample_rate: int
    words: list[tuple[str, float, float]] | None = None


def until_done(session: s2s.Session, timeout: float = 10.0) -> list[dict[str, Any]]:
    """A session's events up to its next ``response_done``."""
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = session.next_event(timeout=0.1)
        if ev is None:
            continue
        events.append(ev)
        if ev["type"] == "response_done":
            return events
    raise AssertionError(f"no response_done: {[e['type'] for e in events]}")
