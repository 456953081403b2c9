"""``prodcat embed`` (training's embedding stage ahead of training) and ``prodcat predict --engine ray``: the
commands that take a catalog past one machine (docs/scale.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from prodcat.commands.common import (
    CatalogArg,
    Encoding,
    IdCol,
    ImageCol,
    LabelCol,
    TextCols,
    fail,
    read_catalog_or_fail,
    split_columns,
)

Engine = Annotated[
    str, typer.Option(help="local (this process) or ray (Ray Data over a pool of actors; the `ray` extra).")
]
RayAddress = Annotated[
    str | None,
    typer.Option(help="--engine ray: address of a running Ray cluster to join (default: start a local one)."),
]
Workers = Annotated[int, typer.Option(min=1, help="--engine ray: actors (each loads the model once).")]
CpusPerWorker = Annotated[float, typer.Option(min=0.0, help="--engine ray: CPUs reserved per actor.")]
GpusPerWorker = Annotated[float, typer.Option(min=0.0, help="--engine ray: GPUs reserved per actor.")]
ENGINES = ("local", "ray")


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise fail(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")


def _connect(address: str | None) -> Any:
    from prodcat.ray_engine import connect

    try:
        return connect(address)
    except RuntimeError as e:
        raise fail(str(e)) from None


def predict_on_ray(
    model_dir: Path,
    catalog: Path,
    out: Path,
    columns: dict[str, Any],
    *,
    address: str | None,
    workers: int,
    cpus: float,
    gpus: float,
    chunk_size: int,
    top_k: int,
    verify_key: Path | None,
    cache_dir: str | None = None,
) -> None:
    """``prodcat predict --engine ray``: a folder of Parquet files at ``out``."""
    from prodcat.catalog import CatalogError
    from prodcat.ray_engine import predict_catalog

    if out.suffix.lower() != ".parquet":
        raise fail(f"{out}: --engine ray writes a folder of Parquet files; name it *.parquet")
    _connect(address)
    t0 = time.perf_counter()
    try:
        counts = predict_catalog(
            model_dir, catalog, out, columns, workers=workers, cpus=cpus, gpus=gpus, batch_rows=chunk_size,
            top_k=top_k, verify_key=verify_key, cache_dir=cache_dir,
        )  # fmt: skip
    except (CatalogError, ValueError) as e:
        raise fail(str(e)) from None
    dt = time.perf_counter() - t0
    rate = round(counts["rows"] / max(dt, 1e-9), 1)
    typer.echo(json.dumps({**counts, "workers": workers, "seconds": round(dt, 1), "products_per_s": rate}))
    typer.echo(f"predictions written to {out}/ (Parquet files, catalog order)")


def embed(
    catalog: CatalogArg,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="Training config (YAML or built-in name) whose encoders to run."),
    ] = None,
    text_columns: TextCols = None,
    label_column: LabelCol = None,
    image_column: ImageCol = None,
    id_column: IdCol = None,
    encoding: Encoding = None,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    workers: Workers = 1,
    cpus_per_worker: CpusPerWorker = 1.0,
    gpus_per_worker: GpusPerWorker = 0.0,
    batch_rows: Annotated[int, typer.Option(min=1, help="Items per actor call (--engine ray).")] = 1024,
) -> None:
    """Compute every encoder's embeddings of a catalog into the embedding cache, ahead of `prodcat train`.

    Same config and column options as `prodcat train`, which then reads the embeddings from the cache and only
    fits heads, cleans noise, fuses and calibrates. `--engine ray` spreads the encoders' work over a Ray
    cluster (the cache folder must be shared by the workers: a local cluster, or a shared file system).
    """
    from pydantic import ValidationError

    from prodcat.config import load_config
    from prodcat.precompute import embed_locally, embedding_jobs

    check_engine(engine)
    overrides = {
        "columns.text_columns": split_columns(text_columns),
        "columns.label_column": label_column,
        "columns.image_column": image_column,
        "columns.id_column": id_column,
        "columns.encoding": encoding,
    }
    try:
        cfg = load_config(config, **overrides)
    except (ValidationError, FileNotFoundError, ValueError) as e:
        raise fail(f"config: {e}") from None
    df = read_catalog_or_fail(catalog, cfg.columns.model_dump(), require_label=False)
    try:
        jobs = embedding_jobs(df, cfg)
    except (ValueError, KeyError, ImportError) as e:
        raise fail(str(e)) from None
    if not jobs:
        raise fail("the config has no embedding model (embed:<encoder>): nothing to compute ahead")
    if engine == "ray":
        from prodcat.ray_engine import embed_items

        _connect(ray_address)
    for job in jobs:
        t0 = time.perf_counter()
        if engine == "ray":
            try:
                counts = embed_items(
                    job.model, job.items, workers=workers, cpus=cpus_per_worker, gpus=gpus_per_worker,
                    batch_rows=batch_rows,
                )  # fmt: skip
            except ValueError as e:
                raise fail(str(e)) from None
        else:
            counts = embed_locally(job)
        dt = time.perf_counter() - t0
        typer.echo(json.dumps({"model": job.name, "column": job.column, **counts, "seconds": round(dt, 1)}))
    typer.echo(f"embeddings cached in {cfg.cache_dir}; `prodcat train` with the same config reads them")
