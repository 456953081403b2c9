"""What every ``prodcat`` sub-command shares: the catalog argument, the column options and error handling.

Sub-command modules import from here, never from :mod:`prodcat.cli` (which imports them to wire the app), so the
import graph has no circle and each ``prodcat.commands.*`` module imports on its own.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any

import typer

#: Exit status of every handled error (bad input, unreadable file, bad config); typer's usage errors use it too.
EXIT_ERROR = 2

CatalogArg = Annotated[
    Path, typer.Argument(help="Catalog file (.csv/.tsv/.parquet) or Rakuten challenge folder.")
]
TextCols = Annotated[
    str | None,
    typer.Option(
        "--text-columns",
        help="Comma-separated text columns: the first is the title, the rest the description.",
    ),
]
LabelCol = Annotated[
    str | None, typer.Option("--label-column", help="Label column (default: label/prdtypecode/...).")
]
ImageCol = Annotated[
    str | None,
    typer.Option(
        "--image-column",
        "--image-columns",
        help="Image path column(s), paths relative to the catalog; several comma-separated (front,back,detail) "
        "and/or several paths joined with ';' in a cell: each photo is embedded once and pooled per product.",
    ),
]
IdCol = Annotated[
    str | None,
    typer.Option(
        "--id-column", help="Unique product id column, or 'none' to number the rows (0, 1, ...) instead."
    ),
]
TaxonomyCols = Annotated[
    str | None,
    typer.Option(
        "--taxonomy-columns",
        help="Comma-separated parent category columns, coarse to fine (the label is the leaf), e.g. "
        "master_category,sub_category.",
    ),
]
PathSep = Annotated[
    str | None,
    typer.Option("--path-separator", help='Labels are category paths split on this, e.g. " > ".'),
]
Encoding = Annotated[
    str | None, typer.Option("--encoding", help="Text encoding of CSV/TSV files (default UTF-8).")
]
VerifyKey = Annotated[
    Path | None,
    typer.Option(
        "--verify-key",
        help="Public key (PEM), or CA certificate(s) (PEM) for certificate signatures: refuse the bundle unless "
        "`prodcat sign` signed exactly its files with the matching key or a certificate issued by that CA.",
    ),
]


def split_columns(text_columns: str | None) -> list[str] | None:
    """``"title, description"`` -> ``["title", "description"]``; ``None`` (or only commas) -> ``None``."""
    names = [c.strip() for c in text_columns.split(",") if c.strip()] if text_columns else []
    return names or None


def column_options(
    text_columns: str | None,
    label_column: str | None,
    image_column: str | None,
    id_column: str | None,
    encoding: str | None,
) -> dict[str, Any]:
    """Reader keyword arguments (:func:`prodcat.catalog.read_catalog`) from the shared column flags."""
    return {
        "text_columns": split_columns(text_columns),
        "label_column": label_column,
        "image_column": image_column,
        "id_column": id_column,
        "encoding": encoding,
    }


def fail(message: str) -> typer.Exit:
    """Print ``error: <message>`` in red to stderr and return the :class:`typer.Exit` to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=EXIT_ERROR)


def read_catalog_or_fail(
    catalog: Path,
    columns: dict[str, Any],
    *,
    split: str = "train",
    require_label: bool,
    echo: bool = True,
    reads: Collection[str] | None = None,
) -> Any:
    """The catalog DataFrame of :func:`prodcat.catalog.read_catalog` (its reader report echoed when ``echo``);
    a :class:`~prodcat.catalog.CatalogError` becomes :func:`fail`. ``reads``: the modalities a model reads
    (``"text"``, ``"image"``); a catalog with a column for none of them is refused (its every prediction would be
    the class prior)."""
    from prodcat.catalog import CatalogError, read_catalog

    try:
        df, report = read_catalog(catalog, split=split, require_label=require_label, **columns)
    except CatalogError as e:
        raise fail(str(e)) from None
    if reads is not None:
        names = [c for c in df.columns if c not in ("title", "description", "image", "label")]
        check_reads(catalog, columns, report, names, reads)
    if echo:
        for line in report.summary_lines():
            typer.echo(line)
    return df


def check_reads(
    catalog: Path, columns: dict[str, Any], report: Any, names: Collection[str], reads: Collection[str]
) -> None:
    """:func:`fail` when the catalog (its reader ``report``; ``names``: its columns) has a column for none of
    the modalities ``reads`` (``"text"``, ``"image"``) a model reads: its every prediction would be the prior."""
    from prodcat.catalog import IMAGE_CANDIDATES, TITLE_CANDIDATES

    found = {"text": not report.no_text_column, "image": not report.no_image_column}
    if not any(found[role] for role in reads):
        wanted = {
            "text": "text (" + ", ".join(columns.get("text_columns") or TITLE_CANDIDATES) + ")",
            "image": "image (" + (columns.get("image_column") or ", ".join(IMAGE_CANDIDATES)) + ")",
        }
        raise fail(
            f"{catalog}: the model reads {' or '.join(wanted[r] for r in sorted(reads, reverse=True))}, "
            f"and the catalog has no such column; its columns are: {', '.join(names)}"
        )


def open_catalog_or_fail(
    catalog: Path,
    columns: dict[str, Any],
    *,
    split: str = "train",
    batch_rows: int,
    reads: Collection[str] | None = None,
) -> Any:
    """A :class:`prodcat.stream.CatalogStream` of the catalog in batches of ``batch_rows`` rows (header, column
    mapping and, with ``reads``, the modality columns checked now as in :func:`read_catalog_or_fail`; the rows as
    they are read); a :class:`~prodcat.catalog.CatalogError` becomes :func:`fail`."""
    from prodcat.catalog import CatalogError
    from prodcat.stream import open_catalog

    try:
        stream = open_catalog(catalog, split=split, batch_rows=batch_rows, **columns)
    except CatalogError as e:
        raise fail(str(e)) from None
    if reads is not None:
        check_reads(catalog, columns, stream.report, stream.names, reads)
    return stream
