"""Shared page templates (report_templates/) and the thumbnails the pages show."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from prodcat.pages import environment, write_thumbnails

TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "prodcat" / "report_templates"


def test_product_rows_escape_catalog_text_and_mark_disagreeing_labels() -> None:
    row = {
        "id": "sku-1",
        "title": '<script>alert("x")</script>',
        "description": '" onmouseover="alert(1)',
        "thumb": None,
        "given_label": "Shirts",
        "suggested_label": "Tshirts",
        "suggested_conf": 0.91,
        "text:tfidf_label": "Shirts",
        "text:tfidf_conf": 0.55,
    }
    macro = environment().get_template("_products.html").module.product_cells  # type: ignore[attr-defined]
    html = str(macro(row, ["text:tfidf"]))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'title="&#34; onmouseover=&#34;alert(1)"' in html
    assert '<td class="diff" data-v="Tshirts">Tshirts<span class="conf"> 91%</span></td>' in html
    assert '<td class="same" data-v="Shirts">Shirts<span class="conf"> 55%</span></td>' in html
    assert "no image" in html


def test_write_thumbnails_modes(tmp_path: Path) -> None:
    Image.new("RGB", (300, 200), (200, 30, 30)).save(tmp_path / "a.png")
    images = [str(tmp_path / "a.png"), str(tmp_path / "missing.jpg"), None]
    copied = write_thumbnails(images, [0, 1, 2], tmp_path / "out", mode="copy", size=64, progress=False)
    assert copied == ["thumbs/0.jpg", None, None]
    with Image.open(tmp_path / "out" / "thumbs" / "0.jpg") as im:
        assert max(im.size) == 64
    embedded = write_thumbnails(images, [0, 1, 2], tmp_path / "emb", mode="embed", progress=False)
    assert str(embedded[0]).startswith("data:image/jpeg;base64,") and not (tmp_path / "emb").exists()
    assert write_thumbnails(images, [0, 1, 2], tmp_path, mode="none") == [None, None, None]
    with pytest.raises(ValueError, match="thumbnails must be one of"):
        write_thumbnails(images, [0, 1, 2], tmp_path, mode="link")
    with pytest.raises(ValueError, match="not a plain file stem"):
        write_thumbnails(images[:1], ["../../etc/x"], tmp_path / "bad", progress=False)


def test_every_template_compiles_and_the_script_is_javascript(tmp_path: Path) -> None:
    for name in ("audit.html", "report.html", "_products.html"):
        environment().get_template(name)
    if shutil.which("node") is None:
        pytest.skip("node not installed")
    subprocess.run(["node", "--check", str(TEMPLATES / "audit.js")], check=True)
