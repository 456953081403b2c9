"""``prodcat demo``: a synthetic catalog, run end to end as far as the project goes."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from prodcat.catalog import read_catalog, summarize
from prodcat.demo import DemoSpec, make_demo_catalog

BANNER = (
    "This demo runs on a SYNTHETIC catalog generated on the spot (drawn shapes, templated titles, ~5% flipped "
    "labels).\nIts scores say nothing about real catalogs; see docs/benchmarks.md for real-data figures."
)


def run_demo(out: Path, *, n_per_class: int = 60, seed: int = 0) -> dict[str, object]:
    """Generate the demo catalog under ``out`` and run the pipeline on it; returns the summary written to disk."""
    typer.secho(BANNER, fg=typer.colors.YELLOW)
    out.mkdir(parents=True, exist_ok=True)
    path = make_demo_catalog(out / "catalog", DemoSpec(n_per_class=n_per_class, seed=seed))
    typer.echo(f"synthetic catalog written to {path}")
    df, report = read_catalog(path)
    for line in report.summary_lines():
        typer.echo(line)
    summary = summarize(df, decode=True)
    unreadable = summary["images_unreadable"]
    assert isinstance(unreadable, dict)
    typer.echo(
        f"{summary['rows']} products, {summary['classes']} classes, {len(unreadable)} without a usable image"
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    typer.echo(f"summary written to {out / 'summary.json'}")
    return summary
