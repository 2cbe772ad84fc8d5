"""``speech-to-speech talk``: talk to any OpenAI Realtime server from this machine.

The microphone (with echo cancellation of what the speaker plays) streams to
the server and the answer plays on the speaker, all in the Rust core: when
the server hears the user start speaking, playback stops and the client
sends ``conversation.item.truncate`` with the milliseconds actually played.
Python only prints both sides' transcripts as they come.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from speech_to_speech import SpeechToSpeechError, init_logging
from speech_to_speech._core import DEFAULTS, TalkClient
from speech_to_speech.flags import add, device_flags

logger = logging.getLogger(__name__)

__all__ = ["build_parser", "main", "print_event"]

#: Read when ``--api_key`` is not given (OpenAI's own variable).
API_KEY_ENV = "OPENAI_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``speech-to-speech talk``."""
    parser = argparse.ArgumentParser(
        prog="speech-to-speech talk",
        description="Talk to an OpenAI Realtime server (this project's or OpenAI's) "
        "through this machine's microphone and speaker.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = parser.add_argument_group("talk")
    add(
        g,
        "url",
        default=f"ws://127.0.0.1:{DEFAULTS['port']}/v1/realtime",
        help="the server's Realtime URL",
    )
    add(g, "api_key", default=None, help=f"bearer key; default: env {API_KEY_ENV}")
    device_flags(g)
    add(
        g,
        "noise_reduction",
        choices=("off", "near_field", "far_field"),
        default="off",
        help="ask the server for noise reduction of the input",
    )
    add(g, "instructions", default=None, help="the session's instructions")
    add(g, "voice", default=None, help="the answer's voice")
    add(
        g,
        "transcription_model",
        default="gpt-4o-mini-transcribe",
        help="the model that transcribes the user's speech",
    )
    add(
        g,
        "log_level",
        default="warning",
        choices=("debug", "info", "warning", "error"),
        help="log level (the Rust core follows S2S_LOG)",
    )
    return parser


def print_event(event: dict[str, object], out: TextIO) -> None:
    """Write one event of the client as the transcript lines a person reads."""
    kind = event["type"]
    if kind == "connected":
        model = event.get("model")
        print(f"[connected to {model}]" if model else "[connected]", file=out)
    elif kind == "user_transcript":
        print(f"you: {event['text']}", file=out)
    elif kind == "assistant_delta":
        print(event["delta"], end="", file=out)
    elif kind == "assistant_done":
        print(file=out)
    elif kind == "interrupted":
        print(f" [interrupted after {event['played_ms']} ms]", file=out)
    elif kind == "error":
        print(f"[server error: {event['message']}]", file=out)
    elif kind == "closed":
        print(f"[closed: {event['reason']}]", file=out)
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client until Ctrl-C or the server closes; the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    init_logging(os.environ.get("S2S_LOG") or args.log_level)
    try:
        client = TalkClient(
            url=args.url,
            api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
            input_device=args.input_device,
            output_device=args.output_device,
            aec=args.aec == "on",
            block_mic_during_playback=args.block_mic_during_playback,
            noise_reduction=None if args.noise_reduction == "off" else args.noise_reduction,
            instructions=args.instructions,
            voice=args.voice,
            transcription_model=args.transcription_model,
        )
    except SpeechToSpeechError as e:
        print(f"speech-to-speech talk: {e}", file=sys.stderr)
        return 2
    status = 0
    try:
        while True:
            event = client.next_event(0.1)
            if event is not None:
                print_event(event, sys.stdout)
                if event["type"] == "closed":
                    status = 1
                    break
            elif not client.running:
                break
    except KeyboardInterrupt:
        pass
    finally:
        client.stop()
    return status
