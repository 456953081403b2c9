"""``prodcat review CATALOG --model MODEL_DIR [--audit AUDIT_DIR] --decisions DECISIONS.csv``: the review page.

Predicts the catalog with the bundle (products whose decision is ``review``), adds the audit's suspected
mislabels, opens (or creates) the decisions file and serves the page with uvicorn on loopback by default. See
docs/review.md. Register in ``prodcat.cli`` with ``app.command()(review)``.
"""

from __future__ import annotations

import getpass
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prodcat.commands.common import CatalogArg, VerifyKey, fail, read_catalog_or_fail

if TYPE_CHECKING:
    from prodcat.review.decisions import DecisionLog
    from prodcat.review.queue import QueueView


def review(
    catalog: CatalogArg,
    model: Annotated[Path, typer.Option("--model", help="Model bundle folder (`prodcat train`).")],
    decisions: Annotated[
        Path,
        typer.Option(
            "--decisions",
            help="Decisions file (CSV, created when absent): every decision is appended and fsynced at once; "
            "an existing file is resumed. `prodcat train --decisions` applies it.",
        ),
    ],
    audit: Annotated[
        Path | None,
        typer.Option("--audit", help="Output folder of `prodcat audit` on this catalog (its issues.csv)."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (loopback by default; anything else warns).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(help="Extra host name the page may be reached by (repeatable), e.g. a machine name."),
    ] = None,
    reviewer: Annotated[
        str | None, typer.Option(help="Reviewer name written with each decision (default: the OS user).")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option("--id-column", help="Product id column (default: the model's mapping).")
    ] = None,
    split: Annotated[str, typer.Option(help="Rakuten layout only: train or test.")] = "train",
    chunk_size: Annotated[int, typer.Option(help="Products per prediction chunk.", min=1)] = 2048,
    cache_dir: Annotated[
        str | None, typer.Option(help="Embedding cache folder: 'auto' (default location) or 'none'.")
    ] = "auto",
    verify_key: VerifyKey = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve a review page: suspected mislabels (--audit) and low-confidence predictions, decided with the
    keyboard; every decision is saved to DECISIONS.csv the moment it is made."""
    import pandas as pd

    from prodcat.bundle import BundleError, load_bundle
    from prodcat.cache import resolve_cache_dir
    from prodcat.review.decisions import DecisionLog, replay
    from prodcat.review.queue import QueueView, build_queue

    cache = resolve_cache_dir(None if cache_dir in (None, "", "none") else cache_dir)
    try:
        predictor = load_bundle(model, verify_key=verify_key, cache_dir=None if cache is None else str(cache))
    except BundleError as e:
        raise fail(str(e)) from None
    columns = predictor.model.config.columns.model_dump()
    columns["taxonomy_columns"] = None
    if id_column is not None:
        columns["id_column"] = id_column
    df = read_catalog_or_fail(catalog, columns, split=split, require_label=False)
    issues = None
    if audit is not None:
        path = audit / "issues.csv" if audit.is_dir() else audit
        try:
            issues = pd.read_csv(path, dtype=str, keep_default_na=False)  # ids and labels as written
        except (OSError, ValueError) as e:
            raise fail(f"--audit: cannot read {path}: {e}") from None
    try:
        log = DecisionLog(decisions)  # a bad or busy decisions file fails before the catalog is predicted
    except (ValueError, OSError) as e:  # DecisionsError is a ValueError
        raise fail(str(e)) from None
    try:
        queue = build_queue(
            df,
            _predictions(predictor, df, model, cache, chunk_size=chunk_size),
            sources=predictor.sources(),
            classes=predictor.classes,
            issues=issues,
        )
    except (ValueError, KeyError, OSError) as e:
        log.close()
        raise fail(str(e) if not isinstance(e, KeyError) else f"--audit: missing column {e}") from None
    view = QueueView(queue, replay(log.events))
    _serve(view, log, host=host, port=port, allowed_host=allowed_host, reviewer=reviewer, log_level=log_level)


def _predictions(predictor: Any, df: Any, model: Path, cache: Path | None, *, chunk_size: int) -> Any:
    """The catalog's predictions for the queue (:func:`prodcat.review.queue.predict_catalog`), kept in the cache
    folder (``review/<key>.parquet``) under a key of the bundle's manifest (which holds the sha256 of every
    bundle file) and the catalog's ids and texts with each image file's path, size and modification time: a
    restart on the same bundle and catalog predicts nothing."""
    import pandas as pd

    from prodcat.review.queue import predict_catalog

    keep = ["id", "label", "confidence", "decision"]
    keep += [f"{s}_{k}" for s in predictor.sources() for k in ("label", "probability")]
    if cache is None:
        return predict_catalog(predictor, df, chunk_size=chunk_size)[keep]
    path = cache / "review" / f"{_catalog_key(model, df)}.parquet"
    try:
        hit = pd.read_parquet(path)
        if hit.columns.tolist() == keep and hit["id"].tolist() == df["id"].astype(str).tolist():
            typer.echo(f"predictions from the cache ({path})")
            return hit
    except (OSError, ValueError, ImportError):
        pass  # absent or unreadable: predict again
    pred = predict_catalog(predictor, df, chunk_size=chunk_size)[keep]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        pred.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as e:
        typer.echo(f"predictions not cached ({e})", err=True)
    return pred


def _catalog_key(model: Path, df: Any) -> str:
    import pandas as pd

    h = hashlib.sha256((model / "manifest.json").read_bytes())
    text = df[["id", "title", "description"]].astype(str)
    h.update(pd.util.hash_pandas_object(text, index=False).to_numpy().tobytes())
    for image in df["image"]:
        try:
            st = os.stat(image) if isinstance(image, str) else None
        except OSError:
            st = None
        h.update(f"{image}|{st and st.st_size}|{st and st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _serve(
    view: QueueView,
    log: DecisionLog,
    *,
    host: str,
    port: int,
    allowed_host: list[str] | None,
    reviewer: str | None,
    log_level: str,
) -> None:
    import uvicorn

    from prodcat.review.app import LOOPBACK, create_app

    c, reasons = view.counts(), view.reasons
    typer.echo(
        f"{c['total']} products to review ({int(((reasons & 1) > 0).sum())} suspected mislabels, "
        f"{int(((reasons & 2) > 0).sum())} low-confidence predictions); {c['decided']} decided and "
        f"{c['skipped']} skipped in {log.path}"
    )
    wildcard = host in ("0.0.0.0", "::", "")
    hosts = None if wildcard else sorted({*LOOPBACK, host, *(allowed_host or [])})
    if host not in LOOPBACK:
        typer.secho(
            f"warning: listening on {host or 'every interface'}, beyond this machine: anyone who can reach "
            f"port {port} can read the catalog's products and record decisions (there is no login).",
            fg=typer.colors.YELLOW,
            err=True,
        )
    app = create_app(view, log, reviewer=reviewer or _os_user(), allowed_hosts=hosts)
    shown = "127.0.0.1" if wildcard else host
    typer.echo(
        f"review page: http://{'[' + shown + ']' if ':' in shown else shown}:{port}/  (Ctrl+C to stop)"
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
    finally:
        log.close()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"
