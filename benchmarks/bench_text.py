"""Text models: 5-fold out-of-fold macro-F1 and wall time, cold cache then warm cache.

Tasks (real data, read in place from ``../shared/data``):

- ``fashion``: 12,176 products, 55 classes; text column ``title`` (fashion-full) and ``title_masked``
  (fashion-masked, every word naming a category removed). Read with :func:`prodcat.catalog.read_catalog`.
- ``rakuten``: ``rakuten/text/labelled_texts.csv``, 4,083 French texts, 27 classes; designation + description
  cleaned with :func:`prodcat.clean.clean_text`.

Phases (``--phases``; the cache folder is emptied first with ``--fresh``):

- ``cold``: nothing cached; encoders embed every text, OOF probabilities are computed and stored.
- ``warm-embed``: embeddings come from the cache, heads and TF-IDF models are retrained (OOF cache off).
- ``warm``: a plain second run: OOF probabilities (and embeddings) come from the cache.

Example::

    python benchmarks/bench_text.py --task fashion --fresh --json bench-output/text-fashion.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from prodcat.clean import clean_text
from prodcat.oof import oof_predict_proba
from prodcat.registry import create

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def fashion_tasks(data: Path) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """``fashion-full`` and ``fashion-masked`` as catalog DataFrames (the chosen column becomes the title)."""
    from prodcat.catalog import read_catalog

    path = data / "fashion" / "products.csv"
    out = {}
    for task, column in (("fashion-full", "title"), ("fashion-masked", "title_masked")):
        df, _ = read_catalog(
            path, text_columns=[column], label_column="label", image_column="image", id_column="id"
        )
        out[task] = (df, df["label"].astype(str).to_numpy())
    return out


def rakuten_task(data: Path) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """The 4,083 labelled Rakuten texts as a catalog DataFrame (ids are row numbers: many rows lack one)."""
    raw = pd.read_csv(data / "rakuten" / "text" / "labelled_texts.csv", dtype=str, keep_default_na=False)
    df = pd.DataFrame(
        {
            "id": [str(i) for i in range(len(raw))],
            "title": [clean_text(t) for t in raw["designation"]],
            "description": [clean_text(t) for t in raw["description"]],
            "image": None,
            "label": raw["prdtypecode"].astype(str),
        }
    )
    return {"rakuten-texts": (df, df["label"].to_numpy())}


def build(name: str, cache_dir: Path, seed: int) -> Any:
    if name == "tfidf":
        return create("text-model", "tfidf", random_state=seed)
    return create("text-model", name, cache_dir=cache_dir, random_state=seed)


def run_phase(
    phase: str, tasks: dict[str, tuple[pd.DataFrame, np.ndarray]], models: list[str], args: Any
) -> list[dict[str, Any]]:
    rows = []
    oof_cache = None if phase == "warm-embed" else args.cache_dir
    for task, (X, y) in tasks.items():
        for name in models:
            model = build(name, args.cache_dir, args.seed)
            start = time.perf_counter()
            res = oof_predict_proba(
                model,
                X,
                y,
                n_splits=args.n_splits,
                seed=args.seed,
                refit=False,
                cache_dir=oof_cache,
                desc=f"{phase} {task} {name}",
            )
            seconds = time.perf_counter() - start
            pred = res.classes[res.proba.argmax(axis=1)]
            row = {
                "phase": phase,
                "task": task,
                "model": name,
                "n": len(y),
                "classes": len(res.classes),
                "macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
                "accuracy": round(float((pred == y).mean()), 4),
                "seconds": round(seconds, 1),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--task", choices=["fashion", "rakuten", "all"], default="all")
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated text models (default: fashion tfidf,embed:use-multilingual,"
        "embed:e5-small; rakuten adds embed:spacy-fr)",
    )
    parser.add_argument(
        "--phases", default="cold,warm-embed,warm", help="comma-separated: cold, warm-embed, warm"
    )
    parser.add_argument("--n-splits", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "bench-output" / "text-cache")
    parser.add_argument("--fresh", action="store_true", help="empty the cache folder first (a true cold run)")
    parser.add_argument("--json", type=Path, default=None, help="write all result rows here")
    parser.add_argument(
        "--per-class", type=int, default=None, help="keep at most this many rows per class (smoke runs)"
    )
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        print(f"shared data not found at {args.data}; nothing to benchmark", file=sys.stderr)
        return 1
    if args.fresh and args.cache_dir.exists():
        shutil.rmtree(args.cache_dir)
    groups: list[tuple[dict[str, tuple[pd.DataFrame, np.ndarray]], list[str]]] = []
    fashion_models = ["tfidf", "embed:use-multilingual", "embed:e5-small"]
    if args.task in ("fashion", "all"):
        groups.append((fashion_tasks(args.data), args.models.split(",") if args.models else fashion_models))
    if args.task in ("rakuten", "all"):
        groups.append(
            (
                rakuten_task(args.data),
                args.models.split(",") if args.models else [*fashion_models, "embed:spacy-fr"],
            )
        )

    if args.per_class:
        for tasks, _ in groups:
            for task, (X, y) in tasks.items():
                keep = X.groupby(y, sort=False).head(args.per_class).index
                tasks[task] = (X.loc[keep].reset_index(drop=True), y[X.index.get_indexer(keep)])
    rows: list[dict[str, Any]] = []
    totals: dict[str, float] = {}
    for phase in args.phases.split(","):
        start = time.perf_counter()
        for tasks, models in groups:
            rows += run_phase(phase, tasks, models, args)
        totals[phase] = round(time.perf_counter() - start, 1)
        print(f"phase {phase}: {totals[phase]} s", flush=True)

    print("\n| task | model | macro-F1 | accuracy | " + " | ".join(f"{p} s" for p in totals) + " |")
    print("|---|---|---|---|" + "---|" * len(totals))
    for r in (r for r in rows if r["phase"] == next(iter(totals))):
        secs = [
            next(
                x["seconds"]
                for x in rows
                if x["phase"] == p and x["task"] == r["task"] and x["model"] == r["model"]
            )
            for p in totals
        ]
        print(
            f"| {r['task']} | {r['model']} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} | "
            + " | ".join(f"{s:.1f}" for s in secs)
            + " |"
        )
    if "cold" in totals:
        for phase in (p for p in totals if p != "cold"):
            print(f"cold / {phase}: {totals['cold'] / max(totals[phase], 1e-9):.1f}x faster")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"python": platform.python_version(), "machine": platform.machine(), "totals_s": totals}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
