"""Audio front end: echo cancellation (AEC3) and noise suppression (RNNoise) in the Rust core.

    python benches/audio_frontend.py [--json PATH] [--repeats N] [--minutes M]

Echo: the far end is the speech in ``../shared/audio`` (about 22 s), played
into a synthetic room: 40 ms of delay, then an impulse response of
exponentially decaying noise (RT60 250 ms), about 6 dB below the far end.
From 14 s to 18 s a near-end talker speaks over it (double talk). ERLE is
the echo energy over the output energy where only the echo is there, after
4 s of convergence; the double-talk figures say how much of the near-end
talker survives.

Noise: "speech-free" minutes made from the quiet stretches of ``jfk.wav``
(its real background) plus either white noise or babble (eight time-reversed
voices, unintelligible but speech-shaped). The Silero VAD (the core's
streaming VadStream, default settings) runs on each, without noise
suppression and behind each preset; every ``speech_started`` is a false
start.

Costs are for one stream on one core, per 10 ms of audio; the reference
measured in the same run is the Silero VAD's cost per 10 ms on the same
machine, so ``*_vs_vad`` ratios are comparable between runs.

Keys of the JSON report:
    aec_erle_db                 echo return loss enhancement, echo-only stretches (target >= 25)
    aec_double_talk_kept_db     near-end level in the output vs alone, during double talk
    aec_double_talk_near_corr   correlation of the output with the near end alone, double talk
    aec_double_talk_mic_corr    the same for the microphone signal (echo + near end): reference
    aec_us_per_10ms             AEC3 cost per 10 ms frame at 16 kHz, one stream, one core
    aec_vs_vad                  that cost / the VAD's cost per 10 ms
    ns_us_per_10ms              RNNoise cost per 10 ms at 16 kHz (resampling to 48 kHz included)
    ns_vs_vad                   that cost / the VAD's cost per 10 ms
    vad_us_per_10ms             the reference: Silero VAD per 10 ms
    ns_vad_false_starts         VAD false starts per minute, all noises: off/near_field/far_field
    ns_vad_false_starts_by_noise  the same per noise (white -34 dBFS; babble at -40, -34, -26 dBFS)
    ns_vad_false_speech_s_per_min seconds per minute the VAD spends in (false) speech, per noise
"""

from __future__ import annotations

import argparse
import json
import time
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

import speech_to_speech as s2s
from speech_to_speech import vad

SR = 16000
FRAME = SR // 100
Samples = npt.NDArray[np.float32]
AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


def load(name: str) -> Samples:
    with wave.open(str(AUDIO / name)) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1, name
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def room(rng: np.random.Generator, delay_ms: int = 40, gain_db: float = -6.0) -> Samples:
    delay = SR * delay_ms // 1000
    n = SR // 5
    tail = rng.standard_normal(n) * np.exp(-np.arange(n) / (0.25 / 6.9 * SR))
    h = np.concatenate([np.zeros(delay), tail])
    h[delay] = 1.0
    h *= 10 ** (gain_db / 20) / np.sqrt(np.sum(h * h))
    return h.astype(np.float32)


def convolve(x: Samples, h: Samples) -> Samples:
    n = 1 << int(np.ceil(np.log2(len(x) + len(h))))
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(h, n), n)[: len(x)]
    return y.astype(np.float32)


def db(a: Samples, b: Samples) -> float:
    return float(
        10
        * np.log10(
            (np.sum(a.astype(np.float64) ** 2) + 1e-12)
            / (np.sum(b.astype(np.float64) ** 2) + 1e-12)
        )
    )


def run_aec(far: Samples, mic: Samples) -> tuple[Samples, float, int]:
    """Process in 10 ms frames, far end first; returns output, seconds, latency."""
    aec = s2s.EchoCanceller(sample_rate=SR)
    frames = len(mic) // FRAME
    out = np.zeros(frames * FRAME, dtype=np.float32)
    t0 = time.perf_counter()
    for k in range(frames):
        sl = slice(k * FRAME, (k + 1) * FRAME)
        aec.push_far_end(far[sl])
        out[sl] = aec.process(mic[sl])
    return out, time.perf_counter() - t0, aec.latency


def bench_aec(repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    names = ["jfk.wav", "q_capital_france.wav", "q_ocean_fact.wav", "interrupt_wait.wav", "jfk.wav"]
    far = np.concatenate([load(n) for n in names])
    echo = convolve(far, room(rng))
    near = np.zeros_like(far)
    ds, de = 14 * SR, 18 * SR
    talker = load("q_book.wav")
    near[ds : ds + len(talker)] = talker[: de - ds]
    mic = (echo + near).astype(np.float32)
    best = float("inf")
    for _ in range(repeats):
        out, seconds, lag = run_aec(far, mic)
        best = min(best, seconds)
    n = len(out) - lag
    shifted = out[lag:]
    echo_only = np.ones(n, dtype=bool)
    echo_only[: 4 * SR] = False
    echo_only[ds - SR // 2 : de + SR] = False
    voiced = np.abs(near[ds:de]) > 0
    near_dt = near[ds:de][voiced]
    out_dt = shifted[ds:de][voiced]
    mic_dt = mic[ds:de][voiced]

    def corr(a: Samples, b: Samples) -> float:
        return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b) + 1e-12))

    return {
        "aec_erle_db": round(db(echo[:n][echo_only], shifted[echo_only]), 1),
        "aec_double_talk_kept_db": round(db(out_dt, near_dt), 1),
        "aec_double_talk_near_corr": round(corr(out_dt, near_dt), 3),
        "aec_double_talk_mic_corr": round(corr(mic_dt, near_dt), 3),
        "aec_us_per_10ms": round(best / (len(out) // FRAME) * 1e6, 1),
    }


def bench_ns(signal: Samples, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        ns = s2s.NoiseSuppressor(sample_rate=SR, type="near_field")
        t0 = time.perf_counter()
        for k in range(0, len(signal) - FRAME + 1, FRAME):
            ns.process(signal[k : k + FRAME])
        best = min(best, time.perf_counter() - t0)
    return best / (len(signal) // FRAME) * 1e6


def bench_vad(model: s2s.SileroVad, signal: Samples, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.speech_probabilities(signal, sample_rate=SR)
        best = min(best, time.perf_counter() - t0)
    return best / (len(signal) // FRAME) * 1e6


def background(minutes: float) -> Samples:
    """The quiet stretches of jfk.wav (its real room and tape noise), looped."""
    x = load("jfk.wav")
    frames = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    quiet = frames[rms < np.percentile(rms, 20)].reshape(-1)
    n = int(minutes * 60 * SR)
    return np.resize(quiet, n).astype(np.float32)


def babble(rng: np.random.Generator, n: int) -> Samples:
    voices = [
        load(f)[::-1]
        for f in [
            "jfk.wav",
            "q_book.wav",
            "q_ocean_fact.wav",
            "q_capital_france.wav",
            "interrupt_wait.wav",
        ]
    ]
    out = np.zeros(n, dtype=np.float64)
    for k in range(8):
        v = voices[k % len(voices)]
        out += np.roll(np.resize(v, n), int(rng.integers(0, n)))
    out /= np.sqrt(np.mean(out**2)) + 1e-12
    return out.astype(np.float32)


def false_starts(model: s2s.SileroVad, signal: Samples, preset: str | None) -> tuple[float, float]:
    """VAD speech starts per minute, and seconds per minute it spends in speech."""
    if preset is not None:
        ns = s2s.NoiseSuppressor(sample_rate=SR, type=preset)
        signal = ns.process(signal)
    stream = s2s.VadStream(model=model, sample_rate=SR)
    starts = 0
    in_speech = 0
    step = 2 * FRAME
    for k in range(0, len(signal), step):
        starts += sum(e.type == "speech_started" for e in stream.feed(signal[k : k + step]))
        in_speech += stream.in_speech
    starts += sum(e.type == "speech_started" for e in stream.flush())
    minutes = len(signal) / SR / 60
    return starts / minutes, in_speech * step / SR / minutes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        help="write the report as JSON (to PATH, or stdout)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--minutes", type=float, default=2.0, help="minutes of each noise for the VAD counts"
    )
    args = parser.parse_args()

    vad.init_onnxruntime()
    model = vad.load_silero_vad()
    report: dict[str, object] = {}
    report.update(bench_aec(args.repeats))
    speech = load("jfk.wav")
    vad_us = bench_vad(model, speech, args.repeats)
    ns_us = bench_ns(speech, args.repeats)
    report["ns_us_per_10ms"] = round(ns_us, 1)
    report["vad_us_per_10ms"] = round(vad_us, 1)
    report["aec_vs_vad"] = round(float(report["aec_us_per_10ms"]) / vad_us, 2)  # type: ignore[arg-type]
    report["ns_vs_vad"] = round(ns_us / vad_us, 2)

    rng = np.random.default_rng(7)
    base = background(args.minutes)
    crowd = babble(rng, len(base))
    noises = {
        "white": 0.02 * rng.standard_normal(len(base)).astype(np.float32),
        "babble_quiet": 0.01 * crowd,
        "babble": 0.02 * crowd,
        "babble_loud": 0.05 * crowd,
    }
    presets = (None, "near_field", "far_field")
    by_noise: dict[str, dict[str, float]] = {}
    speech_s: dict[str, dict[str, float]] = {}
    for name, noise in noises.items():
        signal = (base + noise).astype(np.float32)
        counts = {str(p or "off"): false_starts(model, signal, p) for p in presets}
        by_noise[name] = {k: round(v[0], 1) for k, v in counts.items()}
        speech_s[name] = {k: round(v[1], 1) for k, v in counts.items()}
    report["ns_vad_false_starts"] = {
        k: round(sum(v[k] for v in by_noise.values()) / len(by_noise), 1)
        for k in ("off", "near_field", "far_field")
    }
    report["ns_vad_false_starts_by_noise"] = by_noise
    report["ns_vad_false_speech_s_per_min"] = speech_s

    text = json.dumps(report, indent=2)
    if args.json is None:
        for key, value in report.items():
            print(f"{key:32s} {value}")
    elif args.json == "-":
        print(text)
    else:
        Path(args.json).write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()
