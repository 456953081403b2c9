"""The ``prodcat`` command line (typer). Sub-commands live in ``prodcat.commands.*``; this module only wires them.

Heavy imports happen inside commands so ``prodcat --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from prodcat import __version__

app = typer.Typer(
    name="prodcat",
    help="Multimodal product categorisation: train, evaluate, audit labels, predict and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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
    str | None, typer.Option("--image-column", help="Image path column, relative to the catalog.")
]
IdCol = Annotated[str | None, typer.Option("--id-column", help="Unique product id column.")]
Encoding = Annotated[
    str | None, typer.Option("--encoding", help="Text encoding of CSV/TSV files (default UTF-8).")
]


def column_options(
    text_columns: str | None,
    label_column: str | None,
    image_column: str | None,
    id_column: str | None,
    encoding: str | None,
) -> dict[str, Any]:
    """Reader keyword arguments from the shared column flags."""
    return {
        "text_columns": [c.strip() for c in text_columns.split(",") if c.strip()] if text_columns else None,
        "label_column": label_column,
        "image_column": image_column,
        "id_column": id_column,
        "encoding": encoding,
    }


def fail(message: str) -> typer.Exit:
    """Print an error in red to stderr and return the Exit to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"prodcat {__version__}")
        raise typer.Exit()


@app.command()
def inspect(
    catalog: CatalogArg,
    text_columns: TextCols = None,
    label_column: LabelCol = None,
    image_column: ImageCol = None,
    id_column: IdCol = None,
    encoding: Encoding = None,
    split: Annotated[str, typer.Option(help="Rakuten layout only: train or test.")] = "train",
    decode: Annotated[
        bool, typer.Option(help="Fully decode every image (slower, finds corrupt pixel data).")
    ] = False,
    top: Annotated[int, typer.Option(help="How many classes to list.")] = 60,
) -> None:
    """Read a catalog and print a summary: rows, classes with counts, missing text/images, image sizes."""
    from prodcat.catalog import CatalogError, read_catalog, summarize

    try:
        df, report = read_catalog(
            catalog,
            split=split,
            **column_options(text_columns, label_column, image_column, id_column, encoding),
        )
    except CatalogError as e:
        raise fail(str(e)) from None
    for line in report.summary_lines():
        typer.echo(line)
    s = summarize(df, decode=decode)
    typer.echo(f"rows: {s['rows']}   labelled: {s['labelled']}   classes: {s['classes']}")
    counts = s["class_counts"]
    assert isinstance(counts, dict)
    for label, n in list(counts.items())[:top]:
        typer.echo(f"  {n:7d}  {label}")
    if len(counts) > top:
        typer.echo(f"  ... {len(counts) - top} more classes")
    typer.echo(
        f"empty title: {s['empty_title']}   empty description: {s['empty_description']}   "
        f"empty text: {s['empty_text']}"
    )
    bad = s["images_unreadable"]
    assert isinstance(bad, dict)
    typer.echo(f"images readable: {s['images_ok']}   missing/unreadable: {len(bad)}")
    for pid, reason in list(bad.items())[:10]:
        typer.echo(f"  {pid}: {reason}")
    sz = s["image_size"]
    assert isinstance(sz, dict)
    if s["images_ok"]:
        typer.echo(
            f"image size (w x h): min {sz['min_width']}x{sz['min_height']}  median "
            f"{sz['median_width']}x{sz['median_height']}  max {sz['max_width']}x{sz['max_height']}"
        )


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the synthetic catalog and results.")] = Path(
        "demo-output"
    ),
    n_per_class: Annotated[int, typer.Option(help="Products per category (8 categories).")] = 60,
    config: Annotated[str | None, typer.Option(help="Training config (YAML or built-in name).")] = None,
) -> None:
    """Generate a small SYNTHETIC catalog and run train -> evaluate -> predict on it."""
    from prodcat.commands.demo import run_demo

    run_demo(out, n_per_class=n_per_class, config=config)


def _register() -> None:
    """Attach the sub-command modules (imported here: they import this module for the shared options)."""
    from prodcat.commands import audit, fuse, model, serve

    app.command()(model.train)
    app.command()(model.evaluate)
    app.command()(model.predict)
    app.command()(serve.serve)
    app.add_typer(fuse.app, name="fuse")
    app.add_typer(audit.app)


_register()


def main() -> None:
    """Console entry point."""
    app()
