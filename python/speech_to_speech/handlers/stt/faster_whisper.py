"""Speech to text with faster-whisper (CTranslate2); the default STT backend."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.handlers.base import (
    STT_SAMPLE_RATE,
    Cancellation,
    STTHandler,
    Transcript,
    is_cancelled,
)
from speech_to_speech.handlers.registry import register

__all__ = ["FasterWhisperSTT"]

log = logging.getLogger(__name__)


@register("stt", "faster-whisper", extra="faster-whisper", requires=["faster_whisper"])
class FasterWhisperSTT(STTHandler):
    """Whisper on CTranslate2; defaults to the bundled tiny.en (int8, CPU).

    ``model`` is a CTranslate2 model directory or a faster-whisper model name
    (names need a hub download). ``language`` of ``None`` or ``"auto"``
    detects the language. Partial transcripts are emitted between segments of
    long audio; a short utterance gives just the final.
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        num_workers: int = 1,
        language: str | None = "en",
        beam_size: int = 1,
        condition_on_previous_text: bool = False,
        warmup: bool = True,
    ) -> None:
        self.model_name = model
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.num_workers = num_workers
        self.language = language
        self.beam_size = beam_size
        self.condition_on_previous_text = condition_on_previous_text
        self.warmup = warmup
        self._model: Any = None
        self._setup_lock = threading.Lock()

    def setup(self) -> None:
        with self._setup_lock:
            if self._model is not None:
                return
            from faster_whisper import WhisperModel

            from speech_to_speech.models import whisper_tiny_en_dir

            path = self.model_name or str(whisper_tiny_en_dir())
            log.info(
                "loading faster-whisper model %s (%s, %s)", path, self.device, self.compute_type
            )
            self._model = WhisperModel(
                path,
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self.num_workers,
            )
        if self.warmup:
            # One decode loads the kernels and allocates the buffers before the first user.
            t = np.arange(STT_SAMPLE_RATE, dtype=np.float32) / STT_SAMPLE_RATE
            for _ in self.transcribe((0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)):
                pass

    def transcribe(
        self,
        audio: npt.NDArray[np.float32],
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: Cancellation | None = None,
    ) -> Iterator[Transcript]:
        if self._model is None:
            self.setup()
        lang = language or self.language
        if lang == "auto":
            lang = None
        segments, info = self._model.transcribe(
            np.ascontiguousarray(audio, dtype=np.float32),
            language=lang,
            beam_size=self.beam_size,
            initial_prompt=prompt or None,
            condition_on_previous_text=self.condition_on_previous_text,
            vad_filter=False,
            without_timestamps=True,
        )
        detected = lang or getattr(info, "language", None)
        parts: list[str] = []
        for segment in segments:
            if is_cancelled(cancel):
                return
            if parts:
                # Another segment arrived, so the text so far is a stable partial.
                yield Transcript("".join(parts).strip(), final=False, language=detected)
            parts.append(segment.text)
        if is_cancelled(cancel):
            return
        yield Transcript("".join(parts).strip(), final=True, language=detected)
