"""Silero VAD in the core: parity with Python onnxruntime, turns, isolation, errors.

Most tests run once per engine (the `model` fixture): the native Rust network
and ONNX Runtime must both match the Python onnxruntime loop and give the same
turns.
"""

from __future__ import annotations

import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import speech_to_speech as s2s
from speech_to_speech import vad

ort = pytest.importorskip("onnxruntime")

AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
SR = 16000
ENGINES = ["native", "onnxruntime"]
SPEECH = ["jfk.wav", "q_book.wav", "q_capital_france.wav", "q_ocean_fact.wav", "interrupt_wait.wav"]

Samples = npt.NDArray[np.float32]


def read_wav(name: str) -> tuple[Samples, int]:
    with wave.open(str(AUDIO / name)) as w:
        assert w.getnchannels() == 1
        assert w.getsampwidth() == 2
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0), rate


def load_16k(name: str) -> Samples:
    samples, rate = read_wav(name)
    if rate != SR:
        from scipy.signal import resample_poly

        g = np.gcd(rate, SR)
        samples = resample_poly(samples, SR // g, rate // g).astype(np.float32)
    return samples


@pytest.fixture(scope="module")
def model_path() -> str:
    vad.init_onnxruntime()
    return vad.default_model_path()


@pytest.fixture(scope="module", params=ENGINES)
def model(model_path: str, request: pytest.FixtureRequest) -> s2s.SileroVad:
    model = s2s.SileroVad(model_path, backend=request.param)
    assert model.backend == request.param
    return model


def reference_probabilities(model_path: str, samples: Samples, sr: int = SR) -> Samples:
    """The loop Python pipelines run: 512 new samples plus 64 of context per call."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    n, ctx = (512, 64) if sr == 16000 else (256, 32)
    padded = np.zeros(-(-len(samples) // n) * n, dtype=np.float32)
    padded[: len(samples)] = samples
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, ctx), dtype=np.float32)
    sr_arr = np.array(sr, dtype=np.int64)
    probs = []
    for i in range(0, len(padded), n):
        x = np.concatenate([context, padded[None, i : i + n]], axis=1)
        out, state = session.run(None, {"input": x, "state": state, "sr": sr_arr})
        context = x[:, -ctx:]
        probs.append(float(out[0, 0]))
    return np.array(probs, dtype=np.float32)


def tone(freq: float, seconds: float, amp: float = 0.5, sr: int = SR) -> Samples:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, amp: float, seed: int = 0) -> Samples:
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def chirp(seconds: float) -> Samples:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (100 * t + 900 * t * t))).astype(np.float32)


SYNTHETIC = {
    "silence": lambda: np.zeros(3 * SR, dtype=np.float32),
    "tone_440": lambda: tone(440, 3),
    "tone_1k": lambda: tone(1000, 3, amp=0.8),
    "white_noise": lambda: noise(3, 0.1),
    "chirp": lambda: chirp(3),
    "odd_length": lambda: noise(1.01, 0.05, seed=3),
}


# --- parity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", SPEECH)
def test_parity_on_speech(model_path: str, engine: str, name: str) -> None:
    samples = load_16k(name)
    ours = s2s.speech_probabilities(samples, model_path=model_path, backend=engine)  # type: ignore[arg-type]
    ref = reference_probabilities(model_path, samples)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (-(-len(samples) // 512),)
    assert float(np.max(np.abs(ours - ref))) <= 1e-4
    # The comparison means something only if the model hears speech here.
    assert ref.max() > 0.9
    assert ref.min() < 0.1


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_parity_on_synthetic(model_path: str, model: s2s.SileroVad, name: str) -> None:
    samples = SYNTHETIC[name]()
    ref = reference_probabilities(model_path, samples)
    ours = model.speech_probabilities(samples)
    assert float(np.max(np.abs(ours - ref))) <= 1e-4


@pytest.mark.parametrize("name", SPEECH)
def test_parity_at_8khz(model_path: str, model: s2s.SileroVad, name: str) -> None:
    from scipy.signal import resample_poly

    samples = resample_poly(load_16k(name), 1, 2).astype(np.float32)
    ref = reference_probabilities(model_path, samples, sr=8000)
    ours = model.speech_probabilities(samples, sample_rate=8000)
    assert ours.shape == ref.shape
    assert float(np.max(np.abs(ours - ref))) <= 1e-4
    assert ref.max() > 0.9


# --- segmentation -------------------------------------------------------------------------------


def energy_bounds(samples: Samples, frame_ms: int = 10, floor_db: float = -35.0) -> tuple[int, int]:
    """First and last millisecond of frames within `floor_db` of the loudest frame."""
    n = SR * frame_ms // 1000
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    active = np.flatnonzero(db > db.max() + floor_db)
    return int(active[0] * frame_ms), int((active[-1] + 1) * frame_ms)


def build_two_turns() -> tuple[Samples, list[tuple[int, int]]]:
    """Silence, utterance, silence, utterance, silence, and the speech bounds in ms."""
    parts: list[Samples] = []
    bounds = []
    offset = 0
    for gap_s, name in [(1.0, "q_capital_france.wav"), (1.5, "q_book.wav")]:
        gap = np.zeros(int(gap_s * SR), dtype=np.float32)
        utt = load_16k(name)
        start, end = energy_bounds(utt)
        offset += len(gap)
        bounds.append((offset * 1000 // SR + start, offset * 1000 // SR + end))
        offset += len(utt)
        parts += [gap, utt]
    parts.append(np.zeros(int(1.2 * SR), dtype=np.float32))
    return np.concatenate(parts), bounds


def run_stream(
    stream: s2s.VadStream, samples: Samples, sizes: list[int] | None = None
) -> list[s2s.VadEvent]:
    events: list[s2s.VadEvent] = []
    pos, i = 0, 0
    while pos < len(samples):
        step = sizes[i % len(sizes)] if sizes else 320
        events += stream.feed(samples[pos : pos + step])
        pos += step
        i += 1
    events += stream.flush()
    return events


def turns(events: list[s2s.VadEvent]) -> list[tuple[int, int]]:
    starts = [e.speech_start_ms for e in events if e.type == "speech_started"]
    stops = [e.speech_end_ms for e in events if e.type == "speech_stopped"]
    assert len(starts) == len(stops)
    return [(int(a or 0), int(b or 0)) for a, b in zip(starts, stops, strict=True)]


@pytest.mark.parametrize("snr_db", [None, 20.0])
def test_two_utterances_give_two_turns(model: s2s.SileroVad, snr_db: float | None) -> None:
    samples, bounds = build_two_turns()
    if snr_db is not None:
        speech = np.concatenate(
            [samples[a * SR // 1000 : b * SR // 1000] for a, b in bounds]
        ).astype(np.float64)
        noise_rms = np.sqrt(np.mean(speech**2) / 10 ** (snr_db / 10))
        rng = np.random.default_rng(7)
        samples = (samples + noise_rms * rng.standard_normal(len(samples))).astype(np.float32)
    stream = s2s.VadStream(model=model)
    events = run_stream(stream, samples)
    found = turns(events)
    assert len(found) == 2, (found, bounds)
    for (start, end), (want_start, want_end) in zip(found, bounds, strict=True):
        assert abs(start - want_start) <= 100, (found, bounds)
        assert abs(end - want_end) <= 100, (found, bounds)

    # Each turn: speech_started, soft_end, speech_stopped, utterance, in order;
    # the default soft end (50 ms) may also come at a short gap inside the speech, and
    # then the speech resumes.
    kinds = " ".join(e.type for e in events)
    turn = r"speech_started (soft_end speech_resumed )*soft_end speech_stopped utterance"
    assert re.fullmatch(f"{turn} {turn}", kinds), kinds
    # With the soft end at 200 ms, the gaps inside these sentences are too short.
    longer = run_stream(s2s.VadStream(model=model, soft_end_ms=200.0), samples)
    assert [e.type for e in longer] == [
        "speech_started",
        "soft_end",
        "speech_stopped",
        "utterance",
    ] * 2
    utterances = [e for e in events if e.type == "utterance"]
    for utt, started in zip(
        utterances, [e for e in events if e.type == "speech_started"], strict=True
    ):
        assert utt.audio is not None
        assert utt.audio.dtype == np.float32
        assert utt.start_ms == started.audio_start_ms
        assert started.audio_start_ms == max(0, (started.speech_start_ms or 0) - 300)
        assert utt.start_ms is not None and utt.end_ms is not None
        assert abs(len(utt.audio) - (utt.end_ms - utt.start_ms) * SR // 1000) <= SR // 1000
        # The audio is the input itself.
        first = utt.start_ms * SR // 1000
        np.testing.assert_allclose(utt.audio[:1000], samples[first : first + 1000], atol=1e-3)
    stops = [e for e in events if e.type == "speech_stopped"]
    for stop in stops:
        # Realtime semantics: audio_end_ms includes the closing silence.
        assert (stop.audio_end_ms or 0) - (stop.speech_end_ms or 0) >= 500


@pytest.mark.parametrize(
    "signal",
    [
        pytest.param(lambda: noise(6, 0.05), id="white_noise"),
        pytest.param(lambda: noise(6, 0.3, seed=1), id="loud_noise"),
        pytest.param(lambda: tone(440, 6), id="tone_440"),
        pytest.param(lambda: tone(1000, 6, amp=0.8), id="tone_1k"),
        pytest.param(lambda: np.zeros(6 * SR, dtype=np.float32), id="silence"),
    ],
)
def test_no_turn_in_noise_or_tones(model: s2s.SileroVad, signal: object) -> None:
    assert callable(signal)
    events = run_stream(s2s.VadStream(model=model), signal())
    assert events == []


def test_soft_end_then_resumed(model: s2s.SileroVad) -> None:
    # A 300 ms pause inside a turn: soft end (200 ms) but no stop (500 ms).
    a = load_16k("q_capital_france.wav")
    b = load_16k("q_ocean_fact.wav")
    a_end = energy_bounds(a)[1] * SR // 1000
    b_start = energy_bounds(b)[0] * SR // 1000
    samples = np.concatenate(
        [
            np.zeros(SR // 2, dtype=np.float32),
            a[:a_end],
            np.zeros(int(0.35 * SR), dtype=np.float32),
            b[b_start:],
            np.zeros(SR, dtype=np.float32),
        ]
    )
    events = run_stream(s2s.VadStream(model=model), samples)
    kinds = [e.type for e in events]
    assert kinds.count("speech_started") == 1
    assert "speech_resumed" in kinds
    assert kinds.index("soft_end") < kinds.index("speech_resumed") < kinds.index("speech_stopped")


def test_max_speech_cuts_turns(model: s2s.SileroVad) -> None:
    samples = load_16k("jfk.wav")
    events = run_stream(s2s.VadStream(model=model, max_speech_ms=2000.0), samples)
    stops = [e for e in events if e.type == "speech_stopped"]
    assert any(e.forced for e in stops)
    for e in events:
        if e.type == "utterance":
            assert e.audio is not None
            # 2 s of speech plus at most 300 ms of padding on each side.
            assert len(e.audio) <= int(2.6 * SR) + 512


def test_eight_khz_stream(model: s2s.SileroVad) -> None:
    from scipy.signal import resample_poly

    samples, _ = build_two_turns()
    events = run_stream(
        s2s.VadStream(model=model, sample_rate=8000),
        resample_poly(samples, 1, 2).astype(np.float32),
        sizes=[160],
    )
    assert len(turns(events)) == 2


# --- state isolation and batching ---------------------------------------------------------------


def event_key(e: s2s.VadEvent) -> tuple[object, ...]:
    audio = None if e.audio is None else (len(e.audio), float(np.sum(e.audio)))
    return (e.type, e.audio_start_ms, e.speech_start_ms, e.audio_end_ms, e.speech_end_ms,
            e.audio_ms, e.forced, e.start_ms, e.end_ms, audio)  # fmt: skip


def test_interleaved_streams_match_streams_fed_alone(model: s2s.SileroVad) -> None:
    a, _ = build_two_turns()
    b = load_16k("jfk.wav")
    alone_a = [event_key(e) for e in run_stream(s2s.VadStream(model=model), a, [700])]
    alone_b = [event_key(e) for e in run_stream(s2s.VadStream(model=model), b, [300])]
    assert alone_a
    assert alone_b

    sa, sb = s2s.VadStream(model=model), s2s.VadStream(model=model)
    got_a: list[s2s.VadEvent] = []
    got_b: list[s2s.VadEvent] = []
    pa = pb = 0
    while pa < len(a) or pb < len(b):
        got_a += sa.feed(a[pa : pa + 700])
        got_b += sb.feed(b[pb : pb + 300])
        pa += 700
        pb += 300
    got_a += sa.flush()
    got_b += sb.flush()
    assert [event_key(e) for e in got_a] == alone_a
    assert [event_key(e) for e in got_b] == alone_b

    # The batched path (one model call per round) gives the same events.
    sa, sb = s2s.VadStream(model=model), s2s.VadStream(model=model)
    batched_a: list[s2s.VadEvent] = []
    batched_b: list[s2s.VadEvent] = []
    pa = pb = 0
    while pa < len(a) or pb < len(b):
        ea, eb = s2s.feed_streams([sa, sb], [a[pa : pa + 700], b[pb : pb + 300]])
        batched_a += ea
        batched_b += eb
        pa += 700
        pb += 300
    batched_a += sa.flush()
    batched_b += sb.flush()
    assert [event_key(e) for e in batched_a] == alone_a
    assert [event_key(e) for e in batched_b] == alone_b


def test_batched_and_unbatched_probabilities_match(model: s2s.SileroVad) -> None:
    signals = [load_16k("jfk.wav")[: 5 * SR], noise(5, 0.1), tone(440, 5), chirp(5)]
    signals.append(build_two_turns()[0][: 5 * SR])
    chunks = len(signals[0]) // 512
    states = [s2s.VadState() for _ in signals]
    batched = np.stack(
        [
            model.process_batch(states, np.stack([s[i * 512 : (i + 1) * 512] for s in signals]))
            for i in range(chunks)
        ],
        axis=1,
    )
    for row, signal in zip(batched, signals, strict=True):
        alone = model.speech_probabilities(signal[: chunks * 512])
        assert float(np.max(np.abs(row - alone))) <= 1e-5
    assert batched.max() > 0.9


def test_reset_starts_over(model: s2s.SileroVad) -> None:
    samples, _ = build_two_turns()
    stream = s2s.VadStream(model=model)
    first = [event_key(e) for e in run_stream(stream, samples)]
    stream.reset()
    assert stream.position_ms == 0
    assert [event_key(e) for e in run_stream(stream, samples)] == first


def test_streams_opened_by_path_share_one_session(model_path: str) -> None:
    a = s2s.VadStream(model_path=model_path)
    b = s2s.VadStream(model_path=model_path)
    # One session: they can be fed as one batch.
    events = s2s.feed_streams([a, b], [np.zeros(1024, np.float32)] * 2)
    assert events == [[], []]
    assert a.position_ms == b.position_ms == 64


def test_streams_must_share_a_model(model_path: str, model: s2s.SileroVad) -> None:
    other = s2s.VadStream(model_path=model_path)
    with pytest.raises(s2s.VadInputError):
        s2s.feed_streams([s2s.VadStream(model=model), other], [np.zeros(512, np.float32)] * 2)


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [22050, 44100, 48000, 24000])
def test_other_rates_go_through_the_resampler(model: s2s.SileroVad, rate: int) -> None:
    # A stream at any supported rate works; the raw model state does not.
    stream = s2s.VadStream(model=model, sample_rate=rate)
    assert stream.feed(np.zeros(rate // 10, np.float32)) == []
    with pytest.raises(s2s.UnsupportedSampleRateError, match="8000 or 16000"):
        s2s.VadState(sample_rate=rate)


@pytest.mark.parametrize("rate", [11025, 32000, 0])
def test_unsupported_sample_rate(model_path: str, model: s2s.SileroVad, rate: int) -> None:
    with pytest.raises(s2s.UnsupportedSampleRateError):
        s2s.VadStream(model=model, sample_rate=rate)
    with pytest.raises(s2s.UnsupportedSampleRateError):
        s2s.speech_probabilities(np.zeros(512, np.float32), model_path=model_path, sample_rate=rate)
    assert issubclass(s2s.UnsupportedSampleRateError, s2s.AudioFormatError)
    assert issubclass(s2s.VadError, s2s.SpeechToSpeechError)


def test_missing_model(tmp_path: Path) -> None:
    vad.init_onnxruntime()
    missing = tmp_path / "nope.onnx"
    with pytest.raises(s2s.ModelNotFoundError, match="silero-vad"):
        s2s.SileroVad(str(missing))
    with pytest.raises(s2s.ModelNotFoundError):
        s2s.VadStream(model_path=missing)


@pytest.mark.parametrize("engine", ["auto", *ENGINES])
def test_not_a_model(tmp_path: Path, engine: str) -> None:
    vad.init_onnxruntime()
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(s2s.ModelError):
        s2s.SileroVad(str(bogus), backend=engine)  # type: ignore[arg-type]
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(Path(vad.default_model_path()).read_bytes()[:100_000])
    with pytest.raises(s2s.ModelError):
        s2s.SileroVad(str(truncated), backend=engine)  # type: ignore[arg-type]


def unrecognised_copy(tmp_path: Path) -> Path:
    """The real model with one weight renamed (same length, so the protobuf
    stays valid): ONNX Runtime runs it, the native engine cannot find it."""
    data = Path(vad.default_model_path()).read_bytes()
    assert data.count(b"decoder.rnn.weight_ih") >= 2
    path = tmp_path / "renamed.onnx"
    path.write_bytes(data.replace(b"decoder.rnn.weight_ih", b"decoder.rnn.weight_xx"))
    return path


def test_auto_falls_back_to_onnxruntime(tmp_path: Path, model_path: str) -> None:
    renamed = unrecognised_copy(tmp_path)
    with pytest.raises(s2s.ModelError, match="native VAD backend"):
        s2s.SileroVad(str(renamed), backend="native")
    fallback = s2s.SileroVad(str(renamed))
    assert fallback.backend == "onnxruntime"
    assert vad.load_silero_vad(str(renamed)).backend == "onnxruntime"
    samples = load_16k("jfk.wav")
    ref = reference_probabilities(model_path, samples)
    assert float(np.max(np.abs(fallback.speech_probabilities(samples) - ref))) <= 1e-4
    # The real file runs natively by default.
    assert s2s.SileroVad(model_path).backend == "native"
    assert vad.load_silero_vad().backend == "native"


def test_unknown_engine(model_path: str) -> None:
    with pytest.raises(s2s.VadConfigError, match="auto, native or onnxruntime"):
        s2s.SileroVad(model_path, backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(s2s.VadConfigError, match="tensorrt"):
        vad.load_silero_vad(backend="tensorrt")  # type: ignore[arg-type]


def test_bad_config(model: s2s.SileroVad) -> None:
    with pytest.raises(s2s.VadConfigError, match="threshold"):
        s2s.VadStream(model=model, threshold=1.5)
    with pytest.raises(s2s.VadConfigError, match="min_silence_ms"):
        s2s.VadStream(model=model, min_silence_ms=-1.0)
    with pytest.raises(s2s.VadConfigError, match="exactly one"):
        s2s.VadStream()


def test_bad_batch(model: s2s.SileroVad) -> None:
    with pytest.raises(s2s.VadInputError):
        model.process_batch([s2s.VadState()], np.zeros((1, 500), np.float32))
    with pytest.raises(s2s.VadInputError):
        model.process_batch([s2s.VadState()], np.zeros((2, 512), np.float32))
    with pytest.raises(s2s.VadInputError, match="sample rate"):
        model.process_batch(
            [s2s.VadState(), s2s.VadState(sample_rate=8000)], np.zeros((2, 512), np.float32)
        )


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_missing_runtime_is_a_clear_error(tmp_path: Path) -> None:
    code = """
import speech_to_speech as s2s
try:
    s2s.init_onnxruntime({path!r})
except s2s.OnnxRuntimeNotFoundError as e:
    print("ERR", e)
"""
    missing = run_python(code.format(path=str(tmp_path / "libonnxruntime.so.1.99")))
    assert missing.returncode == 0, missing.stderr
    assert "ERR" in missing.stdout
    assert "pip install onnxruntime" in missing.stdout

    not_a_library = tmp_path / "libonnxruntime.so"
    not_a_library.write_bytes(b"\x7fELF garbage")
    garbage = run_python(code.format(path=str(not_a_library)))
    assert garbage.returncode == 0, garbage.stderr
    assert "pip install onnxruntime" in garbage.stdout


def test_bad_ort_dylib_path_in_helper(model_path: str) -> None:
    code = f"""
import speech_to_speech as s2s
from speech_to_speech import vad
try:
    vad.load_silero_vad({model_path!r}, backend="onnxruntime")
except s2s.OnnxRuntimeNotFoundError as e:
    print("ERR", e)
"""
    result = run_python(code, ORT_DYLIB_PATH="/nonexistent/libonnxruntime.so")
    assert result.returncode == 0, result.stderr
    assert "ERR" in result.stdout
    assert "/nonexistent/libonnxruntime.so" in result.stdout


def test_native_engine_needs_no_onnxruntime(tmp_path: Path, model_path: str) -> None:
    # A broken ORT_DYLIB_PATH does not matter until ONNX Runtime is needed.
    code = f"""
import numpy as np
import speech_to_speech as s2s
from speech_to_speech import vad
for engine in ("auto", "native"):
    model = vad.load_silero_vad({model_path!r}, backend=engine)
    print(engine, model.backend, s2s.onnxruntime_initialised())
print(s2s.VadStream(model_path={model_path!r}).model.backend)
print(s2s.speech_probabilities(np.zeros(1024, np.float32), model_path={model_path!r}).shape)
try:
    vad.load_silero_vad({str(unrecognised_copy(tmp_path))!r})
except s2s.OnnxRuntimeNotFoundError as e:
    print("ERR", e)
"""
    result = run_python(code, ORT_DYLIB_PATH="/nonexistent/libonnxruntime.so")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == ["auto native False", "native native False", "native", "(2,)"]
    # A file only ONNX Runtime could run: both reasons in one error.
    assert "native VAD backend" in lines[4]
    assert "/nonexistent/libonnxruntime.so" in lines[4]


def test_model_before_runtime_is_a_clear_error(tmp_path: Path, model_path: str) -> None:
    code = f"""
import speech_to_speech as s2s
try:
    s2s.SileroVad({model_path!r}, backend="onnxruntime")
except s2s.OnnxRuntimeNotInitialisedError as e:
    print("ERR", e)
try:
    s2s.SileroVad({str(unrecognised_copy(tmp_path))!r})
except s2s.ModelError as e:
    print("AUTO", e)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    err, auto = result.stdout.splitlines()
    assert err.startswith("ERR") and "init_onnxruntime" in err
    assert auto.startswith("AUTO") and "native VAD backend" in auto and "init_onnxruntime" in auto


def test_missing_packages_name_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vad, "_package_dir", lambda name: None)
    monkeypatch.delenv("ORT_DYLIB_PATH", raising=False)
    with pytest.raises(s2s.OnnxRuntimeNotFoundError, match="pip install onnxruntime"):
        vad.onnxruntime_library_path()
    with pytest.raises(s2s.ModelNotFoundError, match="pip install --no-deps"):
        vad.default_model_path()


def test_helpers_find_the_installed_files() -> None:
    assert Path(vad.onnxruntime_library_path()).name.startswith("libonnxruntime")
    assert vad.default_model_path().endswith("silero_vad/data/silero_vad.onnx")
    loaded = vad.load_silero_vad(intra_op_threads=1)
    assert loaded.model_path == vad.default_model_path()
    assert loaded.backend == "native"
    assert vad.load_silero_vad(backend="onnxruntime").backend == "onnxruntime"
    assert s2s.onnxruntime_initialised()
