from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prodcat.fusion import LogisticFusion
from prodcat.noise import find_label_issues
from prodcat.predictions import ModelOutputs, ModelOutputsError, check_outputs
from prodcat.probability import PROBA_ATOL, check_probabilities


def probs(drift: float) -> np.ndarray:
    """(40, 2) probabilities of two well separated classes, row 0 summing to ``1 + drift``."""
    rng = np.random.default_rng(0)
    p1 = np.where(np.arange(40) % 2 == 0, 0.9, 0.1) + rng.uniform(-0.05, 0.05, 40)
    P = np.column_stack([1 - p1, p1])
    P[0, 1] += drift
    return P


LABELS = np.arange(40) % 2


def through_fusion(P: np.ndarray) -> None:
    LogisticFusion().fit(P, LABELS)


def through_model_outputs(P: np.ndarray) -> None:
    check_outputs(ModelOutputs(pd.DataFrame({"id": range(len(P))}), ["0", "1"], {"m": P}))


def through_noise(P: np.ndarray) -> None:
    find_label_issues(LABELS, P)


@pytest.mark.parametrize("entry", [through_fusion, through_model_outputs, through_noise])
def test_every_entry_point_applies_the_same_tolerance(entry) -> None:
    entry(probs(PROBA_ATOL / 2))  # float drift within the tolerance passes everywhere
    with pytest.raises(ValueError, match="row 0 sums to"):
        entry(probs(PROBA_ATOL * 5))  # the noise audit used to accept up to 1e-2
    assert issubclass(ModelOutputsError, ValueError)


def test_messages_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="apply a softmax"):
        check_probabilities(np.array([[2.0, -1.0]]), name="logits")
    with pytest.raises(ValueError, match="renormalise"):
        check_probabilities(np.array([[0.5, 0.4]]))
    with pytest.raises(ValueError, match=r"NaN or infinite values \(row 1\)"):
        check_probabilities(np.array([[0.5, 0.5], [np.nan, 0.5]]))
    with pytest.raises(ValueError, match="3 rows for 2 labels"):
        check_probabilities(np.full((3, 2), 0.5), n_rows=2)


def test_renormalise_removes_the_allowed_drift_only_when_asked() -> None:
    P = np.array([[0.7, 0.3004]], dtype=np.float32)
    assert check_probabilities(P).sum() == pytest.approx(1.0004, abs=1e-6)
    np.testing.assert_allclose(check_probabilities(P, renormalise=True).sum(axis=1), 1.0)


def test_top_k_indices_is_a_stable_descending_sort_cut_at_k() -> None:
    from prodcat.probability import top_k_indices

    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(40), size=200)
    P[:20] = 1 / 40  # every class tied (a product with no input)
    P[20:40, ::3] = P[20:40, [0]]  # ties at and around the k-th value, across the partition
    P[40:60] = np.round(P[40:60], 2)  # many ties
    for k in (1, 3, 5, 39, 40, 60):
        expected = np.argsort(-P, axis=1, kind="stable")[:, : min(k, 40)]
        np.testing.assert_array_equal(top_k_indices(P, k), expected)
    assert top_k_indices(P[:0], 5).shape == (0, 5)
