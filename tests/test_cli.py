"""The `speech-to-speech` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from speech_to_speech.cli import build_parser


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "speech_to_speech", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help_lists_every_mode_and_default() -> None:
    out = _run("--help")
    assert out.returncode == 0
    assert "--mode {realtime,local,socket,websocket}" in out.stdout
    # Every flag shows its default.
    for action in build_parser()._actions:
        if action.option_strings and action.dest not in ("help", "version"):
            assert action.option_strings[0] in out.stdout, action.dest
    assert out.stdout.count("(default:") >= 30


def test_defaults() -> None:
    args = build_parser().parse_args([])
    assert args.mode == "realtime"
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    assert (args.stt, args.llm, args.tts) == ("faster-whisper", "llama-cpp", "piper")
    assert build_parser().parse_args(["--min-silence-ms", "700"]).min_silence_ms == 700
    assert args.vad_backend == "auto"
    # --vad_engine is the flag's old name, kept as an alias.
    for flag in ("--vad_backend", "--vad-backend", "--vad_engine", "--vad-engine"):
        assert build_parser().parse_args([flag, "onnxruntime"]).vad_backend == "onnxruntime"


def test_unknown_vad_engine_is_refused() -> None:
    out = _run("--vad-engine", "tensorrt")
    assert out.returncode == 2
    assert "invalid choice: 'tensorrt'" in out.stderr


@pytest.mark.skipif(sys.platform == "darwin", reason="the flag is for macOS")
def test_mac_settings_off_macos_exit_2_in_one_line() -> None:
    out = _run("--mode", "local", "--local_mac_optimal_settings")
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "macOS" in out.stderr and "Traceback" not in out.stderr


def test_missing_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever is installed here, a backend whose library is missing stops start-up
    with the one pip line (the library's absence is simulated)."""
    from speech_to_speech import cli
    from speech_to_speech.handlers import registry

    real = registry._module_installed
    monkeypatch.setattr(registry, "_module_installed", lambda m: m != "onnx_asr" and real(m))
    status = cli.main(["--mode", "realtime", "--stt", "parakeet-tdt", "--port", "0"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "pip install 'speech-to-speech[parakeet]'" in err
    assert "Traceback" not in err


def test_presets_set_backend_defaults_and_flags_still_win() -> None:
    from speech_to_speech.presets import check_preset, parse_with_preset

    args = parse_with_preset(build_parser(), ["--preset", "cuda"])
    assert (args.stt, args.llm, args.tts) == ("parakeet-tdt", "responses-api", "qwen3")
    assert args.stt_device == "cuda" and args.tts_device == "cuda"
    args = parse_with_preset(build_parser(), ["--preset", "cuda", "--tts", "piper"])
    assert (args.stt, args.tts) == ("parakeet-tdt", "piper")
    for argv in (["--preset", "mac"], ["--local_mac_optimal_settings"]):
        args = parse_with_preset(build_parser(), argv)
        assert (args.stt, args.llm, args.tts, args.preset) == (
            "whisper-mlx",
            "mlx-lm",
            "kokoro",
            "mac",
        )
    args = parse_with_preset(build_parser(), ["--preset", "cpu"])
    assert (args.stt, args.llm, args.tts) == ("faster-whisper", "llama-cpp", "piper")
    check_preset(args)  # the bundled models are installed here
    assert parse_with_preset(build_parser(), []).preset is None


def test_preset_with_missing_backends_names_its_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cuda preset's libraries are missing (simulated): one line names its extra."""
    from speech_to_speech import cli
    from speech_to_speech.handlers import registry

    real = registry._module_installed
    missing = {"onnx_asr", "qwen_tts"}
    monkeypatch.setattr(registry, "_module_installed", lambda m: m not in missing and real(m))
    status = cli.main(["--preset", "cuda", "--port", "0"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("speech-to-speech:")]
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "preset cuda needs" in lines[0]
    assert "pip install 'speech-to-speech[cuda]'" in lines[0]
