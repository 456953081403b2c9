"""The ``hf:`` fine-tuning path on a tiny randomly initialised RoBERTa built in-process (nothing downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from prodcat.registry import create
from prodcat.text.finetune import HFTextClassifier
from tiny_hf import VOCAB, save_tiny_bert, save_tiny_roberta


def tiny_catalog(n_per_class: int = 16, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in VOCAB.items():
        for i in range(n_per_class):
            t, d = rng.choice(words, size=2, replace=False)
            rows.append(
                {
                    "id": f"{label}{i}",
                    "title": f"marque {t}",
                    "description": d if i % 3 else "",
                    "image": None,
                    "label": label,
                }
            )
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return df, df["label"].to_numpy()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"))


def _model(path: Path, **kwargs: object) -> HFTextClassifier:
    params: dict[str, object] = {
        "epochs": 10,
        "batch_size": 8,
        "learning_rate": 1e-2,
        "val_fraction": 0.25,
        "progress": False,
        "threads": 1,
        "random_state": 0,
    }
    params.update(kwargs)
    return create("text-model", f"hf:{path}", **params)  # type: ignore[no-any-return]


def test_fit_predict_contract(tiny_roberta: Path) -> None:
    X, y = tiny_catalog()
    model = _model(tiny_roberta)
    assert model.fit(X, y) is model
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert model.classes_.tolist() == ["bag", "shoe", "watch"]
    # Best checkpoint by validation macro-F1 is the one kept, and it learned the toy task.
    assert len(model.history_) == 10
    best = max(model.history_, key=lambda r: r["val_macro_f1"])
    assert model.best_epoch_ == best["epoch"]
    assert (model.predict(X) == y).mean() > 0.8


def test_deterministic_under_seed_and_clonable(tiny_roberta: Path) -> None:
    X, y = tiny_catalog(n_per_class=8)
    a = _model(tiny_roberta, epochs=2).fit(X, y).predict_proba(X)
    b = clone(_model(tiny_roberta, epochs=2)).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_missing_text_prior_weights_and_pickle(tiny_roberta: Path) -> None:
    X, y = tiny_catalog(n_per_class=8)
    X.loc[:1, ["title", "description"]] = ["", ""]
    w = np.where(y == "bag", 2.0, 1.0)
    model = _model(tiny_roberta, epochs=1, val_fraction=0.0).fit(X, y, sample_weight=w)
    assert model.history_[0].keys() == {"epoch", "loss"}
    proba = model.predict_proba(X.iloc[:3])
    expected = np.bincount(np.searchsorted(model.classes_, y), weights=w) / w.sum()
    np.testing.assert_allclose(proba[:2], np.tile(expected, (2, 1)))
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.predict_proba(X.iloc[:3]), proba, atol=1e-6)


def test_long_pairs_are_truncated(tiny_roberta: Path) -> None:
    X, y = tiny_catalog(n_per_class=4)
    model = _model(tiny_roberta, epochs=1, max_length=12, val_fraction=0.0).fit(X, y)
    long = pd.DataFrame({"title": ["basket " * 100], "description": ["sac " * 300]})
    tokens = model._encode(*model._pairs(long))
    assert len(tokens.ids[0]) == 12
    assert tokens.types is None  # RoBERTa: one segment
    assert model.predict_proba(long).shape == (1, 3)


def test_no_download_for_unknown_name() -> None:
    X, y = tiny_catalog(n_per_class=4)
    with pytest.raises(OSError):
        HFTextClassifier("no-such-org/no-such-model-xyz", epochs=1, progress=False).fit(X, y)


def test_bert_style_backbone_gets_segment_ids(tiny_bert: Path) -> None:
    X, y = tiny_catalog(n_per_class=8)
    model = _model(tiny_bert, epochs=2, val_fraction=0.0).fit(X, y)
    assert model.token_types_
    tokens = model._encode(*model._pairs(X))
    assert tokens.types is not None
    pair_rows = [i for i, d in enumerate(X["description"]) if d]
    assert all(1 in tokens.types[i] for i in pair_rows)  # the description is segment 1
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0, atol=1e-9)


def test_saves_without_pickle_and_reloads_from_the_local_base_model(tiny_bert: Path) -> None:
    from prodcat.safe_io import dumps_estimator, loads_estimator

    X, y = tiny_catalog(n_per_class=8)
    model = _model(tiny_bert, epochs=2, val_fraction=0.0).fit(X, y)
    state = model.__getstate__()
    assert {"model_", "tokenizer_", "device_"}.isdisjoint(state)
    assert all(isinstance(v, np.ndarray) for v in state["model_weights_"].values())
    again = loads_estimator(dumps_estimator(model))
    assert again.token_types_ and again.best_epoch_ == model.best_epoch_
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X), rtol=0, atol=1e-6)


def test_backbone_fingerprint_follows_config_and_tokenizer_not_weights(
    tiny_roberta: Path, tmp_path: Path
) -> None:
    import shutil

    folder = Path(shutil.copytree(tiny_roberta, tmp_path / "copy"))
    model = HFTextClassifier(str(folder))
    first = model.backbone_fingerprint()
    assert first == HFTextClassifier(str(tiny_roberta)).backbone_fingerprint()  # the content, not the path
    (folder / "model.safetensors").write_bytes(b"other weights")  # the bundle holds every weight
    assert model.backbone_fingerprint() == first
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text().replace("montre", "watch"))
    assert model.backbone_fingerprint() != first
    with pytest.raises(OSError):
        HFTextClassifier("no-such-org/no-such-model-xyz").backbone_fingerprint()
