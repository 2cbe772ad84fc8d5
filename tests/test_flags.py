"""Every numeric flag has a checked range: a bad value is refused in one line, before
anything loads."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import subprocess
import sys
import time

import pytest

from speech_to_speech.bounds import Bounded
from speech_to_speech.flags import build_parser


def _numeric_actions() -> list[argparse.Action]:
    return [
        a
        for a in build_parser()._actions
        if a.option_strings and a.dest not in ("help", "version") and a.type is not None
    ]


def _refusal(argv: list[str]) -> str:
    """Parse ``argv`` in process; the one-line message it was refused with."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2, argv
    return err.getvalue()


def _outside(b: Bounded) -> list[str]:
    """Values just outside the range (and things that are not numbers)."""
    step = 1 if b.kind is int else max(1e-6, abs(b.high - b.low) * 1e-6)
    low = b.low if b.low_open else b.low - step
    high = b.high if b.high_open else b.high + step
    values = [_text(b, low), "nan", "twelve", ""]
    if not b.infinite:
        values += [_text(b, high), "inf"]
    elif not math.isinf(b.high):
        values.append(_text(b, high))
    if b.kind is int:
        values.append("1.5")
    return values


def _text(b: Bounded, x: float) -> str:
    return str(int(x)) if b.kind is int else repr(float(x))


def test_every_numeric_flag_has_a_range_and_refuses_outside_it() -> None:
    actions = _numeric_actions()
    # The walk covers every flag that takes a number: none is a bare int/float.
    assert len(actions) >= 30, [a.dest for a in actions]
    for action in actions:
        assert isinstance(action.type, Bounded), (
            f"{action.option_strings[0]} takes a number without a checked range"
        )
        b = action.type
        flag = action.option_strings[0]
        # The default is in range (None means "unset", e.g. --llm_threads).
        if action.default is not None:
            assert b.accepts(action.default), (flag, action.default)
        # Both ends of the range are accepted (or their neighbours, for open bounds).
        for edge in (b.low, b.high):
            if math.isinf(edge):
                continue
            inside = edge
            if (edge == b.low and b.low_open) or (edge == b.high and b.high_open):
                inside = (b.low + b.high) / 2
            value = getattr(build_parser().parse_args([flag, _text(b, inside)]), action.dest)
            assert b.accepts(value), (flag, inside)
        for bad in _outside(b):
            message = _refusal([flag, bad])
            lines = message.strip().splitlines()
            assert len(lines) == 1, (flag, bad, message)
            assert flag in lines[0] and "expected" in lines[0], (flag, bad, message)


def _cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "speech_to_speech", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out, time.perf_counter() - t0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ("--port", "99999"),
            "argument --port: 99999 is out of range; expected an integer in [0, 65535]",
        ),
        (("--thresh", "2"), "argument --thresh: 2 is out of range; expected a number in (0, 1)"),
        (("--max_sessions", "0"), "expected an integer in [1, 1000000]"),
        (("--llm_timeout_s", "-1"), "expected a number in (0, 86400]"),
    ],
)
def test_a_new_users_bad_flag_is_one_line_before_anything_loads(
    args: tuple[str, ...], says: str
) -> None:
    out, seconds = _cli(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    # Refused by the parser: no model was loaded (that takes seconds, and logs).
    assert "ready in" not in out.stderr
    assert seconds < 20, seconds
