"""Checked numbers for command-line flags: an argparse ``type=`` with a range.

``--port 99999`` or ``--thresh 2`` is refused by the parser, in one line,
before any model loads; the range shows in the message. Every numeric flag
uses one (``tests/test_flags.py`` walks them all).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

__all__ = ["Bounded", "number"]


@dataclass(frozen=True)
class Bounded:
    """Parses an ``int`` or ``float`` and checks ``low <= x <= high``.

    ``low_open``/``high_open`` make a bound strict; ``infinite`` also takes
    ``inf`` (no limit).
    """

    kind: type[int] | type[float]
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    infinite: bool = False

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if self.kind is int else 'a number'}; "
                f"expected {self.describe()}"
            ) from None
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range; expected {self.describe()}")
        return value

    def accepts(self, value: float) -> bool:
        """Whether ``value`` is in range."""
        if math.isnan(value):
            return False
        if math.isinf(value):
            return self.infinite and value > 0
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        """The range in words, as the error message gives it."""
        what = "an integer" if self.kind is int else "a number"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        low = _fmt(self.low)
        high = _fmt(self.high)
        text = f"{what} in {left}{low}, {high}{right}"
        return text + (" or inf" if self.infinite else "")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def number(
    kind: type[int] | type[float],
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    infinite: bool = False,
) -> Bounded:
    """An argparse ``type=`` that parses ``kind`` and refuses values outside the range."""
    return Bounded(kind, low, high, low_open, high_open, infinite)
