"""The glue from the command line to the core: every flag reaches the engine or the server."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

import pytest

from speech_to_speech import DEFAULTS, Engine, RealtimeServer
from speech_to_speech.flags import build_parser
from speech_to_speech.server import build_server, session_defaults


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _server(*argv: str) -> RealtimeServer:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted")
    return build_server(_args(*argv), engine, {"stt": "scripted"})


def _at(d: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        d = d[key]
    return d


# (flags, path in the server's session settings, expected value)
SESSION_FLAGS = [
    (["--init_chat_prompt", "Be terse."], "instructions", "Be terse."),
    (["--thresh", "0.31"], "audio.input.turn_detection.threshold", 0.31),
    (["--speech_pad_ms", "120"], "audio.input.turn_detection.prefix_padding_ms", 120),
    (["--min_silence_ms", "650"], "audio.input.turn_detection.silence_duration_ms", 650),
    (["--input_audio_rate", "22050"], "audio.input.format.rate", 22050),
    (["--compat", "original"], "audio.input.format.rate", 16000),
    (["--compat", "original"], "speech_to_speech.always_transcribe", True),
    (["--always_transcribe"], "speech_to_speech.always_transcribe", True),
    (["--chat_size", "5"], "speech_to_speech.chat_size", 5),
    (["--speculation", "off"], "speech_to_speech.speculation", False),
    (["--llm_prefill", "off"], "speech_to_speech.prefill", False),
    (["--soft_end_ms", "140"], "speech_to_speech.soft_end_ms", 140.0),
    (["--enable_live_transcription"], "speech_to_speech.live_transcription", True),
    (["--min_speech_ms", "90"], "speech_to_speech.min_speech_ms", 90.0),
    (["--max_speech_ms", "30000"], "speech_to_speech.max_speech_ms", 30000.0),
    (["--turn_detector", "smart_turn"], "speech_to_speech.turn_detector", "smart_turn"),
]


@pytest.mark.parametrize(("argv", "path", "expected"), SESSION_FLAGS)
def test_each_session_flag_reaches_the_server(argv: list[str], path: str, expected: Any) -> None:
    server = _server(*argv)
    assert _at(server.defaults, path) == expected
    # ... and nothing else moved.
    plain = _server()
    changed = {p for _, p, _ in SESSION_FLAGS if _at(plain.defaults, p) != _at(server.defaults, p)}
    assert changed <= {p for a, p, _ in SESSION_FLAGS if a == argv}


def test_the_defaults_are_the_cores() -> None:
    """The flags' defaults are the ones the core exports, written once."""
    args = _args()
    assert (args.host, args.port) == (DEFAULTS["host"], DEFAULTS["port"])
    assert args.max_message_bytes == DEFAULTS["max_message_bytes"]
    assert args.max_sessions == DEFAULTS["max_sessions"]
    assert args.barge_in_min_ms == DEFAULTS["local"]["barge_in_min_ms"]
    assert _server().defaults == session_defaults_filled(args)


def test_local_modes_python_signature_spells_the_cores_default() -> None:
    """LocalMode's keyword default is a literal (stubtest reads the signature), so it is
    checked against the core's constant here."""
    from speech_to_speech._core import LocalMode

    default = inspect.signature(LocalMode).parameters["barge_in_min_ms"].default
    assert default == DEFAULTS["local"]["barge_in_min_ms"]


def session_defaults_filled(args: argparse.Namespace) -> dict[str, Any]:
    """The core's defaults with the flags' values on top (the CLI's own prompt)."""
    expected: dict[str, Any] = DEFAULTS["session"]
    expected = {**expected, "instructions": args.init_chat_prompt}
    return expected


def test_server_flags_reach_the_server() -> None:
    server = _server("--max_message_bytes", "4096", "--api_key", "k", "--host", "127.0.0.1")
    assert server.max_message_bytes == 4096
    assert server.requires_api_key
    assert server.host == "127.0.0.1"
    assert not _server().requires_api_key


def test_engine_flags_reach_the_engine() -> None:
    from speech_to_speech.handlers.registry import create_handler
    from speech_to_speech.pipeline import engine_from_args

    args = _args(
        "--stt_workers", "2", "--llm_workers", "3", "--tts_workers", "2",
        "--max_sessions", "7", "--first_audio_priority", "off", "--first_clause_max_words", "9",
        "--turn_detector", "silence",
        "--stt_timeout_s", "5", "--llm_timeout_s", "12.5", "--tts_timeout_s", "8",
    )  # fmt: skip
    handlers = (
        create_handler("stt", "fake"),
        create_handler("llm", "fake"),
        create_handler("tts", "fake"),
    )
    engine, backends = engine_from_args(args, handlers)
    assert engine.config == {
        "stt_workers": 2,
        "llm_workers": 3,
        "tts_workers": 2,
        "max_sessions": 7,
        "first_audio_priority": False,
        "first_clause_max_words": 9,
        "turn_model": False,
        "stt_timeout_s": 5.0,
        "llm_timeout_s": 12.5,
        "tts_timeout_s": 8.0,
    }
    assert backends == {"stt": "faster-whisper", "llm": "llama-cpp", "tts": "piper"}


def test_bad_session_settings_are_refused_with_the_parameter_named() -> None:
    engine = Engine(stt="scripted", llm="scripted", tts="scripted")
    # The command line refuses --thresh 2 (tests/test_flags.py); the core checks
    # the settings it is given on its own.
    args = _args()
    args.thresh = 2.0
    bad = session_defaults(args)
    from speech_to_speech import ServerConfigError

    with pytest.raises(ServerConfigError, match=r"turn_detection\.threshold"):
        RealtimeServer(engine, port=0, defaults=bad)
