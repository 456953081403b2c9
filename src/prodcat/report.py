"""Evaluation reports on disk: ``metrics.json``, per-class CSV, confusion-matrix PNG and a static HTML page."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodcat.evaluate import confusion_figure, per_class_report, save_figure, table1
from prodcat.model import TrainedModel, evaluate_models


def evaluate_to_dir(
    model: TrainedModel, df: pd.DataFrame, out_dir: str | Path, *, title: str = ""
) -> dict[str, Any]:
    """Score ``model`` on labelled catalog ``df`` and write the report files. Returns the metrics dict.

    ``metrics.json``: ``macro_f1``, ``macro_f1_ci`` (95% bootstrap), ``n``, ``per_modality`` (best single text
    model, best single image model, fusion) and ``per_model``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y = df["label"].astype(str).to_numpy()
    unknown = sorted(set(y) - {str(c) for c in model.classes})
    metrics = evaluate_models(model, df, y)
    metrics["labels_unknown_to_model"] = unknown
    pred = model.predict(df).astype(str)
    labels = sorted(set(model.classes.astype(str)) | set(y))
    report = per_class_report(y, pred, labels=labels)
    report.to_csv(out / "per_class.csv", index=False)
    save_figure(confusion_figure(y, pred, labels=labels, normalize=True), out / "confusion.png")
    probas = model.model_probas(df)
    rows = {f"{role}: {name}": p for (name, role, _), p in zip(model.models, probas, strict=True)}
    rows["decision-level fusion"] = model.predict_proba(df)
    table = table1(y, rows, classes=list(model.classes), reference=None, n_boot=300)
    table.to_csv(out / "table.csv")
    pd.DataFrame({"id": df["id"], "label": y, "predicted": pred}).to_csv(out / "predictions.csv", index=False)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_plain))
    (out / "report.html").write_text(_html(metrics, table, report, out / "confusion.png", title))
    return metrics


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else str(v)


def _html(metrics: dict[str, Any], table: pd.DataFrame, report: pd.DataFrame, png: Path, title: str) -> str:
    img = base64.b64encode(png.read_bytes()).decode()
    lo, hi = metrics["macro_f1_ci"]
    worst = report.sort_values("f1").head(15)
    warn = ""
    if metrics.get("labels_unknown_to_model"):
        unknown = ", ".join(map(str, metrics["labels_unknown_to_model"]))
        warn = f"<p class=warn>Labels in this catalog the model never saw (always wrong): {html.escape(unknown)}</p>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>prodcat evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}.warn{{color:#a00}}</style>
</head><body><h1>prodcat evaluation {html.escape(title)}</h1>
<p><b>macro-F1 {metrics["macro_f1"]:.4f}</b> (95% bootstrap interval {lo:.4f} – {hi:.4f}) on {metrics["n"]} products.</p>
{warn}<h2>Each model alone and fused</h2>{table.to_html(float_format=lambda v: f"{v:.4f}")}
<h2>Weakest classes</h2>{worst.to_html(index=False, float_format=lambda v: f"{v:.3f}")}
<p>All classes: <a href="per_class.csv">per_class.csv</a>. Predictions: <a href="predictions.csv">predictions.csv</a>.</p>
<h2>Confusion matrix (row-normalised)</h2><img style="max-width:100%" src="data:image/png;base64,{img}">
</body></html>"""
