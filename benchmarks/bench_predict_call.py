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
from pathlib import Path

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
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def _median_ms(fn: object, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 2)


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
    for name, frame in (("text_only", text), ("text_and_photo", both)):
        for _ in range(10):
            predictor.predict_frame(frame)
        out[f"{name}_ms"] = _median_ms(lambda f=frame: predictor.predict_frame(f), args.calls)
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
    print(json.dumps(out))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
