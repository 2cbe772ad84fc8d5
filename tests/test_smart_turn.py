"""Smart Turn v3 in the core: the log-mel front end against the reference, verdicts, the policy.

The reference front end is pipecat's own numpy extractor, loaded by path from
the installed ``pipecat-ai`` wheel (importing the package would pull in its
framework). The model file comes from the same wheel, which ``.ci/setup``
installs; without it these tests fail rather than skip.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import wave
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

import speech_to_speech as s2s
from speech_to_speech import vad
from speech_to_speech.cli import build_parser

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
FILES = sorted(p.name for p in AUDIO.glob("*.wav"))
SR = 16_000
WINDOW = 8 * SR

Samples = npt.NDArray[np.float32]


def read_wav(name: str) -> Samples:
    with wave.open(str(AUDIO / name)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def then_silence(speech: Samples, ms: int) -> Samples:
    return np.concatenate([speech, np.zeros(ms * SR // 1000, np.float32)])


@pytest.fixture(scope="module")
def model_path() -> str:
    return vad.default_turn_model_path()


@pytest.fixture(scope="module")
def reference(model_path: str) -> ModuleType:
    path = Path(model_path).parents[1] / "_whisper_features.py"
    spec = importlib.util.spec_from_file_location("_smart_turn_reference", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model(model_path: str) -> s2s.SmartTurn:
    return vad.load_smart_turn(model_path)


def reference_features(reference: ModuleType, audio: Samples) -> Samples:
    """What pipecat's analyser does: keep the last 8 s, zero-pad at the start."""
    x = audio[-WINDOW:]
    x = np.pad(x, (WINDOW - len(x), 0))
    features: Samples = reference.compute_whisper_log_mel_features(x, do_normalize=True)
    return features


def test_the_shared_audio_is_there() -> None:
    assert len(FILES) >= 5, f"../shared/audio is missing or short: {FILES}"


@pytest.mark.parametrize("name", FILES)
def test_front_end_matches_the_reference(reference: ModuleType, name: str) -> None:
    audio = read_wav(name)
    # The whole file (jfk.wav is longer than 8 s), a cut, a short turn, a
    # fragment shorter than one FFT window, and a turn longer than the window.
    cases = [audio, audio[: len(audio) // 2], audio[:SR], audio[:300], np.tile(audio, 4)]
    for case in cases:
        ours = s2s.log_mel_features(case)
        theirs = reference_features(reference, case)
        assert ours.shape == theirs.shape == (80, 800)
        assert ours.dtype == np.float32
        diff = float(np.abs(ours - theirs).max())
        assert diff <= 1e-4, (name, len(case), diff)


def test_front_end_edge_cases(reference: ModuleType) -> None:
    for case in [np.zeros(0, np.float32), np.zeros(SR, np.float32), np.full(SR, 0.25, np.float32)]:
        diff = np.abs(s2s.log_mel_features(case) - reference_features(reference, case)).max()
        assert diff <= 1e-4, (len(case), diff)


def test_the_model_matches_python_onnxruntime(model: s2s.SmartTurn, model_path: str) -> None:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    for name in FILES:
        audio = then_silence(read_wav(name), 200)
        features = s2s.log_mel_features(audio)
        expected = float(session.run(None, {"input_features": features[None]})[0].item())
        verdict = model.predict(audio)
        assert 0.0 <= verdict.probability <= 1.0
        assert abs(verdict.probability - expected) < 1e-4, name
        assert verdict.complete == (verdict.probability > 0.5)
        assert model.predict_features(features).probability == pytest.approx(
            verdict.probability, abs=1e-6
        )


def test_complete_and_cut_utterances(model: s2s.SmartTurn) -> None:
    # "Tell me a fun fact about the ocean." then a 200 ms pause.
    question = model.predict(then_silence(read_wav("q_ocean_fact.wav"), 200))
    assert question.complete and question.probability > 0.9, question
    # Kennedy stopped mid-sentence ("... ask what you can"): not finished.
    jfk = read_wav("jfk.wav")
    cut = model.predict(then_silence(jfk[: len(jfk) * 3 // 4], 200))
    assert not cut.complete and cut.probability < 0.2, cut
    wait = read_wav("interrupt_wait.wav")
    assert model.predict(then_silence(wait, 200)).complete
    assert not model.predict(then_silence(wait[: len(wait) * 3 // 4], 200)).complete


def test_policy_commits_a_complete_turn_before_the_silence_rule(model: s2s.SmartTurn) -> None:
    audio = read_wav("q_ocean_fact.wav")
    end = len(audio) * 1000 // SR
    smart = s2s.EndOfTurnPolicy()
    rule = s2s.EndOfTurnPolicy(model=False)
    for p in (smart, rule):
        p.speech()
    assert smart.pause(end, end + 200) == "decide"
    verdict = model.predict(then_silence(audio, 200))
    assert smart.verdict(smart.decision, verdict.probability, end + 260) == "commit"
    assert smart.reason == "complete"
    assert rule.pause(end, end + 200) == "wait"
    commit = next(t for t in range(end + 200, end + 2000, 32) if rule.tick(t) == "commit")
    assert rule.reason == "silence_rule"
    assert commit >= end + 500 > end + 260 + 200


def test_policy_holds_a_mid_sentence_pause(model: s2s.SmartTurn) -> None:
    jfk = read_wav("jfk.wav")
    cut = jfk[: len(jfk) * 3 // 4]
    at = len(cut) * 1000 // SR
    policy = s2s.EndOfTurnPolicy(eagerness="high", recheck_ms=None)
    assert policy.max_wait_ms == 2000
    policy.speech()
    assert policy.pause(at, at + 200) == "decide"
    verdict = model.predict(then_silence(cut, 200))
    assert policy.verdict(policy.decision, verdict.probability, at + 260) == "wait"
    assert all(policy.tick(t) == "wait" for t in range(at + 260, at + 1900, 32))
    # Speech resumes: the same turn goes on.
    assert policy.speech() is True
    assert policy.in_turn


def test_policy_settings() -> None:
    p = s2s.EndOfTurnPolicy()
    assert (p.complete_silence_ms, p.silence_ms, p.max_wait_ms, p.recheck_ms, p.model) == (
        200,
        500,
        4000,
        600,
        True,
    )
    assert (p.complete_threshold, p.hold_threshold) == pytest.approx((0.5, 0.1))
    assert [s2s.EndOfTurnPolicy(eagerness=e).max_wait_ms for e in ("low", "medium", "high")] == [
        8000,
        4000,
        2000,
    ]
    with pytest.raises(s2s.VadConfigError, match="eagerness"):
        s2s.EndOfTurnPolicy(eagerness="eager")  # type: ignore[arg-type]
    with pytest.raises(s2s.VadConfigError, match="max_wait_ms"):
        s2s.EndOfTurnPolicy(max_wait_ms=100)
    with pytest.raises(s2s.VadConfigError, match="hold_threshold"):
        s2s.EndOfTurnPolicy(hold_threshold=0.7)


def test_missing_model_file_names_the_install_line(tmp_path: Path) -> None:
    with pytest.raises(s2s.ModelNotFoundError) as err:
        vad.load_smart_turn(str(tmp_path / "nope.onnx"))
    assert 'pip install --no-deps "pipecat-ai' in str(err.value)
    assert "--turn_model_path" in str(err.value)


def test_missing_package_names_the_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vad, "_package_dir", lambda name: None)
    with pytest.raises(s2s.ModelNotFoundError) as err:
        vad.default_turn_model_path()
    assert vad.TURN_MODEL_INSTALL_HINT in str(err.value)


def test_locating_the_model_does_not_import_pipecat(model_path: str) -> None:
    code = (
        "import sys; from speech_to_speech import vad; "
        "p = vad.default_turn_model_path(); "
        "print(p, any(m == 'pipecat' or m.startswith('pipecat.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == [model_path, "False"]
    assert model_path.endswith("pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")


def test_turn_model_path_flag() -> None:
    assert build_parser().parse_args([]).turn_model_path is None
    for flag in ("--turn_model_path", "--turn-model-path"):
        assert build_parser().parse_args([flag, "/m.onnx"]).turn_model_path == "/m.onnx"


def test_not_a_turn_model_is_a_clear_error() -> None:
    with pytest.raises(s2s.ModelError, match="not a Smart Turn v3 model"):
        vad.load_smart_turn(vad.default_model_path())
