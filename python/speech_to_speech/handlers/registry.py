"""Backend registry: handler classes by stage and name, their pip extras, and the CLI glue.

The flags themselves are in :mod:`speech_to_speech.flags`; this module maps
them to each backend's options (:func:`build_handlers`).

Backend modules register their class with :func:`register`; the built-in
backends are imported on first use of the registry. Importing a backend module
is cheap: heavy libraries are imported in ``setup()`` only, and whether they are
installed is checked with :func:`importlib.util.find_spec`, which does not run
them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast, overload

from speech_to_speech.handlers.base import (
    LLMHandler,
    MissingExtraError,
    STTHandler,
    TTSHandler,
    UnknownBackendError,
)

__all__ = [
    "STAGES",
    "BackendInfo",
    "Stage",
    "available_backends",
    "backend_info",
    "build_handlers",
    "create_handler",
    "handler_options_from_args",
    "register",
    "registered_backends",
]

log = logging.getLogger(__name__)

Stage = Literal["stt", "llm", "tts"]
STAGES: tuple[Stage, ...] = ("stt", "llm", "tts")
_BASES: dict[Stage, type[Any]] = {"stt": STTHandler, "llm": LLMHandler, "tts": TTSHandler}
_BUILTIN_PACKAGES = (
    "speech_to_speech.handlers.stt",
    "speech_to_speech.handlers.llm",
    "speech_to_speech.handlers.tts",
)

HandlerT = TypeVar("HandlerT", STTHandler, LLMHandler, TTSHandler)


def _module_installed(name: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class BackendInfo:
    """One registered backend.

    ``extra`` is the ``speech-to-speech[extra]`` that installs its
    dependencies and ``modules`` the top-level import names checked for them.
    """

    stage: Stage
    name: str
    handler_class: type[Any]
    extra: str | None
    modules: tuple[str, ...]
    description: str

    def missing_modules(self) -> list[str]:
        """The required modules that are not installed."""
        return [m for m in self.modules if not _module_installed(m)]

    @property
    def installed(self) -> bool:
        """Whether every required module is installed."""
        return not self.missing_modules()

    def check_installed(self) -> None:
        """Raise :class:`MissingExtraError` naming the pip extra if a module is missing."""
        missing = self.missing_modules()
        if missing:
            hint = (
                f"pip install 'speech-to-speech[{self.extra}]'"
                if self.extra
                else "pip install " + " ".join(missing)
            )
            raise MissingExtraError(
                f"{self.stage} backend {self.name!r} needs {', '.join(missing)}: run `{hint}`"
            )


_registry: dict[Stage, dict[str, BackendInfo]] = {s: {} for s in STAGES}
_builtins_lock = threading.Lock()
_builtins_loaded = False

_C = TypeVar("_C", bound=type[Any])


def register(
    stage: Stage,
    name: str,
    *,
    extra: str | None = None,
    requires: Sequence[str] = (),
    description: str = "",
) -> Callable[[_C], _C]:
    """Class decorator registering a handler class for ``stage`` under ``name``.

    ``requires`` lists top-level import names checked before the handler is
    created; ``extra`` is the pip extra that installs them.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")

    def decorator(cls: _C) -> _C:
        if not issubclass(cls, _BASES[stage]):
            raise TypeError(f"{cls.__name__} is not a {_BASES[stage].__name__}")
        doc = description or (inspect.getdoc(cls) or "").split("\n", 1)[0]
        _registry[stage][name] = BackendInfo(stage, name, cls, extra, tuple(requires), doc)
        cls.backend_name = name
        return cls

    return decorator


def _ensure_builtins() -> None:
    global _builtins_loaded  # noqa: PLW0603 - one-time lazy import guard
    if _builtins_loaded:
        return
    with _builtins_lock:
        if not _builtins_loaded:
            for package in _BUILTIN_PACKAGES:
                importlib.import_module(package)
            _builtins_loaded = True


def _check_stage(stage: str) -> Stage:
    if stage not in STAGES:
        raise UnknownBackendError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return stage


def registered_backends(stage: Stage) -> list[BackendInfo]:
    """Every backend registered for ``stage``, installed or not, sorted by name."""
    _ensure_builtins()
    return sorted(_registry[_check_stage(stage)].values(), key=lambda b: b.name)


def available_backends(stage: Stage) -> list[str]:
    """Names of the backends for ``stage`` whose dependencies are installed."""
    return [b.name for b in registered_backends(stage) if b.installed]


def backend_info(stage: Stage, name: str) -> BackendInfo:
    """The registration of one backend; raises :class:`UnknownBackendError`."""
    _ensure_builtins()
    try:
        return _registry[_check_stage(stage)][name]
    except KeyError:
        known = ", ".join(sorted(_registry[stage]))
        raise UnknownBackendError(f"unknown {stage} backend {name!r}; known: {known}") from None


@overload
def create_handler(stage: Literal["stt"], name: str, **options: Any) -> STTHandler: ...
@overload
def create_handler(stage: Literal["llm"], name: str, **options: Any) -> LLMHandler: ...
@overload
def create_handler(stage: Literal["tts"], name: str, **options: Any) -> TTSHandler: ...
def create_handler(stage: Stage, name: str, **options: Any) -> Any:
    """Create (but do not set up) the handler ``name`` for ``stage`` with backend options.

    Raises :class:`UnknownBackendError` for an unknown name and
    :class:`MissingExtraError` when the backend's extra is not installed.
    """
    info = backend_info(stage, name)
    info.check_installed()
    return info.handler_class(**options)


# --- CLI ----------------------------------------------------------------------------------


def handler_options_from_args(stage: Stage, args: argparse.Namespace) -> dict[str, Any]:
    """The generic option set of a stage, taken from parsed CLI arguments."""
    a = vars(args)
    if stage == "stt":
        return {
            "model": a.get("stt_model"),
            "device": a.get("stt_device"),
            "compute_type": a.get("stt_compute_type"),
            "cpu_threads": a.get("stt_cpu_threads"),
            "language": a.get("language"),
            "beam_size": a.get("beam_size"),
            "window_s": a.get("stt_window_s"),
        }
    if stage == "llm":
        return {
            "model": a.get("llm_model"),
            "n_ctx": a.get("llm_n_ctx"),
            "n_threads": a.get("llm_threads"),
            "temperature": a.get("temperature"),
            "max_tokens": a.get("max_new_tokens"),
            "base_url": a.get("llm_base_url"),
            "api_key": a.get("llm_api_key"),
            "timeout": a.get("llm_timeout"),
        }
    return {"voice": a.get("tts_voice"), "speed": a.get("tts_speed")}


def _accepted_options(cls: type[Any], options: dict[str, Any]) -> dict[str, Any]:
    """Keep the options ``cls.__init__`` accepts, dropping ``None`` (= backend default)."""
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in options.items() if v is not None and (takes_any or k in params)}


def build_handlers(args: argparse.Namespace) -> tuple[STTHandler, LLMHandler, TTSHandler]:
    """Create the three handlers chosen by CLI arguments (not yet set up).

    Each backend receives the generic options its constructor accepts.
    Raises :class:`UnknownBackendError` or :class:`MissingExtraError` before
    anything is loaded.
    """
    infos = [backend_info(stage, getattr(args, stage)) for stage in STAGES]
    for info in infos:
        info.check_installed()
    stt, llm, tts = (
        info.handler_class(
            **_accepted_options(info.handler_class, handler_options_from_args(info.stage, args))
        )
        for info in infos
    )
    return cast(STTHandler, stt), cast(LLMHandler, llm), cast(TTSHandler, tts)
