"""The review server in process (FastAPI TestClient): the queue, filters and pages, decisions written at once,
undo, and the refusals: cross-origin or token-less writes, unknown hosts, images by anything but a queued id."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from _review_data import ReviewInputs, make_inputs, synthetic_queue
from prodcat.review.app import create_app, host_name
from prodcat.review.decisions import DecisionLog, read_decisions, replay
from prodcat.review.queue import Queue, QueueView, build_queue, predict_catalog

BASE = "http://127.0.0.1:8000"
TOKEN = "test-token"


@pytest.fixture(scope="module")
def inputs(demo_catalog: Path, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> ReviewInputs:
    return make_inputs(demo_catalog, tiny_bundle, tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def queue(inputs: ReviewInputs) -> Queue:
    from prodcat.bundle import load_bundle
    from prodcat.catalog import read_catalog

    predictor = load_bundle(inputs.model)
    df = read_catalog(inputs.catalog)[0]
    issues = pd.read_csv(inputs.audit / "issues.csv", dtype=str, keep_default_na=False)
    preds = predict_catalog(predictor, df, chunk_size=100, progress=False)
    return build_queue(df, preds, sources=predictor.sources(), classes=predictor.classes, issues=issues)


@pytest.fixture
def client(queue: Queue, tmp_path: Path) -> Iterator[TestClient]:
    log = DecisionLog(tmp_path / "decisions.csv")
    app = create_app(QueueView(queue, replay(log.events)), log, reviewer="ana", token=TOKEN)
    with TestClient(app, base_url=BASE) as c:
        c.headers.update({"Origin": BASE, "X-Review-Token": TOKEN})
        yield c
    log.close()


def decide(client: TestClient, pid: str, action: str, new_label: str | None = None, **kw: Any) -> Any:
    return client.post("/api/decide", json={"id": pid, "action": action, "new_label": new_label,
                                            "reviewer": "ana"}, **kw)  # fmt: skip


def test_queue_lists_audit_suspects_first_then_review_products(queue: Queue, inputs: ReviewInputs) -> None:
    items = queue.items
    flagged = items[(items["reasons"] & 1) > 0]
    issues = pd.read_csv(inputs.audit / "issues.csv", dtype={"id": str})
    assert set(flagged["id"]) == set(issues["id"])  # every suspected mislabel of the audit, and only those
    assert len(set(inputs.flipped) & set(flagged["id"])) >= len(inputs.flipped) // 2
    assert (flagged["audit_rank"].diff().dropna() > 0).all()  # by audit rank
    assert list(items.index[: len(flagged)]) == list(flagged.index)  # ... before the other products
    rest = items.iloc[len(flagged) :]
    assert (rest["confidence"].diff().dropna() >= 0).all()  # least confident first
    assert {"text", "image", "fusion"} <= set(queue.sources)
    assert queue.images[inputs.flipped[0]] is not None  # the catalog's image, kept on the server
    view = QueueView(queue)
    said = view.item(len(flagged))["said"]  # a review product: each modality model's own top label
    assert [s["source"] for s in said] == ["text", "image"] and all(s["label"] in queue.classes for s in said)
    said = view.item(0)["said"]  # a suspected mislabel: the audit's out-of-fold sources
    assert [s["source"] for s in said] == ["text", "image", "fusion"]
    assert view.item(0)["suggestion"] == said[-1]["label"]


def test_filters_sort_and_pages(client: TestClient, queue: Queue) -> None:
    label = queue.items["given_label"].iloc[0]
    r = client.get("/api/items", params={"label": label, "status": "all", "size": 5}).json()
    assert r["total"] == int((queue.items["given_label"] == label).sum())
    assert all(it["given_label"] == label for it in r["items"]) and len(r["items"]) == min(5, r["total"])
    r = client.get("/api/items", params={"reason": "mislabel", "sort": "-confidence", "size": 200}).json()
    conf = [it["confidence"] for it in r["items"]]
    assert conf == sorted(conf, reverse=True) and all("mislabel" in it["reasons"] for it in r["items"])
    first = client.get("/api/items", params={"size": 7, "page": 0}).json()
    second = client.get("/api/items", params={"size": 7, "page": 1}).json()
    ids = [it["id"] for it in first["items"] + second["items"]]
    assert ids == queue.items["id"].tolist()[:14] and first["pages"] == -(-len(queue.items) // 7)
    assert client.get("/api/items", params={"label": "no such class"}).status_code == 422
    assert client.get("/api/items", params={"size": 100_000}).status_code == 422


def test_decisions_are_written_at_once_and_undone(client: TestClient, queue: Queue, tmp_path: Path) -> None:
    a, b = queue.items["id"].iloc[0], queue.items["id"].iloc[1]
    target = next(c for c in queue.classes if c != queue.items["given_label"].iloc[0])
    r = decide(client, a, "relabel", target)
    assert r.status_code == 200 and r.json()["item"]["decision"]["new_label"] == target
    assert decide(client, b, "drop").status_code == 200
    rows = list(csv.DictReader((tmp_path / "decisions.csv").open()))  # on disk before the answer came
    assert [(x["id"], x["action"], x["reviewer"]) for x in rows] == [
        (a, "relabel", "ana"),
        (b, "drop", "ana"),
    ]
    assert rows[0]["old_label"] == queue.items["given_label"].iloc[0] and rows[0]["time"].endswith("+00:00")
    pending = client.get("/api/items", params={"size": 200}).json()
    assert pending["counts"]["decided"] == 2 and a not in {it["id"] for it in pending["items"]}
    undone = client.post("/api/undo", json={"reviewer": "ana"}).json()
    assert undone["undone"]["id"] == b and undone["item"]["decision"] is None
    assert client.post("/api/undo", json={"reviewer": "bo"}).status_code == 409  # bo decided nothing
    history = client.get("/api/history", params={"reviewer": "ana"}).json()["decisions"]
    assert [d["action"] for d in history] == ["undo", "drop", "relabel"]
    assert set(replay(read_decisions(tmp_path / "decisions.csv"))) == {a}


def test_decision_checks(client: TestClient, queue: Queue) -> None:
    a = queue.items["id"].iloc[0]
    assert decide(client, "not-queued", "keep").status_code == 404
    assert decide(client, a, "relabel", "no such class").status_code == 422
    assert decide(client, a, "relabel").status_code == 422
    assert decide(client, a, "rename").status_code == 422
    bad_name = {"id": a, "action": "skip", "reviewer": "x\ny"}
    assert client.post("/api/decide", json=bad_name).status_code == 422
    assert client.post("/api/decide", json={**bad_name, "reviewer": "x" * 100_000}).status_code == 413
    accepted = decide(client, a, "accept").json()["item"]["decision"]
    assert accepted["new_label"] == queue.items["suggestion"].iloc[0]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-Review-Token": ""}, 403),  # no token
        ({"X-Review-Token": "guess"}, 403),  # wrong token
        ({"Origin": "http://evil.example"}, 403),  # another site's page
        ({"Origin": "http://127.0.0.1:9999"}, 403),  # another port is another origin
        ({"Origin": "", "Referer": ""}, 403),  # no origin at all
        ({"Origin": "", "Referer": f"{BASE}/#page=2"}, 200),  # same-origin Referer when Origin is absent
        ({"Content-Type": "text/plain"}, 415),  # a form-like simple request
    ],
)
def test_writes_need_same_origin_and_token(
    client: TestClient, queue: Queue, headers: dict[str, str], status: int, tmp_path: Path
) -> None:
    sent = {"Origin": BASE, "X-Review-Token": TOKEN, **headers}
    client.headers.clear()
    client.headers.update({k: v for k, v in sent.items() if v})
    body = {"id": queue.items["id"].iloc[0], "action": "skip", "reviewer": "ana"}
    if "Content-Type" in headers:
        r = client.post("/api/decide", content=str(body).encode())
    else:
        r = client.post("/api/decide", json=body)
    assert r.status_code == status, r.text
    written = len(read_decisions(tmp_path / "decisions.csv"))
    assert written == (1 if status == 200 else 0)
    assert client.post("/api/undo", json={"reviewer": "ana"}).status_code == (
        200 if status == 200 else status
    )


def test_unknown_host_is_refused(client: TestClient) -> None:
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 400
    assert client.get("/", headers={"Host": "localhost:8000"}).status_code == 200
    assert host_name("[::1]:8000") == "::1" and host_name("LocalHost") == "localhost"


def test_images_only_by_queued_product_id(client: TestClient, queue: Queue, inputs: ReviewInputs) -> None:
    pid = inputs.flipped[0]
    r = client.get("/image", params={"id": pid})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    path = str(queue.images[pid])
    for attack in (path, "../../etc/passwd", "/etc/passwd", "not-queued"):
        assert client.get("/image", params={"id": attack}).status_code == 404
    assert client.get("/image", params={"path": path}).status_code == 422
    assert client.get(f"/image/{path}").status_code == 404


def test_page_carries_token_and_strict_headers(client: TestClient, queue: Queue) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert f'<meta name="review-token" content="{TOKEN}">' in r.text
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert queue.classes[0] in r.text
    assert client.get("/review.js").headers["content-type"].startswith("text/javascript")


def test_an_audit_of_another_catalog_is_refused(queue: Queue) -> None:
    catalog = pd.DataFrame(
        {"id": ["a", "b"], "title": ["x", "y"], "description": "", "image": None, "label": "c"}
    )
    preds = pd.DataFrame({"id": ["a", "b"], "label": "c", "confidence": [0.5, 0.6], "decision": "review"})
    issues = pd.DataFrame({"id": ["a", "zz"], "rank": [1, 2], "suggested_label": "c", "suggested_conf": 0.9})
    with pytest.raises(
        ValueError, match=r"1 of the audit's 2 flagged ids are not in the catalog \(e.g. zz\)"
    ):
        build_queue(catalog, preds, sources=[], classes=["c"], issues=issues)
    with pytest.raises(ValueError, match="one row per catalog product"):
        build_queue(catalog, preds.iloc[::-1], sources=[], classes=["c"])


def test_an_unlabelled_catalog_is_reviewed_without_keep(tmp_path: Path) -> None:
    catalog = pd.DataFrame(
        {"id": ["a", "b"], "title": ["x", "y"], "description": "", "image": None, "label": None}
    )
    preds = pd.DataFrame({"id": ["a", "b"], "label": "c", "confidence": [0.5, 0.6], "decision": "review"})
    q = build_queue(catalog, preds, sources=[], classes=["c", "d"])
    log = DecisionLog(tmp_path / "d.csv")
    with TestClient(create_app(QueueView(q), log, token=TOKEN), base_url=BASE) as c:
        c.headers.update({"Origin": BASE, "X-Review-Token": TOKEN})
        assert c.get("/api/items").json()["items"][0]["given_label"] is None
        assert "no given label" in decide(c, "a", "keep").json()["detail"]
        assert decide(c, "a", "relabel", "d").json()["item"]["decision"]["old_label"] == ""
    log.close()


def test_a_large_synthetic_queue_pages_in_order() -> None:
    q = synthetic_queue(20_000)
    view = QueueView(q)
    rows = view.select(reason="review", sort="confidence")
    conf = q.items["confidence"].to_numpy()[rows]
    assert len(rows) == 20_000 and np.all(np.diff(conf) >= 0)
    label = q.classes[3]
    rows = view.select(label=label, status="pending")
    assert len(rows) == int((q.items["given_label"] == label).sum())


def served_queue_ids(served: dict[str, Any]) -> list[str]:
    return served["app"].state.view.queue.items["id"].tolist()


def test_review_command_warns_beyond_loopback(
    inputs: ReviewInputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from prodcat.cli import app

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: served.update(kw, app=application))
    args = ["review", str(inputs.catalog), "--model", str(inputs.model), "--audit", str(inputs.audit),
            "--decisions", str(tmp_path / "d.csv")]  # fmt: skip
    r = CliRunner().invoke(app, [*args, "--host", "0.0.0.0", "--cache-dir", "none"])
    assert r.exit_code == 0, r.output
    assert "warning: listening on 0.0.0.0" in r.output and served["host"] == "0.0.0.0"
    assert f"{len(inputs.flipped)}" in r.output and "suspected mislabels" in r.output
    r = CliRunner().invoke(app, [*args, "--cache-dir", "none"])
    assert "warning" not in r.output and served["host"] == "127.0.0.1"
    cached = [*args, "--cache-dir", str(tmp_path / "cache")]
    assert CliRunner().invoke(app, cached).exit_code == 0
    first = served_queue_ids(served)
    import prodcat.review.queue

    def no_prediction(*a: Any, **kw: Any) -> None:
        raise AssertionError("predicted again")

    monkeypatch.setattr(prodcat.review.queue, "predict_catalog", no_prediction)
    r = CliRunner().invoke(app, cached)  # a restart on the same bundle and catalog
    assert r.exit_code == 0 and "predictions from the cache" in r.output
    assert served_queue_ids(served) == first
    (tmp_path / "bad.csv").write_text("time,reviewer,id\n")
    r = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "bad.csv")])
    assert r.exit_code == 2 and "missing column" in r.output
