"""The prediction server: a FastAPI app around any object with ``predict_frame`` (a loaded model bundle).

Routes: ``POST /predict`` (JSON or multipart with an image file), ``POST /predict/batch`` (JSON list),
``GET /health``, ``GET /metadata``, ``GET /metrics``, OpenAPI docs at ``/docs``.

Safety: every limit in :class:`~prodcat.serve.schemas.ServeSettings` answers with a 4xx that names the field and
the limit; images arrive only as bytes (base64 or an uploaded file), are checked by
:func:`prodcat.image.decode.decode_image` (header size, then a full decode) before the model sees them, and the
predictor is only ever given ``bytes`` or ``None``: no client string is ever opened as a path
(:mod:`prodcat.serve.inputs`).

Concurrency: the model runs in a worker thread, never on the event loop. Requests that arrive while it is busy
wait in a queue and are merged into one ``predict_frame`` call (at most ``max_rows_per_call`` rows), which costs
nothing when idle and raises throughput under load (:mod:`prodcat.serve.runtime`).
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from prodcat import __version__
from prodcat.serve.inputs import (
    check_items,
    field_error,
    json_item,
    predictor_frame,
    read_form,
    read_json,
    to_predictions,
)
from prodcat.serve.runtime import BodySizeLimit, Metrics, MetricsMiddleware, PredictionQueue, Predictor
from prodcat.serve.schemas import (
    ERROR_RESPONSES,
    BatchResponse,
    HealthResponse,
    MetadataResponse,
    Prediction,
    PredictRequest,
    ServeSettings,
    state_limits,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

_ENV_MODEL, _ENV_SETTINGS = "PRODCAT_SERVE_MODEL_DIR", "PRODCAT_SERVE_SETTINGS"
_ENV_VERIFY_KEY = "PRODCAT_SERVE_VERIFY_KEY"


def _openapi_predict_body() -> dict[str, Any]:
    form = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "maxLength": 256},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "image": {
                "type": "string",
                "format": "binary",
                "contentMediaType": "image/*",
                "description": "the image file",
            },
        },
        "additionalProperties": False,
        "anyOf": [
            {"required": ["title"], "properties": {"title": {"pattern": r"\S"}}},
            {"required": ["description"], "properties": {"description": {"pattern": r"\S"}}},
            {"required": ["image"]},
        ],
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                "multipart/form-data": {"schema": form, "encoding": {"image": {"contentType": "image/*"}}},
            },
        }
    }


def create_app(
    predictor: Predictor, *, settings: ServeSettings | None = None, name: str | None = None
) -> FastAPI:
    """A FastAPI app serving ``predictor`` (already loaded) with the limits in ``settings``; ``name`` is the
    model name shown by ``/health`` (default: ``predictor.metadata["name"]`` when present).

    The app's lifespan starts the model queue and, with ``settings.warmup``, runs one text-only and one
    image prediction so that lazy initialisation happens before the first client arrives (a predictor that
    fails there stops the start-up).
    """
    s = settings or ServeSettings()
    classes = [str(c) for c in predictor.classes]
    metrics = Metrics()
    queue = PredictionQueue(predictor, settings=s, metrics=metrics)
    model_name = name or predictor.metadata.get("name")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if s.warmup:
            from prodcat.predict import warm_up

            await anyio.to_thread.run_sync(warm_up, predictor)
        await queue.start()
        metrics.started = time.time()
        try:
            yield
        finally:
            await queue.stop()

    app = FastAPI(
        title="prodcat",
        version=__version__,
        summary="Product categorisation from title, description and image.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings, app.state.metrics, app.state.queue = s, metrics, queue

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # pydantic's errors echo the input back (possibly megabytes of base64): keep where, what and why only
        detail = [
            field_error(tuple(e.get("loc", ())), str(e.get("msg", "")), str(e.get("type", "")))
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    TopK = Query(
        None, ge=1, le=s.max_top_k, description=f"How many classes to list (default {s.default_top_k})."
    )

    def k_of(top_k: int | None) -> int:
        return min(top_k or s.default_top_k, len(classes))

    @app.post("/predict", response_model=Prediction, openapi_extra=_openapi_predict_body())
    async def predict(request: Request, top_k: int | None = TopK) -> Prediction:
        """Categorise one product: JSON body, or a multipart form with an ``image`` file."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json" or ctype.endswith("+json"):
            item = await read_json(request)
        elif ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            item = await read_form(request, s)
        else:
            raise HTTPException(
                415,
                f"Content-Type {ctype or '(none)'!r} is not supported: send "
                "application/json or multipart/form-data",
            )
        rows = await check_items([item], s)
        k = k_of(top_k)
        return to_predictions(await queue.predict(predictor_frame(rows), top_k=k), rows, k)[0]

    @app.post("/predict/batch", response_model=BatchResponse)
    async def predict_batch(
        items: list[PredictRequest] = Body(description=f"At most {s.max_batch} products."),
        top_k: int | None = TopK,
    ) -> BatchResponse:
        """Categorise a JSON list of products; the answer keeps their order."""
        if not items or len(items) > s.max_batch:
            msg = f"batch has {len(items)} products; send 1 to {s.max_batch} (split larger batches)"
            raise RequestValidationError([field_error(("body",), msg, "batch_size")])
        checks = [json_item(it, ("body", i)) for i, it in enumerate(items)]
        rows = await check_items(checks, s)
        k = k_of(top_k)
        return BatchResponse(
            predictions=to_predictions(await queue.predict(predictor_frame(rows), top_k=k), rows, k)
        )

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Liveness and readiness: answers only once the model is loaded and warmed up."""
        return HealthResponse(
            status="ok",
            model=model_name,
            uptime_s=round(time.time() - metrics.started, 3),
            version=__version__,
        )

    @app.get("/metadata", response_model=MetadataResponse)
    async def metadata() -> MetadataResponse:
        """Classes, the bundle's metadata and this server's limits."""
        return MetadataResponse(
            classes=classes, n_classes=len(classes), model=predictor.metadata, limits=s.model_dump()
        )

    @app.get("/metrics")
    async def get_metrics() -> dict[str, Any]:
        """Request counts by route and status, latency percentiles (ms) over the last requests, model calls."""
        return metrics.snapshot(pending_rows=queue.pending_rows)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            state_limits(generate(), s)  # generate() caches its document in app.openapi_schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    paths = {r.path for r in app.routes if hasattr(r, "path")}
    app.add_middleware(BodySizeLimit, limit=s.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=paths)
    return app


def load_predictor(model_dir: str | Path, *, verify_key: str | Path | None = None) -> Predictor:
    """Load a model bundle (checksums, versions and, with ``verify_key``, the signature are verified by
    :func:`prodcat.bundle.load_bundle`)."""
    from prodcat.bundle import load_bundle

    predictor: Predictor = load_bundle(Path(model_dir), verify_key=verify_key)
    return predictor


def run(
    model_dir: str | Path,
    *,
    predictor: Predictor | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    workers: int = 1,
    log_level: str = "info",
    access_log: bool = True,
    limit_concurrency: int | None = None,
    check_bundle: bool = True,
    verify_key: str | Path | None = None,
) -> None:
    """Load the bundle in ``model_dir`` once (unless ``predictor``, already loaded from it, is given), then serve
    it with uvicorn until interrupted.

    With ``workers > 1`` each worker process loads the bundle once at its start-up and has its own queue and
    metrics; with ``check_bundle`` the bundle is first loaded (and dropped) here too, so that a bad bundle fails
    fast instead of crashing every worker. ``predictor`` is not used then. With ``verify_key`` every load checks
    the bundle's signature (:func:`prodcat.signing.verify_bundle`).
    """
    import uvicorn

    s = settings or ServeSettings()
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": access_log,
        "limit_concurrency": limit_concurrency,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }
    if workers <= 1:
        app = create_app(
            predictor or load_predictor(model_dir, verify_key=verify_key),
            settings=s,
            name=Path(model_dir).name,
        )
        uvicorn.run(app, **options)
        return
    if check_bundle:
        load_predictor(model_dir, verify_key=verify_key)  # dropped at once: the workers load their own copies
    os.environ[_ENV_MODEL] = str(Path(model_dir).resolve())
    if verify_key is not None:
        os.environ[_ENV_VERIFY_KEY] = str(Path(verify_key).resolve())
    os.environ[_ENV_SETTINGS] = s.model_dump_json()
    _run_workers(workers, options)


def _run_workers(workers: int, options: dict[str, Any]) -> None:
    """What ``uvicorn.run("...:app_from_env", factory=True, workers=N)`` does, with a TCP_NODELAY-safe listener.

    uvicorn's multiprocess path binds its listener with ``proto=0``; accepted sockets inherit it and asyncio only
    sets TCP_NODELAY when ``proto == IPPROTO_TCP``, so every keep-alive response would wait ~40 ms on the
    client's delayed ACK (uvicorn issue #3149). The single-process path is not affected.
    """
    import inspect

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("prodcat.serve.app:app_from_env", factory=True, workers=workers, **options)
    supervisor: dict[str, Any] = {"sockets": [tcp_listener(config.bind_socket())]}
    if "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn
        supervisor["target"] = uvicorn.Server(config).run
    try:
        Multiprocess(config, **supervisor).run()
    except KeyboardInterrupt:
        pass


def tcp_listener(sock: socket.socket) -> socket.socket:
    """``sock`` itself, re-wrapped when needed so that ``sock.proto == IPPROTO_TCP`` (read back from the kernel):
    asyncio then turns Nagle's algorithm off on every accepted connection."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto != socket.IPPROTO_TCP:
        sock = socket.socket(fileno=sock.detach())
        sock.set_inheritable(True)
    return sock


def app_from_env() -> FastAPI:
    """App factory of each uvicorn worker process (``run(..., workers=N)``): model dir and settings from env."""
    settings = ServeSettings.model_validate_json(os.environ.get(_ENV_SETTINGS) or "{}")
    model_dir = os.environ[_ENV_MODEL]
    predictor = load_predictor(model_dir, verify_key=os.environ.get(_ENV_VERIFY_KEY) or None)
    return create_app(predictor, settings=settings, name=Path(model_dir).name)
