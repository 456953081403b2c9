from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from prodcat.audit import AuditResult, audit_labels, render_review_page, write_audit
from prodcat.commands.audit import app

runner = CliRunner()
N_CLASSES = 5
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 210, 30), (30, 210, 210)]


def modal_probas(true: np.ndarray, *, strength: float, seed: int) -> np.ndarray:
    """Probabilities of a modality that sees the TRUE class with noise: (n, C) rows summing to 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(true), N_CLASSES))
    logits[np.arange(len(true)), true] += strength
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def noisy() -> dict[str, np.ndarray]:
    """600 products, 8% flipped labels, a text and an image view of the true class and their mean."""
    rng = np.random.default_rng(3)
    true = rng.integers(0, N_CLASSES, 600)
    flipped = rng.random(600) < 0.08
    given = np.where(flipped, (true + rng.integers(1, N_CLASSES, 600)) % N_CLASSES, true)
    text = modal_probas(true, strength=3.5, seed=4)
    image = modal_probas(true, strength=2.5, seed=5)
    return {
        "true": true,
        "given": given,
        "flipped": flipped,
        "text": text,
        "image": image,
        "fusion": (text + image) / 2,
    }


def names(idx: np.ndarray) -> np.ndarray:
    return np.array([f"cat-{i}" for i in idx])


def run(noisy: dict[str, np.ndarray], **kw: Any) -> AuditResult:
    probas = {k: noisy[k] for k in ("text", "image", "fusion")}
    return audit_labels(names(noisy["given"]), probas, classes=names(np.arange(N_CLASSES)), **kw)


def test_audit_finds_known_flips(noisy: dict[str, np.ndarray]) -> None:
    res = run(noisy)
    issues = res.issues
    hits = noisy["flipped"][issues["position"]].sum()
    precision, recall = hits / len(issues), hits / noisy["flipped"].sum()
    assert precision >= 0.8 and recall >= 0.7, (precision, recall)
    # ranked: most suspicious first, every row flagged by the fusion source it was flagged on
    assert issues["rank"].tolist() == list(range(1, len(issues) + 1))
    assert np.all(np.diff(issues["quality"]) >= 0)
    assert all("fusion" in f.split(";") for f in issues["flagged_by"])
    assert (issues["given_label"] == names(noisy["given"][issues["position"]])).all()
    for s in ("text", "image", "fusion"):
        assert {f"{s}_label", f"{s}_conf", f"{s}_given_conf"} <= set(issues.columns)
        assert (issues[f"{s}_conf"] >= issues[f"{s}_given_conf"] - 1e-12).all()


def test_disagreement_flag_and_combined_sources(noisy: dict[str, np.ndarray]) -> None:
    res_any, res_all, res_f = run(noisy, flag_on="any"), run(noisy, flag_on="all"), run(noisy)
    any_rows = set(res_any.issues["position"])
    all_rows = set(res_all.issues["position"])
    fusion_rows = set(res_f.issues["position"])
    assert all_rows <= fusion_rows <= any_rows
    issues = res_any.issues
    differ = (issues["text_label"] != issues["image_label"]) | (
        issues["text_label"] != issues["fusion_label"]
    )
    assert (issues["modalities_disagree"] == differ).all()
    assert differ.any() and (~differ).any()


def test_per_class_and_confusions_add_up(noisy: dict[str, np.ndarray]) -> None:
    res = run(noisy)
    per_class, conf, summary = res.per_class, res.confusions, res.summary
    assert per_class["n_products"].sum() == len(noisy["given"])
    assert per_class["n_flagged"].sum() == summary["n_flagged"] == len(res.issues)
    assert per_class["est_noise_rate"].between(0, 1).all()
    assert per_class["est_noise_rate"].is_monotonic_decreasing
    # 8% flipped: cleanlab's estimate is in the right range
    assert 0.04 <= summary["est_label_issues"] / len(noisy["given"]) <= 0.12
    assert (conf["given_label"] != conf["likely_label"]).all() and conf["est_count"].is_monotonic_decreasing
    assert summary["flagged_per_source"].keys() == {"text", "image", "fusion"}


def test_bad_flag_on_is_a_clear_error(noisy: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="flag_on must be one of"):
        run(noisy, flag_on="nope")


def catalog_with_images(tmp_path: Path, noisy: dict[str, np.ndarray]) -> pd.DataFrame:
    """Product rows with an image file per product, coloured by TRUE class; every 40th image is missing."""
    (tmp_path / "img").mkdir()
    paths = []
    for i, t in enumerate(noisy["true"]):
        p = tmp_path / "img" / f"{i}.png"
        if i % 40 != 0:
            Image.new("RGB", (40, 60), COLOURS[t]).save(p)
        paths.append(str(p))
    n = len(paths)
    titles = [f'Product {i} </script><img src=x onerror="alert(1)"> & co' for i in range(n)]
    return pd.DataFrame(
        {"id": [f"sku-{i}" for i in range(n)], "title": titles, "description": "", "image": paths}
    )


class _Rows(HTMLParser):
    """The product rows of a rendered page: ``data-id``, the first ``<img src>`` and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "data-id" in a:
            self.rows.append({"id": a["data-id"], "thumb": None, "text": ""})
        elif tag == "img" and self.rows and self.rows[-1]["thumb"] is None:
            self.rows[-1]["thumb"] = a.get("src")

    def handle_data(self, data: str) -> None:
        if self.rows:
            self.rows[-1]["text"] += data


def page_rows(page: str) -> list[dict[str, Any]]:
    parser = _Rows()
    parser.feed(page)
    return parser.rows


def test_write_audit_copies_thumbnails_and_escapes_text(tmp_path: Path, noisy: dict[str, np.ndarray]) -> None:
    products = catalog_with_images(tmp_path, noisy)
    res = run(noisy, products=products)
    paths = write_audit(res, tmp_path / "out", progress=False)
    issues = pd.read_csv(paths["issues.csv"])
    assert len(issues) == res.summary["n_flagged"]
    assert json.loads(paths["summary.json"].read_text())["n_products"] == len(products)
    page = paths["review.html"].read_text(encoding="utf-8")
    # user text is escaped: no markup of its own, the page keeps its single script
    assert 'onerror="alert(1)"> & co' not in page and "&lt;/script&gt;&lt;img src=x" in page
    assert page.count("</script>") == 1
    rows = page_rows(page)
    assert len(rows) == len(issues)
    for row in rows:
        pos = int(row["id"].split("-")[1])
        if pos % 40 == 0:
            assert row["thumb"] is None
        else:
            assert row["thumb"] == f"thumbs/{pos}.jpg"
            thumb = tmp_path / "out" / row["thumb"]
            with Image.open(thumb) as im:  # a real thumbnail, in the product's true colour
                assert im.format == "JPEG" and max(im.size) <= 128
                r, g, b = im.convert("RGB").getpixel((im.width // 2, im.height // 2))
                tr, tg, tb = COLOURS[noisy["true"][pos]]
                assert abs(r - tr) + abs(g - tg) + abs(b - tb) < 60
        assert f'Product {pos} </script><img src=x onerror="alert(1)"> & co' in row["text"]


def test_embedded_thumbnails_make_one_file(tmp_path: Path, noisy: dict[str, np.ndarray]) -> None:
    res = run(noisy, products=catalog_with_images(tmp_path, noisy))
    paths = write_audit(res, tmp_path / "out", thumbnails="embed", progress=False)
    assert "thumbs" not in paths and not (tmp_path / "out" / "thumbs").exists()
    rows = page_rows(paths["review.html"].read_text(encoding="utf-8"))
    assert any(str(r["thumb"]).startswith("data:image/jpeg;base64,") for r in rows)


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_page_script_is_valid_javascript(tmp_path: Path, noisy: dict[str, np.ndarray]) -> None:
    page = render_review_page(run(noisy))
    script = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(script) == 1
    (tmp_path / "page.js").write_text(script[0])
    subprocess.run(["node", "--check", str(tmp_path / "page.js")], check=True)


def model_outputs(folder: Path, noisy: dict[str, np.ndarray]) -> Path:
    """A model-outputs folder like ../shared/data/rakuten/model_outputs/* (integer class codes)."""
    folder.mkdir()
    codes = np.array([10, 40, 50, 60, 1140])
    n = len(noisy["given"])
    pd.DataFrame(
        {"row": np.arange(n), "productid": 1000 + np.arange(n), "prdtypecode": codes[noisy["given"]]}
    ).to_csv(folder / "index.csv", index=False)
    (folder / "classes.json").write_text(json.dumps(codes.tolist()))
    np.save(folder / "text_alpha.npy", noisy["text"].astype(np.float32))
    np.save(folder / "text_beta.npy", noisy["text"][:, ::-1].astype(np.float32))  # a useless model
    np.save(folder / "image_gamma.npy", noisy["image"].astype(np.float32))
    return folder


def test_audit_probs_command(tmp_path: Path, noisy: dict[str, np.ndarray]) -> None:
    pred = model_outputs(tmp_path / "pred", noisy)
    out = tmp_path / "out"
    result = runner.invoke(app, ["audit-probs", str(pred), "--out", str(out), "--text", "alpha"])
    assert result.exit_code == 0, result.output
    assert "text: mean of text_alpha" in result.output and "image: mean of image_gamma" in result.output
    issues = pd.read_csv(out / "issues.csv", dtype={"id": str, "given_label": str})
    assert (out / "review.html").is_file() and not (out / "thumbs").exists()
    hits = noisy["flipped"][issues["position"]].sum()
    assert hits / len(issues) >= 0.8 and hits / noisy["flipped"].sum() >= 0.7
    assert set(issues["given_label"]) <= {"10", "40", "50", "60", "1140"}
    assert issues["id"].str.startswith("1").all()


def test_audit_probs_errors(tmp_path: Path, noisy: dict[str, np.ndarray]) -> None:
    result = runner.invoke(app, ["audit-probs", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no index.csv" in result.output
    pred = model_outputs(tmp_path / "pred", noisy)
    result = runner.invoke(app, ["audit-probs", str(pred), "--out", str(tmp_path / "o"), "--image", "delta"])
    assert result.exit_code == 2 and "unknown image model" in result.output
    result = runner.invoke(app, ["audit-probs", str(pred), "--out", str(tmp_path / "o"), "--filter-by", "x"])
    assert result.exit_code == 2 and "filter_by must be one of" in result.output


def test_audit_command_on_demo_catalog(demo_catalog: Path, tmp_path: Path) -> None:
    """Trains its own 4-fold text (tfidf) and image (test-tiny embedder) models on the synthetic catalog."""
    out = tmp_path / "audit"
    result = runner.invoke(
        app, ["audit", str(demo_catalog), "--out", str(out), "--image-embedder", "test-tiny"]
    )
    assert result.exit_code == 0, result.output
    demo = pd.read_csv(demo_catalog, dtype=str)
    issues = pd.read_csv(out / "issues.csv", dtype=str)
    flipped = set(demo.loc[demo["label"] != demo["true_label"], "id"])
    assert len(issues) > 0 and len(set(issues["id"]) & flipped) / len(issues) >= 0.5
    page = (out / "review.html").read_text(encoding="utf-8")
    assert "thumbs/" in page and any((out / "thumbs").iterdir())
    # the OOF probabilities were saved: re-auditing from them needs no training
    again = runner.invoke(
        app, ["audit", str(demo_catalog), "--model", str(out / "probas"), "--out", str(out / "b")]
    )
    assert again.exit_code == 0, again.output
    assert pd.read_csv(out / "b" / "issues.csv", dtype=str)["id"].tolist() == issues["id"].tolist()


@pytest.mark.realdata
def test_audit_probs_on_rakuten_split_a_val(shared_data: Path, tmp_path: Path) -> None:
    pred = shared_data / "rakuten" / "model_outputs" / "split_a_val"
    result = runner.invoke(app, ["audit-probs", str(pred), "--out", str(tmp_path), "--text", "camembert"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_products"] == 10827 and summary["n_classes"] == 27
    assert 0.005 < summary["flagged_rate"] < 0.1


@pytest.mark.slow
def test_audit_command_with_a_trained_bundle(demo_catalog: Path, tmp_path: Path) -> None:
    """A bundle's models are cloned and re-fitted out-of-fold on the audited catalog (never scored in-sample)."""
    from prodcat.bundle import save_bundle
    from prodcat.catalog import read_catalog
    from prodcat.config import FusionConfig, ModelSpec, NoiseConfig, TrainConfig
    from prodcat.pipeline import train

    df, _ = read_catalog(demo_catalog)
    config = TrainConfig(
        text_models=[ModelSpec(name="tfidf")],
        image_models=[ModelSpec(name="embed:test-tiny")],
        validation_fraction=0,
        n_folds=3,
        noise=NoiseConfig(enabled=False),
        fusion=FusionConfig(method="logistic"),
    )
    bundle = save_bundle(train(df, config, progress=False), tmp_path / "bundle")
    out = tmp_path / "audit"
    result = runner.invoke(app, ["audit", str(demo_catalog), "--model", str(bundle), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"] == ["text", "image", "fusion"] and summary["n_flagged"] > 0
    # out-of-fold, not in-sample: most flipped products are still found (in-sample fits would memorise them)
    demo = pd.read_csv(demo_catalog, dtype=str)
    flipped = set(demo.loc[demo["label"] != demo["true_label"], "id"])
    issues = pd.read_csv(out / "issues.csv", dtype=str)
    assert len(set(issues["id"]) & flipped) >= len(flipped) / 2
