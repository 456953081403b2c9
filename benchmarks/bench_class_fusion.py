"""Fusion at many classes (issue 16): does ``mean`` alone (the default ensemble above 100 classes) lose quality
against a learned fuser that stays cheap at many classes?

Reads what ``bench_classes.py --keep --sizes 331`` left: its training cache (the modality models' out-of-fold
probabilities, reused, not refitted) and its bundle (the fitted models, for the validation rows). Fusers compared
on the same inputs:

- ``mean``: weighted geometric mean, m weights fitted on log-loss then macro-F1 (prodcat's ``mean``);
- ``log-linear``: prodcat's ``log-linear`` (:class:`prodcat.fusion.LogLinearFusion`),
  ``softmax_c(sum_k a[k, c] log p_k(c) + b[c])``, a weight per model and class plus a class bias (``m*C + C``
  parameters: the cost of a pass is ``n*m*C``, like ``mean``), L2 towards ``mean``'s weights; the default
  ensemble above 100 classes;
- ``logistic[log]``: prodcat's ``logistic`` stacking on log-probabilities, an ``(m*C, C)`` weight matrix
  (``C^2``: 331 classes x 993 inputs), at most ``--logistic-iter`` L-BFGS iterations (``--logistic-iter 0``
  leaves it out).

The choice is made on the training side only: 5-fold cross-validation over the fusion's rows (out-of-fold model
probabilities); the validation rows (never seen by any model or fuser) then report the chosen and the others once.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_class_fusion.py /tmp/bench-classes-331-XXXX
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def fusers(m: int, logistic_iter: int) -> dict[str, Any]:
    from prodcat.fusion import LogisticFusion, LogLinearFusion, MeanFusion

    out: dict[str, Any] = {
        "mean": lambda: MeanFusion(n_models=m),
        "log-linear": lambda: LogLinearFusion(n_models=m),
    }
    if logistic_iter:
        out["logistic[log]"] = lambda: LogisticFusion(n_models=m, features="log", max_iter=logistic_iter)
    return out


def scores(y: np.ndarray, P: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    from prodcat.evaluate import macro_f1

    idx = np.searchsorted(classes, y)
    known = (idx < len(classes)) & (classes[np.minimum(idx, len(classes) - 1)] == y)
    nll = -np.log(np.clip(P[np.flatnonzero(known), idx[known]], 1e-12, None)).mean()
    return {"macro_f1": round(macro_f1(y, classes[P.argmax(1)]), 4), "log_loss": round(float(nll), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path, help="folder kept by bench_classes.py --keep (cache/, bundle/)")
    ap.add_argument("--size", type=int, default=331)
    ap.add_argument("--logistic-iter", type=int, default=100)
    ap.add_argument("--jsonl", type=Path, default=Path("bench-output/class_fusion.jsonl"))
    args = ap.parse_args()

    from bench_classes import build

    from prodcat.bundle import load_model
    from prodcat.config import load_config
    from prodcat.oof import align_proba
    from prodcat.pipeline import _checked_model, _model_oof
    from prodcat.splits import holdout_split, kfold_indices

    df, taxonomy = build(args.size, min_rows=7, repeat=3)
    cfg = load_config(**{"columns.taxonomy_columns": taxonomy, "cache_dir": str(args.work / "cache")})
    y_all = df["label"].astype(str).to_numpy()
    tr, va = holdout_split(y_all, test_size=cfg.validation_fraction, seed=cfg.seed)
    train_df, y = df.iloc[tr].reset_index(drop=True), y_all[tr]
    classes = np.unique(y)
    specs = [(s, "text") for s in cfg.text_models] + [(s, "image") for s in cfg.image_models]
    t0 = time.process_time()
    blocks = []
    for spec, role in specs:  # out-of-fold probabilities from the kept training cache
        proba, _, _ = _model_oof(
            _checked_model(spec, role, cfg), train_df, y, role=role, config=cfg, progress=False
        )
        blocks.append(proba)
    X = np.hstack(blocks)
    print(f"out-of-fold inputs {X.shape} read in {time.process_time() - t0:.1f} CPU s", file=sys.stderr)
    model, _ = load_model(args.work / "bundle")
    val_df = df.iloc[va].reset_index(drop=True)
    X_val = np.hstack([align_proba(p, model.classes, classes) for p in model.model_probas(val_df)])
    m = len(specs)
    args.jsonl.parent.mkdir(parents=True, exist_ok=True)
    for name, make in fusers(m, args.logistic_iter).items():
        oof = np.zeros((len(y), len(classes)))
        c0 = time.process_time()
        for fit_rows, test_rows in kfold_indices(y, n_splits=5, seed=cfg.seed + 2):
            f = make().fit(X[fit_rows], y[fit_rows])
            oof[test_rows] = align_proba(f.predict_proba(X[test_rows]), f.classes_, classes)
        cv_cpu = time.process_time() - c0
        c0 = time.process_time()
        final = make().fit(X, y)
        fit_cpu = time.process_time() - c0
        P_val = align_proba(final.predict_proba(X_val), final.classes_, classes)
        rec = {
            "size": args.size,
            "n_classes": len(classes),
            "fuser": name,
            "cv": scores(y, oof, classes),
            "validation": scores(y_all[va], P_val, classes),
            "fit_cpu_s": round(fit_cpu, 2),
            "cv_cpu_s": round(cv_cpu, 2),
        }
        print(json.dumps(rec), flush=True)
        with args.jsonl.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
