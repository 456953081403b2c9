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
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from prodcat.evaluate import macro_f1
from prodcat.oof import oof_predict_proba
from prodcat.registry import create

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_text import DEFAULT_DATA, fashion_tasks, rakuten_task

TFIDF, USE = "tfidf", "embed:use-multilingual"
#: (group, label, text model, its params); cheap first: a run cut short still answers the most
GRID: list[tuple[str, str, str, dict[str, Any]]] = [
    ("classifier", "sgd", TFIDF, {"classifier": "sgd"}),
    *[
        ("truncate", f"sgd, max_chars {n}", TFIDF, {"classifier": "sgd", "max_chars": n})
        for n in (2000, 1000, 500)
    ],
    ("caps", "sgd, max_features 50k", TFIDF, {"classifier": "sgd", "max_features": 50_000}),
    ("caps", "sgd, min_df 3", TFIDF, {"classifier": "sgd", "min_df": 3}),
    ("default", "auto, max_chars 2000 (default)", TFIDF, {"max_chars": 2000}),
    ("classifier", "logreg (L-BFGS, whole texts: the default until now)", TFIDF, {"classifier": "logreg"}),
    ("truncate", "logreg, max_chars 2000", TFIDF, {"classifier": "logreg", "max_chars": 2000}),
    # USE, each from an empty embedding cache (the cold embedding is most of its cost)
    *[("use", f"use, max_chars {n}", USE, {"max_chars": n}) for n in (300, 500, 1000, 2000)],
    ("use", "use, whole texts", USE, {}),
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
    parser.add_argument("--groups", default="classifier,truncate,caps,default", help="or use (USE max_chars)")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated configuration labels to run (default: every one of --groups)",
    )
    parser.add_argument("--n-splits", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=None, help="write all result rows here")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="encoder threads (default: the cores this process may use); 1 with OMP_NUM_THREADS=1 and "
        "OPENBLAS_NUM_THREADS=1 gives the single-core cost on a machine shared with other jobs",
    )
    parser.add_argument(
        "--fuse-with-default",
        action="store_true",
        help="also score each configuration stacked with the default tfidf (logistic fusion learnt out of fold on "
        "both models' OOF probabilities; the tfidf's computed once, kept in the user's OOF cache)",
    )
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        print(f"shared data not found at {args.data}; nothing to benchmark", file=sys.stderr)
        return 1
    tasks = rakuten_task(args.data) if args.task == "rakuten-texts" else fashion_tasks(args.data)
    X, y = tasks[args.task]
    groups = args.groups.split(",")
    rows: list[dict[str, Any]] = []
    base = _default_tfidf_oof(X, y, args) if args.fuse_with_default else None
    for group, label, name, params in GRID:
        if group not in groups or (args.only and label not in args.only.split(",")):
            continue
        with tempfile.TemporaryDirectory(prefix="bench-text-long-") as cold:
            extra: dict[str, Any] = {}
            if name != TFIDF:
                extra["cache_dir"] = cold
                if args.threads:
                    extra["embedder_params"] = {"threads": args.threads}
            model = create("text-model", name, random_state=args.seed, **params, **extra)
            start, cpu = time.perf_counter(), time.process_time()
            res = oof_predict_proba(
                model, X, y, n_splits=args.n_splits, seed=args.seed, refit=False, desc=label
            )
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        row = {
            "task": args.task,
            "group": group,
            "config": label,
            "params": params,
            **score(y, res.proba, res.classes),
        }
        if base is not None:  # stacked with the default tfidf: a fuser learnt out of fold on both OOF outputs
            fused = _stacked(np.hstack([base, res.proba]), y, res.classes, args)
            row["fused_with_tfidf_macro_f1"] = score(y, fused, res.classes)["macro_f1"]
        row["seconds"], row["cpu_seconds"] = round(seconds, 1), round(cpu, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
        _write(args.json, rows, len(y))

    print(
        "\n| task | group | configuration | OOF macro-F1 | accuracy | stacked with default tfidf | CPU s | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        fused = r.get("fused_with_tfidf_macro_f1")
        print(
            f"| {args.task} | {r['group']} | {r['config']} | {r['macro_f1']:.4f} | {r['accuracy']:.4f} | "
            f"{'' if fused is None else f'{fused:.4f}'} | {r['cpu_seconds']:.1f} | {r['seconds']:.1f} |"
        )
    return 0


def _stacked(X: np.ndarray, y: np.ndarray, classes: np.ndarray, args: Any) -> np.ndarray:
    """Out-of-fold probabilities of ``logistic`` stacking on the two models' OOF outputs ``X`` (n, 2C): the
    fusion a training run learns, in its cheapest learnt form (the default ``ensemble`` costs ~10x more)."""
    from prodcat.config import FusionConfig, build_fuser
    from prodcat.oof import align_proba
    from prodcat.splits import kfold_indices

    out = np.zeros((len(y), len(classes)))
    for tr, te in kfold_indices(y, n_splits=args.n_splits, seed=args.seed + 2):
        fuser = build_fuser(
            FusionConfig(method="logistic"), n_models=2, seed=args.seed, n_classes=len(classes)
        )
        fuser.fit(X[tr], y[tr])
        out[te] = align_proba(fuser.predict_proba(X[te]), fuser.classes_, classes)
    return out


def _default_tfidf_oof(X: Any, y: np.ndarray, args: Any) -> np.ndarray:
    """OOF probabilities of the default tfidf (``max_chars`` 2000, classifier auto), from the OOF cache."""
    model = create("text-model", TFIDF, random_state=args.seed, max_chars=2000)
    res = oof_predict_proba(
        model,
        X,
        y,
        n_splits=args.n_splits,
        seed=args.seed,
        refit=False,
        cache_dir="auto",
        desc="default tfidf",
    )
    return res.proba


def _write(path: Path | None, rows: list[dict[str, Any]], n: int) -> None:
    """All rows so far (rewritten after each configuration: a run cut short keeps its results)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "n": n}
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
