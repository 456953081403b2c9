"""Type and range checks of estimator parameters, without fitting and without scikit-learn's private
``_param_validation`` module.

An estimator lists its rules in a ``_constraints`` class dict (parameter -> allowed kinds, any of which may match)
and calls :func:`validate_params` from ``check_params``. Messages follow scikit-learn's wording, e.g. "The 'C'
parameter of LogisticFusion must be a float in the range (0.0, inf). Got 0 instead."
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (``Integral`` or ``Real``) between ``low`` and ``high`` (None: unbounded); ``closed``
    says which ends belong to the range."""

    kind: type
    low: float | None
    high: float | None
    closed: Literal["left", "right", "both", "neither"] = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        v = float(value)  # type: ignore[arg-type]  # a Real, checked above
        if math.isnan(v):
            return False
        low_ok = self.low is None or (v >= self.low if self.closed in ("left", "both") else v > self.low)
        high_ok = self.high is None or (v <= self.high if self.closed in ("right", "both") else v < self.high)
        return bool(low_ok and high_ok)

    def __str__(self) -> str:
        def bound(v: float | None, inf: str) -> str:
            if v is None:
                return inf
            return str(float(v)) if self.kind is Real else str(int(v))

        left = "[" if self.closed in ("left", "both") and self.low is not None else "("
        right = "]" if self.closed in ("right", "both") and self.high is not None else ")"
        kind = "an int" if self.kind is Integral else "a float"
        return f"{kind} in the range {left}{bound(self.low, '-inf')}, {bound(self.high, 'inf')}{right}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of strings."""

    values: frozenset[str]

    def __init__(self, values: Sequence[str] | set[str]) -> None:
        object.__setattr__(self, "values", frozenset(values))

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def __str__(self) -> str:
        return "a str among {" + ", ".join(repr(v) for v in sorted(self.values)) + "}"


#: Named kinds: "boolean" (bool or numpy bool), "array-like" (a sequence or array, not a string or a mapping),
#: "random_state" (None, an int or a numpy random generator).
Constraint = Interval | Options | type | str | None


def _accepts(rule: Constraint, value: Any) -> bool:
    if rule is None:
        return value is None
    if rule == "boolean":
        return isinstance(value, bool | np.bool_)
    if rule == "random_state":
        return (
            value is None
            or (isinstance(value, Integral) and not isinstance(value, bool))
            or isinstance(value, np.random.RandomState | np.random.Generator)
        )
    if rule == "array-like":
        return not isinstance(value, str | bytes | Mapping) and (
            hasattr(value, "__array__") or isinstance(value, Sequence)
        )
    if isinstance(rule, type):
        return isinstance(value, rule)
    if isinstance(rule, Interval | Options):
        return rule.accepts(value)
    raise TypeError(f"unknown parameter constraint {rule!r}")


def _describe(rule: Constraint) -> str:
    if rule is None:
        return "None"
    if rule == "boolean":
        return "an instance of 'bool'"
    if rule == "random_state":
        return "an int, a numpy random generator or None"
    if rule == "array-like":
        return "an array-like"
    if isinstance(rule, type):
        return f"an instance of {rule.__name__!r}"
    return str(rule)


def validate_params(est: Any, constraints: Mapping[str, Sequence[Constraint]]) -> None:
    """Raise ``ValueError`` naming the first parameter of ``est`` that matches none of its allowed kinds."""
    for name, allowed in constraints.items():
        value = getattr(est, name)
        if any(_accepts(rule, value) for rule in allowed):
            continue
        described = [_describe(rule) for rule in allowed]
        kinds = described[0] if len(described) == 1 else ", ".join(described[:-1]) + " or " + described[-1]
        raise ValueError(
            f"The {name!r} parameter of {type(est).__name__} must be {kinds}. Got {value!r} instead."
        )
