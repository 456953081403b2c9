"""--engine ray on a local Ray cluster (2 CPUs): the same predictions as the local path, embeddings training
finds in its cache. Marked ``ray``: the default run skips them (`pytest -m ray`; CI installs ray[data])."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from prodcat.cli import app

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("chunk", ["64", "16"])
def test_ray_predictions_are_the_local_ones(
    tiny_bundle: Path, demo_catalog: Path, tmp_path: Path, chunk: str
) -> None:
    """Same rows in the same order as the local path; 16-row chunks put many blocks in each write task (Ray's own
    write_parquet, threaded, once left a file's rows out of order)."""
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    base = ["predict", str(tiny_bundle), str(demo_catalog)]
    assert runner.invoke(app, [*base, "--out", str(local)]).exit_code == 0
    result = runner.invoke(app, [*base, "--out", str(remote), "--engine", "ray", "--workers", "2",
                                 "--cpus-per-worker", "0.9", "--chunk-size", chunk])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert remote.is_dir() and '"rows": 240' in result.output
    a = pd.read_parquet(local)
    b = pd.read_parquet(remote)  # the folder, read as one table, in catalog order
    assert list(b.columns) == list(a.columns)
    assert b["id"].tolist() == a["id"].tolist()
    assert b["label"].tolist() == a["label"].tolist() and b["decision"].tolist() == a["decision"].tolist()
    probs = [c for c in a.columns if c.endswith("probability") or c == "confidence"]
    np.testing.assert_allclose(b[probs].to_numpy(float), a[probs].to_numpy(float), atol=1e-6)


def test_ray_refuses_what_it_cannot_do(tiny_bundle: Path, demo_catalog: Path, tmp_path: Path) -> None:
    base = ["predict", str(tiny_bundle), str(demo_catalog), "--engine", "ray"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 2 and "folder of Parquet files" in r.output
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "p.parquet"), "--id-column", "none"])
    assert r.exit_code == 2 and "row positions" in r.output
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "p.parquet"), "--workers", "3"])
    assert r.exit_code == 2 and "the cluster has 2 CPUs" in r.output  # refused, not waiting forever


def test_embed_on_ray_fills_the_cache_training_reads(
    demo_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from prodcat.cache import EmbeddingStore, cached_embed, content_key
    from prodcat.catalog import read_catalog
    from prodcat.config import TrainConfig
    from prodcat.models import EmbeddingClassifier

    cache = tmp_path / "cache"
    monkeypatch.setenv("PRODCAT_CACHE_DIR", str(cache))
    config = tmp_path / "c.yaml"
    config.write_text(
        "text_models: [{name: 'embed:test-tiny'}]\n"
        "image_models: [{name: 'embed:test-tiny', params: {embedder_params: {aspect: auto}}}]\n"
        "cache_dir: auto\n"
    )
    result = runner.invoke(app, ["embed", str(demo_catalog), "--config", str(config), "--engine", "ray",
                                 "--workers", "2", "--cpus-per-worker", "0.9", "--batch-rows", "50"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.count('"items": 240') == 2
    # training's models, fitted (without the cache) on the catalog, look their vectors up under the same
    # fingerprint and keys: every usable item is there, with the vector computed here
    df = read_catalog(demo_catalog)[0]
    cfg = TrainConfig.model_validate(yaml.safe_load(config.read_text()))

    for role, spec in [("text", cfg.text_models[0]), ("image", cfg.image_models[0])]:
        model = EmbeddingClassifier(
            "test-tiny", column="text" if role == "text" else "image", modality=role, cache_dir=None,
            embedder_params=spec.params.get("embedder_params"),
        ).fit(df, df["label"])  # fmt: skip
        items = model._items(df, model._columns()[0])
        embedder = model.backbone()
        local, ok = cached_embed(embedder, items, modality=role, cache_dir=None)  # computed here, not stored
        store = EmbeddingStore(str(cache), getattr(embedder, "fingerprint", None) or embedder.name)
        stored, found = store.lookup([content_key(it, modality=role) if good else None
                                      for it, good in zip(items, ok, strict=True)])  # fmt: skip
        assert ok.sum() > 200 and found.sum() == ok.sum(), f"{role}: {int(ok.sum() - found.sum())} not cached"
        np.testing.assert_allclose(stored[ok], local[ok], atol=1e-6)


def test_order_is_preserved_from_the_read_on(
    tiny_bundle: Path, demo_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray dataset copies the DataContext when it is created, so ``preserve_order`` must be set before the
    catalog is read (set after it, the output order was left to chance and CI once saw rows out of order)."""
    import ray.data

    import prodcat.ray_engine as engine

    seen: list[bool] = []
    real = engine.read_catalog_dataset

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(ray.data.DataContext.get_current().execution_options.preserve_order)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    ray.data.DataContext.get_current().execution_options.preserve_order = False
    monkeypatch.setattr(engine, "read_catalog_dataset", spy)
    out = tmp_path / "p.parquet"
    result = runner.invoke(
        app, ["predict", str(tiny_bundle), str(demo_catalog), "--out", str(out), "--engine", "ray"]
    )
    assert result.exit_code == 0, result.output
    assert seen == [True]
