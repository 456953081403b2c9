"""Start-up benchmark: ``prodcat predict`` on a one-row catalog against ``python -c "import numpy, sklearn"``
(each a fresh process, run in turn A B A B ... so that the ratio holds while a shared machine's speed drifts),
and the time from starting ``prodcat serve`` to its first answered ``POST /predict``.

Example (the command recorded in docs/bench/speed.md)::

    python benchmarks/bench_startup.py --model bench-output/pipeline/model-full --runs 5

The one-row catalog is the first product of the fashion catalog (title + image), written to a temporary folder.
Every figure is a wall-clock time of a whole process, seen from outside; the ratio is the median of the pairwise
ratios.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "data" / "fashion" / "products.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model bundle folder")
    p.add_argument(
        "--catalog", type=Path, default=DEFAULT_CATALOG, help="catalog whose first row is predicted"
    )
    p.add_argument("--runs", type=int, default=5, help="counted runs of each command (after one warm-up)")
    p.add_argument("--serve-timeout", type=float, default=120.0, help="give up on the server after this long")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    return p.parse_args(argv)


def _one_row(catalog: Path, folder: Path) -> tuple[Path, dict[str, str]]:
    with catalog.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        row = next(reader)
        fields = list(reader.fieldnames or [])
    if row.get("image"):
        row["image"] = str((catalog.parent / row["image"]).resolve())
    path = folder / "one.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerow(row)
    return path, row


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_first_response(model: Path, row: dict[str, str], timeout: float) -> float:
    """Seconds from starting ``prodcat serve`` to the first 200 answer of ``POST /predict`` (title + image)."""
    port = _free_port()
    body = {"title": row.get("title", "")}
    if row.get("image"):
        body["image_base64"] = base64.b64encode(Path(row["image"]).read_bytes()).decode()
    data = json.dumps(body).encode()
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "prodcat", "serve", str(model), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"prodcat serve exited with status {proc.returncode}")
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/predict", data=data, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    if resp.status == 200:
                        json.load(resp)
                        return time.perf_counter() - start
            except OSError:  # not listening yet (refused) or not ready (503)
                time.sleep(0.02)
        raise TimeoutError(f"no answer from prodcat serve within {timeout} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        one, row = _one_row(args.catalog, Path(tmp))
        predict = [
            sys.executable,
            "-m",
            "prodcat",
            "predict",
            str(args.model),
            str(one),
            "-o",
            f"{tmp}/out.csv",
        ]
        baseline = [sys.executable, "-c", "import numpy, sklearn"]
        _wall(predict), _wall(baseline)  # warm-up: page cache, .pyc files
        pairs = [(_wall(predict), _wall(baseline)) for _ in range(args.runs)]
        serve_pairs = [
            (serve_first_response(args.model, row, args.serve_timeout), _wall(baseline))
            for _ in range(max(1, args.runs // 2))
        ]
    result = {
        "predict_one_row_s": statistics.median(p for p, _ in pairs),
        "import_numpy_sklearn_s": statistics.median(b for _, b in pairs),
        "ratio": statistics.median(p / b for p, b in pairs),
        "serve_first_response_s": statistics.median(s for s, _ in serve_pairs),
        "serve_ratio": statistics.median(s / b for s, b in serve_pairs),
        "runs": args.runs,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
