"""The calibration and acceptance stage on synthetic fusion inputs: missing photos, groups, review order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from prodcat.acceptance import selective_scores
from prodcat.calibration import calibration_scores
from prodcat.ensemble import labels_and_proba
from prodcat.fusion import LogisticFusion
from prodcat.trust import (
    Calibration,
    TrustOptions,
    availability_groups,
    cross_fit_fuser,
    fit_calibration,
    review_order,
)

C = 5
CLASSES = [str(c) for c in range(C)]


def _inputs(n: int, rng: np.random.Generator, missing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fusion inputs of a weak text model and a strong image model (X (n, 2C), y (n,), groups (n,)); a
    ``missing`` share of the rows lack their photo: their image block is the class prior, as at prediction."""
    y = rng.integers(0, C, n)
    onehot = np.eye(C)[y]
    text = softmax(1.5 * onehot + rng.normal(0, 1.0, (n, C)), axis=1)
    image = softmax(3.0 * onehot + rng.normal(0, 1.0, (n, C)), axis=1)
    gone = rng.uniform(size=n) < missing
    image[gone] = 1 / C
    groups = availability_groups({"text": np.ones(n, bool), "image": ~gone}, n)
    return np.hstack([text, image]), y, groups


@pytest.fixture(scope="module")
def trained() -> tuple[Calibration, dict, LogisticFusion]:
    """Calibration learnt on rows that ALL have a photo (like the fashion catalog), with the photo blanked."""
    rng = np.random.default_rng(0)
    X, y, groups = _inputs(3000, rng, missing=0.0)
    blank = (np.r_[np.zeros(C, bool), np.ones(C, bool)], np.r_[np.zeros(C), np.full(C, 1 / C)])
    oof, _ = cross_fit_fuser(
        LogisticFusion(n_models=2), X, y, np.arange(C), variants={"no-image": blank}, n_splits=5, seed=0
    )
    options = TrustOptions(target_precision=0.9, min_group_rows=200)
    cal, report = fit_calibration(
        oof, y, groups, blanked={"no-image": "image"}, classes=CLASSES, options=options
    )
    return cal, report, LogisticFusion(n_models=2).fit(X, y)


def test_text_only_products_get_their_own_calibration_and_rule(trained: tuple) -> None:
    cal, report, fuser = trained
    assert set(cal.rules) == {"text+image", "text"}
    assert report["groups"]["text"]["simulated_rows"] == 3000  # every training row, photo blanked
    rng = np.random.default_rng(1)
    X, y, groups = _inputs(8000, rng, missing=0.5)  # fresh products, half without a photo
    labels, fused = labels_and_proba(fuser, X)
    pred = np.asarray(labels).astype(int)
    proba, conf, accepted = cal.apply(fused, pred, groups)
    text = groups == "text"
    before = calibration_scores(fused[text], y[text], pred[text])["ece"]
    after = calibration_scores(proba[text], y[text], pred[text])["ece"]
    assert after < before  # the fuser never saw a missing photo; the text group's temperature corrects it
    for name in ("text", "text+image"):
        rows = groups == name
        scores = selective_scores(accepted[rows], pred[rows] == y[rows])
        assert scores["precision"] >= 0.9 - scores["precision_se"], name
    assert accepted[text].mean() < accepted[~text].mean()
    assert conf[text].mean() < conf[~text].mean()


def test_a_missing_photo_lowers_the_confidence_of_the_same_product(trained: tuple) -> None:
    cal, _, fuser = trained
    X, _, _ = _inputs(500, np.random.default_rng(2), missing=0.0)
    no_photo = X.copy()
    no_photo[:, C:] = 1 / C
    conf = {}
    for name, data in (("text+image", X), ("text", no_photo)):
        labels, fused = labels_and_proba(fuser, data)
        conf[name] = cal.apply(fused, np.asarray(labels).astype(int), np.full(len(data), name, object))[1]
    assert conf["text"].mean() < conf["text+image"].mean() - 0.1


def test_rows_with_no_input_are_always_reviewed(trained: tuple) -> None:
    cal, _, _ = trained
    fused = np.tile(np.eye(C)[0] * 0.999 + 0.0002, (3, 1))
    _, _, accepted = cal.apply(fused, np.zeros(3, dtype=int), np.array(["none"] * 3, dtype=object))
    assert not accepted.any()


def test_calibration_round_trips_through_json(trained: tuple) -> None:
    import json

    cal, _, _ = trained
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict(CLASSES))), CLASSES)
    fused = np.random.default_rng(3).dirichlet(np.ones(C), 50)
    pred, groups = fused.argmax(1), np.array(["text", "text+image"] * 25, dtype=object)
    for a, b in zip(back.apply(fused, pred, groups), cal.apply(fused, pred, groups), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="calibration state"):
        Calibration.from_dict({"target_precision": 0.9}, CLASSES)


def test_availability_groups_name_the_modalities_present() -> None:
    groups = availability_groups(
        {"text": np.array([True, True, False, False]), "image": np.array([True, False, True, False])}, 4
    )
    assert groups.tolist() == ["text+image", "text", "image", "none"]
    assert availability_groups({"text": np.array([True, False])}, 2).tolist() == ["text", "none"]


def test_review_order_puts_the_likeliest_errors_first_then_frequent_classes() -> None:
    frame = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "label": ["x", "y", "x", "y", "x"],
            "confidence": [0.9, 0.5, 0.5, 0.99, 0.7],
            "decision": ["review", "review", "review", "auto", "review"],
        }
    )
    queue = review_order(frame, {"x": 10, "y": 100})
    assert queue["id"].tolist() == ["b", "c", "e", "a"]  # d was accepted; b before c: y is more frequent
    np.testing.assert_allclose(queue["p_error"], [0.5, 0.5, 0.3, 0.1])
    assert queue["review_rank"].tolist() == [1, 2, 3, 4]
