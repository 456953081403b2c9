"""``prodcat train``, ``prodcat evaluate`` and ``prodcat predict``: the commands a catalog team runs."""

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
    PathSep,
    TaxonomyCols,
    TextCols,
    VerifyKey,
    fail,
    open_catalog_or_fail,
    read_catalog_or_fail,
    split_columns,
)
from prodcat.commands.scale import (
    CpusPerWorker,
    Engine,
    GpusPerWorker,
    RayAddress,
    Workers,
    check_engine,
    predict_on_ray,
)

IdColOverride = Annotated[
    str | None,
    typer.Option(
        "--id-column",
        help="Product id column of this catalog, or 'none' to number the rows (default: the model's mapping).",
    ),
]
ModelDir = Annotated[Path, typer.Argument(help="Model bundle folder written by `prodcat train`.")]


def train(
    catalog: CatalogArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the model bundle.")],
    config: Annotated[
        str | None,
        typer.Option(
            "--config", "-c", help="YAML config file, or a built-in name: default, accurate, paper-gpu."
        ),
    ] = None,
    text_columns: TextCols = None,
    label_column: LabelCol = None,
    image_column: ImageCol = None,
    id_column: IdCol = None,
    encoding: Encoding = None,
    taxonomy_columns: TaxonomyCols = None,
    path_separator: PathSep = None,
    fusion: Annotated[str | None, typer.Option(help="Fusion method (overrides the config).")] = None,
    n_folds: Annotated[int | None, typer.Option(help="Out-of-fold folds (overrides the config).")] = None,
    validation_fraction: Annotated[
        float | None, typer.Option(help="Held-out fraction to score the model.")
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache", help="Do not read or write the cache (embeddings, OOF probabilities, fits)."
        ),
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed (overrides the config).")] = None,
    target_precision: Annotated[
        float | None,
        typer.Option(
            help="Precision the auto-accepted products must reach, e.g. 0.98 (overrides the config's "
            "target_precision); the rest go to review."
        ),
    ] = None,
    decisions: Annotated[
        Path | None,
        typer.Option(
            help="Decisions file of `prodcat review` (DECISIONS.csv): its relabels and drops are applied to the "
            "catalog before training."
        ),
    ] = None,
) -> None:
    """Train text and image models, clean label noise, fit the fusion, calibrate it and learn which
    predictions to accept at the target precision; write a model bundle."""
    from pydantic import ValidationError

    from prodcat.bundle import save_bundle
    from prodcat.config import load_config
    from prodcat.pipeline import train as run_training

    overrides = {
        "fusion.method": fusion,
        "n_folds": n_folds,
        "validation_fraction": validation_fraction,
        "seed": seed,
        "target_precision": target_precision,
        "columns.text_columns": split_columns(text_columns),
        "columns.label_column": label_column,
        "columns.image_column": image_column,
        "columns.id_column": id_column,
        "columns.encoding": encoding,
        "columns.taxonomy_columns": split_columns(taxonomy_columns),
        "columns.path_separator": path_separator,
    }
    try:
        cfg = load_config(config, **overrides)
    except (ValidationError, FileNotFoundError, ValueError) as e:
        raise fail(f"config: {e}") from None
    if no_cache:
        cfg.cache_dir = None
    df = read_catalog_or_fail(catalog, cfg.columns.model_dump(), require_label=True)
    applied = None if decisions is None else _apply_decisions(df, decisions, cfg.columns.taxonomy_columns)
    if applied is not None:
        df, counts = applied
    try:
        model = run_training(df, cfg)
    except (ValueError, KeyError, ImportError) as e:
        raise fail(str(e)) from None
    if applied is not None:
        model.metrics["decisions"] = {"file": str(decisions), **counts}
    save_bundle(model, out, input_schema={"columns": cfg.columns.model_dump()})
    print_summary(model.metrics)
    typer.echo(f"model written to {out}")


def _apply_decisions(df: Any, path: Path, taxonomy_columns: list[str] | None) -> tuple[Any, dict[str, int]]:
    """The catalog with the review decisions in ``path`` applied (:func:`prodcat.review.decisions.apply_decisions`)
    and their counts; a bad file fails naming its rows."""
    from prodcat.review.decisions import DecisionsError, apply_decisions, read_decisions

    try:
        return apply_decisions(df, read_decisions(path), taxonomy_columns=taxonomy_columns, source=str(path))
    except (OSError, DecisionsError) as e:
        raise fail(str(e)) from None


def print_summary(metrics: dict[str, Any]) -> None:
    """Training summary table: noise counts and validation macro-F1 of every model and the fusion."""
    typer.echo(
        f"trained on {metrics['n_train']} products, {metrics['n_classes']} classes "
        f"in {metrics['timings_s'].get('total', 0):.0f}s"
    )
    d = metrics.get("decisions")
    if d:
        typer.echo(
            f"  review decisions ({d['file']}): {d['relabelled']} relabelled, {d['dropped']} dropped, "
            f"{d['confirmed']} confirmed, {d['already_applied']} already in the catalog, {d['skipped']} skipped "
            f"({d['decisions']} rows, {d['products']} products)"
        )
    for role, info in metrics.get("modalities", {}).items():
        share = f"{info['rows']} of {metrics['n_train']} training products ({100 * info['share']:.0f}%)"
        typer.echo(
            f"  {role}: {share}, models: {', '.join(info['models'])}"
            if info["models"]
            else f"  {role}: {share}, no model trained"
        )
    for name, info in metrics.get("noise", {}).items():
        typer.echo(
            f"  noise [{name}]: {info['flagged']} flagged, {info['dropped']} dropped from training folds"
        )
    for note in metrics.get("fusion_adapted", []):
        typer.echo(f"  small catalog, fusion adapted: {note}")
    val = metrics.get("validation")
    if not val:
        return
    typer.echo(
        f"validation ({val['n']} held-out products), macro-F1 over the classes present, with 95% interval:"
    )
    for name, s in val["per_model"].items():
        typer.echo(
            f"  {name:40s} {s['macro_f1']:.4f}  [{s['macro_f1_ci'][0]:.4f}, {s['macro_f1_ci'][1]:.4f}]"
        )
    lo, hi = val["macro_f1_ci"]
    fusion = "fusion" if len(val["per_model"]) > 1 else "fusion (pass-through: one model)"
    typer.secho(f"  {fusion:40s} {val['macro_f1']:.4f}  [{lo:.4f}, {hi:.4f}]", bold=True)
    acc = val.get("acceptance")
    if acc and acc["accepted"]:
        typer.echo(
            f"auto-accepted at target precision {acc['target_precision']}: {acc['accepted']} of {acc['n']} "
            f"held-out products (coverage {acc['coverage']:.3f}), precision {acc['precision']:.4f} "
            f"(binomial SE {acc['precision_se']:.4f})"
        )
    elif acc:
        typer.echo(f"auto-accepted at target precision {acc['target_precision']}: none (all go to review)")


def evaluate(
    model_dir: ModelDir,
    catalog: CatalogArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder.")] = Path("report"),
    split: Annotated[str, typer.Option(help="Rakuten layout only: train or test.")] = "train",
    thumbnails: Annotated[
        str,
        typer.Option(help="Gallery photos: copy (thumbs/ folder next to the page), embed (base64) or none."),
    ] = "copy",
    verify_key: VerifyKey = None,
    id_column: IdColOverride = None,
) -> None:
    """Score a model on a labelled catalog: metrics.json, per-class and confusion CSVs, figures and an HTML
    report with a gallery of the errors behind the numbers.

    The catalog is read with the column mapping the model was trained with. Macro-F1 averages over the classes
    present in the catalog; classes the model knows but the catalog lacks are listed apart. ``--id-column``
    overrides the model's id column.
    """
    from prodcat.bundle import BundleError, load_model
    from prodcat.report import evaluate_to_dir

    try:
        model, manifest = load_model(model_dir, verify_key=verify_key)
    except BundleError as e:
        raise fail(str(e)) from None
    columns = manifest.get("input_schema", {}).get("columns", {})
    columns = dict(columns) if isinstance(columns, dict) else {}
    columns["taxonomy_columns"] = None  # leaves suffice: the bundle carries the tree
    if id_column is not None:
        columns["id_column"] = id_column
    df = read_catalog_or_fail(
        catalog, columns, split=split, require_label=True, reads={role for _, role, _ in model.models}
    )
    if thumbnails not in ("copy", "embed", "none"):
        raise fail(f"--thumbnails must be copy, embed or none, not {thumbnails!r}")
    metrics = evaluate_to_dir(model, df, out, title=str(catalog), thumbnails=thumbnails)
    lo, hi = metrics["macro_f1_ci"]
    ls = metrics["label_set"]
    typer.echo(
        f"macro-F1 {metrics['macro_f1']:.4f} [{lo:.4f}, {hi:.4f}] on {metrics['n']} products, "
        f"over the {ls['n_classes_averaged']} classes present"
    )
    if ls["model_classes_absent_from_data"]:
        typer.echo(
            f"  ({len(ls['model_classes_absent_from_data'])} classes of the model are absent: not averaged)"
        )
    for role, value in metrics["per_modality"].items():
        if value is not None:  # a model has only the modalities its catalog had
            typer.echo(f"  {role:8s} {value:.4f}")
    typer.echo(f"report written to {out}/report.html")


def predict(
    model_dir: ModelDir,
    catalog: CatalogArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.csv or .parquet).")],
    top_k: Annotated[int, typer.Option(help="How many ranked labels to write per product.")] = 3,
    chunk_size: Annotated[
        int, typer.Option(min=1, help="Products per chunk: rows read, predicted and written at a time.")
    ] = 2048,
    split: Annotated[str, typer.Option(help="Rakuten layout only: train or test.")] = "test",
    review_queue: Annotated[
        Path | None,
        typer.Option(
            help="Also write the products to review (decision 'review') to this .csv/.parquet file, most "
            "likely wrong first."
        ),
    ] = None,
    verify_key: VerifyKey = None,
    id_column: IdColOverride = None,
    cache_dir: Annotated[
        str | None,
        typer.Option(
            help="Embedding cache to read and fill ('auto': $PRODCAT_CACHE_DIR or ~/.cache/prodcat): texts and "
            "images embedded before (same content) are not embedded again. Off by default (docs/scale.md)."
        ),
    ] = None,
    engine: Engine = "local",
    ray_address: RayAddress = None,
    workers: Workers = 1,
    cpus_per_worker: CpusPerWorker = 1.0,
    gpus_per_worker: GpusPerWorker = 0.0,
) -> None:
    """Predict the category of every product of a catalog, streamed in chunks to CSV or Parquet, with a
    calibrated confidence and a decision (auto | review) per product.

    The catalog is read with the column mapping the model was trained with (``--id-column`` overrides its id),
    a chunk at a time, so memory stays flat whatever the catalog's size. Rows that cannot be used (a malformed
    record, text that is not UTF-8, an empty or repeated id) are left out and listed by row number; the others
    are predicted. A model trained on a text-only (image-only) catalog needs no image (text) column.
    `--engine ray` predicts on a Ray cluster (Ray Data; the `ray` extra) into a folder of Parquet files.
    """
    from prodcat.bundle import BundleError, load_bundle

    check_engine(engine)
    if engine == "ray" and review_queue is not None:
        raise fail("--review-queue orders the whole run: use --engine local, or order the Parquet output")

    for path in (out, review_queue):
        if path is not None and path.suffix.lower() not in (".csv", ".parquet"):
            raise fail(f"{path}: output must end in .csv or .parquet")
    try:
        predictor = load_bundle(model_dir, verify_key=verify_key, cache_dir=cache_dir)
    except BundleError as e:
        raise fail(str(e)) from None
    columns = predictor.model.config.columns.model_dump()
    columns["taxonomy_columns"] = None  # the bundle carries the tree: a catalog to predict need not
    if id_column is not None:
        columns["id_column"] = id_column
    # header and column mapping checked now, for either engine (a catalog with none of the model's inputs is refused)
    stream = open_catalog_or_fail(
        catalog, columns, split=split, batch_rows=chunk_size, reads=predictor.roles()
    )
    if engine == "ray":
        predict_on_ray(model_dir, catalog, out, columns, address=ray_address, workers=workers,
                       cpus=cpus_per_worker, gpus=gpus_per_worker, chunk_size=chunk_size, top_k=top_k,
                       verify_key=verify_key, cache_dir=cache_dir)  # fmt: skip
        return
    _predict_local(predictor, stream, out, chunk_size=chunk_size, top_k=top_k, review_queue=review_queue)


def _predict_local(
    predictor: Any, stream: Any, out: Path, *, chunk_size: int, top_k: int, review_queue: Path | None
) -> None:
    from prodcat.catalog import CatalogError
    from prodcat.predict import batch_predict, warm_up

    warm_up(predictor)  # encoders load here, so "seconds" below is the prediction itself
    t0 = time.perf_counter()
    try:
        counts = batch_predict(
            predictor,
            stream,
            out,
            chunk_size=chunk_size,
            top_k=top_k,
            review_queue=review_queue,
            total=stream.total,
        )
    except CatalogError as e:
        raise fail(f"{e} (nothing written)") from None
    dt = time.perf_counter() - t0
    for line in stream.report.summary_lines():
        typer.echo(line)
    typer.echo(
        json.dumps(
            {**counts, "seconds": round(dt, 1), "products_per_s": round(counts["rows"] / max(dt, 1e-9), 1)}
        )
    )
    typer.echo(f"predictions written to {out}")
    if review_queue is not None:
        typer.echo(f"{counts['review']} products to review written to {review_queue}")
