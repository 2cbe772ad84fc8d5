"""Silero VAD: the Rust core against the usual Python onnxruntime loop, in one process.

    python benches/compare_vad.py [--json PATH] [--repeats N]

Both sides run the same model file with one intra-op and one inter-op thread.
The Python side is the loop Python pipelines run: per 512-sample chunk, glue
64 samples of context in front and call ``session.run`` with the state. The
machines these run on are shared and noisy, so the two sides are timed in
alternation and each figure is the best of ``--repeats`` rounds; only the
ratios from one run are meant to be compared.

Keys of the JSON report:
    single_stream_speedup    Python time per chunk / ours (whole array through the core)
    stream_feed_speedup      the same, ours fed 20 ms at a time through VadStream.feed
    streams_per_core         16 kHz streams one thread keeps in real time, batching B streams
    python_streams_per_core  the same for the Python loop (one call per stream and chunk)
    max_prob_diff            largest |ours - Python| per-chunk probability on the test audio
    ours_intra_op_2_us_per_chunk  ours with two intra-op threads (one is the default)
"""

from __future__ import annotations

import argparse
import json
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

import speech_to_speech as s2s
from speech_to_speech import vad

SR = 16000
CHUNK = 512
CONTEXT = 64
CHUNK_S = CHUNK / SR
BATCHES = (1, 8, 32, 64, 128)

Samples = npt.NDArray[np.float32]


def load_audio() -> Samples:
    path = Path(__file__).resolve().parents[1].parent / "shared" / "audio" / "jfk.wav"
    if path.is_file():
        with wave.open(str(path)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return pcm.astype(np.float32) / 32768.0
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal(11 * SR)).astype(np.float32)


class PythonVad:
    """The per-chunk loop of Python pipelines (Silero's own OnnxWrapper does this)."""

    def __init__(self, model_path: str) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
        self.sr = np.array(SR, dtype=np.int64)

    def probabilities(self, samples: Samples) -> Samples:
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, CONTEXT), dtype=np.float32)
        probs = []
        for i in range(0, len(samples) - CHUNK + 1, CHUNK):
            x = np.concatenate([context, samples[None, i : i + CHUNK]], axis=1)
            out, state = self.session.run(None, {"input": x, "state": state, "sr": self.sr})
            context = x[:, -CONTEXT:]
            probs.append(float(out[0, 0]))
        return np.array(probs, dtype=np.float32)


def best_of(repeats: int, fns: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run the timers in alternation; keep each one's best (lowest) figure."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            best[k] = min(best[k], fn())
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", help="silero_vad.onnx (default: the silero-vad package)")
    args = parser.parse_args()

    model_path = args.model or vad.default_model_path()
    vad.init_onnxruntime()
    ours = s2s.SileroVad(model_path, intra_op_threads=1)
    ours_2 = s2s.SileroVad(model_path, intra_op_threads=2)
    python = PythonVad(model_path)
    audio = load_audio()
    audio = audio[: len(audio) // CHUNK * CHUNK]
    chunks = len(audio) // CHUNK

    ref = python.probabilities(audio)
    got = ours.speech_probabilities(audio)
    max_prob_diff = float(np.max(np.abs(ref - got)))

    frame = SR // 50  # 20 ms, as transports deliver audio

    def time_python() -> float:
        t = time.perf_counter()
        python.probabilities(audio)
        return (time.perf_counter() - t) / chunks

    def time_ours() -> float:
        t = time.perf_counter()
        ours.speech_probabilities(audio)
        return (time.perf_counter() - t) / chunks

    def time_ours_2() -> float:
        t = time.perf_counter()
        ours_2.speech_probabilities(audio)
        return (time.perf_counter() - t) / chunks

    def time_stream() -> float:
        stream = s2s.VadStream(model=ours)
        t = time.perf_counter()
        for i in range(0, len(audio), frame):
            stream.feed(audio[i : i + frame])
        return (time.perf_counter() - t) / chunks

    per_chunk = best_of(
        args.repeats,
        {"python": time_python, "ours": time_ours, "ours_2": time_ours_2, "stream": time_stream},
    )

    rng = np.random.default_rng(1)
    batch_times = {}
    for b in BATCHES:
        states = [s2s.VadState() for _ in range(b)]
        rows = [
            np.stack([audio[((i + 7 * j) % chunks) * CHUNK :][:CHUNK] for j in range(b)])
            for i in rng.integers(0, chunks, size=16)
        ]

        def time_batch(states: list[s2s.VadState] = states, rows: list[Samples] = rows) -> float:
            t = time.perf_counter()
            for r in rows:
                ours.process_batch(states, r)
            return (time.perf_counter() - t) / len(rows)

        batch_times[b] = best_of(args.repeats, {"batch": time_batch})["batch"]

    per_batch_streams = {b: b * CHUNK_S / t for b, t in batch_times.items()}
    best_b = max(per_batch_streams, key=lambda b: per_batch_streams[b])
    report = {
        "single_stream_speedup": per_chunk["python"] / per_chunk["ours"],
        "stream_feed_speedup": per_chunk["python"] / per_chunk["stream"],
        "streams_per_core": per_batch_streams[best_b],
        "streams_per_core_batch": best_b,
        "streams_per_core_by_batch": {str(b): v for b, v in per_batch_streams.items()},
        "python_streams_per_core": CHUNK_S / per_chunk["python"],
        "max_prob_diff": max_prob_diff,
        "python_us_per_chunk": per_chunk["python"] * 1e6,
        "ours_us_per_chunk": per_chunk["ours"] * 1e6,
        "stream_feed_us_per_chunk": per_chunk["stream"] * 1e6,
        "ours_intra_op_2_us_per_chunk": per_chunk["ours_2"] * 1e6,
        "batch_us": {str(b): t * 1e6 for b, t in batch_times.items()},
        "chunks": chunks,
        "repeats": args.repeats,
        "onnxruntime": ort.__version__,
        "model": model_path,
    }
    for key, value in report.items():
        print(f"{key:28s} {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
