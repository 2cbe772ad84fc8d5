"""Tiny models with the real file layouts, for backends whose weights no package ships.

Each builder writes the files the backend's library loads, with weights set by
hand so that the library's own decoding must produce a known transcript. They
prove the loader, the pre-processing and the decoding run; they say nothing of
a real model's accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from speech_checks import backend_library


def _save(graph: object, path: Path) -> None:
    onnx = backend_library("onnx")
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def nemo_tdt(out: Path, words: list[str]) -> Path:
    """A NeMo TDT pair (``encoder-model.onnx``, ``decoder_joint-model.onnx``) for ``onnx-asr``.

    The encoder keeps every 8th feature frame and projects it; the joint network
    spells ``words`` one token per frame (TDT duration 1), then emits blanks.
    A clip of n frames after subsampling therefore reads its first n words.
    """
    backend_library("onnx")
    from onnx import TensorProto, helper, numpy_helper

    dim, hidden, durations = 16, 8, [0, 1, 2, 3, 4]
    vocab = [f"\u2581{w}" for w in words] + ["<blk>"]
    blank = len(vocab) - 1
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    encoder = helper.make_graph(
        [
            helper.make_node("Slice", ["audio_signal", "zero", "big", "two", "eight"], ["sub"]),
            helper.make_node("MatMul", ["proj", "sub"], ["outputs"]),
            helper.make_node("Add", ["length", "seven"], ["len7"]),
            helper.make_node("Div", ["len7", "eight"], ["encoded_lengths"]),
        ],
        "encoder",
        [
            helper.make_tensor_value_info("audio_signal", f, ["B", 80, "T"]),
            helper.make_tensor_value_info("length", TensorProto.INT64, ["B"]),
        ],
        [
            helper.make_tensor_value_info("outputs", f, ["B", dim, "U"]),
            helper.make_tensor_value_info("encoded_lengths", TensorProto.INT64, ["B"]),
        ],
        [
            numpy_helper.from_array(rng.normal(size=(dim, 80)).astype(np.float32), "proj"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
            numpy_helper.from_array(np.array([1 << 30], dtype=np.int64), "big"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "two"),
            numpy_helper.from_array(np.array([8], dtype=np.int64), "eight"),
            numpy_helper.from_array(np.array([7], dtype=np.int64), "seven"),
        ],
    )
    # Row k of the table: the logits after token k (the last row: after nothing yet).
    table = np.full((len(vocab), len(vocab) + len(durations)), -10.0, dtype=np.float32)
    for k in range(len(vocab)):
        following = k + 1 if k < blank - 1 else blank
        table[k, following] = 10.0
        table[k, len(vocab) + 1] = 10.0  # duration 1
    table[blank, 0] = 10.0  # first token
    joint = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "targets"], ["picked"], axis=0),  # [B,1,V+D]
            helper.make_node("ReduceSum", ["encoder_outputs"], ["enc"], keepdims=0),
            helper.make_node("Mul", ["enc", "nothing"], ["enc0"]),
            helper.make_node("Add", ["picked", "enc0"], ["logits"]),
            helper.make_node("Unsqueeze", ["logits", "axis2"], ["outputs"]),  # [B,1,1,V+D]
            helper.make_node("Identity", ["input_states_1"], ["output_states_1"]),
            helper.make_node("Identity", ["input_states_2"], ["output_states_2"]),
        ],
        "decoder_joint",
        [
            helper.make_tensor_value_info("encoder_outputs", f, ["B", dim, 1]),
            helper.make_tensor_value_info("targets", TensorProto.INT32, ["B", 1]),
            helper.make_tensor_value_info("target_length", TensorProto.INT32, ["B"]),
            helper.make_tensor_value_info("input_states_1", f, [1, "B", hidden]),
            helper.make_tensor_value_info("input_states_2", f, [1, "B", hidden]),
        ],
        [
            helper.make_tensor_value_info("outputs", f, ["B", 1, 1, len(table[0])]),
            helper.make_tensor_value_info("output_states_1", f, [1, "B", hidden]),
            helper.make_tensor_value_info("output_states_2", f, [1, "B", hidden]),
        ],
        [
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "nothing"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    _save(encoder, out / "encoder-model.onnx")
    _save(joint, out / "decoder_joint-model.onnx")
    (out / "vocab.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(vocab)))
    config = {"model_type": "nemo-conformer-tdt", "features_size": 80, "subsampling_factor": 8}
    (out / "config.json").write_text(json.dumps({**config, "max_tokens_per_step": 10}))
    return out


def paraformer(out: Path, chars: str) -> Path:
    """A FunASR Paraformer ONNX export (``model.onnx``, ``config.yaml``, ``am.mvn``,
    ``tokens.json``) for ``funasr-onnx``: its scores spell ``chars``, one per LFR frame,
    so a clip of n LFR frames (60 ms each) reads its first n characters."""
    backend_library("onnx")
    from onnx import TensorProto, helper, numpy_helper

    tokens = ["<blank>", "<s>", "</s>", *chars, "<unk>"]
    scores = np.full((1, len(chars), len(tokens)), -10.0, dtype=np.float32)
    for i in range(len(chars)):
        scores[0, i, 3 + i] = 10.0
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["speech"], ["level"], keepdims=0),
            helper.make_node("Mul", ["level", "nothing"], ["level0"]),
            helper.make_node("Add", ["scores", "level0"], ["logits"]),
            helper.make_node("Min", ["speech_lengths", "count"], ["token_num"]),
        ],
        "paraformer",
        [
            helper.make_tensor_value_info("speech", TensorProto.FLOAT, ["B", "T", 560]),
            helper.make_tensor_value_info("speech_lengths", TensorProto.INT32, ["B"]),
        ],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, [1, len(chars), len(tokens)]
            ),
            helper.make_tensor_value_info("token_num", TensorProto.INT32, ["B"]),
        ],
        [
            numpy_helper.from_array(scores, "scores"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "nothing"),
            numpy_helper.from_array(np.array([len(chars)], dtype=np.int32), "count"),
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    _save(graph, out / "model.onnx")
    (out / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    (out / "config.yaml").write_text(
        "frontend_conf:\n  fs: 16000\n  window: hamming\n  n_mels: 80\n  frame_length: 25\n"
        "  frame_shift: 10\n  lfr_m: 7\n  lfr_n: 6\n  dither: 0.0\n"
        "model_conf:\n  predictor_bias: 0\n"
    )
    zeros, ones = " ".join(["0"] * 560), " ".join(["1"] * 560)
    (out / "am.mvn").write_text(
        f"<Nnet>\n<Splice> 560 560\n[ 0 ]\n<AddShift> 560 560\n<LearnRateCoef> 0 [ {zeros} ]\n"
        f"<Rescale> 560 560\n<LearnRateCoef> 0 [ {ones} ]\n</Nnet>\n"
    )
    return out


def pocket_config(out: Path) -> Path:
    """A Pocket TTS config with no weights (the library then leaves them random) and a
    SentencePiece tokenizer trained here, from the package's own smallest English config."""
    backend_library("pocket_tts")
    sentencepiece = backend_library("sentencepiece")
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text(
        "\n".join(
            "hello there how are you today the weather is very nice "
            f"speak these words number {i} please and thank you"
            for i in range(200)
        )
    )
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(out / "tokenizer"),
        vocab_size=60,
        character_coverage=1.0,
        minloglevel=2,
    )
    source = package_file("pocket_tts", "config/english_2m_2026-10.yaml")
    config = yaml.safe_load(source.read_text())
    for key in ("weights_path", "weights_path_without_voice_cloning"):
        config.pop(key, None)
    table = config["flow_lm"]["lookup_table"]
    table["tokenizer_path"], table["n_bins"] = str(out / "tokenizer.model"), 60
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package."""
    from speech_to_speech.models import package_dir

    path = package_dir(package, extra="pocket-tts") / relative
    assert path.is_file(), path
    return path
