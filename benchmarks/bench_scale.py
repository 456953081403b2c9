"""Peak memory and throughput of ``prodcat predict`` against catalog size (issue 15; docs/bench/scale.md).

Catalogs are the fashion catalog's rows replicated (ids made unique) up to each size and written to CSV in chunks
(the generator never holds a whole catalog):

* ``text``: title and label, no image column, plus one 4 KB ``notes`` passthrough column per row (real catalogs
  carry long descriptions and attributes): the layout issue 15 measured (1.19 GB at 10k rows, 4.28 GB at 100k);
* ``images``: the same plus the image path of each row (replicated photos are the same files).

Each size runs ``prodcat predict`` in a fresh process; its peak RSS comes from ``os.wait4`` (``ru_maxrss`` of
that child only), its products/s from the JSON line the command prints (prediction loop, after warm-up), and
the wall time covers everything (imports, bundle load, reading, writing). ``--engine ray --workers N`` passes
through to the command (Ray's own processes are not in the RSS figure: it is the driver's).

    nice -n 5 python benchmarks/bench_scale.py --model /tmp/fash15 --variant text --rows 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion" / "products.csv"
NOTE_BYTES = 4096


def make_catalog(n: int, variant: str, path: Path, *, source: Path = FASHION) -> Path:
    """Write ``n`` replicated fashion rows to ``path`` (reused when it exists with the right row count)."""
    marker = path.with_suffix(".rows")
    if path.exists() and marker.exists() and marker.read_text() == str(n):
        return path
    base = pd.read_csv(source, dtype=str, keep_default_na=False)
    cols = ["id", "title", "label"] + (["image"] if variant == "images" else [])
    base = base[cols].copy()
    if variant == "images":
        base["image"] = [str((source.parent / p).resolve()) for p in base["image"]]
    note = ("lorem ipsum dolor sit amet, " * (NOTE_BYTES // 28 + 1))[:NOTE_BYTES]
    path.parent.mkdir(parents=True, exist_ok=True)
    written, copy = 0, 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        while written < n:
            part = base.iloc[: n - written].copy()
            part["id"] = part["id"] + f"-{copy}"
            part["notes"] = note
            part.to_csv(fh, header=written == 0, index=False)
            written += len(part)
            copy += 1
    marker.write_text(str(n))
    return path


def run_predict(model: Path, catalog: Path, out: Path, extra: list[str], src: str | None) -> dict[str, float]:
    """One ``prodcat predict`` in a fresh process: peak RSS (MB), wall seconds, and the command's own figures."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    cmd = [sys.executable, "-m", "prodcat", "predict", str(model), str(catalog), "--out", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{stdout}")
    figures = next(json.loads(line) for line in stdout.splitlines() if line.startswith("{"))
    return {
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KB on Linux
        "wall_s": round(wall, 1),
        **figures,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="bundle trained on the fashion catalog")
    ap.add_argument("--variant", choices=("text", "images"), default="text")
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--work", type=Path, default=Path("bench-output/scale"), help="catalogs and outputs")
    ap.add_argument("--src", help="PYTHONPATH of the prodcat to measure (e.g. another checkout's src)")
    ap.add_argument("--json", type=Path, help="append one JSON line per run here")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `prodcat predict` options")
    args = ap.parse_args()
    extra = [a for a in args.extra if a != "--"]
    for n in args.rows:
        catalog = make_catalog(n, args.variant, args.work / f"{args.variant}-{n}.csv")
        out = args.work / f"pred-{args.variant}-{n}.parquet"
        result = {
            "variant": args.variant,
            "rows": n,
            "options": " ".join(extra),
            "src": args.src or "installed",
        }
        result |= run_predict(args.model, catalog, out, extra, args.src)
        shutil.rmtree(out) if out.is_dir() else out.unlink(missing_ok=True)  # --engine ray writes a folder
        print(json.dumps(result), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            with args.json.open("a") as fh:
                fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
