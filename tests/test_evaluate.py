"""Metrics, bootstrap intervals, per-class table, confusion figure and Table 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_recall_fscore_support

from prodcat.evaluate import (
    bootstrap_ci,
    confusion_figure,
    confusion_matrix,
    f1_figure,
    macro_f1,
    per_class_report,
    save_figure,
    table1,
    top_confusions,
    weakest_classes,
)

labels_st = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(labels_st, st.integers(0, 10_000))
def test_macro_f1_matches_sklearn(y: list[str], seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.asarray(y)
    p = rng.choice(np.array(["a", "b", "c", "d"]), size=len(t))
    # averaged over the classes present in y_true, whatever else is predicted
    assert macro_f1(t, p) == pytest.approx(
        f1_score(t, p, labels=np.unique(t), average="macro", zero_division=0)
    )
    lab = ["a", "b", "c", "d", "e"]
    assert macro_f1(t, p, labels=lab) == pytest.approx(
        f1_score(t, p, labels=lab, average="macro", zero_division=0)
    )
    assert 0.0 <= macro_f1(t, p) <= 1.0


def test_bootstrap_interval_contains_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 2000)
    pred = np.where(rng.random(2000) < 0.8, y, rng.integers(0, 5, 2000))
    ci = bootstrap_ci(y, pred, n_boot=300, seed=1)
    assert ci.low < ci.value < ci.high
    assert ci.value == pytest.approx(f1_score(y, pred, average="macro"))
    assert bootstrap_ci(y, pred, n_boot=300, seed=1) == ci
    assert bootstrap_ci(y, pred, n_boot=300, seed=1, batch=7) == ci  # batching does not change the draws
    assert bootstrap_ci(y, pred, n_boot=300, seed=2) != ci
    narrow = bootstrap_ci(np.tile(y, 8), np.tile(pred, 8), n_boot=300, seed=1)
    assert narrow.high - narrow.low < ci.high - ci.low


def test_bootstrap_replicate_equals_sklearn_on_the_same_resample() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, 4, 300))
    ci = bootstrap_ci(y, pred, n_boot=1, seed=5, confidence=0.5)
    idx = np.random.default_rng(5).integers(0, 300, size=(1, 300))[0]
    expected = f1_score(y[idx], pred[idx], average="macro", zero_division=0)
    assert ci.low == pytest.approx(expected) and ci.high == pytest.approx(expected)


def test_bootstrap_at_many_classes_counts_per_class_not_per_pair() -> None:
    # 120,000 classes: a (replicates, classes, classes) confusion matrix would need 115 GB (issue 16); per-class
    # counts are enough, and each replicate still equals scikit-learn on its resample (an unseen class predicted).
    rng = np.random.default_rng(0)
    y = np.arange(120_000)
    pred = np.where(rng.random(120_000) < 0.6, y, rng.integers(0, 130_000, 120_000))
    ci = bootstrap_ci(y, pred, n_boot=1, seed=5, confidence=0.5)
    idx = np.random.default_rng(5).integers(0, 120_000, size=(1, 120_000))[0]
    t = y[idx]
    expected = f1_score(t, pred[idx], labels=np.unique(t), average="macro", zero_division=0)
    assert ci.low == pytest.approx(expected) and ci.value == pytest.approx(macro_f1(y, pred))


def test_bootstrap_edge_cases() -> None:
    y = np.array(["a", "b", "a", "c"])
    perfect = bootstrap_ci(y, y, n_boot=50)
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    acc = bootstrap_ci(y, np.array(["a", "b", "c", "c"]), metric="accuracy", n_boot=50)
    assert acc.value == 0.75 and 0 <= acc.low <= acc.high <= 1
    with pytest.raises(ValueError, match="metric"):
        bootstrap_ci(y, y, metric="auc")
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_ci(y, y[:2])
    with pytest.raises(ValueError, match="outside `labels`"):
        macro_f1(y, y, labels=["a", "b"])
    # predictions outside `labels` count as errors, not as crashes
    assert macro_f1(["a", "b"], ["a", "z"], labels=["a", "b"]) == pytest.approx(0.5)


def test_per_class_report_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.choice(["x", "y", "z"], 200)
    pred = rng.choice(["x", "y", "z", "w"], 200)
    table = per_class_report(y, pred, labels=["x", "y", "z", "w"])
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=["x", "y", "z", "w"], zero_division=0)
    np.testing.assert_allclose(table["precision"], p)
    np.testing.assert_allclose(table["recall"][:3], r[:3])
    np.testing.assert_allclose(table["f1"][:3], f[:3])
    np.testing.assert_array_equal(table["support"], s)
    assert list(table.columns) == ["class", "precision", "recall", "f1", "support", "predicted"]
    assert table["predicted"].sum() == 200
    # "w" is predicted but has no product: its F1 is undefined, not 0, and the mean F1 is the macro-F1
    assert np.isnan(table["f1"].iloc[3]) and np.isnan(table["recall"].iloc[3])
    assert table["f1"].mean() == pytest.approx(macro_f1(y, pred))
    default = per_class_report(y, pred)
    assert default["class"].tolist() == ["x", "y", "z", "w"]  # present classes, then the other predicted ones


def test_confusion_matrix_and_figure(tmp_path: Path) -> None:
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    cm, lab = confusion_matrix(y, pred)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert list(lab) == [0, 1, 2]
    fig = confusion_figure(y, pred, title="t")
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    path = save_figure(fig, tmp_path / "sub" / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table1_orders_rows_and_takes_probabilities() -> None:
    rng = np.random.default_rng(0)
    classes = np.array(["a", "b", "c"])
    y = rng.choice(classes, 300)
    good = np.where(rng.random(300) < 0.9, y, "a")
    proba = np.eye(3)[np.searchsorted(classes, good)] * 0.9 + 0.1 / 3
    preds = {"ensemble": good, "custom": y, "text alone": proba, "image alone": rng.choice(classes, 300)}
    table = table1(y, preds, classes=classes, n_boot=100)
    assert list(table.index) == ["text alone", "image alone", "ensemble", "custom"]
    assert table.loc["custom", "macro_f1"] == 1.0
    assert table.loc["text alone", "macro_f1"] == pytest.approx(table.loc["ensemble", "macro_f1"])
    assert table.loc["text alone", "delta"] == 0.0
    assert (table["ci_low"] <= table["macro_f1"]).all() and (table["n"] == 300).all()
    assert isinstance(table, pd.DataFrame)
    # a true label the models never knew counts as an error instead of failing
    y2 = y.copy()
    y2[0] = "unseen"
    assert table1(y2, {"text alone": proba}, classes=classes, n_boot=10).loc["text alone", "macro_f1"] < 1


def _rare_classes_catalog(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The issue-23 setting: 120 classes the model knows, 100 of them in the evaluated catalog with 1-6 products
    each, about 80% right; errors land on any known class (including the 20 the catalog lacks)."""
    rng = np.random.default_rng(seed)
    known = np.array([f"c{i:03d}" for i in range(120)])
    present = known[:100]
    y = np.repeat(present, rng.integers(1, 7, size=len(present)))
    pred = np.where(rng.random(len(y)) < 0.8, y, rng.choice(known, size=len(y)))
    return y, pred, known


def test_one_macro_f1_over_the_classes_of_the_evaluated_labels() -> None:
    y, pred, known = _rare_classes_catalog()
    present = np.unique(y)
    expected = f1_score(y, pred, labels=present, average="macro", zero_division=0)
    assert macro_f1(y, pred) == pytest.approx(expected)
    # the table (which knows the model's classes) and the headline give the same figure
    table = table1(y, {"fusion": pred}, classes=known, reference=None, n_boot=200)
    assert table.loc["fusion", "macro_f1"] == pytest.approx(expected)
    assert bootstrap_ci(y, pred, n_boot=200).value == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_interval_contains_its_point_estimate_when_classes_are_rare(seed: int) -> None:
    y, pred, known = _rare_classes_catalog(seed)
    ci = bootstrap_ci(y, pred, n_boot=300, seed=seed)
    assert ci.low <= ci.value <= ci.high
    table = table1(y, {"fusion": pred}, classes=known, reference=None, n_boot=300, seed=seed)
    row = table.loc["fusion"]
    assert row["ci_low"] <= row["macro_f1"] <= row["ci_high"]


def test_top_confusions_lists_error_pairs_largest_first() -> None:
    y = np.array(["a"] * 10 + ["b"] * 4 + ["c"] * 2)
    pred = np.array(["a"] * 6 + ["b"] * 3 + ["z"] + ["a"] * 4 + ["c"] * 2)
    pairs = top_confusions(y, pred, k=None)
    assert pairs[["true", "predicted", "count"]].values.tolist() == [
        ["b", "a", 4],
        ["a", "b", 3],
        ["a", "z", 1],
    ]
    assert pairs["share_of_true"].tolist() == pytest.approx([1.0, 0.3, 0.1])
    assert len(top_confusions(y, pred, k=1)) == 1
    assert top_confusions(y, y).empty


def test_weakest_classes_leave_out_classes_without_products() -> None:
    report = pd.DataFrame(
        {"class": ["a", "b", "c", "d"], "f1": [0.0, 0.0, np.nan, 0.5], "support": [1, 5, 0, 2]}
    )
    assert weakest_classes(report)["class"].tolist() == ["b", "a", "d"]
    assert weakest_classes(report, 1)["class"].tolist() == ["b"]


def test_f1_figure_has_one_bar_per_class_with_support_weakest_first() -> None:
    rng = np.random.default_rng(0)
    classes = np.array([f"class {i}" for i in range(300)])
    y = rng.choice(classes[:280], 3000)
    pred = np.where(rng.random(3000) < 0.7, y, rng.choice(classes, 3000))
    report = per_class_report(y, pred, labels=classes)
    fig = f1_figure(report)
    ax = fig.axes[0]
    assert len(ax.patches) == 280  # the 20 classes without support have no bar
    at = {round(t.get_position()[1]): t.get_text() for t in ax.get_yticklabels()}
    widths = [p.get_width() for p in sorted(ax.patches, key=lambda p: -p.get_y())]  # top to bottom
    assert widths == sorted(widths)
    expected = weakest_classes(report)
    assert expected["f1"].is_monotonic_increasing and (expected["support"] > 0).all()
    ties = expected.loc[expected["f1"] == expected["f1"].iloc[0], "support"]
    assert ties.is_monotonic_decreasing  # among equal F1, the class with more products first
    assert at[max(at)] == expected["class"].iloc[0] and at[min(at)] == expected["class"].iloc[-1]
    assert sum(t.get_text().startswith("n=") for t in ax.texts) == 280
