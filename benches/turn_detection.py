"""End of turn: Smart Turn v3 (Rust front end + ONNX Runtime) against the 500 ms silence rule.

    python benches/turn_detection.py [--json [PATH]] [--audio-dir DIR] [--threads 1 2]

A labelled set of utterances is made with the bundled Piper voice and with
espeak-ng (several voices and speeds), plus jfk.wav and three questions from
../shared/audio:

* complete questions and statements;
* the same sentences cut mid-clause ("I'd like to book a table for, | four
  people tonight."), the pause at the cut set to 400-900 ms;
* the same with a filler before the pause ("um", "so");
* the complete sentences, in the Piper voice, cut fluently: the pause goes in
  at the word boundary of the cut, found from Piper's phoneme alignments, so
  the words before it carry the prosody of a sentence that goes on (no comma's
  phrase-final tone). Only where espeak leaves a word boundary at the cut (it
  joins "to my" into one phoneme word): 17 of the 22. Kept apart from the
  headline rates, by its own keys.

Each utterance gets half a second of silence before it and the eagerness
ceiling plus one second after, and a -60 dBFS noise floor. It is streamed in
32 ms chunks through the real Silero VAD (``speech_to_speech.VadStream``, its
soft end at ``--soft-end-ms``, the server's default) and the Rust
``EndOfTurnPolicy``: once a pause has lasted ``--decision-silence-ms`` the
policy asks for a decision, the Rust ``SmartTurn`` model decides on
the turn's audio so far (from 500 ms before its speech began), and the verdict
reaches the policy after the decision's measured wall time, on the audio
clock: above 0.5 the turn ends after ``--complete-silence-ms``, at or below
``--hold-threshold`` it is held (asked again every ``--recheck-ms``, up to
the eagerness ceiling), in between the silence rule ends it. The silence rule
is the same policy without a model. A commit before
the utterance's last word is a premature end of turn.

In the same run, the same decisions' features go through Python
``onnxruntime`` alone, with the session options the core uses (intra-op
threads N, one inter-op thread, sequential, all graph optimisations, no
spinning), alternating with the core's whole decision (front end + model).

Keys of the JSON report (top level: ``--threads``' first value; every thread
count under ``threads``):
    smart_turn_ms_per_decision   Rust front end + model, mean per decision
    ort_model_ms                 the model alone through Python onnxruntime, mean
    decision_cost_ratio          the first over the second (target <= 1.1)
    front_end_ms                 the Rust log-mel front end alone, mean
    complete_recall              complete utterances ended by a "complete" verdict
    first_verdict_recall         ... whose first verdict at the final pause was "complete"
    premature_commit_rate        utterances with a mid-turn pause (cut, filler) ended in it
    premature_commit_rate_{cut,filler,piper,espeak}   the same by kind and by voice
    premature_commit_rate_cut_fluent, silence_rule_premature_commit_rate_cut_fluent,
    hint_premature_commit_rate_cut_fluent   the fluent cuts (not in the rates above)
    silence_rule_premature_commit_rate   the same under the 500 ms silence rule
    mean_end_of_turn_ms          commit minus the end of the last word, complete utterances
    silence_rule_mean_end_of_turn_ms      the same under the silence rule
    end_of_turn_saving_ms        the silence rule's mean minus the model's
    feature_max_diff             largest |Rust - reference| feature over the decisions
    hint_premature_commit_rate   premature_commit_rate when the transcript (``--hints``
                                 STT) may hold a turn the model ended, as sessions with
                                 speculation do; also by kind (_cut, _filler)
    hint_complete_holds          complete utterances the transcript held anyway
    hint_mean_end_of_turn_ms     mean_end_of_turn_ms with those holds
    soft_ends                    soft ends before the silence rule's commit, all utterances
                                 (each starts speculative STT and LLM in a session)
    soft_ends_thrown_away        ... after which speech came back (the work is discarded)
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

import speech_to_speech as s2s
from speech_to_speech import vad

SR = 16_000
CHUNK = 512
LEAD_MS = 500
PRE_SPEECH_MS = 500
#: How long a transcript that sounds unfinished holds a turn the model ended,
#: from the end of speech (the core's ``HINT_HOLD_MS``, rust/engine/input.rs).
HINT_HOLD_MS = 1500
NOISE_DBFS = -60.0
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "audio"

Samples = npt.NDArray[np.float32]

# (complete, cut mid-clause, with a filler). "|" marks the pause; the commas
# before it make the synthesiser pause there with a rising, unfinished tone.
SENTENCES: list[tuple[str, str, str]] = [
    (
        "I'd like to book a table for four people tonight.",
        "I'd like to book a table for, | four people tonight.",
        "I'd like to book a table, um, | for four people tonight.",
    ),
    (
        "What time does the pharmacy close on Sundays?",
        "What time does the, | pharmacy close on Sundays?",
        "What time does the pharmacy, um, | close on Sundays?",
    ),
    (
        "Can you set a timer for fifteen minutes?",
        "Can you set a timer for, | fifteen minutes?",
        "Can you set a, um, | timer for fifteen minutes?",
    ),
    (
        "Please send the report to my manager before noon.",
        "Please send the report to, | my manager before noon.",
        "I finished the report, so, | please send it to my manager.",
    ),
    (
        "How far is the nearest train station from here?",
        "How far is the nearest, | train station from here?",
        "How far is the, um, | nearest train station from here?",
    ),
    (
        "I need to change my flight to next Tuesday.",
        "I need to change my flight to, | next Tuesday.",
        "I need to change my, um, | flight to next Tuesday.",
    ),
    (
        "What's the difference between a crocodile and an alligator?",
        "What's the difference between, | a crocodile and an alligator?",
        "What's the difference between a crocodile and, um, | an alligator?",
    ),
    (
        "Turn off the lights in the living room.",
        "Turn off the lights in the, | living room.",
        "Turn off the, um, | lights in the living room.",
    ),
    (
        "My password stopped working this morning.",
        "My password stopped working this, | morning.",
        "My password stopped working, so, | I need a new one.",
    ),
    (
        "Tell me a joke about penguins.",
        "Tell me a joke about, | penguins.",
        "Tell me a, um, | joke about penguins.",
    ),
    (
        "Add milk and eggs to my shopping list.",
        "Add milk and, | eggs to my shopping list.",
        "Add milk and eggs to my, um, | shopping list.",
    ),
    (
        "Where did I park my car yesterday?",
        "Where did I park my, | car yesterday?",
        "Where did I, um, | park my car yesterday?",
    ),
    (
        "Remind me to water the plants on Friday.",
        "Remind me to water the, | plants on Friday.",
        "Remind me to, um, | water the plants on Friday.",
    ),
    (
        "How many calories are in a banana?",
        "How many calories are in a, | banana?",
        "How many calories are in, um, | a banana?",
    ),
    (
        "The meeting has been moved to three o'clock.",
        "The meeting has been moved to, | three o'clock.",
        "The meeting has been, um, | moved to three o'clock.",
    ),
    (
        "Could you play some relaxing music?",
        "Could you play some, | relaxing music?",
        "Could you play, um, | some relaxing music?",
    ),
    (
        "I missed the bus this morning.",
        "I missed the bus this, | morning.",
        "I missed the bus this morning, so, | I will be late for work.",
    ),
    (
        "What is the capital of Australia?",
        "What is the capital of, | Australia?",
        "What is the, um, | capital of Australia?",
    ),
    (
        "We should leave early to avoid the traffic.",
        "We should leave early to avoid the, | traffic.",
        "We should leave early, so, | we avoid the traffic.",
    ),
    (
        "Is it going to rain this weekend?",
        "Is it going to rain this, | weekend?",
        "Is it going to, um, | rain this weekend?",
    ),
    (
        "Book me a taxi to the airport at seven.",
        "Book me a taxi to the, | airport at seven.",
        "Book me a taxi, um, | to the airport at seven.",
    ),
    (
        "The package was delivered to the wrong address.",
        "The package was delivered to the, | wrong address.",
        "The package was delivered yesterday, so, | I went to pick it up.",
    ),
]

# Voices, in turn per sentence: ("piper", length_scale) or ("espeak", voice, words/minute).
VOICES: list[tuple[Any, ...]] = [
    ("piper", 1.0),
    ("espeak", "en-us", 165),
    ("piper", 1.15),
    ("espeak", "en-gb", 150),
    ("espeak", "en-us+f3", 180),
    ("piper", 0.9),
    ("espeak", "en-gb-x-rp", 140),
]
#: The kinds with a mid-turn pause that the headline rates count; "cut_fluent" is reported apart.
PAUSED_KINDS = ("cut", "filler")
#: Piper's length scales for the fluent cuts, in turn per sentence.
FLUENT_SCALES = (1.0, 1.15, 0.9)
#: Fade at each side of a fluent cut, so that the cut makes no click.
FADE_MS = 8

# Shared recordings that are complete turns (interrupt_wait.wav is left out:
# "Stop." then a pause may well be a turn of its own).
SHARED_COMPLETE = ["jfk.wav", "q_book.wav", "q_capital_france.wav", "q_ocean_fact.wav"]


@dataclass
class Utterance:
    """One labelled recording: `audio` at 16 kHz, its speech ending at `speech_end_ms`."""

    name: str
    kind: str  # "complete", "cut", "filler" or "cut_fluent"
    voice: str
    audio: Samples
    speech_end_ms: float
    pause_ms: float = 0.0


@dataclass
class Outcome:
    """What one policy did with one utterance."""

    commit_ms: float | None = None
    reason: str | None = None
    premature: bool = False
    transcript: str | None = None
    hint_hold: bool = False
    # (time, complete, probability, wall ms) of every decision
    verdicts: list[tuple[int, bool, float, float]] = field(default_factory=list)
    final_first_verdict: bool | None = None
    # soft ends (speculation started), and those speech came back after (thrown away)
    soft_ends: int = 0
    resumed: int = 0


@dataclass
class Row:
    """One utterance with what the model's policy and the silence rule did."""

    u: Utterance
    smart: Outcome
    rule: Outcome


# --- making the labelled set ---


def _frames_rms(audio: Samples) -> npt.NDArray[np.float64]:
    n = len(audio) // 160 * 160
    frames = audio[:n].astype(np.float64).reshape(-1, 160)
    return np.sqrt((frames**2).mean(axis=1))


def _trim(audio: Samples) -> Samples:
    """Drop leading and trailing silence (10 ms frames under 2 % of the peak RMS)."""
    rms = _frames_rms(audio)
    loud = np.flatnonzero(rms >= max(rms.max() * 0.02, 1e-4))
    if len(loud) == 0:
        raise RuntimeError("synthesised audio is silent")
    return audio[loud[0] * 160 : (loud[-1] + 1) * 160]


def _gaps(audio: Samples, min_ms: int = 60) -> list[tuple[int, int]]:
    """Interior silent stretches of at least `min_ms`, as sample ranges."""
    rms = _frames_rms(audio)
    quiet = rms < max(rms.max() * 0.02, 1e-4)
    gaps, i = [], 0
    while i < len(quiet):
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < len(quiet) and quiet[j]:
            j += 1
        if (j - i) * 10 >= min_ms and i > 0 and j < len(quiet):
            gaps.append((i * 160, j * 160))
        i = j
    return gaps


def _read_wav_bytes(data: bytes) -> Samples:
    with wave.open(io.BytesIO(data)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    return audio if rate == SR else s2s.resample(audio, input_rate=rate, output_rate=SR)


class Synthesiser:
    """Piper (the bundled voice) and espeak-ng, both to 16 kHz float32."""

    def __init__(self) -> None:
        from piper import PiperVoice, SynthesisConfig

        from speech_to_speech.models import piper_joe_voice

        model, config = piper_joe_voice()
        try:
            import onnx  # noqa: F401  (Piper patches its model with it for alignments)
        except ImportError:
            raise SystemExit(
                "onnx is missing (Piper's phoneme alignments need it): pip install onnx, "
                "or pip install 'speech-to-speech[test]'"
            ) from None
        self._piper = PiperVoice.load(model, config_path=config, include_alignments=True)
        self._config = SynthesisConfig
        if shutil.which("espeak-ng") is None:
            raise SystemExit(
                "espeak-ng is missing: apt-get install espeak-ng (.ci/setup --test does)"
            )

    def __call__(self, text: str, voice: tuple[Any, ...]) -> Samples:
        if voice[0] == "piper":
            config = self._config(length_scale=voice[1], noise_scale=0.667, noise_w_scale=0.8)
            chunks = [c.audio_float_array for c in self._piper.synthesize(text, config)]
            audio = np.concatenate(chunks).astype(np.float32)
            rate = int(self._piper.config.sample_rate)
            return s2s.resample(audio, input_rate=rate, output_rate=SR)
        _, name, wpm = voice
        out = subprocess.run(
            ["espeak-ng", "-v", name, "-s", str(wpm), "--stdout", text],
            capture_output=True,
            check=True,
        ).stdout
        return _read_wav_bytes(out)

    def fluent_cut(
        self, text: str, prefix: str, length_scale: float, pause_ms: float
    ) -> Samples | None:
        """`text` in the Piper voice with `pause_ms` of silence after the words of `prefix`.

        The cut is where Piper's alignments put the end of the prefix's last word. espeak
        joins some words into one ("in the" becomes one word), so the prefix is phonemised
        alone and must match the sentence's first phoneme words; None where espeak
        joined the words at the cut ("to my"), which leave no boundary.
        """
        config = self._config(length_scale=length_scale, noise_scale=0.667, noise_w_scale=0.8)
        (chunk,) = self._piper.synthesize(text, config, include_alignments=True)
        if chunk.phoneme_alignments is None:
            raise RuntimeError("Piper gave no phoneme alignments")
        words = _phoneme_words(self._piper.phonemize(prefix)[0])
        if _phoneme_words(chunk.phonemes)[: len(words)] != words:
            return None
        # The cut goes where the space after the prefix's last word starts: Piper's
        # space carries the next word's onset.
        at, seen = 0, 0
        for a in chunk.phoneme_alignments:
            if a.phoneme == " ":
                seen += 1
                if seen == len(words):
                    break
            at += a.num_samples
        rate = int(self._piper.config.sample_rate)
        audio = s2s.resample(chunk.audio_float_array, input_rate=rate, output_rate=SR)
        cut = at * SR // rate
        fade = np.linspace(1.0, 0.0, FADE_MS * SR // 1000, dtype=np.float32)
        head, tail = audio[:cut].copy(), audio[cut:].copy()
        head[len(head) - len(fade) :] *= fade
        tail[: len(fade)] *= fade[::-1]
        pause = np.zeros(int(pause_ms * SR / 1000), dtype=np.float32)
        return np.concatenate([head, pause, tail])


def _phoneme_words(phonemes: Sequence[str]) -> list[str]:
    """Piper's phonemes as words, without stress marks or punctuation."""
    text = "".join(p for p in phonemes if p not in "ˈˌ")
    return [w.strip(".,?!;:") for w in text.split()]


def voice_name(voice: tuple[Any, ...]) -> str:
    return f"piper@{voice[1]}" if voice[0] == "piper" else f"espeak:{voice[1]}@{voice[2]}"


def _with_pause(audio: Samples, text: str, pause_ms: float) -> tuple[Samples, int]:
    """Set the pause at "|" to `pause_ms`; returns the audio and where speech resumes.

    Every comma before the "|" makes one pause; the last of them is the cut.
    """
    commas = text.split("|", maxsplit=1)[0].count(",")
    gaps = _gaps(audio)
    if len(gaps) < commas:
        raise RuntimeError(f"found {len(gaps)} pauses for {commas} commas in {text!r}")
    # The comma pauses are the longest; the cut is the last of them in time.
    longest = sorted(sorted(gaps, key=lambda g: g[1] - g[0])[-commas:])
    start, end = longest[-1]
    pause = np.zeros(int(pause_ms * SR / 1000), dtype=np.float32)
    return np.concatenate([audio[:start], pause, audio[end:]]), start + len(pause)


def _framed(speech: Samples, tail_ms: float, rng: np.random.Generator) -> Samples:
    lead = np.zeros(LEAD_MS * SR // 1000, dtype=np.float32)
    tail = np.zeros(int(tail_ms * SR / 1000), dtype=np.float32)
    audio = np.concatenate([lead, speech, tail])
    noise = rng.standard_normal(len(audio)).astype(np.float32) * 10 ** (NOISE_DBFS / 20)
    return (audio + noise).astype(np.float32)


def make_set(tail_ms: float, cache: Path | None) -> list[Utterance]:
    """The labelled utterances (cached as .npz in `cache` when given)."""
    set_file = "set-v2.npz"  # v2: with the fluent cuts
    if cache is not None and (cache / set_file).is_file():
        return _load_set(cache / set_file)
    synth = Synthesiser()
    rng = np.random.default_rng(15)
    out: list[Utterance] = []
    for i, texts in enumerate(SENTENCES):
        voice = VOICES[i % len(VOICES)]
        for kind, text in zip(("complete", "cut", "filler"), texts, strict=True):
            speech = _trim(synth(text.replace("|", ""), voice))
            pause_ms = 0.0
            if kind != "complete":
                # 400-900 ms, spread over the set.
                pause_ms = 400.0 + (i * 7 + (kind == "filler") * 3) % 11 * 50.0
                speech, _ = _with_pause(speech, text, pause_ms)
            out.append(
                Utterance(
                    name=f"{i:02d}-{kind}",
                    kind=kind,
                    voice=voice_name(voice),
                    audio=_framed(speech, tail_ms, rng),
                    speech_end_ms=LEAD_MS + len(speech) * 1000 / SR,
                    pause_ms=pause_ms,
                )
            )
        prefix = texts[1].split("|", maxsplit=1)[0].rstrip(" ,")
        scale = FLUENT_SCALES[i % len(FLUENT_SCALES)]
        pause_ms = 400.0 + (i * 5 + 2) % 11 * 50.0
        cut = synth.fluent_cut(texts[0], prefix, scale, pause_ms)
        if cut is None:
            continue
        speech = _trim(cut)
        out.append(
            Utterance(
                name=f"{i:02d}-cut_fluent",
                kind="cut_fluent",
                voice=voice_name(("piper", scale)),
                audio=_framed(speech, tail_ms, rng),
                speech_end_ms=LEAD_MS + len(speech) * 1000 / SR,
                pause_ms=pause_ms,
            )
        )
    for name in SHARED_COMPLETE:
        speech = _trim(_read_wav_bytes((SHARED / name).read_bytes()))
        out.append(
            Utterance(
                name=name,
                kind="complete",
                voice="recorded" if name == "jfk.wav" else "espeak (shared)",
                audio=_framed(speech, tail_ms, rng),
                speech_end_ms=LEAD_MS + len(speech) * 1000 / SR,
            )
        )
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        _save_set(cache / set_file, out)
    return out


def _save_set(path: Path, utterances: Sequence[Utterance]) -> None:
    meta = [
        {k: getattr(u, k) for k in ("name", "kind", "voice", "speech_end_ms", "pause_ms")}
        for u in utterances
    ]
    arrays = {f"a{i}": u.audio for i, u in enumerate(utterances)}
    np.savez_compressed(path, meta=json.dumps(meta), **arrays)  # type: ignore[arg-type]


def _load_set(path: Path) -> list[Utterance]:
    data = np.load(path)
    meta = json.loads(str(data["meta"]))
    return [Utterance(audio=data[f"a{i}"], **m) for i, m in enumerate(meta)]


# --- running the policy ---


def run_policy(
    u: Utterance,
    silero: s2s.SileroVad,
    policy: s2s.EndOfTurnPolicy,
    decide: Callable[[Samples], tuple[bool, float, float]] | None,
    soft_end_ms: float,
) -> Outcome:
    """Stream `u` through the VAD and `policy`; `decide` gives (complete, probability, wall ms)."""
    stream = s2s.VadStream(model=silero, min_silence_ms=60_000.0, soft_end_ms=soft_end_ms)
    outcome = Outcome()
    turn_start: int | None = None
    pending: tuple[int, float, float] | None = None  # decision, due, probability
    final_pause = False

    def act(action: str, at: int) -> bool:
        """Carry out `action` at `at` ms; True once the turn is committed."""
        nonlocal pending
        if action == "decide":
            assert decide is not None and turn_start is not None
            audio = u.audio[turn_start * SR // 1000 : at * SR // 1000]
            complete, probability, wall_ms = decide(audio)
            outcome.verdicts.append((at, complete, probability, wall_ms))
            if final_pause and outcome.final_first_verdict is None:
                outcome.final_first_verdict = complete
            pending = (policy.decision, at + wall_ms, probability)
        elif action == "commit":
            outcome.commit_ms = at
            outcome.reason = policy.reason
            outcome.premature = at < u.speech_end_ms
            return True
        return False

    now = 0
    for offset in range(0, len(u.audio), CHUNK):
        events = stream.feed(u.audio[offset : offset + CHUNK])
        previous, now = now, stream.position_ms
        # A verdict due inside this chunk lands before the chunk's VAD events.
        if pending is not None and pending[1] <= now:
            decision, due, probability = pending
            pending = None
            at = max(int(np.ceil(due)), previous)
            if act(policy.verdict(decision, probability, at), at):
                return outcome
        for ev in events:
            if ev.type == "speech_started":
                policy.speech()
                assert ev.speech_start_ms is not None
                if turn_start is None:
                    turn_start = max(0, ev.speech_start_ms - PRE_SPEECH_MS)
            elif ev.type == "speech_resumed":
                policy.speech()
                pending = None
                outcome.resumed += 1
            elif ev.type == "soft_end":
                outcome.soft_ends += 1
                assert ev.audio_ms is not None
                final_pause = ev.audio_ms >= u.speech_end_ms - 100
                if act(policy.pause(ev.audio_ms, now), now):
                    return outcome
        if act(policy.tick(now), now):
            return outcome
    return outcome


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def evaluate(
    utterances: Sequence[Utterance],
    silero: s2s.SileroVad,
    model: s2s.SmartTurn,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], list[Samples], list[dict[str, Any]]]:
    """The policy with the model and without it over the set; also the decisions' audio."""
    decisions: list[Samples] = []

    def decide(audio: Samples) -> tuple[bool, float, float]:
        t0 = time.perf_counter()
        verdict = model.predict(audio)
        wall = (time.perf_counter() - t0) * 1000
        decisions.append(audio)
        return verdict.complete, verdict.probability, wall

    def policy(with_model: bool) -> s2s.EndOfTurnPolicy:
        return s2s.EndOfTurnPolicy(
            model=with_model,
            eagerness=args.eagerness,
            decision_silence_ms=args.decision_silence_ms,
            complete_silence_ms=args.complete_silence_ms,
            recheck_ms=args.recheck_ms or None,
            hold_threshold=args.hold_threshold,
        )

    rows = [
        Row(
            u,
            run_policy(u, silero, policy(True), decide, args.soft_end_ms),
            run_policy(u, silero, policy(False), None, args.soft_end_ms),
        )
        for u in utterances
    ]

    def eot(o: Outcome, u: Utterance) -> float | None:
        if o.commit_ms is None or o.premature:
            return None
        return o.commit_ms - u.speech_end_ms

    if args.hints:
        _hint(rows, args.hints)

    complete = [r for r in rows if r.u.kind == "complete"]
    paused = [r for r in rows if r.u.kind in PAUSED_KINDS]
    fluent = [r for r in rows if r.u.kind == "cut_fluent"]
    smart_eot = [e for r in complete if (e := eot(r.smart, r.u)) is not None]
    rule_eot = [e for r in complete if (e := eot(r.rule, r.u)) is not None]
    result: dict[str, Any] = {
        "utterances": len(rows),
        "complete_utterances": len(complete),
        "paused_utterances": len(paused),
        "complete_recall": _mean(
            [float(r.smart.reason == "complete" and not r.smart.premature) for r in complete]
        ),
        "first_verdict_recall": _mean([float(bool(r.smart.final_first_verdict)) for r in complete]),
        "premature_commit_rate": _mean([float(r.smart.premature) for r in paused]),
        "silence_rule_premature_commit_rate": _mean([float(r.rule.premature) for r in paused]),
        "complete_premature_commits": sum(r.smart.premature for r in complete),
        "silence_rule_complete_premature_commits": sum(r.rule.premature for r in complete),
        "mean_end_of_turn_ms": _mean(smart_eot),
        "silence_rule_mean_end_of_turn_ms": _mean(rule_eot),
        "median_end_of_turn_ms": float(np.median(smart_eot)) if smart_eot else float("nan"),
        "silence_rule_median_end_of_turn_ms": float(np.median(rule_eot))
        if rule_eot
        else float("nan"),
        "paused_final_mean_end_of_turn_ms": _mean(
            [e for r in paused if (e := eot(r.smart, r.u)) is not None]
        ),
        "decisions": len(decisions),
        "soft_ends": sum(r.rule.soft_ends for r in rows),
        "soft_ends_thrown_away": sum(r.rule.resumed for r in rows),
        "decision_wall_ms": _mean([v[3] for r in rows for v in r.smart.verdicts]),
    }
    for kind in PAUSED_KINDS:
        of_kind = [r for r in paused if r.u.kind == kind]
        result[f"premature_commit_rate_{kind}"] = _mean([float(r.smart.premature) for r in of_kind])
    result["cut_fluent_utterances"] = len(fluent)
    result["premature_commit_rate_cut_fluent"] = _mean([float(r.smart.premature) for r in fluent])
    result["silence_rule_premature_commit_rate_cut_fluent"] = _mean(
        [float(r.rule.premature) for r in fluent]
    )
    for family in ("piper", "espeak"):
        of_voice = [r for r in paused if r.u.voice.startswith(family)]
        result[f"premature_commit_rate_{family}"] = _mean(
            [float(r.smart.premature) for r in of_voice]
        )
    if args.hints:
        held = [r for r in rows if r.smart.hint_hold]
        result["hint_stt"] = args.hints
        result["hint_hold_ms"] = HINT_HOLD_MS
        # A hint holds the turn HINT_HOLD_MS from the end of speech; every pause
        # in the set is shorter, so a held premature commit becomes speech resumed.
        result["hint_premature_commit_rate"] = _mean(
            [float(r.smart.premature and not r.smart.hint_hold) for r in paused]
        )
        for kind in (*PAUSED_KINDS, "cut_fluent"):
            result[f"hint_premature_commit_rate_{kind}"] = _mean(
                [
                    float(r.smart.premature and not r.smart.hint_hold)
                    for r in rows
                    if r.u.kind == kind
                ]
            )
        result["hint_complete_holds"] = sum(r.u.kind == "complete" for r in held)
        result["hint_mean_end_of_turn_ms"] = _mean(
            [
                HINT_HOLD_MS if r.smart.hint_hold else e
                for r in complete
                if (e := eot(r.smart, r.u)) is not None
            ]
        )
    result["end_of_turn_saving_ms"] = (
        result["silence_rule_mean_end_of_turn_ms"] - result["mean_end_of_turn_ms"]
    )
    details = [
        {
            "name": r.u.name,
            "kind": r.u.kind,
            "voice": r.u.voice,
            "pause_ms": r.u.pause_ms,
            "speech_end_ms": round(r.u.speech_end_ms),
            "smart_commit_ms": r.smart.commit_ms,
            "smart_reason": r.smart.reason,
            "smart_premature": r.smart.premature,
            "probabilities": [(t, round(p, 3)) for t, _, p, _ in r.smart.verdicts],
            "rule_commit_ms": r.rule.commit_ms,
            "rule_premature": r.rule.premature,
            "transcript": r.smart.transcript,
            "hint_hold": r.smart.hint_hold,
        }
        for r in rows
    ]
    return result, decisions, details


def _hint(rows: Sequence[Row], backend: str) -> None:
    """Mark the turns the model ended that the transcript holds: the words up to
    the commit, transcribed by `backend`, sound unfinished (as in a session with
    speculation, whose STT has the words at the soft end)."""
    from speech_to_speech.handlers.registry import create_handler

    stt = create_handler("stt", backend)
    stt.setup()
    for r in rows:
        o = r.smart
        if o.commit_ms is None or o.reason == "max_wait":
            continue
        audio = r.u.audio[: o.commit_ms * SR // 1000]
        text = next((t.text for t in stt.transcribe(audio) if t.final), "")
        o.transcript = text
        o.hint_hold = s2s.sounds_unfinished(text)


# --- cost per decision ---


def reference_features() -> ModuleType:
    """pipecat's numpy log-mel extractor, loaded by path (the package pulls its framework)."""
    path = Path(vad.default_turn_model_path()).parents[1] / "_whisper_features.py"
    spec = importlib.util.spec_from_file_location("_smart_turn_reference_features", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the reference front end from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python_session(model_path: str, threads: int) -> ort.InferenceSession:
    """The session options the core uses."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])


def cost(
    decisions: Sequence[Samples], model: s2s.SmartTurn, threads: int, rounds: int
) -> dict[str, float]:
    """Rust decision (front end + model) vs the model alone in Python, alternating."""
    session = python_session(model.model_path, threads)
    features = [s2s.log_mel_features(a)[None] for a in decisions]
    # Warm both up.
    for a, f in zip(decisions[:2], features[:2], strict=False):
        model.predict(a)
        session.run(None, {"input_features": f})
    rust, python, front, diffs = [], [], [], []
    for k in range(rounds):
        for a, f in zip(decisions, features, strict=True):
            first_rust = (k % 2) == 0
            for which in ("rust", "python") if first_rust else ("python", "rust"):
                t0 = time.perf_counter()
                if which == "rust":
                    p_rust = model.predict(a).probability
                    rust.append(time.perf_counter() - t0)
                else:
                    p_py = float(session.run(None, {"input_features": f})[0].item())
                    python.append(time.perf_counter() - t0)
            diffs.append(abs(p_rust - p_py))
            t0 = time.perf_counter()
            s2s.log_mel_features(a)
            front.append(time.perf_counter() - t0)
    ms_rust, ms_python = 1000 * float(np.mean(rust)), 1000 * float(np.mean(python))
    return {
        "smart_turn_ms_per_decision": ms_rust,
        "ort_model_ms": ms_python,
        "decision_cost_ratio": ms_rust / ms_python,
        "front_end_ms": 1000 * float(np.mean(front)),
        "probability_max_diff": float(max(diffs)),
        "timed_decisions": len(rust),
    }


def feature_parity(decisions: Sequence[Samples], reference: ModuleType) -> float:
    worst = 0.0
    for a in decisions:
        x = a[-128_000:]
        x = np.pad(x, (128_000 - len(x), 0))
        ref = reference.compute_whisper_log_mel_features(x, do_normalize=True)
        worst = max(worst, float(np.abs(s2s.log_mel_features(a) - ref).max()))
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json", nargs="?", const="-", help="write the report as JSON to PATH (stdout: no PATH)"
    )
    parser.add_argument("--audio-dir", type=Path, help="cache the generated set here")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--soft-end-ms",
        type=float,
        default=s2s.DEFAULTS["session"]["speech_to_speech"]["soft_end_ms"],
    )
    parser.add_argument(
        "--decision-silence-ms", type=int, default=200, help="silence before the model is asked"
    )
    parser.add_argument("--complete-silence-ms", type=int, default=200)
    parser.add_argument(
        "--recheck-ms",
        type=int,
        default=s2s.EndOfTurnPolicy().recheck_ms,
        help="0: never ask again",
    )
    parser.add_argument(
        "--hold-threshold",
        type=float,
        default=0.1,
        help="at or below: hold the turn; up to 0.5: the silence rule",
    )
    parser.add_argument(
        "--hints",
        default="faster-whisper",
        help="STT backend whose transcript may hold a turn the model ended ('': no hints)",
    )
    parser.add_argument("--eagerness", default="auto", choices=("low", "medium", "high", "auto"))
    parser.add_argument("--rounds", type=int, default=1, help="timing rounds over the decisions")
    parser.add_argument(
        "--details", action="store_true", help="add every utterance's outcome to the JSON report"
    )
    args = parser.parse_args(argv)

    ceiling = s2s.EndOfTurnPolicy(eagerness=args.eagerness).max_wait_ms
    utterances = make_set(ceiling + 1000.0, args.audio_dir)
    silero = vad.load_silero_vad()
    reference = reference_features()
    report: dict[str, Any] = {
        "soft_end_ms": args.soft_end_ms,
        "decision_silence_ms": args.decision_silence_ms,
        "complete_silence_ms": args.complete_silence_ms,
        "recheck_ms": args.recheck_ms,
        "hold_threshold": args.hold_threshold,
        "eagerness": args.eagerness,
        "max_wait_ms": ceiling,
        "threads": {},
    }
    for threads in args.threads:
        model = vad.load_smart_turn(intra_op_threads=threads)
        result, decisions, details = evaluate(utterances, silero, model, args)
        result.update(cost(decisions, model, threads, args.rounds))
        result["feature_max_diff"] = feature_parity(decisions[:40], reference)
        report["threads"][str(threads)] = result
        if args.details and "details" not in report:
            report["details"] = details
    report.update(report["threads"][str(args.threads[0])])
    report["voices"] = sorted({u.voice for u in utterances})

    width = max(len(k) for k in report)
    for key, value in report.items():
        if key in ("threads", "voices", "details"):
            continue
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:{width}} {shown}", file=sys.stderr)
    for threads, r in report["threads"].items():
        print(
            f"threads={threads}: {r['smart_turn_ms_per_decision']:.1f} ms per decision vs "
            f"{r['ort_model_ms']:.1f} ms ONNX Runtime alone "
            f"(x{r['decision_cost_ratio']:.3f}); front end {r['front_end_ms']:.2f} ms",
            file=sys.stderr,
        )
    if args.json == "-":
        print(json.dumps(report, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
