"""Inputs of the review tests and benchmark: the demo catalog with a few labels flipped, an audit of it with the
tiny bundle's probabilities, and a synthetic queue of any size (no model)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

N_FLIPPED = 8


@dataclass
class ReviewInputs:
    catalog: Path  # the noisy catalog (CSV, absolute image paths)
    audit: Path  # a `prodcat audit`-style folder with issues.csv
    model: Path
    flipped: list[str]  # ids whose label was flipped


def make_inputs(demo_catalog: Path, model: Path, out: Path) -> ReviewInputs:
    """Flip ``N_FLIPPED`` labels of the demo catalog and audit it with ``model``'s probabilities."""
    from prodcat.audit import audit_labels, write_audit
    from prodcat.bundle import load_bundle
    from prodcat.catalog import read_catalog

    df = read_catalog(demo_catalog)[0]
    rng = np.random.default_rng(7)
    rows = rng.choice(len(df), N_FLIPPED, replace=False)
    classes = sorted(df["label"].unique())
    predictor = load_bundle(model)
    probas, _ = predictor.model.model_probas_with_masks(df)
    fused = predictor.predict_proba(df)
    for r in rows:  # a label the model is sure is wrong
        df.loc[df.index[r], "label"] = next(c for c in classes if c != df["label"].iat[r])
    out.mkdir(parents=True, exist_ok=True)
    catalog = out / "catalog.csv"
    df.drop(columns=["true_label"], errors="ignore").to_csv(catalog, index=False)
    sources = dict(zip(predictor.sources(), probas, strict=True))
    result = audit_labels(
        df["label"].to_numpy(), {**sources, "fusion": fused}, classes=predictor.classes, products=df
    )
    write_audit(result, out / "audit", thumbnails="none", progress=False)
    return ReviewInputs(catalog, out / "audit", model, [str(df["id"].iat[r]) for r in rows])


def synthetic_queue(n: int, *, n_classes: int = 50, seed: int = 0) -> object:
    """A :class:`~prodcat.review.queue.Queue` of ``n`` products (no images, no model): for benchmarks."""
    from prodcat.review.queue import build_queue

    rng = np.random.default_rng(seed)
    classes = [f"class-{i:03d}" for i in range(n_classes)]
    ids = [f"p{i:07d}" for i in range(n)]
    given = rng.integers(0, n_classes, n)
    catalog = pd.DataFrame(
        {"id": ids, "title": [f"product {i}" for i in range(n)], "description": "", "image": None,
         "label": np.asarray(classes)[given]}
    )  # fmt: skip
    pred = rng.integers(0, n_classes, n)
    predictions = pd.DataFrame(
        {"id": ids, "label": np.asarray(classes)[pred], "confidence": rng.random(n), "decision": "review"}
    )
    for s in ("text", "image"):
        predictions[f"{s}_label"] = np.asarray(classes)[rng.integers(0, n_classes, n)]
        predictions[f"{s}_probability"] = rng.random(n)
    flagged = rng.choice(n, n // 10, replace=False)
    issues = pd.DataFrame(
        {"rank": np.arange(1, len(flagged) + 1), "id": np.asarray(ids)[flagged],
         "suggested_label": np.asarray(classes)[pred[flagged]], "suggested_conf": rng.random(len(flagged))}
    )  # fmt: skip
    for s in ("text", "image", "fusion"):
        issues[f"{s}_label"], issues[f"{s}_conf"] = issues["suggested_label"], rng.random(len(flagged))
        issues[f"{s}_given_conf"] = rng.random(len(flagged))
    return build_queue(catalog, predictions, sources=["text", "image"], classes=classes, issues=issues)
