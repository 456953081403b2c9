"""The trained model (:class:`TrainedModel`) and its scoring on labelled rows (:func:`evaluate_models`).

A data class with no training code: :mod:`prodcat.pipeline` builds it, :mod:`prodcat.bundle` saves and loads it,
:mod:`prodcat.predict` and :mod:`prodcat.report` use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from prodcat.config import TrainConfig
from prodcat.evaluate import bootstrap_ci
from prodcat.oof import align_proba
from prodcat.taxonomy import Taxonomy, back_off, taxonomy_metrics


@dataclass
class TrainedModel:
    """A trained prodcat model: modality models (name, role, estimator), the fuser and what was measured."""

    classes: np.ndarray
    models: list[tuple[str, str, Any]]  # (name, "text" | "image", fitted estimator)
    fuser: Any
    config: TrainConfig
    metrics: dict[str, Any] = field(default_factory=dict)
    # prodcat.trust.Calibration: temperatures and acceptance rules; None when not learnt (older bundles)
    calibration: Any = None
    # Category tree over ``classes`` (leaves in ``classes`` order) and the back-off's per-level thresholds
    # (``inf``: the level is never decided), when the catalog named a taxonomy.
    taxonomy: Taxonomy | None = None
    thresholds: np.ndarray | None = None

    def model_probas(self, df: pd.DataFrame) -> list[np.ndarray]:
        """Each modality model's (n, C) probabilities in ``classes`` order."""
        return self.model_probas_with_masks(df)[0]

    def model_probas_with_masks(self, df: pd.DataFrame) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """:meth:`model_probas` and, per model, the ``(n,)`` mask of rows it had an input for (``None`` when the
        model does not report one: only embedding models do)."""
        probas, masks = [], []
        for _, _, est in self.models:
            with_mask = getattr(est, "predict_proba_with_mask", None)
            proba, mask = with_mask(df) if with_mask is not None else (est.predict_proba(df), None)
            probas.append(align_proba(proba, est.classes_, self.classes))
            masks.append(mask)
        return probas, masks

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """(n, C) fused probabilities in ``classes`` order."""
        fused = self.fuser.predict_proba(np.hstack(self.model_probas(df)))
        return align_proba(fused, self.fuser.classes_, self.classes)

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """(n,) fused labels; follows the fuser's own ``predict`` (majority vote for ``paper-mlp``)."""
        return np.asarray(self.fuser.predict(np.hstack(self.model_probas(df))))

    def outputs(self, df: pd.DataFrame) -> StackOutputs:
        """Everything the model says about ``df`` from one pass of each modality model and one of the fuser:
        what :meth:`model_probas_with_masks`, :meth:`predict_proba` and :meth:`predict` return, computed once
        (an evaluation needs all three on the same rows)."""
        from prodcat.ensemble import labels_and_proba

        probas, masks = self.model_probas_with_masks(df)
        labels, proba = labels_and_proba(self.fuser, np.hstack(probas))
        return StackOutputs(probas, masks, labels, align_proba(proba, self.fuser.classes_, self.classes))


@dataclass(frozen=True)
class StackOutputs:
    """One pass of a :class:`TrainedModel` over a frame (:meth:`TrainedModel.outputs`)."""

    probas: list[np.ndarray]  # per modality model, (n, C) in ``classes`` order
    masks: list[np.ndarray | None]  # per modality model, rows it had an input for (None: not reported)
    labels: np.ndarray  # (n,) the fuser's ``predict`` (its vote for ``paper-mlp``)
    fused: np.ndarray  # (n, C) the fuser's ``predict_proba`` in ``classes`` order


def _score(y: np.ndarray, proba: np.ndarray, classes: np.ndarray, seed: int) -> dict[str, Any]:
    return score_labels(y, classes[proba.argmax(axis=1)], seed=seed)


def score_labels(y: np.ndarray, pred: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """``{"macro_f1", "macro_f1_ci": [low, high] (95% bootstrap), "n"}`` of predicted labels; macro-F1 over the
    classes present in ``y`` (:func:`prodcat.evaluate.macro_f1`), the interval by the same rule."""
    ci = bootstrap_ci(y, pred, seed=seed)
    return {"macro_f1": float(ci.value), "macro_f1_ci": [ci.low, ci.high], "n": len(y)}


def evaluate_models(
    model: TrainedModel, df: pd.DataFrame, y: np.ndarray, *, outputs: StackOutputs | None = None
) -> dict[str, Any]:
    """Macro-F1 (+95% bootstrap CI) of every model, the best model of each modality, and the fusion on ``df``;
    ``outputs`` (``model.outputs(df)``) is reused when given, else computed here (once)."""
    scored = model.outputs(df) if outputs is None else outputs
    probas = scored.probas
    seed = model.config.seed
    per_model = {
        f"{role}:{name}": _score(y, p, model.classes, seed)
        for (name, role, _), p in zip(model.models, probas, strict=True)
    }
    per_modality: dict[str, Any] = {}
    for role in ("text", "image"):  # only the modalities the model has
        scores = [s["macro_f1"] for k, s in per_model.items() if k.startswith(role + ":")]
        if scores:
            per_modality[role] = max(scores)
    pred = scored.labels
    fused = score_labels(y, pred, seed=seed)
    per_modality["fusion"] = fused["macro_f1"]
    out = {**fused, "per_modality": per_modality, "per_model": per_model}
    if model.taxonomy is not None:
        out["taxonomy"] = hierarchy_scores(model, y, pred, scored.fused)
    return out


def hierarchy_scores(
    model: TrainedModel, y: np.ndarray, pred: np.ndarray, proba: np.ndarray
) -> dict[str, Any]:
    """Per-level and hierarchical metrics of predicted leaves ``pred`` and, with back-off thresholds, how the
    products were decided (share and precision per decided level, at ``config.target_precision``)."""
    tax = model.taxonomy
    assert tax is not None
    known = np.isin(y, tax.leaves)  # a leaf never seen in training has no place in the tree
    out = taxonomy_metrics(y[known], pred[known], tax)
    out["unknown_leaves"] = int((~known).sum())
    if model.thresholds is not None and known.any():
        level, label = back_off(proba[known], tax, model.thresholds, leaf=tax.leaf_index(pred[known]))
        truth = y[known]
        decided: dict[str, Any] = {}
        for j, name in enumerate(("none", *tax.levels)):
            rows = level == j - 1
            right = [
                lab == tax.ancestors([t], j - 1)[0] for lab, t in zip(label[rows], truth[rows], strict=True)
            ]
            decided[name] = {
                "share": float(rows.mean()),
                "precision": float(np.mean(right)) if j and rows.any() else None,
            }
        out["back_off"] = {"target_precision": model.config.target_precision, "decided": decided}
    return out
