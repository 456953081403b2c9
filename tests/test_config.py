from __future__ import annotations

import pytest
from pydantic import ValidationError

from prodcat.config import load_config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"noise.filter_by": "prune_by_noise_rat"},
            r"noise.filter_by\n  Input should be 'prune_by_noise_rate'",
        ),
        ({"noise.rank_by": "confidence"}, r"noise.rank_by\n  Input should be 'self_confidence'"),
        ({"noise.policy": "downweigh:0.1"}, r"policy 'downweigh:0.1': policy must be one of"),
        ({"noise.policy": "top-fraction:x"}, r"policy 'top-fraction:x'"),
        ({"noise.policy": "top-fraction:1.5"}, r"fraction must be in \[0, 1\]"),
    ],
)
def test_noise_typos_fail_when_the_config_is_read(override: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_config(None, **override)


def test_valid_noise_settings_load() -> None:
    cfg = load_config(None, **{"noise.filter_by": "both", "noise.policy": "top-fraction:0.2"})
    assert cfg.noise.filter_by == "both" and cfg.noise.policy == "top-fraction:0.2"
