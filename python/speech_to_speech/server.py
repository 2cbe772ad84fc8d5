"""Realtime mode: serve the OpenAI Realtime API on an engine built from the flags."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
from types import FrameType
from typing import Any

from speech_to_speech._core import Engine, RealtimeServer

logger = logging.getLogger(__name__)

__all__ = ["API_KEY_ENV", "build_server", "run_realtime", "session_defaults"]

#: Environment variable read when ``--api_key`` is not given.
API_KEY_ENV = "SPEECH_TO_SPEECH_API_KEY"


def session_defaults(args: argparse.Namespace) -> dict[str, Any]:
    """What every session starts with, from the flags, in the protocol's names.

    A partial GA session object (``instructions``, ``audio.input.format``,
    the ``server_vad`` fields of ``audio.input.turn_detection``) plus the
    server's own knobs under ``speech_to_speech``; a client's
    ``session.update`` applies on top (see ``RealtimeServer(defaults=...)``).
    """
    original = args.compat == "original"
    rate = args.input_audio_rate if args.input_audio_rate is not None else None
    if rate is None and original:
        rate = 16000
    audio_input: dict[str, Any] = {
        "turn_detection": {
            "type": "server_vad",
            "threshold": args.thresh,
            "prefix_padding_ms": int(args.speech_pad_ms),
            "silence_duration_ms": int(args.min_silence_ms),
        }
    }
    if rate is not None:
        audio_input["format"] = {"type": "audio/pcm", "rate": int(rate)}
    if args.noise_reduction != "off":
        audio_input["noise_reduction"] = {"type": args.noise_reduction}
    max_speech = args.max_speech_ms
    return {
        "instructions": args.init_chat_prompt,
        "audio": {"input": audio_input},
        "speech_to_speech": {
            "chat_size": args.chat_size,
            "speculation": args.speculation == "on",
            "prefill": args.llm_prefill == "on",
            "soft_end_ms": args.soft_end_ms,
            "live_transcription": bool(args.enable_live_transcription),
            "min_speech_ms": float(args.min_speech_ms),
            "max_speech_ms": None if max_speech is None or math.isinf(max_speech) else max_speech,
            "always_transcribe": bool(args.always_transcribe) or original,
            "turn_detector": args.turn_detector,
        },
    }


def build_server(
    args: argparse.Namespace, engine: Engine, backends: dict[str, Any]
) -> RealtimeServer:
    """The (stopped) server for ``args``: host, port, API key, message limit, defaults,
    WebRTC and TLS."""
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "serving on %s without an API key: anyone who can reach it can use it", args.host
        )
    webrtc_port = None
    if args.webrtc == "on":
        webrtc_port = args.webrtc_port if args.webrtc_port is not None else args.port
    return RealtimeServer(
        engine,
        host=args.host,
        port=args.port,
        api_key=api_key,
        max_message_bytes=args.max_message_bytes,
        backends=backends,
        defaults=session_defaults(args),
        max_connections=args.max_connections,
        send_timeout_s=args.send_timeout_s,
        header_timeout_s=args.header_timeout_s,
        webrtc_port=webrtc_port,
        webrtc_public_ip=args.webrtc_public_ip,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


class _Terminate(Exception):
    """SIGTERM arrived: drain, then exit 0."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminate


def run_realtime(args: argparse.Namespace, engine: Engine, backends: dict[str, Any]) -> int:
    """Serve ``ws://HOST:PORT/v1/realtime`` on ``engine`` until Ctrl-C or SIGTERM.

    Ctrl-C stops at once. SIGTERM (what a process manager or an orchestrator
    sends) drains: no new sessions, ``/health`` answers 503 ``draining`` so a
    load balancer stops sending, running responses finish for up to
    ``--drain_s``, every session closes with 1001 (going away); then exit 0.
    """
    server = build_server(args, engine, backends)
    server.start()
    logger.info("OpenAI Realtime API at %s (backends: %s)", server.url, backends)
    if server.webrtc_port is not None:
        logger.info(
            "WebRTC calls at %s/v1/realtime/calls on UDP port %d (candidates %s)",
            server.http_url,
            server.webrtc_port,
            ", ".join(server.webrtc_candidates),
        )
    logger.info("talk to it in a browser: %s/", server.http_url)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping")
    except _Terminate:
        logger.info("SIGTERM: draining for up to %.1f s", args.drain_s)
        # A second SIGTERM during the drain is ignored: the drain is bounded.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cut = server.drain(args.drain_s)
        logger.info("drained (%d session(s) still answering were closed)", cut)
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0
