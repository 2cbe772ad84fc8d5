"""Backends whose weights no package ships: their real library loads a tiny model that the test
builds in the real file layout, and its real decoding must give the transcript the weights spell
(``tiny_models``). Real loader and decoding; the weights are made up, so no accuracy is claimed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from speech_checks import AUDIO, backend_library, read_wav

from speech_to_speech.handlers import MissingExtraError, create_handler

WORDS = ["the", "cat", "sat", "on", "a", "mat"]


def test_parakeet_tdt_decodes_through_onnx_asr(tmp_path: Path) -> None:
    backend_library("onnx_asr")
    folder = tiny_models.nemo_tdt(tmp_path / "tdt", WORDS)
    stt = create_handler("stt", "parakeet-tdt", model=str(folder), device="cpu")
    stt.setup()
    # 8x subsampling of 10 ms frames: a frame per 80 ms, one word per frame.
    assert [t.text for t in stt.transcribe(read_wav(AUDIO / "q_book.wav"))] == [" ".join(WORDS)]
    short = np.zeros(3 * 1280, dtype=np.float32)  # 240 ms: 3 frames after subsampling
    assert [t.text for t in stt.transcribe(short)] == ["the cat sat"]
    cancel = threading.Event()
    cancel.set()
    assert list(stt.transcribe(short, cancel=cancel)) == []


def test_parakeet_named_model_loads_from_a_local_folder(tmp_path: Path) -> None:
    backend_library("onnx_asr")
    folder = tiny_models.nemo_tdt(tmp_path / "tdt", WORDS)
    stt = create_handler("stt", "parakeet-tdt", model_dir=str(folder), device="auto")
    stt.setup()  # the name says which loader (nemo-parakeet-tdt-0.6b-v3), the folder has the files
    assert [t.text for t in stt.transcribe(np.zeros(1280, dtype=np.float32))] == ["the"]


def test_parakeet_on_cuda_without_onnxruntime_gpu_names_the_extra(tmp_path: Path) -> None:
    backend_library("onnx_asr")
    onnxruntime = backend_library("onnxruntime")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    stt = create_handler("stt", "parakeet-tdt", model=str(tmp_path), device="cuda")
    with pytest.raises(MissingExtraError, match=r"speech-to-speech\[cuda\]"):
        stt.setup()


def test_paraformer_decodes_through_funasr_onnx(tmp_path: Path) -> None:
    backend_library("funasr_onnx")
    folder = tiny_models.paraformer(tmp_path / "paraformer", "你好世界")
    stt = create_handler("stt", "paraformer", model=str(folder))
    stt.setup()
    finals = list(stt.transcribe(read_wav(AUDIO / "q_capital_france.wav")))
    assert [(t.text, t.final, t.language) for t in finals] == [("你好世界", True, "zh")]
    # 110 ms is 9 fbank frames (25 ms, 10 ms hop), stacked 7 by 7 every 6th frame (LFR): 2.
    assert [t.text for t in stt.transcribe(np.zeros(int(0.11 * 16_000), np.float32))] == ["你好"]
    assert [t.text for t in stt.transcribe(np.zeros(100, np.float32))] == [""]


def test_paraformer_missing_library_gives_its_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "funasr_onnx" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingExtraError) as excinfo:
        create_handler("stt", "paraformer")
    message = str(excinfo.value)
    assert "pip install --no-deps 'funasr-onnx>=0.4'" in message and "\n" not in message


@pytest.fixture(scope="module")
def mms_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    backend_library("torch")
    transformers = backend_library("transformers")
    import torch

    torch.manual_seed(0)
    chars = list(" abcdefghijklmnopqrstuvwxyz'")
    vocab = {"<pad>": 0, **{c: i + 1 for i, c in enumerate(chars)}, "<unk>": len(chars) + 1}
    config = transformers.VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=32,
        use_stochastic_duration_prediction=False,
        duration_predictor_filter_channels=16,
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        sampling_rate=16_000,
    )
    out = tmp_path_factory.mktemp("mms")
    transformers.VitsModel(config).save_pretrained(str(out))
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "VitsTokenizer",
                "add_blank": True,
                "normalize": True,
                "phonemize": False,
                "is_uroman": False,
                "language": "eng",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
            }
        )
    )
    return out


def test_mms_synthesizes_through_vits_from_pretrained(mms_dir: Path) -> None:
    tts = create_handler("tts", "facebookMMS", model=str(mms_dir))
    tts.setup()
    assert tts.sample_rate == 16_000
    text = "Hello there, how are you?"
    chunks = list(tts.synthesize(text))
    assert len(chunks) == 1 and chunks[0].sample_rate == 16_000
    audio = chunks[0].samples
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
    assert len(audio) % 256 == 0 and len(audio) > 0  # whole frames of the 8*8*2*2 upsampler
    # The seed makes a clause sound the same every time; speed shortens it.
    assert np.array_equal(next(iter(tts.synthesize(text))).samples, audio)
    fast = next(iter(tts.synthesize(text, speed=2.0))).samples
    assert 0.3 < len(fast) / len(audio) < 0.8
    cancel = threading.Event()
    cancel.set()
    assert list(tts.synthesize(text, cancel=cancel)) == []
    assert list(tts.synthesize("  ")) == []


def test_pocket_generates_from_a_config_built_model(tmp_path: Path) -> None:
    config = tiny_models.pocket_config(tmp_path / "pocket")
    voice = str(AUDIO / "q_book.wav")
    tts = create_handler("tts", "pocket", model=str(config), voice=voice)
    tts.setup()  # builds the model from the config; the voice state comes from the clip
    assert tts.sample_rate == 24_000
    chunks = list(tts.synthesize("Hello there, how are you?"))
    assert len(chunks) == 1 and chunks[0].sample_rate == 24_000
    audio = chunks[0].samples
    assert audio.dtype == np.float32 and np.isfinite(audio).all()
    assert len(audio) > 0 and len(audio) % 1920 == 0  # whole Mimi frames (12.5 Hz at 24 kHz)
    states: dict[str, object] = getattr(tts, "_states")  # noqa: B009
    list(tts.synthesize("Again.", voice=str(AUDIO / "jfk.wav")))
    assert set(states) == {voice, str(AUDIO / "jfk.wav")}  # one state per voice, kept
    cancel = threading.Event()
    cancel.set()
    assert list(tts.synthesize("Hello.", cancel=cancel)) == []
    assert list(tts.synthesize("   ")) == []
