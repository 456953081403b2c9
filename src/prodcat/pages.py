"""HTML pages from the Jinja2 templates of ``report_templates/`` (package data), and the thumbnails they show.

The audit's review page and the evaluation report share one template of product rows
(``report_templates/_products.html``: photo, id, title, given label, suggestion and what each source said), so
a product reads the same in both. Templates are autoescaped: catalog text is data, never markup. Images are
referenced only as thumbnails this module writes (``thumbs/<name>.jpg`` next to the page) or as ``data:`` URIs,
never by the catalog's own paths or URLs.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

THUMBNAIL_MODES = ("copy", "embed", "none")


@cache
def environment() -> jinja2.Environment:
    """The Jinja2 environment over ``prodcat/report_templates`` (autoescaped, undefined names are errors)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("prodcat", "report_templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """Render ``report_templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)


def thumbnail_jpeg(source: Any, *, size: int = 128) -> bytes | None:
    """JPEG bytes of a thumbnail fitting ``size`` x ``size`` px, or None when the image cannot be decoded."""
    from prodcat.image.decode import decode_image

    decoded = decode_image(source, draft=size)
    if decoded.image is None:
        return None
    im = decoded.image
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def write_thumbnails(
    images: Sequence[Any],
    names: Sequence[Any],
    out_dir: str | Path,
    *,
    mode: str = "copy",
    size: int = 128,
    progress: bool = True,
) -> list[str | None]:
    """One ``<img src>`` per image: ``"copy"`` writes ``out_dir/thumbs/<name>.jpg`` and returns the relative
    path (the folder can be moved or zipped as a whole), ``"embed"`` returns a base64 ``data:`` URI (one
    self-contained page), ``"none"`` returns None everywhere. Undecodable or missing images give None.

    ``names`` must be unique file stems chosen by the caller (e.g. row positions), never catalog text.
    """
    from tqdm.auto import tqdm

    if mode not in THUMBNAIL_MODES:
        raise ValueError(f"thumbnails must be one of {', '.join(THUMBNAIL_MODES)}, not {mode!r}")
    if mode == "none":
        return [None] * len(images)
    folder = Path(out_dir) / "thumbs"
    if mode == "copy":
        folder.mkdir(parents=True, exist_ok=True)
    srcs: list[str | None] = []
    items = zip(names, images, strict=True)
    for name, image in tqdm(items, total=len(images), desc="thumbnails", disable=not progress, leave=False):
        jpeg = thumbnail_jpeg(image, size=size)
        if jpeg is None:
            srcs.append(None)
        elif mode == "embed":
            srcs.append("data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii"))
        else:
            stem = str(name)
            if not stem.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"thumbnail name {stem!r} is not a plain file stem")
            (folder / f"{stem}.jpg").write_bytes(jpeg)
            srcs.append(f"thumbs/{stem}.jpg")
    return srcs


def embed_png(path: str | Path) -> str:
    """A ``data:image/png;base64`` URI of the PNG at ``path`` (figures written by prodcat itself)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
