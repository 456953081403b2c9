"""Evaluation reports on disk: ``metrics.json``, CSVs, figures and a static HTML page with a gallery of errors.

Every macro-F1 in the report (headline, table, per modality, per model, intervals) is :func:`prodcat.evaluate.
macro_f1`: the mean over the classes present in the evaluated labels. Classes the model knows but the catalog
lacks are listed apart. The page is the Jinja2 template ``report_templates/report.html``; its gallery rows are
the audit page's (``_products.html``), with thumbnails copied next to the page or embedded (:mod:`prodcat.pages`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodcat.evaluate import (
    MAX_CONFUSION_CLASSES,
    absent_classes,
    confusion_figure,
    evaluated_labels,
    f1_figure,
    per_class_report,
    save_figure,
    top_confusions,
    weakest_classes,
)
from prodcat.model import TrainedModel, evaluate_models
from prodcat.trust_report import TRUST_FIGURES, write_trust_report

#: What ``metrics.json`` says about the label set every macro-F1 is averaged over.
LABEL_SET_RULE = (
    "macro-F1 averages per-class F1 over the classes present in the evaluated labels (scikit-learn "
    "f1_score(y, pred, labels=sorted(set(y)), average='macro')); predicting any other class is an error. "
    "Bootstrap intervals resample products and apply the same rule to each resample."
)


def label_set(y: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    """The ``label_set`` entry of ``metrics.json``: the rule, the classes averaged over, and the classes set apart."""
    present = evaluated_labels(y).tolist()
    known = set(classes.tolist())
    return {
        "rule": LABEL_SET_RULE,
        "n_classes_averaged": len(present),
        "classes_averaged": present,
        "model_classes_absent_from_data": absent_classes(y, classes),
        "labels_unknown_to_model": [c for c in present if c not in known],
    }


def evaluate_to_dir(
    model: TrainedModel,
    df: pd.DataFrame,
    out_dir: str | Path,
    *,
    title: str = "",
    thumbnails: str = "copy",
    gallery_size: int = 24,
    weak_classes: int = 10,
    errors_per_class: int = 4,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``model`` on labelled catalog ``df`` and write the report files. Returns the metrics dict.

    ``metrics.json``: ``macro_f1``, ``macro_f1_ci`` (95% bootstrap), ``n``, ``per_modality`` (best single text
    model, best single image model, fusion), ``per_model``, ``labels_unknown_to_model`` and ``label_set`` (see
    :func:`label_set`); with a taxonomy, ``taxonomy`` (per-level macro-F1 / accuracy, hierarchical P/R/F1,
    confused sibling groups, back-off shares and precisions; shown in the page). Also ``table.csv`` (each model alone and fused, the same figures), ``per_class.csv``,
    ``confusions.csv`` (every error pair), ``predictions.csv``, ``per_class_f1.png``, ``confusion.png`` (only up
    to :data:`~prodcat.evaluate.MAX_CONFUSION_CLASSES` classes) and ``report.html`` with a gallery of the
    ``gallery_size`` most confident errors and ``errors_per_class`` sampled errors of each of the
    ``weak_classes`` lowest-F1 classes; ``thumbnails`` is ``"copy"`` (``thumbs/``), ``"embed"`` or ``"none"``.
    ``calibration``: ECE / Brier before and after calibration, auto-acceptance at the trained target, coverage at
    precision 0.95 / 0.98 / 0.99 (:func:`prodcat.trust_report.score_trust`), with ``reliability.png`` and
    ``risk_coverage.png``.
    """
    from prodcat.pages import embed_png, render, write_thumbnails

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y = df["label"].astype(str).to_numpy()
    classes = np.asarray(model.classes).astype(str)
    scored = model.outputs(df)  # each model's probabilities and the fusion, once for the whole report
    metrics = evaluate_models(model, df, y, outputs=scored)
    metrics["labels_unknown_to_model"] = sorted(set(y) - set(classes.tolist()))
    metrics["label_set"] = label_set(y, classes)
    probas, fused, pred = scored.probas, scored.fused, scored.labels.astype(str)
    col = {c: i for i, c in enumerate(classes.tolist())}
    conf = fused[np.arange(len(pred)), [col[p] for p in pred]]

    report, pairs, figures = write_class_files(y, pred, classes, out)
    table = _table(metrics)
    table.to_csv(out / "table.csv")
    pd.DataFrame({"id": df["id"], "label": y, "predicted": pred, "confidence": conf}).to_csv(
        out / "predictions.csv", index=False
    )

    sources = {key: p for key, p in zip(metrics["per_model"], probas, strict=True)}
    top, weak = _gallery(
        y,
        pred,
        conf,
        report,
        size=gallery_size,
        n_classes=weak_classes,
        per_class=errors_per_class,
        seed=seed,
    )
    shown = sorted({*top, *(i for _, rows in weak for i in rows)})
    images = df["image"].iloc[shown].tolist() if "image" in df.columns else [None] * len(shown)
    thumbs = write_thumbnails(images, shown, out, mode=thumbnails, progress=progress)
    rows = {
        i: _row(df, i, y, pred, conf, sources, classes, src) for i, src in zip(shown, thumbs, strict=True)
    }
    f1 = dict(zip(report["class"], report["f1"], strict=True))
    metrics["calibration"] = write_trust_report(model, df, y, out, outputs=scored)
    page = render(
        "report.html",
        title=title,
        metrics=metrics,
        table=table,
        weakest=weakest_classes(report, 15),
        absent=report.loc[report["support"] == 0, ["class", "predicted"]],
        pairs=pairs,
        figures={k: embed_png(v) for k, v in figures.items()},
        max_confusion=MAX_CONFUSION_CLASSES,
        trust=metrics["calibration"],
        trust_figures={k: embed_png(out / v) for k, v in TRUST_FIGURES.items()},
        taxonomy=taxonomy_tables(metrics.get("taxonomy")),
        sources=list(sources),
        top=[rows[i] for i in top],
        weak=[(c, f1[c], [rows[i] for i in idx]) for c, idx in weak],
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_plain))
    (out / "report.html").write_text(page, encoding="utf-8")
    return metrics


def taxonomy_tables(tax: dict[str, Any] | None) -> dict[str, Any] | None:
    """The report's taxonomy section as tables: ``levels`` (macro-F1, accuracy, nodes per level), ``groups``
    (most confused sibling groups), ``back_off`` (share and precision per decided level, or None) and
    ``hierarchical`` (P/R/F1). None without a taxonomy."""
    if not tax:
        return None
    groups = [
        {
            "under": g["node"] if g["node"] is not None else "(root)",
            "level": g["level"] or "",
            "errors": g["errors"],
            "error_rate": round(g["error_rate"], 3),
            "most frequent (true -> predicted, count)": "; ".join(
                f"{a} -> {b} ({k})" for a, b, k in g["top_confusions"]
            ),
        }
        for g in tax["confused_groups"]
    ]
    back = tax.get("back_off")
    return {
        "levels": pd.DataFrame(tax["levels"]).T.rename_axis("level").reset_index(),
        "hierarchical": tax["hierarchical"],
        "groups": pd.DataFrame(groups),
        "back_off": None
        if not back
        else pd.DataFrame(back["decided"]).T.rename_axis("decided").reset_index().astype(object).fillna("–"),
        "target_precision": None if not back else back["target_precision"],
    }


def write_class_files(
    y: np.ndarray, pred: np.ndarray, classes: np.ndarray, out: Path, *, title: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Path]]:
    """Per-class views of ``pred`` against ``y`` under ``out``.

    ``per_class.csv``: the classes present in ``y`` (in ``classes`` order), then labels unknown to the model, then
    the ``classes`` absent from ``y`` (F1 undefined); ``confusions.csv``: every error pair, largest first;
    ``per_class_f1.png``; and, up to :data:`~prodcat.evaluate.MAX_CONFUSION_CLASSES` classes, ``confusion.png``.
    Returns the per-class table, the pairs and the figure paths.
    """
    present = set(evaluated_labels(y).tolist())
    known = [c for c in classes.tolist() if c in present]
    unknown = sorted(present - set(known), key=str)
    report = per_class_report(y, pred, labels=[*known, *unknown, *absent_classes(y, classes)])
    report.to_csv(out / "per_class.csv", index=False)
    pairs = top_confusions(y, pred, k=None)
    pairs.to_csv(out / "confusions.csv", index=False)
    figures = {"per_class_f1": save_figure(f1_figure(report, title=title), out / "per_class_f1.png", dpi=100)}
    (out / "confusion.png").unlink(missing_ok=True)  # a stale one from an earlier, smaller run would mislead
    if len(evaluated_labels(y)) <= MAX_CONFUSION_CLASSES:
        fig = confusion_figure(y, pred, labels=evaluated_labels(y), normalize=True, title=title)
        figures["confusion"] = save_figure(fig, out / "confusion.png")
    return report, pairs, figures


def _table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Each model alone and fused: exactly the figures of ``metrics`` (one computation, one definition)."""
    scores = {**metrics["per_model"], "fusion": metrics}
    rows = [
        {
            "method": k,
            "macro_f1": s["macro_f1"],
            "ci_low": s["macro_f1_ci"][0],
            "ci_high": s["macro_f1_ci"][1],
        }
        for k, s in scores.items()
    ]
    table = pd.DataFrame(rows).set_index("method")
    table["n"] = metrics["n"]
    return table


def _gallery(
    y: np.ndarray,
    pred: np.ndarray,
    conf: np.ndarray,
    report: pd.DataFrame,
    *,
    size: int,
    n_classes: int,
    per_class: int,
    seed: int,
) -> tuple[list[int], list[tuple[str, list[int]]]]:
    """Row positions of the ``size`` most confident errors, and per weak class (lowest F1 among classes with
    products, F1 < 1) a seeded sample of up to ``per_class`` of its errors (its products predicted as another
    class, or other products predicted as it), most confident first."""
    wrong = np.flatnonzero(y != pred)
    top = wrong[np.argsort(-conf[wrong], kind="stable")][:size].tolist()
    rng = np.random.default_rng(seed)
    weak = []
    weak_rows = weakest_classes(report)
    for c in weak_rows.loc[weak_rows["f1"] < 1, "class"].head(n_classes):
        errors = wrong[(y[wrong] == c) | (pred[wrong] == c)]  # its products missed, and others taken for it
        picked = rng.choice(errors, size=min(per_class, len(errors)), replace=False)
        weak.append((str(c), picked[np.argsort(-conf[picked], kind="stable")].tolist()))
    return top, weak


def _row(
    df: pd.DataFrame,
    i: int,
    y: np.ndarray,
    pred: np.ndarray,
    conf: np.ndarray,
    sources: dict[str, np.ndarray],
    classes: np.ndarray,
    thumb: str | None,
) -> dict[str, Any]:
    """One gallery row in the shape of ``report_templates/_products.html``."""

    def text(column: str) -> str:
        v = df[column].iloc[i] if column in df.columns else None
        return v if isinstance(v, str) else ""

    row: dict[str, Any] = {
        "id": str(df["id"].iloc[i]),
        "title": text("title"),
        "description": text("description")[:300],
        "thumb": thumb,
        "given_label": str(y[i]),
        "suggested_label": str(pred[i]),
        "suggested_conf": float(conf[i]),
    }
    for key, p in sources.items():
        k = int(p[i].argmax())
        row[f"{key}_label"] = str(classes[k])
        row[f"{key}_conf"] = float(p[i, k])
    return row


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else str(v)
