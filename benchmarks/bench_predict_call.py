"""In-process cost of one ``Predictor.predict_frame`` call: one product (text only, and text + photo) and a
text-only batch, on a loaded bundle, after warm-up. What a server pays per request beyond HTTP, and the text-only
rate of ``prodcat predict`` beyond reading and writing files.

    python benchmarks/bench_predict_call.py --model MODEL_DIR [--calls 200] [--batch 2048] [--json out.json]

Products come from the fashion catalog (the first row for single calls, the first ``--batch`` titles for the
batch). Figures are wall-clock medians per call (ms) and products/s; run it beside other commands only to
compare them within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "data" / "fashion" / "products.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model bundle folder")
    p.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    p.add_argument("--calls", type=int, default=200, help="timed single-product calls of each kind")
    p.add_argument("--batch", type=int, default=2048, help="titles in the text-only batch (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the batch")
    p.add_argument(
        "--photo-batch",
        type=int,
        default=0,
        help="also: predict_frame on this many products with photos vs the image model alone on them (0: skip)",
    )
    p.add_argument(
        "--photo-catalog", type=Path, default=None, help="catalog for --photo-batch (default: --catalog)"
    )
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def _per_call(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """Median wall ms per call, and mean CPU ms per call (this process, all threads: what a loaded machine
    inflates least)."""
    times = []
    cpu0 = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu0) / calls
    return round(statistics.median(times) * 1e3, 2), round(cpu * 1e3, 2)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    from prodcat.bundle import load_bundle
    from prodcat.predict import warm_up

    predictor = load_bundle(args.model)
    warm_up(predictor)
    cat = pd.read_csv(args.catalog, dtype=str)
    first = cat.iloc[0]
    photo = (args.catalog.parent / str(first["image"])).read_bytes()
    text = pd.DataFrame({"id": ["a"], "title": [first["title"]], "description": [""], "image": [None]})
    both = text.assign(image=[photo])
    out: dict[str, object] = {"load_average": os.getloadavg()[0]}
    for name, frame in (("text_only", text), ("text_and_photo", both)) if args.calls else ():
        for _ in range(10):
            predictor.predict_frame(frame)
        wall, cpu = _per_call(lambda f=frame: predictor.predict_frame(f), args.calls)
        out[f"{name}_ms"], out[f"{name}_cpu_ms"] = wall, cpu
    if args.batch:
        rows = cat.head(args.batch)
        batch = pd.DataFrame(
            {"id": rows["id"], "title": rows["title"], "description": "", "image": None}
        ).reset_index(drop=True)
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predictor.predict_frame(batch)
            rates.append(len(batch) / (time.perf_counter() - start))
        out["text_only_batch_per_s"] = round(statistics.median(rates))
    if args.photo_batch:
        out["photo_batch"] = photo_batch(predictor, args.photo_catalog or args.catalog, args)
    print(json.dumps(out))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


def photo_batch(predictor: Any, catalog: Path, args: argparse.Namespace) -> dict[str, object]:
    """Products/s of ``predict_frame`` on the first ``--photo-batch`` products (title + photo) and of the bundle's
    first image model's ``embed`` alone on the same rows (cache off), in turn ``--repeats`` times; the ratios."""
    from prodcat.catalog import read_catalog

    df, _ = read_catalog(catalog, text_columns=["title"])
    df = df.head(args.photo_batch).reset_index(drop=True)
    image = next(est for _, role, est in predictor.model.models if role == "image")
    image = getattr(image, "estimators_", [image])[0]  # fold models (FoldEnsemble): one member's encoder
    image.cache_dir = None
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        image.embed(df)
        encoder = len(df) / (time.perf_counter() - start)
        start = time.perf_counter()
        predictor.predict_frame(df)
        predict = len(df) / (time.perf_counter() - start)
        runs.append({"encoder_per_s": round(encoder, 1), "predict_per_s": round(predict, 1)})
    ratios = [r["predict_per_s"] / r["encoder_per_s"] for r in runs]
    return {"rows": len(df), "runs": runs, "ratio_median": round(statistics.median(ratios), 3)}


if __name__ == "__main__":
    main()
