"""Experiments on label-noise cleaning: held-out macro-F1 with and without cleaning the training rows.

Not part of the package: ``bench_noise.py fashion-prune`` runs :func:`compare_pruning`, and
``tests/test_noise_experiments.py`` checks it. Every step is the one training runs (:mod:`prodcat.pipeline`):
out-of-fold probabilities of the training rows only, :func:`prodcat.noise.cleaning_weights` for the policy's
weights, and :func:`prodcat.noise.fit_with_weights` to fit on every training row with those weights as
``sample_weight`` (a dropped row has weight 0, it is not removed). So the estimator must accept ``sample_weight``,
as every prodcat model does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


def _rows(X: Any, idx: np.ndarray) -> Any:
    return X.iloc[idx] if isinstance(X, pd.DataFrame | pd.Series) else X[idx]


@dataclass
class PruningComparison:
    """Held-out macro-F1 with and without cleaning the training folds.

    ``folds``: one row per (fold, policy) with ``n_train``, ``n_flagged``, ``n_dropped`` (weight 0),
    ``n_downweighted`` (0 < weight < 1) and ``macro_f1``. ``summary``: one row per policy with ``macro_f1`` over all
    pooled held-out predictions and its bootstrap 95% interval (``f1_lo``, ``f1_hi``), ``delta`` against
    ``"none"`` with a paired bootstrap 95% interval (``delta_lo``, ``delta_hi``: the same resampled rows for both),
    the mean and std of the per-fold scores and the mean number of dropped rows. ``predictions``: policy -> (n,)
    held-out predicted labels.
    """

    folds: pd.DataFrame
    summary: pd.DataFrame
    predictions: dict[str, np.ndarray]


def _paired_deltas(
    truth: np.ndarray, pred: np.ndarray, base: np.ndarray, *, n_boot: int, seed: int
) -> np.ndarray:
    """(n_boot,) macro-F1 of ``pred`` minus that of ``base`` on the same resampled rows."""
    from prodcat.evaluate import macro_f1

    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, len(truth), len(truth))
        out[b] = macro_f1(truth[idx], pred[idx]) - macro_f1(truth[idx], base[idx])
    return out


def compare_pruning(
    estimator: Any,
    X: Any,
    y: Sequence[Any] | np.ndarray,
    *,
    policies: Sequence[Any] = ("top-fraction:0.1", "all"),
    n_splits: int = 5,
    inner_splits: int = 4,
    filter_by: str = "prune_by_noise_rate",
    rank_by: str = "self_confidence",
    detector: Any = None,
    X_detector: Any = None,
    y_eval: Sequence[Any] | np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 42,
    progress: bool = True,
) -> PruningComparison:
    """Macro-F1 on held-out folds when the training folds are used as given vs cleaned by each policy.

    For each of ``n_splits`` outer folds, label issues are found from ``inner_splits``-fold OOF probabilities of
    the training part only, by ``detector`` on ``X_detector`` (default: ``estimator`` on ``X``; e.g. a text model
    on the catalog to clean an image model's training rows). The held-out part is never cleaned and is scored
    against ``y_eval`` (default ``y``; pass the true labels when known, e.g. in synthetic experiments).
    """
    from sklearn.base import clone
    from tqdm.auto import tqdm

    from prodcat.evaluate import bootstrap_ci, macro_f1
    from prodcat.noise import PruningPolicy, cleaning_weights, fit_with_weights
    from prodcat.oof import align_proba, oof_predict_proba
    from prodcat.splits import kfold_indices

    y = np.asarray(y)
    y_eval = y if y_eval is None else np.asarray(y_eval)
    detector, X_detector = (
        (estimator, X) if detector is None else (detector, X if X_detector is None else X_detector)
    )
    classes = np.unique(np.concatenate([y, y_eval]))
    parsed = [PruningPolicy(kind="none"), *(PruningPolicy.parse(p) for p in policies if str(p) != "none")]
    names = [str(p) for p in parsed]
    pred = {name: np.empty(len(y), dtype=object) for name in names}
    rows = []
    splits = list(kfold_indices(y.tolist(), n_splits=n_splits, seed=seed))
    for k, (tr, te) in enumerate(tqdm(splits, desc="pruning folds", disable=not progress)):
        oof = oof_predict_proba(
            detector,
            _rows(X_detector, tr),
            y[tr],
            n_splits=inner_splits,
            seed=seed,
            refit=False,
            progress=False,
        )
        for policy, name in zip(parsed, names, strict=True):
            issues, w = cleaning_weights(
                y[tr], oof.proba, classes=oof.classes, policy=policy, filter_by=filter_by, rank_by=rank_by
            )
            weights = None if policy.kind == "none" else w
            model = fit_with_weights(clone(estimator), _rows(X, tr), y[tr], weights)
            proba = align_proba(model.predict_proba(_rows(X, te)), model.classes_, classes)
            pred[name][te] = classes[proba.argmax(axis=1)]
            rows.append(
                {
                    "fold": k,
                    "policy": name,
                    "n_train": len(tr),
                    "n_flagged": issues.n_issues,
                    "n_dropped": int((w == 0).sum()),
                    "n_downweighted": int(((w > 0) & (w < 1)).sum()),
                    "macro_f1": macro_f1(y_eval[te], pred[name][te]),
                }
            )
    folds = pd.DataFrame(rows)
    summary = []
    for name in names:
        ci = bootstrap_ci(y_eval, pred[name], n_boot=max(n_boot, 1), seed=seed)
        deltas = _paired_deltas(y_eval, pred[name], pred["none"], n_boot=n_boot, seed=seed)
        per_fold = folds.loc[folds["policy"] == name]
        summary.append(
            {
                "policy": name,
                "macro_f1": ci.value,
                "f1_lo": ci.low,
                "f1_hi": ci.high,
                "delta": ci.value - macro_f1(y_eval, pred["none"]),
                "delta_lo": float(np.quantile(deltas, 0.025)) if n_boot else np.nan,
                "delta_hi": float(np.quantile(deltas, 0.975)) if n_boot else np.nan,
                "fold_mean": per_fold["macro_f1"].mean(),
                "fold_std": per_fold["macro_f1"].std(ddof=1),
                "dropped_mean": per_fold["n_dropped"].mean(),
            }
        )
    return PruningComparison(folds=folds, summary=pd.DataFrame(summary), predictions=pred)
