from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from prodcat.missing import class_prior, expand_proba
from prodcat.models import EmbeddingClassifier, catalog_text, make_head

WORDS = {
    "shoes": ["sneaker", "running", "lace", "sole", "trainer"],
    "bags": ["backpack", "strap", "zip", "pocket", "tote"],
    "watches": ["dial", "strap steel", "chronograph", "quartz", "analog"],
}


def toy_catalog(n_per_class: int = 20, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A small catalog DataFrame whose titles carry their class in distinctive words."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in WORDS.items():
        for i in range(n_per_class):
            picked = rng.choice(words, size=2, replace=False)
            rows.append(
                {
                    "id": f"{label}-{i}",
                    "title": f"Brand{i % 7} {' '.join(picked)}",
                    "description": f"<p>Nice {picked[0]} &amp; more</p>",
                    "image": None,
                    "label": label,
                }
            )
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return df, df["label"].to_numpy()


def tiny(**kwargs: object) -> EmbeddingClassifier:
    return EmbeddingClassifier("test-tiny", embedder_params={"dim": 64}, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("head", ["logreg", "mlp"])
def test_contract(head: str) -> None:
    X, y = toy_catalog()
    model = tiny(head=head)
    assert model.fit(X, y) is model
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert model.classes_.tolist() == sorted(WORDS)
    assert (model.predict(X) == y).mean() > 0.9
    # Column j of predict_proba is class classes_[j].
    assert np.all(model.classes_[proba.argmax(axis=1)] == model.predict(X))


def test_deterministic_and_clonable() -> None:
    X, y = toy_catalog()
    a = tiny(head="mlp", random_state=3).fit(X, y).predict_proba(X)
    b = clone(tiny(head="mlp", random_state=3)).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert clone(tiny(head_params={"C": 2.0})).get_params()["head_params"] == {"C": 2.0}


def test_missing_text_gets_training_prior() -> None:
    X, y = toy_catalog()
    X.loc[:4, ["title", "description"]] = ["", None]
    weights = np.linspace(0.5, 2.0, len(y))
    model = tiny().fit(X, y, sample_weight=weights)
    proba = model.predict_proba(X.iloc[:6])
    expected = class_prior(y, model.classes_, weights)
    np.testing.assert_allclose(proba[:5], np.tile(expected, (5, 1)))
    assert not np.allclose(proba[5], expected)
    _, available = model.embed(X.iloc[:6])
    assert available.tolist() == [False] * 5 + [True]


def test_sample_weight_changes_the_head() -> None:
    X, y = toy_catalog()
    plain = tiny().fit(X, y).predict_proba(X)
    weighted = tiny().fit(X, y, sample_weight=np.where(y == "bags", 5.0, 1.0)).predict_proba(X)
    bags = list(sorted(WORDS)).index("bags")
    assert weighted[:, bags].mean() > plain[:, bags].mean()


def test_columns_encoded_separately_and_concatenated() -> None:
    X, y = toy_catalog()
    joined = tiny().fit(X, y)
    split = tiny(column=["title", "description"]).fit(X, y)
    assert joined.n_features_embedded_ == 64
    assert split.n_features_embedded_ == 128
    np.testing.assert_allclose(split.predict_proba(X).sum(axis=1), 1.0)


def test_bare_sequence_input_and_unknown_column() -> None:
    X, y = toy_catalog()
    model = tiny(column="title").fit(X["title"].tolist(), y)
    assert model.predict_proba(["Brand1 sneaker lace"]).shape == (1, 3)
    with pytest.raises(KeyError, match="nope"):
        tiny(column="nope").fit(X, y)


def test_only_one_class_with_text() -> None:
    X, y = toy_catalog(n_per_class=4)
    X.loc[y != "bags", "title"] = ""
    X["description"] = ""
    model = tiny().fit(X, y)
    proba = model.predict_proba(X)
    bags = model.classes_.tolist().index("bags")
    assert np.all(proba[y == "bags", bags] == 1.0)
    np.testing.assert_allclose(proba[y != "bags"], np.tile(model.prior_, ((y != "bags").sum(), 1)))


def test_cache_is_used_across_folds(tmp_path: Path) -> None:
    X, y = toy_catalog()
    tiny(cache_dir=tmp_path).fit(X, y)
    model = tiny(cache_dir=tmp_path)
    model.fit(X.iloc[:30], y[:30])
    files = list(tmp_path.rglob("*.npz"))
    assert files, "embeddings were written"
    model.predict_proba(X.iloc[30:])
    assert list(tmp_path.rglob("*.npz")) == files  # nothing new: every text was already cached


def test_pickle_roundtrip() -> None:
    X, y = toy_catalog()
    model = tiny().fit(X, y)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))


def test_custom_head_and_bad_head() -> None:
    X, y = toy_catalog()
    model = tiny(head=LogisticRegression(C=0.1, max_iter=500)).fit(X, y)
    assert model.head_.steps[-1][1].C == 0.1
    with pytest.raises(ValueError, match="unknown head"):
        make_head("forest", None, random_state=0)


def test_catalog_text_joins_cleaned_parts() -> None:
    df = pd.DataFrame({"title": ["A &amp; B", "", None], "description": ["<b>x</b>", "only desc", ""]})
    assert catalog_text(df) == ["A & B - x", "only desc", ""]
    assert catalog_text(df[["title"]]) == ["A & B", "", ""]


@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=30))
@settings(max_examples=40, deadline=None)
def test_class_prior_sums_to_one(labels: list[str]) -> None:
    classes = np.unique(labels)
    prior = class_prior(np.array(labels), classes)
    assert prior.shape == (len(classes),)
    assert abs(prior.sum() - 1.0) < 1e-12
    assert np.all(prior > 0)


def test_class_prior_refuses_labels_outside_the_classes() -> None:
    # Integer codes against string classes (or a label past the last class) used to give C + 1 frequencies.
    with pytest.raises(ValueError, match="not among the 3 classes: 'z'"):
        class_prior(np.array(["a", "z", "b"]), np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="not among the 2 classes"):
        class_prior(np.array([10, 20]), np.array(["10", "20"]))
    with pytest.raises(ValueError, match="'b'"):
        class_prior(np.array(["a", "b"]), np.array(["a", "c"]))


def test_expand_proba_orders_and_fills() -> None:
    out = expand_proba(
        np.array([[0.25, 0.75]], dtype=np.float32), np.array(["b", "d"]), np.array(list("abcd"))
    )
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.0, 0.75]])
    assert out.dtype == np.float64


def test_max_chars_embeds_the_start_of_each_text() -> None:
    X, y = toy_catalog()
    # A tail past the first 12 characters: cut, two products that differ only there get the same vector.
    tails = X.assign(description=[f"tail {i} " * 40 for i in range(len(X))])
    cut = tiny(max_chars=12).fit(tails, y)
    assert max(len(t) for t in cut._items(tails, "text")) == 12
    Z, ok = cut.embed(tails)
    same_start = tails.assign(title=tails["title"].iloc[0], description=tails["description"])
    Z_same, _ = cut.embed(same_start)
    assert ok.all() and np.allclose(Z_same, Z_same[0]) and not np.allclose(Z, Z[0])
    whole = tiny().fit(tails, y)
    assert not np.allclose(whole.embed(same_start)[0], whole.embed(same_start)[0][0])
    # predicting reads the cut texts too: what lies past the cut (here every description) changes nothing
    np.testing.assert_allclose(cut.predict_proba(X), cut.predict_proba(tails))
    # a named column is cut too
    described = tiny(column="description", max_chars=5).fit(tails, y)
    assert max(len(t) for t in described._items(tails, "description")) == 5


@pytest.mark.parametrize("bad", [0, -3, 2.5, "500", True])
def test_max_chars_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_chars"):
        tiny(max_chars=bad).check_params()
    tiny(max_chars=None).check_params()


def test_heads_fit_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two BLAS threads made the USE head's L-BFGS fits ~14x the CPU on a busy 2-core machine; heads (and tfidf's
    # linear model, through the same fit_head) now fit on HEAD_BLAS_THREADS, whatever the process allows.
    from threadpoolctl import threadpool_info, threadpool_limits

    import prodcat.models as models

    seen: list[int] = []
    fit = LogisticRegression.fit

    def recording(self: LogisticRegression, *args: object, **kwargs: object) -> object:
        seen.append(max(int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"))
        return fit(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(LogisticRegression, "fit", recording)
    X, y = toy_catalog()
    with threadpool_limits(limits=2, user_api="blas"):  # what the process would use on 2 cores
        weights = np.linspace(0.5, 2.0, len(y))
        one = tiny().fit(X, y, sample_weight=weights).predict_proba(X)
        monkeypatch.setattr(models, "HEAD_BLAS_THREADS", 2)
        two = tiny().fit(X, y, sample_weight=weights).predict_proba(X)
    assert seen == [1, 2]
    np.testing.assert_allclose(one, two, atol=1e-6)
