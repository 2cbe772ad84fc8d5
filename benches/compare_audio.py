"""Compare the Rust audio path with the Python references, in one process.

    python benches/compare_audio.py [--json PATH] [--seconds 60] [--repeats 7]

Streams the same audio through each implementation in 20 ms chunks, the way a
realtime session feeds it, and reports time per chunk and the ratio
(reference time / our time: above 1 means ours is faster). These machines are
noisy, so every contender runs in this one process, repeats interleaved, and
the ratios use the best repeat of each.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import speech_to_speech as s2s

F32 = npt.NDArray[np.float32]
I16 = npt.NDArray[np.int16]


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def race(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run each contender `repeats` times, interleaved; seconds per repeat."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for run in contenders.values():
        run()  # warm up: caches, lazy imports, filter design
    for _ in range(repeats):
        for name, run in contenders.items():
            times[name].append(timed(run))
    return times


def test_audio(rate: int, seconds: float) -> F32:
    """Speech-like test signal: a few harmonics with vibrato, plus noise."""
    t = np.arange(int(rate * seconds)) / rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(0.3 / k * np.sin(k * phase) for k in range(1, 20) if k * 170 < rate / 2)
    x = x + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return np.asarray(x, dtype=np.float32)


def chunks_of(x: npt.NDArray[Any], size: int) -> list[npt.NDArray[Any]]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def snr_24k_to_16k(freq: float = 1000.0) -> float:
    """SNR (dB) of our streaming 24 kHz -> 16 kHz on a tone vs the analytic tone."""
    x = (0.5 * np.sin(2 * np.pi * freq * np.arange(24000 * 2) / 24000)).astype(np.float32)
    r = s2s.Resampler(input_rate=24000, output_rate=16000)
    y = np.concatenate([*(r.process(c) for c in chunks_of(x, 480)), r.flush()])
    ref = 0.5 * np.sin(2 * np.pi * freq * np.arange(len(y)) / 16000)
    # Skip the start and end transients, where the filter sees the edges.
    skip = 2 * math.ceil(r.delay) + 4
    err = y[skip:-skip].astype(np.float64) - ref[skip:-skip]
    return float(10 * np.log10(np.sum(ref[skip:-skip] ** 2) / np.sum(err**2)))


def bench_resample(seconds: float, repeats: int) -> dict[str, float]:
    import scipy.signal
    import soxr

    chunks = chunks_of(test_audio(24000, seconds), 480)

    def ours() -> None:
        r = s2s.Resampler(input_rate=24000, output_rate=16000)
        for c in chunks:
            r.process(c)
        r.flush()

    def soxr_hq() -> None:
        r = soxr.ResampleStream(24000, 16000, 1, dtype="float32", quality="HQ")
        for c in chunks:
            r.resample_chunk(c)
        r.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

    def resample_poly() -> None:
        for c in chunks:
            scipy.signal.resample_poly(c, 2, 3)

    fast = race({"ours": ours, "soxr": soxr_hq}, repeats)
    # resample_poly is ~100x slower: fewer repeats of the same audio.
    slow = race({"ours": ours, "poly": resample_poly}, max(2, repeats // 3))
    n = len(chunks)
    return {
        "resample_us_per_chunk": min(fast["ours"]) / n * 1e6,
        "resample_us_per_chunk_median": statistics.median(fast["ours"]) / n * 1e6,
        "soxr_hq_us_per_chunk": min(fast["soxr"]) / n * 1e6,
        "soxr_hq_us_per_chunk_median": statistics.median(fast["soxr"]) / n * 1e6,
        "resample_poly_us_per_chunk": min(slow["poly"]) / n * 1e6,
        "resample_vs_soxr": min(fast["soxr"]) / min(fast["ours"]),
        "resample_vs_soxr_median": statistics.median(fast["soxr"])
        / statistics.median(fast["ours"]),
        "resample_vs_resample_poly": min(slow["poly"]) / min(slow["ours"]),
        "resample_snr_db": snr_24k_to_16k(1000.0),
        "resample_snr_db_6800hz": snr_24k_to_16k(6800.0),
    }


def mulaw_table() -> I16:
    return s2s.mulaw_decode(bytes(range(256)))


def bench_formats(seconds: float, repeats: int) -> dict[str, float]:
    """PCM16 and G.711 conversions of 20 ms chunks at 24 kHz vs numpy/audioop."""
    x = test_audio(24000, seconds)
    pcm_chunks = [c.tobytes() for c in chunks_of((x * 32767).astype("<i2"), 480)]
    f32_chunks = chunks_of(x, 480)
    i16_chunks = chunks_of((x * 32767).astype(np.int16), 480)
    mu_chunks = [s2s.mulaw_encode(c) for c in i16_chunks]
    table = mulaw_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # Python >= 3.13
            audioop = None

    def ref_mulaw_encode(c: I16) -> bytes:
        # G.711 mu-law in numpy (segment by bit length), for Pythons without audioop.
        s = c.astype(np.int32)
        mag = np.where(s < 0, ~s, s) >> 2
        v = np.minimum(mag + 33, 0x1FFF)
        seg = np.floor(np.log2(v)).astype(np.int32) - 5
        code = (seg << 4) | ((v >> (seg + 1)) & 0xF)
        return (code ^ np.where(s < 0, 0x7F, 0xFF)).astype(np.uint8).tobytes()

    contenders: dict[str, Callable[[], object]] = {
        "pcm16_to_float32": lambda: [s2s.pcm16_to_float32(b) for b in pcm_chunks],
        "ref_pcm16_to_float32": lambda: [
            np.frombuffer(b, dtype="<i2").astype(np.float32) / 32768 for b in pcm_chunks
        ],
        "float32_to_pcm16": lambda: [s2s.float32_to_pcm16(c) for c in f32_chunks],
        "ref_float32_to_pcm16": lambda: [
            np.clip(np.round(c * 32768), -32768, 32767).astype("<i2").tobytes() for c in f32_chunks
        ],
        "mulaw_decode": lambda: [s2s.mulaw_decode(b) for b in mu_chunks],
        "mulaw_encode": lambda: [s2s.mulaw_encode(c) for c in i16_chunks],
    }
    if audioop is not None:
        contenders["ref_mulaw_decode"] = lambda: [audioop.ulaw2lin(b, 2) for b in mu_chunks]
        contenders["ref_mulaw_encode"] = lambda: [
            audioop.lin2ulaw(c.tobytes(), 2) for c in i16_chunks
        ]
        reference = "audioop"
    else:
        contenders["ref_mulaw_decode"] = lambda: [
            table[np.frombuffer(b, dtype=np.uint8)] for b in mu_chunks
        ]
        contenders["ref_mulaw_encode"] = lambda: [ref_mulaw_encode(c) for c in i16_chunks]
        reference = "numpy"
    times = race(contenders, repeats)
    n = len(pcm_chunks)
    out: dict[str, float] = {}
    for name in ["pcm16_to_float32", "float32_to_pcm16", "mulaw_decode", "mulaw_encode"]:
        ours, ref = min(times[name]), min(times["ref_" + name])
        out[f"{name}_us_per_chunk"] = ours / n * 1e6
        out[f"{name}_ref_us_per_chunk"] = ref / n * 1e6
        out[f"{name}_vs_ref"] = ref / ours
    print(f"(G.711 reference: {reference}; PCM reference: numpy)")
    return out


# --- queue latency hook -----------------------------------------------------
# benches/queue_latency.py (another change) provides measure_queue(), returning
# a dict with queue_p50_us, queue_p99_us and pyqueue_p99_us; its keys are merged
# into the results. Until that file exists the keys are simply absent.
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from queue_latency import measure_queue  # type: ignore[import-not-found]
except ModuleNotFoundError as e:
    if e.name != "queue_latency":
        raise
    measure_queue = None
# -----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results as a JSON object here")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    results: dict[str, float] = {}
    results.update(bench_resample(args.seconds, args.repeats))
    results.update(bench_formats(args.seconds, args.repeats))
    if measure_queue is not None:
        results.update(measure_queue())

    print(f"{'what (20 ms chunks, 24 kHz in)':<44} {'ours us':>9} {'ref us':>9} {'ratio':>7}")
    rows = [
        ("resample 24k->16k vs soxr HQ stream", "resample", "soxr_hq", "resample_vs_soxr"),
        (
            "resample 24k->16k vs scipy resample_poly",
            "resample",
            "resample_poly",
            "resample_vs_resample_poly",
        ),
        *(
            (f"{name} vs reference", name, f"{name}_ref", f"{name}_vs_ref")
            for name in ["pcm16_to_float32", "float32_to_pcm16", "mulaw_decode", "mulaw_encode"]
        ),
    ]
    for label, ours, ref, ratio in rows:
        print(
            f"{label:<44} {results[ours + '_us_per_chunk']:>9.2f}"
            f" {results[ref + '_us_per_chunk']:>9.2f} {results[ratio]:>6.1f}x"
        )
    print(f"resample 24k->16k SNR, 1 kHz tone: {results['resample_snr_db']:.1f} dB")
    print(f"resample 24k->16k SNR, 6.8 kHz tone: {results['resample_snr_db_6800hz']:.1f} dB")
    for key in ["queue_p50_us", "queue_p99_us", "pyqueue_p99_us"]:
        if key in results:
            print(f"{key}: {results[key]:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
