"""The local, socket and websocket modes: start the Rust transport on the engine, wait, stop.

The audio never passes through Python: each mode is a transport in the core
(``rust/transport/``) that feeds the engine's sessions itself. Python only
builds it from the flags and blocks until Ctrl-C (or, for the local mode, a
device failure).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Protocol

from speech_to_speech._core import Engine, LocalMode, SocketServer, WebSocketServer
from speech_to_speech.server import session_defaults

logger = logging.getLogger(__name__)

__all__ = ["check_mode_flags", "run_local", "run_socket", "run_websocket"]


class _Serving(Protocol):
    def serve_forever(self) -> None: ...
    def stop(self) -> None: ...


def check_mode_flags(args: argparse.Namespace) -> str | None:
    """Why the flags cannot run here (one line), before any model loads; ``None`` if they can."""
    if args.local_mac_optimal_settings and sys.platform != "darwin":
        return "--local_mac_optimal_settings needs macOS (Apple silicon); drop the flag"
    return None


def _serve(what: _Serving) -> None:
    try:
        what.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        what.stop()


def run_local(args: argparse.Namespace, engine: Engine) -> int:
    """Talk through this machine's microphone and speaker until Ctrl-C; the exit status."""
    mode = LocalMode(
        engine,
        input_device=args.input_device,
        output_device=args.output_device,
        aec=args.aec == "on",
        block_mic_during_playback=args.block_mic_during_playback,
        barge_in_min_ms=args.barge_in_min_ms,
        defaults=session_defaults(args),
    )
    devices = mode.devices
    logger.info(
        "local mode: microphone %r, speaker %r, echo cancellation %s, noise reduction %s",
        devices["input"],
        devices["output"],
        args.aec,
        args.noise_reduction,
    )
    _serve(mode)
    if mode.failure is not None:
        print(f"speech-to-speech: {mode.failure}", file=sys.stderr)
        return 1
    return 0


def run_socket(args: argparse.Namespace, engine: Engine) -> int:
    """Serve the original project's TCP protocol until Ctrl-C; the exit status."""
    server = SocketServer(
        engine,
        host=args.host,
        send_port=args.send_port,
        recv_port=args.recv_port,
        send_rate=args.send_rate,
        recv_rate=args.recv_rate,
        list_play_chunk_size=args.list_play_chunk_size,
        defaults=session_defaults(args),
    )
    server.start()
    logger.info(
        "socket mode on %s: microphone PCM in on port %s, answer out on port %s "
        "(run listen_and_play)",
        args.host,
        server.send_port,
        server.recv_port,
    )
    _serve(server)
    return 0


def run_websocket(args: argparse.Namespace, engine: Engine) -> int:
    """Serve raw PCM over a plain WebSocket until Ctrl-C; the exit status."""
    server = WebSocketServer(
        engine,
        host=args.host,
        port=args.port,
        output_rate=args.ws_output_rate,
        max_message_bytes=args.max_message_bytes,
        defaults=session_defaults(args),
    )
    server.start()
    logger.info("plain WebSocket of raw 16 kHz PCM16 at %s", server.url)
    _serve(server)
    return 0
