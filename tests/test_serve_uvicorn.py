"""A real uvicorn process on a loopback port (tests/_serve_fake.py): a bounded load test from 8 concurrent clients
with well-formed and malformed requests interleaved. Every good request must succeed, every bad one get its 4xx."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

LAUNCHER = Path(__file__).with_name("_serve_fake.py")
CLIENTS, REQUESTS = 8, 400


def read_port(proc: subprocess.Popen[str], timeout: float) -> int:
    """The 'PORT <n>' line the launcher prints once its socket is bound."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(timeout)
    if not box or not box[0].startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"launcher printed no port within {timeout} s: {box}")
    return int(box[0].split()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--port", "0", "--max-body-mb", "1", "--max-batch", "8"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    try:
        url = f"http://127.0.0.1:{read_port(proc, timeout=120)}"
        deadline = time.monotonic() + 120
        while True:  # the socket is bound before the app's start-up (model warm-up) finishes
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def image_bytes(i: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (60, 80), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(buf, format=fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, format="PNG")  # 36 Mpx > the 25 Mpx default, a few kB on the wire
    return buf.getvalue()


GOOD_TITLES = [
    ("Men blue tshirt", "Tshirts"),
    ("running shoe", "Shoes"),
    ("gold watch", "Watches"),
    ("denim jean", "Jeans"),
]


def good_request(i: int) -> tuple[dict[str, Any], str | None]:
    """httpx.request keyword arguments, and the label the fake must answer (None: a batch)."""
    title, label = GOOD_TITLES[i % len(GOOD_TITLES)]
    kind = i % 4
    if kind == 0:
        return {"method": "POST", "url": "/predict", "json": {"id": str(i), "title": title}}, label
    if kind == 1:
        body = {"id": str(i), "title": title, "image_base64": b64(image_bytes(i))}
        return {"method": "POST", "url": "/predict?top_k=3", "json": body}, label
    if kind == 2:
        files = {"image": (f"{i}.png", image_bytes(i, "PNG"), "image/png")}
        return {
            "method": "POST",
            "url": "/predict",
            "data": {"title": title, "id": str(i)},
            "files": files,
        }, label
    batch = [
        {"id": f"{i}-{j}", "title": t, "image_base64": b64(image_bytes(i + j))}
        for j, (t, _) in enumerate(GOOD_TITLES)
    ]
    return {"method": "POST", "url": "/predict/batch", "json": batch}, None


def bad_requests() -> list[tuple[str, dict[str, Any], int]]:
    """(what, httpx.request kwargs, expected status): the issue's malformed cases and a few more."""
    huge = b64(huge_png())
    post = {"method": "POST", "url": "/predict"}
    return [
        ("bad base64", {**post, "json": {"title": "x", "image_base64": "***not base64***"}}, 422),
        (
            "non-image bytes",
            {**post, "json": {"title": "x", "image_base64": b64(b"%PDF-1.4 not an image")}},
            422,
        ),
        ("truncated image", {**post, "json": {"title": "x", "image_base64": b64(image_bytes(3)[:200])}}, 422),
        ("huge image", {**post, "json": {"title": "x", "image_base64": huge}}, 422),
        (
            "huge image upload",
            {**post, "data": {"title": "x"}, "files": {"image": ("h.png", huge_png(), "image/png")}},
            422,
        ),
        ("missing fields", {**post, "json": {}}, 422),
        ("empty title, no image", {**post, "json": {"title": "  "}}, 422),
        ("wrong type", {**post, "json": {"title": ["a", "list"]}}, 422),
        ("wrong type in batch", {"method": "POST", "url": "/predict/batch", "json": [{"title": 7}]}, 422),
        ("not a list", {"method": "POST", "url": "/predict/batch", "json": {"title": "x"}}, 422),
        ("batch too large", {"method": "POST", "url": "/predict/batch", "json": [{"title": "x"}] * 9}, 422),
        (
            "invalid JSON",
            {**post, "content": b'{"title": ', "headers": {"content-type": "application/json"}},
            422,
        ),
        ("path as image", {**post, "json": {"title": "x", "image": "/etc/passwd"}}, 422),
        ("path as form image", {**post, "data": {"title": "x", "image": "/etc/passwd"}}, 422),
        ("top_k too large", {"method": "POST", "url": "/predict?top_k=1000", "json": {"title": "x"}}, 422),
        ("text too long", {**post, "json": {"title": "t" * 5000}}, 422),
        ("body too large", {**post, "json": {"title": "x", "description": "d" * 1_200_000}}, 413),
        ("wrong content type", {**post, "content": b"title=x", "headers": {"content-type": "text/csv"}}, 415),
    ]


def test_load_8_clients_good_and_malformed(server: str) -> None:
    bad = bad_requests()
    plan: list[tuple[str, dict[str, Any], int, str | None]] = []
    for i in range(REQUESTS):
        if i % 10 == 9:  # one request in ten is malformed
            what, kwargs, status = bad[(i // 10) % len(bad)]
            plan.append((what, kwargs, status, None))
        else:
            kwargs, label = good_request(i)
            plan.append(("good", kwargs, 200, label))
    local = threading.local()

    def send(step: tuple[str, dict[str, Any], int, str | None]) -> tuple[str, int, int, Any]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=server, timeout=30)
        what, kwargs, expected, label = step
        r = local.client.request(**kwargs)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        return what, expected, r.status_code, (label, body)

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(send, plan))

    wrong = [(what, expected, got, body) for what, expected, got, (_, body) in results if got != expected]
    assert not wrong, wrong[:5]
    for what, _, _, (label, body) in results:
        if what == "good" and label is not None:
            assert body["label"] == label, body
        elif what == "good":
            assert [p["label"] for p in body["predictions"]] == [lab for _, lab in GOOD_TITLES]
        elif isinstance(body, dict) and isinstance(body["detail"], list):  # 422s name the field and say why
            assert all(e["loc"] and e["msg"] for e in body["detail"]), body

    metrics = httpx.get(f"{server}/metrics").json()
    statuses: Counter[str] = Counter()
    for route in metrics["requests"].values():
        statuses.update(route["by_status"])
    assert not [s for s in statuses if s.startswith("5")], statuses
    assert statuses["200"] >= sum(1 for step in plan if step[2] == 200)
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_single_requests_are_answered_each_on_its_own(server: str) -> None:
    """Every malformed case alone, sequentially, on one connection: the connection survives the 4xx."""
    with httpx.Client(base_url=server, timeout=30) as client:
        for what, kwargs, expected in bad_requests():
            assert client.request(**kwargs).status_code == expected, what
        assert client.post("/predict", json={"title": "tshirt"}).json()["label"] == "Tshirts"
