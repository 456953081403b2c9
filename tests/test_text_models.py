from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.metrics import f1_score

from prodcat.missing import class_prior
from prodcat.models import EmbeddingClassifier
from prodcat.oof import oof_predict_proba
from prodcat.registry import available, create
from prodcat.text.models import TfidfTextClassifier

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

WORDS = {
    "chaussures": ["basket", "course", "lacet", "semelle", "running"],
    "sacs": ["sac à dos", "bandoulière", "cabas", "poche", "zip"],
    "montres": ["cadran", "bracelet acier", "chronographe", "quartz", "aiguilles"],
}


def toy_catalog(n_per_class: int = 15, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in WORDS.items():
        for i in range(n_per_class):
            a, b = rng.choice(words, size=2, replace=False)
            rows.append(
                {
                    "id": f"{label}{i}",
                    "title": f"Marque{i % 5} {a}",
                    "description": f"<b>{b}</b> &eacute;té",
                    "image": None,
                    "label": label,
                }
            )
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return df, df["label"].to_numpy()


def test_registry_names() -> None:
    assert {"tfidf", "embed:", "hf:"} <= set(available("text-model"))
    assert isinstance(create("text-model", "tfidf", C=3.0), TfidfTextClassifier)
    embed = create("text-model", "embed:test-tiny", head="mlp")
    assert isinstance(embed, EmbeddingClassifier)
    assert (embed.embedder, embed.column, embed.head, embed.modality) == ("test-tiny", "text", "mlp", "text")
    hf = create("text-model", "hf:/models/camembert-base", epochs=1)
    assert (hf.model_name_or_path, hf.epochs) == ("/models/camembert-base", 1)  # built lazily: no import yet


@pytest.mark.parametrize("name", ["tfidf", "embed:test-tiny"])
def test_contract(name: str) -> None:
    X, y = toy_catalog()
    model = create("text-model", name)
    assert model.fit(X, y) is model
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert model.classes_.tolist() == sorted(WORDS)
    assert f1_score(y, model.predict(X), average="macro") > 0.9
    again = clone(model).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(again, proba)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict_proba(X), proba)


def test_tfidf_generalises_out_of_fold() -> None:
    X, y = toy_catalog(n_per_class=20)
    res = oof_predict_proba(TfidfTextClassifier(), X, y, n_splits=4, progress=False, refit=False)
    assert f1_score(y, res.classes[res.proba.argmax(axis=1)], average="macro") > 0.85


def test_tfidf_empty_text_gets_prior_and_weights_matter() -> None:
    X, y = toy_catalog()
    X.loc[:2, ["title", "description"]] = ["", ""]
    w = np.where(y == "sacs", 3.0, 1.0)
    model = TfidfTextClassifier().fit(X, y, sample_weight=w)
    np.testing.assert_allclose(
        model.predict_proba(X.iloc[:3]), np.tile(class_prior(y, model.classes_, w), (3, 1))
    )
    plain = TfidfTextClassifier().fit(X, y).predict_proba(X)
    sacs = model.classes_.tolist().index("sacs")
    assert model.predict_proba(X)[:, sacs].mean() > plain[:, sacs].mean()


def test_tfidf_single_column_and_sequence_input() -> None:
    X, y = toy_catalog()
    by_title = TfidfTextClassifier(column="title").fit(X, y)
    assert by_title.predict_proba(X).shape == (len(X), 3)
    seq = TfidfTextClassifier().fit(X["title"].tolist(), y)
    np.testing.assert_allclose(seq.predict_proba(["Marque1 basket"]).sum(), 1.0)


def test_tfidf_unseen_classes_order_is_kept() -> None:
    X, y = toy_catalog()
    y = np.where(y == "montres", "zz-montres", y)
    model = TfidfTextClassifier().fit(X, y)
    assert model.classes_.tolist() == ["chaussures", "sacs", "zz-montres"]
    assert (model.predict(X) == y).mean() > 0.9


@given(st.lists(st.text(alphabet="abcdé <>&;", max_size=12), min_size=1, max_size=8))
@settings(max_examples=25, deadline=None)
def test_tfidf_rows_sum_to_one_on_any_text(texts: list[str]) -> None:
    X, y = toy_catalog(n_per_class=5)
    model = _fitted_tfidf(X, y)
    proba = model.predict_proba(pd.DataFrame({"title": texts, "description": [""] * len(texts)}))
    assert proba.shape == (len(texts), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert np.all(proba >= 0)


_FITTED: dict[str, TfidfTextClassifier] = {}


def _fitted_tfidf(X: pd.DataFrame, y: np.ndarray) -> TfidfTextClassifier:
    if "m" not in _FITTED:
        _FITTED["m"] = TfidfTextClassifier().fit(X, y)
    return _FITTED["m"]


@pytest.mark.realdata
def test_tfidf_on_real_fashion_titles() -> None:
    path = SHARED / "fashion" / "products.csv"
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    df = pd.read_csv(path).groupby("label").head(20).reset_index(drop=True)
    X = pd.DataFrame({"title": df["title"], "description": ""})
    res = oof_predict_proba(TfidfTextClassifier(), X, df["label"], n_splits=3, progress=False, refit=False)
    f1 = f1_score(df["label"], res.classes[res.proba.argmax(axis=1)], average="macro")
    assert f1 > 0.8


def test_tfidf_saves_compactly_and_round_trips() -> None:
    """Regression: numpy int64 vocabulary indices made skops write one array per n-gram (11 s to load 20k)."""
    import io
    import zipfile

    from prodcat.safe_io import dumps_estimator, loads_estimator

    df, y = toy_catalog(n_per_class=30)
    model = TfidfTextClassifier().fit(df, y)
    n_terms = len(model.word_.vocabulary_) + len(model.char_.vocabulary_)
    assert n_terms > 200
    data = dumps_estimator(model)
    members = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert len(members) < 50, f"{len(members)} archive members for {n_terms} n-grams"
    loaded = loads_estimator(data)
    np.testing.assert_array_equal(loaded.predict_proba(df), model.predict_proba(df))
    assert loaded.char_.vocabulary_ == model.char_.vocabulary_


def test_tfidf_max_chars_keeps_the_start_of_each_text() -> None:
    X, y = toy_catalog()
    # A long tail past the first 20 characters: its words are learnt only when the texts are not cut.
    noisy = X.assign(description=X["description"] + " " + "zzqtail " * 50)
    cut = TfidfTextClassifier(max_chars=20).fit(noisy, y)
    assert max(len(t) for t in cut._texts(noisy)) == 20
    assert "zzqtail" not in cut.word_.vocabulary_
    assert "zzqtail" in TfidfTextClassifier().fit(noisy, y).word_.vocabulary_
    with pytest.raises(ValueError, match="max_chars"):
        TfidfTextClassifier(max_chars=0).check_params()


def test_tfidf_auto_classifier_takes_sgd_on_long_texts_only() -> None:
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    X, y = toy_catalog()
    short = TfidfTextClassifier().fit(X, y)
    assert isinstance(short.linear_, LogisticRegression)  # short titles: L-BFGS
    long_x = X.assign(description=X["description"] + " " + "x" * 300)
    assert isinstance(TfidfTextClassifier().fit(long_x, y).linear_, SGDClassifier)
    # cutting the texts back under the threshold gives L-BFGS again; an explicit choice is kept
    assert isinstance(TfidfTextClassifier(max_chars=100).fit(long_x, y).linear_, LogisticRegression)
    assert isinstance(TfidfTextClassifier(classifier="logreg").fit(long_x, y).linear_, LogisticRegression)


def test_model_saved_before_new_parameters_existed_loads_with_their_defaults() -> None:
    # A fitted model restored from a bundle written before max_chars / classifier existed has no such
    # attributes: get_params (called when a bundle is loaded) and predicting raised AttributeError.
    from prodcat.bundle import fill_new_params

    X, y = toy_catalog()
    model = TfidfTextClassifier().fit(X, y)
    expected = model.predict_proba(X)
    del model.max_chars, model.classifier
    fill_new_params(model)
    assert model.get_params()["max_chars"] is None and model.get_params()["classifier"] == "auto"
    np.testing.assert_allclose(model.predict_proba(X), expected)


def test_tfidf_fit_analyses_each_training_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # fit used to analyse the training texts twice (vectorizer.fit, then transform for the classifier): on long
    # descriptions the character n-grams are most of the fit's cost.
    from sklearn.feature_extraction.text import TfidfVectorizer

    X, y = toy_catalog()
    calls: list[str] = []
    build = TfidfVectorizer.build_analyzer

    def counting(self: TfidfVectorizer) -> Any:
        analyse = build(self)

        def wrapped(doc: str) -> Any:
            calls.append(doc)
            return analyse(doc)

        return wrapped

    monkeypatch.setattr(TfidfVectorizer, "build_analyzer", counting)
    model = TfidfTextClassifier().fit(X, y)
    texts = model._texts(X)
    assert len(calls) == 2 * len(texts)  # once per vectorizer (word and char)
    monkeypatch.undo()
    # the classifier learnt from exactly the features a transform of the same texts gives
    features = model._features(texts)
    reference = clone(model.linear_).fit(features, y)
    np.testing.assert_allclose(
        model.linear_.predict_proba(features), reference.predict_proba(features), rtol=1e-4, atol=1e-6
    )
