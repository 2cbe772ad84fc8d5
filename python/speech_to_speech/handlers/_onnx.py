"""ONNX Runtime execution providers for the backends that run ONNX models."""

from __future__ import annotations

from speech_to_speech.handlers.base import MissingExtraError

__all__ = ["onnx_providers"]

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def onnx_providers(device: str | None) -> list[str]:
    """The providers for ``device``: ``cpu``, ``cuda`` (or ``cuda:N``) or ``auto``.

    ``auto`` takes CUDA when the installed ONNX Runtime has it (the
    ``onnxruntime-gpu`` wheel) and the CPU otherwise; ``cuda`` without it is
    an error naming the extra to install.
    """
    import onnxruntime as ort

    device = (device or "auto").lower()
    has_cuda = _CUDA in ort.get_available_providers()
    if device.startswith("cuda"):
        if not has_cuda:
            raise MissingExtraError(
                f"device {device!r} needs ONNX Runtime with CUDA: run "
                "`pip install 'speech-to-speech[cuda]'` (onnxruntime-gpu)"
            )
        return [_CUDA, _CPU]
    if device == "auto" and has_cuda:
        return [_CUDA, _CPU]
    if device not in ("cpu", "auto"):
        raise ValueError(f"unknown ONNX device {device!r}; expected cpu, cuda or auto")
    return [_CPU]
