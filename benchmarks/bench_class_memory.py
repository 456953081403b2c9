"""Where the training's memory goes at many classes (issue 16): peak per stage, in minutes instead of hours.

The modality models are replaced by a fast stand-in (:class:`Stand`, registered as text and image model
``stand``: (n, C) probabilities that favour the true class, no features), so what runs for real is everything that
is class-bound after them, on the same shapes as a real training: the out-of-fold loop, the fusion (the default
for the class count), the calibration's cross-fitting and temperature / acceptance fits, the taxonomy back-off and
the validation scores. Three models (two text, one image, so the calibration also fits the "photo removed" and
"text removed" variants), a three-level taxonomy, ``--rows`` products over ``--classes`` leaves.

Each stage function of ``prodcat.pipeline`` / ``prodcat.trust`` is wrapped: at its entry the Python heap that
``tracemalloc`` sees (numpy reports its arrays to it) and the stage's own peak above that; ``VmHWM`` (resident
peak, reset at each stage through ``/proc/self/clear_refs``) is printed beside it. A nested stage resets the peak
of its caller: read the innermost figures.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_class_memory.py --rows 10000 --classes 1000 --folds 3
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
import tracemalloc
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith(field))


def _reset_resident_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class Stand(ClassifierMixin, BaseEstimator):
    """Stand-in modality model: probabilities ``~ u^8`` (u uniform) plus a bump on the true class (read from the
    title, ``"<label>|..."``) for a share ``acc`` of the rows; every row's image is "decoded"."""

    def __init__(self, acc: float = 0.6, seed: int = 0) -> None:
        self.acc = acc
        self.seed = seed

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> Stand:
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        n, C = len(X), len(self.classes_)
        rng = np.random.default_rng(self.seed + n)
        P = rng.random((n, C), dtype=np.float32).astype(np.float64) ** 8
        true = np.searchsorted(self.classes_, X["title"].astype(str).str.split("|").str[0].to_numpy())
        hit = rng.random(n) < self.acc
        P[np.flatnonzero(hit), np.minimum(true, C - 1)[hit]] += 0.3 * C**0.5
        return P / P.sum(axis=1, keepdims=True)

    def predict_proba_with_mask(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_proba(X), np.ones(len(X), dtype=bool)


def catalog(rows: int, classes: int, folds: int, image: str) -> pd.DataFrame:
    """``rows`` products (at least ``folds + 2`` per class), leaves under 50-leaf parents under 7 roots."""
    per = max(folds + 2, rows // classes)
    codes = np.repeat(np.arange(classes), per)
    codes = np.concatenate([codes, np.random.default_rng(0).integers(0, classes, max(0, rows - len(codes)))])
    leaf = np.array([f"L{c:05d}" for c in codes])
    return pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(len(codes))],
            "title": [f"{lab}|x" for lab in leaf],
            "description": "",
            "image": image,  # an existing file: the image modality is kept (Stand never opens it)
            "label": leaf,
            "root": [f"A{(c // 50) % 7}" for c in codes],
            "parent": [f"B{c // 50}" for c in codes],
        }
    )


def watch(module: Any, name: str, rows: list[dict[str, Any]]) -> None:
    func = getattr(module, name)

    @functools.wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _reset_resident_peak()
        rss = _status("VmRSS")
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        cpu = time.process_time()
        out = func(*args, **kwargs)
        end, peak = tracemalloc.get_traced_memory()
        rec = {
            "stage": name,
            "heap_at_entry_mb": round(start / 2**20),
            "stage_peak_above_entry_mb": round((peak - start) / 2**20),
            "left_after_mb": round((end - start) / 2**20),
            "resident_peak_above_entry_mb": _status("VmHWM") - rss,
            "cpu_s": round(time.process_time() - cpu, 1),
        }
        rows.append(rec)
        print(" ".join(f"{k} {v}" for k, v in rec.items()), flush=True)
        return out

    setattr(module, name, wrapped)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--folds", type=int, default=3)
    args = ap.parse_args()

    import prodcat.pipeline as pipeline
    import prodcat.trust as trust
    from prodcat import registry
    from prodcat.config import load_config

    registry.register("text-model", "stand")(Stand)
    registry.register("image-model", "stand")(Stand)
    df = catalog(args.rows, args.classes, args.folds, image=__file__)
    with tempfile.TemporaryDirectory(prefix="bench-class-memory-") as cache:
        cfg = load_config(
            **{
                "columns.taxonomy_columns": ["root", "parent"],
                "cache_dir": cache,  # empty training cache: every stage runs
                "n_folds": args.folds,
                "calibration.n_folds": args.folds,
                "text_models": [
                    {"name": "stand", "params": {"seed": 1, "acc": 0.7}},
                    {"name": "stand", "params": {"seed": 2, "acc": 0.5}},
                ],
                "image_models": [{"name": "stand", "params": {"seed": 3, "acc": 0.3}}],
            }
        )
        rows: list[dict[str, Any]] = []
        for name in ("_model_oof", "_fit", "_fit_fuser", "_back_off_thresholds", "evaluate_models"):
            watch(pipeline, name, rows)
        for name in ("cross_fit_fuser", "fit_calibration", "model_temperatures"):
            watch(trust, name, rows)
        tracemalloc.start()
        cpu = time.process_time()
        model = pipeline.train(df, cfg, progress=False)
    top = max(rows, key=lambda r: r["heap_at_entry_mb"] + r["stage_peak_above_entry_mb"])
    print(
        f"{len(df)} rows, {args.classes} classes, {args.folds} folds, fusion "
        f"{[n for n, _ in getattr(model.fuser, 'estimators', [])] or type(model.fuser).__name__}: "
        f"largest heap {top['heap_at_entry_mb'] + top['stage_peak_above_entry_mb']} MB in {top['stage']}; "
        f"{time.process_time() - cpu:.1f} CPU s"
    )


if __name__ == "__main__":
    main()
