"""Prediction with a loaded bundle: one frame at a time (:class:`Predictor`) or a whole catalog streamed in chunks
to CSV / Parquet (:func:`batch_predict`).

Rows with an unreadable image or empty text still get a prediction from the modality that remains (the missing
one contributes its class prior), and are flagged in ``text_available`` / ``image_available``. A model trained
on a text-only (image-only) catalog reads no image (text): its ``image_available`` (``text_available``) is False
and ``image_error`` says the model has no image model; images are then not opened at all.

Every row also gets ``confidence`` (the calibrated probability of its label, scaled with the temperature of its
availability group: a product without its photo is scaled as such) and ``decision``: ``auto`` when the bundle's
acceptance rule lets it through at the trained target precision, else ``review`` (see :mod:`prodcat.trust`).
A bundle trained without calibration reports the fused probability as ``confidence`` and sends every row to
``review``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prodcat.clean import clean_text
from prodcat.ensemble import labels_and_proba
from prodcat.folds import set_runtime
from prodcat.model import TrainedModel
from prodcat.oof import align_proba
from prodcat.probability import top_k_indices

NO_IMAGE_MODEL = "not used: the model has no image model"


class Predictor:
    """A trained model ready to predict. Built by :func:`prodcat.bundle.load_bundle`.

    Parameters
    ----------
    model : the loaded :class:`~prodcat.model.TrainedModel`.
    manifest : the bundle manifest (exposed, trimmed, as ``metadata``).
    cache_dir : embedding cache for prediction; None (default) computes embeddings without storing them.
    """

    def __init__(
        self, model: TrainedModel, manifest: dict[str, Any], *, cache_dir: str | None = None
    ) -> None:
        self.model = model
        self.classes = [str(c) for c in model.classes]
        self.metadata = {
            "prodcat_version": manifest.get("versions", {}).get("prodcat"),
            "created": manifest.get("created"),
            "classes": self.classes,
            "models": [{k: e[k] for k in ("name", "role")} for e in manifest.get("models", [])],
            "fusion": manifest.get("fusion"),
            "metrics": manifest.get("metrics", {}).get("validation"),
            "target_precision": None if model.calibration is None else model.calibration.target_precision,
        }
        for _, _, est in model.models:
            set_runtime(est, cache_dir=cache_dir, progress=False)

    def roles(self) -> set[str]:
        """Modalities the model uses."""
        return {role for _, role, _ in self.model.models}

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """(n, C) fused probabilities, columns in ``classes`` order."""
        return self.model.predict_proba(_schema(df))

    def sources(self) -> list[str]:
        """One name per modality model, in the bundle's order: its role (``text``, ``image``), or
        ``role:name`` when the bundle has several models of that role."""
        roles = [role for _, role, _ in self.model.models]
        return [role if roles.count(role) == 1 else f"{role}:{name}" for name, role, _ in self.model.models]

    def predict_frame(self, df: pd.DataFrame, *, top_k: int = 5, models: bool = False) -> pd.DataFrame:
        """One row per product: ``id, label, probability, top_labels, top_probabilities, text_available,
        image_available, image_error``. ``df``: catalog schema; ``image`` holds bytes, a path or None.
        With ``models``, also what each modality model says: ``<source>_label`` and ``<source>_probability``
        for every name of :meth:`sources`."""
        df = _schema(df)
        probas, masks = self.model.model_probas_with_masks(df)
        X = np.hstack(probas)
        labels, proba = labels_and_proba(self.model.fuser, X)
        fused = align_proba(proba, self.model.fuser.classes_, self.model.classes)
        labels = labels.astype(str)
        k = max(1, min(top_k, len(self.classes)))
        top = top_k_indices(fused, k)
        classes = np.asarray(self.classes)
        roles = self.roles()
        text_ok = np.array(
            [
                "text" in roles and bool(clean_text(t) or clean_text(d))
                for t, d in zip(df["title"], df["description"], strict=True)
            ],
            dtype=bool,
        )
        image_masks = [
            m
            for (_, role, _), m in zip(self.model.models, masks, strict=True)
            if role == "image" and m is not None
        ]
        if "image" in roles:
            image_ok, image_err = _image_status(df["image"].tolist(), known_ok=_any(image_masks))
        else:  # a text-only model: images are not read
            image_ok, image_err = np.zeros(len(df), dtype=bool), [NO_IMAGE_MODEL] * len(df)
        label_idx = (
            np.searchsorted(classes, labels)
            if (np.sort(classes) == classes).all()
            else np.array([self.classes.index(lab) for lab in labels])
        )
        confidence, accepted = self._trust(fused, label_idx, text_ok, image_ok)
        out = pd.DataFrame(
            {
                "id": df["id"].astype(str).to_numpy(),
                "label": labels,
                "probability": fused[np.arange(len(df)), label_idx],
                "confidence": confidence,
                "decision": np.where(accepted, "auto", "review"),
                "top_labels": [list(classes[row]) for row in top],
                "top_probabilities": [[float(v) for v in fused[i, row]] for i, row in enumerate(top)],
                "text_available": text_ok,
                "image_available": image_ok,
                "image_error": image_err,
            }
        )
        if models:
            for source, p in zip(self.sources(), probas, strict=True):
                best = p.argmax(axis=1)  # (n,) in classes order, like fused
                out[f"{source}_label"] = classes[best]
                out[f"{source}_probability"] = p[np.arange(len(p)), best]
        if self.model.taxonomy is not None:
            out = _with_path(out, self.model, fused, label_idx)
        return out

    def _trust(
        self, fused: np.ndarray, label_idx: np.ndarray, text_ok: np.ndarray, image_ok: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n,) calibrated confidence of the predicted labels and (n,) bool auto-accepted."""
        from prodcat.trust import availability_groups

        calibration = self.model.calibration
        if calibration is None:
            return fused[np.arange(len(fused)), label_idx], np.zeros(len(fused), dtype=bool)
        roles = self.roles()
        available = {r: ok for r, ok in (("text", text_ok), ("image", image_ok)) if r in roles}
        groups = availability_groups(available, len(fused))
        _, confidence, accepted = calibration.apply(fused, label_idx, groups)
        return confidence, accepted


def _with_path(out: pd.DataFrame, model: TrainedModel, fused: np.ndarray, leaf: np.ndarray) -> pd.DataFrame:
    """Add ``path`` (per level, coarse to fine: ``{"level", "label", "probability"}`` of the predicted leaf's
    ancestor; a parent's probability is the sum of its leaves') and, with back-off thresholds, ``decided_level``
    (level name, or None when no level meets the target precision) and ``decided_label``."""
    from prodcat.taxonomy import back_off

    tax = model.taxonomy
    assert tax is not None
    probs = tax.path_proba(fused, leaf)  # (n, L)
    names = tax.paths[leaf]  # (n, L)
    out["path"] = pd.Series(
        [
            [
                {"level": lvl, "label": str(lab), "probability": float(p)}
                for lvl, lab, p in zip(tax.levels, r, q, strict=True)
            ]
            for r, q in zip(names, probs, strict=True)
        ],
        index=out.index,
        dtype=object,
    )
    if model.thresholds is not None:
        level, label = back_off(fused, tax, model.thresholds, leaf=leaf)
        out["decided_level"] = [tax.levels[j] if j >= 0 else None for j in level]
        out["decided_label"] = label
    return out


def warm_up(predictor: Any) -> None:
    """One text-only and one image-only prediction, so that lazy initialisation (text encoders, the ONNX
    session) happens now and not inside the first batch or request. ``predictor``: anything with
    ``predict_frame`` (a :class:`Predictor`)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 120, 40)).save(buf, format="PNG")
    frame = pd.DataFrame(
        {"id": ["warm-up-text", "warm-up-image"], "title": ["warm-up", ""], "description": ["", ""],
         "image": [None, buf.getvalue()]}
    )  # fmt: skip
    predictor.predict_frame(frame, top_k=1)


def _schema(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col, default in (("title", ""), ("description", ""), ("image", None)):
        if col not in out:
            out[col] = default
    if "id" not in out:
        out["id"] = [str(i) for i in range(len(out))]
    out["title"] = out["title"].fillna("")
    out["description"] = out["description"].fillna("")
    return out.reset_index(drop=True)


def _any(masks: list[np.ndarray]) -> np.ndarray | None:
    return np.logical_or.reduce(masks) if masks else None


def _image_status(
    items: list[Any], *, known_ok: np.ndarray | None = None
) -> tuple[np.ndarray, list[str | None]]:
    """Per image: usable, and why not. ``known_ok`` (the image encoders' own mask, when there is one) marks
    decoded images, which are not opened again; the images it marks as failed (rare) are decoded once more
    for the reason (truncated, corrupt, ...). Without it, a header-level probe decides (cheap, but a file whose
    pixel data is cut short passes)."""
    from prodcat.image.decode import decode_image, probe_image

    ok = np.zeros(len(items), dtype=bool)
    errors: list[str | None] = []
    for i, item in enumerate(items):
        if known_ok is not None and known_ok[i]:
            ok[i] = True
            errors.append(None)
            continue
        if item is None or (isinstance(item, float) and np.isnan(item)):
            errors.append("no image")
            continue
        reason: str | None
        if known_ok is not None:
            good, reason = False, decode_image(item).reason or "not usable by the image model"
        else:
            good, _, reason = probe_image(item)
        ok[i] = good
        errors.append(None if good else reason)
    return ok, errors


def flatten(pred: pd.DataFrame) -> pd.DataFrame:
    """Top-k lists as columns ``top1_label, top1_probability, ...`` and a taxonomy path as ``<level>,
    <level>_probability`` per level above the leaf (for CSV and Parquet files)."""
    out = pred.drop(columns=["top_labels", "top_probabilities", "path"], errors="ignore")
    out["image_error"] = out["image_error"].astype("string")  # stable type even for an all-None chunk
    for col in ("decided_level", "decided_label"):
        if col in out:
            out[col] = out[col].astype("string")
    if "path" in pred and len(pred):  # one label and one probability column per level above the leaf
        first: list[dict[str, Any]] = pred["path"].tolist()[0]
        for j, step in enumerate(first[:-1]):
            out[step["level"]] = [p[j]["label"] for p in pred["path"]]
            out[f"{step['level']}_probability"] = [p[j]["probability"] for p in pred["path"]]
    k = max((len(v) for v in pred["top_labels"]), default=0)
    for j in range(k):
        out[f"top{j + 1}_label"] = [v[j] if j < len(v) else None for v in pred["top_labels"]]
        out[f"top{j + 1}_probability"] = [v[j] if j < len(v) else None for v in pred["top_probabilities"]]
    return out


def batch_predict(
    predictor: Predictor,
    catalog: pd.DataFrame | Iterable[pd.DataFrame],
    out_file: str | Path,
    *,
    chunk_size: int = 2048,
    top_k: int = 3,
    progress: bool = True,
    review_queue: str | Path | None = None,
    total: int | None = None,
) -> dict[str, int]:
    """Predict a catalog chunk by chunk, appending each chunk to ``out_file`` (.csv or .parquet) as it is done.

    ``catalog``: a catalog-schema DataFrame (cut into ``chunk_size`` rows), or any iterable of such frames (a
    :class:`prodcat.stream.CatalogStream`: then memory holds one batch whatever the catalog's size; ``total``
    rows, when known, sizes the progress bar, which shows rows done and the rate). ``review_queue`` (.csv or
    .parquet): also write the ``review`` rows there, ordered by :func:`prodcat.trust.review_order` (written once
    every chunk is done: the order is global; the rows wait in a spill file, see :mod:`prodcat.writers`).
    Returns counts: rows, rows without text / without image (for the modalities the model reads),
    auto-accepted rows, rows to review.
    """
    from prodcat.writers import ReviewSpill, TableWriter, check_output

    out = check_output(out_file)
    spill = None if review_queue is None else ReviewSpill(review_queue)
    if isinstance(catalog, pd.DataFrame):
        total = len(catalog) if total is None else total
        chunks: Iterable[pd.DataFrame] = (
            catalog.iloc[start : start + chunk_size] for start in range(0, len(catalog), chunk_size)
        )
    else:
        chunks = catalog
    counts = {"rows": 0} | {f"no_{role}": 0 for role in ("text", "image") if role in predictor.roles()}
    counts |= {"auto": 0, "review": 0}
    try:
        with (
            TableWriter(out) as writer,
            tqdm(total=total, desc="predict", unit=" products", disable=not progress) as bar,
        ):
            for frame in chunks:
                chunk = flatten(predictor.predict_frame(frame, top_k=top_k))
                _count(counts, chunk)
                if spill is not None:
                    spill.add(chunk)
                writer.write(chunk)
                bar.update(len(chunk))
            # an empty catalog still gets a (header-only) file
            writer.commit(
                empty=None if writer.rows else flatten(predictor.predict_frame(_EMPTY, top_k=top_k))
            )
    except BaseException:
        if spill is not None:
            spill.discard()
        raise
    if spill is not None:
        spill.write(_class_counts(predictor))
    return counts


_EMPTY = pd.DataFrame({"id": [], "title": [], "description": [], "image": []}, dtype=object)


def _count(counts: dict[str, int], chunk: pd.DataFrame) -> None:
    counts["rows"] += len(chunk)
    for role in ("text", "image"):
        if f"no_{role}" in counts:
            counts[f"no_{role}"] += int((~chunk[f"{role}_available"]).sum())
    counts["auto"] += int((chunk["decision"] == "auto").sum())
    counts["review"] += int((chunk["decision"] == "review").sum())


def _class_counts(predictor: Predictor) -> dict[str, int]:
    calibration = predictor.model.calibration
    return {} if calibration is None else calibration.class_counts
