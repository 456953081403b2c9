"""The ``prodcat`` command line (typer). Sub-commands live in ``prodcat.commands.*``; this module only wires them.

Heavy imports happen inside commands so ``prodcat --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from prodcat import __version__
from prodcat.commands.common import (
    CatalogArg,
    Encoding,
    IdCol,
    ImageCol,
    LabelCol,
    TextCols,
    column_options,
    read_catalog_or_fail,
)

app = typer.Typer(
    name="prodcat",
    help="Multimodal product categorisation: train, evaluate, audit labels, predict and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    from prodcat.catalog import summarize

    columns = column_options(text_columns, label_column, image_column, id_column, encoding)
    df = read_catalog_or_fail(catalog, columns, split=split, require_label=False)
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
    per = s["photos_per_product"]
    if isinstance(per, dict):  # several photos per product: every photo is checked
        listed = ", ".join(f"{k}: {v}" for k, v in per.items())
        typer.echo(f"photos per product (photos: products): {listed}")
    typer.echo(
        f"images readable: {s['images_ok']}   missing/unreadable: {len(bad)}   "
        f"products without a readable image: {s['products_without_image']}"
    )
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
    """Attach the sub-command modules (their shared options live in :mod:`prodcat.commands.common`)."""
    from prodcat.commands import audit, fuse, model, review, scale, serve, sign

    app.command()(model.train)
    app.command()(model.evaluate)
    app.command()(model.predict)
    app.command()(scale.embed)
    app.command()(serve.serve)
    app.command()(review.review)
    app.command()(sign.sign)
    app.add_typer(fuse.app, name="fuse")
    app.add_typer(audit.app)


_register()


def main() -> None:
    """Console entry point."""
    app()
