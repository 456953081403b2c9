"""The review server: one page (``report_templates/review.html`` + ``review.js``), a small JSON API and thumbnails.

Routes: ``GET /`` (the page), ``GET /review.js``, ``GET /api/items`` (a filtered, sorted page of the queue),
``GET /api/history`` (a reviewer's latest decisions), ``GET /image?id=PRODUCT_ID`` (a JPEG thumbnail),
``POST /api/decide`` and ``POST /api/undo``.

Safety:

- images: the only image route takes a product id and looks the image up in the queue built from the catalog
  on the server; a client never names a file;
- writes: ``POST`` requests must come from the page's own origin (``Origin``, else ``Referer``, equal to the
  server's) and carry the page's token in ``X-Review-Token`` (a random secret per server start, in the page
  only), as ``application/json`` (403 / 415 otherwise) of at most 64 KiB (413);
- hosts: a request whose ``Host`` is not one of the server's names is refused (400), so that a DNS-rebinding
  page cannot read the token; the page forbids framing (``frame-ancestors 'none'``) and inline scripts.

Every decision is appended and fsynced (:class:`~prodcat.review.decisions.DecisionLog`) before the answer.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib.resources import files
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from prodcat import __version__
from prodcat.review.decisions import Decision, DecisionLog, DecisionsError, now, replay
from prodcat.review.queue import REASONS, SORTS, STATUSES, QueueView, decision_json
from prodcat.serve.runtime import BodySizeLimit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_PAGE = 200
MAX_BODY = 64 * 1024  # a decision is a few hundred bytes
_CSP = (
    "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
Reviewer = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


class DecideRequest(BaseModel):
    """One decision on one product (``new_label``: relabel only)."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=1000)
    action: Literal["accept", "keep", "relabel", "drop", "skip"]
    new_label: str | None = Field(None, max_length=1000)
    reviewer: Reviewer


class UndoRequest(BaseModel):
    """Withdraw ``reviewer``'s latest decision still in effect."""

    model_config = ConfigDict(extra="forbid")
    reviewer: Reviewer


def host_name(host_header: str) -> str:
    """``"[::1]:8000"`` -> ``"::1"``, ``"localhost:8000"`` -> ``"localhost"`` (lower case)."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def create_app(
    view: QueueView,
    log: DecisionLog,
    *,
    reviewer: str = "reviewer",
    allowed_hosts: Sequence[str] | None = LOOPBACK,
    title: str = "prodcat review",
    thumb_size: int = 256,
    token: str | None = None,
) -> FastAPI:
    """The review app over ``view`` (the queue) writing to ``log``. ``allowed_hosts``: the host names the
    server answers to (``None``: any, for a wildcard bind); ``token``: the CSRF secret (random by default)."""
    from prodcat.pages import render, thumbnail_jpeg

    secret = token or secrets.token_urlsafe(32)
    lock = threading.Lock()
    hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
    app = FastAPI(title=title, version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.view, app.state.log, app.state.token = view, log, secret

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Any]) -> Response:
        if hosts is not None and host_name(request.headers.get("host", "")) not in hosts:
            return JSONResponse({"detail": "unknown Host header"}, status_code=400)
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def same_origin_with_token(request: Request) -> None:
        origin = request.headers.get("origin") or _origin_of(request.headers.get("referer"))
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin is None or origin.lower() != own.lower():
            raise HTTPException(403, f"cross-origin or origin-less write refused (origin {origin!r})")
        sent = request.headers.get("x-review-token", "")
        if not secrets.compare_digest(sent.encode(), secret.encode()):
            raise HTTPException(403, "missing or wrong X-Review-Token (reload the page)")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPException(415, "send application/json")

    Write = Depends(same_origin_with_token)

    @lru_cache(maxsize=4096)
    def thumbnail(pid: str) -> bytes | None:
        return thumbnail_jpeg(view.queue.images[pid], size=thumb_size)

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        html = render(
            "review.html",
            title=title,
            token=secret,
            reviewer=reviewer,
            classes=view.queue.classes,
            reasons=REASONS,
            counts=view.counts(),
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/review.js")
    def script() -> Response:
        js = files("prodcat").joinpath("report_templates/review.js").read_text(encoding="utf-8")
        return Response(js, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    @app.get("/api/items")
    def items(
        label: str | None = Query(None, max_length=1000, description="Given label."),
        suggested: str | None = Query(None, max_length=1000, description="Suggested label."),
        reason: Literal["mislabel", "review"] | None = None,
        status: Literal["pending", "skipped", "decided", "all"] = "pending",
        sort: Literal["queue", "confidence", "-confidence"] = "queue",
        page: int = Query(0, ge=0),
        size: int = Query(50, ge=1, le=MAX_PAGE),
    ) -> dict[str, Any]:
        """A page of the queue, filtered and sorted; ``counts`` per status over the whole queue."""
        with lock:
            try:
                rows = view.select(
                    label=label or None,
                    suggested=suggested or None,
                    reason=reason,
                    status=None if status == "all" else status,
                    sort=sort,
                )
            except ValueError as e:
                raise HTTPException(422, str(e)) from None
            chunk = rows[page * size : (page + 1) * size]
            return {
                "total": len(rows),
                "page": page,
                "size": size,
                "pages": max(1, -(-len(rows) // size)),
                "items": [view.item(int(r)) for r in chunk],
                "counts": view.counts(),
            }

    @app.get("/api/history")
    def history(
        reviewer: str = Query(..., min_length=1, max_length=64), limit: int = Query(20, ge=1, le=500)
    ) -> dict[str, Any]:
        """``reviewer``'s latest rows of the decisions file (undo rows included), newest first."""
        with lock:
            mine = [decision_json(d) for d in reversed(log.events) if d.reviewer == reviewer][:limit]
        return {"decisions": mine}

    @app.get("/image")
    def image(id: str = Query(..., min_length=1, max_length=1000)) -> Response:
        """A JPEG thumbnail of product ``id``'s catalog image (404 when not queued, without image or
        undecodable)."""
        if view.queue.images.get(id) is None:
            raise HTTPException(404, "no image for this product")
        jpeg = thumbnail(id)
        if jpeg is None:
            raise HTTPException(404, "the product's image cannot be decoded")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/decide", dependencies=[Write])
    def decide(body: DecideRequest) -> dict[str, Any]:
        """Record one decision (appended and fsynced before the answer)."""
        row = view.row_of.get(body.id)
        if row is None:
            raise HTTPException(404, f"product {body.id!r} is not in the review queue")
        given, suggestion = view.cols["given_label"][row], view.cols["suggestion"][row]
        new = _new_label(body, given, suggestion, view)
        reason = ";".join(r for i, r in enumerate(REASONS) if int(view.reasons[row]) & (1 << i))
        d = Decision(now(), body.reviewer, body.id, body.action, given, new, reason)
        with lock:
            try:
                stored = log.append(d)
            except (DecisionsError, OSError) as e:
                raise HTTPException(500, f"decision not saved: {e}") from None
            view.record(stored)
            return {"item": view.item(row), "counts": view.counts()}

    @app.post("/api/undo", dependencies=[Write])
    def undo(body: UndoRequest) -> dict[str, Any]:
        """Withdraw the reviewer's latest decision still in effect (409 when there is none)."""
        with lock:
            target = next(
                (
                    d
                    for d in reversed(log.events)
                    if d.reviewer == body.reviewer and d.action != "undo" and view.current.get(d.id) is d
                ),
                None,
            )
            if target is None:
                raise HTTPException(409, "nothing to undo")
            u = Decision(
                now(), body.reviewer, target.id, "undo", target.old_label, target.new_label, target.reason
            )
            log.append(u)
            view.record(replay(e for e in log.events if e.id == target.id).get(target.id), pid=target.id)
            row = view.row_of.get(target.id)
            return {
                "undone": decision_json(target),
                "item": None if row is None else view.item(row),
                "counts": view.counts(),
            }

    app.add_middleware(BodySizeLimit, limit=MAX_BODY)
    return app


def _new_label(body: DecideRequest, given: str | None, suggestion: str, view: QueueView) -> str | None:
    if body.action == "accept":
        return suggestion
    if body.action == "keep":
        if given is None:
            raise HTTPException(422, "keep: this product has no given label; accept or relabel it")
        return given
    if body.action == "relabel":
        if body.new_label is None or body.new_label not in view.queue.classes:
            raise HTTPException(422, f"relabel needs new_label, one of the {len(view.queue.classes)} classes")
        return body.new_label
    return None


def _origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


__all__ = ["LOOPBACK", "SORTS", "STATUSES", "create_app", "host_name"]
