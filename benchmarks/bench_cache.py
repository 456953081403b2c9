"""Embedding-cache lookups as the cache grows (issue 15): a streaming run looks up one batch at a time.

Builds (once) a synthetic embedding cache of ``--chunks`` chunk files of 4,096 keys each (16-d vectors), then
looks up ``--batches`` batches of ``--batch`` keys, each batch found in one chunk, as a streaming prediction over
a cached catalog does, and prints the mean seconds per lookup. Run it against two code trees, the two whole
processes in turn a few times, each under ``/usr/bin/time -v`` (time and peak memory), and take the ratios pair
by pair:

    /usr/bin/time -v env PYTHONPATH=OLD/src python benchmarks/bench_cache.py   # B
    /usr/bin/time -v env PYTHONPATH=src python benchmarks/bench_cache.py       # A
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from prodcat.cache import EmbeddingStore, text_key

ROWS = 4096


def build(root: Path, chunks: int) -> None:
    store = EmbeddingStore(root, "bench-cache")
    if store.path is not None and len(list(store.path.glob("*.npz"))) == chunks:
        return
    store.clear()
    rng = np.random.default_rng(0)
    for c in range(chunks):
        keys = [text_key(f"product {c * ROWS + i}") for i in range(ROWS)]
        store.put(keys, rng.standard_normal((ROWS, 16)).astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/prodcat-bench-cache"))
    ap.add_argument("--chunks", type=int, default=250, help="chunk files (x 4,096 keys): 250 ~ 1M items")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    build(args.cache_dir, args.chunks)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    found = 0
    for _ in range(args.batches):
        start = int(rng.integers(0, args.chunks)) * ROWS
        keys = [text_key(f"product {start + i}") for i in range(args.batch)]
        _, ok = EmbeddingStore(args.cache_dir, "bench-cache").lookup(keys)
        found += int(ok.sum())
    per = (time.perf_counter() - t0) / args.batches
    print(json.dumps({"chunks": args.chunks, "items": args.chunks * ROWS, "batch": args.batch,
                      "found": found, "seconds_per_lookup": round(per, 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
