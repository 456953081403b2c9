"""The prediction server with a real trained bundle on a loopback port: a few end-to-end answers, and a bounded
property-based contract run (schemathesis) over its own OpenAPI document: no 5xx, every response matches the
schema, and no request the schema calls valid is rejected."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from prodcat.serve.schemas import IMAGE_FORMAT, ServeSettings  # noqa: E402

SETTINGS = ServeSettings(max_batch=4, max_title_chars=300, max_description_chars=1000, max_image_pixels=10**6)


def _image(size: tuple[int, int], color: tuple[int, int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


IMAGES = [
    _image((24 + 8 * i, 32), (40 * i, 90, 200 - 30 * i), fmt) for i, fmt in enumerate(["PNG", "JPEG"] * 2)
]


@pytest.fixture(scope="module")
def server(tiny_bundle: Path) -> Iterator[str]:
    """uvicorn serving the trained bundle on 127.0.0.1 (a free port), in a thread of this process."""
    import uvicorn

    from prodcat.serve import create_app, load_predictor

    app = create_app(load_predictor(tiny_bundle), settings=SETTINGS, name="tiny")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = True
        thread.join(timeout=15)
        sock.close()


def test_real_bundle_answers_text_image_and_batch(server: str, tiny_bundle: Path) -> None:
    from prodcat.bundle import read_manifest

    classes = set(read_manifest(tiny_bundle)["classes"])
    one = httpx.post(f"{server}/predict", json={"title": "Mug classique rouge - Lumio"}, timeout=30)
    assert one.status_code == 200, one.text
    assert one.json()["label"] in classes and one.json()["text_available"]
    image = base64.b64encode(IMAGES[0]).decode()
    batch = httpx.post(
        f"{server}/predict/batch?top_k=2",
        json=[{"id": "a", "image_base64": image}, {"id": "b", "description": "une lampe"}],
        timeout=30,
    )
    assert batch.status_code == 200, batch.text
    preds = batch.json()["predictions"]
    assert [p["id"] for p in preds] == ["a", "b"]
    assert preds[0]["image_available"] and not preds[0]["text_available"]
    assert all(len(p["top_k"]) == 2 and p["label"] in classes for p in preds)
    empty = httpx.post(f"{server}/predict", json={"title": "  ", "image_base64": None}, timeout=30)
    assert empty.status_code == 422 and empty.json()["detail"][0]["type"] == "empty_product"


def test_schema_states_the_limits_it_enforces(server: str) -> None:
    doc = httpx.get(f"{server}/openapi.json", timeout=30).json()
    request = doc["components"]["schemas"]["PredictRequest"]
    assert request["additionalProperties"] is False
    assert [b["required"] for b in request["anyOf"]] == [["title"], ["description"], ["image_base64"]]
    assert request["properties"]["title"]["maxLength"] == SETTINGS.max_title_chars
    batch = doc["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert (batch["minItems"], batch["maxItems"]) == (1, SETTINGS.max_batch)
    form = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["description"]["maxLength"] == SETTINGS.max_description_chars


@pytest.fixture(scope="module")
def contract(server: str) -> Any:
    # A string of this format is, by definition, the base64 of an image the server can decode.
    schemathesis.openapi.format(IMAGE_FORMAT, st.sampled_from([base64.b64encode(b).decode() for b in IMAGES]))
    schemathesis.openapi.media_type("image/*", st.sampled_from(IMAGES))
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


OPERATIONS = [
    ("POST", "/predict"),
    ("POST", "/predict/batch"),
    ("GET", "/health"),
    ("GET", "/metadata"),
    ("GET", "/metrics"),
]


def test_contract_covers_every_operation(contract: Any) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in contract.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_contract(contract: Any, method: str, path: str) -> None:
    """Schema-valid requests (hypothesis, bounded and derandomised): no 5xx, each answer conforms to the
    schema, and none is refused."""
    from hypothesis import given
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        positive_data_acceptance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        positive_data_acceptance,
    ]

    @given(case=contract[path][method].as_strategy())
    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(checks=checks, timeout=30)

    run()
