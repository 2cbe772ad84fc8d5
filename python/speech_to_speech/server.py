"""Realtime mode: build the engine from the CLI arguments and serve the Realtime API."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from speech_to_speech._core import Engine, RealtimeServer

logger = logging.getLogger(__name__)

__all__ = ["API_KEY_ENV", "build_engine", "build_server", "run_realtime", "session_defaults"]

#: Environment variable read when ``--api_key`` is not given.
API_KEY_ENV = "SPEECH_TO_SPEECH_API_KEY"


def _backend_name(handler: object) -> str:
    if isinstance(handler, str):
        return handler
    return str(getattr(handler, "name", type(handler).__name__))


def build_engine(
    args: argparse.Namespace,
    *,
    stt: object | None = None,
    llm: object | None = None,
    tts: object | None = None,
) -> tuple[Engine, dict[str, str]]:
    """The engine for ``args``: its handlers, the Silero VAD and the session limit.

    Handlers come from the keyword arguments, else from ``args.stt`` /
    ``args.llm`` / ``args.tts`` (handler objects or ``"fake"``), else the
    scripted fakes.
    """
    from speech_to_speech.vad import load_silero_vad

    handlers = {
        "stt": stt if stt is not None else getattr(args, "stt", None) or "fake",
        "llm": llm if llm is not None else getattr(args, "llm", None) or "fake",
        "tts": tts if tts is not None else getattr(args, "tts", None) or "fake",
    }
    vad = load_silero_vad(
        getattr(args, "vad_model_path", None), engine=getattr(args, "vad_engine", "auto")
    )
    engine = Engine(
        stt=handlers["stt"],
        llm=handlers["llm"],
        tts=handlers["tts"],
        vad=vad,
        stt_workers=int(getattr(args, "stt_workers", 1)),
        llm_workers=int(getattr(args, "llm_workers", 1)),
        tts_workers=int(getattr(args, "tts_workers", 1)),
        max_sessions=int(getattr(args, "max_sessions", 64)),
        first_audio_priority=getattr(args, "first_audio_priority", "on") == "on",
    )
    return engine, {stage: _backend_name(h) for stage, h in handlers.items()}


def build_server(
    args: argparse.Namespace, engine: Engine, backends: dict[str, Any]
) -> RealtimeServer:
    """The (stopped) server for ``args``: host, port, API key, message limit."""
    api_key = getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV) or None
    host = str(getattr(args, "host", "127.0.0.1"))
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s without an API key: anyone who can reach it can use it", host)
    return RealtimeServer(
        engine,
        host=host,
        port=int(getattr(args, "port", 8765)),
        api_key=api_key,
        max_message_bytes=int(getattr(args, "max_message_bytes", 16 * 1024 * 1024)),
        backends=backends,
        defaults=session_defaults(args),
    )


def session_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """What every session starts with, from the command line's flags."""
    out: dict[str, Any] = {}
    mapping = {
        "init_chat_prompt": "instructions",
        "chat_size": "chat_size",
        "soft_end_ms": "soft_end_ms",
        "enable_live_transcription": "live_transcription",
        "thresh": "threshold",
        "speech_pad_ms": "prefix_padding_ms",
        "min_silence_ms": "silence_duration_ms",
        "min_speech_ms": "min_speech_ms",
        "max_speech_ms": "max_speech_ms",
    }
    for flag, key in mapping.items():
        if getattr(args, flag, None) is not None:
            out[key] = getattr(args, flag)
    if getattr(args, "speculation", None) is not None:
        out["speculation"] = args.speculation == "on"
    if getattr(args, "llm_prefill", None) is not None:
        out["prefill"] = args.llm_prefill == "on"
    for key in ("prefix_padding_ms", "silence_duration_ms"):
        if key in out:
            out[key] = int(out[key])
    original = getattr(args, "compat", "openai") == "original"
    rate = getattr(args, "input_audio_rate", None)
    if rate is not None or original:
        out["input_rate"] = int(rate if rate is not None else 16000)
    if getattr(args, "always_transcribe", False) or original:
        out["always_transcribe"] = True
    return out


def run_realtime(
    args: argparse.Namespace,
    *,
    stt: object | None = None,
    llm: object | None = None,
    tts: object | None = None,
) -> int:
    """Serve ``ws://HOST:PORT/v1/realtime`` until Ctrl-C; returns the exit status.

    Without handler objects, the backends named by ``--stt/--llm/--tts`` are
    created from the registry, loaded and warmed up first.
    """
    if stt is None and llm is None and tts is None and hasattr(args, "stt_model"):
        from speech_to_speech.pipeline import engine_from_args

        engine = engine_from_args(args)
        backends = {stage: str(getattr(args, stage)) for stage in ("stt", "llm", "tts")}
    else:
        engine, backends = build_engine(args, stt=stt, llm=llm, tts=tts)
    server = build_server(args, engine, backends)
    server.start()
    logger.info("OpenAI Realtime API at %s (backends: %s)", server.url, backends)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        server.stop()
    return 0
