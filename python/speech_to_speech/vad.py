"""Locating the Silero VAD model and the ONNX Runtime library, and loading them.

Typical use::

    from speech_to_speech import VadStream, vad

    model = vad.load_silero_vad()            # or load_silero_vad(args.vad_model_path)
    stream = VadStream(model=model, sample_rate=16000, min_silence_ms=500.0)
    for event in stream.feed(samples):       # float32 samples at 16 kHz
        ...                                  # event.type == "speech_started", ...

Two backends run the model (``backend=``, ``--vad_backend``): ``native``, the
Silero network re-implemented in the Rust core with its weights read from the
same ``silero_vad.onnx``, which needs no ONNX Runtime; and ``onnxruntime``,
which runs the file itself and is the reference the native backend is tested
against. ``auto`` (the default) takes ``native`` when the core recognises the
file and loads ONNX Runtime otherwise.

The learned end-of-turn model, Smart Turn v3.2, ships in the ``pipecat-ai``
wheel; :func:`load_smart_turn` finds it (``--turn_model_path`` overrides) and
runs it on ONNX Runtime with the log-mel front end in the core.

No package is imported: ``silero_vad``'s ``__init__`` imports torch,
``pipecat``'s pulls in its whole framework, and the core loads
``libonnxruntime`` itself, so all three are found with
``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Literal

from speech_to_speech._core import (
    ModelError,
    ModelNotFoundError,
    OnnxRuntimeNotFoundError,
    SileroVad,
    SmartTurn,
    VadConfigError,
    onnxruntime_initialised,
)
from speech_to_speech._core import (
    init_onnxruntime as _init_onnxruntime,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "TURN_MODEL_INSTALL_HINT",
    "default_model_path",
    "default_turn_model_path",
    "init_onnxruntime",
    "load_silero_vad",
    "load_smart_turn",
    "onnxruntime_library_path",
]

Backend = Literal["auto", "native", "onnxruntime"]
#: The values of ``backend=`` and ``--vad_backend``.
BACKENDS: tuple[Backend, ...] = ("auto", "native", "onnxruntime")

ORT_INSTALL_HINT = "pip install onnxruntime (or onnxruntime-gpu)"
# silero-vad declares a dependency on torch that the ONNX model does not need.
MODEL_INSTALL_HINT = 'pip install --no-deps "silero-vad>=6"'
# pipecat-ai's dependencies are its whole framework; the model file needs none of them.
TURN_MODEL_INSTALL_HINT = 'pip install --no-deps "pipecat-ai>=1.14,<2"'
TURN_MODEL_FILE = "smart-turn-v3.2-cpu.onnx"


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def onnxruntime_library_path() -> str:
    """Path of ``libonnxruntime`` from ``ORT_DYLIB_PATH`` or the onnxruntime wheel."""
    override = os.environ.get("ORT_DYLIB_PATH")
    if override:
        return override
    package = _package_dir("onnxruntime")
    if package is None:
        raise OnnxRuntimeNotFoundError(
            f"the onnxruntime package is not installed: {ORT_INSTALL_HINT}, "
            "or set ORT_DYLIB_PATH to libonnxruntime.so"
        )
    capi = package / "capi"
    candidates = sorted(
        [
            *capi.glob("libonnxruntime.so*"),
            *capi.glob("libonnxruntime*.dylib"),
            *capi.glob("onnxruntime.dll"),
        ],
        key=lambda p: len(p.name),
        reverse=True,
    )
    if not candidates:
        raise OnnxRuntimeNotFoundError(
            f"no ONNX Runtime library in {capi}: reinstall it ({ORT_INSTALL_HINT}), "
            "or set ORT_DYLIB_PATH to libonnxruntime.so"
        )
    # The versioned name (libonnxruntime.so.1.22.0) is the real file.
    return str(candidates[0])


def init_onnxruntime(path: str | None = None) -> str:
    """Load ONNX Runtime into the core once per process; returns the library path.

    ``path`` overrides the lookup (``ORT_DYLIB_PATH``, then the onnxruntime wheel).
    """
    library = path or onnxruntime_library_path()
    if not onnxruntime_initialised():
        _init_onnxruntime(library)
        logger.debug("ONNX Runtime loaded from %s", library)
    return library


def default_model_path() -> str:
    """Path of ``silero_vad.onnx`` inside the installed ``silero-vad`` package."""
    package = _package_dir("silero_vad")
    if package is None:
        raise ModelNotFoundError(f"the silero-vad package is not installed: {MODEL_INSTALL_HINT}")
    model = package / "data" / "silero_vad.onnx"
    if not model.is_file():
        raise ModelNotFoundError(f"{model} is missing: reinstall it ({MODEL_INSTALL_HINT})")
    return str(model)


def load_silero_vad(
    model_path: str | None = None, *, intra_op_threads: int = 1, backend: Backend = "auto"
) -> SileroVad:
    """Load the Silero model (``--vad_model_path`` overrides) with ``backend``.

    ``native`` never touches ONNX Runtime; ``onnxruntime`` loads it first;
    ``auto`` tries ``native`` and, if the core does not recognise the file,
    loads ONNX Runtime and runs the file there. ``intra_op_threads`` applies
    to ONNX Runtime only.
    """
    if backend not in BACKENDS:
        raise VadConfigError(f"unknown VAD backend {backend!r}: use one of {', '.join(BACKENDS)}")
    path = model_path or default_model_path()
    native_error: ModelError | None = None
    if backend != "onnxruntime":
        try:
            return SileroVad(path, intra_op_threads=intra_op_threads, backend="native")
        except ModelError as e:
            if backend == "native":
                raise
            native_error = e
            logger.info("VAD: %s; falling back to ONNX Runtime", e)
    try:
        init_onnxruntime()
    except OnnxRuntimeNotFoundError as e:
        if native_error is None:
            raise
        raise OnnxRuntimeNotFoundError(f"{native_error}; and ONNX Runtime: {e}") from e
    return SileroVad(path, intra_op_threads=intra_op_threads, backend="onnxruntime")


def default_turn_model_path() -> str:
    """Path of ``smart-turn-v3.2-cpu.onnx`` inside the installed ``pipecat-ai`` package."""
    package = _package_dir("pipecat")
    if package is None:
        raise ModelNotFoundError(
            f"the Smart Turn model is not installed (it ships in pipecat-ai): "
            f"{TURN_MODEL_INSTALL_HINT}, or pass --turn_model_path"
        )
    model = package / "audio" / "turn" / "smart_turn" / "data" / TURN_MODEL_FILE
    if not model.is_file():
        raise ModelNotFoundError(
            f"{model} is missing: install a pipecat-ai that ships it "
            f"({TURN_MODEL_INSTALL_HINT}), or pass --turn_model_path"
        )
    return str(model)


def load_smart_turn(
    model_path: str | None = None, *, intra_op_threads: int = 1, threshold: float = 0.5
) -> SmartTurn:
    """Load Smart Turn v3 (``--turn_model_path`` overrides) on ONNX Runtime.

    The model needs ONNX Runtime, which is loaded first. A missing file raises
    :class:`ModelNotFoundError` naming the install line.
    """
    path = model_path or default_turn_model_path()
    init_onnxruntime()
    return SmartTurn(path, intra_op_threads=intra_op_threads, threshold=threshold)
