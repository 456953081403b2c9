"""``prodcat serve MODEL_DIR``: serve a trained model bundle over HTTP (FastAPI + uvicorn).

Register in ``prodcat.cli`` with ``app.command()(serve)``. Also runnable alone:
``python -m prodcat.commands.serve MODEL_DIR --port 8000``. See docs/serving.md for the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prodcat.commands.common import VerifyKey, fail

MiB = 1024 * 1024


def serve(
    model_dir: Annotated[
        Path,
        typer.Argument(
            help="Model bundle folder (written by `prodcat train`).", file_okay=False, exists=True
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Interface to listen on. 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[
        int, typer.Option(help="Worker processes; each loads its own copy of the model.", min=1)
    ] = 1,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body (413 above).")] = 16.0,
    max_image_mb: Annotated[float, typer.Option(help="Largest image file, after base64 decoding.")] = 8.0,
    max_image_pixels: Annotated[
        int, typer.Option(help="Largest image width x height (checked from the header).")
    ] = 25_000_000,
    max_title_chars: Annotated[int, typer.Option(help="Longest title, in characters.")] = 2_000,
    max_description_chars: Annotated[int, typer.Option(help="Longest description, in characters.")] = 20_000,
    max_batch: Annotated[int, typer.Option(help="Most products in one POST /predict/batch.")] = 64,
    max_top_k: Annotated[int, typer.Option(help="Upper bound of the top_k query parameter.")] = 20,
    bad_image: Annotated[
        str,
        typer.Option(
            help="'reject': an unusable image is a 422. 'ignore': predict from the text and report image_error."
        ),
    ] = "reject",
    merge_wait_ms: Annotated[
        float,
        typer.Option(
            help="Under load, wait up to this long (and at most a quarter of the last model call) so that "
            "concurrent requests share one model call; never when idle; 0: off."
        ),
    ] = 50.0,
    timeout_s: Annotated[float, typer.Option(help="Longest wait for the model per request (504).")] = 30.0,
    limit_concurrency: Annotated[
        int | None, typer.Option(help="Open connections per worker before uvicorn answers 503.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: debug, info, warning, error.")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log one line per request.")] = True,
    verify_key: VerifyKey = None,
) -> None:
    """Serve a model bundle: POST /predict (JSON or multipart upload), POST /predict/batch, GET /health,
    GET /metadata, GET /metrics; OpenAPI docs at /docs. The model is loaded once, at start-up."""
    from pydantic import ValidationError

    from prodcat.serve import Predictor, ServeSettings, load_predictor, run

    try:
        settings = ServeSettings(
            max_body_bytes=int(max_body_mb * MiB),
            max_image_bytes=int(max_image_mb * MiB),
            max_image_pixels=max_image_pixels,
            max_title_chars=max_title_chars,
            max_description_chars=max_description_chars,
            max_batch=max_batch,
            max_top_k=max_top_k,
            bad_image=bad_image,  # type: ignore[arg-type]  # validated by pydantic just below
            predict_timeout_s=timeout_s,
            merge_wait_ms=merge_wait_ms,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise fail(f"invalid server option: {problems}") from None
    try:
        predictor: Predictor | None = load_predictor(model_dir, verify_key=verify_key)
    except Exception as exc:  # the bundle loader's errors already say what is wrong (checksum, version, ...)
        raise fail(f"cannot load the model bundle {model_dir}: {exc}") from None
    assert predictor is not None
    name = predictor.metadata.get("name") or model_dir.name
    typer.echo(
        f"serving {name} ({len(predictor.classes)} classes) on http://{host}:{port}  (API docs: /docs)"
    )
    if workers > 1:
        predictor = None  # checked; each worker process loads its own copy
    run(
        model_dir,
        predictor=predictor,
        check_bundle=False,
        verify_key=verify_key,
        host=host,
        port=port,
        settings=settings,
        workers=workers,
        log_level=log_level,
        access_log=access_log,
        limit_concurrency=limit_concurrency,
    )


if __name__ == "__main__":
    typer.run(serve)
