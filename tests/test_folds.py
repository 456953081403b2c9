"""FoldEnsemble: the K out-of-fold models predicting together (issue 17)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from conftest import TINY_CONFIG
from prodcat.catalog import read_catalog
from prodcat.config import TrainConfig
from prodcat.folds import FoldEnsemble
from prodcat.models import EmbeddingClassifier
from prodcat.oof import oof_predict_proba
from prodcat.pipeline import train
from prodcat.safe_io import dumps_estimator, loads_estimator
from test_oof import Memoriser


class CountingEmbedder:
    """A deterministic text embedder that counts the items it embeds."""

    name = "counting"
    dim = 8

    def __init__(self) -> None:
        self.items = 0

    def embed(self, items: list[str]) -> np.ndarray:
        self.items += len(items)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for i, text in enumerate(items):
            for ch in text:
                out[i, ord(ch) % self.dim] += 1.0
        return out


def _frame(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    words = {"a": "shirt cotton", "b": "shoe leather", "c": "watch steel"}
    y = np.array(["a", "b", "c"] * (n // 3))
    titles = [f"{words[c]} {rng.integers(1000)}" for c in y]
    return pd.DataFrame({"id": [f"p{i}" for i in range(n)], "title": titles, "description": [""] * n}), y


def test_oof_of_fit_oof_is_that_of_the_oof_pass() -> None:
    """The members are the out-of-fold pass's models: same folds, same out-of-fold probabilities; no row is
    predicted by a member that saw it (a memoriser would be one-hot on such a row)."""
    X, y = _frame()
    ens = FoldEnsemble(Memoriser(), n_splits=3, seed=7)
    oof = ens.fit_oof(X, y, progress=False)
    ref = oof_predict_proba(Memoriser(), X, y, n_splits=3, seed=7, refit=False, progress=False)
    np.testing.assert_array_equal(oof, ref.proba)
    assert np.allclose(oof, 1 / 3)  # every row from a member that never saw it
    assert len(ens.estimators_) == 3
    # Each training row was seen by exactly K-1 members: their mean on it is one-hot for K-1 of K.
    np.testing.assert_allclose(ens.predict_proba(X).max(axis=1), (2 + 1 / 3) / 3)


def test_predict_proba_is_the_members_mean_and_sample_weight_reaches_each_member() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4))
    y = np.array(["x", "y", "z"] * 30)
    X[y == "y"] += 1.5
    w = rng.uniform(0.2, 1.0, size=90)
    ens = FoldEnsemble(LogisticRegression(), n_splits=3, seed=1).fit(X, y, sample_weight=w)
    mean = np.mean([m.predict_proba(X) for m in ens.estimators_], axis=0)
    np.testing.assert_allclose(ens.predict_proba(X), mean)
    assert list(ens.classes_) == ["x", "y", "z"]
    assert (ens.predict(X) == ens.classes_[mean.argmax(axis=1)]).all()
    # each member was fitted with its own rows' weights (not unweighted)
    plain = FoldEnsemble(LogisticRegression(), n_splits=3, seed=1).fit(X, y)
    assert not np.allclose(plain.predict_proba(X), ens.predict_proba(X))


def test_embedding_members_embed_each_item_once_per_call() -> None:
    """K heads on one backbone: a batch is embedded once, not K times (an image model's cost is its encoder)."""
    X, y = _frame()
    embedder = CountingEmbedder()
    ens = FoldEnsemble(EmbeddingClassifier(embedder, modality="text", head="logreg"), n_splits=4, seed=0)
    ens.fit(X, y)
    embedder_used = [m.backbone() for m in ens.estimators_]
    before = sum(e.items for e in {id(e): e for e in embedder_used}.values())
    proba, mask = ens.predict_proba_with_mask(X.head(10))
    after = sum(e.items for e in {id(e): e for e in embedder_used}.values())
    assert after - before == 10
    assert mask is not None and mask.all()
    one_by_one = np.mean([m.predict_proba(X.head(10)) for m in ens.estimators_], axis=0)
    np.testing.assert_allclose(proba, one_by_one, rtol=0, atol=1e-6)  # stacked heads: float32 products


@pytest.mark.parametrize("head", ["logreg", "lda"])
@pytest.mark.parametrize("classes", [2, 3])
def test_linear_heads_run_as_one_product_with_the_members_probabilities(head: str, classes: int) -> None:
    """Members with a linear softmax head (standardiser + logistic regression or LDA, binary or multiclass) are
    stacked into one matrix product; the result is the mean of the members' own probabilities (not a pool of their
    logits), rows without an item included."""
    X, y = _frame(90)
    keep = np.isin(y, ["a", "b", "c"][:classes])
    X, y = X[keep].reset_index(drop=True), y[keep]
    X.loc[:4, "title"] = ""  # five rows without text: the members' prior
    ens = FoldEnsemble(
        EmbeddingClassifier(CountingEmbedder(), modality="text", head=head), n_splits=3, seed=0
    )
    ens.fit(X, y)
    assert ens._linear_stack() is not None
    proba, mask = ens.predict_proba_with_mask(X)
    one_by_one = np.mean([m.predict_proba(X) for m in ens.estimators_], axis=0)
    np.testing.assert_allclose(proba, one_by_one, rtol=0, atol=1e-6)
    assert mask is not None and (~mask).sum() == 5
    prior = np.mean([m.prior_ for m in ens.estimators_], axis=0)
    np.testing.assert_allclose(proba[~mask], np.tile(prior, (5, 1)), atol=1e-12)


def test_heads_that_are_not_a_softmax_of_an_affine_map_run_one_by_one() -> None:
    """An MLP head, or a classifier whose probabilities are not a softmax of its decision function (one-vs-rest
    normalisation, caught on probe rows), is not stacked; predictions are the members' mean as before."""
    from sklearn.linear_model import LogisticRegression

    from prodcat.heads import softmax_affine

    class OneVsRest(LogisticRegression):
        def predict_proba(self, X: Any) -> np.ndarray:
            p = 1 / (1 + np.exp(-self.decision_function(X)))
            return p / p.sum(axis=1, keepdims=True)

    X, y = _frame(90)
    for head in ("mlp", OneVsRest(C=1.0)):
        ens = FoldEnsemble(EmbeddingClassifier(CountingEmbedder(), modality="text", head=head), n_splits=3)
        ens.fit(X, y)
        assert ens._linear_stack() is None
        one_by_one = np.mean([m.predict_proba(X) for m in ens.estimators_], axis=0)
        np.testing.assert_allclose(ens.predict_proba(X), one_by_one)
    plain = LogisticRegression().fit(np.eye(3).repeat(4, axis=0), np.arange(3).repeat(4))
    assert softmax_affine(plain, 3) is not None
    assert softmax_affine(plain, 4) is None  # the head reads another width


def test_stacked_heads_stay_out_of_the_estimator_and_the_bundle() -> None:
    """Prediction leaves the ensemble's ``__dict__`` as it was (scikit-learn's check_dict_unchanged failed when the
    stack was cached there); a loaded copy builds its own stack and predicts the same."""
    from prodcat.folds import _STACKS

    X, y = _frame(90)
    ens = FoldEnsemble(EmbeddingClassifier("test-tiny", modality="text"), n_splits=3, seed=0).fit(X, y)
    state = dict(ens.__dict__)
    before = ens.predict_proba(X)
    assert ens.__dict__.keys() == state.keys() and ens in _STACKS
    back = loads_estimator(dumps_estimator(ens), source="test")
    assert back not in _STACKS
    np.testing.assert_allclose(back.predict_proba(X), before, rtol=0, atol=1e-12)
    assert back in _STACKS and _STACKS[back][1] is not None
    ens.fit(X.iloc[::-1], y[::-1])  # refit: new members, a new stack
    np.testing.assert_allclose(
        ens.predict_proba(X), np.mean([m.predict_proba(X) for m in ens.estimators_], 0), atol=1e-6
    )


def test_saves_and_loads_through_the_allow_list() -> None:
    X, y = _frame()
    ens = FoldEnsemble(EmbeddingClassifier("test-tiny", modality="text"), n_splits=3, seed=0).fit(X, y)
    back = loads_estimator(dumps_estimator(ens), source="test")
    np.testing.assert_allclose(back.predict_proba(X), ens.predict_proba(X))
    assert back.backbone().name == "test-tiny"  # the bundle's fingerprint check asks the members' backbone


def test_a_member_model_without_a_backbone_has_none() -> None:
    X, y = _frame()
    ens = FoldEnsemble(Memoriser(), n_splits=3).fit(X, y)
    assert getattr(ens, "backbone", None) is None


def test_bad_settings_are_named() -> None:
    X, y = _frame()
    with pytest.raises(ValueError, match="n_splits"):
        FoldEnsemble(Memoriser(), n_splits=1).fit(X, y)
    with pytest.raises(ValueError, match="needs an estimator"):
        FoldEnsemble().fit(X, y)


@pytest.mark.parametrize("refit_full", [False, True])
def test_training_predicts_with_the_fold_models_unless_refit_full(
    demo_catalog: Path, refit_full: bool
) -> None:
    df = read_catalog(demo_catalog)[0]
    cfg = TrainConfig.model_validate({**TINY_CONFIG, "refit_full": refit_full})
    model = train(df, cfg, progress=False)
    kinds = {type(est).__name__ for _, _, est in model.models}
    fuser: Any = model.fuser
    if refit_full:
        assert kinds == {"EmbeddingClassifier"}
        assert type(fuser).__name__ == "LogisticFusion"
    else:
        assert kinds == {"FoldEnsemble"}
        assert all(len(est.estimators_) == 3 for _, _, est in model.models)
        assert type(fuser).__name__ == "VotingEnsemble"
        assert len(fuser.estimators_) == cfg.calibration.n_folds
        assert {type(f).__name__ for f in fuser.estimators_} == {"LogisticFusion"}
    assert model.metrics["validation"]["macro_f1"] > 0.5


def test_prediction_does_not_write_the_training_cache_through_the_members(
    demo_catalog: Path, tmp_path: Path
) -> None:
    """Regression: the predictor switched the models' embedding cache off for prediction by their own parameters,
    which a FoldEnsemble does not have: its members kept the training cache and wrote every predicted item to it."""
    from prodcat.predict import Predictor

    df = read_catalog(demo_catalog)[0]
    cfg = TrainConfig.model_validate(
        {
            "text_models": [{"name": "embed:test-tiny"}],
            "image_models": [],
            "n_folds": 3,
            "validation_fraction": 0.0,
            "calibration": {"enabled": False},
            "noise": {"enabled": False},
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    model = train(df, cfg, progress=False)
    Predictor(model, {})
    members = [m for _, _, est in model.models for m in est.estimators_]
    assert members and all(m.cache_dir is None and m.progress is False for m in members)


def test_only_models_whose_members_share_their_inputs_are_kept_as_folds() -> None:
    """tfidf's K members would each carry a vocabulary and weights (K times the bundle and the prediction cost):
    training refits it; embedding models keep their K heads on one embedding pass."""
    from prodcat.registry import create

    assert FoldEnsemble.shares_inputs(create("text-model", "embed:test-tiny"))
    assert not FoldEnsemble.shares_inputs(create("text-model", "tfidf"))
    assert not FoldEnsemble.shares_inputs(Memoriser())
