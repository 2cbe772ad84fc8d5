"""Echo cancellation and noise suppression through the Python bindings, on the shared speech."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from test_handlers_local import read_wav, wer

import speech_to_speech as s2s
from speech_to_speech.handlers import STTHandler, create_handler

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# The synthetic room is the benchmark's, so that test and figure agree.
sys.path.insert(0, str(ROOT / "benches"))
from audio_frontend import convolve, room  # noqa: E402

SR = 16000
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
Samples = npt.NDArray[np.float32]


def energy_db(a: Samples, b: Samples) -> float:
    ea = float(np.sum(a.astype(np.float64) ** 2)) + 1e-12
    eb = float(np.sum(b.astype(np.float64) ** 2)) + 1e-12
    return 10 * float(np.log10(ea / eb))


def cancel(far: Samples, mic: Samples) -> tuple[Samples, int]:
    aec = s2s.EchoCanceller(sample_rate=SR)
    f = aec.frame_len
    out = np.zeros(len(mic) // f * f, dtype=np.float32)
    for k in range(0, len(out), f):
        aec.push_far_end(far[k : k + f])
        out[k : k + f] = aec.process(mic[k : k + f])
    return out, aec.latency


def test_echo_canceller_removes_a_room_echo_of_real_speech_and_keeps_the_talker() -> None:
    rng = np.random.default_rng(3)
    far = np.concatenate([read_wav(SHARED / "audio" / "jfk.wav")] * 2)
    echo = convolve(far, room(rng))
    near = np.zeros_like(far)
    talker = read_wav(SHARED / "audio" / "q_book.wav")
    ds = 14 * SR
    near[ds : ds + len(talker)] = talker
    out, lag = cancel(far, (echo + near).astype(np.float32))
    shifted = out[lag:]
    n = len(shifted)
    erle = energy_db(echo[4 * SR : ds - SR // 2], shifted[4 * SR : ds - SR // 2])
    voiced = np.abs(talker) > 0
    kept = energy_db(shifted[ds : ds + len(talker)][voiced], talker[voiced])
    assert n > ds + len(talker)
    print(f"\nAEC on jfk.wav in a room: ERLE {erle:.1f} dB, talker kept {kept:.1f} dB")
    assert erle >= 20.0
    assert kept > -6.0


def test_echo_canceller_refuses_bad_rates_and_partial_frames() -> None:
    with pytest.raises(s2s.UnsupportedSampleRateError, match="16000, 32000 or 48000"):
        s2s.EchoCanceller(sample_rate=24000)
    aec = s2s.EchoCanceller(sample_rate=48000)
    assert (aec.frame_len, aec.sample_rate) == (480, 48000)
    with pytest.raises(s2s.AudioFormatError, match="10 ms"):
        aec.process(np.zeros(100, dtype=np.float32))
    # A partial far-end frame is fine: it waits for the rest.
    aec.push_far_end(np.zeros(100, dtype=np.float32))
    assert aec.process(np.zeros(960, dtype=np.float32)).shape == (960,)
    assert set(aec.metrics()) == {"echo_return_loss_db", "erle_db", "delay_ms"}


def test_noise_suppressor_types_rates_and_shapes() -> None:
    with pytest.raises(s2s.NoiseReductionError, match="near_field or far_field"):
        s2s.NoiseSuppressor(type="loud")
    with pytest.raises(s2s.UnsupportedSampleRateError):
        s2s.NoiseSuppressor(sample_rate=11025)
    for rate in (8000, 16000, 24000, 48000):
        ns = s2s.NoiseSuppressor(sample_rate=rate, type="far_field")
        assert ns.type == "far_field"
        assert ns.process(np.zeros(rate // 100 + 7, dtype=np.float32)).shape == (rate // 100 + 7,)


def test_noise_suppressor_lowers_white_noise_near_field_more_than_far_field() -> None:
    rng = np.random.default_rng(5)
    # -34 dBFS hiss. (RNNoise leaves much louder white noise, -26 dBFS and
    # up, mostly in place: it is trained on noise under speech, not instead of it.)
    noise = (0.02 * rng.standard_normal(3 * SR)).astype(np.float32)
    levels = {}
    for kind in ("near_field", "far_field"):
        out = s2s.NoiseSuppressor(sample_rate=SR, type=kind).process(noise)
        levels[kind] = energy_db(out[SR:], noise[SR:])
    assert levels["near_field"] < -15.0, levels
    assert levels["near_field"] < levels["far_field"] < -6.0, levels


@pytest.fixture(scope="module")
def stt() -> STTHandler:
    handler = create_handler("stt", "faster-whisper", cpu_threads=2)
    handler.setup()
    return handler


def transcribe(stt: STTHandler, audio: Samples) -> str:
    out = list(stt.transcribe(audio))
    assert out and out[-1].final
    return out[-1].text


def test_stt_still_transcribes_a_noisy_clip_behind_noise_suppression(stt: STTHandler) -> None:
    clean = read_wav(SHARED / "audio" / "jfk.wav")
    rng = np.random.default_rng(11)
    # Hiss at -30 dBFS, 13 dB below the speech: what a cheap laptop mic adds.
    noise = (0.03 * rng.standard_normal(len(clean))).astype(np.float32)
    noisy = (clean + noise).astype(np.float32)
    ns = s2s.NoiseSuppressor(sample_rate=SR, type="near_field")
    pad = np.zeros(ns.latency + SR // 100, dtype=np.float32)
    t0 = time.perf_counter()
    denoised = ns.process(np.concatenate([noisy, pad]))
    elapsed = time.perf_counter() - t0
    text_off = transcribe(stt, noisy)
    text_on = transcribe(stt, denoised)
    print(
        f"\nNS on 11 s at 13 dB SNR: {elapsed * 1000:.0f} ms; "
        f"WER off {wer(JFK_TEXT, text_off):.2f} {text_off!r}, "
        f"on {wer(JFK_TEXT, text_on):.2f} {text_on!r}"
    )
    assert wer(JFK_TEXT, text_on) <= 0.25, text_on
    # Residual hiss is far lower: measured where JFK pauses (clean is quiet).
    lag = ns.latency + SR // 100
    frames = clean[: len(clean) // 160 * 160].reshape(-1, 160)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    idx = np.nonzero(np.repeat(rms < np.percentile(rms, 20), 160))[0]
    assert energy_db(denoised[idx + lag], noisy[idx]) < -10.0
