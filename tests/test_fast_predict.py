"""Prediction without torch: the paper-mlp forward pass in numpy, and a bundle that loads and predicts in a
fresh interpreter that never imports torch (nor walks every scikit-learn estimator through skops)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prodcat.fusion.paper_mlp import PaperMLPFusion, _forward, forward_numpy

C = 5


def _torch_probas(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        logits = _forward([torch.as_tensor(w) for w in weights], torch.as_tensor(x))
        return torch.softmax(logits, dim=2).double().numpy()


@pytest.mark.parametrize("n_layers", [1, 2])
def test_numpy_forward_matches_torch_on_fitted_nets(n_layers: int) -> None:
    rng = np.random.default_rng(n_layers)
    y = np.repeat(np.arange(C), 40)

    def probas(n: int, labels: np.ndarray | None) -> np.ndarray:  # two models' probability blocks
        blocks = []
        for _ in range(2):
            P = rng.dirichlet(np.ones(C), size=n)
            if labels is not None:
                P[np.arange(n), labels] += 2.0
            blocks.append(P / P.sum(1, keepdims=True))
        return np.hstack(blocks)

    X = probas(len(y), y)
    est = PaperMLPFusion(n_layers=n_layers, epochs=5, n_splits=3, n_models=2).fit(X, y)
    rows = np.vstack([X[:7], probas(3, None)])
    got = est._net_probas(rows)
    want = _torch_probas(est.weights_, est._inputs(rows))
    assert got.shape == want.shape == (3, len(rows), C)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.sum(2), 1.0, atol=1e-12)


def test_numpy_forward_is_stable_on_large_logits() -> None:
    weights = [np.full((2, 3, 4), 1e3, np.float32), np.zeros((2, 4), np.float32)]
    weights[0][:, :, 1] = 2e3
    out = forward_numpy(weights, np.ones((1, 3), np.float32))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 0, 1], 1.0)


_CHILD = """
import json, sys
import pandas as pd
from prodcat.bundle import load_model
model, _ = load_model(sys.argv[1])
df = pd.read_csv(sys.argv[2]).head(1)
proba = model.predict_proba(df)
print(json.dumps({"torch": "torch" in sys.modules, "rows": len(proba)}))
"""


@pytest.fixture(scope="module")
def paper_mlp_bundle(demo_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose fuser is the default ensemble with paper-mlp members (few epochs)."""
    from prodcat.bundle import save_bundle
    from prodcat.catalog import read_catalog
    from prodcat.config import TrainConfig

    config = {
        "text_models": [{"name": "embed:test-tiny"}],
        "image_models": [{"name": "embed:test-tiny"}],
        "n_folds": 3,
        "validation_fraction": 0.2,
        "cache_dir": None,
        "fusion": {
            "method": "ensemble",
            "params": {"members": "paper-mlp[epochs=3,n_splits=3]+paper-mlp[epochs=3,n_splits=3,n_layers=2]"},
        },
    }
    from prodcat.pipeline import train

    df = read_catalog(demo_catalog)[0]
    model = train(df, TrainConfig.model_validate(config), progress=False)
    return save_bundle(model, tmp_path_factory.mktemp("bundle") / "model")


def test_bundle_loads_and_predicts_without_torch(paper_mlp_bundle: Path, demo_catalog: Path) -> None:
    assert "PaperMLPFusion" in (paper_mlp_bundle / "fusion.json").read_text()
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(paper_mlp_bundle), str(demo_catalog)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": src},
        timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"torch": False, "rows": 1}


@pytest.mark.parametrize("combine", ["concat", "sum", "attention"])
def test_feature_fusion_predicts_in_numpy_like_its_torch_net(combine: str) -> None:
    from prodcat.fusion import FeatureFusion
    from prodcat.fusion._torch import predict_softmax

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(C), 30)
    blocks = [rng.normal(size=(len(y), 12)) + y[:, None], rng.normal(size=(len(y), 6))]
    est = FeatureFusion(combine=combine, epochs=3, hidden=16, proj_dim=8).fit(blocks, y)
    rows = [b[:9] for b in blocks]
    want = predict_softmax(est.net_, est._matrix(rows, fitting=False))
    np.testing.assert_allclose(est.predict_proba(rows), want, rtol=0, atol=1e-6)
    if combine == "attention":
        torch = pytest.importorskip("torch")
        Z = torch.as_tensor(est._matrix(rows, fitting=False))
        with torch.no_grad():
            a, _ = est.net_.weights(list(Z.split(est.block_sizes_, dim=1)))
        np.testing.assert_allclose(est.attention_weights(rows), a.double().numpy(), rtol=0, atol=1e-6)
