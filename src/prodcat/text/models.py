"""Text classifiers ("text-model" registry): ``tfidf``, ``embed:<encoder>`` and ``hf:<name-or-path>``.

All follow the sklearn classifier contract on the catalog DataFrame (they read ``title`` and ``description``)
and give the training class prior to rows without text.

>>> from prodcat.registry import create
>>> create("text-model", "tfidf")                       # word + char n-gram TF-IDF, logistic regression
>>> create("text-model", "embed:use-multilingual")      # frozen encoder + logistic-regression head
>>> create("text-model", "hf:/models/camembert-base")   # fine-tuned transformer (extra ``hf``)
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from prodcat.clean import clean_text
from prodcat.missing import MissingModalityMixin
from prodcat.models import LOGREG_MAX_CLASSES, EmbeddingClassifier, catalog_text, fit_head, truncate
from prodcat.params import Interval, Options, validate_params
from prodcat.registry import register

#: ``classifier="auto"`` also takes ``"sgd"`` when the training texts average more characters than this: on long
#: descriptions L-BFGS costs several times more for the same macro-F1 (docs/bench/text.md, "Long descriptions").
AUTO_SGD_MEAN_CHARS = 200


def _pair(name: str, value: Any) -> tuple[int, int]:
    """An n-gram range as the tuple scikit-learn requires (a YAML config gives a list), checked."""
    try:
        lo, hi = value
        ok = all(isinstance(v, Integral) and not isinstance(v, bool) for v in (lo, hi)) and 1 <= lo <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be (min_n, max_n) with 1 <= min_n <= max_n, got {value!r}")
    return int(lo), int(hi)


@register("text-model", "tfidf")
class TfidfTextClassifier(MissingModalityMixin, ClassifierMixin, BaseEstimator):
    """Word and character n-gram TF-IDF on cleaned ``title - description`` + multinomial logistic regression.

    Defaults (C=10, balanced class weights) were chosen on one fold of fashion and of the Rakuten texts: balanced
    weights add ~0.03 macro-F1 on the Rakuten texts and cost <0.005 on fashion (docs/bench/text.md).

    Parameters
    ----------
    column : ``"text"`` (title and description joined) or one column name.
    word_ngram_range, char_ngram_range : n-gram ranges of the two vectorizers (characters within word bounds).
    min_df : minimum document count of a kept n-gram (both vectorizers).
    max_features : cap per vectorizer (most frequent n-grams), None for no cap.
    max_chars : keep the first ``max_chars`` characters of each text (title first, so long descriptions are what
        is cut), None to keep everything. Bounds the cost of very long descriptions.
    C : inverse regularisation of the logistic regression.
    class_weight : passed to LogisticRegression; ``"balanced"`` (default) weighs classes inversely to their
        frequency, which suits macro-F1; ``None`` for plain likelihood. Multiplies ``sample_weight``.
    max_iter : solver iterations.
    classifier : ``"auto"`` (default: ``"grouped"`` above 100 classes, else ``"sgd"`` when the training texts
        average more than :data:`AUTO_SGD_MEAN_CHARS` characters, else ``"logreg"``), ``"logreg"`` (multinomial
        logistic regression, L-BFGS: hundreds of passes over the data, each costing n-grams x classes),
        ``"sgd"`` (one-vs-rest logistic regression by stochastic gradient, ``sgd_epochs`` passes, penalty
        ``sgd_alpha``: a few times cheaper on long texts) or ``"grouped"``
        (:class:`~prodcat.heads.GroupedClassifier`: the classes clustered into ~sqrt(C) groups, one logistic
        regression over the groups and one per group over its classes, each with few classes: the cost grows
        with sqrt(C), not C; at 327 fashion leaves 0.781 macro-F1 against 0.735 for ``"sgd"``, in less time,
        docs/bench/classes.md; on long texts its stages are ``"sgd"`` under ``"auto"``).
    sgd_alpha, sgd_epochs : settings of ``"sgd"``.
    max_weights : most weights (n-grams x classes) of the linear model: at many classes each vectorizer keeps at
        most ``max_weights / (2 * classes)`` n-grams (the most frequent), so that 3,000 classes do not mean a
        gigabyte of weights; None for no cap. 50M (400 MB) cuts nothing below ~1,000 classes on fashion.

    Attributes
    ----------
    classes_, prior_ (class prior for rows without text), word_, char_ (fitted vectorizers), linear_ (fitted
    LogisticRegression, or the SVD + LDA pipeline).
    """

    #: Out-of-fold passes may fit the folds in parallel processes (:func:`prodcat.oof.fold_parallel`): each fold
    #: analyses its own texts, nothing is shared between folds.
    parallel_folds: ClassVar[bool] = True

    def __init__(
        self,
        *,
        column: str = "text",
        word_ngram_range: tuple[int, int] = (1, 2),
        char_ngram_range: tuple[int, int] = (2, 5),
        min_df: int = 2,
        max_features: int | None = 300_000,
        max_chars: int | None = None,
        C: float = 10.0,
        class_weight: str | dict[Any, float] | None = "balanced",
        max_iter: int = 300,
        classifier: str = "auto",
        sgd_alpha: float = 1e-4,
        sgd_epochs: int = 15,
        max_weights: int | None = 50_000_000,
        random_state: int | None = 0,
    ) -> None:
        self.column = column
        self.word_ngram_range = word_ngram_range
        self.char_ngram_range = char_ngram_range
        self.min_df = min_df
        self.max_features = max_features
        self.max_chars = max_chars
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.classifier = classifier
        self.sgd_alpha = sgd_alpha
        self.sgd_epochs = sgd_epochs
        self.max_weights = max_weights
        self.random_state = random_state

    def _texts(self, X: Any) -> list[str]:
        if not isinstance(X, pd.DataFrame):
            texts = [clean_text(t) for t in X]
        elif self.column == "text" and "text" not in X:
            texts = catalog_text(X)
        else:
            texts = [clean_text(t) for t in X[self.column]]
        return truncate(texts, self.max_chars)

    def _features(self, texts: list[str]) -> sp.csr_matrix:
        return sp.hstack([self.word_.transform(texts), self.char_.transform(texts)], format="csr")

    def _vectorizers(self, min_df: int, n_classes: int = 0) -> tuple[TfidfVectorizer, TfidfVectorizer]:
        common = {
            "lowercase": True,
            "sublinear_tf": True,
            "min_df": min_df,
            "max_features": self._max_features(n_classes),
            "dtype": np.float32,
        }
        word = TfidfVectorizer(
            analyzer="word",
            ngram_range=_pair("word_ngram_range", self.word_ngram_range),
            token_pattern=r"(?u)\b\w+\b",
            **common,
        )
        return word, TfidfVectorizer(
            analyzer="char_wb", ngram_range=_pair("char_ngram_range", self.char_ngram_range), **common
        )

    def _linear(self, class_weight: Any = "same") -> LogisticRegression:
        return LogisticRegression(
            C=self.C,
            class_weight=self.class_weight if class_weight == "same" else class_weight,
            max_iter=self.max_iter,
            random_state=self.random_state,
        )

    def _max_features(self, n_classes: int) -> int | None:
        """``max_features``, lowered so that the weights (n-grams x classes) stay within ``max_weights``."""
        if self.max_weights is None or n_classes <= 0:
            return self.max_features
        cap = max(1000, int(self.max_weights) // (2 * n_classes))  # two vectorizers
        return cap if self.max_features is None else min(self.max_features, cap)

    def _classifier(self, n_classes: int, mean_chars: float = 0.0) -> Any:
        """The linear model for ``n_classes`` classes and training texts of ``mean_chars`` characters on average
        (see ``classifier``)."""
        kind = self.classifier
        long_texts = mean_chars > AUTO_SGD_MEAN_CHARS
        if kind == "auto":
            kind = "grouped" if n_classes > LOGREG_MAX_CLASSES else "sgd" if long_texts else "logreg"
        if kind == "logreg":
            return self._linear()
        if kind == "grouped":  # class weights as sample weights, so that they balance classes, not groups
            from prodcat.heads import GroupedClassifier

            stage = self._sgd(None) if long_texts and self.classifier == "auto" else self._linear(None)
            return GroupedClassifier(stage, class_weight=self.class_weight, random_state=self.random_state)
        return self._sgd(self.class_weight)

    def _sgd(self, class_weight: Any) -> Any:
        from sklearn.linear_model import SGDClassifier

        return SGDClassifier(
            loss="log_loss",
            alpha=self.sgd_alpha,
            max_iter=self.sgd_epochs,
            tol=None,
            class_weight=class_weight,
            random_state=self.random_state,
        )

    _constraints: ClassVar[dict[str, list[Any]]] = {
        "min_df": [Interval(Integral, 1, None, closed="left")],
        "max_features": [Interval(Integral, 1, None, closed="left"), None],
        "max_chars": [Interval(Integral, 1, None, closed="left"), None],
        "C": [Interval(Real, 0, None, closed="neither")],
        "class_weight": [Options({"balanced"}), dict, None],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "classifier": [Options({"auto", "logreg", "sgd", "grouped"})],
        "sgd_alpha": [Interval(Real, 0, None, closed="neither")],
        "sgd_epochs": [Interval(Integral, 1, None, closed="left")],
        "max_weights": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": [Integral, None],
    }

    def check_params(self) -> None:
        """Check the settings without fitting (a ``ValueError`` naming the parameter). The pipeline runs it before
        training any model."""
        if not isinstance(self.column, str) or not self.column:
            raise ValueError(f"column must be 'text' or a column name, got {self.column!r}")
        if self.classifier not in ("auto", "logreg", "sgd", "grouped"):
            raise ValueError(
                f"classifier must be 'auto', 'logreg', 'sgd' or 'grouped', got {self.classifier!r}"
            )
        validate_params(self, self._constraints)
        _pair("word_ngram_range", self.word_ngram_range)
        _pair("char_ngram_range", self.char_ngram_range)

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> TfidfTextClassifier:
        """Fit both vectorizers and the linear model on rows with text. ``X``: catalog DataFrame (n rows)."""
        y = self._fit_prior(y, sample_weight)
        texts = self._texts(X)
        has = np.array([bool(t) for t in texts])
        kept = [t for t, h in zip(texts, has, strict=True) if h]
        # A tiny training set may have no n-gram reaching min_df: fall back to min_df=1 rather than fail.
        self.word_, self.char_ = self._vectorizers(
            self.min_df if len(kept) >= 10 * self.min_df else 1, len(np.unique(y[has]))
        )
        blocks = []
        for vectorizer in (self.word_, self.char_):
            # fit_transform: the training texts are analysed into n-grams once (fit then transform analysed
            # them twice; on long descriptions the character n-grams are most of the fit's cost)
            blocks.append(vectorizer.fit_transform(kept or [""]))
            # sklearn stores numpy int64 column indices; skops would save each as its own array (a 20k-term
            # vocabulary took 11 s to load). Plain ints are stored inline.
            vectorizer.vocabulary_ = {term: int(j) for term, j in vectorizer.vocabulary_.items()}
        self.linear_ = None
        if len(np.unique(y[has])) >= 2:
            sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)[has]
            linear = self._classifier(len(np.unique(y[has])), float(np.mean([len(t) for t in kept])))
            self.linear_ = fit_head(linear, sp.hstack(blocks, format="csr"), y[has], sw)
        self.only_class_ = self._only_class(y[has])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) probabilities in ``classes_`` order; rows without text get ``prior_``."""
        check_is_fitted(self, "classes_")
        texts = self._texts(X)
        has = np.flatnonzero([bool(t) for t in texts])
        feats = self._features([texts[i] for i in has]) if has.size and self.linear_ is not None else None
        return self._head_proba(len(texts), has, self.linear_, feats)


@register("text-model", "embed:")
def embedding_text_model(encoder: str, **kwargs: Any) -> EmbeddingClassifier:
    """``embed:<encoder>``: a frozen text encoder (``use-multilingual``, ``e5-small``, ``spacy-fr``, ``test-tiny``)
    + a head, on the joined title and description unless ``column`` says otherwise."""
    kwargs.setdefault("column", "text")
    return EmbeddingClassifier(encoder, modality="text", **kwargs)


@register("text-model", "hf:")
def hf_text_model(model_name_or_path: str, **kwargs: Any) -> Any:
    """``hf:<name-or-path>``: a fine-tuned Hugging Face encoder (see :mod:`prodcat.text.finetune`)."""
    from prodcat.text.finetune import HFTextClassifier

    return HFTextClassifier(model_name_or_path, **kwargs)
