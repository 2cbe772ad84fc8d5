"""Silero VAD: the Rust core's two engines against the usual Python onnxruntime loop.

    python benches/compare_vad.py [--json PATH] [--repeats N]

"Ours" is the core's default engine (``native``: the network in Rust, weights
read from the same ``silero_vad.onnx``); the core's ONNX Runtime engine is
measured beside it under ``ort_*`` keys. The Python side is the loop Python
pipelines run: per 512-sample chunk, glue 64 samples of context in front and
call ``session.run`` with the state, one intra-op and one inter-op thread, as
our ONNX Runtime engine uses. The machines these run on are shared and noisy,
so all sides are timed in alternation and each figure is the best of
``--repeats`` rounds; only the ratios from one run are meant to be compared.

Keys of the JSON report:
    single_stream_speedup        Python time per chunk / ours (whole array through the core)
    ort_single_stream_speedup    the same for the core's ONNX Runtime engine
    stream_feed_speedup          ours fed 20 ms at a time through VadStream.feed
    streams_per_core             16 kHz streams one thread keeps in real time, ours batching B
    ort_streams_per_core         the same for the ONNX Runtime engine
    python_streams_per_core      the same for the Python loop (one call per stream and chunk)
    max_prob_diff                largest |ours - Python| per-chunk probability on the test audio
    ort_max_prob_diff            the same for the ONNX Runtime engine
    ort_intra_op_2_us_per_chunk  the ONNX Runtime engine with two intra-op threads
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
    ours = s2s.SileroVad(model_path)
    ort_1 = s2s.SileroVad(model_path, backend="onnxruntime", intra_op_threads=1)
    ort_2 = s2s.SileroVad(model_path, backend="onnxruntime", intra_op_threads=2)
    python = PythonVad(model_path)
    audio = load_audio()
    audio = audio[: len(audio) // CHUNK * CHUNK]
    chunks = len(audio) // CHUNK

    ref = python.probabilities(audio)
    max_prob_diff = float(np.max(np.abs(ref - ours.speech_probabilities(audio))))
    ort_max_prob_diff = float(np.max(np.abs(ref - ort_1.speech_probabilities(audio))))

    frame = SR // 50  # 20 ms, as transports deliver audio

    def time_python() -> float:
        t = time.perf_counter()
        python.probabilities(audio)
        return (time.perf_counter() - t) / chunks

    def time_whole(model: s2s.SileroVad) -> Callable[[], float]:
        def run() -> float:
            t = time.perf_counter()
            model.speech_probabilities(audio)
            return (time.perf_counter() - t) / chunks

        return run

    def time_stream() -> float:
        stream = s2s.VadStream(model=ours)
        t = time.perf_counter()
        for i in range(0, len(audio), frame):
            stream.feed(audio[i : i + frame])
        return (time.perf_counter() - t) / chunks

    per_chunk = best_of(
        args.repeats,
        {
            "python": time_python,
            "ours": time_whole(ours),
            "ort": time_whole(ort_1),
            "ort_2": time_whole(ort_2),
            "stream": time_stream,
        },
    )

    rng = np.random.default_rng(1)
    batch_times: dict[str, dict[int, float]] = {"ours": {}, "ort": {}}
    for b in BATCHES:
        states = [s2s.VadState() for _ in range(b)]
        rows = [
            np.stack([audio[((i + 7 * j) % chunks) * CHUNK :][:CHUNK] for j in range(b)])
            for i in rng.integers(0, chunks, size=16)
        ]

        def time_batch(
            model: s2s.SileroVad, states: list[s2s.VadState] = states, rows: list[Samples] = rows
        ) -> Callable[[], float]:
            def run() -> float:
                t = time.perf_counter()
                for r in rows:
                    model.process_batch(states, r)
                return (time.perf_counter() - t) / len(rows)

            return run

        best = best_of(args.repeats, {"ours": time_batch(ours), "ort": time_batch(ort_1)})
        for key, t in best.items():
            batch_times[key][b] = t

    def streams(times: dict[int, float]) -> tuple[int, dict[int, float]]:
        """The batch size that keeps most streams in real time, and every size's figure."""
        per_batch = {b: b * CHUNK_S / t for b, t in times.items()}
        return max(per_batch, key=lambda b: per_batch[b]), per_batch

    best_b, per_batch_streams = streams(batch_times["ours"])
    ort_best_b, ort_per_batch_streams = streams(batch_times["ort"])
    report = {
        "vad_backend": ours.backend,
        "single_stream_speedup": per_chunk["python"] / per_chunk["ours"],
        "ort_single_stream_speedup": per_chunk["python"] / per_chunk["ort"],
        "stream_feed_speedup": per_chunk["python"] / per_chunk["stream"],
        "streams_per_core": per_batch_streams[best_b],
        "streams_per_core_batch": best_b,
        "streams_per_core_by_batch": {str(b): v for b, v in per_batch_streams.items()},
        "ort_streams_per_core": ort_per_batch_streams[ort_best_b],
        "ort_streams_per_core_batch": ort_best_b,
        "python_streams_per_core": CHUNK_S / per_chunk["python"],
        "max_prob_diff": max_prob_diff,
        "ort_max_prob_diff": ort_max_prob_diff,
        "python_us_per_chunk": per_chunk["python"] * 1e6,
        "ours_us_per_chunk": per_chunk["ours"] * 1e6,
        "ort_us_per_chunk": per_chunk["ort"] * 1e6,
        "stream_feed_us_per_chunk": per_chunk["stream"] * 1e6,
        "ort_intra_op_2_us_per_chunk": per_chunk["ort_2"] * 1e6,
        "batch_us": {str(b): t * 1e6 for b, t in batch_times["ours"].items()},
        "ort_batch_us": {str(b): t * 1e6 for b, t in batch_times["ort"].items()},
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
