"""Build the engine from the command line's flags: handlers (built once), VAD, worker pools.

The same function backs every run mode and the in-process API::

    from speech_to_speech.pipeline import build_engine
    engine = build_engine(stt="faster-whisper", llm="llama-cpp", tts="piper")
    session = engine.session(input_rate=16000)
    session.feed_audio(samples)            # float32, 16 kHz
    event = session.next_event(timeout=1)  # dicts: speech_started, audio_delta, ...
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from speech_to_speech._core import Engine, SmartTurn, SpeechToSpeechError
from speech_to_speech.flags import defaults
from speech_to_speech.handlers.base import LLMHandler, STTHandler, TTSHandler
from speech_to_speech.handlers.registry import build_handlers
from speech_to_speech.vad import load_silero_vad, load_smart_turn

logger = logging.getLogger(__name__)

__all__ = ["Handlers", "build_engine", "engine_from_args"]

#: The three stage handlers, in stage order.
Handlers = tuple[STTHandler, LLMHandler, TTSHandler]


def engine_from_args(
    args: argparse.Namespace, handlers: Handlers | None = None
) -> tuple[Engine, dict[str, str]]:
    """Set up the handlers (``build_handlers(args)`` unless given), load the VAD,
    start the engine; returns it with the backend names by stage.
    """
    stt, llm, tts = handlers if handlers is not None else build_handlers(args)
    for stage, handler in (("stt", stt), ("llm", llm), ("tts", tts)):
        start = time.perf_counter()
        handler.setup()
        logger.info(
            "%s backend %s ready in %.2f s",
            stage,
            getattr(handler, "backend_name", type(handler).__name__),
            time.perf_counter() - start,
        )
    vad = load_silero_vad(args.vad_model_path, backend=args.vad_backend)
    engine = Engine(
        turn_model=_turn_model(args),
        stt=stt,
        llm=llm,
        tts=tts,
        vad=vad,
        stt_workers=args.stt_workers,
        llm_workers=args.llm_workers,
        tts_workers=args.tts_workers,
        max_sessions=args.max_sessions,
        first_audio_priority=args.first_audio_priority == "on",
        first_clause_max_words=args.first_clause_max_words,
        stt_timeout_s=args.stt_timeout_s,
        llm_timeout_s=args.llm_timeout_s,
        tts_timeout_s=args.tts_timeout_s,
    )
    return engine, {stage: str(getattr(args, stage)) for stage in ("stt", "llm", "tts")}


def _turn_model(args: argparse.Namespace) -> SmartTurn | None:
    """Smart Turn v3 unless the silence rule was asked for. Missing, it stops start-up
    when ``--turn_detector smart_turn`` asked for it, else the silence rule goes on.
    """
    if args.turn_detector == "silence":
        return None
    try:
        return load_smart_turn(args.turn_model_path)
    except SpeechToSpeechError as e:
        if args.turn_detector == "smart_turn" or args.turn_model_path:
            raise
        logger.warning("Smart Turn unavailable, turns end by the silence rule: %s", e)
        return None


def build_engine(**options: Any) -> Engine:
    """The in-process API: an engine from keyword options named like the CLI flags.

    ``build_engine(stt="fake", llm="fake", tts="fake")`` gives the Python fake
    handlers; with no options it loads the bundled local models.
    """
    args = defaults()
    for key, value in options.items():
        if not hasattr(args, key):
            raise TypeError(f"build_engine() got an unknown option {key!r}")
        setattr(args, key, value)
    return engine_from_args(args)[0]
