"""The review queue: which products a person should look at, and fast filtered, sorted pages of it.

:func:`build_queue` (pure: DataFrames in, DataFrame out) joins the catalog, the model's predictions
(:meth:`prodcat.predict.Predictor.predict_frame` with ``models=True``) and, optionally, an audit's
``issues.csv``. A product is queued for a reason: ``mislabel`` (the audit flags its label) and/or ``review``
(its prediction's decision is ``review``: below the confidence the model may accept on its own). For a
suspected mislabel the suggestion and what each source says come from the audit (out-of-fold probabilities:
the bundle itself was trained on these labels); otherwise from the model.

:class:`QueueView` keeps the queue as numpy arrays (label codes, reason bits, confidence, decision status) and
one precomputed order per sort key, so a page of a filtered, sorted queue costs one boolean gather over the
queue (about a millisecond at 100k products) plus the page's own rows; nothing is re-sorted per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from prodcat.review.decisions import Decision

REASONS = ("mislabel", "review")  # bit 0, bit 1 of ``reasons``
STATUSES = ("pending", "skipped", "decided")  # codes 0, 1, 2
SORTS = ("queue", "confidence", "-confidence")
_TEXT_PREVIEW = 600


@dataclass
class Queue:
    """Output of :func:`build_queue`.

    ``items`` (one row per queued product, in queue order): ``id``, ``title``, ``description``, ``given_label``
    (None for an unlabelled product), ``suggestion``, ``confidence``, ``reasons`` (bit mask over
    :data:`REASONS`), ``audit_rank`` (0 when not flagged), and per source ``<source>_label`` /
    ``<source>_conf`` (None / NaN where that source has nothing to say). ``images``: product id -> the
    catalog's image (path or None), kept on the server, never sent. ``classes``: every label a reviewer may
    choose. ``sources``: the source names, in column order.
    """

    items: pd.DataFrame
    images: dict[str, Any]
    classes: list[str]
    sources: list[str]


def _audit_sources(issues: pd.DataFrame) -> list[str]:
    return [c[: -len("_given_conf")] for c in issues.columns if c.endswith("_given_conf")]


def build_queue(
    catalog: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    sources: Sequence[str],
    classes: Sequence[str],
    issues: pd.DataFrame | None = None,
) -> Queue:
    """The review queue of ``catalog`` (catalog schema).

    Parameters
    ----------
    predictions : one row per catalog product, same order: ``id``, ``label``, ``confidence``, ``decision`` and
        ``<source>_label`` / ``<source>_probability`` for every name of ``sources``.
    classes : the model's classes (the catalog's own labels are added for the relabel choices).
    issues : an audit's ``issues.csv``, read as strings or typed (``id``, ``rank``, ``suggested_label``, ``suggested_conf``, per source
        ``<s>_label`` / ``<s>_conf`` / ``<s>_given_conf``); every id must be in the catalog.

    Queue order: suspected mislabels by audit rank, then the other ``review`` products, least confident first.
    """
    ids = catalog["id"].astype(str).to_numpy()
    if len(predictions) != len(catalog) or (predictions["id"].astype(str).to_numpy() != ids).any():
        raise ValueError("predictions must have one row per catalog product, in the catalog's order")
    position = {pid: i for i, pid in enumerate(ids)}
    n = len(ids)
    reasons = np.where(predictions["decision"].to_numpy() == "review", 2, 0).astype(np.uint8)
    rank = np.zeros(n, dtype=np.int64)
    suggestion = predictions["label"].astype(str).to_numpy(dtype=object)
    confidence = predictions["confidence"].to_numpy(dtype=np.float64).copy()
    said: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in sources:
        said[s] = (
            predictions[f"{s}_label"].astype(str).to_numpy(dtype=object),
            predictions[f"{s}_probability"].to_numpy(dtype=np.float64).copy(),
        )
    if issues is not None and len(issues):
        rows = _audit_rows(issues, position)
        reasons[rows] |= 1
        rank[rows] = issues["rank"].astype(np.int64).to_numpy()
        suggestion[rows] = issues["suggested_label"].astype(str).to_numpy()
        confidence[rows] = issues["suggested_conf"].astype(np.float64).to_numpy()
        for s in said:  # the audit's sources replace the model's on its rows
            said[s][0][rows], said[s][1][rows] = None, np.nan
        for s in _audit_sources(issues):
            labels, conf = said.setdefault(s, (np.full(n, None, dtype=object), np.full(n, np.nan)))
            labels[rows] = issues[f"{s}_label"].astype(str).to_numpy()
            conf[rows] = issues[f"{s}_conf"].astype(np.float64).to_numpy()
    keep = np.flatnonzero(reasons)
    flagged = rank[keep] > 0
    keep = keep[np.lexsort((confidence[keep], np.where(flagged, rank[keep], 0), ~flagged))]
    given = catalog["label"] if "label" in catalog else pd.Series([None] * n)
    items = pd.DataFrame(
        {
            "id": ids[keep],
            "title": catalog["title"].fillna("").astype(str).to_numpy()[keep],
            "description": [
                str(d)[:_TEXT_PREVIEW] for d in catalog["description"].fillna("").to_numpy()[keep]
            ],
            "given_label": [None if pd.isna(v) else str(v) for v in given.to_numpy()[keep]],
            "suggestion": suggestion[keep],
            "confidence": confidence[keep],
            "reasons": reasons[keep],
            "audit_rank": rank[keep],
        }
    )
    for s, (labels, conf) in said.items():
        items[f"{s}_label"], items[f"{s}_conf"] = labels[keep], conf[keep]
    images = catalog["image"].to_numpy()[keep] if "image" in catalog else [None] * len(keep)
    catalog_labels = {str(v) for v in given.dropna()}
    return Queue(
        items=items,
        images=dict(zip(items["id"], images, strict=True)),
        classes=sorted({*map(str, classes), *catalog_labels}),
        sources=list(said),
    )


def _audit_rows(issues: pd.DataFrame, position: dict[str, int]) -> np.ndarray:
    if "id" not in issues.columns:
        raise ValueError("the audit's issues.csv has no id column (audit the catalog with `prodcat audit`)")
    ids = issues["id"].astype(str).tolist()
    rows = [position.get(i, -1) for i in ids]
    missing = [i for i, r in zip(ids, rows, strict=True) if r < 0]
    if missing:
        raise ValueError(
            f"{len(missing)} of the audit's {len(ids)} flagged ids are not in the catalog (e.g. "
            f"{', '.join(missing[:3])}): was the audit run on another catalog or id column?"
        )
    return np.asarray(rows, dtype=np.int64)


class QueueView:
    """Filtered, sorted pages of a :class:`Queue`, and each product's decision in effect.

    Not thread-safe on its own: the server calls it under one lock.
    """

    def __init__(self, queue: Queue, decisions: Mapping[str, Decision] | None = None) -> None:
        items = queue.items
        self.queue = queue
        self.cols = {c: items[c].to_numpy() for c in items.columns}  # per-row reads without pandas indexing
        self.ids = items["id"].to_numpy()
        self.row_of = {pid: i for i, pid in enumerate(self.ids)}
        self.labels = np.asarray(queue.classes, dtype=object)
        code = {c: i for i, c in enumerate(queue.classes)}
        self.given = np.array([code.get(v, -1) if v is not None else -1 for v in items["given_label"]])
        self.suggested = np.array([code.get(v, -1) for v in items["suggestion"]])
        self.reasons = items["reasons"].to_numpy(dtype=np.uint8)
        self.status = np.zeros(len(items), dtype=np.int8)
        conf = items["confidence"].to_numpy(dtype=np.float64)
        ascending = np.argsort(np.nan_to_num(conf, nan=-1.0), kind="stable")
        self.orders = {
            "queue": np.arange(len(items)),
            "confidence": ascending,
            "-confidence": ascending[::-1],
        }
        self.current: dict[str, Decision] = {}
        for d in (decisions or {}).values():
            self.record(d)

    def record(self, decision: Decision | None, pid: str | None = None) -> None:
        """Set the decision in effect on a product (``None``: back to pending); products outside the queue are
        remembered but change no page."""
        pid = decision.id if decision is not None else pid
        assert pid is not None
        if decision is None:
            self.current.pop(pid, None)
        else:
            self.current[pid] = decision
        row = self.row_of.get(pid)
        if row is not None:
            self.status[row] = 0 if decision is None else 1 if decision.action == "skip" else 2

    def select(
        self,
        *,
        label: str | None = None,
        suggested: str | None = None,
        reason: str | None = None,
        status: str | None = "pending",
        sort: str = "queue",
    ) -> np.ndarray:
        """Queue rows matching every given filter, in ``sort`` order (:data:`SORTS`); ``None`` filters nothing.
        Raises ``ValueError`` for an unknown label, reason, status or sort."""
        if sort not in self.orders:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        mask = np.ones(len(self.ids), dtype=bool)
        for value, codes in ((label, self.given), (suggested, self.suggested)):
            if value is not None:
                mask &= codes == self._code(value)
        if reason is not None:
            if reason not in REASONS:
                raise ValueError(f"reason must be one of {', '.join(REASONS)}, not {reason!r}")
            mask &= (self.reasons & (1 << REASONS.index(reason))) != 0
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
            mask &= self.status == STATUSES.index(status)
        order = self.orders[sort]
        return order[mask[order]]

    def _code(self, label: str) -> int:
        codes = np.flatnonzero(self.labels == label)
        if not len(codes):
            raise ValueError(f"unknown class {label!r}")
        return int(codes[0])

    def item(self, row: int) -> dict[str, Any]:
        """The JSON-ready record of queue row ``row`` with its decision in effect."""
        rec = {c: v[row] for c, v in self.cols.items()}
        said = []
        for s in self.queue.sources:
            lab, conf = rec[f"{s}_label"], rec[f"{s}_conf"]
            if lab is not None and not pd.isna(lab):
                said.append({"source": s, "label": str(lab), "confidence": _number(conf)})
        pid = str(rec["id"])
        d = self.current.get(pid)
        return {
            "id": pid,
            "title": rec["title"],
            "description": rec["description"],
            "given_label": rec["given_label"],
            "suggestion": rec["suggestion"],
            "confidence": _number(rec["confidence"]),
            "reasons": [r for i, r in enumerate(REASONS) if int(rec["reasons"]) & (1 << i)],
            "audit_rank": int(rec["audit_rank"]) or None,
            "said": said,
            "has_image": self.queue.images.get(pid) is not None,
            "decision": None if d is None else decision_json(d),
        }

    def counts(self) -> dict[str, int]:
        """Products per status and in all."""
        per = np.bincount(self.status, minlength=len(STATUSES))
        return {"total": len(self.ids), **{s: int(per[i]) for i, s in enumerate(STATUSES)}}


def decision_json(d: Decision) -> dict[str, Any]:
    """A decision as the API returns it."""
    return {k: v for k, v in d.row().items()} | {"line": d.line}


def _number(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def predict_catalog(
    predictor: Any, catalog: pd.DataFrame, *, chunk_size: int = 2048, progress: bool = True
) -> pd.DataFrame:
    """``predictor.predict_frame(..., models=True)`` over ``catalog`` in chunks of ``chunk_size`` rows (one
    chunk of images in memory at a time): the ``predictions`` of :func:`build_queue`."""
    from tqdm.auto import tqdm

    starts = range(0, len(catalog), max(1, chunk_size))
    parts = [
        predictor.predict_frame(catalog.iloc[i : i + chunk_size], top_k=1, models=True)
        for i in tqdm(starts, desc="predicting", unit="chunk", disable=not progress, leave=False)
    ]
    return pd.concat(parts, ignore_index=True) if parts else predictor.predict_frame(catalog, models=True)
