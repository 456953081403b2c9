"""The prediction server in process (FastAPI TestClient) against a keyword-based fake predictor."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

import prodcat.serve.inputs as inputs
from _serve_fake import CLASSES, FakePredictor
from prodcat.serve import ServeSettings, create_app
from prodcat.serve.runtime import Metrics, PredictionQueue


def png(
    size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (10, 200, 30), mode: str = "RGB"
) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 0).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def fake() -> FakePredictor:
    return FakePredictor()


def make_client(predictor: Any, **settings: Any) -> TestClient:
    return TestClient(create_app(predictor, settings=ServeSettings(**settings)))


@pytest.fixture
def client(fake: FakePredictor) -> Iterator[TestClient]:
    with make_client(fake) as c:
        yield c


def errors(response: Any) -> dict[tuple[Any, ...], dict[str, Any]]:
    """422 body -> {loc: error}."""
    assert response.status_code == 422, response.text
    return {tuple(e["loc"]): e for e in response.json()["detail"]}


# --- happy paths -----------------------------------------------------------------------------------------------


def test_health_metadata_and_docs(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "fake-keywords"
    meta = client.get("/metadata").json()
    assert meta["classes"] == CLASSES and meta["n_classes"] == len(CLASSES)
    assert meta["model"]["name"] == "fake-keywords" and meta["limits"]["max_batch"] == 64
    assert client.get("/docs").status_code == 200
    body = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert body["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"


def test_warmup_runs_text_and_image_before_serving(fake: FakePredictor) -> None:
    with make_client(fake):
        assert fake.calls == [2] and fake.image_types == {type(None), bytes}


def test_predict_json_text_only(client: TestClient) -> None:
    r = client.post("/predict", json={"id": "p1", "title": "Nike running shoe", "description": "black"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "p1" and out["label"] == "Shoes"
    assert (
        out["text_available"] is True and out["image_available"] is False and out["image_error"] == "no image"
    )
    assert len(out["top_k"]) == 5 and out["top_k"][0] == {"label": "Shoes", "probability": out["probability"]}
    probs = [t["probability"] for t in out["top_k"]]
    assert probs == sorted(probs, reverse=True)


def test_null_text_counts_as_empty(client: TestClient) -> None:
    out = client.post(
        "/predict", json={"title": "denim jeans", "description": None, "image_base64": None}
    ).json()
    assert out["label"] == "Jeans"
    assert "nothing to predict" in errors(client.post("/predict", json={"title": None}))[("body",)]["msg"]


def test_predict_json_with_image_data_url_and_line_breaks(client: TestClient) -> None:
    raw = b64(png())
    for encoded in (
        raw,
        f"data:image/png;base64,{raw}",
        "\n".join(raw[i : i + 20] for i in range(0, len(raw), 20)),
    ):
        out = client.post("/predict", json={"title": "", "image_base64": encoded}).json()
        assert out["image_available"] is True and out["text_available"] is False, out
        assert out["id"] is None


def test_predict_multipart_upload(client: TestClient, fake: FakePredictor) -> None:
    r = client.post(
        "/predict?top_k=2",
        data={"title": "Blue denim jeans", "id": "m1"},
        files={"image": ("p.png", png(), "image/png")},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "m1" and out["label"] == "Jeans" and out["image_available"] is True
    assert len(out["top_k"]) == 2
    text_only = client.post("/predict", data={"title": "a watch"})
    assert text_only.status_code == 200 and text_only.json()["label"] == "Watches"


def test_top_k_is_bounded(client: TestClient) -> None:
    item = {"title": "tee"}
    assert len(client.post("/predict?top_k=1", json=item).json()["top_k"]) == 1
    # more than the classes but within max_top_k: all classes
    assert len(client.post("/predict?top_k=15", json=item).json()["top_k"]) == len(CLASSES)
    for bad in ("0", "21", "x"):
        assert ("query", "top_k") in errors(client.post(f"/predict?top_k={bad}", json=item))


def test_batch_keeps_order_and_ids(client: TestClient, fake: FakePredictor) -> None:
    items = [
        {"id": "a", "title": "leather handbag"},
        {"title": "gold watch", "image_base64": b64(png())},
        {"id": "c", "title": "", "description": "sunglasses with UV filter"},
    ]
    r = client.post("/predict/batch?top_k=3", json=items)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["id"] for p in preds] == ["a", None, "c"]
    assert [p["label"] for p in preds] == ["Handbags", "Watches", "Sunglasses"]
    assert all(len(p["top_k"]) == 3 for p in preds) and preds[1]["image_available"] is True
    assert fake.calls[-1] == 3  # one predictor call for the whole batch


def test_metrics_count_routes_and_statuses(client: TestClient) -> None:
    client.post("/predict", json={"title": "tee"})
    client.post("/predict", json={"title": 5})
    client.get("/nope")
    m = client.get("/metrics").json()
    assert m["requests"]["POST /predict"]["by_status"] == {"200": 1, "422": 1}
    assert m["requests"]["POST /predict"]["latency_ms"]["p50"] > 0
    assert m["requests"]["GET <other>"]["by_status"] == {"404": 1}
    assert m["model"]["calls"] >= 1 and m["model"]["pending_rows"] == 0


# --- malformed requests: 4xx that say what was wrong ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"title": "x", "image_base64": "not base64!!"}, ("body", "image_base64"), "not valid base64"),
        (
            {"title": "x", "image_base64": b64(b"plain text, not a picture")},
            ("body", "image_base64"),
            "not an image",
        ),
        ({"title": "x", "image_base64": b64(png()[:60])}, ("body", "image_base64"), "not a usable image"),
        ({"title": 123}, ("body", "title"), "valid string"),
        ({"title": "x", "description": ["a"]}, ("body", "description"), "valid string"),
        ({"title": "x", "image": "/etc/passwd"}, ("body", "image"), "Extra inputs"),
        ({"title": "x", "id": "i" * 300}, ("body", "id"), "at most 256"),
        ({"title": "t" * 2001}, ("body", "title"), "2001 characters; the limit is 2000"),
        ({"title": "", "description": "  "}, ("body",), "nothing to predict from"),
        ({}, ("body",), "nothing to predict from"),
    ],
)
def test_bad_json_fields_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], loc: tuple[Any, ...], words: str
) -> None:
    errs = errors(client.post("/predict", json=body))
    assert loc in errs and words in errs[loc]["msg"], errs


def test_huge_image_refused_from_header(client: TestClient) -> None:
    big = png((6000, 6000), mode="1")  # 36 Mpx, a few kB compressed
    errs = errors(client.post("/predict", json={"title": "x", "image_base64": b64(big)}))
    assert "too large: 6000 x 6000 (the limit is 25000000 pixels)" in errs[("body", "image_base64")]["msg"]


def test_image_bytes_limit(fake: FakePredictor) -> None:
    with make_client(fake, max_image_bytes=1000) as c:
        image = png((200, 200), color=(1, 2, 3))
        image += b"\0" * (1500 - len(image))  # trailing bytes: still a valid PNG, over the limit
        errs = errors(c.post("/predict", json={"title": "x", "image_base64": b64(image)}))
        assert "limit is 1000 bytes" in errs[("body", "image_base64")]["msg"]
        errs = errors(c.post("/predict", data={"title": "x"}, files={"image": ("a.png", image, "image/png")}))
        assert "limit of 1000 bytes" in errs[("body", "image")]["msg"]


def test_not_json_and_wrong_shapes(client: TestClient) -> None:
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert "Invalid JSON" in errors(r)[("body",)]["msg"]
    assert ("body",) in errors(client.post("/predict", json=[{"title": "x"}]))
    r = client.post("/predict", content=b"title=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "text/plain" in r.json()["detail"]


def test_body_size_limit(fake: FakePredictor) -> None:
    with make_client(fake, max_body_bytes=4096) as c:
        r = c.post("/predict", json={"title": "x" * 5000})
        assert r.status_code == 413 and "limit is 4096 bytes" in r.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
            yield b'{"title": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        r = c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "more than 4096 bytes" in r.json()["detail"]
        assert c.post("/predict", json={"title": "tee"}).status_code == 200


def test_multipart_mistakes(client: TestClient) -> None:
    errs = errors(client.post("/predict", data={"title": "x", "image": "/etc/passwd"}))
    assert "never read as a path" in errs[("body", "image")]["msg"]
    errs = errors(client.post("/predict", data={"title": "x", "colour": "red"}))
    assert errs[("body", "colour")]["type"] == "extra_forbidden"
    errs = errors(client.post("/predict", files={"title": ("t.txt", b"tee", "text/plain")}))
    assert "must be a text field" in errs[("body", "title")]["msg"]
    errs = errors(client.post("/predict", data={"title": "x"}, files={"image": ("e.png", b"", "image/png")}))
    assert "zero-byte" in errs[("body", "image")]["msg"]
    errs = errors(
        client.post("/predict", data={"title": "x"}, files={"image": ("e.txt", b"hello", "text/plain")})
    )
    assert "not an image" in errs[("body", "image")]["msg"]
    two = [("image", ("a.png", png(), "image/png")), ("image", ("b.png", png(), "image/png"))]
    assert client.post("/predict", data={"title": "x"}, files=two).status_code == 400


def test_batch_errors_list_every_bad_item(client: TestClient) -> None:
    items = [{"title": "ok"}, {"title": "x", "image_base64": "%%%"}, {"title": ""}, {"title": "t" * 2001}]
    errs = errors(client.post("/predict/batch", json=items))
    assert set(errs) == {("body", 1, "image_base64"), ("body", 2), ("body", 3, "title")}
    assert ("body", 0, "title") in errors(client.post("/predict/batch", json=[{"title": 1}]))
    assert "send 1 to 64" in errors(client.post("/predict/batch", json=[]))[("body",)]["msg"]
    assert (
        "65 products" in errors(client.post("/predict/batch", json=[{"title": "a"}] * 65))[("body",)]["msg"]
    )
    assert ("body",) in errors(client.post("/predict/batch", json={"title": "x"}))


def test_validation_errors_do_not_echo_the_input(client: TestClient) -> None:
    r = client.post("/predict", json={"title": "x", "image_base64": 12345678, "extra": "S" * 5000})
    assert r.status_code == 422 and "SSSS" not in r.text and "12345678" not in r.text


# --- never a path ---------------------------------------------------------------------------------------------


def test_client_strings_are_never_read_as_paths(
    client: TestClient, fake: FakePredictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image_file = tmp_path / "real.png"
    image_file.write_bytes(png())
    seen: list[type] = []
    real_decode = inputs.decode_image

    def spy(source: Any, **kw: Any) -> Any:
        seen.append(type(source))
        return real_decode(source, **kw)

    monkeypatch.setattr(inputs, "decode_image", spy)
    for text in (
        str(image_file),
        str(image_file).replace("_", "A").replace("-", "B"),
        "file://" + str(image_file),
    ):
        assert client.post("/predict", json={"title": "", "image_base64": text}).status_code == 422
        assert client.post("/predict", data={"title": "", "image": text}).status_code == 422
    assert set(seen) <= {bytes} and fake.image_types <= {bytes, type(None)}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=st.text(max_size=40), image=st.one_of(st.none(), st.text(max_size=40)), k=st.integers(1, 20))
def test_any_string_image_is_422_or_decoded_bytes(
    client: TestClient, title: str, image: str | None, k: int
) -> None:
    r = client.post(f"/predict?top_k={k}", json={"title": title, "image_base64": image})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 200:
        out = r.json()
        probs = [t["probability"] for t in out["top_k"]]
        assert len(probs) == min(k, len(CLASSES)) and probs == sorted(probs, reverse=True)
        assert all(0.0 <= p <= 1.0 for p in probs) and out["label"] in CLASSES


# --- bad images ignored on request, predictor failures, queue ---------------------------------------------------


def test_bad_image_ignore_predicts_from_text(fake: FakePredictor) -> None:
    with make_client(fake, bad_image="ignore") as c:
        out = c.post("/predict", json={"title": "tee", "image_base64": b64(b"nope")}).json()
        assert out["label"] == "Tshirts" and out["image_available"] is False
        assert out["image_error"] == "not a usable image: not an image"
        assert (
            "nothing to predict" in errors(c.post("/predict", json={"image_base64": "@@"}))[("body",)]["msg"]
        )


def test_predictor_failure_is_a_500_with_a_short_message() -> None:
    with make_client(FakePredictor(fail_on="boom"), warmup=False) as c:
        r = c.post("/predict", json={"title": "boom"})
        assert (
            r.status_code == 500
            and r.json()["detail"] == "prediction failed (RuntimeError); see the server log"
        )
        assert c.post("/predict", json={"title": "tee"}).status_code == 200


class BrokenPredictor(FakePredictor):
    def predict_frame(self, df: pd.DataFrame, *, top_k: int = 5) -> pd.DataFrame:
        raise OSError("weights missing")


def test_warmup_failure_stops_startup() -> None:
    with pytest.raises(OSError, match="weights missing"), make_client(BrokenPredictor()):
        pass  # pragma: no cover - start-up fails before this line


def test_timeout_is_a_504() -> None:
    slow = FakePredictor(delay_s=0.3)
    with make_client(slow, predict_timeout_s=0.05, warmup=False) as c:
        r = c.post("/predict", json={"title": "tee"})
        assert r.status_code == 504 and "0.05 s" in r.json()["detail"]


def frame(title: str) -> pd.DataFrame:
    return pd.DataFrame({"id": ["1"], "title": [title], "description": [""], "image": [None]})


def run_queue(predictor: FakePredictor, titles: list[str], **settings: Any) -> list[Any]:
    """Submit one job, then the rest while the model is busy with it; returns results or exceptions."""

    async def main() -> list[Any]:
        queue = PredictionQueue(predictor, settings=ServeSettings(**settings), metrics=Metrics())
        await queue.start()
        first = asyncio.create_task(queue.predict(frame(titles[0]), top_k=2))
        await asyncio.sleep(0.02)  # the first call is running in its thread now
        rest = [asyncio.create_task(queue.predict(frame(t), top_k=3)) for t in titles[1:]]
        out = await asyncio.gather(first, *rest, return_exceptions=True)
        await queue.stop()
        return out

    return asyncio.run(main())


def test_queue_merges_requests_that_wait_and_keeps_their_order() -> None:
    slow = FakePredictor(delay_s=0.1)
    out = run_queue(slow, ["tee", "watch", "bag", "shoe", "jeans"])
    assert slow.calls == [1, 4]  # the four that waited went in one call
    assert [o["label"].iloc[0] for o in out] == ["Tshirts", "Watches", "Handbags", "Shoes", "Jeans"]
    assert [len(o["top_labels"].iloc[0]) for o in out] == [2, 3, 3, 3, 3]


def clients_in_a_loop(
    predictor: FakePredictor, *, clients: int, rounds: int, **settings: Any
) -> list[tuple[float, bool]]:
    """``clients`` tasks each sending ``rounds`` requests in turn, client i taking 3(i+1) ms between its answer
    and its next request (as network and parsing would); returns the queue's timed waits for more requests:
    ``(timeout it allowed, whether a request came before it)`` each."""
    waits: list[tuple[float, bool]] = []

    class Recorded(PredictionQueue):
        async def _arrival(self, timeout: float | None) -> bool:
            came = await super()._arrival(timeout)
            if timeout is not None:
                waits.append((timeout, came))
            return came

    async def main() -> None:
        queue = Recorded(predictor, settings=ServeSettings(**settings), metrics=Metrics())
        await queue.start()

        async def client(i: int) -> None:
            for _ in range(rounds):
                await queue.predict(frame("tee"), top_k=1)
                await asyncio.sleep(0.003 * (i + 1))

        await asyncio.gather(*(client(i) for i in range(clients)))
        await queue.stop()

    asyncio.run(main())
    return waits


def test_merge_wait_keeps_concurrent_clients_in_one_call() -> None:
    split = FakePredictor(delay_s=0.03)
    clients_in_a_loop(split, clients=4, rounds=4, merge_wait_ms=0)
    assert split.calls[0] == 4 and len(split.calls) > 4  # without waiting, the clients drift apart
    merged = FakePredictor(
        delay_s=0.1
    )  # waits are capped at a quarter of a call: 25 ms > the 12 ms turnaround
    waits = clients_in_a_loop(merged, clients=4, rounds=4, merge_wait_ms=500)
    assert merged.calls == [4, 4, 4, 4]
    # it waited for the 4 clients, never for a whole window: every wait ended with a request, within the cap
    assert waits and all(came for _, came in waits)
    assert all(timeout < 0.5 for timeout, _ in waits)


def test_merge_wait_never_delays_a_lone_client() -> None:
    fast = FakePredictor()
    waits = clients_in_a_loop(fast, clients=1, rounds=5, merge_wait_ms=2000)
    assert fast.calls == [1] * 5 and waits == []  # one client in flight: the queue never waits for another


def test_queue_respects_max_rows_per_call() -> None:
    slow = FakePredictor(delay_s=0.05)
    run_queue(slow, ["tee"] * 6, max_rows_per_call=2)
    assert slow.calls == [1, 2, 2, 1]


def test_queue_isolates_a_failing_request() -> None:
    slow = FakePredictor(delay_s=0.05, fail_on="boom")
    out = run_queue(slow, ["tee", "watch", "boom", "bag"])
    assert isinstance(out[2], Exception) and getattr(out[2], "status_code", None) == 500
    assert [o["label"].iloc[0] for i, o in enumerate(out) if i != 2] == ["Tshirts", "Watches", "Handbags"]


def test_queue_full_is_a_503() -> None:
    out = run_queue(FakePredictor(delay_s=0.1), ["tee", "watch", "bag"], max_pending_rows=1)
    assert getattr(out[2], "status_code", None) == 503 and not isinstance(out[1], Exception)


# --- run() and the CLI command ----------------------------------------------------------------------------------


@pytest.fixture
def fake_bundle(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A stand-in ``prodcat.bundle`` module whose load_bundle returns a FakePredictor; records the dirs."""
    loaded: list[str] = []
    module = types.ModuleType("prodcat.bundle")

    def load_bundle(path: Path, *, verify_key: Path | None = None) -> FakePredictor:
        if not Path(path, "manifest.json").is_file():
            raise ValueError(f"{path} has no manifest.json")
        loaded.append(str(path))
        return FakePredictor()

    module.load_bundle = load_bundle  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prodcat.bundle", module)
    return loaded


def test_run_loads_once_and_hands_the_app_to_uvicorn(
    fake_bundle: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    import uvicorn.supervisors

    from prodcat.serve import run
    from prodcat.serve.app import app_from_env

    (tmp_path / "manifest.json").write_text("{}")
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    run(tmp_path, port=8123, settings=ServeSettings(max_batch=7))
    app, kw = calls[-1]
    assert len(fake_bundle) == 1 and kw["port"] == 8123 and kw["host"] == "127.0.0.1"
    with TestClient(app) as c:
        assert c.get("/metadata").json()["limits"]["max_batch"] == 7

    supervised: list[tuple[Any, list[socket.socket]]] = []

    class FakeSupervisor:  # records instead of forking workers
        def __init__(self, config: Any, sockets: list[socket.socket]) -> None:
            supervised.append((config, sockets))

        def run(self) -> None:
            pass

    monkeypatch.setattr(uvicorn.supervisors, "Multiprocess", FakeSupervisor)
    monkeypatch.setenv("PRODCAT_SERVE_MODEL_DIR", "")  # run() sets both; monkeypatch restores them after
    monkeypatch.setenv("PRODCAT_SERVE_SETTINGS", "")
    run(tmp_path, port=0, workers=3, settings=ServeSettings(max_batch=9))
    config, sockets = supervised[-1]
    assert config.app == "prodcat.serve.app:app_from_env" and config.factory and config.workers == 3
    assert sockets[0].proto == socket.IPPROTO_TCP  # so that accepted connections get TCP_NODELAY
    sockets[0].close()
    with TestClient(app_from_env()) as c:  # what each worker process builds
        assert c.get("/metadata").json()["limits"]["max_batch"] == 9
    assert len(fake_bundle) == 3  # parent check + one worker


def test_tcp_listener_gives_accepted_connections_tcp_nodelay() -> None:
    """uvicorn#3149: a listener with proto 0 leaves Nagle on (each keep-alive response waits ~40 ms)."""
    from prodcat.serve.app import tcp_listener

    async def nodelay_of(listener: socket.socket) -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        value = await asyncio.wait_for(accepted, 10)
        writer.close()
        server.close()
        return value

    def listener(fix: bool) -> socket.socket:
        sock = socket.socket(socket.AF_INET)  # what uvicorn's Config.bind_socket does
        sock.bind(("127.0.0.1", 0))
        return tcp_listener(sock) if fix else sock

    with listener(True) as fixed:
        assert fixed.proto == socket.IPPROTO_TCP
    assert asyncio.run(nodelay_of(listener(True))) != 0
    assert asyncio.run(nodelay_of(listener(False))) == 0  # the bug it works around


def test_serve_command(fake_bundle: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import prodcat.serve as serve_pkg
    from prodcat.commands.serve import serve

    cli = typer.Typer()
    cli.command()(serve)
    captured: dict[str, Any] = {}
    monkeypatch.setattr(serve_pkg, "run", lambda model_dir, **kw: captured.update(kw, model_dir=model_dir))
    runner = CliRunner()

    r = runner.invoke(cli, [str(tmp_path)])
    assert r.exit_code == 2 and "cannot load the model bundle" in r.output and "no manifest.json" in r.output
    (tmp_path / "manifest.json").write_text("{}")
    r = runner.invoke(cli, [str(tmp_path), "--port", "9001", "--max-body-mb", "2", "--bad-image", "ignore"])
    assert r.exit_code == 0, r.output
    assert "serving fake-keywords (7 classes) on http://127.0.0.1:9001" in r.output
    s = captured["settings"]
    assert s.max_body_bytes == 2 * 1024 * 1024 and s.bad_image == "ignore" and captured["port"] == 9001
    assert isinstance(captured["predictor"], FakePredictor) and captured["check_bundle"] is False
    runner.invoke(cli, [str(tmp_path), "--workers", "2"])
    assert captured["predictor"] is None and captured["workers"] == 2  # loaded once to check, then dropped
    r = runner.invoke(cli, [str(tmp_path), "--bad-image", "maybe"])
    assert r.exit_code == 2 and "bad_image" in r.output
    r = runner.invoke(cli, [str(tmp_path / "missing")])
    assert r.exit_code == 2


def test_settings_round_trip_as_json() -> None:
    s = ServeSettings(max_batch=3, bad_image="ignore")
    assert ServeSettings.model_validate_json(s.model_dump_json()) == s
    assert json.loads(s.model_dump_json())["max_batch"] == 3
