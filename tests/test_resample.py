"""The streaming resampler from Python: chunking, lengths, quality and errors."""

import itertools
import math
import sys
import threading
import time

import numpy as np
import numpy.typing as npt
import pytest

import speech_to_speech as s2s

RATES = [8000, 16000, 22050, 24000, 44100, 48000]
PAIRS = [(24000, 16000), (16000, 24000), (22050, 24000), (48000, 16000), (8000, 44100)]


def tone(freq: float, rate: int, n: int) -> npt.NDArray[np.float32]:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def noise(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).uniform(-0.9, 0.9, n).astype(np.float32)


def stream(
    r: s2s.Resampler, x: npt.NDArray[np.float32], sizes: list[int]
) -> npt.NDArray[np.float32]:
    out, start = [], 0
    for size in sizes:
        out.append(r.process(x[start : start + size]))
        start += size
    out.append(r.process(x[start:]))
    out.append(r.flush())
    return np.concatenate(out)


@pytest.mark.parametrize(("input_rate", "output_rate"), PAIRS)
def test_random_chunks_equal_one_shot(input_rate: int, output_rate: int) -> None:
    x = noise(input_rate // 2 + 7)
    whole = s2s.resample(x, input_rate=input_rate, output_rate=output_rate)
    rng = np.random.default_rng(input_rate + output_rate)
    for max_chunk in [1, 13, 480, 4000]:
        sizes = list(rng.integers(0, max_chunk + 1, len(x) // max(1, max_chunk // 2) + 1))
        r = s2s.Resampler(input_rate=input_rate, output_rate=output_rate)
        parts = stream(r, x, [int(s) for s in sizes])
        assert parts.dtype == np.float32
        assert parts.shape == whole.shape
        assert np.max(np.abs(parts - whole)) <= 1e-6


@pytest.mark.parametrize("n", [0, 1, 2, 3, 146, 147, 480, 481, 10007])
@pytest.mark.parametrize("input_rate", RATES)
@pytest.mark.parametrize("output_rate", [8000, 16000, 22050, 48000])
def test_total_length_is_ceil(n: int, input_rate: int, output_rate: int) -> None:
    want = math.ceil(n * output_rate / input_rate)
    x = noise(n)
    assert len(s2s.resample(x, input_rate=input_rate, output_rate=output_rate)) == want
    r = s2s.Resampler(input_rate=input_rate, output_rate=output_rate)
    assert len(stream(r, x, [n // 3, 1, n // 2])) == want


@pytest.mark.parametrize("freq", [1000.0, 6800.0])
def test_in_band_tone_snr_above_80_db(freq: float) -> None:
    x = tone(freq, 24000, 24000)
    r = s2s.Resampler(input_rate=24000, output_rate=16000)
    y = stream(r, x, [480] * 49)
    ref = tone(freq, 16000, len(y)).astype(np.float64)
    skip = 2 * math.ceil(r.delay) + 4
    err = y[skip:-skip] - ref[skip:-skip]
    snr = 10 * np.log10(np.sum(ref[skip:-skip] ** 2) / np.sum(err**2))
    assert snr >= 80.0, snr


def test_tone_above_output_nyquist_is_attenuated_80_db() -> None:
    x = tone(11000.0, 24000, 24000)
    y = s2s.resample(x, input_rate=24000, output_rate=16000).astype(np.float64)
    skip = 200
    gain = np.sqrt(np.mean(y[skip:-skip] ** 2)) / np.sqrt(np.mean(x.astype(np.float64) ** 2))
    assert 20 * np.log10(gain) <= -80.0


def test_properties_and_delay() -> None:
    r = s2s.Resampler(input_rate=24000, output_rate=16000)
    assert (r.input_rate, r.output_rate) == (24000, 16000)
    assert r.delay > 0
    assert r.delay_seconds == pytest.approx(r.delay / 16000)
    assert "24000" in repr(r)
    # The stream holds back about `delay` output samples until the flush.
    held = len(r.process(noise(24000)))
    assert abs((16000 - held) - r.delay) <= 1
    assert len(r.flush()) == 16000 - held


def test_same_rate_passes_through() -> None:
    x = noise(1001)
    r = s2s.Resampler(input_rate=16000, output_rate=16000)
    assert r.delay == 0.0
    np.testing.assert_array_equal(r.process(x), x)
    assert len(r.flush()) == 0


def test_reset_starts_a_new_stream() -> None:
    x = noise(5000)
    whole = s2s.resample(x, input_rate=48000, output_rate=16000)
    r = s2s.Resampler(input_rate=48000, output_rate=16000)
    r.process(noise(777, seed=1))
    r.reset()
    np.testing.assert_array_equal(stream(r, x, [100, 2000]), whole)
    # flush() also starts a new stream.
    np.testing.assert_array_equal(stream(r, x, [3]), whole)


def test_large_and_non_contiguous_inputs() -> None:
    # Long enough to be resampled with the GIL released.
    x = noise(200_000)
    whole = s2s.resample(x, input_rate=44100, output_rate=16000)
    r = s2s.Resampler(input_rate=44100, output_rate=16000)
    np.testing.assert_array_equal(np.concatenate([r.process(x), r.flush()]), whole)
    strided = np.repeat(x, 2)[::2]
    assert not strided.flags.c_contiguous
    np.testing.assert_array_equal(s2s.resample(strided, input_rate=44100, output_rate=16000), whole)


def test_unsupported_rates_raise() -> None:
    with pytest.raises(s2s.UnsupportedSampleRateError, match="11025"):
        s2s.Resampler(input_rate=11025, output_rate=16000)
    with pytest.raises(s2s.UnsupportedSampleRateError):
        s2s.resample(noise(10), input_rate=16000, output_rate=96000)
    assert issubclass(s2s.UnsupportedSampleRateError, s2s.AudioFormatError)
    assert issubclass(s2s.UnsupportedSampleRateError, s2s.SpeechToSpeechError)


def test_arguments_are_keyword_only_and_float32() -> None:
    with pytest.raises(TypeError):
        s2s.Resampler(24000, 16000)  # type: ignore[call-arg]
    r = s2s.Resampler(input_rate=24000, output_rate=16000)
    with pytest.raises(TypeError):
        r.process(np.zeros(480, dtype=np.float64))


def test_long_inputs_release_the_gil() -> None:
    # While a long resample runs in a worker thread, this thread keeps
    # running Python code. Were the GIL held, it would stall for the whole
    # call; released, its longest stall is about one switch interval. The
    # call is long (8 minutes of audio, about 0.2 s here) so that a stall of
    # the OS scheduler on a busy machine cannot pass for a held GIL.
    x = noise(48000 * 480)
    window: list[float] = []
    done = threading.Event()

    def work() -> None:
        window.append(time.perf_counter())
        s2s.resample(x, input_rate=48000, output_rate=44100)
        window.append(time.perf_counter())
        done.set()

    ticks: list[float] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    try:
        worker = threading.Thread(target=work)
        worker.start()
        while not done.is_set():
            ticks.append(time.perf_counter())
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    start, end = window
    inside = [start, *(t for t in ticks if start < t < end), end]
    longest_stall = max(b - a for a, b in itertools.pairwise(inside))
    assert longest_stall < (end - start) / 3, (longest_stall, end - start)
