from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pytest

from prodcat.params import Interval, Options, validate_params


class Est:
    _constraints = {  # noqa: RUF012
        "n": [Interval(Integral, 1, None, closed="left")],
        "rate": [Interval(Real, 0, 1, closed="neither"), None],
        "mode": [Options({"soft", "hard"})],
        "weights": ["array-like", None],
        "flag": ["boolean"],
    }

    def __init__(self, **kw: object) -> None:
        self.n, self.rate, self.mode, self.weights, self.flag = 2, 0.5, "soft", None, True
        self.__dict__.update(kw)


def test_valid_settings_pass() -> None:
    validate_params(Est(), Est._constraints)
    validate_params(Est(n=np.int64(3), rate=None, weights=np.ones(2), flag=np.bool_(False)), Est._constraints)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"n": 0}, r"The 'n' parameter of Est must be an int in the range \[1, inf\)\. Got 0 instead\."),
        ({"n": 2.0}, r"'n' parameter of Est must be an int"),
        ({"n": True}, r"'n' parameter"),
        ({"rate": 1.0}, r"'rate' parameter of Est must be a float in the range \(0.0, 1.0\) or None"),
        ({"rate": float("nan")}, r"'rate' parameter"),
        ({"mode": "loud"}, r"must be a str among \{'hard', 'soft'\}\. Got 'loud' instead"),
        ({"weights": "abc"}, r"'weights' parameter of Est must be an array-like or None"),
        ({"flag": 1}, r"must be an instance of 'bool'"),
    ],
)
def test_bad_settings_name_the_parameter(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_params(Est(**kw), Est._constraints)
