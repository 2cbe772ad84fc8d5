"""Every flag of the `speech-to-speech` command, with one helper for them all.

Underscore names with dashed aliases (`--min_silence_ms`, `--min-silence-ms`),
every default shown in `--help`. The defaults the Rust core owns (port,
message limit, session limit, the session settings) are read from
``speech_to_speech._core.DEFAULTS``, so they are written once.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from speech_to_speech import __version__
from speech_to_speech._core import DEFAULTS
from speech_to_speech.bounds import number
from speech_to_speech.handlers.registry import backend_flags
from speech_to_speech.presets import PRESETS
from speech_to_speech.vad import BACKENDS

__all__ = ["DEFAULT_SYSTEM_PROMPT", "MODES", "build_parser", "defaults", "device_flags", "port"]

MODES = ("realtime", "local", "socket", "websocket")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful and friendly AI assistant. You are polite, respectful, "
    "and aim to provide concise responses of less than 20 words."
)

_SESSION: dict[str, Any] = DEFAULTS["session"]
_VAD: dict[str, Any] = _SESSION["audio"]["input"]["turn_detection"]
_KNOBS: dict[str, Any] = _SESSION["speech_to_speech"]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show every default and keep the description's line breaks."""


class _Parser(argparse.ArgumentParser):
    """Refuses a bad command line in one line (what was wrong, and where to look)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


_SECONDS = number(float, 0, 86_400, low_open=True)


def add(group: argparse._ArgumentGroup, name: str, *aliases: str, **kwargs: Any) -> None:
    """Add `--name` (and `--name-with-dashes`, and any `aliases`) storing to `name`."""
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    for alias in aliases:
        flags += [f"--{alias}", f"--{alias.replace('_', '-')}"] if "_" in alias else [alias]
    group.add_argument(*flags, dest=name, **kwargs)


def switch(group: argparse._ArgumentGroup, name: str, help_text: str, default: bool) -> None:
    """An `on`/`off` flag."""
    add(group, name, choices=("on", "off"), default="on" if default else "off", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `speech-to-speech` command."""
    parser = _Parser(
        prog="speech-to-speech",
        description=(
            "A voice-agent server: VAD -> STT -> LLM -> TTS, streamed end to end.\n"
            "Default: an OpenAI Realtime-compatible WebSocket server at "
            "ws://HOST:PORT/v1/realtime on the bundled local models."
        ),
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _run_flags(parser.add_argument_group("run mode"))
    _vad_flags(parser.add_argument_group("voice activity detection (Silero)"))
    turn = parser.add_argument_group("end of turn (Smart Turn v3)")
    add(
        turn,
        "turn_detector",
        choices=("auto", "smart_turn", "silence"),
        default=_KNOBS["turn_detector"],
        help="what ends a user's turn: smart_turn: the learned Smart Turn v3 model on the "
        "audio (a turn it calls complete ends after 200 ms of silence, one it calls "
        "unfinished waits), for every session; silence: the silence rule only; auto: "
        "Smart Turn for semantic_vad sessions (if its model is installed) and the silence "
        "rule for server_vad, as OpenAI defines them",
    )
    add(
        turn,
        "turn_model_path",
        default=None,
        help="Smart Turn v3 ONNX model file; None = smart-turn-v3.2-cpu.onnx from the "
        "installed pipecat-ai package (pip install --no-deps pipecat-ai)",
    )
    _model_flags(parser)
    _engine_flags(parser.add_argument_group("engine"))
    _device_flags(parser.add_argument_group("audio devices (local mode)"))
    _socket_flags(parser.add_argument_group("socket mode (with listen_and_play)"))
    add(
        parser.add_argument_group("websocket mode"),
        "ws_output_rate",
        type=_rate,
        default=DEFAULTS["websocket_output_rate"],
        help="rate of the answer's PCM unless a client asks for another",
    )
    return parser


def defaults() -> argparse.Namespace:
    """Every flag's default (what the in-process API starts from)."""
    return build_parser().parse_args([])


def _device_flags(g: argparse._ArgumentGroup) -> None:
    add(
        g,
        "list_devices",
        action="store_true",
        help="print the audio devices (index, name, input/output, description) and exit",
    )
    device_flags(g)
    add(
        g,
        "barge_in_min_ms",
        type=number(float, 0, 10_000),
        default=DEFAULTS["local"]["barge_in_min_ms"],
        help="while the answer plays, speech must last this long to interrupt it; "
        "shorter bursts (echo the canceller let through) are dropped (0: the VAD's "
        "min_speech_ms only)",
    )
    nr = _SESSION["audio"]["input"].get("noise_reduction")
    add(
        g,
        "noise_reduction",
        choices=("off", "near_field", "far_field"),
        default=nr["type"] if nr else "off",
        help="RNNoise on the input before the VAD: near_field (headset), far_field "
        "(laptop or room microphone); the default of every session, a Realtime client "
        "may set its own",
    )


def device_flags(g: argparse._ArgumentGroup) -> None:
    """The microphone and speaker flags of the local mode and the clients."""
    add(g, "input_device", default=None, help="microphone: a name or index; None = default")
    add(g, "output_device", default=None, help="speaker: a name or index; None = default")
    switch(g, "aec", "echo cancellation (AEC3) of what the speaker plays", True)
    add(
        g,
        "block_mic_during_playback",
        action="store_true",
        help="mute the microphone while the speaker plays (no barge-in; for setups "
        "where echo cancellation is not enough)",
    )


#: A TCP port number (0: any free port), for argparse.
port = number(int, 0, 65535)
#: A PCM sample rate; the core refuses the ones it cannot resample from.
_rate = number(int, 8000, 48000)


def _socket_flags(s: argparse._ArgumentGroup) -> None:
    sock: dict[str, int] = DEFAULTS["socket"]
    add(s, "send_port", type=port, default=sock["send_port"], help="microphone port")
    add(s, "recv_port", type=port, default=sock["recv_port"], help="speaker port")
    add(s, "send_rate", type=_rate, default=sock["rate"], help="rate of the PCM clients send")
    add(s, "recv_rate", type=_rate, default=sock["rate"], help="rate of the PCM clients receive")
    add(
        s,
        "list_play_chunk_size",
        type=number(int, 1, 1 << 20),
        default=sock["chunk_samples"],
        help="samples per chunk of the answer",
    )


def _run_flags(run: argparse._ArgumentGroup) -> None:
    add(
        run,
        "mode",
        choices=MODES,
        default="realtime",
        help="realtime: OpenAI Realtime WebSocket server; local: microphone and speaker; "
        "socket: TCP raw PCM (with listen_and_play); websocket: plain WebSocket of raw "
        "16 kHz int16 mono PCM",
    )
    add(run, "host", default=DEFAULTS["host"], help="address the server listens on")
    add(
        run,
        "port",
        type=number(int, 0, 65535),
        default=DEFAULTS["port"],
        help="port the server listens on (0: any free port)",
    )
    add(
        run,
        "api_key",
        default=None,
        help="require this key (Authorization: Bearer KEY); default: env "
        "SPEECH_TO_SPEECH_API_KEY, else no auth (only sensible on 127.0.0.1)",
    )
    _web_flags(run)
    add(
        run,
        "max_message_bytes",
        type=number(int, 1024, 2**31 - 1),
        default=DEFAULTS["max_message_bytes"],
        help="largest client message answered normally",
    )
    add(
        run,
        "compat",
        choices=("openai", "original"),
        default="openai",
        help="client defaults of the realtime server: openai (OpenAI's: 24 kHz input, "
        "transcription events only when configured); original (clients written for the "
        "original Python project: --input_audio_rate 16000 and --always_transcribe)",
    )
    add(
        run,
        "input_audio_rate",
        type=number(int, 8000, 192_000),
        default=None,
        help="PCM16 rate of a realtime client that declares no input format "
        "(default: 24000 as OpenAI's, 16000 with --compat original)",
    )
    add(
        run,
        "always_transcribe",
        action="store_true",
        help="send conversation.item.input_audio_transcription.completed for every user "
        "turn even when the client configured no transcription (on with --compat original)",
    )
    add(
        run,
        "log_level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="Python log level (the Rust core follows S2S_LOG)",
    )


def _web_flags(run: argparse._ArgumentGroup) -> None:
    """WebRTC calls (POST /v1/realtime/calls) and HTTPS for the browser page."""
    switch(
        run,
        "webrtc",
        "serve WebRTC calls at POST /v1/realtime/calls (Opus audio and the oai-events data "
        "channel, as OpenAI's API); the page at / uses them",
        True,
    )
    add(
        run,
        "webrtc_port",
        type=number(int, 0, 65535),
        default=None,
        help="the one UDP port every WebRTC call uses; None = the same number as --port "
        "(0: any free port)",
    )
    add(
        run,
        "webrtc_public_ip",
        default=None,
        help="the address clients reach this server at, when it is behind a 1:1 NAT: "
        "advertised as an ICE candidate on --webrtc_port (forward that UDP port to it)",
    )
    add(
        run,
        "tls_cert",
        default=None,
        help="serve HTTPS and WSS with this certificate chain (PEM); with --tls_key. "
        "Browsers give the page the microphone only over HTTPS (or on localhost)",
    )
    add(run, "tls_key", default=None, help="the private key of --tls_cert (PEM)")


def _vad_flags(vad: argparse._ArgumentGroup) -> None:
    add(
        vad,
        "vad_model_path",
        default=None,
        help="Silero ONNX model file; None = the one installed by silero-vad",
    )
    add(
        vad,
        "vad_backend",
        "vad_engine",
        choices=BACKENDS,
        default="auto",
        help="native: the network in Rust, weights read from the model file (no ONNX "
        "Runtime needed); onnxruntime: the file run by ONNX Runtime; auto: native when "
        "it recognises the file, else onnxruntime",
    )
    add(
        vad,
        "thresh",
        type=number(float, 0, 1, low_open=True, high_open=True),
        default=_VAD["threshold"],
        help="speech probability above which audio is speech",
    )
    add(
        vad,
        "min_speech_ms",
        type=number(int, 0, 10_000),
        default=int(_KNOBS["min_speech_ms"]),
        help="shorter blips are not speech",
    )
    add(
        vad,
        "min_silence_ms",
        type=number(int, 0, 10_000),
        default=_VAD["silence_duration_ms"],
        help="silence that ends a turn",
    )
    add(
        vad,
        "speech_pad_ms",
        type=number(int, 0, 10_000),
        default=_VAD["prefix_padding_ms"],
        help="audio kept before the speech start",
    )
    add(
        vad,
        "max_speech_ms",
        type=number(float, 0, 3_600_000, low_open=True, infinite=True),
        default=float("inf"),
        help="longest turn before it is cut",
    )


def _model_flags(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument_group("presets")
    add(
        p,
        "preset",
        choices=sorted(PRESETS),
        default=None,
        help="backend defaults for a machine: "
        + "; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items())
        + "; flags given explicitly still win",
    )
    add(
        p,
        "local_mac_optimal_settings",
        action="store_true",
        help="the original project's name for --preset mac",
    )
    g = parser.add_argument_group("models")
    add(g, "stt", default="faster-whisper", help="speech-to-text backend")
    add(g, "llm", default="llama-cpp", help="language-model backend")
    add(g, "tts", default="piper", help="text-to-speech backend")

    s = parser.add_argument_group("speech to text")
    add(s, "stt_model", default=None, help="STT model: a directory or a model name; None = bundled")
    add(s, "stt_device", default="cpu", help="STT device (cpu, cuda, auto, mps)")
    add(s, "stt_compute_type", default="int8", help="STT compute type (int8, float16, float32...)")
    add(
        s,
        "stt_cpu_threads",
        type=number(int, 0, 1024),
        default=0,
        help="STT CPU threads; 0 = library default",
    )
    add(s, "language", default="en", help="spoken language code, or 'auto' to detect")
    add(
        s,
        "stt_base_url",
        default=None,
        help="--stt openai: base URL of an OpenAI-compatible transcription API; "
        "None = $OPENAI_BASE_URL or api.openai.com",
    )
    add(s, "stt_api_key", default=None, help="--stt openai: API key; None = $OPENAI_API_KEY")
    add(
        s,
        "beam_size",
        type=number(int, 1, 64),
        default=1,
        help="STT beam size (1 = greedy, fastest)",
    )

    m = parser.add_argument_group("language model")
    add(
        m,
        "llm_model",
        default=None,
        help="GGUF path for llama-cpp, or the model name for an API backend; "
        "None = the bundled SmolLM2 / the server's default",
    )
    add(
        m,
        "llm_n_ctx",
        type=number(int, 64, 1 << 22),
        default=2048,
        help="llama-cpp context length in tokens",
    )
    add(
        m,
        "llm_threads",
        type=number(int, 1, 1024),
        default=None,
        help="llama-cpp CPU threads (prompt and generation); None = half the cores",
    )
    add(m, "temperature", type=number(float, 0, 2), default=0.7, help="sampling temperature")
    add(
        m,
        "max_new_tokens",
        type=number(int, 1, 1 << 20),
        default=256,
        help="maximum tokens per reply",
    )
    add(
        m,
        "llm_base_url",
        default=None,
        help="base URL of an OpenAI-compatible API; None = $OPENAI_BASE_URL or api.openai.com",
    )
    add(m, "llm_api_key", default=None, help="API key; None = $OPENAI_API_KEY")
    add(m, "llm_timeout", type=_SECONDS, default=30.0, help="API request timeout in seconds")
    add(m, "init_chat_prompt", default=DEFAULT_SYSTEM_PROMPT, help="system prompt")
    add(
        m,
        "chat_size",
        type=number(int, 0, 1 << 20),
        default=_KNOBS["chat_size"],
        help="number of past turns sent to the model",
    )

    _backend_flags(parser)
    t = parser.add_argument_group("text to speech")
    add(
        t,
        "tts_voice",
        default=None,
        help="TTS voice: a Piper .onnx voice file, or a speaker name for other "
        "backends; None = the bundled en_US-joe-medium",
    )
    add(
        t,
        "tts_speed",
        type=number(float, 0.25, 4.0),
        default=1.0,
        help="speech rate (> 1 is faster)",
    )
    add(t, "tts_model", default=None, help="TTS model name or folder; None = the backend's default")
    add(t, "tts_device", default=None, help="TTS device (cpu, cuda, auto); None = backend default")
    add(
        t,
        "tts_base_url",
        default=None,
        help="--tts openai: base URL of an OpenAI-compatible speech API; "
        "None = $OPENAI_BASE_URL or api.openai.com",
    )
    add(t, "tts_api_key", default=None, help="--tts openai: API key; None = $OPENAI_API_KEY")


def _backend_flags(parser: argparse.ArgumentParser) -> None:
    """The flags each backend declares next to its handler (``register(flags=...)``)."""
    group = parser.add_argument_group("backend options")
    for info, flag in backend_flags():
        kwargs: dict[str, Any] = {"default": flag.default}
        if flag.type is not None:
            kwargs["type"] = flag.type
        add(group, flag.name, help=f"{info.stage} {info.name}: {flag.help}", **kwargs)


def _engine_flags(g: argparse._ArgumentGroup) -> None:
    for stage in ("stt", "llm", "tts"):
        add(
            g,
            f"{stage}_workers",
            type=number(int, 1, 256),
            default=DEFAULTS[f"{stage}_workers"],
            help=f"{stage.upper()} worker threads (each runs one model call at a time)",
        )
    switch(
        g,
        "speculation",
        "start STT and the LLM at the VAD's soft end, before the turn is committed "
        "(nothing is sent until it is; resumed speech discards the work)",
        _KNOBS["speculation"],
    )
    switch(
        g,
        "llm_prefill",
        "when the user starts speaking, let the LLM read the conversation so far "
        "(llama-cpp caches it, so the answer only reads the new words)",
        _KNOBS["prefill"],
    )
    add(
        g,
        "soft_end_ms",
        type=number(float, 0, 10_000),
        default=_KNOBS["soft_end_ms"],
        help="silence after which speculative work starts",
    )
    add(
        g,
        "enable_live_transcription",
        action="store_true",
        help="transcribe while the user speaks and send partial transcripts",
    )
    add(
        g,
        "max_sessions",
        type=number(int, 1, 1_000_000),
        default=DEFAULTS["max_sessions"],
        help="most sessions served at once",
    )
    add(
        g,
        "max_connections",
        type=number(int, 0, 10_000_000),
        default=0,
        help="most TCP connections open at once (sessions, health checks, refused clients); "
        f"one more is closed when accepted; 0 = max_sessions + {DEFAULTS['max_connections_extra']}",
    )
    for stage, what in (
        ("stt", "a transcription with no output"),
        ("llm", "an LLM call with no token (first or next)"),
        ("tts", "a TTS call with no audio (first chunk or next)"),
    ):
        add(
            g,
            f"{stage}_timeout_s",
            type=_SECONDS,
            default=DEFAULTS["stage_timeout_s"],
            help=f"{what} for this long fails its response; the call is abandoned and its "
            "worker replaced, so the stage keeps its capacity",
        )
    add(
        g,
        "send_timeout_s",
        type=number(float, 0, 3600, low_open=True),
        default=DEFAULTS["send_timeout_s"],
        help="a client that takes longer than this to take an event stopped reading: "
        "its session is closed",
    )
    add(
        g,
        "header_timeout_s",
        type=number(float, 0, 3600, low_open=True),
        default=DEFAULTS["header_timeout_s"],
        help="longest a client may take to send its HTTP request (slowloris)",
    )
    add(
        g,
        "drain_s",
        type=number(float, 0, 86_400),
        default=30.0,
        help="on SIGTERM: refuse new sessions (/health answers 503 draining), let running "
        "responses finish for up to this long, close sessions with 1001, exit 0",
    )
    switch(
        g,
        "first_audio_priority",
        "pause a response's LLM while its first clause is synthesised, so that TTS has "
        "the CPU (the LLM runs far ahead of speech anyway); off for a remote or GPU LLM",
        DEFAULTS["first_audio_priority"],
    )
    add(
        g,
        "first_clause_max_words",
        type=number(int, 0, 1000),
        default=DEFAULTS["first_clause_max_words"],
        help="words after which an answer's first clause goes to TTS before its sentence "
        "ends, at a word a phrase may end on (not 'the', 'of', 'is'...): the first sound "
        "waits for a few tokens, not a whole sentence; 0 cuts at punctuation only",
    )
