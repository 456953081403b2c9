"""Server latency benchmark: a real uvicorn process on loopback, single-product requests (title + real image) from
1 and 8 concurrent clients; p50/p90/p99 latency and throughput per level.

Examples (the commands recorded in docs/bench/serve.md)::

    python benchmarks/bench_serve.py --fake --json bench-output/serve-fake.json
    python benchmarks/bench_serve.py --model m --json bench-output/serve.json

``--model DIR`` serves a bundle with ``python -m prodcat.commands.serve DIR``; ``--fake`` serves the keyword fake
predictor of tests/_serve_fake.py (it decodes the image, so the figures are the server's own overhead: HTTP,
JSON, base64, image checks, queue and thread hand-off). Products are drawn (seeded) from the fashion catalog;
request bodies are built before timing starts. Clients are threads with one keep-alive connection each, in this
process: on a 2-core machine they share the CPU with the server, so latencies under 8 clients include that
contention (as they would for a co-located client).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CATALOG = ROOT.parent / "shared" / "data" / "fashion" / "products.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", type=Path, help="model bundle folder to serve")
    what.add_argument(
        "--fake", action="store_true", help="serve the keyword fake predictor (server overhead)"
    )
    p.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG, help="CSV with title and image columns")
    p.add_argument("--text-column", default="title")
    p.add_argument("--requests", type=int, default=400, help="timed requests per concurrency level")
    p.add_argument("--warmup", type=int, default=30, help="untimed requests before each level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument(
        "--payload",
        choices=["json", "multipart", "text"],
        default="json",
        help="json: base64 image in JSON; multipart: file upload; text: title only",
    )
    p.add_argument("--delay-ms", type=float, default=0.0, help="--fake only: simulated model time per call")
    p.add_argument("--merge-wait-ms", type=float, default=None, help="server setting (default: the server's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    return p.parse_args(argv)


def load_products(catalog: Path, text_column: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` products (title, id, image bytes) sampled from the catalog; images read once, here."""
    import pandas as pd

    df = pd.read_csv(catalog, dtype=str).dropna(subset=["image"])
    rows = df.sample(n=min(n, len(df)), random_state=seed)
    return [
        {"id": str(pid), "title": str(title), "image": (catalog.parent / str(image)).read_bytes()}
        for pid, title, image in zip(rows["id"], rows[text_column], rows["image"], strict=True)
    ]


def request_kwargs(product: dict[str, Any], payload: str) -> dict[str, Any]:
    if payload == "multipart":
        files = {"image": (f"{product['id']}.jpg", product["image"], "image/jpeg")}
        return {"data": {"id": product["id"], "title": product["title"]}, "files": files}
    body = {"id": product["id"], "title": product["title"]}
    if payload == "json":
        body["image_base64"] = base64.b64encode(product["image"]).decode()
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    extra = [] if args.merge_wait_ms is None else ["--merge-wait-ms", str(args.merge_wait_ms)]
    if args.fake:
        cmd = [
            sys.executable,
            str(ROOT / "tests" / "_serve_fake.py"),
            "--port",
            "0",
            "--delay-ms",
            str(args.delay_ms),
            *extra,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        port = int(line.split()[1])
    else:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "prodcat.commands.serve",
            str(args.model),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            *extra,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url)
    return proc, url


def wait_ready(proc: subprocess.Popen[str], url: str, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready after {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): the server's own cost, whatever the machine's load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_level(
    url: str, pid: int, warm: list[dict[str, Any]], timed: list[dict[str, Any]], clients: int
) -> dict[str, Any]:
    """Send the warm-up bodies, then every timed body once, from ``clients`` threads (one keep-alive
    connection each); latency per request in ms as the client sees it."""
    import httpx
    from tqdm import tqdm

    local = threading.local()
    lock = threading.Lock()
    bar = tqdm(total=len(timed), desc=f"{clients} client(s)", unit="req", leave=False)

    def send(kwargs: dict[str, Any]) -> tuple[float, int]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        start = time.perf_counter()
        status = local.client.post("/predict", **kwargs).status_code
        return (time.perf_counter() - start) * 1e3, status

    def timed_send(kwargs: dict[str, Any]) -> tuple[float, int]:
        out = send(kwargs)
        with lock:
            bar.update()
        return out

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, warm))  # connections opened, caches warm
        cpu0, start = cpu_seconds(pid), time.perf_counter()
        results = list(pool.map(timed_send, timed))
        wall, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu0
    bar.close()
    ms = np.array([r[0] for r in results])
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "clients": clients,
        "requests": len(timed),
        "errors": sum(1 for r in results if r[1] != 200),
        "p50_ms": round(float(p50), 2),
        "p90_ms": round(float(p90), 2),
        "p99_ms": round(float(p99), 2),
        "mean_ms": round(float(ms.mean()), 2),
        "throughput_rps": round(len(timed) / wall, 1),
        "server_cpu_ms_per_request": round(cpu / len(timed) * 1e3, 2),
    }


def server_view(url: str) -> dict[str, Any]:
    """What the server measured itself (/metrics): request and model-call latency, rows per model call."""
    import httpx

    m = httpx.get(f"{url}/metrics").json()
    request = m["requests"]["POST /predict"]["latency_ms"]
    return {
        "server_p50_ms": request["p50"],
        "server_p99_ms": request["p99"],
        "model_call_p50_ms": m["model"]["latency_ms"]["p50"],
        "rows_per_model_call": m["model"]["rows_per_call"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    products = load_products(args.catalog, args.text_column, args.requests + args.warmup, args.seed)
    bodies = [request_kwargs(p, args.payload) for p in products]
    timed, warm = bodies[args.warmup :], bodies[: args.warmup]
    levels = []
    load_before = os.getloadavg()[0]
    for clients in args.concurrency:
        proc, url = start_server(args)  # a fresh server per level: its /metrics then cover this level only
        try:
            level = run_level(url, proc.pid, warm, timed, clients)
            level.update(server_view(url))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        levels.append(level)
        print(
            f"{clients:2d} client(s): p50 {level['p50_ms']:.1f} ms  p90 {level['p90_ms']:.1f} ms  "
            f"p99 {level['p99_ms']:.1f} ms  {level['throughput_rps']:.0f} req/s  errors {level['errors']}  "
            f"| server-side p50 {level['server_p50_ms']:.1f} ms, model call p50 {level['model_call_p50_ms']:.1f} ms, "
            f"{level['rows_per_model_call']} rows/call, CPU {level['server_cpu_ms_per_request']:.1f} ms/req"
        )
    out = {
        "server": "fake" if args.fake else str(args.model),
        "payload": args.payload,
        "catalog": str(args.catalog),
        "delay_ms": args.delay_ms if args.fake else None,
        "merge_wait_ms": args.merge_wait_ms,
        "mean_image_bytes": round(float(np.mean([len(p["image"]) for p in products])), 1),
        "levels": levels,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
