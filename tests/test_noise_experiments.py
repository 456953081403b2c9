"""benchmarks/noise_experiments.py: the pruning comparison measures what training does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from prodcat.noise import fit_with_weights

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "noise_experiments.py"


@pytest.fixture(scope="module")
def experiments():
    spec = importlib.util.spec_from_file_location("noise_experiments", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def blobs(n: int, *, seed: int, sep: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 6)) * sep
    y = rng.integers(0, 4, n)
    return centers[y] + rng.normal(size=(n, 6)), y


def test_compare_pruning_never_cleans_held_out_rows(experiments) -> None:
    X, y = blobs(480, seed=9, sep=1.2)
    rng = np.random.default_rng(10)
    noisy = np.where(rng.random(len(y)) < 0.2, (y + rng.integers(1, 4, len(y))) % 4, y)
    labels, truth = np.array([f"c{v}" for v in noisy]), np.array([f"c{v}" for v in y])
    cmp = experiments.compare_pruning(
        LogisticRegression(max_iter=500),
        X,
        labels,
        policies=["top-fraction:0.1", "all", "downweight:0.05"],
        n_splits=3,
        inner_splits=3,
        y_eval=truth,
        n_boot=30,
        progress=False,
    )
    assert set(cmp.summary["policy"]) == {"none", "top-fraction:0.1", "all", "downweight:0.05"}
    # every row gets exactly one held-out prediction per policy, training sizes exclude the held-out fold
    assert all(len(p) == len(labels) and all(v is not None for v in p) for p in cmp.predictions.values())
    assert cmp.folds.groupby("policy")["n_train"].sum().eq(2 * len(labels)).all()
    none = cmp.summary.set_index("policy").loc["none"]
    assert none["delta"] == 0 and none["dropped_mean"] == 0
    dropped = cmp.folds[cmp.folds["policy"] == "all"]
    assert (dropped["n_dropped"] == dropped["n_flagged"]).all() and (dropped["n_dropped"] > 0).all()
    down = cmp.folds[cmp.folds["policy"] == "downweight:0.05"]
    assert (down["n_dropped"] == 0).all() and (down["n_downweighted"] > 0).all()
    for row in cmp.summary.itertuples():
        assert 0.0 <= row.macro_f1 <= 1.0
        assert row.delta_lo <= row.delta + 1e-12 and row.delta - 1e-12 <= row.delta_hi


def test_compare_pruning_fits_like_training(experiments, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each policy's model is fitted by prodcat.noise.fit_with_weights on every training row of the fold (a
    dropped row has weight 0), never on a subset."""
    import prodcat.noise

    calls: list[tuple[int, np.ndarray | None]] = []

    def spy(estimator, X, y, weights):
        calls.append((len(X), None if weights is None else np.asarray(weights)))
        return fit_with_weights(estimator, X, y, weights)

    monkeypatch.setattr(prodcat.noise, "fit_with_weights", spy)
    X, y = blobs(240, seed=3, sep=1.0)
    experiments.compare_pruning(
        LogisticRegression(max_iter=500),
        X,
        y,
        policies=["all"],
        n_splits=2,
        inner_splits=2,
        n_boot=0,
        progress=False,
    )
    assert [n for n, _ in calls] == [120] * 4  # 2 folds x (none, all), always the whole training part
    assert calls[0][1] is None and calls[1][1] is not None and (calls[1][1] == 0).any()
