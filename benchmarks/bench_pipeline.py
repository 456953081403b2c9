"""End-to-end benchmark of `prodcat train / evaluate / predict` on the fashion catalog (issue 6 targets).

For each task (fashion-full: text column `title`; fashion-masked: `title_masked`) on an 80/20 stratified split:
macro-F1 of text, image and fusion on the 20 %, training wall time with a cold and a warm embedding cache, batch
predict throughput (products/s, images included) and its ratio to the image encoder's own throughput on the same
products.

    python benchmarks/bench_pipeline.py --json bench-output/pipeline.json [--config default] [--tasks full,masked]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from prodcat.bundle import load_bundle, save_bundle
from prodcat.catalog import read_catalog
from prodcat.config import load_config
from prodcat.pipeline import train
from prodcat.predict import batch_predict
from prodcat.report import evaluate_to_dir
from prodcat.splits import holdout_split

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion" / "products.csv"
TASKS = {"full": "title", "masked": "title_masked"}


def run_task(task: str, args: argparse.Namespace, out: Path) -> dict[str, object]:
    df, _ = read_catalog(args.data, text_columns=[TASKS[task]])
    tr, te = holdout_split(df["label"].to_numpy(), test_size=0.2, seed=0)
    train_df, test_df = df.iloc[tr].reset_index(drop=True), df.iloc[te].reset_index(drop=True)
    cache = Path(tempfile.mkdtemp(prefix="prodcat-bench-cache-"))
    cfg = load_config(args.config, cache_dir=str(cache))
    result: dict[str, object] = {"task": task, "n_train": len(train_df), "n_test": len(test_df)}
    t0 = time.perf_counter()
    model = train(train_df, cfg)
    result["train_cold_s"] = round(time.perf_counter() - t0, 1)
    result["stage_timings_cold_s"] = model.metrics["timings_s"]
    t0 = time.perf_counter()
    model = train(train_df, cfg)
    result["train_warm_s"] = round(time.perf_counter() - t0, 1)
    result["warm_speedup"] = round(result["train_cold_s"] / result["train_warm_s"], 1)  # type: ignore[operator]
    save_bundle(model, out / f"model-{task}")
    metrics = evaluate_to_dir(model, test_df, out / f"report-{task}", title=f"fashion-{task}")
    result["test"] = {
        "macro_f1": metrics["macro_f1"],
        "macro_f1_ci": metrics["macro_f1_ci"],
        "per_modality": metrics["per_modality"],
        "per_model": {k: v["macro_f1"] for k, v in metrics["per_model"].items()},
    }
    predictor = load_bundle(out / f"model-{task}")  # no embedding cache at prediction time
    t0 = time.perf_counter()
    counts = batch_predict(predictor, test_df, out / f"pred-{task}.parquet", chunk_size=1024)
    dt = time.perf_counter() - t0
    result["predict_products_per_s"] = round(counts["rows"] / dt, 1)
    image_models = [
        est for _, role, est in predictor.model.models if role == "image" and hasattr(est, "embed")
    ]
    if image_models:
        t0 = time.perf_counter()
        image_models[0].embed(test_df)
        enc = len(test_df) / (time.perf_counter() - t0)
        result["image_encoder_products_per_s"] = round(enc, 1)
        result["predict_vs_encoder_ratio"] = round(result["predict_products_per_s"] / enc, 2)  # type: ignore[operator]
    shutil.rmtree(cache, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--config", default=None, help="training config (default: the packaged default)")
    ap.add_argument("--tasks", default="full,masked")
    ap.add_argument("--out", type=Path, default=Path("bench-output/pipeline"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_task(t, args, args.out) for t in args.tasks.split(",")]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
