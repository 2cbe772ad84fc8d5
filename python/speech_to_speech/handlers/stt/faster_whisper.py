"""Speech to text with faster-whisper (CTranslate2); the default STT backend."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.bounds import number
from speech_to_speech.handlers.base import (
    STT_SAMPLE_RATE,
    Cancellation,
    STTHandler,
    Transcript,
    is_cancelled,
)
from speech_to_speech.handlers.registry import BackendFlag, register

__all__ = ["FasterWhisperSTT", "looks_wrong"]

log = logging.getLogger(__name__)

# Whisper's own window, seconds.
_FULL_WINDOW_S = 30.0


@register(
    "stt",
    "faster-whisper",
    extra="faster-whisper",
    requires=["faster_whisper"],
    flags=[
        BackendFlag(
            "stt_window_s",
            "window_s",
            10.0,
            "smallest mel window in seconds for an utterance; 30 = always Whisper's full "
            "window (slower, same accuracy here)",
            number(float, 1.0, 30.0),
        )
    ],
)
class FasterWhisperSTT(STTHandler):
    """Whisper on CTranslate2; defaults to the bundled tiny.en (int8, CPU).

    ``model`` is a CTranslate2 model directory or a faster-whisper model name
    (names need a hub download). ``language`` of ``None`` or ``"auto"``
    detects the language. Partial transcripts are emitted between segments of
    long audio; a short utterance gives just the final.

    Whisper was trained on 30 s windows and faster-whisper always pads to
    one, so a 2 s question costs as much to encode as 30 s of speech. By
    default an utterance shorter than 29 s is encoded in a smaller mel
    window: its own length plus ``window_pad_s``, and at least ``window_s``
    seconds (10). ``window_s=30`` restores the full window. Measured with
    ``python benches/stt_window.py`` on 51 utterances (espeak-ng and Piper
    voices, and jfk.wav), tiny.en int8 on 2 cores: WER 0.092 and 128 ms per
    utterance at 10 s, against 0.107 and 361 ms at 30 s; a window of only the
    utterance plus 1 s was as fast (97 ms) but WER 0.265, so the window
    never goes below ``window_s``. Guards catch a decode that goes wrong
    anyway and redo it in the full window: a token budget proportional to
    the duration, repetitive text (a repeated run of four words, or a zlib
    compression ratio above 2.4) and an average log-probability below -1. The
    short window needs a known language (a multilingual model with
    ``language="auto"`` takes the full window).
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
        window_s: float = 10.0,
        window_pad_s: float = 1.0,
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
        if not 0 < window_s <= _FULL_WINDOW_S:
            raise ValueError(f"window_s must be in (0, 30] seconds, got {window_s}")
        self.window_s = window_s
        self.window_pad_s = window_pad_s
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
        if len(audio) < STT_SAMPLE_RATE // 100:
            # Less than one mel frame: nothing to decode.
            if not is_cancelled(cancel):
                yield Transcript("", final=True, language=lang)
            return
        if (
            self.window_s < _FULL_WINDOW_S
            and len(audio) / STT_SAMPLE_RATE + self.window_pad_s < _FULL_WINDOW_S
            and (lang or not self._model.model.is_multilingual)
        ):
            text = self._transcribe_short(audio, lang or "en", prompt)
            if text is not None:
                if not is_cancelled(cancel):
                    yield Transcript(text, final=True, language=lang or "en")
                return
            log.debug("short-window decode rejected; redoing it in the 30 s window")
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

    def _transcribe_short(
        self, audio: npt.NDArray[np.float32], language: str, prompt: str | None
    ) -> str | None:
        """Greedy/beam decode over the smaller window; None if the result looks wrong."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        features = model.feature_extractor(np.ascontiguousarray(audio, dtype=np.float32))
        frames = features.shape[-1]
        # 100 mel frames a second; an even count for the encoder's stride-2 convolution.
        target = max(frames + round(100 * self.window_pad_s), round(100 * self.window_s))
        target = min(target + target % 2, 3000)
        features = np.pad(features[:, :target], ((0, 0), (0, max(target - frames, 0))))
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language
        )
        tokens: list[int] = []
        if prompt:
            tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-200:]]
        tokens += [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        budget = int(8 * len(audio) / STT_SAMPLE_RATE) + 8
        encoded = model.encode(features)
        result = model.model.generate(
            encoded,
            [tokens],
            beam_size=self.beam_size,
            max_length=len(tokens) + budget,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            return_scores=True,
        )[0]
        ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = str(tokenizer.decode(ids)).strip()
        if len(ids) >= budget - 1:
            return None
        score = result.scores[0] if result.scores else None
        return None if looks_wrong(text, score) else text


def looks_wrong(text: str, score: float | None) -> bool:
    """Whether a decode has the usual marks of a Whisper failure (then it is redone).

    Empty text, repetitive text (a repeated run of four words, or a zlib
    compression ratio above 2.4) or a length-normalised log-probability
    below -1.
    """
    import zlib

    if not text:
        return True
    raw = text.encode()
    if len(raw) / len(zlib.compress(raw)) > 2.4:
        return True
    words = text.lower().split()
    # Four words, not three: rhetoric repeats trigrams ("ask what you can do for").
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    if len(set(grams)) < len(grams):
        # A repeated phrase is the usual way a short-window decode goes wrong.
        return True
    # CTranslate2's score is the length-normalised sum of log-probabilities.
    return score is not None and score < -1.0
