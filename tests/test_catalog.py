from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from prodcat.catalog import CatalogError, product_text, read_catalog, summarize


def _write(tmp_path: Path, text: str, name: str = "cat.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_csv_with_relative_images_and_html(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (10, 12), "red").save(tmp_path / "img" / "a.jpg")
    p = _write(
        tmp_path,
        "id,title,description,image,label,brand\n"
        "1,<b>Mug</b> &amp; cup,<p>Tasse en c&eacute;ramique</p>,img/a.jpg,mugs,Acme\n"
        "2,Lampe,,img/missing.jpg,lamps,\n",
    )
    df, report = read_catalog(p)
    assert list(df.columns[:5]) == ["id", "title", "description", "image", "label"]
    assert df["title"].tolist() == ["Mug & cup", "Lampe"]
    assert df["description"].tolist() == ["Tasse en céramique", ""]
    assert df["image"].iloc[0] == str((tmp_path / "img" / "a.jpg").resolve())
    assert df["brand"].iloc[0] == "Acme"  # passthrough
    assert report.missing_image == ["2"]  # missing file is not fatal
    assert product_text(df).tolist() == ["Mug & cup - Tasse en céramique", "Lampe"]


def test_rows_without_an_image_and_image_urls_are_reported_apart(tmp_path: Path) -> None:
    """Regression: a row naming no image was counted as a missing *file*, and an image URL was joined under the
    catalog's folder as a path (reported as a missing file, with no hint that URLs are not fetched)."""
    p = _write(
        tmp_path,
        "id,title,image,label\n"
        "1,Mug,img/gone.jpg,mugs\n"
        "2,Lampe,,lamps\n"
        "3,Vase,https://cdn.example.com/v.jpg,vases\n",
    )
    df, report = read_catalog(p)
    assert df["image"].iloc[2] == "https://cdn.example.com/v.jpg"
    assert (report.missing_image, report.no_image, report.image_urls) == (["1"], ["2"], ["3"])
    lines = "\n".join(report.summary_lines())
    assert "1 image file missing" in lines and "1 product names no image" in lines
    assert "1 image URL not fetched" in lines and "download the images" in lines
    assert summarize(df, progress=False)["images_unreadable"] == {
        "1": "missing file",
        "2": "no image given",
        "3": "URL not fetched",
    }


def test_tsv_and_parquet_with_column_mapping(tmp_path: Path) -> None:
    raw = pd.DataFrame({"sku": ["a", "b"], "name": ["x", "y"], "extra": ["e1", "e2"], "cat": [10, 20]})
    raw.to_csv(tmp_path / "c.tsv", sep="\t", index=False)
    raw.to_parquet(tmp_path / "c.parquet")
    for f in ("c.tsv", "c.parquet"):
        df, report = read_catalog(
            tmp_path / f, text_columns=["name", "extra"], label_column="cat", id_column="sku"
        )
        assert df["title"].tolist() == ["x", "y"]
        assert df["description"].tolist() == ["e1", "e2"]
        assert df["label"].tolist() == ["10", "20"]  # labels are strings
        assert report.no_image_column


def test_missing_mapped_column_names_it(tmp_path: Path) -> None:
    p = _write(tmp_path, "id,title,label\n1,a,x\n")
    with pytest.raises(
        CatalogError, match="label column 'category' not found; columns are: id, title, label"
    ):
        read_catalog(p, label_column="category")


def test_no_title_column(tmp_path: Path) -> None:
    p = _write(tmp_path, "id,foo,label\n1,a,x\n")
    with pytest.raises(CatalogError, match="no title column"):
        read_catalog(p)


def test_duplicate_ids_name_the_rows(tmp_path: Path) -> None:
    p = _write(tmp_path, "id,title,label\n1,a,x\n2,b,x\n1,c,y\n")
    with pytest.raises(CatalogError, match=r"duplicate ids: row 0 \(id=1\), row 2 \(id=1\)"):
        read_catalog(p)


def test_empty_labels_name_the_rows(tmp_path: Path) -> None:
    p = _write(tmp_path, "id,title,label\n1,a,x\n2,b,\n3,c, \n")
    with pytest.raises(CatalogError, match=r"empty label in 2 rows: row 1 \(id=2\), row 2 \(id=3\)"):
        read_catalog(p)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "latin.csv"
    p.write_bytes("id,title,label\n1,ok,x\n2,caf\xe9,x\n".encode("latin-1"))
    with pytest.raises(CatalogError, match=r"line 3 is not valid UTF-8.*--encoding"):
        read_catalog(p)
    df, _ = read_catalog(p, encoding="latin-1")
    assert df["title"].tolist() == ["ok", "café"]


def test_empty_text_is_kept_and_counted(tmp_path: Path) -> None:
    p = _write(tmp_path, "id,title,description,label\n1,,,x\n2,b,,x\n")
    df, report = read_catalog(p)
    assert len(df) == 2 and report.empty_text == ["1"]


def test_unsupported_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such file"):
        read_catalog(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(CatalogError, match="unsupported catalog format"):
        read_catalog(tmp_path / "x.xlsx")


def test_summary_counts_bad_images(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(b"")
    Image.new("RGB", (30, 20)).save(tmp_path / "ok.png")
    (tmp_path / "zero.jpg").write_bytes(b"")
    p = _write(tmp_path, "id,title,image,label\n1,a,ok.png,x\n2,b,zero.jpg,x\n3,c,,y\n4,d,gone.jpg,y\n")
    df, _ = read_catalog(p)
    s = summarize(df, progress=False)
    assert s["images_ok"] == 1 and s["classes"] == 2
    assert set(s["images_unreadable"]) == {"2", "3", "4"}
    assert s["image_size"]["median_width"] == 30


@pytest.mark.realdata
def test_rakuten_challenge_layout(shared_data: Path) -> None:
    df, report = read_catalog(shared_data / "rakuten" / "challenge_layout")
    assert len(df) == 19 and not report.missing_image
    assert df["label"].str.fullmatch(r"\d+").all()
    first = df.iloc[0]
    assert first["id"] == "1983972046" and first["label"] == "1280"
    assert first["image"].endswith("image_1118654744_product_1983972046.jpg")
    assert not df["description"].str.contains("<br|&eacute;", regex=True).any()


@pytest.mark.realdata
def test_fashion_catalog_reads_with_masked_titles(shared_data: Path) -> None:
    df, report = read_catalog(shared_data / "fashion" / "products.csv", text_columns=["title_masked"])
    assert len(df) == 12176 and df["label"].nunique() == 55
    assert not report.missing_image
    assert "title_masked" not in df.columns and "title" in df.columns
    assert df.loc[df["id"] == "1525", "title"].item() == "Puma Deck Navy Blue"


def test_summary_checks_every_photo_of_a_product(tmp_path: Path) -> None:
    """With several photos per product, inspect checks each one (it summarised only the first before)."""
    for name, size in (("a.png", (30, 20)), ("b.png", (40, 10)), ("c.png", (50, 50))):
        Image.new("RGB", size).save(tmp_path / name)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    p = _write(
        tmp_path,
        "id,title,image,label\n1,a,a.png;b.png;c.png,x\n2,b,bad.jpg;a.png,x\n3,c,,y\n4,d,bad.jpg,y\n",
    )
    df, _ = read_catalog(p)
    s = summarize(df, progress=False)
    assert s["images_ok"] == 4  # a, b, c of product 1 and a of product 2
    assert set(s["images_unreadable"]) == {"2 (photo 1)", "3", "4 (photo 1)"}
    assert s["products_without_image"] == 2
    assert s["photos_per_product"] == {0: 1, 1: 1, 2: 1, 3: 1}
    assert s["image_size"]["max_width"] == 50
