"""Fusion estimators on synthetic probabilities and embeddings where the right answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from prodcat.fusion import (
    FeatureFusion,
    GBDTFusion,
    LogisticFusion,
    LogLinearFusion,
    MeanFusion,
    PaperMLPFusion,
    from_state,
    get_state,
    parse_members,
)
from prodcat.fusion.gbdt import _raw_to_proba, export_trees, predict_raw
from prodcat.registry import available, create

C = 4
FAST = {
    "mean": {},
    "log-linear": {},
    "logistic": {},
    "gbdt": {"max_iter": 30},
    "paper-mlp": {"epochs": 8, "n_splits": 4},
    "paper-mlp-2": {"epochs": 8, "n_splits": 4, "n_layers": 2},
}


def _make(name: str, **kw: object) -> object:
    opts = dict(FAST[name])
    base = "paper-mlp" if name.startswith("paper-mlp") else name
    return create("fusion", base, **{**opts, **kw})


def _peaked(y: np.ndarray, rng: np.random.Generator, *, strength: float) -> np.ndarray:
    """Probabilities that put mass on the true class: softmax(strength * onehot + noise)."""
    z = rng.normal(size=(len(y), C))
    z[np.arange(len(y)), y] += strength
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 480
    y = np.repeat(np.arange(C), n // C)
    rng.shuffle(y)
    good = _peaked(y, rng, strength=4.0)  # ~97% accurate alone
    weak = _peaked(y, rng, strength=1.0)  # ~50% accurate alone
    noise = rng.dirichlet(np.ones(C), size=n)
    return {"y": y, "good": good, "weak": weak, "noise": noise}


def _acc(est: object, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(est.predict(X) == y))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", list(FAST))
def test_informative_input_wins_and_noise_is_ignored(name: str, data: dict[str, np.ndarray]) -> None:
    y, tr, te = data["y"], slice(0, 360), slice(360, None)
    X_noise_first = np.hstack([data["noise"], data["good"]])
    good_alone = float(np.mean(data["good"][te].argmax(1) == y[te]))
    est = _make(name).fit(X_noise_first[tr], y[tr])  # type: ignore[attr-defined]
    acc = _acc(est, X_noise_first[te], y[te])
    assert acc >= good_alone - 0.03, f"{name}: {acc:.3f} vs informative input alone {good_alone:.3f}"
    proba = est.predict_proba(X_noise_first[te])
    assert proba.shape == (120, C)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)


def test_mean_weights_favour_the_informative_model(data: dict[str, np.ndarray]) -> None:
    X = np.hstack([data["noise"], data["good"], data["weak"]])
    for pooling in ("log", "linear"):
        est = MeanFusion(pooling=pooling).fit(X, data["y"])
        w = est.weights_
        assert w[1] > 5 * w[0], (pooling, w)
        assert w[1] > w[2], (pooling, w)


def test_log_linear_learns_which_model_to_trust_per_class() -> None:
    """Model A is sharp on classes 0-1 and noise on 2-3, model B the other way round: one weight per model
    (``mean``) cannot follow that, a weight per model and class can; it starts from ``mean``'s weights."""
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(C), 150)
    rng.shuffle(y)
    z_a, z_b = rng.normal(size=(len(y), C)), rng.normal(size=(len(y), C))
    z_a[np.arange(len(y)), y] += np.where(y < 2, 3.0, 0.0)
    z_b[np.arange(len(y)), y] += np.where(y >= 2, 3.0, 0.0)
    z_a[:, 2:] += 2.0 * rng.normal(size=(len(y), 2))  # A's noise on the classes it does not know is loud
    z_b[:, :2] += 2.0 * rng.normal(size=(len(y), 2))
    a, b = (np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in (z_a, z_b))
    X = np.hstack([a, b])
    tr, te = slice(0, 400), slice(400, None)
    mean = MeanFusion().fit(X[tr], y[tr])
    est = LogLinearFusion().fit(X[tr], y[tr])
    np.testing.assert_allclose(est.start_weights_, mean.weights_, rtol=1e-6)
    assert est.coef_[0, :2].mean() > est.coef_[0, 2:].mean()  # A trusted on its own classes
    assert est.coef_[1, 2:].mean() > est.coef_[1, :2].mean()
    assert _acc(est, X[te], y[te]) > _acc(mean, X[te], y[te]) + 0.03


def test_log_linear_with_a_huge_penalty_is_mean_and_weights_repeat_rows(data: dict[str, np.ndarray]) -> None:
    X, y = np.hstack([data["good"], data["weak"]]), data["y"]
    stiff = LogLinearFusion(alpha=1e9).fit(X, y)
    np.testing.assert_allclose(stiff.predict_proba(X), MeanFusion().fit(X, y).predict_proba(X), atol=1e-5)
    w = np.r_[np.full(100, 2.0), np.ones(len(y) - 100)]
    doubled = LogLinearFusion().fit(np.vstack([X[:100], X]), np.r_[y[:100], y])
    weighted = LogLinearFusion().fit(X, y, sample_weight=w)
    np.testing.assert_allclose(weighted.predict_proba(X), doubled.predict_proba(X), atol=1e-4)


def test_logistic_puts_weight_on_the_informative_block(data: dict[str, np.ndarray]) -> None:
    X = np.hstack([data["noise"], data["good"]])
    est = LogisticFusion().fit(X, data["y"])
    noise_norm = np.abs(est.coef_[:, :C]).sum()
    good_norm = np.abs(est.coef_[:, C:]).sum()
    assert good_norm > 5 * noise_norm


@pytest.mark.parametrize("name", ["mean", "log-linear", "logistic", "paper-mlp"])
def test_complementary_models_fuse_better_than_either(name: str) -> None:
    """Model A knows classes 0-1 (uniform on 2-3), model B knows 2-3: only fusion gets every class right."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(C), 80)
    a = np.full((len(y), C), 0.02)
    b = np.full((len(y), C), 0.02)
    a[:, 2:] = b[:, :2] = 0.48
    a[y < 2, :2] = 0.02
    a[y < 2, y[y < 2]] = 0.94
    b[y >= 2, 2:] = 0.02
    b[y >= 2, y[y >= 2]] = 0.94
    a += rng.uniform(0, 0.01, a.shape)
    b += rng.uniform(0, 0.01, b.shape)
    a /= a.sum(1, keepdims=True)
    b /= b.sum(1, keepdims=True)
    X = np.hstack([a, b])
    est = _make(name).fit(X, y)  # type: ignore[attr-defined]
    assert _acc(est, X, y) > 0.97
    assert np.mean(a.argmax(1) == y) < 0.8 and np.mean(b.argmax(1) == y) < 0.8


@pytest.mark.parametrize("name", list(FAST))
def test_state_round_trip_is_exact_and_json(name: str, data: dict[str, np.ndarray]) -> None:
    X = np.hstack([data["good"], data["weak"]])
    est = _make(name).fit(X[:300], data["y"][:300])  # type: ignore[attr-defined]
    meta, arrays = get_state(est)
    json.dumps(meta, allow_nan=False)  # strict JSON
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    back = from_state(json.loads(json.dumps(meta)), arrays)
    np.testing.assert_allclose(back.predict_proba(X), est.predict_proba(X), atol=1e-9)
    np.testing.assert_array_equal(back.predict(X), est.predict(X))


def test_block_structure_errors(data: dict[str, np.ndarray]) -> None:
    X = np.hstack([data["good"], data["weak"]])
    y = data["y"]
    with pytest.raises(ValueError, match="n_models=3"):
        MeanFusion(n_models=3).fit(X, y)
    with pytest.raises(ValueError, match="blocks of 4 classes"):
        MeanFusion().fit(X[:, :7], y)
    est = MeanFusion().fit(X, y)
    with pytest.raises(ValueError, match="2 models x 4 classes"):
        est.predict_proba(X[:, :4])


def test_logits_are_refused_with_a_hint(data: dict[str, np.ndarray]) -> None:
    logits = np.log(data["good"]) * 3
    with pytest.raises(ValueError, match="softmax"):
        LogisticFusion().fit(np.hstack([logits, data["weak"]]), data["y"])
    est = LogisticFusion().fit(np.hstack([data["good"], data["weak"]]), data["y"])
    with pytest.raises(ValueError, match="not probabilities"):
        est.predict_proba(np.hstack([data["good"] * 2, data["weak"]]))


def test_classes_fix_the_column_order_and_allow_absent_classes(data: dict[str, np.ndarray]) -> None:
    order = ["d", "a", "c", "b"]  # input columns in this (non-sorted) class order
    y = np.asarray(order, dtype=object)[data["y"]]
    X = np.hstack([data["good"], data["weak"]])
    for est in (
        MeanFusion(classes=order),
        LogLinearFusion(classes=order),
        LogisticFusion(classes=order),
        GBDTFusion(classes=order, max_iter=20),
    ):
        est.fit(X, y)
        assert list(est.classes_) == order
        assert np.mean(est.predict(X) == y) > 0.9
    keep = y != "c"  # a class missing from the fusion training set still gets a (zero-ish) column
    for est in (LogisticFusion(classes=order), GBDTFusion(classes=order, max_iter=20)):
        p = est.fit(X[keep], y[keep]).predict_proba(X)
        assert p.shape == (len(X), 4) and p[:, 2].max() < 1e-6
    # like mean, log-linear keeps the models' own view of a class it never saw (its bias only falls so far)
    p = LogLinearFusion(classes=order).fit(X[keep], y[keep]).predict_proba(X)
    assert p.shape == (len(X), 4) and np.mean(p.argmax(1) == data["y"]) > 0.9
    with pytest.raises(ValueError, match="not in `classes`"):
        MeanFusion(classes=["a", "b"]).fit(X[:, :8], y)


def test_extra_columns_are_carried(data: dict[str, np.ndarray]) -> None:
    flag = (np.arange(len(data["y"])) % 2).astype(float)[:, None]
    X = np.hstack([data["good"], data["weak"], flag])
    for est in (
        MeanFusion(n_extra=1),
        LogLinearFusion(n_extra=1),
        LogisticFusion(n_extra=1),
        _make("paper-mlp", n_extra=1),
    ):
        est.fit(X, data["y"])  # type: ignore[attr-defined]
        assert est.n_models_ == 2 and est.n_features_in_ == 9  # type: ignore[attr-defined]


def test_paper_mlp_is_deterministic_and_votes(data: dict[str, np.ndarray]) -> None:
    X = np.hstack([data["good"], data["weak"]])
    y = data["y"]
    a = PaperMLPFusion(epochs=6, n_splits=4, seed=3).fit(X, y)
    b = PaperMLPFusion(epochs=6, n_splits=4, seed=3).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert len(a.fold_scores_) == 4 and (a.best_epochs_ >= 1).all() and (a.best_epochs_ <= 6).all()
    P = a._net_probas(X)  # (K, n, C)
    assert P.shape == (4, len(X), C)
    np.testing.assert_allclose(a.predict_proba(X), P.mean(0))
    votes = np.apply_along_axis(np.bincount, 0, P.argmax(2), minlength=C)  # (C, n)
    assert (votes[np.searchsorted(a.classes_, a.predict(X)), np.arange(len(X))] == votes.max(0)).all()
    soft = clone(a).set_params(voting="soft").fit(X, y)
    np.testing.assert_array_equal(soft.predict(X), soft.classes_[soft.predict_proba(X).argmax(1)])


def test_paper_mlp_rejects_bad_layers(data: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="n_layers"):
        PaperMLPFusion(n_layers=3, n_splits=4).fit(np.hstack([data["good"]]), data["y"])


def test_gbdt_tree_export_matches_sklearn_with_missing_values() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    X[rng.random(X.shape) < 0.1] = np.nan
    for target in (y, (y > 0).astype(int)):  # multiclass and binary
        hgb = HistGradientBoostingClassifier(max_iter=15, random_state=0).fit(X, target)
        trees = export_trees(hgb)
        expected = hgb.predict_proba(X)  # scikit-learn's public prediction
        np.testing.assert_allclose(_raw_to_proba(predict_raw(trees, X)), expected, atol=1e-9)
        np.testing.assert_allclose(_raw_to_proba(predict_raw(trees, X, chunk=37)), expected, atol=1e-9)


def test_gbdt_evaluator_bounds_walks_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluator's working memory is flat in the number of trees: it walks as many rows at once as keep
    ``_WALKS_PER_CHUNK`` (row, tree) walks in flight (1,024 rows x 2,420 trees took 130 MB before)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    import prodcat.fusion.gbdt as gbdt

    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 4))
    y = np.digitize(X[:, 0] + X[:, 1], [-1, 0, 1])  # 4 classes
    trees = export_trees(HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y))
    expected = predict_raw(trees, X, chunk=500)
    sizes: list[int] = []
    real_tile = np.tile
    monkeypatch.setattr(gbdt.np, "tile", lambda a, reps: sizes.append(len(a) * reps) or real_tile(a, reps))
    monkeypatch.setattr(gbdt, "_WALKS_PER_CHUNK", 3 * len(trees["roots"]))
    np.testing.assert_allclose(predict_raw(trees, X), expected, atol=1e-12)
    assert sizes and max(sizes) <= 3 * len(trees["roots"])


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["log", "linear"]))
def test_mean_probabilities_sum_to_one(seed: int, pooling: str) -> None:
    rng = np.random.default_rng(seed)
    y = np.arange(30) % 3
    X = np.hstack([rng.dirichlet(np.ones(3) * 0.3, 30) for _ in range(2)])
    p = MeanFusion(pooling=pooling).fit(X, y).predict_proba(X)
    assert np.isfinite(p).all() and (p >= 0).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)


def test_mean_macro_f1_objective_and_fixed_weights(data: dict[str, np.ndarray]) -> None:
    X = np.hstack([data["good"], data["weak"]])
    est = MeanFusion(objective="macro_f1").fit(X, data["y"])
    assert est.weights_[0] >= est.weights_[1]
    fixed = MeanFusion(pooling="linear", weights=[3, 1]).fit(X, data["y"])
    np.testing.assert_allclose(fixed.weights_, [0.75, 0.25])
    with pytest.raises(ValueError, match="non-negative"):
        MeanFusion(weights=[1, -1]).fit(X, data["y"])


# --- feature-level ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embeddings() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    n = 400
    y = np.arange(n) % C
    centres = rng.normal(size=(C, 16)) * 2.0
    text = centres[y] + rng.normal(size=(n, 16))  # informative modality
    image = rng.normal(size=(n, 8))  # pure noise modality
    return {"y": y, "text": text, "image": image}


@pytest.mark.parametrize("combine", ["concat", "sum", "attention"])
def test_feature_fusion_learns_from_the_informative_modality(combine: str, embeddings: dict) -> None:
    y, tr, te = embeddings["y"], slice(0, 300), slice(300, None)
    X = {"text": embeddings["text"], "image": embeddings["image"]}
    est = FeatureFusion(combine=combine, epochs=15, lr=3e-3, batch_size=32, hidden=32, proj_dim=16, seed=0)
    est.fit({k: v[tr] for k, v in X.items()}, y[tr])
    acc = np.mean(est.predict({k: v[te] for k, v in X.items()}) == y[te])
    assert acc > 0.9, (combine, acc)
    if combine == "attention":
        w = est.attention_weights({k: v[te] for k, v in X.items()})
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    back = from_state(*get_state(est))
    np.testing.assert_allclose(back.predict_proba(X), est.predict_proba(X), atol=1e-6)


def test_feature_fusion_input_forms_agree(embeddings: dict) -> None:
    y = embeddings["y"]
    blocks = [embeddings["text"], embeddings["image"]]
    flat = np.hstack(blocks)
    a = FeatureFusion(epochs=3, hidden=16).fit(blocks, y)
    b = FeatureFusion(epochs=3, hidden=16, block_sizes=[16, 8]).fit(flat, y)
    np.testing.assert_allclose(a.predict_proba(blocks), b.predict_proba(flat), atol=1e-6)
    with pytest.raises(ValueError, match="block_sizes"):
        FeatureFusion().fit(flat, y)
    with pytest.raises(ValueError, match="do not match"):
        a.predict([embeddings["text"]])
    named = FeatureFusion(epochs=2, hidden=16).fit({"t": blocks[0], "i": blocks[1]}, y)
    with pytest.raises(ValueError, match="do not match"):
        named.predict({"image": blocks[0], "text": blocks[1]})


def test_registry_names_and_member_parsing() -> None:
    names = set(available("fusion"))
    assert {"paper-mlp", "mean", "logistic", "gbdt", "ensemble"} <= names
    assert {"feature-concat", "feature-sum", "feature-attention"} <= names
    assert create("fusion", "feature-sum").combine == "sum"
    assert parse_members("paper-mlp+paper-mlp[n_layers=2,voting=soft]+logistic") == [
        ("paper-mlp", {}),
        ("paper-mlp", {"n_layers": 2, "voting": "soft"}),
        ("logistic", {}),
    ]
    with pytest.raises(ValueError, match="expected name"):
        parse_members("paper-mlp[n_layers=2")


def test_paper_mlp_tiny_fuses_a_small_sample_with_a_rare_class() -> None:
    """A few hundred rows and a class with fewer members than inner folds: fits, and beats both inputs.

    With 5 epochs the tiny net underfit (below the better input); its inner K-fold refused the rare class."""
    rng = np.random.default_rng(3)
    y = np.concatenate([np.repeat(np.arange(C), 60), [C, C]])  # class C has 2 members < 3 inner folds
    rng.shuffle(y)
    k = C + 1
    z_a, z_b = rng.normal(size=(len(y), k)), rng.normal(size=(len(y), k))
    z_a[np.arange(len(y)), y] += 1.6
    z_b[np.arange(len(y)), y] += 1.6
    a, b = (np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in (z_a, z_b))
    X = np.hstack([a, b])
    tr, te = np.arange(len(y)) % 4 != 0, np.arange(len(y)) % 4 == 0
    est = create("fusion", "paper-mlp-tiny").fit(X[tr], y[tr])
    fused = float(np.mean(est.predict(X[te]) == y[te]))
    best_alone = max(float(np.mean(p[te].argmax(1) == y[te])) for p in (a, b))
    assert fused > best_alone, (fused, best_alone)


@pytest.mark.parametrize("name", available("fusion"))
def test_every_registered_fuser_passes_its_own_parameter_check(name: str) -> None:
    create("fusion", name).check_params()


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mean", {"pooling": "cubic"}, r"'pooling' parameter of MeanFusion must be a str among"),
        ("mean", {"weights": "best"}, r"'weights' parameter of MeanFusion"),
        ("mean", {"weights": [1, 2], "n_models": 3}, r"weights must be 3 numbers \(one per model\)"),
        ("mean", {"weights": [0, 0]}, r"non-negative numbers"),
        ("logistic", {"C": 0}, r"'C' parameter of LogisticFusion must be a float in the range \(0.0, inf\)"),
        ("log-linear", {"alpha": -1}, r"'alpha' parameter of LogLinearFusion must be a float in the range"),
        ("log-linear", {"max_iter": 0}, r"'max_iter' parameter of LogLinearFusion"),
        (
            "paper-mlp",
            {"hidden": 0},
            r"'hidden' parameter of PaperMLPFusion must be an int in the range \[1, inf\)",
        ),
        ("paper-mlp", {"lr": "fast"}, r"'lr' parameter of PaperMLPFusion"),
        ("paper-mlp", {"n_splits": 1}, r"'n_splits' parameter"),
        ("gbdt", {"validation_fraction": 1.5}, r"'validation_fraction' parameter of GBDTFusion"),
        ("ensemble", {"voting": "loud"}, r"'voting' parameter of VotingEnsemble"),
        ("ensemble", {"weights": [1, 1]}, r"weights must be 3 non-negative numbers \(one per member\)"),
        (
            "ensemble",
            {"members": "mean+paper-mlp[epochs=0]"},
            r"member '1:paper-mlp\[epochs=0\]': The 'epochs'",
        ),
        ("feature-concat", {"dropout": 1.0}, r"'dropout' parameter of FeatureFusion"),
    ],
)
def test_bad_parameters_are_named_before_fitting(name: str, params: dict, message: str) -> None:
    est = create("fusion", name, **params)
    with pytest.raises(ValueError, match=message):
        est.check_params()


def test_fit_checks_the_parameters_first(data: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="'epochs' parameter"):
        PaperMLPFusion(epochs=0).fit(data["good"], data["y"])


def test_default_ensemble_leaves_out_fusers_that_explode_with_the_class_count() -> None:
    from prodcat.config import FusionConfig, build_fuser
    from prodcat.fusion import DEFAULT_MEMBERS, default_members

    assert default_members(None) == DEFAULT_MEMBERS == default_members(55) == default_members(100)
    assert default_members(101) == "log-linear"
    small = build_fuser(FusionConfig(method="ensemble"), n_models=2, seed=0, n_classes=55)
    large = build_fuser(FusionConfig(method="ensemble"), n_models=2, seed=0, n_classes=1000)
    assert len(small.estimators) == 3
    assert [name for name, _ in large.estimators] == ["0:log-linear"]
    assert isinstance(large.estimators[0][1], LogLinearFusion)
    explicit = build_fuser(
        FusionConfig(method="ensemble", params={"members": "gbdt"}), n_models=2, seed=0, n_classes=1000
    )
    assert [name for name, _ in explicit.estimators] == ["0:gbdt"]  # an explicit choice is kept


def test_fusers_adapt_their_own_folds_to_a_small_training_set() -> None:
    from prodcat.fusion.gbdt import GBDTFusion

    y = np.repeat(np.arange(8), 6)  # 48 rows, 6 per class
    mlp = PaperMLPFusion(n_splits=8)
    assert mlp.adapt_to_labels(y) == ["PaperMLPFusion: n_splits lowered to 6 (smallest class has 6 rows)"]
    assert mlp.n_splits == 6 and PaperMLPFusion(n_splits=4).adapt_to_labels(y) == []
    gbdt = GBDTFusion()  # a 0.1 holdout of 48 rows is 5 rows: not one per class
    assert "early stopping off" in gbdt.adapt_to_labels(y)[0] and not gbdt.early_stopping
    assert GBDTFusion().adapt_to_labels(np.repeat(np.arange(8), 20)) == []
    ensemble = create("fusion", "ensemble")
    notes = ensemble.adapt_to_labels(y)
    assert [n.split(":")[0] for n in notes] == ["member '1", "member '2"]  # paper-mlp and gbdt, not mean


def test_paper_mlp_hard_vote_is_the_nets_majority_and_soft_the_argmax_of_their_mean(
    data: dict[str, np.ndarray],
) -> None:
    from prodcat.ensemble import majority_vote

    X, y = np.hstack([data["good"], data["weak"], data["noise"]]), data["y"]
    hard = _make("paper-mlp").fit(X, y)  # type: ignore[attr-defined]
    nets = hard._net_probas(X)  # type: ignore[attr-defined]  # (K, n, C): each net's probabilities
    votes = majority_vote(nets.argmax(2), n_classes=nets.shape[2], probas=nets)
    np.testing.assert_array_equal(hard.predict(X), hard.classes_[votes])
    np.testing.assert_allclose(hard.predict_proba(X), nets.mean(0))
    soft = _make("paper-mlp", voting="soft").fit(X, y)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(soft.predict(X), soft.classes_[soft.predict_proba(X).argmax(1)])


def test_gbdt_boosts_on_one_openmp_thread_with_the_same_trees(
    data: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two OpenMP threads on these small inputs made every fit of the fusion and of its calibration cross-fitting
    # ~10x slower on a busy machine; the boosting now runs on one thread, and the trees do not depend on it.
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_info, threadpool_limits

    import prodcat.fusion.gbdt as gbdt

    seen: list[int] = []
    fit = HistGradientBoostingClassifier.fit

    def recording(self: HistGradientBoostingClassifier, *args: object, **kwargs: object) -> object:
        seen.extend(int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "openmp")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(HistGradientBoostingClassifier, "fit", recording)
    X, y = np.hstack([data["good"], data["weak"]]), data["y"]
    with threadpool_limits(limits=2, user_api="openmp"):  # what the process would use on 2 cores
        one = _make("gbdt", max_iter=15).fit(X, y)  # type: ignore[attr-defined]
        monkeypatch.setattr(gbdt, "BOOSTING_THREADS", 2)
        two = _make("gbdt", max_iter=15).fit(X, y)  # type: ignore[attr-defined]
    assert seen[0] == 1 and seen[-1] == 2
    np.testing.assert_array_equal(one.predict_proba(X), two.predict_proba(X))
