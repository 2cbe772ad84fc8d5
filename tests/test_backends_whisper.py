"""Whisper tiny.en on transformers, mlx-whisper and mlx-audio: the bundled CTranslate2 weights,
converted at set-up (``speech_to_speech.convert``), scored by word error rate on ../shared/audio."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from speech_checks import AUDIO, REFERENCES, backend_library, corpus_wer, read_wav, wer

from speech_to_speech.handlers import STTHandler, create_handler

# faster-whisper on the same weights scores 0.07 here (the synthetic voices cost a few words).
WER_BOUND = 0.2


def score(stt: STTHandler, name: str) -> float:
    pairs = []
    t0 = time.perf_counter()
    for file, reference in REFERENCES.items():
        finals = [t for t in stt.transcribe(read_wav(AUDIO / file)) if t.final]
        assert len(finals) == 1 and finals[0].text == finals[0].text.strip()
        pairs.append((reference, finals[0].text))
    elapsed = time.perf_counter() - t0
    total = corpus_wer(pairs)
    print(f"\n{name}: WER {total:.3f} over {len(pairs)} files in {elapsed:.1f} s")
    for reference, heard in pairs:
        print(f"  {wer(reference, heard):.2f} {heard!r}")
    return total


def check_cancel(stt: STTHandler) -> None:
    cancel = threading.Event()
    cancel.set()
    assert list(stt.transcribe(read_wav(AUDIO / "q_book.wav"), cancel=cancel)) == []


def test_converted_weights_match_the_ctranslate2_model(whisper_hf_dir: Path) -> None:
    from safetensors.numpy import load_file

    from speech_to_speech.convert import read_ct2_model
    from speech_to_speech.models import whisper_tiny_en_dir

    spec, revision, ct2 = read_ct2_model(whisper_tiny_en_dir() / "model.bin")
    assert (spec, revision) == ("WhisperSpec", 3)
    hf = load_file(str(whisper_hf_dir / "model.safetensors"))
    fused = ct2["decoder/layer_3/self_attention/linear_0/weight"]
    assert fused.shape == (3 * 384, 384) and fused.dtype == np.float16
    assert np.array_equal(hf["model.decoder.layers.3.self_attn.v_proj.weight"], fused[768:])
    assert "model.decoder.layers.3.self_attn.k_proj.bias" not in hf
    gamma = ct2["encoder/layer_norm/gamma"]
    assert np.array_equal(hf["model.encoder.layer_norm.weight"], gamma)
    assert len(hf) == 167


def test_transformers_whisper_on_converted_weights(whisper_hf_dir: Path) -> None:
    backend_library("transformers")
    backend_library("torch")
    stt = create_handler("stt", "whisper", model=str(whisper_hf_dir))
    stt.setup()
    assert score(stt, "whisper (transformers)") <= WER_BOUND
    check_cancel(stt)
    with pytest.raises(ValueError, match="English-only"):
        list(stt.transcribe(np.zeros(16_000, dtype=np.float32), language="fr"))


@pytest.mark.parametrize(
    ("backend", "libraries", "layout"),
    [
        ("whisper-mlx", ["mlx.core", "mlx_whisper"], "whisper_mlx_dir"),
        ("mlx-audio-whisper", ["mlx.core", "mlx_audio"], "whisper_hf_dir"),
    ],
)
def test_mlx_whispers_on_converted_weights(
    backend: str, libraries: list[str], layout: str, request: pytest.FixtureRequest
) -> None:
    for library in libraries:
        backend_library(library)
    folder: Path = request.getfixturevalue(layout)
    stt = create_handler("stt", backend, model=str(folder))
    stt.setup()
    assert score(stt, backend) <= WER_BOUND
    check_cancel(stt)
