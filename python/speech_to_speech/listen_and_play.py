"""The socket mode's client: stream the microphone to the server, play its answer.

``python -m speech_to_speech.listen_and_play --host HOST`` (or the
``listen-and-play`` command) against ``speech-to-speech --mode socket``:
raw int16 mono PCM from the microphone to ``--send_port``, the answer from
``--recv_port`` to the speaker, with echo cancellation, all in the Rust core.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from speech_to_speech import SpeechToSpeechError, init_logging
from speech_to_speech._core import DEFAULTS, ListenAndPlay
from speech_to_speech.flags import add, device_flags, port

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``listen_and_play``."""
    sock: dict[str, int] = DEFAULTS["socket"]
    parser = argparse.ArgumentParser(
        prog="listen-and-play",
        description="Microphone and speaker client of `speech-to-speech --mode socket`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = parser.add_argument_group("client")
    add(g, "host", default="localhost", help="the server's address")
    add(g, "send_port", type=port, default=sock["send_port"], help="port the microphone goes to")
    add(g, "recv_port", type=port, default=sock["recv_port"], help="port the answer comes from")
    add(g, "send_rate", type=int, default=sock["rate"], help="rate of the microphone PCM sent")
    add(g, "recv_rate", type=int, default=sock["rate"], help="rate of the answer's PCM")
    device_flags(g)
    add(
        g,
        "log_level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level (the Rust core follows S2S_LOG)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run until Ctrl-C or the server closes; the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    init_logging(os.environ.get("S2S_LOG") or args.log_level)
    try:
        client = ListenAndPlay(
            host=args.host,
            send_port=args.send_port,
            recv_port=args.recv_port,
            send_rate=args.send_rate,
            recv_rate=args.recv_rate,
            input_device=args.input_device,
            output_device=args.output_device,
            aec=args.aec == "on",
            block_mic_during_playback=args.block_mic_during_playback,
        )
    except SpeechToSpeechError as e:
        print(f"listen_and_play: {e}", file=sys.stderr)
        return 2
    try:
        client.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        client.stop()
    ended = client.ended
    if ended is not None:
        print(f"listen_and_play: {ended}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
