"""Image benchmark: EfficientNet-Lite with its top fine-tuned on cached activations (``effnet-lite0-top``) against
the frozen features + logistic head of the default config (``embed:efficientnet-lite0``), on the fashion catalog.

Example (the commands recorded in docs/bench/image.md)::

    nice -n 5 python benchmarks/bench_image_top.py --per-class 100 --eval holdout --json bench-output/top-sub.json
    nice -n 5 python benchmarks/bench_image_top.py --json bench-output/image-top.json

For each model, in one run: a cold fit on every row (an empty embedding cache: ONNX export, decoding, the frozen
network, then the head or the top's training), timed in wall and CPU seconds, so the two models' training times
compare as a ratio under the same load; then the quality with the embeddings cached by that fit: macro-F1 and
accuracy of K-fold out-of-fold predictions (``--eval oof``, seed 42, ``prodcat.oof.oof_predict_proba``) or of one
stratified 80/20 holdout (``--eval holdout``, quick, for sizing runs on a subsample).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion" / "products.csv"
# The image model of the default config (src/prodcat/configs/default.yaml).
FROZEN = (
    "embed:efficientnet-lite0",
    {"embedder_params": {"image_size": 160, "aspect": "auto", "extra_stages": 3}},
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    p.add_argument("--per-class", type=int, default=None, help="use only the first N rows of each class")
    p.add_argument("--eval", choices=["oof", "holdout"], default="oof")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--top", default="effnet-lite0-top", help="registered name of the top model")
    p.add_argument(
        "--top-params", type=json.loads, nargs="+", default=[{}],
        help="JSON parameters of the top model, one run each, e.g. '{\"train_stages\": 1}'",
    )  # fmt: skip
    p.add_argument("--no-frozen", action="store_true", help="skip the frozen baseline")
    p.add_argument("--no-cold", action="store_true", help="skip the cold fits (quality only, cache reused)")
    p.add_argument(
        "--frozen-cold-only", action="store_true",
        help="time the frozen model's cold fit but skip its quality run (known: docs/bench/image.md)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="CPU threads of both models (default: all)")
    p.add_argument("--cache-dir", type=Path, default=Path("bench-output/image-top-cache"))
    p.add_argument("--json", type=Path, default=None, help="write all figures here")
    return p.parse_args(argv)


def load_catalog(path: Path, per_class: int | None) -> Any:
    from prodcat.catalog import read_catalog

    df, _ = read_catalog(path, label_column="label", image_column="image")
    if per_class:
        df = df.groupby("label", sort=False).head(per_class).reset_index(drop=True)
    return df


def build(name: str, params: dict[str, Any], cache_dir: Path, threads: int | None) -> Any:
    from prodcat import registry

    params = {**params, "cache_dir": str(cache_dir)}
    if threads and name.startswith("embed:"):
        params["embedder_params"] = {**params.get("embedder_params", {}), "threads": threads}
    elif threads:
        params["threads"] = threads
    return registry.create("image-model", name, **params)


def cold_fit(
    name: str, params: dict[str, Any], df: Any, args: argparse.Namespace, cache_dir: Path
) -> dict[str, Any]:
    """Fit on every row with an empty cache folder; wall and CPU seconds."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    est = build(name, params, cache_dir, args.threads)
    t, c = time.perf_counter(), time.process_time()
    est.fit(df, df["label"].to_numpy())
    out = {"cold_fit_s": time.perf_counter() - t, "cold_fit_cpu_s": time.process_time() - c}
    for attr in ("best_epoch_", "best_val_f1_", "history_"):
        if hasattr(est, attr):
            out[attr.rstrip("_")] = getattr(est, attr)
    return out


def quality(
    name: str, params: dict[str, Any], df: Any, args: argparse.Namespace, cache_dir: Path
) -> dict[str, Any]:
    from prodcat.evaluate import macro_f1
    from prodcat.oof import oof_predict_proba
    from prodcat.splits import holdout_split

    y = df["label"].to_numpy()
    est = build(name, params, cache_dir, args.threads)
    t = time.perf_counter()
    if args.eval == "oof":
        res = oof_predict_proba(est, df, y, n_splits=args.folds, seed=args.seed, refit=False, progress=False)
        truth, pred = y, res.classes[res.proba.argmax(axis=1)]
    else:
        tr, te = holdout_split(y, test_size=0.2, seed=args.seed)
        est.fit(df.iloc[tr], y[tr])
        truth, pred = y[te], est.classes_[est.predict_proba(df.iloc[te]).argmax(axis=1)]
    return {
        "eval": args.eval,
        "eval_s": time.perf_counter() - t,
        "macro_f1": macro_f1(truth, pred),
        "accuracy": float(np.mean(truth == pred)),
    }


def run(
    name: str, params: dict[str, Any], df: Any, args: argparse.Namespace, tag: str, *, score: bool = True
) -> dict[str, Any]:
    cache_dir = args.cache_dir / tag
    out: dict[str, Any] = {"model": name, "params": params}
    if not args.no_cold:
        out.update(cold_fit(name, params, df, args, cache_dir))
    if score:
        out.update(quality(name, params, df, args, cache_dir))
    shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items() if k != "history"}
    print(json.dumps(shown), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    df = load_catalog(args.catalog, args.per_class)
    print(f"{len(df)} products, {df['label'].nunique()} classes", flush=True)
    results: list[dict[str, Any]] = []
    if not args.no_frozen:
        results.append(run(*FROZEN, df, args, "frozen", score=not args.frozen_cold_only))
    for params in args.top_params:
        results.append(run(args.top, params, df, args, "top0"))  # one activation cache for every config
    if not args.no_frozen and not args.no_cold:
        base = results[0]["cold_fit_s"]
        for r in results[1:]:
            r["cold_fit_ratio_to_frozen"] = r["cold_fit_s"] / base
            print(
                f"{r['model']} {r['params']}: cold fit {r['cold_fit_ratio_to_frozen']:.2f}x the frozen model's"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"n": len(df), "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
