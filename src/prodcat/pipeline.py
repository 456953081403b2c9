"""Config -> stages -> trained model. The only module that sequences stages.

Training (``fusion_data="oof"``, the default)::

    catalog ─ holdout split (validation_fraction) ─▶ train rows ─┬─ text model k : K-fold OOF probas (n, C)
                                                                  ├─ image model k: K-fold OOF probas (n, C)
                                                                  │    (noise: confident learning on its OOF ->
                                                                  │     training-fold weights -> OOF again)
                                                                  ├─ each embedding model: its K fold models
                                                                  │  (FoldEnsemble); tfidf & fine-tuned: refit
                                                                  └─ fuser cross-fitted on [OOF probas] (n, m*C):
                                                                     fold fusers vote; calibration + acceptance
                                                                     on their out-of-fold outputs
                                       validation rows ─▶ macro-F1 of every model, every modality and the fusion

New products are predicted by the models the calibration learnt from (``refit_full: false``, docs/trust.md "Which
models predict"): the fold models of every model whose K members share one embedding pass, the calibration's fold
fusers; models that would be stored and run K times (tfidf, fine-tuned networks) are refit on all training rows.
``refit_full: true`` refits every model (weighted) and the fuser on all training rows.

With ``fusion_data="holdout"`` (the paper's way) the modality models are fit on the training part minus a held-out
``fusion_holdout`` fraction, and the fuser learns from their probabilities on that held-out part.

Modalities a catalog lacks: a modality with no usable row in the training part (no text at all; no image file at
all, e.g. no image column) is dropped with its models, and a log line says so; a modality with at least one usable
row is kept (its models give the class prior to rows without it) and its share is in ``metrics["modalities"]``.
With a single model left the fusion is a pass-through: ``mean`` with uniform linear weights, whose probabilities
are exactly that model's (no stacking on one model's outputs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prodcat.config import FusionConfig, ModelSpec, TrainConfig, build_fuser, build_model
from prodcat.folds import FoldEnsemble
from prodcat.model import TrainedModel, evaluate_models
from prodcat.oof import align_proba, oof_predict_proba
from prodcat.safe_io import UnsafeContentError, dumps_estimator, loads_estimator
from prodcat.splits import holdout_split, kfold_indices, smallest_class
from prodcat.taxonomy import Taxonomy, learn_thresholds

log = logging.getLogger(__name__)


def _log(progress: bool, msg: str) -> None:
    if progress:
        tqdm.write(msg)


def _cleaning(
    est: Any, X: pd.DataFrame, y: np.ndarray, *, role: str, config: TrainConfig, progress: bool
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Label-noise cleaning of one model's training folds (when configured for its role).

    Returns ``(the first out-of-fold pass's probabilities, or None when cleaning is off; training weights, or None
    when every weight is 1; noise info)``.
    """
    from prodcat.noise import PruningPolicy, cleaning_weights

    if not (config.noise.enabled and role in config.noise.modalities):
        return None, None, {}
    oof = oof_predict_proba(
        est,
        X,
        y,
        n_splits=config.n_folds,
        seed=config.seed,
        refit=False,
        progress=progress,
        cache_dir=config.cache_dir,
        desc=f"{role} folds",
        n_jobs=config.n_jobs,
    )
    issues, weights = cleaning_weights(
        y,
        oof.proba,
        classes=oof.classes,
        policy=PruningPolicy.parse(config.noise.policy),
        filter_by=config.noise.filter_by,
        rank_by=config.noise.rank_by,
    )
    info = {
        "flagged": int(issues.n_issues),
        "dropped": int((weights == 0).sum()),
        "policy": config.noise.policy,
    }
    return oof.proba, (None if np.allclose(weights, 1.0) else weights), info


def _model_oof(
    est: Any, X: pd.DataFrame, y: np.ndarray, *, role: str, config: TrainConfig, progress: bool
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """OOF probabilities of one model on the training rows, with optional noise cleaning of training folds.

    Returns ``(oof (n, C), sample_weight or None, noise info)``.
    """
    first, weights, info = _cleaning(est, X, y, role=role, config=config, progress=progress)
    if first is not None and weights is None:
        return first, None, info
    # Weights apply to the training folds only: every row is still predicted (and later fused) as given.
    again = oof_predict_proba(
        est,
        X,
        y,
        n_splits=config.n_folds,
        seed=config.seed,
        refit=False,
        sample_weight=weights,
        progress=progress,
        cache_dir=config.cache_dir,
        desc=f"{role} folds" + ("" if weights is None else " (cleaned)"),
        n_jobs=config.n_jobs,
    )
    return again.proba, weights, info


def _fold_models(
    est: Any, X: pd.DataFrame, y: np.ndarray, *, role: str, config: TrainConfig, progress: bool
) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """The K fold models of one model (:class:`prodcat.folds.FoldEnsemble`, training folds weighted by the noise
    cleaning) and their out-of-fold probabilities, from the training cache when the same fit was done before.

    Returns ``(oof (n, C), fitted FoldEnsemble, noise info)``.
    """
    from prodcat.oof import oof_cache_key

    _, weights, info = _cleaning(est, X, y, role=role, config=config, progress=progress)
    desc = f"{role} folds" + ("" if weights is None else " (cleaned)")

    def fit() -> tuple[np.ndarray, Any]:
        ensemble = FoldEnsemble(est, n_splits=config.n_folds, seed=config.seed)
        return ensemble.fit_oof(X, y, sample_weight=weights, progress=progress, desc=desc), ensemble

    proba, fitted = _cached(
        config,
        "folds",
        lambda: oof_cache_key(est, X, y, weights, config.n_folds, config.seed),
        fit,
        lambda res: {"proba": res[0], "skops": np.frombuffer(dumps_estimator(res[1]), dtype=np.uint8)},
        lambda hit: (hit["proba"], loads_estimator(hit["skops"].tobytes(), source="training cache")),
    )
    return proba, fitted, info


def _cached(
    config: TrainConfig,
    namespace: str,
    key_of: Callable[[], str],
    fit: Callable[[], Any],
    encode: Callable[[Any], dict[str, np.ndarray]],
    decode: Callable[[dict[str, np.ndarray]], Any],
) -> Any:
    """``fit()``, or its result from the training cache (``config.cache_dir``) under ``key_of()``.

    ``encode``/``decode`` turn the result into arrays and back; an entry that cannot be decoded is refit and
    stored again (corrupt files are already discarded by :class:`~prodcat.cache.ArrayStore`)."""
    from prodcat.cache import ArrayStore

    store = ArrayStore(config.cache_dir, namespace)
    key = None if store.path is None else key_of()
    hit = None if key is None else store.load(key)
    if hit is not None:
        try:
            return decode(hit)
        except (UnsafeContentError, ValueError, KeyError, TypeError) as e:
            log.warning("training cache (%s): unreadable entry, refitting (%s)", namespace, e)
    result = fit()
    if key is not None:
        store.save(key, **encode(result))
    return result


def _fit(est: Any, X: pd.DataFrame, y: np.ndarray, weights: np.ndarray | None, config: TrainConfig) -> Any:
    """``est`` fitted on ``X, y`` (weighted), reused from the training cache when the same fit was done before.

    Cached under the same key as the OOF probabilities (estimator parameters, data, image file signatures,
    labels, weights), as skops bytes loaded against the bundle's allow-list.
    """
    from prodcat.noise import fit_with_weights
    from prodcat.oof import oof_cache_key

    return _cached(
        config,
        "fit",
        lambda: oof_cache_key(est, X, y, weights, 0, config.seed),
        lambda: fit_with_weights(est, X, y, weights),
        lambda fitted: {"skops": np.frombuffer(dumps_estimator(fitted), dtype=np.uint8)},
        lambda hit: loads_estimator(hit["skops"].tobytes(), source="training cache"),
    )


def _fit_fuser(fuser: Any, X: np.ndarray, y: np.ndarray, config: TrainConfig) -> Any:
    """``fuser`` fitted on the fusion inputs, or its saved state (the bundle's JSON + arrays) from the cache."""
    import joblib

    import prodcat
    from prodcat.fusion import dumps_fuser, loads_fuser

    def encode(fitted: Any) -> dict[str, np.ndarray]:
        meta, arrays = dumps_fuser(fitted)
        return {"meta": np.frombuffer(meta, dtype=np.uint8), "arrays": np.frombuffer(arrays, dtype=np.uint8)}

    def decode(hit: dict[str, np.ndarray]) -> Any:
        return loads_fuser(hit["meta"].tobytes(), hit["arrays"].tobytes())

    return _cached(
        config,
        "fuser-v2",  # entries in the byte encoding of prodcat.fusion.dumps_fuser
        lambda: str(
            joblib.hash((config.fusion.model_dump_json(), X, y.astype(str), config.seed, prodcat.__version__))
        ),
        lambda: fuser.fit(X, y),
        encode,
        decode,
    )


def _check_folds(y_all: np.ndarray, y_train: np.ndarray, config: TrainConfig) -> None:
    """Out-of-fold stages need ``n_folds`` products of each class in the training part (after the validation
    holdout and, with ``fusion_data: holdout``, the fusion's holdout); say so before any model is trained, with
    the catalog's own count next to the training part's."""
    if config.fusion_data != "oof" and not config.noise.enabled:
        return  # no out-of-fold stage
    small, count = smallest_class(y_train)
    if count >= config.n_folds:
        return
    total = int((y_all == small).sum())
    holdout = config.fusion_data == "holdout"
    raise ValueError(
        f"class {small!r} has {count} product(s) in the training part ({total} in the catalog, {total - count} "
        f"held out for validation{' and for the fusion' if holdout else ''}), fewer than n_folds={config.n_folds} "
        "needed for out-of-fold probabilities; lower n_folds or validation_fraction"
        f"{' or fusion_holdout' if holdout else ''} in the config, or add products of that class"
    )


def _check_calibration_folds(y_fuse: np.ndarray, config: TrainConfig) -> None:
    """The calibration stage cross-fits the fuser on its own rows: ``calibration.n_folds`` of each class."""
    if not config.calibration.enabled:
        return
    small, count = smallest_class(y_fuse)
    if count < config.calibration.n_folds:
        raise ValueError(
            f"class {small!r} has {count} product(s) in the rows the fusion learns from, fewer than "
            f"calibration.n_folds={config.calibration.n_folds} needed to calibrate its probabilities; lower "
            "calibration.n_folds, set calibration.enabled: false (every prediction then goes to review), or add "
            "products of that class"
        )


def _adapt_fuser(fuser: Any, y_fuse: np.ndarray, config: TrainConfig) -> list[str]:
    """Let a fuser with its own folds or holdout (``adapt_to_labels``) fit the smallest label set it will be
    trained on: the fusion rows, and with calibration each cross-fitting fold's training part. Returns the
    changes in words (the last, lowest setting per member and parameter)."""
    adapt = getattr(fuser, "adapt_to_labels", None)
    if not callable(adapt):
        return []
    label_sets = []
    if config.calibration.enabled:  # the trust stage fits clones of the fuser on its folds' training parts
        try:
            folds = kfold_indices(y_fuse, n_splits=config.calibration.n_folds, seed=config.seed + 2)
            label_sets = [y_fuse[tr] for tr, _ in folds]
        except ValueError:
            label_sets = []  # too few rows for those folds: the calibration stage says so itself
    notes: dict[str, str] = {}
    for labels in [*label_sets, y_fuse]:
        for note in adapt(labels):
            notes[note.split(" (")[0].rsplit(" ", 1)[0]] = note  # "... lowered to 5 (...)": one per setting
    return list(notes.values())


def _config_error(what: str, e: Exception) -> ValueError:
    """``ValueError`` "config: <what>: <reason>" (a KeyError's reason without the quotes its str() adds)."""
    reason = e.args[0] if isinstance(e, KeyError) and e.args else e
    return ValueError(f"config: {what}: {reason}")


def _checked_model(spec: ModelSpec, role: str, config: TrainConfig) -> Any:
    """The estimator of ``spec``, its parameters checked (``check_params`` where the model has one); a
    ``ValueError`` naming the model for an unknown name or a bad parameter."""
    try:
        return _checked(build_model(spec, modality=role, cache_dir=config.cache_dir, seed=config.seed))
    except (KeyError, TypeError, ValueError) as e:
        raise _config_error(f"{role} model {spec.name!r}", e) from None


def _checked_fuser(config: TrainConfig, n_models: int, n_classes: int) -> Any:
    """The configured fuser (for ``n_classes`` classes), its parameters checked; a ``ValueError`` naming it."""
    try:
        return _checked(build_fuser(config.fusion, n_models=n_models, seed=config.seed, n_classes=n_classes))
    except (KeyError, TypeError, ValueError) as e:
        raise _config_error(f"fusion {config.fusion.method!r}", e) from None


def _checked(est: Any) -> Any:
    """``est`` after its ``check_params()`` (models and fusers that have one check their parameters there)."""
    check = getattr(est, "check_params", None)
    if callable(check):
        check()
    return est


def _taxonomy(df: pd.DataFrame, config: TrainConfig) -> Taxonomy | None:
    from prodcat.catalog import catalog_taxonomy

    cols = config.columns
    return catalog_taxonomy(df, taxonomy_columns=cols.taxonomy_columns, path_separator=cols.path_separator)


def _back_off_thresholds(
    taxonomy: Taxonomy,
    X: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    *,
    fused: np.ndarray | None,
    progress: bool,
) -> np.ndarray:
    """Per-level back-off thresholds learned on out-of-fold fused probabilities ``fused`` (n, C): the
    calibration stage's (issue 17), or, with calibration off, the fuser cross-fitted here on 3 folds of its own
    rows (each fold refits it with the full class list); same bound and confidence as the acceptance rule."""
    cal = config.calibration
    if fused is not None:
        return learn_thresholds(
            fused, y, taxonomy, target_precision=config.target_precision, confidence=cal.confidence_level,
            bound=cal.bound,
        )  # fmt: skip
    from prodcat.config import FusionConfig
    from prodcat.splits import kfold_indices

    classes = taxonomy.leaves
    spec = FusionConfig(
        method=config.fusion.method, params={**config.fusion.params, "classes": list(classes)}
    )
    oof = np.zeros((len(y), len(classes)))
    _log(progress, "[back-off] fuser cross-fitted on 3 folds")
    for tr, te in kfold_indices(y, n_splits=3, seed=config.seed, strict=False):
        fuser = build_fuser(spec, n_models=X.shape[1] // len(classes), seed=config.seed).fit(X[tr], y[tr])
        oof[te] = align_proba(fuser.predict_proba(X[te]), fuser.classes_, classes)
    return learn_thresholds(
        oof, y, taxonomy, target_precision=config.target_precision, confidence=cal.confidence_level,
        bound=cal.bound,
    )  # fmt: skip


#: The fusion of a single model: its own probabilities, unchanged.
PASS_THROUGH = FusionConfig(method="mean", params={"pooling": "linear", "weights": "uniform"})


def _modalities(
    train_df: pd.DataFrame, config: TrainConfig, *, progress: bool
) -> tuple[list[tuple[ModelSpec, str]], dict[str, Any]]:
    """The ``(spec, role)`` of every configured model whose modality has a usable training row, and per
    modality ``{"rows", "share", "models"}`` (``models`` empty when dropped). Raises when nothing is left."""
    from prodcat.catalog import usable_rows

    usable = usable_rows(train_df)
    specs: list[tuple[ModelSpec, str]] = []
    info: dict[str, Any] = {}
    for role, configured in (("text", config.text_models), ("image", config.image_models)):
        rows = int(usable[role].sum())
        info[role] = {"rows": rows, "share": round(rows / max(len(train_df), 1), 4), "models": []}
        if configured and rows == 0:
            msg = (
                f"[{role}] no usable {role} in any of the {len(train_df)} training rows: "
                f"{role} model(s) {', '.join(s.name for s in configured)} not trained"
            )
            log.info(msg)
            _log(progress, msg)
            continue
        specs += [(s, role) for s in configured]
        info[role]["models"] = [s.name for s in configured]
    if not specs:
        configured_roles = [r for r, m in (("text", config.text_models), ("image", config.image_models)) if m]
        raise ValueError(
            f"the catalog has no usable {' or '.join(configured_roles) or 'input'} for the configured models "
            f"(rows with text: {info['text']['rows']}, with an image file: {info['image']['rows']})"
            if configured_roles
            else "the config names no text or image model"
        )
    return specs, info


def train(df: pd.DataFrame, config: TrainConfig, *, progress: bool = True) -> TrainedModel:
    """Train the configured text and image models, the noise cleaning and the fusion on catalog ``df``.

    ``df`` must be labelled (catalog schema). Returns a :class:`TrainedModel` whose ``metrics`` hold the
    validation scores (when ``validation_fraction > 0``), stage wall times and noise counts.
    """
    if df["label"].isna().any():
        raise ValueError("training needs a label for every product")
    y_all = df["label"].astype(str).to_numpy()
    taxonomy = _taxonomy(df, config)  # a catalog whose labels are not a tree fails before any training
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if config.validation_fraction > 0:
        tr_idx, va_idx = holdout_split(y_all, test_size=config.validation_fraction, seed=config.seed)
    else:
        tr_idx, va_idx = np.arange(len(df)), np.array([], dtype=np.int64)
    train_df, y = df.iloc[tr_idx].reset_index(drop=True), y_all[tr_idx]
    classes = np.unique(y)
    fit_idx = fuse_idx = np.arange(len(y))
    if config.fusion_data == "holdout":
        fit_idx, fuse_idx = holdout_split(y, test_size=config.fusion_holdout, seed=config.seed + 1)
    _check_folds(y_all, y[fit_idx], config)  # the rows the out-of-fold stages run on
    _check_calibration_folds(y[fuse_idx], config)
    specs, modalities = _modalities(train_df, config, progress=progress)
    estimators = [_checked_model(spec, role, config) for spec, role in specs]  # config errors before any work
    fuser = _checked_fuser(config, len(specs), len(classes))
    if len(specs) == 1 and config.fusion != PASS_THROUGH:
        _log(
            progress,
            f"[fusion] one model ({specs[0][1]}:{specs[0][0].name}): pass-through, not {config.fusion.method}",
        )
        config = config.model_copy(update={"fusion": PASS_THROUGH.model_copy(deep=True)})
        fuser = _checked_fuser(config, 1, len(classes))
    # A small catalog: the fuser's own folds / holdouts adapt to the rows it will be trained on, before any model
    # is trained (they used to fail after the modality models had trained), and the summary says so.
    fusion_notes = _adapt_fuser(fuser, y[fuse_idx], config)
    for note in fusion_notes:
        log.warning("small catalog: %s", note)
        _log(progress, f"[fusion] small catalog: {note}")
    models, fuse_inputs, noise_info = [], [], {}
    for (spec, role), est in zip(specs, estimators, strict=True):
        t0 = time.perf_counter()
        _log(progress, f"[{role}] {spec.name}")
        try:
            if config.fusion_data == "oof" and not config.refit_full and FoldEnsemble.shares_inputs(est):
                proba, fitted, info = _fold_models(
                    est, train_df, y, role=role, config=config, progress=progress
                )
            elif config.fusion_data == "oof":
                proba, weights, info = _model_oof(
                    est, train_df, y, role=role, config=config, progress=progress
                )
                fitted = _fit(est, train_df, y, weights, config)
            else:
                part = train_df.iloc[fit_idx].reset_index(drop=True)
                _, weights, info = (
                    _model_oof(est, part, y[fit_idx], role=role, config=config, progress=progress)
                    if (config.noise.enabled and role in config.noise.modalities)
                    else (None, None, {})
                )
                fitted = _fit(est, part, y[fit_idx], weights, config)
                proba = fitted.predict_proba(train_df.iloc[fuse_idx].reset_index(drop=True))
        except ValueError as e:  # e.g. a parameter value the model only checks when fitting
            raise ValueError(f"{role} model {spec.name!r}: {e}") from e
        fuse_inputs.append(align_proba(proba, fitted.classes_, classes))
        models.append((spec.name, role, fitted))
        if info:
            noise_info[f"{role}:{spec.name}"] = info
        timings[f"{role}:{spec.name}"] = round(time.perf_counter() - t0, 2)
    X_fuse = np.hstack(fuse_inputs)  # (n, m*C): one copy, shared by every stage below
    del fuse_inputs
    # The calibration stage's fold fusers predict (voting) unless the models were refit: see config.refit_full.
    fold_fusion = config.calibration.enabled and config.fusion_data == "oof" and not config.refit_full
    if not fold_fusion:
        t0 = time.perf_counter()
        _log(progress, f"[fusion] {config.fusion.method} on {len(fuse_idx)} rows x {len(models)} models")
        try:
            fuser = _fit_fuser(fuser, X_fuse, y[fuse_idx], config)
        except ValueError as e:
            raise ValueError(f"fusion {config.fusion.method!r}: {e}") from e
        timings["fusion"] = round(time.perf_counter() - t0, 2)
    model = TrainedModel(classes=classes, models=models, fuser=fuser, config=config)
    model.metrics = {
        "n_train": len(tr_idx),
        "n_validation": len(va_idx),
        "n_classes": len(classes),
        "modalities": modalities,
        "timings_s": timings,
        "noise": noise_info,
        "fusion_adapted": fusion_notes,
    }
    fused: np.ndarray | None = None  # out-of-fold fused probabilities (n_fuse, C), from the calibration stage
    if config.calibration.enabled:
        t0 = time.perf_counter()
        k = config.calibration.n_folds
        _log(
            progress,
            f"[fusion] {config.fusion.method} cross-fitted in {k} folds on {len(fuse_idx)} rows x {len(models)} "
            "models"
            if fold_fusion
            else f"[calibration] {k}-fold cross-fitting of the fusion",
        )
        fuse_df = train_df.iloc[fuse_idx].reset_index(drop=True)
        from prodcat.trust import calibrate_fusion, fold_vote, fused_oof

        try:
            oof, fold_fusers = fused_oof(model, X_fuse, y[fuse_idx], config, cached=_cached)
        except ValueError as e:
            raise ValueError(f"fusion {config.fusion.method!r}: {e}") from e
        if fold_fusion:
            model.fuser = fold_vote(fold_fusers, X_fuse, y[fuse_idx])
            timings["fusion"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
        del fold_fusers
        _log(
            progress, "[calibration] temperatures and acceptance rules on the out-of-fold fused probabilities"
        )
        model.calibration, model.metrics["calibration"] = calibrate_fusion(
            model, X_fuse, y[fuse_idx], fuse_df, config, cached=_cached, oof=oof
        )
        timings["calibration"] = round(time.perf_counter() - t0, 2)
        fused = oof[""][0]
        del oof  # the blanked variants' (n, C) probabilities are not needed any more
    if taxonomy is not None:  # back-off thresholds on the same out-of-fold fused probabilities
        t0 = time.perf_counter()
        model.taxonomy = taxonomy.subset(classes)
        model.thresholds = _back_off_thresholds(
            model.taxonomy, X_fuse, y[fuse_idx], config, fused=fused, progress=progress
        )
        timings["back_off"] = round(time.perf_counter() - t0, 2)
    del X_fuse, fused
    timings["total"] = round(time.perf_counter() - start, 2)
    if len(va_idx):
        val_df = df.iloc[va_idx].reset_index(drop=True)
        scored = model.outputs(val_df)  # one pass of the stack for both scores
        model.metrics["validation"] = evaluate_models(model, val_df, y_all[va_idx], outputs=scored)
        if model.calibration is not None:
            from prodcat.trust_report import score_trust, trust_inputs

            scores = score_trust(model, *trust_inputs(model, val_df, scored), y_all[va_idx])
            model.metrics["validation"]["acceptance"] = scores.get("acceptance")
            model.metrics["validation"]["calibration"] = {
                k: scores[k] for k in ("before", "after", "coverage_at")
            }
    return model
