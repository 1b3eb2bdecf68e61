"""Argument checks shared by every subsystem: one clear ``ValueError`` per bad value.

Each check names the argument, what was expected and what was given, and
returns the value in its canonical type. Booleans are not accepted as
numbers, strings are not accepted as sequences, and floats are not
silently truncated to ints.
"""

from __future__ import annotations

import math
import numbers


def _describe(value):
    return f"{value!r} ({type(value).__name__})"


def integer(value, name, minimum=None, maximum=None):
    """``value`` as an ``int`` in ``[minimum, maximum]``.

    Raises:
        ValueError: for a bool, a non-integral number, a string or another
            type, or a value out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {_describe(value)}.")
    value = int(value)
    _check_range(value, name, minimum, maximum)
    return value


def number(value, name, minimum=None, maximum=None, exclusive_minimum=False):
    """``value`` as a finite ``float`` in range (``minimum`` excluded with ``exclusive_minimum``).

    Raises:
        ValueError: for a bool, a string, another type, NaN or infinity, or a
            value out of range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {_describe(value)}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if exclusive_minimum and minimum is not None and value <= minimum:
        raise ValueError(f"{name} must be > {minimum}, got {value!r}.")
    _check_range(value, name, minimum, maximum)
    return value


def pair(value, name, minimum=1):
    """An int or a pair of ints -> ``(int, int)``, each at least ``minimum``.

    Raises:
        ValueError: for a string, a sequence of another length, non-ints, or
            values below ``minimum``.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {_describe(value)}.")
    return tuple(integer(v, name, minimum) for v in value)


def choice(value, name, choices):
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: naming the choices.
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value


def _check_range(value, name, minimum, maximum):
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}.")
