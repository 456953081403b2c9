"""Server runtime: the model queue (worker thread, merged calls), body-size limit and metrics middleware.

Pure ASGI middleware (no ``BaseHTTPMiddleware``) so that they add microseconds, not milliseconds, per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import numpy as np
import pandas as pd
from fastapi import HTTPException
from fastapi.responses import JSONResponse

from prodcat.serve.schemas import ServeSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

log = logging.getLogger("prodcat.serve")


class Predictor(Protocol):
    """What the server needs from a model (``prodcat.predict.Predictor`` satisfies it)."""

    @property
    def classes(self) -> list[str]: ...

    @property
    def metadata(self) -> dict[str, Any]: ...

    def predict_frame(self, df: pd.DataFrame, *, top_k: int = 5) -> pd.DataFrame: ...


class BodyTooLarge(HTTPException):
    def __init__(self, size: int | None, limit: int) -> None:
        got = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        super().__init__(413, f"request body is {got}; the limit is {limit} bytes (--max-body-mb)")


class BodySizeLimit:
    """ASGI middleware: 413 from Content-Length before reading, and while streaming for chunked bodies."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_error(send, BodyTooLarge(int(declared), self.limit))
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(None, self.limit)
            return message

        await self.app(scope, limited, send)


async def _send_error(send: Any, exc: HTTPException) -> None:
    response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a JSONResponse never reads the request
    return {"type": "http.disconnect"}


@dataclass
class Metrics:
    """In-process request counts and latency percentiles (per process: each uvicorn worker has its own)."""

    window: int = 4096
    started: float = field(default_factory=time.time)
    counts: Counter[tuple[str, int]] = field(default_factory=Counter)
    latency: dict[str, deque[float]] = field(default_factory=dict)
    model_calls: int = 0
    model_rows: int = 0
    model_latency: deque[float] = field(default_factory=lambda: deque(maxlen=4096))

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.counts[(route, status)] += 1
        self.latency.setdefault(route, deque(maxlen=self.window)).append(seconds)

    def snapshot(self, *, pending_rows: int) -> dict[str, Any]:
        routes: dict[str, Any] = {}
        for (route, status), n in sorted(self.counts.items()):
            entry = routes.setdefault(route, {"count": 0, "by_status": {}})
            entry["count"] += n
            entry["by_status"][str(status)] = n
        for route, entry in routes.items():
            entry["latency_ms"] = _percentiles(self.latency.get(route, ()))
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "requests": routes,
            "model": {
                "calls": self.model_calls,
                "rows": self.model_rows,
                "rows_per_call": round(self.model_rows / self.model_calls, 3) if self.model_calls else None,
                "latency_ms": _percentiles(self.model_latency),
                "pending_rows": pending_rows,
            },
            "window": self.window,
        }


def _percentiles(seconds: Any) -> dict[str, float] | None:
    a = np.fromiter(seconds, dtype=float) * 1e3
    if not a.size:
        return None
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": round(p50, 3), "p90": round(p90, 3), "p99": round(p99, 3), "max": round(a.max(), 3)}


class MetricsMiddleware:
    """ASGI middleware timing every HTTP request under its route template (``/predict``, not the raw URL)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, paths: set[str]) -> None:
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def tracking(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        finally:
            route = getattr(scope.get("route"), "path", None) or scope["path"]
            name = f"{scope['method']} {route if route in self.paths else '<other>'}"
            self.metrics.observe(name, status, time.perf_counter() - start)


@dataclass
class _Job:
    frame: pd.DataFrame
    top_k: int
    future: asyncio.Future[pd.DataFrame]


class PredictionQueue:
    """Runs ``predictor.predict_frame`` in a worker thread, merging jobs queued while the model was busy."""

    def __init__(self, predictor: Predictor, *, settings: ServeSettings, metrics: Metrics) -> None:
        self.predictor, self.settings, self.metrics = predictor, settings, metrics
        self.pending_rows = 0
        self._jobs: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._run_forever())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for job in self._jobs:
            job.future.cancel()
        self._jobs.clear()

    async def predict(self, frame: pd.DataFrame, *, top_k: int) -> pd.DataFrame:
        """The predictor's output for ``frame`` (same row order); 503 when the queue is full, 504 on timeout,
        500 when the predictor raises (the traceback goes to the server log, not to the client)."""
        if self._wake is None:
            raise RuntimeError("the app was not started: run it under its lifespan (`with TestClient(app)`)")
        if self.pending_rows + len(frame) > self.settings.max_pending_rows:
            raise HTTPException(
                503, "server busy: too many products queued; retry later", {"Retry-After": "1"}
            )
        job = _Job(frame, top_k, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self.pending_rows += len(frame)
        self._wake.set()
        try:
            return await asyncio.wait_for(job.future, self.settings.predict_timeout_s)
        except TimeoutError:
            raise HTTPException(
                504, f"the model did not answer within {self.settings.predict_timeout_s:g} s"
            ) from None
        except Exception as exc:
            raise HTTPException(500, f"prediction failed ({type(exc).__name__}); see the server log") from exc

    async def _run_forever(self) -> None:
        # Requests in flight at the end of the last call: the ones it answered (their clients are about to send
        # the next) plus the ones that queued meanwhile. Waiting for them keeps concurrent clients in one call
        # instead of two alternating half-full ones; a lone client (1 in flight) never waits. The wait is capped
        # by merge_wait_ms and by a quarter of the last call's duration: it must stay small next to the call
        # it saves.
        in_flight, last_call_s = 0, 0.0
        loop = asyncio.get_running_loop()
        while True:
            await self._arrival(None)
            batch: list[_Job] = []
            rows = self._take(batch, 0)
            deadline = loop.time() + min(self.settings.merge_wait_ms / 1e3, last_call_s / 4)
            while len(batch) < in_flight and rows < self.settings.max_rows_per_call:
                if not await self._arrival(deadline - loop.time()):
                    break
                if (more := self._take(batch, rows)) == rows:
                    break  # the next job does not fit: run now
                rows = more
            if batch:
                start = loop.time()
                await self._run(batch)
                in_flight, last_call_s = len(batch) + len(self._jobs), loop.time() - start

    def _take(self, batch: list[_Job], rows: int) -> int:
        """Move queued jobs into ``batch`` while they fit in ``max_rows_per_call``; returns the rows in it."""
        while self._jobs and (
            not batch or rows + len(self._jobs[0].frame) <= self.settings.max_rows_per_call
        ):
            job = self._jobs.popleft()
            self.pending_rows -= len(job.frame)
            if not job.future.done():  # skip jobs whose client timed out
                batch.append(job)
                rows += len(job.frame)
        return rows

    async def _arrival(self, timeout: float | None) -> bool:
        """True once a job is queued; False when ``timeout`` seconds pass first (None: wait for ever)."""
        assert self._wake is not None
        while not self._jobs:
            if timeout is not None and timeout <= 0:
                return False
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                return bool(self._jobs)
        return True

    async def _run(self, batch: list[_Job]) -> None:
        frame = batch[0].frame if len(batch) == 1 else pd.concat([j.frame for j in batch], ignore_index=True)
        start = time.perf_counter()
        try:
            out = await anyio.to_thread.run_sync(partial(self._call, frame, max(j.top_k for j in batch)))
        except Exception as exc:
            if len(batch) > 1:  # isolate the failing request: every other one still gets its answer
                for job in batch:
                    await self._run([job])
                return
            log.exception("predict_frame failed on %d rows", len(frame))
            _resolve(batch[0].future, exc=exc)
            return
        self.metrics.model_calls += 1
        self.metrics.model_rows += len(frame)
        self.metrics.model_latency.append(time.perf_counter() - start)
        offset = 0
        for job in batch:
            n = len(job.frame)
            _resolve(job.future, result=out.iloc[offset : offset + n])
            offset += n

    def _call(self, frame: pd.DataFrame, top_k: int) -> pd.DataFrame:
        out = self.predictor.predict_frame(frame, top_k=top_k)
        if len(out) != len(frame):
            raise RuntimeError(f"predict_frame returned {len(out)} rows for {len(frame)}")
        return out.reset_index(drop=True)


def _resolve(future: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
