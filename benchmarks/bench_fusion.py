"""Fusion benchmark (issue 5): K-fold CV of every fusion method inside a model-outputs split.

Each fuser is trained on K-1 outer folds and scored on the held-out fold; the pooled out-of-fold (OOF) predictions
give macro-F1 with a 95% bootstrap interval, and the per-fold scores show whether a method wins consistently.
Ensembles (majority vote and soft vote) are formed from the fusers' OOF outputs, so no row is ever scored by a
model that saw it. Results are cached per (split, models, method, folds, seed) under ``--cache``, so ensembles and
tables can be recomputed without refitting.

Usage (the commands recorded in docs/bench/fusion.md)::

    python benchmarks/bench_fusion.py --split split_a_val --models text_camembert,image_swin
    python benchmarks/bench_fusion.py --split split_a_val --models all
    python benchmarks/bench_fusion.py --split split_b_val --models all
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "rakuten" / "model_outputs"
DEFAULT_FASHION = ROOT.parent / "shared" / "data" / "fashion" / "products.csv"

#: label -> (registered method, options). The paper's settings unless stated.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "mean-uniform": ("mean", {"weights": "uniform", "pooling": "linear"}),
    "mean-linear": ("mean", {"pooling": "linear"}),
    "mean-log": ("mean", {"pooling": "log"}),
    "logistic": ("logistic", {}),
    "logistic-log": ("logistic", {"features": "log"}),
    "paper-mlp-1": ("paper-mlp", {"n_layers": 1}),
    "paper-mlp-2": ("paper-mlp", {"n_layers": 2}),
    "gbdt": ("gbdt", {}),
    # Not the paper's: the 1-layer net on log-probabilities (a learned, per-class product of experts).
    "paper-mlp-1-log": ("paper-mlp", {"n_layers": 1, "inputs": "log"}),
}
#: The bench labels of the members of the registered ``ensemble``'s default (prodcat.fusion.DEFAULT_MEMBERS).
DEFAULT_ENSEMBLE = ("mean-log", "paper-mlp-1-log", "gbdt")
#: Run by default (logistic-log: slower and worse than logistic on the split_a pair, see docs/bench/fusion.md).
DEFAULT_METHODS = [m for m in METHODS if m != "logistic-log"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding the model-output splits")
    p.add_argument("--split", default="split_a_val")
    p.add_argument("--models", default="all", help="comma-separated model names, or 'all'")
    p.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated, from {list(METHODS)}"
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--cache", type=Path, default=ROOT / "bench-output" / "fusion")
    p.add_argument("--json", type=Path, default=None, help="write the summary here")
    p.add_argument(
        "--task",
        default="rakuten",
        choices=["rakuten", "fashion-masked", "fashion-full"],
        help="rakuten: fusers on saved model outputs; fashion-*: Table 1 with feature-level fusion on embeddings",
    )
    p.add_argument("--fashion", type=Path, default=DEFAULT_FASHION, help="fashion products.csv")
    p.add_argument("--cache-dir", default="auto", help="embedding cache of the fashion task")
    return p.parse_args(argv)


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_method(
    label: str,
    X: np.ndarray,
    y: np.ndarray,
    classes: list[str],
    n_models: int,
    folds: list,
    cache: Path,
    key: str,
) -> dict[str, Any]:
    """OOF probabilities (n, C), OOF predicted codes (n,) and fit seconds per fold for one method (cached).
    ``y`` holds the string labels (the fusers' ``classes``)."""
    from sklearn.base import clone

    from prodcat.registry import create

    path = cache / f"{key}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return {"proba": z["proba"], "pred": z["pred"], "fit_s": z["fit_s"]}
    method, opts = METHODS[label]
    proto = create("fusion", method, classes=classes, n_models=n_models, **opts)
    proba = np.zeros((len(y), len(classes)))
    pred = np.zeros(len(y), dtype=np.int64)
    fit_s = []
    pos = {c: i for i, c in enumerate(classes)}
    for tr, te in folds:
        est = clone(proto)
        t0 = time.perf_counter()
        est.fit(X[tr], y[tr])
        fit_s.append(time.perf_counter() - t0)
        proba[te] = est.predict_proba(X[te])
        pred[te] = [pos[v] for v in est.predict(X[te])]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, proba=proba, pred=pred, fit_s=np.asarray(fit_s))
    return {"proba": proba, "pred": pred, "fit_s": np.asarray(fit_s)}


def score(y: np.ndarray, pred: np.ndarray, folds: list, n_boot: int, seed: int) -> dict[str, Any]:
    """Pooled OOF macro-F1, its bootstrap interval (skipped when ``n_boot`` is 0) and the per-fold scores."""
    from prodcat.evaluate import bootstrap_ci, macro_f1

    per_fold = [macro_f1(y[te], pred[te]) for _, te in folds]
    if not n_boot:
        return {"macro_f1": macro_f1(y, pred), "ci": [float("nan")] * 2, "folds": per_fold, "pred": pred}
    ci = bootstrap_ci(y, pred, n_boot=n_boot, seed=seed)
    return {"macro_f1": ci.value, "ci": [ci.low, ci.high], "folds": per_fold}


def ensembles(results: dict[str, dict[str, Any]], y: np.ndarray, folds: list, n_boot: int, seed: int) -> dict:
    """Majority and soft votes over subsets (size >= 3) of the learned fusers; returns all of them scored."""
    from prodcat.ensemble import majority_vote, vote_probas

    fusers = [m for m in results if m not in ("mean-uniform",)]
    out = {}
    for k in range(3, len(fusers) + 1):
        for subset in itertools.combinations(fusers, k):
            P = np.stack([results[m]["proba"] for m in subset])  # (k, n, C)
            votes = np.stack([results[m]["pred"] for m in subset])  # members' own decisions
            hard = majority_vote(votes, n_classes=P.shape[2], probas=P)
            soft = vote_probas(P, voting="soft")[0]
            out[f"vote({'+'.join(subset)})"] = score(y, hard, folds, 0, seed)
            out[f"soft({'+'.join(subset)})"] = score(y, soft, folds, 0, seed)
    # Intervals only for the 8 best and for the all-fuser votes (the rest keep NaN).
    keep = sorted(out, key=lambda k: -out[k]["macro_f1"])[:8] + [
        k for k in out if k.count("+") == len(fusers) - 1
    ]
    default = "+".join(m for m in fusers if m in DEFAULT_ENSEMBLE)
    keep += [f"vote({default})", f"soft({default})"]
    keep = [k for k in dict.fromkeys(keep) if k in out]
    for k in keep:
        out[k] = score(y, out[k]["pred"], folds, n_boot, seed)
    for v in out.values():
        v.pop("pred", None)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    args = parse_args(argv)
    if args.task != "rakuten":
        return fashion_table1(args)
    from tqdm.auto import tqdm

    from prodcat.predictions import read_model_outputs
    from prodcat.splits import kfold_indices

    folder = args.data / args.split
    outputs = read_model_outputs(folder)
    models = outputs.models if args.models == "all" else args.models.split(",")
    outputs = outputs.select(models)
    y_lab = outputs.require_labels()
    classes = outputs.classes
    y = np.asarray([classes.index(v) for v in y_lab])
    X = outputs.stack(models)
    folds = list(kfold_indices(y, n_splits=args.folds, seed=args.seed))
    print(f"{args.split}: n={len(y)}, models={models}, {args.folds}-fold CV (seed {args.seed})", flush=True)

    summary: dict[str, Any] = {"split": args.split, "models": models, "n": len(y), "folds": args.folds}
    singles = {m: score(y, outputs.probas[m].argmax(1), folds, args.n_boot, args.seed) for m in models}
    summary["inputs"] = singles
    results: dict[str, dict[str, Any]] = {}
    methods = [m for m in args.methods.split(",") if m]
    for label in tqdm(methods, desc="methods"):
        key = _key(args.split, models, label, METHODS[label], args.folds, args.seed)
        t0 = time.perf_counter()
        results[label] = run_method(label, X, y_lab, classes, len(models), folds, args.cache, key)
        s = score(y, results[label]["pred"], folds, args.n_boot, args.seed)
        s["fit_s_per_fold"] = float(np.mean(results[label]["fit_s"]))
        summary.setdefault("fusers", {})[label] = s
        print(
            f"  {label:14s} macro-F1 {s['macro_f1']:.4f} [{s['ci'][0]:.4f}, {s['ci'][1]:.4f}]  folds "
            f"{' '.join(f'{f:.4f}' for f in s['folds'])}  fit {s['fit_s_per_fold']:.1f}s/fold "
            f"({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    ens = ensembles(results, y, folds, args.n_boot, args.seed)
    summary["ensembles"] = ens
    best = sorted(ens, key=lambda k: -ens[k]["macro_f1"])[:8]
    print("inputs alone:")
    for m, s in singles.items():
        print(f"  {m:16s} {s['macro_f1']:.4f} [{s['ci'][0]:.4f}, {s['ci'][1]:.4f}]")
    print("best ensembles (selected on these same OOF rows: optimistic):")
    for k in best:
        print(f"  {ens[k]['macro_f1']:.4f} [{ens[k]['ci'][0]:.4f}, {ens[k]['ci'][1]:.4f}]  {k}")
    default = f"vote({'+'.join(m for m in methods if m in DEFAULT_ENSEMBLE)})"
    if default in ens:
        d = ens[default]
        print(f"  default ensemble {default}: {d['macro_f1']:.4f} [{d['ci'][0]:.4f}, {d['ci'][1]:.4f}]")
    all_members = "+".join(m for m in methods if m != "mean-uniform")
    for kind in ("vote", "soft"):
        k = f"{kind}({all_members})"
        if k in ens:
            print(
                f"  all fusers, {kind}: {ens[k]['macro_f1']:.4f} [{ens[k]['ci'][0]:.4f}, {ens[k]['ci'][1]:.4f}]"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return summary


def fashion_table1(args: argparse.Namespace) -> dict[str, Any]:
    """Table 1 on the fashion catalog: frozen text (e5-small) and image (EfficientNet-Lite0) embeddings.

    Outer K-fold; inside each outer training part the two logistic-regression heads give 4-fold OOF probabilities
    (what the decision-level fusers learn from, as in the paper) and are refit to predict the outer test part.
    Feature-level fusers learn from the embeddings of the outer training part directly.
    """
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from tqdm.auto import tqdm

    from prodcat.evaluate import table1
    from prodcat.fusion import FeatureFusion
    from prodcat.models import EmbeddingClassifier
    from prodcat.oof import align_proba, oof_predict_proba
    from prodcat.registry import create
    from prodcat.splits import kfold_indices

    df = pd.read_csv(args.fashion)
    df["image"] = [str(args.fashion.parent / p) for p in df["image"]]
    column = "title_masked" if args.task == "fashion-masked" else "title"
    cache = None if args.cache_dir == "none" else args.cache_dir
    Z = {
        "text": EmbeddingClassifier("e5-small", column=column, cache_dir=cache).embed(df)[0],
        "image": EmbeddingClassifier("efficientnet-lite0", column="image", cache_dir=cache).embed(df)[0],
    }
    y = df["label"].astype(str).to_numpy()
    folds = list(kfold_indices(y, n_splits=args.folds, seed=args.seed))
    rows = ["text alone", "image alone", "feature-level fusion (concat)", "feature-level fusion (sum)",
            "feature-level fusion (attention)", "decision-level fusion (paper-mlp)", "decision-level fusion (mean)",
            "decision-level fusion (logistic)", "ensemble"]  # fmt: skip
    pred = {r: np.empty(len(y), dtype=object) for r in rows}
    for tr, te in tqdm(folds, desc=f"{args.task} outer folds"):
        P_tr, P_te = [], []
        for mod, label in (("text", "text alone"), ("image", "image alone")):
            head = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300))
            res = oof_predict_proba(head, Z[mod][tr], y[tr], n_splits=4, seed=args.seed, progress=False)
            p_te = align_proba(res.estimator.predict_proba(Z[mod][te]), res.estimator.classes_, res.classes)
            P_tr.append(res.proba)
            P_te.append(p_te)
            pred[label][te] = res.classes[p_te.argmax(1)]
        X_tr, X_te = np.hstack(P_tr), np.hstack(P_te)
        for method in ("paper-mlp", "mean", "logistic"):
            est = create("fusion", method, n_models=2).fit(X_tr, y[tr])
            pred[f"decision-level fusion ({method})"][te] = est.predict(X_te)
        pred["ensemble"][te] = create("fusion", "ensemble", n_models=2).fit(X_tr, y[tr]).predict(X_te)
        for combine in ("concat", "sum", "attention"):
            est = FeatureFusion(combine=combine, seed=args.seed).fit({k: v[tr] for k, v in Z.items()}, y[tr])
            pred[f"feature-level fusion ({combine})"][te] = est.predict({k: v[te] for k, v in Z.items()})
    table = table1(y, pred, reference="text alone", n_boot=args.n_boot, seed=args.seed)
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    summary = {
        "task": args.task,
        "n": len(y),
        "folds": args.folds,
        "table1": table.reset_index().to_dict("records"),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
