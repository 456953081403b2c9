"""Prediction and embedding on a Ray cluster with Ray Data (the ``ray`` extra; imported only by ``--engine ray``).

Both jobs are one Ray Data pipeline, read -> ``map_batches`` over a pool of stateful actors -> write:

* :func:`predict_catalog`: the catalog file is read by Ray Data (CSV cells as bytes, as the local stream reads
  them), each :class:`CatalogPredictor` actor loads the bundle once and runs, per batch, the local path's own code
  (:func:`prodcat.stream.clean_batch`, :meth:`prodcat.predict.Predictor.predict_frame`,
  :func:`prodcat.predict.flatten`), so predictions are the local ones; the output is a folder of Parquet files.
* :func:`embed_items`: each :class:`ItemEmbedder` actor builds one embedding model's backbone once and embeds its
  batches through :func:`prodcat.cache.cached_embed` into the embedding cache, keyed exactly as training keys it.

What a worker needs: the ``prodcat`` package, the bundle folder (predict), the catalog's files and images, and
(embed) the cache folder, at the same paths as on the driver: a local cluster, or a cluster on a shared file
system. Without an address a local cluster is started; with one (``ray://host:10001`` or ``host:6379``) the
driver joins it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodcat.catalog import CatalogError, ColumnMap

log = logging.getLogger("prodcat.ray")
#: CPUs reserved by each read and write task: they wait on the disk, the actors do the work.
IO_CPUS = 0.1


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """The ``ray`` module, initialised: joins ``address``, or starts a local cluster (``num_cpus`` CPUs, default
    all) when it is None; a driver that already called ``ray.init`` keeps its cluster."""
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("--engine ray needs Ray Data: pip install 'prodcat[ray]'") from e
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False)
    return ray


def _actor_options(workers: int, cpus: float, gpus: float, batch_rows: int) -> dict[str, Any]:
    """``map_batches`` arguments of an actor pool: ``workers`` actors, each reserving ``cpus`` / ``gpus``.

    Raises ValueError when the cluster cannot hold the pool plus a read and a write task (Ray Data would wait
    for the resources forever)."""
    import ray
    import ray.data

    if workers < 1 or cpus < 0 or gpus < 0 or batch_rows < 1:
        raise ValueError(
            f"need workers >= 1, cpus >= 0, gpus >= 0, batch_rows >= 1; got {workers}, {cpus}, {gpus}, {batch_rows}"
        )
    have = ray.cluster_resources()
    for kind, need in (("CPU", workers * cpus + 2 * IO_CPUS), ("GPU", workers * gpus)):
        if need > 0 and need > have.get(kind, 0.0) + 1e-9:
            raise ValueError(
                f"{workers} workers need {need:g} {kind}s (with {2 * IO_CPUS:g} CPU for reading and writing); the "
                f"cluster has {have.get(kind, 0.0):g} {kind}s: use fewer --workers or fewer "
                f"--{kind.lower()}s-per-worker"
            )
    return {
        "compute": ray.data.ActorPoolStrategy(size=workers),
        "num_cpus": cpus,
        **({"num_gpus": gpus} if gpus else {}),
        "batch_size": batch_rows,
    }


# ---------------------------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------------------------


class CatalogPredictor:
    """Ray Data actor: the bundle loaded once, then raw catalog batches (pyarrow tables) -> prediction rows.

    Rows a batch cannot use are left out and logged by id (a worker does not know its rows' file positions).
    """

    def __init__(
        self,
        model_dir: str,
        columns: ColumnMap,
        base_dir: str,
        top_k: int,
        verify_key: str | None = None,
        cache_dir: str | None = None,
    ) -> None:
        from prodcat.bundle import load_bundle
        from prodcat.predict import warm_up

        self.predictor = load_bundle(model_dir, verify_key=verify_key, cache_dir=cache_dir)
        warm_up(self.predictor)  # encoders load once per actor, not in its first batch
        self.columns, self.base_dir, self.top_k = columns, Path(base_dir), top_k

    def __call__(self, table: Any) -> pd.DataFrame:
        from prodcat.predict import flatten
        from prodcat.stream import clean_batch, decode_table

        raw, undecodable = decode_table(table)
        for i, why in undecodable.items():
            log.warning(
                "row left out: %s (id=%s)", why, raw[self.columns.id].iat[i] if self.columns.id else "?"
            )
        raw = raw.drop(index=list(undecodable))
        df, report = clean_batch(raw, self.columns, base_dir=self.base_dir, row_numbers=None, labels=False)
        for line in report.rejected:
            log.warning("row left out: %s", line)
        return flatten(self.predictor.predict_frame(df.drop(columns="_row"), top_k=self.top_k))


def _skip_malformed(row: Any) -> str:
    log.warning(
        "malformed record left out: %d fields where the header has %d",
        row.actual_columns,
        row.expected_columns,
    )
    return "skip"


def read_catalog_dataset(path: Path, *, encoding: str | None = None, **columns: Any) -> tuple[Any, ColumnMap]:
    """A Ray Dataset of the raw catalog columns the schema needs (CSV cells as bytes) and the column mapping."""
    import ray.data

    from prodcat.stream import csv_options, inspect_file

    if path.is_dir():
        raise CatalogError(
            f"{path}: a Rakuten folder is read whole; use --engine local, or convert it to Parquet"
        )
    layout = inspect_file(path, encoding=encoding, **columns)
    if layout.columns.id is None:
        raise CatalogError(
            f"{path}: rows are numbered (--id-column none or no id column) and Ray workers do not know row "
            "positions; give the catalog an id column, or use --engine local"
        )
    if layout.delimiter is None:
        return ray.data.read_parquet(str(path), columns=layout.read, num_cpus=IO_CPUS), layout.columns
    options = csv_options(layout, encoding=encoding)
    options["parse_options"].invalid_row_handler = _skip_malformed
    return ray.data.read_csv(str(path), num_cpus=IO_CPUS, **options), layout.columns


def predict_catalog(
    model_dir: Path,
    catalog: Path,
    out_dir: Path,
    columns: dict[str, Any],
    *,
    workers: int = 1,
    cpus: float = 1.0,
    gpus: float = 0.0,
    batch_rows: int = 2048,
    top_k: int = 3,
    verify_key: Path | None = None,
    cache_dir: str | None = None,
) -> dict[str, int]:
    """Predict ``catalog`` with the bundle ``model_dir`` on the connected cluster (:func:`connect` first) and
    write the rows, in catalog order, as Parquet files in the folder ``out_dir``. Returns counts: rows, auto,
    review. ``cache_dir``: the embedding cache the actors read and fill (a folder they share; "auto" is
    resolved here)."""
    import ray.data

    from prodcat.cache import resolve_cache_dir

    # Before the read: a dataset keeps a copy of the context as it was when it was created (ray.data's
    # read_api copies it), so setting the order afterwards did nothing and the output order was left to chance.
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ds, cmap = read_catalog_dataset(catalog, **columns)
    preds = ds.map_batches(
        CatalogPredictor,
        fn_constructor_kwargs={
            "model_dir": str(Path(model_dir).resolve()),
            "columns": cmap,
            "base_dir": str(catalog.parent.resolve()),
            "top_k": top_k,
            "verify_key": None if verify_key is None else str(verify_key),
            "cache_dir": None if cache_dir is None else str(resolve_cache_dir(cache_dir)),
        },
        batch_format="pyarrow",
        **_actor_options(workers, cpus, gpus, batch_rows),
    )
    preds.write_datasink(_ordered_parquet_sink(str(out_dir)), ray_remote_args={"num_cpus": IO_CPUS})
    return output_counts(out_dir)


def _ordered_parquet_sink(path: str) -> Any:
    """A Ray Data sink that writes each write task's blocks, in their order, as one Parquet file named by the
    task's index (zero-padded: the folder read in name order is the catalog order).

    Ray's own ``write_parquet`` hands a task's blocks to pyarrow's ``write_dataset`` with threads on, which does not
    keep their row order: a folder read back now and then had rows of one file out of catalog order (seen once in
    three CI runs). ``BlockBasedFileDatasink`` (public) concatenates a task's blocks in order and writes them here
    with ``pyarrow.parquet.write_table``."""
    from ray.data.datasource import BlockBasedFileDatasink

    class OrderedParquetSink(BlockBasedFileDatasink):  # type: ignore[misc]
        def __init__(self, path: str) -> None:
            super().__init__(path, file_format="parquet")

        def write_block_to_file(self, block: Any, file: Any) -> None:
            import pyarrow.parquet as pq

            pq.write_table(block.to_arrow(), file)

    return OrderedParquetSink(path)


def output_counts(out_dir: Path) -> dict[str, int]:
    """rows / auto / review of a folder of prediction Parquet files (reads one column)."""
    import pyarrow.dataset as pads

    decision = (
        pads.dataset(str(out_dir), format="parquet")
        .to_table(columns=["decision"])
        .column(0)
        .to_numpy(zero_copy_only=False)
    )
    return {
        "rows": len(decision),
        "auto": int((decision == "auto").sum()),
        "review": int((decision == "review").sum()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Embedding (training's expensive stage)
# ---------------------------------------------------------------------------------------------------------------


class ItemEmbedder:
    """Ray Data actor: one embedding model's backbone built once; batches of items -> cached embeddings.

    ``model``: an :class:`prodcat.models.EmbeddingClassifier` (unfitted; ``embedder_adapted_`` set when its
    embedder adapts to the data) whose ``cache_dir`` is the cache to fill. Each batch goes through
    :func:`prodcat.cache.cached_embed`, so items already cached are read, the others computed and stored.
    Returns per batch the number of items embedded (``ok``) and found in the cache (``hits``).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.embedder = model.backbone()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from prodcat.cache import cached_embed

        items = [None if isinstance(v, float) and np.isnan(v) else v for v in batch["item"].tolist()]
        _, ok = cached_embed(
            self.embedder,
            items,
            modality=self.model.modality_,
            cache_dir=self.model.cache_dir,
            batch_size=self.model.batch_size,
        )
        return {"ok": np.array([int(ok.sum())]), "items": np.array([len(items)])}


def embed_items(
    model: Any,
    items: list[Any],
    *,
    workers: int = 1,
    cpus: float = 1.0,
    gpus: float = 0.0,
    batch_rows: int = 1024,
) -> dict[str, int]:
    """Embed ``items`` (texts or image paths, as ``model`` reads them from a catalog) on the connected cluster
    into ``model.cache_dir``. Returns ``{"items": n, "embedded": rows with a usable item}``."""
    import ray.data

    ds = ray.data.from_pandas(pd.DataFrame({"item": pd.Series(items, dtype=object)}))
    done = ds.map_batches(
        ItemEmbedder,
        fn_constructor_kwargs={"model": model},
        batch_format="numpy",
        **_actor_options(workers, cpus, gpus, batch_rows),
    )
    totals = {"items": 0, "embedded": 0}
    for batch in done.iter_batches(batch_format="numpy"):
        totals["items"] += int(batch["items"].sum())
        totals["embedded"] += int(batch["ok"].sum())
    return totals
