"""``prodcat demo``: a synthetic catalog, run end to end: train -> evaluate -> predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from prodcat.catalog import read_catalog, summarize
from prodcat.commands.model import print_summary
from prodcat.demo import DemoSpec, make_demo_catalog

BANNER = (
    "This demo runs on a SYNTHETIC catalog generated on the spot (drawn shapes, templated titles, ~5% flipped "
    "labels).\nIts scores say nothing about real catalogs; see docs/benchmarks.md for real-data figures."
)


def run_demo(out: Path, *, n_per_class: int = 60, seed: int = 0, config: str | None = None) -> dict[str, Any]:
    """Generate the demo catalog under ``out``, then train, evaluate on a fresh synthetic catalog and predict.

    Writes ``out/model`` (bundle), ``out/report`` (metrics.json, report.html...), ``out/predictions.csv`` and
    ``out/summary.json``; returns the summary.
    """
    from prodcat.bundle import load_bundle, save_bundle
    from prodcat.config import load_config
    from prodcat.pipeline import train
    from prodcat.predict import batch_predict
    from prodcat.report import evaluate_to_dir

    typer.secho(BANNER, fg=typer.colors.YELLOW)
    out.mkdir(parents=True, exist_ok=True)
    path = make_demo_catalog(out / "catalog", DemoSpec(n_per_class=n_per_class, seed=seed))
    # A second catalog drawn with another seed plays the held-back products the model never saw.
    held = make_demo_catalog(
        out / "heldout", DemoSpec(n_per_class=max(10, n_per_class // 3), seed=seed + 1, flip_rate=0.0)
    )
    typer.echo(f"synthetic catalog written to {path} (held-back products: {held})")
    df, report = read_catalog(path)
    for line in report.summary_lines():
        typer.echo(line)
    inspect = summarize(df, decode=True, progress=False)
    unreadable = inspect["images_unreadable"]
    assert isinstance(unreadable, dict)
    typer.echo(
        f"{inspect['rows']} products, {inspect['classes']} classes, {len(unreadable)} without a usable image"
    )

    typer.secho("\n== train", bold=True)
    model = train(df, load_config(config))
    save_bundle(model, out / "model")
    print_summary(model.metrics)
    flips = df["label"] != df["true_label"]
    typer.echo(f"model written to {out / 'model'}  ({int(flips.sum())} labels were flipped on purpose)")

    typer.secho("\n== evaluate on held-back products", bold=True)
    held_df, _ = read_catalog(held)
    metrics = evaluate_to_dir(model, held_df, out / "report", title="(synthetic demo)")
    for role, value in metrics["per_modality"].items():
        typer.echo(f"  {role:8s} macro-F1 {value:.4f}")
    lo, hi = metrics["macro_f1_ci"]
    typer.echo(
        f"  fusion 95% interval [{lo:.4f}, {hi:.4f}] on {metrics['n']} products; "
        f"report: {out / 'report' / 'report.html'}"
    )

    typer.secho("\n== predict", bold=True)
    counts = batch_predict(load_bundle(out / "model"), held_df, out / "predictions.csv", progress=False)
    typer.echo(f"  {counts['rows']} predictions written to {out / 'predictions.csv'}")
    summary = {"catalog": inspect, "training": model.metrics, "heldout": metrics, "predict": counts}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    typer.echo(f"summary written to {out / 'summary.json'}")
    return summary
