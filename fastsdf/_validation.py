"""The package's argument checks: one function per kind of argument, one rule each.

Each check takes the value first, then the argument's name, and returns the value in its plain
Python form (``int``, ``float``, a tuple of floats) or raises an error whose message starts with
that name (``"batch_size must be >= 1, got 0"``). With an empty name the message starts at
"must", as argparse wants from a type converter (its parser names the option).

- A value of the wrong kind (a float where an integer is expected, a string where a number is)
  raises ``WrongTypeError``: a ``TypeError``, and a ``ValueError`` too, since fastsdf raised
  ValueError for these before the checks had one home and callers catch that.
- A value of the right kind out of its range (or NaN/Inf) raises ``ValueError``.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Collection, Sequence

import numpy as np

__all__ = ["SEED_LIMIT", "WrongTypeError", "integer", "one_of", "real", "triple", "vector"]

# Seeds are below this: torch takes seeds below 2^64, NumPy any non-negative integer, and seeds
# derived from one (a seed plus a rank or an index) stay below 2^64.
SEED_LIMIT = 2**63


class WrongTypeError(TypeError, ValueError):
    """An argument of the wrong kind (see the module's docstring for why it is both)."""


def _message(name: str, requirement: str, value: Any) -> str:
    return f"{name} must be {requirement}, got {value!r}" if name else f"must be {requirement}, got {value!r}"


def _number_text(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(low: float, high: float, low_open: bool = False, high_open: bool = False) -> str:
    """`` >= 1``, `` > 0``, `` in [0, 1)``, or nothing without bounds."""
    if math.isinf(high):
        return "" if math.isinf(low) else f" {'>' if low_open else '>='} {_number_text(low)}"
    if math.isinf(low):
        return f" {'<' if high_open else '<='} {_number_text(high)}"
    return (f" in {'(' if low_open else '['}{_number_text(low)}, {_number_text(high)}"
            f"{')' if high_open else ']'}")


def integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in [minimum, maximum] (either bound optional).

    Integral values only: ``int``, NumPy integers and whatever else Python takes as an index (a
    0-d integer array); not ``bool``, and not a float, even one like 3.0, whose integer-ness is an
    accident of arithmetic. WrongTypeError for those, ValueError out of range.
    """
    try:
        number = None if isinstance(value, (bool, np.bool_)) else operator.index(value)
    except TypeError:
        number = None
    if number is None or (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = _range_text(-math.inf if minimum is None else minimum, math.inf if maximum is None else maximum)
        if number is None:
            raise WrongTypeError(_message(name, f"an integer{bounds}", value))
        raise ValueError(_message(name, bounds.lstrip(), value))
    return number


def _to_float(value: Any) -> float | None:
    """``value`` as a float if it is a real number (Python or NumPy, or a one-element array or
    tensor); None for anything else: strings, bool, complex numbers."""
    if isinstance(value, (str, bytes, bool, np.bool_, complex, np.complexfloating)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def real(value: Any, name: str, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
         high_open: bool = False) -> float:
    """``value`` as a finite ``float`` between ``low`` and ``high`` (each included unless open):
    ``real(x, "radius", 0, low_open=True)`` for a positive number. WrongTypeError for what is not a
    real number (see ``_to_float``), ValueError for NaN, Inf or a number out of range."""
    number = _to_float(value)
    if number is not None and math.isfinite(number) and (number > low if low_open else number >= low) and (
            number < high if high_open else number <= high):
        return number
    bounds = _range_text(low, high, low_open, high_open)
    if number is None:
        raise WrongTypeError(_message(name, f"a real number{bounds}", value))
    if not math.isfinite(number):
        raise ValueError(_message(name, f"a finite number{bounds}", value))
    raise ValueError(_message(name, bounds.lstrip(), value))


def vector(values: Sequence[Any], name: str, length: int, positive: bool = False) -> tuple[float, ...]:
    """``values`` as ``length`` finite floats (all > 0 with ``positive``): a point, a spacing, a size.
    WrongTypeError unless ``length`` real numbers, ValueError for NaN/Inf or a number <= 0."""
    count = {2: "two", 3: "three"}.get(length, str(length))
    try:
        out = tuple(_to_float(v) for v in values)
    except TypeError:
        out = (None,)
    if len(out) != length or None in out:
        raise WrongTypeError(_message(name, f"{count} real numbers", values))
    if not all(math.isfinite(v) for v in out):
        raise ValueError(_message(name, f"{count} finite numbers", values))
    if positive and min(out) <= 0:
        raise ValueError(_message(name, "positive", values))
    return out  # type: ignore[return-value]


def triple(values: Sequence[Any], name: str, positive: bool = False) -> tuple[float, float, float]:
    """``vector`` of three: a point, a spacing or a size in 3D."""
    return vector(values, name, 3, positive)  # type: ignore[return-value]


def one_of(value: Any, name: str, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices`` (compared by equality), else ValueError naming them."""
    try:
        found = value in frozenset(choices)
    except TypeError:  # unhashable: an array, a list
        found = False
    if not found:
        raise ValueError(_message(name, f"one of {tuple(choices)}", value))
    return value
