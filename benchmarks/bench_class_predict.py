"""Per-product prediction cost of bundles with different class counts, on the same products, in one process.

Issue 16's goal: "the per-product prediction cost at 3,000 classes within 2x of 55". The bundles are those
``bench_classes.py --keep-in DIR`` leaves (``DIR/<size>/bundle``); every bundle predicts the same fashion products
(the labels differ between the catalogs, the inputs do not), in turn, ``--repeats`` times:

- ``cached``: ``Predictor.predict_frame`` with the embeddings read from the cache (``--cache-dir``, default the
  default cache, filled by ``bench_classes.py``): the heads, the fusion, calibration, top k and the taxonomy, i.e.
  what grows with the class count;
- ``end_to_end``: a predictor without a cache: every title and photo encoded, as for new products.

Medians of CPU ms (``time.process_time``, all threads) and wall ms per product, and each bundle's ratio to the
first. The ONNX image encoder's threads spin while they wait, so its CPU time depends on how busy the machine is:
run on a quiet machine and read the wall figures beside the CPU ones.

    python benchmarks/bench_class_predict.py bench-output/classes-s10/55/bundle bench-output/classes-s10/3000/bundle
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion" / "products.csv"


def _timed(fn: Any, n: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per product of one call of ``fn``."""
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return (time.process_time() - c0) / n * 1000, (time.perf_counter() - w0) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path, help="bundle folders; ratios are to the first")
    ap.add_argument("--products", type=int, default=2000, help="products predicted from the cache")
    ap.add_argument("--end-to-end", type=int, default=300, help="products encoded and predicted (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache-dir", default="auto", help="embedding cache of the cached runs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from prodcat.bundle import load_bundle
    from prodcat.catalog import read_catalog

    df = read_catalog(DATA, text_columns=["title"], label_column="label", id_column="id")[0]
    sample = df.sample(args.products, random_state=0).reset_index(drop=True)
    few = sample.head(args.end_to_end)
    cached = {b: load_bundle(b, cache_dir=args.cache_dir) for b in args.bundles}
    fresh = {b: load_bundle(b, cache_dir=None) for b in args.bundles}
    for b in args.bundles:  # warm: caches opened, ONNX sessions and USE loaded, stacked heads built
        cached[b].predict_frame(sample.head(50))
        if len(few):
            fresh[b].predict_frame(few.head(20))
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {
        str(b): {"cached": [], "end_to_end": []} for b in args.bundles
    }
    for _ in range(args.repeats):
        for b in args.bundles:
            runs[str(b)]["cached"].append(_timed(lambda b=b: cached[b].predict_frame(sample), len(sample)))
            if len(few):
                runs[str(b)]["end_to_end"].append(_timed(lambda b=b: fresh[b].predict_frame(few), len(few)))
    out: dict[str, Any] = {"products": len(sample), "end_to_end_products": len(few), "bundles": []}
    first: dict[str, float] = {}
    for b in args.bundles:
        rec: dict[str, Any] = {"bundle": str(b), "classes": len(cached[b].model.classes)}
        for mode, times in runs[str(b)].items():
            if not times:
                continue
            cpu = statistics.median(t[0] for t in times)
            wall = statistics.median(t[1] for t in times)
            rec[f"{mode}_cpu_ms"], rec[f"{mode}_wall_ms"] = round(cpu, 3), round(wall, 3)
            for key, value in ((f"{mode}_cpu_ms", cpu), (f"{mode}_wall_ms", wall)):
                first.setdefault(key, value)
                rec[f"{key}_ratio"] = round(value / first[key], 2)
        out["bundles"].append(rec)
    out["load_average"] = os.getloadavg()
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
