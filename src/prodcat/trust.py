"""Which predictions to trust: the calibration and acceptance stage after the fuser, and its use at prediction.

Training (called by :func:`prodcat.pipeline.train` once the fuser is fit)::

    fusion inputs X (n, m*C) ─ K-fold cross-fitting of the fuser ─▶ out-of-fold fused probabilities (n, C)
        │                        (each fold's fuser also predicts the fold's rows with one modality blanked:
        │                         the blocks a missing title / photo gives at prediction time)
        └─ availability group per row ("text+image", "text", "image") ─▶ temperature per group (NLL)
                                                                        ─▶ acceptance rule per group

The fused probabilities the rule learns from were never produced by a fuser that saw those rows, and the
validation rows scored afterwards take no part. A text-only product is scaled and thresholded with the "text"
group's temperature and rule, learnt on real rows without a usable photo plus every training row with its photo
blanked, so its confidence says what a product without a photo is worth even in a catalog where every training
product had one.

Prediction: ``confidence`` = calibrated probability of the predicted label, ``decision`` = ``auto`` when the
rule of the row's group accepts it, else ``review`` (a group without a rule, e.g. a product with neither text nor
image, is always reviewed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from prodcat.acceptance import AcceptanceRule
from prodcat.calibration import TemperatureScaling, calibration_scores, fit_temperature, scale_temperature

if TYPE_CHECKING:
    from prodcat.config import TrainConfig
    from prodcat.model import TrainedModel

ROLES = ("text", "image")
NO_INPUT = "none"


def availability_groups(available: dict[str, np.ndarray], n: int) -> np.ndarray:
    """(n,) group name per row from per-role ``(n,)`` bool masks: the available roles joined by ``+`` in
    ``ROLES`` order (``"text+image"``, ``"text"``, ``"image"``), ``"none"`` when none is."""
    names = np.full(n, "", dtype=object)
    for role in ROLES:
        if role in available:
            ok = np.asarray(available[role], dtype=bool)
            names = np.where(ok, np.where(names == "", role, names + "+" + role), names)
    return np.where(names == "", NO_INPUT, names)


@dataclass
class Calibration:
    """What the trust stage learnt: temperatures, acceptance rules per availability group, and context.

    ``model_temperatures`` (one per modality model, ``"role:name"``) are reported, not applied: the fuser was
    trained on the models' raw out-of-fold probabilities, so scaling its inputs would change what it learnt.
    """

    scaler: TemperatureScaling
    rules: dict[str, AcceptanceRule]
    target_precision: float
    class_counts: dict[str, int] = field(default_factory=dict)
    model_temperatures: dict[str, float] = field(default_factory=dict)

    def apply(
        self, fused: np.ndarray, predicted: np.ndarray, groups: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated ``(proba (n, C), confidence (n,), accepted (n,) bool)`` of fused probabilities ``fused``
        (n, C), predicted class codes ``predicted`` (n,) and availability ``groups`` (n,)."""
        proba = self.scaler.transform(fused, groups=groups)
        conf = proba[np.arange(len(proba)), predicted]
        accepted = np.zeros(len(conf), dtype=bool)
        for name, rule in self.rules.items():
            rows = groups == name
            if rows.any():
                accepted[rows] = rule.accept(conf[rows], predicted[rows])
        return proba, conf, accepted

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        """JSON-able state (the bundle's ``calibration.json``); inverse :meth:`from_dict`."""
        return {
            "format_version": 1,
            "target_precision": self.target_precision,
            "temperature_scaling": self.scaler.to_dict(),
            "acceptance": {g: r.to_dict(classes) for g, r in self.rules.items()},
            "class_counts": self.class_counts,
            "model_temperatures": self.model_temperatures,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], classes: list[str]) -> Calibration:
        """Rebuild from :meth:`to_dict` output; ``ValueError`` naming the bad part."""
        try:
            return cls(
                scaler=TemperatureScaling.from_dict(state["temperature_scaling"]),
                rules={g: AcceptanceRule.from_dict(r, classes) for g, r in state["acceptance"].items()},
                target_precision=float(state["target_precision"]),
                class_counts={str(k): int(v) for k, v in state.get("class_counts", {}).items()},
                model_temperatures={str(k): float(v) for k, v in state.get("model_temperatures", {}).items()},
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"calibration state: missing or malformed {e}") from None


def cross_fit_fuser(
    fuser: Any,
    X: np.ndarray,
    y: np.ndarray,
    classes: np.ndarray,
    *,
    variants: dict[str, tuple[np.ndarray, np.ndarray]],
    n_splits: int,
    seed: int,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[Any]]:
    """Out-of-fold fused probabilities and predicted labels of the fusion inputs, plus blanked variants.

    Parameters
    ----------
    fuser : unfitted fusion estimator (cloned per fold).
    X : (n, d) fusion inputs; y : (n,) labels; classes : (C,) the model's class order.
    variants : name -> ``(columns (d,) bool, values (d,))``: the fold's rows with those columns set to those
        values (e.g. an image model's block set to what it outputs for a missing photo). ``""`` (the rows as
        they are) is always computed.

    Returns
    -------
    ``(out, fusers)``: ``out`` maps name -> ``(proba (n, C) float32 in classes order, predicted (n,) class
    codes)``; ``fusers`` are the K fitted fold fusers (fold order), what :func:`fold_vote` predicts with. float32 halves the largest
    arrays of the calibration stage (one (n, C) per variant: 0.5 GB each at 22k rows x 3,000 classes); its
    rounding (~6e-8 relative) is far below what is calibrated from them, and the labels are the fuser's own.
    """
    from sklearn.base import clone

    from prodcat.ensemble import labels_and_proba
    from prodcat.oof import align_proba
    from prodcat.splits import kfold_indices

    pos = {c: i for i, c in enumerate(classes.tolist())}
    names = ["", *(k for k in variants if k)]
    out = {k: (np.zeros((len(y), len(classes)), np.float32), np.zeros(len(y), np.int64)) for k in names}
    fusers = []
    for tr, te in kfold_indices(y, n_splits=n_splits, seed=seed):
        fitted = clone(fuser).fit(X[tr], y[tr])
        for name in names:
            Xv = X[te] if not name else np.where(variants[name][0], variants[name][1], X[te])
            labels, proba = labels_and_proba(fitted, Xv)
            out[name][0][te] = align_proba(proba, fitted.classes_, classes)
            out[name][1][te] = [pos[v] for v in labels.tolist()]
        fusers.append(fitted)
    return out, fusers


def fold_vote(fusers: list[Any], X: np.ndarray, y: np.ndarray) -> Any:
    """The fitted fold fusers of :func:`cross_fit_fuser` as one fuser: a hard-vote
    :class:`~prodcat.ensemble.VotingEnsemble` (each fold's fuser votes its label, ties to the highest mean
    probability; probabilities are the members' mean), as the paper's fusion votes its 8 fold models. ``X``, ``y``:
    the fusion rows (nothing is refit)."""
    from prodcat.ensemble import VotingEnsemble

    return VotingEnsemble([(f"fold{k}", f) for k, f in enumerate(fusers)], voting="hard").fit(X, y)


def blank_variants(
    models: list[tuple[str, str, Any]], classes: np.ndarray
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """For a model with both modalities: per role, the fusion-input columns of that role's models and the
    values those models output for a product missing that input (asked of the fitted models themselves, on a
    product with an empty title and no image). Returns ``(variants for cross_fit_fuser, variant -> role)``."""
    from prodcat.oof import align_proba

    roles = [r for r in ROLES if any(role == r for _, role, _ in models)]
    if len(roles) < 2:
        return {}, {}
    blank = pd.DataFrame({"id": ["blank"], "title": [""], "description": [""], "image": [None]})
    C = len(classes)
    values = np.concatenate(
        [align_proba(est.predict_proba(blank), est.classes_, classes)[0] for _, _, est in models]
    )  # (m*C,)
    variants, blanked = {}, {}
    for r in roles:
        cols = np.repeat([role == r for _, role, _ in models], C)  # (m*C,)
        variants[f"no-{r}"] = (cols, values)
        blanked[f"no-{r}"] = r
    return variants, blanked


def training_groups(
    models: list[tuple[str, str, Any]], df: pd.DataFrame, *, masks: list[Any] | None = None
) -> np.ndarray:
    """(n,) availability group of each catalog row for the fitted ``models`` (as :class:`~prodcat.predict.
    Predictor` reports it: text = a non-empty cleaned title or description; image = decoded by an image model).
    ``masks``: the models' own input masks when already computed (``TrainedModel.model_probas_with_masks``)."""
    from prodcat.clean import clean_text

    roles = {role for _, role, _ in models}
    available: dict[str, np.ndarray] = {}
    if "text" in roles:
        available["text"] = np.array(
            [
                bool(clean_text(t) or clean_text(d))
                for t, d in zip(df["title"], df["description"], strict=True)
            ]
        )
    if "image" in roles:
        known = [
            m
            for (_, role, _), m in zip(models, masks or [], strict=False)
            if role == "image" and m is not None
        ]
        available["image"] = np.logical_or.reduce(known) if known else image_available(models, df)
    return availability_groups(available, len(df))


def image_available(models: list[tuple[str, str, Any]], df: pd.DataFrame) -> np.ndarray:
    """(n,) bool: an image model decoded the row's image (its own mask), else a header probe says it is usable."""
    masks = [
        est.predict_proba_with_mask(df)[1]
        for _, role, est in models
        if role == "image" and hasattr(est, "predict_proba_with_mask")
    ]
    if masks:
        return np.logical_or.reduce(masks)
    from prodcat.image.decode import probe_image

    return np.array(
        [it is not None and not isinstance(it, float) and probe_image(it)[0] for it in df["image"]]
    )


@dataclass
class TrustOptions:
    """The knobs of :func:`fit_calibration` (from the config's ``calibration`` section)."""

    target_precision: float = 0.98
    confidence_level: float = 0.95
    bound: str = "clopper-pearson"
    min_class_rows: int = 100
    min_group_rows: int = 200


def fit_calibration(
    oof: dict[str, tuple[np.ndarray, np.ndarray]],
    y_codes: np.ndarray,
    groups: np.ndarray,
    *,
    blanked: dict[str, str],
    classes: list[str],
    options: TrustOptions,
) -> tuple[Calibration, dict[str, Any]]:
    """Temperatures and acceptance rules from :func:`cross_fit_fuser` output.

    ``groups`` (n,) availability group of each real row; ``blanked`` maps a variant name of ``oof`` to the role
    it blanks (its rows join the group of the roles that remain). Returns the :class:`Calibration` and its
    out-of-fold measurements (ECE / Brier before and after, per group, and the rules' coverage and precision on
    their own fitting rows).
    """
    P_parts, y_parts, pred_parts, g_parts = [oof[""][0]], [y_codes], [oof[""][1]], [np.asarray(groups)]
    for name, role in blanked.items():
        remaining = np.array([_without(g, role) for g in np.asarray(groups).tolist()], dtype=object)
        P_parts.append(oof[name][0])
        y_parts.append(y_codes)
        pred_parts.append(oof[name][1])
        g_parts.append(remaining)
    P, y, pred, g = (np.concatenate(p) for p in (P_parts, y_parts, pred_parts, g_parts))
    scaler = TemperatureScaling(min_group_rows=options.min_group_rows).fit(P, y, groups=g)
    rules: dict[str, AcceptanceRule] = {}
    report: dict[str, Any] = {"groups": {}}
    for name in dict.fromkeys(g.tolist()):
        # one group's rows at a time: the calibrated (n, C) probabilities are never held for every row
        rows = g == name
        P_g = P[rows]
        cal_g = scaler.transform(P_g, groups=g[rows])
        entry: dict[str, Any] = {
            "rows": int(rows.sum()),
            "simulated_rows": int(rows[len(y_codes) :].sum()),
            "temperature": scaler.group_temperatures_.get(name, scaler.temperature_),
            "before": calibration_scores(P_g, y[rows], pred[rows]),
            "after": calibration_scores(cal_g, y[rows], pred[rows]),
        }
        conf = cal_g[np.arange(len(cal_g)), pred[rows]]
        del P_g, cal_g
        if name != NO_INPUT and rows.sum() >= options.min_group_rows:
            rule = AcceptanceRule(
                target_precision=options.target_precision,
                confidence_level=options.confidence_level,
                bound=options.bound,
                min_class_rows=options.min_class_rows,
            ).fit(conf, pred[rows] == y[rows], pred[rows], n_classes=len(classes))
            rules[name] = rule
            entry["acceptance"] = {
                **rule.fit_scores_,
                "classes_with_own_threshold": int(rule.own_threshold_.sum()),
            }
        report["groups"][name] = entry
    real = slice(0, len(y_codes))
    report["before"] = calibration_scores(P[real], y[real], pred[real])
    report["after"] = calibration_scores(scaler.transform(P[real], groups=g[real]), y[real], pred[real])
    report["temperature"] = scaler.temperature_
    counts = np.bincount(y_codes, minlength=len(classes))
    calibration = Calibration(
        scaler=scaler,
        rules=rules,
        target_precision=options.target_precision,
        class_counts={c: int(k) for c, k in zip(classes, counts, strict=True)},
    )
    return calibration, report


def _without(group: str, role: str) -> str:
    rest = [r for r in group.split("+") if r != role and r != NO_INPUT]
    return "+".join(rest) or NO_INPUT


def model_temperatures(
    blocks: dict[str, np.ndarray], y_codes: np.ndarray
) -> tuple[dict[str, float], dict[str, Any]]:
    """Per modality model (``"role:name"`` -> its (n, C) out-of-fold probabilities): the NLL temperature, and
    ECE / Brier before and after it on those rows (in-sample for one parameter; ``prodcat evaluate`` gives the
    held-out figures)."""
    temps, report = {}, {}
    for key, P in blocks.items():
        t = fit_temperature(P, y_codes)
        temps[key] = t
        report[key] = {
            "temperature": t,
            "before": calibration_scores(P, y_codes),
            "after": calibration_scores(scale_temperature(P, t), y_codes),
        }
    return temps, report


def review_order(frame: pd.DataFrame, class_counts: dict[str, int]) -> pd.DataFrame:
    """The ``review`` rows of a prediction frame, ordered by how much a person's look is worth.

    A look at a row corrects an error with probability ``1 - confidence`` (the calibrated chance the predicted
    label is wrong), so the rows are sorted by that chance, largest first: for any number of looks a reviewer
    has time for, this order corrects the most errors in expectation. Ties (same confidence) go to the predicted
    class with more training products first (its mistakes recur across more of the catalog), then input order.
    Adds ``p_error`` and ``review_rank`` (1 = first) columns.
    """
    queue = frame[frame["decision"] == "review"].copy()
    queue["p_error"] = 1.0 - queue["confidence"].astype(float)
    queue["_freq"] = [class_counts.get(str(lab), 0) for lab in queue["label"]]
    queue["_pos"] = np.arange(len(queue))
    queue = queue.sort_values(["p_error", "_freq", "_pos"], ascending=[False, False, True], kind="stable")
    queue["review_rank"] = np.arange(1, len(queue) + 1)
    return queue.drop(columns=["_freq", "_pos"]).reset_index(drop=True)


def fused_oof(
    model: TrainedModel, X: np.ndarray, y: np.ndarray, config: TrainConfig, *, cached: Any
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[Any]]:
    """The fuser cross-fitted on ``calibration.n_folds`` folds of its inputs ``X`` (n, m*C) and labels ``y``:
    :func:`cross_fit_fuser`'s out-of-fold fused probabilities and labels (``""``: the rows as they are; the
    blanked variants) and its fitted fold fusers, from the training cache when the same fusion, inputs and
    folds were computed before."""
    import joblib

    import prodcat
    from prodcat.fusion import dumps_fuser, loads_fuser

    cal, classes = config.calibration, model.classes
    variants, _ = blank_variants(model.models, classes)
    names = ["", *variants]

    def run() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[Any]]:
        return cross_fit_fuser(
            model.fuser, X, y, classes, variants=variants, n_splits=cal.n_folds, seed=config.seed + 2
        )

    def encode(res: tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[Any]]) -> dict[str, np.ndarray]:
        out = {f"{n or 'real'}.{i}": a for n, arrays in res[0].items() for i, a in enumerate(arrays)}
        for k, fitted in enumerate(res[1]):
            meta, arrays = dumps_fuser(fitted)
            out[f"fuser{k}.meta"] = np.frombuffer(meta, dtype=np.uint8)
            out[f"fuser{k}.arrays"] = np.frombuffer(arrays, dtype=np.uint8)
        return out

    def decode(hit: dict[str, np.ndarray]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[Any]]:
        oof = {n: (hit[f"{n or 'real'}.0"], hit[f"{n or 'real'}.1"]) for n in names}
        fusers = [
            loads_fuser(hit[f"fuser{k}.meta"].tobytes(), hit[f"fuser{k}.arrays"].tobytes())
            for k in range(cal.n_folds)
        ]
        return oof, fusers

    return cached(  # type: ignore[no-any-return]
        config,
        "fusion-folds",  # the fold fusers and their out-of-fold fused probabilities
        lambda: str(
            joblib.hash(
                (
                    config.fusion.model_dump_json(),
                    X,
                    y.astype(str),
                    variants,
                    cal.n_folds,
                    config.seed,
                    prodcat.__version__,
                )
            )
        ),
        run,
        encode,
        decode,
    )


def calibrate_fusion(
    model: TrainedModel,
    X: np.ndarray,
    y: np.ndarray,
    df: pd.DataFrame,
    config: TrainConfig,
    *,
    cached: Any,
    oof: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[Calibration, dict[str, Any]]:
    """The calibration and acceptance stage (:mod:`prodcat.trust`) on the fusion's inputs ``X`` (n, m*C), their
    labels ``y`` and catalog rows ``df``; ``oof``: :func:`fused_oof` (computed here when not given)."""
    cal, classes = config.calibration, model.classes
    _, blanked = blank_variants(model.models, classes)
    oof = fused_oof(model, X, y, config, cached=cached)[0] if oof is None else oof
    y_codes = np.searchsorted(classes, y)  # classes = np.unique(training labels): sorted
    knobs = cal.model_dump(include={"confidence_level", "bound", "min_class_rows", "min_group_rows"})
    options = TrustOptions(target_precision=config.target_precision, **knobs)
    groups = training_groups(model.models, df)
    labels = [str(c) for c in classes]
    calibration, report = fit_calibration(
        oof, y_codes, groups, blanked=blanked, classes=labels, options=options
    )
    C = len(classes)
    blocks = {f"{role}:{name}": X[:, k * C : (k + 1) * C] for k, (name, role, _) in enumerate(model.models)}
    calibration.model_temperatures, report["per_model"] = model_temperatures(blocks, y_codes)
    return calibration, report
