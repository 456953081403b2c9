"""Long descriptions: out-of-fold macro-F1 against time for truncation, TF-IDF caps and the linear classifier (issue 22).

Data: ``rakuten/text/labelled_texts.csv`` (4,083 real French product texts, 27 classes, descriptions up to ~10k
characters), read in place from ``../shared/data`` as :mod:`bench_text` reads it (cleaned designation and
description); ``--task fashion-full|fashion-masked`` checks that a default chosen there does not lose on short
titles. Every configuration is the registered ``tfidf`` model with other parameters; each gets stratified 5-fold
out-of-fold probabilities (seed 42, :func:`prodcat.oof.oof_predict_proba`, no cache) and its seconds cover every
fold (vectorising, fitting, predicting). Times are CPU seconds of the process (all its threads) and wall seconds:
on a machine shared with other jobs the wall time mostly measures the others, the CPU time what the configuration
costs. The JSON file is rewritten after each configuration, so a run cut short keeps what it measured.

Example::

    nice -n 5 python benchmarks/bench_text_long.py --json bench-output/text-long.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.evaluate import macro_f1
from prodcat.oof import oof_predict_proba
from prodcat.registry import create

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_text import DEFAULT_DATA, fashion_tasks, rakuten_task

TFIDF = "tfidf"
#: (group, label, params of the tfidf text model); cheap first: a run cut short still answers the most
GRID: list[tuple[str, str, dict[str, Any]]] = [
    ("classifier", "sgd", {"classifier": "sgd"}),
    *[("truncate", f"sgd, max_chars {n}", {"classifier": "sgd", "max_chars": n}) for n in (2000, 1000, 500)],
    ("caps", "sgd, max_features 50k", {"classifier": "sgd", "max_features": 50_000}),
    ("caps", "sgd, min_df 3", {"classifier": "sgd", "min_df": 3}),
    ("default", "auto, max_chars 2000 (default)", {"max_chars": 2000}),
    ("classifier", "logreg (L-BFGS, whole texts: the default until now)", {"classifier": "logreg"}),
    ("truncate", "logreg, max_chars 2000", {"classifier": "logreg", "max_chars": 2000}),
]


def score(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    pred = classes[proba.argmax(axis=1)]
    return {
        "macro_f1": round(macro_f1(y, pred), 4),
        "accuracy": round(float((pred == y).mean()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument(
        "--task",
        choices=["rakuten-texts", "fashion-full", "fashion-masked"],
        default="rakuten-texts",
        help="the long Rakuten texts (default), or fashion titles: a default must not lose on short titles",
    )
    parser.add_argument("--groups", default="classifier,truncate,caps,default")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated configuration labels to run (default: every one of --groups)",
    )
    parser.add_argument("--n-splits", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=None, help="write all result rows here")
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        print(f"shared data not found at {args.data}; nothing to benchmark", file=sys.stderr)
        return 1
    tasks = rakuten_task(args.data) if args.task == "rakuten-texts" else fashion_tasks(args.data)
    X, y = tasks[args.task]
    groups = args.groups.split(",")
    rows: list[dict[str, Any]] = []
    for group, label, params in GRID:
        if group not in groups or (args.only and label not in args.only.split(",")):
            continue
        model = create("text-model", TFIDF, random_state=args.seed, **params)
        start, cpu = time.perf_counter(), time.process_time()
        res = oof_predict_proba(model, X, y, n_splits=args.n_splits, seed=args.seed, refit=False, desc=label)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        row = {
            "task": args.task,
            "group": group,
            "config": label,
            "params": params,
            **score(y, res.proba, res.classes),
        }
        row["seconds"], row["cpu_seconds"] = round(seconds, 1), round(cpu, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
        _write(args.json, rows, len(y))

    print("\n| task | group | configuration | OOF macro-F1 | accuracy | CPU s (5 folds) | wall s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        wall = f"{r['seconds']:.1f}"
        print(
            f"| {args.task} | {r['group']} | {r['config']} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} | "
            f"{r['cpu_seconds']:.1f} | {wall} |"
        )
    return 0


def _write(path: Path | None, rows: list[dict[str, Any]], n: int) -> None:
    """All rows so far (rewritten after each configuration: a run cut short keeps its results)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "n": n}
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
