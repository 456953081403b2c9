"""A saved fuser's prediction over a large batch: time and peak memory (issues 15 and 19).

Loads the fusion state of a trained bundle (``fusion.json`` + ``fusion.safetensors``, no skops, no encoders) and
predicts ``--rows`` rows of random class-probability vectors (one Dirichlet draw per model block) in batches of
``--batch`` rows, as ``prodcat predict`` does chunk by chunk. Run it against two code trees, the two whole
processes in turn a few times, each under ``/usr/bin/time -v`` (time and peak memory), ratios pair by pair:

    /usr/bin/time -v env PYTHONPATH=OLD/src python benchmarks/bench_fuser_batch.py MODEL   # B
    /usr/bin/time -v env PYTHONPATH=src python benchmarks/bench_fuser_batch.py MODEL       # A
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from prodcat.ensemble import labels_and_proba
from prodcat.fusion import loads_fuser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a trained bundle folder")
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=2048)
    args = ap.parse_args()
    fuser = loads_fuser(
        (args.model / "fusion.json").read_bytes(), (args.model / "fusion.safetensors").read_bytes()
    )
    n_classes, n_models = (
        len(fuser.classes_),
        len(json.loads((args.model / "manifest.json").read_text())["models"]),
    )
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for start in range(0, args.rows, args.batch):
        b = min(args.batch, args.rows - start)
        X = np.hstack([rng.dirichlet(np.full(n_classes, 0.1), size=b) for _ in range(n_models)])
        labels_and_proba(fuser, X)
    print(json.dumps({"rows": args.rows, "seconds": round(time.perf_counter() - t0, 3)}))


if __name__ == "__main__":
    main()
