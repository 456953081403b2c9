"""End-to-end benchmark of `prodcat train / evaluate / predict` on the fashion catalog (issue 6 targets).

For each task (fashion-full: text column `title`; fashion-masked: `title_masked`) on an 80/20 stratified split
(seed 0), written as two CSV files with absolute image paths, the benchmark runs the CLI exactly as a user would:

    prodcat train train.csv --out model [--text-columns title_masked]     # cold cache, then again warm
    prodcat evaluate model test.csv --out report
    prodcat predict model test.csv --out pred.parquet

and records the wall time of each command (process start included), the held-out macro-F1 of text, image and
fusion (from report/metrics.json), predict throughput (products/s, images included; for the whole process and for
the prediction loop alone, as `prodcat predict` reports it) and its ratio to the image encoder's own throughput on
the same products, measured in this process right after.

    python benchmarks/bench_pipeline.py --json bench-output/pipeline.json [--config default] [--tasks full,masked]

``--split-seeds 1,2,3`` repeats the quality part (cold train + evaluate) on other random 80/20 splits, to see how
much a held-out figure moves with the draw of the test products; ``--quality-only`` skips the warm run and the
speed measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from prodcat.splits import holdout_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion" / "products.csv"
TASKS = {"full": "title", "masked": "title_masked"}
PRODCAT = [str(Path(sys.executable).with_name("prodcat"))]  # the console script of this environment


def _run(args: list[str], env: dict[str, str]) -> float:
    """Run a prodcat command; returns its wall time in seconds (raises with its output on failure)."""
    return _run_output(args, env)[0]


def _run_output(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run a prodcat command; returns its wall time in seconds and its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.run([*PRODCAT, *args], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"prodcat {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return round(dt, 1), proc.stdout


def split_files(data: Path, out: Path, seed: int = 0) -> tuple[Path, Path]:
    """The 80/20 stratified split (``seed``) of the catalog as two CSVs with absolute image paths."""
    df = pd.read_csv(data)
    df["image"] = [str((data.parent / p).resolve()) for p in df["image"]]
    tr, te = holdout_split(df["label"].astype(str).to_numpy(), test_size=0.2, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    df.iloc[tr].to_csv(out / "train.csv", index=False)
    df.iloc[te].to_csv(out / "test.csv", index=False)
    return out / "train.csv", out / "test.csv"


def encoder_throughput(model_dir: Path, test_csv: Path, text_column: str) -> float | None:
    """Products/s of the bundle's first image model's encoder alone on the test products (no cache)."""
    from prodcat.bundle import load_bundle
    from prodcat.catalog import read_catalog

    predictor = load_bundle(model_dir)
    df, _ = read_catalog(test_csv, text_columns=[text_column])
    image_models = [est for _, role, est in predictor.model.models if role == "image"]
    # a model kept as its fold models (prodcat.folds.FoldEnsemble) embeds with its first member's encoder
    encoders = [getattr(est, "estimators_", [est])[0] for est in image_models]
    encoders = [est for est in encoders if hasattr(est, "embed")]
    if not encoders:
        return None
    est = encoders[0]
    est.cache_dir = None
    t0 = time.perf_counter()
    est.embed(df)
    return len(df) / (time.perf_counter() - t0)


def run_task(task: str, args: argparse.Namespace, train_csv: Path, test_csv: Path) -> dict[str, object]:
    out = args.out
    cache = Path(tempfile.mkdtemp(prefix="prodcat-bench-cache-"))
    env = {**os.environ, "PRODCAT_CACHE_DIR": str(cache)}
    column = TASKS[task]
    cols = ["--text-columns", column]
    config = ["--config", args.config] if args.config else []
    model, report, pred = out / f"model-{task}", out / f"report-{task}", out / f"pred-{task}.parquet"
    n_test = len(pd.read_csv(test_csv, usecols=["id"]))
    result: dict[str, object] = {
        "task": task,
        "n_train": len(pd.read_csv(train_csv, usecols=["id"])),
        "n_test": n_test,
    }
    result["train_cold_s"] = _run(["train", str(train_csv), "--out", str(model), *cols, *config], env)
    result["stage_timings_cold_s"] = json.loads((model / "manifest.json").read_text())["metrics"]["timings_s"]
    if not args.quality_only:
        result["train_warm_s"] = _run(["train", str(train_csv), "--out", str(model), *cols, *config], env)
        result["warm_speedup"] = round(result["train_cold_s"] / result["train_warm_s"], 1)  # type: ignore[operator]
    result["evaluate_s"] = _run(["evaluate", str(model), str(test_csv), "--out", str(report)], env)
    metrics = json.loads((report / "metrics.json").read_text())
    result["test"] = {
        "macro_f1": metrics["macro_f1"],
        "macro_f1_ci": metrics["macro_f1_ci"],
        "per_modality": metrics["per_modality"],
        "per_model": {k: v["macro_f1"] for k, v in metrics["per_model"].items()},
    }
    if args.quality_only:
        result["load_avg_1m"] = os.getloadavg()[0]
        shutil.rmtree(cache, ignore_errors=True)
        print(json.dumps(result, indent=1), flush=True)
        return result
    # Prediction stores no embeddings (Predictor cache_dir=None), so every image is decoded and encoded; the
    # training cache folder is kept only for the one-off ONNX export of the image encoder.
    dt, stdout = _run_output(["predict", str(model), str(test_csv), "--out", str(pred)], env)
    result["predict_s"] = dt
    result["predict_products_per_s"] = round(n_test / dt, 1)
    # The command's own summary times the prediction loop alone (after imports and bundle loading): the rate a
    # long batch converges to, since start-up is paid once per process.
    summary = json.loads(next(line for line in stdout.splitlines() if line.startswith("{")))
    result["predict_loop_s"] = summary["seconds"]
    result["predict_loop_products_per_s"] = summary["products_per_s"]
    result["predict_startup_s"] = round(dt - summary["seconds"], 1)
    enc = encoder_throughput(model, test_csv, column)
    if enc is not None:
        result["image_encoder_products_per_s"] = round(enc, 1)
        result["predict_vs_encoder_ratio"] = round(result["predict_products_per_s"] / enc, 2)  # type: ignore[operator]
        result["predict_loop_vs_encoder_ratio"] = round(summary["products_per_s"] / enc, 2)
    result["load_avg_1m"] = os.getloadavg()[0]
    shutil.rmtree(cache, ignore_errors=True)
    print(json.dumps(result, indent=1), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--config", default=None, help="training config (default: the packaged default)")
    ap.add_argument("--tasks", default="full,masked")
    ap.add_argument("--out", type=Path, default=Path("bench-output/pipeline"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--split-seeds",
        default="0",
        help="comma-separated seeds of the 80/20 split (0: the split of the notes)",
    )
    ap.add_argument("--quality-only", action="store_true", help="cold train + evaluate only")
    args = ap.parse_args()
    results = []
    base = args.out
    for seed in (int(s) for s in args.split_seeds.split(",")):
        args.out = base if seed == 0 else base / f"seed{seed}"
        train_csv, test_csv = split_files(args.data, args.out / "split", seed)
        for task in args.tasks.split(","):
            results.append({"split_seed": seed, **run_task(task, args, train_csv, test_csv)})
    args.out = base
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
