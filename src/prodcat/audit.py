"""Multimodal label audit: which products are probably filed in the wrong category, and what each modality says.

:func:`audit_labels` runs confident learning (:mod:`prodcat.noise`) on the out-of-sample probabilities of every
source (e.g. ``{"text": ..., "image": ..., "fusion": ...}``) and returns an :class:`AuditResult`:

- ``issues``: one row per flagged product, most likely mislabelled first, with the given label, the label each
  source suggests with its confidence, which sources flag it, and whether the sources disagree;
- ``per_class``: flagged counts and cleanlab's estimated noise rate per class;
- ``confusions``: the estimated (given label -> likely true label) pairs, largest first;
- ``summary``: headline counts.

:func:`write_audit` saves CSVs, ``summary.json`` and a static, offline HTML review page (``review.html``, no CDN,
client-side paging and sorting) with product thumbnails; it is the only function here that touches files. The page
is the Jinja2 template ``report_templates/audit.html`` (its product rows are shared with the evaluation report's
gallery, see :mod:`prodcat.pages`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodcat.noise import LabelIssues, check_proba, encode_labels, find_label_issues, present_classes

COMBINED = ("any", "all")  # flag_on values that combine the sources instead of naming one
_TEXT_PREVIEW = 300


@dataclass
class AuditResult:
    """Output of :func:`audit_labels`.

    ``issues`` (one row per flagged product, most suspicious first): ``rank``, ``position`` (0-based row in the
    audited data), ``id``/``title``/``description``/``image`` when products were given, ``given_label``,
    ``suggested_label``/``suggested_conf``/``given_conf`` from the ``flag_on`` probabilities, ``quality`` (the
    ranking score, low = suspicious), ``flagged_by`` (";"-joined sources), ``<source>_label``/``_conf``/
    ``_given_conf`` for every source, ``modalities_disagree`` (the sources suggest different labels).
    ``per_class``, ``confusions``, ``summary``: see the module docstring. ``sources``: the source names in order.
    """

    issues: pd.DataFrame
    per_class: pd.DataFrame
    confusions: pd.DataFrame
    summary: dict[str, Any]
    sources: list[str]


def _product_columns(products: pd.DataFrame | None, rows: np.ndarray) -> dict[str, Any]:
    if products is None:
        return {}
    cols: dict[str, Any] = {}
    for name in ("id", "title", "description", "image"):
        if name in products.columns:
            values = products[name].iloc[rows].tolist()
            if name == "description":
                values = [str(v)[:_TEXT_PREVIEW] if isinstance(v, str) else "" for v in values]
            cols[name] = values
    return cols


def _per_class(
    labels_idx: np.ndarray, proba: np.ndarray, mask: np.ndarray, suggested: np.ndarray, classes: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-class table and off-diagonal confusions from cleanlab's estimated joint P(given, true)."""
    from cleanlab.count import estimate_joint

    kept, y, q = present_classes(labels_idx, proba)
    n = len(y)
    joint = np.zeros((len(classes), len(classes)))
    joint[np.ix_(kept, kept)] = estimate_joint(labels=y, pred_probs=q) if len(kept) > 1 else 1.0
    given_mass, true_mass = joint.sum(axis=1), joint.sum(axis=0)
    diag = np.diag(joint)
    counts = np.bincount(labels_idx, minlength=len(classes))
    flagged = np.bincount(labels_idx[mask], minlength=len(classes))
    top = []
    for k in range(len(classes)):
        s = suggested[mask & (labels_idx == k)]
        top.append(str(classes[np.bincount(s).argmax()]) if s.size else "")
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = pd.DataFrame(
            {
                "label": classes.astype(str),
                "n_products": counts,
                "n_flagged": flagged,
                "flagged_rate": np.where(counts > 0, flagged / np.maximum(counts, 1), 0.0),
                "est_label_issues": np.rint((given_mass - diag) * n).astype(int),
                "est_noise_rate": np.where(given_mass > 0, 1 - diag / given_mass, 0.0),
                "est_inverse_noise_rate": np.where(true_mass > 0, 1 - diag / true_mass, 0.0),
                "most_suggested": top,
            }
        )
    per_class = per_class.sort_values(["est_noise_rate", "n_flagged"], ascending=False, kind="stable")
    g, t = np.nonzero(joint * n >= 0.5)
    off = g != t
    pair_flagged = np.zeros_like(joint, dtype=np.int64)
    np.add.at(pair_flagged, (labels_idx[mask], suggested[mask]), 1)
    confusions = pd.DataFrame(
        {
            "given_label": classes[g[off]].astype(str),
            "likely_label": classes[t[off]].astype(str),
            "est_count": np.rint(joint[g[off], t[off]] * n).astype(int),
            "n_flagged": pair_flagged[g[off], t[off]],
        }
    ).sort_values(["est_count", "n_flagged"], ascending=False, kind="stable")
    return per_class.reset_index(drop=True), confusions.reset_index(drop=True)


def audit_labels(
    labels: Sequence[Any] | np.ndarray,
    probas: Mapping[str, np.ndarray],
    *,
    classes: Sequence[Any] | np.ndarray | None = None,
    flag_on: str = "fusion",
    filter_by: str = "prune_by_noise_rate",
    rank_by: str = "self_confidence",
    products: pd.DataFrame | None = None,
) -> AuditResult:
    """Confident-learning audit of ``labels`` against the out-of-sample probabilities of several sources.

    Parameters
    ----------
    labels : (n,) given labels.
    probas : source name -> (n, C) out-of-sample probabilities in ``classes`` order, e.g. ``{"text": ...,
        "image": ..., "fusion": ...}``.
    classes : (C,) column labels; default ``np.unique(labels)``.
    flag_on : the source whose issues are reported (default ``"fusion"``), or ``"any"`` (flagged by at least one
        source) / ``"all"`` (by every source); these two rank by the mean quality score and suggest the argmax
        of the mean probabilities.
    filter_by, rank_by : cleanlab methods, see :data:`prodcat.noise.FILTERS` / :data:`prodcat.noise.RANKINGS`.
    products : optional (n,) catalog rows in the same order; ``id``, ``title``, ``description`` and ``image``
        are copied into the issues table.
    """
    if not probas:
        raise ValueError("probas is empty: give at least one source of probabilities")
    if flag_on not in probas and flag_on not in COMBINED:
        raise ValueError(f"flag_on must be one of {[*probas, *COMBINED]}, not {flag_on!r}")
    classes = np.unique(np.asarray(labels)) if classes is None else np.asarray(classes)
    sources = list(probas)
    p = {s: check_proba(probas[s], len(labels)) for s in sources}
    found: dict[str, LabelIssues] = {
        s: find_label_issues(labels, p[s], classes=classes, filter_by=filter_by, rank_by=rank_by)
        for s in sources
    }
    given = encode_labels(labels, classes)
    if flag_on in COMBINED:
        masks = np.stack([found[s].mask for s in sources])  # (m, n)
        mask = np.asarray(masks.any(axis=0) if flag_on == "any" else masks.all(axis=0))
        quality = np.mean([found[s].quality for s in sources], axis=0)
        primary = np.mean([p[s] for s in sources], axis=0)
    else:
        mask, quality, primary = found[flag_on].mask, found[flag_on].quality, p[flag_on]
    flagged = np.flatnonzero(mask)
    ranked = flagged[np.argsort(quality[flagged], kind="stable")]
    suggested = primary.argmax(axis=1)

    table: dict[str, Any] = {"rank": np.arange(1, len(ranked) + 1), "position": ranked}
    table.update(_product_columns(products, ranked))
    table["given_label"] = classes[given[ranked]].astype(str)
    table["suggested_label"] = classes[suggested[ranked]].astype(str)
    table["suggested_conf"] = primary[ranked, suggested[ranked]]
    table["given_conf"] = primary[ranked, given[ranked]]
    table["quality"] = quality[ranked]
    table["flagged_by"] = [";".join(s for s in sources if found[s].mask[r]) for r in ranked]
    for s in sources:
        sug = found[s].suggested[ranked]
        table[f"{s}_label"] = classes[sug].astype(str)
        table[f"{s}_conf"] = p[s][ranked, sug]
        table[f"{s}_given_conf"] = p[s][ranked, given[ranked]]
    suggestions = np.stack([found[s].suggested[ranked] for s in sources]) if len(ranked) else np.zeros((1, 0))
    table["modalities_disagree"] = (suggestions != suggestions[:1]).any(axis=0)
    issues = pd.DataFrame(table)

    per_class, confusions = _per_class(given, primary, mask, suggested, classes)
    summary: dict[str, Any] = {
        "n_products": len(given),
        "n_classes": len(classes),
        "n_flagged": len(ranked),
        "flagged_rate": len(ranked) / max(len(given), 1),
        "flag_on": flag_on,
        "filter_by": filter_by,
        "rank_by": rank_by,
        "sources": sources,
        "flagged_per_source": {s: found[s].n_issues for s in sources},
        "flagged_by_every_source": int(np.stack([found[s].mask for s in sources]).all(axis=0).sum()),
        "flagged_and_sources_disagree": int(issues["modalities_disagree"].sum()),
        "est_label_issues": int(per_class["est_label_issues"].sum()),
        "accuracy_per_source": {s: float((found[s].suggested == given).mean()) for s in sources},
    }
    return AuditResult(
        issues=issues, per_class=per_class, confusions=confusions, summary=summary, sources=sources
    )


def _plain(v: Any) -> Any:
    """Template-safe Python value: numpy scalars unboxed, NaN/NA -> None."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
        return None
    return v


def render_review_page(
    result: AuditResult, *, thumbs: Sequence[str | None] | None = None, title: str = "prodcat label audit"
) -> str:
    """The static HTML review page for ``result`` as a string (``report_templates/audit.html``).

    ``thumbs`` : one image ``src`` per issues row (a relative path or a ``data:`` URI), or None for no image.
    """
    from prodcat.pages import render

    records = [{k: _plain(v) for k, v in rec.items()} for rec in result.issues.to_dict(orient="records")]
    for i, rec in enumerate(records):
        for c in ("id", "title", "description"):
            rec[c] = "" if rec.get(c) is None else str(rec[c])
        rec["thumb"] = thumbs[i] if thumbs is not None else None
    return render(
        "audit.html",
        title=title,
        s=result.summary,
        rows=records,
        sources=result.sources,
        per_class=result.per_class,
        confusions=result.confusions,
    )


def write_audit(
    result: AuditResult,
    out_dir: str | Path,
    *,
    thumbnails: str = "copy",
    thumb_size: int = 128,
    title: str = "prodcat label audit",
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``issues.csv``, ``per_class.csv``, ``confusions.csv``, ``summary.json`` and ``review.html``.

    ``thumbnails``: ``"copy"`` writes small JPEGs to ``thumbs/`` next to the page (relative links: the folder
    can be moved or zipped as a whole), ``"embed"`` inlines them as base64 (one self-contained file), ``"none"``
    shows no images. Images are read from the ``image`` column of ``result.issues``. Returns the written paths.
    """
    from prodcat.pages import THUMBNAIL_MODES, write_thumbnails

    if thumbnails not in THUMBNAIL_MODES:
        raise ValueError(f"thumbnails must be 'copy', 'embed' or 'none', not {thumbnails!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("issues.csv", "per_class.csv", "confusions.csv", "summary.json")}
    result.issues.to_csv(paths["issues.csv"], index=False, float_format="%.5g")
    result.per_class.to_csv(paths["per_class.csv"], index=False, float_format="%.5g")
    result.confusions.to_csv(paths["confusions.csv"], index=False)
    paths["summary.json"].write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
    thumbs: list[str | None] | None = None
    if thumbnails != "none" and "image" in result.issues.columns:
        issues = result.issues
        thumbs = write_thumbnails(
            issues["image"].tolist(),
            issues["position"].tolist(),
            out,
            mode=thumbnails,
            size=thumb_size,
            progress=progress,
        )
        if thumbnails == "copy":
            paths["thumbs"] = out / "thumbs"
    paths["review.html"] = out / "review.html"
    paths["review.html"].write_text(render_review_page(result, thumbs=thumbs, title=title), encoding="utf-8")
    return paths
