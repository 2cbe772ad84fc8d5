"""The `speech-to-speech` command: parse flags, pick a run mode, start it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from speech_to_speech import SpeechToSpeechError, init_logging, list_audio_devices
from speech_to_speech.flags import MODES, build_parser
from speech_to_speech.handlers.registry import build_handlers
from speech_to_speech.modes import check_mode_flags, run_local, run_socket, run_websocket
from speech_to_speech.pipeline import Handlers, engine_from_args
from speech_to_speech.presets import check_preset, parse_with_preset

logger = logging.getLogger(__name__)

__all__ = ["MODES", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["talk"]:
        from speech_to_speech.talk import main as talk_main

        return talk_main(argv[1:])
    parser = build_parser()
    args = parse_with_preset(parser, argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The Rust core logs turns (one line each, with its stage timings) too.
    init_logging(os.environ.get("S2S_LOG") or args.log_level)
    try:
        if args.list_devices:
            print(format_devices(list_audio_devices()))
            return 0
        # Refuse a backend whose extra is missing before anything loads.
        reason = check_mode_flags(args)
        if reason is not None:
            print(f"speech-to-speech: {reason}", file=sys.stderr)
            return 2
        check_preset(args)
        handlers = build_handlers(args)
        return _run_mode(args, handlers)
    except SpeechToSpeechError as e:
        # One line that says what to do; the traceback is for --log_level debug.
        logger.debug("start-up failed", exc_info=True)
        print(f"speech-to-speech: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def format_devices(devices: Sequence[dict[str, object]]) -> str:
    """The --list_devices table: index, name, in/out, defaults (*), description."""
    if not devices:
        return "no audio devices"
    width = max(len(str(d["name"])) for d in devices)
    lines = []
    for d in devices:
        kinds = "/".join(k for k, flag in (("in", d["is_input"]), ("out", d["is_output"])) if flag)
        defaults = ", ".join(
            k
            for k, flag in (
                ("default input", d["default_input"]),
                ("default output", d["default_output"]),
            )
            if flag
        )
        mark = "*" if defaults else " "
        note = f" ({defaults})" if defaults else ""
        name = str(d["name"])
        lines.append(
            f"{mark}{d['index']:3d}  {name:{width}s}  {kinds:6s}  {d['description']}{note}"
        )
    return "\n".join(lines)


def _run_mode(args: argparse.Namespace, handlers: Handlers) -> int:
    """Build the engine once, then start the chosen mode on it and block until it stops."""
    engine, backends = engine_from_args(args, handlers)
    if args.mode == "local":
        return run_local(args, engine)
    if args.mode == "socket":
        return run_socket(args, engine)
    if args.mode == "websocket":
        return run_websocket(args, engine)
    from speech_to_speech.server import run_realtime

    return run_realtime(args, engine, backends)


if __name__ == "__main__":
    sys.exit(main())
