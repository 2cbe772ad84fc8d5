"""Whisper's mel window: word error rate and time per utterance for several window sizes.

    python benches/stt_window.py [--windows 30,15,10,0.5] [--json PATH]

The corpus is made here: 25 voice-assistant sentences spoken by the bundled
Piper voice and, when ``espeak-ng`` is installed (Debian package
``espeak-ng``), by four espeak-ng voices, plus the real recording
``../shared/audio/jfk.wav``. Each utterance goes through the faster-whisper
handler (the bundled tiny.en, int8) with ``window_s`` set to each value; a
window of 0.5 s means "the utterance plus 1 s". WER is over all words, after
lower-casing and dropping punctuation (so "10" for "ten" counts as an error
in every mode alike). Times are means on this machine; only the ratios
between windows from one run are meant to be compared.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import speech_to_speech as s2s
from speech_to_speech.handlers.registry import create_handler

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "audio"
JFK = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
SENTENCES = [
    "What is the capital of France?",
    "Tell me a fun fact about the ocean.",
    "Can you recommend a good book to read this weekend?",
    "Stop. Wait a second, let me ask something else.",
    "How far away is the moon from the earth?",
    "What time does the train leave tomorrow morning?",
    "Please set a timer for ten minutes.",
    "What's the weather going to be like in London on Friday?",
    "Who wrote the novel Pride and Prejudice?",
    "Can you explain how a rainbow forms?",
    "I would like to book a table for two at seven tonight.",
    "Translate good morning into Spanish.",
    "What is the difference between a virus and a bacterium?",
    "Remind me to call my mother after lunch.",
    "How many legs does a spider have?",
    "Play some relaxing music in the living room.",
    "Why is the sky blue during the day?",
    "What should I cook for dinner with chicken and rice?",
    "Turn off the lights in the kitchen, please.",
    "How do I reset my password?",
    "Give me three tips for sleeping better.",
    "What is the square root of one hundred forty four?",
    "Tell me a short joke about computers.",
    "Where is the nearest pharmacy?",
    "How long should I boil an egg?",
]
ESPEAK_VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m3"]

Audio = npt.NDArray[np.float32]


def read_wav(path: Path) -> Audio:
    with wave.open(str(path)) as w:
        pcm = w.readframes(w.getnframes())
        rate = w.getframerate()
    audio = s2s.pcm16_to_float32(pcm)
    return audio if rate == 16000 else s2s.resample(audio, input_rate=rate, output_rate=16000)


def corpus() -> list[tuple[str, str, Audio]]:
    """(label, reference text, 16 kHz audio) for every utterance."""
    out: list[tuple[str, str, Audio]] = []
    tts = create_handler("tts", "piper")
    tts.setup()
    for i, text in enumerate(SENTENCES):
        chunks = list(tts.synthesize(text))
        audio = np.concatenate([c.samples for c in chunks])
        rate = chunks[0].sample_rate
        out.append(
            (f"piper-{i:02d}", text, s2s.resample(audio, input_rate=rate, output_rate=16000))
        )
    if shutil.which("espeak-ng"):
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "say.wav"
            for i, text in enumerate(SENTENCES):
                voice = ESPEAK_VOICES[i % len(ESPEAK_VOICES)]
                subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
                out.append((f"espeak-{voice}-{i:02d}", text, read_wav(wav)))
    else:
        print("espeak-ng not installed: Piper voices and jfk.wav only")
    out.append(("jfk", JFK, read_wav(SHARED / "jfk.wav")))
    return out


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row[0] = row[:], i
        for j in range(1, len(hyp) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
    return row[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", default="30,15,10,0.5", help="window_s values, comma-separated")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args()
    windows = [float(w) for w in args.windows.split(",")]
    utterances = corpus()
    handlers = {w: create_handler("stt", "faster-whisper", window_s=w) for w in windows}
    for h in handlers.values():
        h.setup()
    stats: dict[float, dict[str, Any]] = {
        w: {"errors": 0, "words": 0, "seconds": 0.0, "wrong": []} for w in windows
    }
    for label, reference, audio in utterances:
        for w, stt in handlers.items():
            t0 = time.perf_counter()
            text = next(t.text for t in stt.transcribe(audio) if t.final)
            s = stats[w]
            s["seconds"] += time.perf_counter() - t0
            errors = edit_distance(words(reference), words(text))
            s["errors"] += errors
            s["words"] += len(words(reference))
            if errors:
                s["wrong"].append({"utterance": label, "reference": reference, "heard": text})
    n = len(utterances)
    report: dict[str, Any] = {"utterances": n, "windows": {}}
    print(f"{n} utterances")
    print(f"{'window_s':>9} {'WER':>6} {'ms/utt':>7} {'vs 30 s':>8}")
    base = stats[30.0]["seconds"] if 30.0 in stats else None
    for w in windows:
        s = stats[w]
        wer = s["errors"] / max(s["words"], 1)
        ms = 1000 * s["seconds"] / n
        speedup = base / s["seconds"] if base else None
        print(f"{w:>9g} {wer:>6.3f} {ms:>7.0f} {speedup or float('nan'):>7.2f}x")
        report["windows"][f"{w:g}"] = {
            "wer": wer,
            "ms_per_utterance": ms,
            "speedup_vs_30s": speedup,
            "wrong": s["wrong"],
        }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
