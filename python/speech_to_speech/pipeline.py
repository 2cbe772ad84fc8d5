"""Build the engine from the command line: handlers, VAD and worker pools.

The same function backs every run mode and the in-process API::

    from speech_to_speech.pipeline import build_engine
    engine = build_engine(stt="faster-whisper", llm="llama-cpp", tts="piper")
    session = engine.session(input_rate=16000)
    session.feed_audio(samples)            # float32, 16 kHz
    event = session.next_event(timeout=1)  # dicts: speech_started, audio, ...
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from speech_to_speech._core import Engine
from speech_to_speech.handlers.registry import add_handler_arguments, build_handlers

logger = logging.getLogger(__name__)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the engine itself: worker pools and session limits."""
    g = parser.add_argument_group("engine")
    for stage in ("stt", "llm", "tts"):
        g.add_argument(
            f"--{stage}_workers",
            f"--{stage}-workers",
            dest=f"{stage}_workers",
            type=int,
            default=1,
            help=f"{stage.upper()} worker threads (each runs one model call at a time)",
        )
    _switch(
        g,
        "speculation",
        "start STT and the LLM at the VAD's soft end, before the turn is committed "
        "(nothing is sent until it is; resumed speech discards the work)",
    )
    _switch(
        g,
        "llm_prefill",
        "when the user starts speaking, let the LLM read the conversation so far "
        "(llama-cpp caches it, so the answer only reads the new words)",
    )
    g.add_argument(
        "--soft_end_ms",
        "--soft-end-ms",
        dest="soft_end_ms",
        type=float,
        default=200.0,
        help="silence after which speculative work starts",
    )
    g.add_argument(
        "--enable_live_transcription",
        "--enable-live-transcription",
        dest="enable_live_transcription",
        action="store_true",
        help="transcribe while the user speaks and send partial transcripts",
    )
    g.add_argument(
        "--max_sessions",
        "--max-sessions",
        dest="max_sessions",
        type=int,
        default=64,
        help="most sessions served at once",
    )
    _switch(
        g,
        "first_audio_priority",
        "pause a response's LLM while its first clause is synthesised, so that TTS has "
        "the CPU (the LLM runs far ahead of speech anyway); off for a remote or GPU LLM",
    )


def _switch(group: argparse._ArgumentGroup, name: str, help_text: str) -> None:
    """An ``on``/``off`` flag, on by default, with a dashed alias."""
    flags = ["--" + name] + (["--" + name.replace("_", "-")] if "_" in name else [])
    group.add_argument(
        *flags, dest=name, choices=("on", "off"), default="on", help=help_text + " (default: on)"
    )


def engine_from_args(args: argparse.Namespace) -> Engine:
    """Create, load and warm up the handlers, load the VAD, start the engine."""
    stt, llm, tts = build_handlers(args)
    for stage, handler in (("stt", stt), ("llm", llm), ("tts", tts)):
        start = time.perf_counter()
        handler.setup()
        logger.info(
            "%s backend %s ready in %.2f s",
            stage,
            getattr(handler, "backend_name", type(handler).__name__),
            time.perf_counter() - start,
        )
    # The VAD and the engine's settings are read from the flags in one place.
    from speech_to_speech.server import build_engine as engine_for_args

    return engine_for_args(args, stt=stt, llm=llm, tts=tts)[0]


def build_engine(**options: Any) -> Engine:
    """The in-process API: an engine from keyword options named like the CLI flags.

    ``build_engine(stt="fake", llm="fake", tts="fake")`` gives the scripted
    test stack; with no options it loads the bundled local models.
    """
    parser = argparse.ArgumentParser()
    add_handler_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--vad_model_path", default=None)
    parser.add_argument("--vad_engine", default="auto")
    args = parser.parse_args([])
    for key, value in options.items():
        if not hasattr(args, key):
            raise TypeError(f"build_engine() got an unknown option {key!r}")
        setattr(args, key, value)
    return engine_from_args(args)
