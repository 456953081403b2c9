"""Embedding heads on one vs two BLAS threads: CPU, wall and out-of-fold macro-F1 of the same model (issue 22).

The default USE text model's head (standardised multinomial logistic regression, L-BFGS) fitted on each of 5
folds from cached embeddings, with ``prodcat.models.HEAD_BLAS_THREADS`` 1 and then 2, in turn, ``--repeat``
times, in one process: the Rakuten texts' training part (the 3,674 rows ``prodcat train`` keeps after its 10 %
validation holdout) and, with ``--fashion``, fashion's titles (full and masked, all 12,176 products).

    python benchmarks/bench_head_threads.py --fashion --json bench-output/head-threads.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_text import DEFAULT_DATA, fashion_tasks


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def base_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--data`` (the shared data folder) and ``--json`` (where to write results)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=None)
    return parser


def rakuten_training_part(data: Path) -> tuple[Any, np.ndarray]:
    from prodcat.catalog import read_catalog
    from prodcat.splits import holdout_split

    df, _ = read_catalog(
        data / "rakuten" / "text" / "labelled_texts.csv", label_column="prdtypecode", id_column="none"
    )
    y_all = df["label"].astype(str).to_numpy()
    tr, _ = holdout_split(y_all, test_size=0.1, seed=42)
    return df.iloc[tr].reset_index(drop=True), y_all[tr]


def heads_oof(Z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """5-fold out-of-fold predicted labels of the default logistic head on embeddings ``Z``."""
    from prodcat.models import fit_head, make_head
    from prodcat.splits import kfold_indices

    pred = np.empty(len(y), dtype=object)
    for tr, te in kfold_indices(y, n_splits=5, seed=42):
        head = fit_head(make_head("logreg", None, random_state=42), Z[tr], y[tr], None)
        pred[te] = head.predict(Z[te])
    return pred


def main() -> None:
    import prodcat.models as models
    from prodcat.evaluate import bootstrap_ci
    from prodcat.registry import create

    parser = base_parser(__doc__)
    parser.add_argument("--fashion", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    tasks = {"rakuten-texts": rakuten_training_part(args.data)}
    if args.fashion:
        tasks.update(fashion_tasks(args.data))
    results = []
    for task, (X, y) in tasks.items():
        Z, _ = create("text-model", "embed:use-multilingual", max_chars=2000, cache_dir="auto").embed(X)
        for rep in range(args.repeat):
            for threads in (1, 2):
                models.HEAD_BLAS_THREADS = threads
                load, c0, w0 = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
                pred = heads_oof(Z, y)
                ci = bootstrap_ci(y, pred.astype(str))
                row = {
                    "task": task,
                    "repeat": rep,
                    "blas_threads": threads,
                    "macro_f1": round(ci.value, 4),
                    "ci": [round(ci.low, 4), round(ci.high, 4)],
                    "cpu_s": round(cpu_seconds() - c0, 1),
                    "wall_s": round(time.perf_counter() - w0, 1),
                    "load": round(load, 2),
                }
                print(json.dumps(row), flush=True)
                results.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
