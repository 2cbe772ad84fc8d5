"""The `speech-to-speech` command: parse flags, pick a run mode, start it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from speech_to_speech import SpeechToSpeechError, __version__, init_logging, list_audio_devices
from speech_to_speech.handlers.registry import add_handler_arguments, build_handlers
from speech_to_speech.pipeline import add_engine_arguments
from speech_to_speech.vad import ENGINES

logger = logging.getLogger(__name__)

MODES = ("realtime", "local", "socket", "websocket")

# Modes whose transport has not landed yet, with the one line that says so.
_NOT_READY = {
    "local": "local microphone/speaker mode is not ready yet",
    "socket": "TCP socket mode is not ready yet",
    "websocket": "plain WebSocket mode is not ready yet",
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show every default and keep the description's line breaks."""


def _add(group: argparse._ArgumentGroup, name: str, **kwargs: object) -> None:
    """Add an underscore flag with its dashed alias (`--min_speech_ms`, `--min-speech-ms`)."""
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    group.add_argument(*flags, dest=name, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `speech-to-speech` command."""
    parser = argparse.ArgumentParser(
        prog="speech-to-speech",
        description=(
            "A voice-agent server: VAD -> STT -> LLM -> TTS, streamed end to end.\n"
            "Default: an OpenAI Realtime-compatible WebSocket server at "
            "ws://HOST:PORT/v1/realtime on the bundled local models."
        ),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    run = parser.add_argument_group("run mode")
    _add(
        run,
        "mode",
        choices=MODES,
        default="realtime",
        help="realtime: OpenAI Realtime WebSocket server; local: microphone and speaker; "
        "socket: TCP raw PCM (with listen_and_play); websocket: plain WebSocket of raw "
        "16 kHz int16 mono PCM",
    )
    _add(run, "host", default="127.0.0.1", help="address the server listens on")
    _add(run, "port", type=int, default=8765, help="port the server listens on")
    _add(
        run,
        "api_key",
        default=None,
        help="require this key (Authorization: Bearer KEY); default: env "
        "SPEECH_TO_SPEECH_API_KEY, else no auth (only sensible on 127.0.0.1)",
    )
    _add(
        run,
        "max_message_bytes",
        type=int,
        default=16 * 1024 * 1024,
        help="largest client message answered normally",
    )
    _add(
        run,
        "log_level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="Python log level (the Rust core follows S2S_LOG)",
    )

    vad = parser.add_argument_group("voice activity detection (Silero)")
    _add(
        vad,
        "vad_model_path",
        default=None,
        help="Silero ONNX model file; None = the one installed by silero-vad",
    )
    _add(
        vad,
        "vad_engine",
        choices=ENGINES,
        default="auto",
        help="native: the network in Rust, weights read from the model file (no ONNX "
        "Runtime needed); onnxruntime: the file run by ONNX Runtime; auto: native when "
        "it recognises the file, else onnxruntime",
    )
    _add(vad, "thresh", type=float, default=0.5, help="speech probability that starts speech")
    _add(vad, "min_speech_ms", type=int, default=250, help="shorter blips are not speech")
    _add(vad, "min_silence_ms", type=int, default=500, help="silence that ends a turn")
    _add(vad, "speech_pad_ms", type=int, default=300, help="audio kept before the speech start")
    _add(
        vad,
        "max_speech_ms",
        type=float,
        default=float("inf"),
        help="longest turn before it is cut",
    )
    devices = parser.add_argument_group("audio devices (local mode)")
    _add(
        devices,
        "list_devices",
        action="store_true",
        help="print the audio devices (index, name, input/output, description) and exit",
    )
    add_handler_arguments(parser)
    add_engine_arguments(parser)
    return parser


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
        lines.append(
            f"{mark}{d['index']:3d}  {d['name']!s:{width}s}  {kinds:6s}  {d['description']}{note}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
        build_handlers(args)
        reason = _NOT_READY.get(args.mode)
        if reason is not None:
            print(f"speech-to-speech: --mode {args.mode}: {reason}", file=sys.stderr)
            return 2
        return _run_mode(args)
    except SpeechToSpeechError as e:
        # One line that says what to do; the traceback is for --log_level debug.
        logger.debug("start-up failed", exc_info=True)
        print(f"speech-to-speech: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run_mode(args: argparse.Namespace) -> int:
    """Start the chosen mode and block until it stops."""
    from speech_to_speech.server import run_realtime

    # Every other mode is refused in main() until its transport lands.
    return run_realtime(args)


if __name__ == "__main__":
    sys.exit(main())
