"""Shared fixtures: seeding, paths to the shared real data, a small synthetic demo catalog."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

# Keep BLAS / torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:
        pass


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test session writes its caches under a temporary folder, never in the user's home."""
    if "PRODCAT_CACHE_DIR" not in os.environ or os.environ.get("PRODCAT_TEST_SHARED_CACHE") != "1":
        monkeypatch.setenv("PRODCAT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "prodcat-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real evaluation data next to the repo; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic catalog (8 classes x 30) on disk; returns the CSV path."""
    from prodcat.demo import DemoSpec, make_demo_catalog

    return make_demo_catalog(tmp_path_factory.mktemp("demo"), DemoSpec(n_per_class=30, image_size=64, seed=1))


TINY_CONFIG = {
    "text_models": [{"name": "embed:test-tiny"}],
    "image_models": [{"name": "embed:test-tiny"}],
    "n_folds": 3,
    "validation_fraction": 0.2,
    "fusion": {"method": "logistic"},
    "cache_dir": None,
}


@pytest.fixture(scope="session")
def tiny_bundle(demo_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle trained on the demo catalog with weight-free test-tiny encoders (read-only: copy it to
    change it)."""
    from prodcat.bundle import save_bundle
    from prodcat.catalog import read_catalog
    from prodcat.config import TrainConfig
    from prodcat.pipeline import train

    df = read_catalog(demo_catalog)[0]
    model = train(df, TrainConfig.model_validate(TINY_CONFIG), progress=False)
    return save_bundle(model, tmp_path_factory.mktemp("bundle") / "model")
