"""Review page: how long a page of the queue takes to serve as the queue grows to 100k products.

A synthetic queue (no model, no images: the page requests do not touch either) of 1k and 100k products, 10% of them
suspected mislabels, 50 classes, is served by the real app under uvicorn on loopback; one keep-alive client times
each kind of request (median and 95th percentile over ``--repeats`` requests): the first page, a deep page, a class
filter sorted by confidence, a reason filter sorted by descending confidence, the decided products after
``--decided`` decisions, and a decision itself (appended and fsynced before the answer). Also: building the queue
and its view (start-up), and ``QueueView.select`` alone.

    python benchmarks/bench_review.py --json bench-output/review.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _review_data import synthetic_queue
from _review_server import free_port


def timed(fn: Any, repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 3),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
    }


def serve(app: Any) -> tuple[Any, str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def bench_size(n: int, *, repeats: int, decided: int, folder: Path) -> dict[str, Any]:
    import httpx

    from prodcat.review.app import create_app
    from prodcat.review.decisions import DecisionLog
    from prodcat.review.queue import QueueView

    t0 = time.perf_counter()
    queue = synthetic_queue(n)
    view = QueueView(queue)
    startup_s = time.perf_counter() - t0
    log = DecisionLog(folder / f"decisions-{n}.csv")
    token = "bench"
    server, url = serve(create_app(view, log, reviewer="bench", token=token))
    out: dict[str, Any] = {"n": n, "build_queue_and_view_s": round(startup_s, 3)}
    label = queue.classes[7]
    out["select_only"] = timed(lambda: view.select(label=label, sort="confidence"), repeats)
    with httpx.Client(base_url=url, headers={"Origin": url, "X-Review-Token": token}) as c:

        def page(**params: Any) -> None:
            r = c.get("/api/items", params={"size": 50, **params})
            r.raise_for_status()

        ids = iter(queue.items["id"].tolist())

        def decide() -> None:
            c.post(
                "/api/decide", json={"id": next(ids), "action": "keep", "reviewer": "bench"}
            ).raise_for_status()

        requests = {
            "first page": lambda: page(),
            "deep page (middle of the queue)": lambda: page(page=(n // 50) // 2),
            "class filter, by confidence": lambda: page(label=label, sort="confidence"),
            "reason filter, by confidence desc": lambda: page(reason="review", sort="-confidence"),
        }
        for name, fn in requests.items():
            fn()  # warm
            out[name] = timed(fn, repeats)
        out[f"decision (append + fsync), {decided} in a row"] = timed(decide, decided)
        out["decided products, first page"] = timed(lambda: page(status="decided"), repeats)
    server.should_exit = True
    log.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000", help="Queue sizes, comma-separated.")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--decided", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            results.append(bench_size(n, repeats=args.repeats, decided=args.decided, folder=Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    small, large = results[0], results[-1]
    print(
        f"\n| request | {small['n']:,} products: median / p95 ms | {large['n']:,}: median / p95 ms | ratio |"
    )
    print("|---|---|---|---|")
    for key, value in large.items():
        if isinstance(value, dict):
            s = small[key]
            print(
                f"| {key} | {s['median_ms']:.2f} / {s['p95_ms']:.2f} | {value['median_ms']:.2f} / "
                f"{value['p95_ms']:.2f} | {value['median_ms'] / s['median_ms']:.1f}x |"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
