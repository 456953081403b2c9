"""Shared model pieces: the embedder protocol, class priors, heads, and ``EmbeddingClassifier``.

``EmbeddingClassifier`` is "frozen backbone + trained head" for either modality: it embeds one or more catalog
columns with a registered embedder (through the on-disk cache of :mod:`prodcat.cache`) and fits a small head
(logistic regression or an MLP) on the vectors. It follows the sklearn classifier contract, so
:func:`prodcat.oof.oof_predict_proba`, pipelines and stacking take it as is.

Missing modality: a row whose item is missing (empty text, no image, or an image the embedder cannot decode)
is not used to train the head and is predicted as the class prior of the training labels.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from numbers import Integral
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from prodcat import registry
from prodcat.cache import cached_embed
from prodcat.clean import clean_text, join_texts
from prodcat.missing import MissingModalityMixin
from prodcat.params import Interval, validate_params
from prodcat.photos import embed_photos, photo_lists


@runtime_checkable
class Embedder(Protocol):
    """A frozen backbone: ``embed(items) -> (n, dim) float32`` (image embedders may return ``(vectors, ok)``).

    ``fingerprint`` (optional, defaults to ``name``) identifies everything that changes the outputs; it keys the
    embedding cache. ``adapt(items) -> dict`` (optional) settles data-dependent settings from the training items
    before they are embedded and returns the factory arguments that rebuild the adapted embedder.
    """

    name: str
    dim: int

    def embed(self, items: Sequence[Any]) -> Any: ...


#: Above this many classes the ``auto`` head is shrinkage LDA instead of logistic regression: the solver's cost
#: per iteration grows with the class count, LDA's closed form does not (docs/bench/classes.md).
LOGREG_MAX_CLASSES = 100


def make_head(
    head: str | BaseEstimator,
    head_params: dict[str, Any] | None,
    *,
    random_state: int | None,
    n_rows: int = 0,
    n_classes: int = 0,
) -> Any:
    """A fresh head estimator: ``"auto"``, ``"logreg"``, ``"lda"``, ``"mlp"`` or a clone of an sklearn classifier.

    ``head_params`` set parameters of the final step (e.g. ``{"C": 4.0}`` or ``{"hidden_layer_sizes": (128,)}``).
    Embeddings are standardised first: the backbones' L2-normalised vectors have tiny per-dimension scales.
    The MLP stops early on a 10% validation split only when ``n_rows`` (training rows) is at least 1,000.
    ``"auto"`` is ``"logreg"`` up to :data:`LOGREG_MAX_CLASSES` classes (``n_classes``) and ``"lda"``
    (:class:`~prodcat.heads.SharedCovarianceClassifier`) above, given only the ``head_params`` it accepts.
    """
    from prodcat.heads import SharedCovarianceClassifier

    params = dict(head_params or {})
    if head == "auto":
        head = "lda" if n_classes > LOGREG_MAX_CLASSES else "logreg"
        if head == "lda":
            params = {k: v for k, v in params.items() if k in SharedCovarianceClassifier().get_params()}
    if isinstance(head, str):
        if head == "lda":
            final: Any = SharedCovarianceClassifier(random_state=random_state)
        elif head == "logreg":
            final = LogisticRegression(C=0.1, max_iter=2000, random_state=random_state)
        elif head == "mlp":
            final = MLPClassifier(
                hidden_layer_sizes=(256,),
                alpha=1e-3,
                early_stopping=n_rows >= 1000,
                n_iter_no_change=8,
                max_iter=200,
                random_state=random_state,
            )
        else:
            raise ValueError(
                f"unknown head {head!r}; use 'auto', 'logreg', 'lda', 'mlp' or an sklearn classifier"
            )
    else:
        final = clone(head)
    final.set_params(**params)
    return make_pipeline(StandardScaler(), final)


#: BLAS threads while a head (or tfidf's linear model) fits. Two OpenBLAS threads waiting on each other at every
#: step of L-BFGS made the USE head's fits cost ~14x the CPU of one thread for the same model on the shared 2-core
#: machine (Rakuten texts, 5 folds: 70.7 vs 5.0 CPU s, same macro-F1; docs/bench/text.md, "Training time").
HEAD_BLAS_THREADS = 1


def fit_head(head: Any, Z: Any, y: np.ndarray, sample_weight: np.ndarray | None) -> Any:
    """Fit ``head`` (a Pipeline or a classifier) with ``sample_weight`` routed to its final step, on
    :data:`HEAD_BLAS_THREADS` BLAS threads."""
    from threadpoolctl import threadpool_limits

    kwargs: dict[str, Any] = {}
    if sample_weight is not None:
        step = f"{head.steps[-1][0]}__" if isinstance(head, Pipeline) else ""
        kwargs = {f"{step}sample_weight": sample_weight}
    with threadpool_limits(limits=HEAD_BLAS_THREADS, user_api="blas"):
        return head.fit(Z, y, **kwargs)


def catalog_text(X: pd.DataFrame) -> list[str]:
    """Cleaned ``title + " - " + description`` per row (either may be absent or empty)."""
    titles = X["title"] if "title" in X else pd.Series([""] * len(X), index=X.index)
    descs = X["description"] if "description" in X else pd.Series([""] * len(X), index=X.index)
    return [join_texts(clean_text(t), clean_text(d)) for t, d in zip(titles, descs, strict=True)]


def truncate(texts: list[str], max_chars: int | None) -> list[str]:
    """``texts`` cut to their first ``max_chars`` characters (all of them for None)."""
    return texts if max_chars is None else [t[:max_chars] for t in texts]


class EmbeddingClassifier(MissingModalityMixin, ClassifierMixin, BaseEstimator):
    """Frozen embedder + trained head on one or more catalog columns.

    Parameters
    ----------
    embedder : registered name (``"use-multilingual"``, ``"e5-small"``, ``"spacy-fr"``, ``"efficientnet-lite0"``,
        ``"test-tiny"``...) or an embedder object (see :class:`Embedder`).
    column : ``"text"`` (cleaned title and description joined with " - "), any column name (``"title"``,
        ``"description"``, ``"image"``...), or a list of columns encoded separately and concatenated.
    head : ``"auto"`` (default: ``"logreg"`` up to 100 classes, ``"lda"`` above), ``"logreg"`` (standardised
        features + multinomial logistic regression, C=0.1), ``"lda"`` (shrinkage LDA with a fitted temperature,
        :mod:`prodcat.heads`: training cost flat in the class count), ``"mlp"`` (one hidden layer of 256, early
        stopping) or an sklearn classifier to clone.
    head_params : parameters of the head's final estimator.
    cache_dir : embedding cache folder, ``"auto"`` for the default (``$PRODCAT_CACHE_DIR`` or
        ``~/.cache/prodcat``), ``None`` for no caching.
    batch_size : items per embedder call.
    modality : ``"text"`` or ``"image"``; ``None`` infers it (``column="image"`` -> image, else the text
        registry is tried first).
    embedder_params : keyword arguments of the embedder factory (e.g. ``{"threads": 2}``).
    max_chars : text only: embed the first ``max_chars`` characters of each cleaned text (title first, so long
        descriptions are what is cut); None embeds whole texts. A text encoder's cost grows with the text's length
        (USE: linearly in its tokens); on the Rakuten descriptions the start carries the category
        (docs/bench/text.md, "Long descriptions").
    progress : show a progress bar while embedding.
    random_state : seed of the head.

    Attributes
    ----------
    classes_ : (C,) sorted labels. prior_ : (C,) training class prior, used for rows with a missing item.
    embedder_ : the embedder object. head_ : the fitted head, or None when fewer than two classes had items.
    embedder_adapted_ : embedder arguments settled from the training items (e.g. ``{"aspect": 0.75}`` for an image
        embedder with ``aspect="auto"``); they override ``embedder_params`` whenever the embedder is rebuilt.
    modality_ : "text" or "image".
    """

    def __init__(
        self,
        embedder: str | Any = "use-multilingual",
        *,
        column: str | Sequence[str] = "text",
        head: str | BaseEstimator = "auto",
        head_params: dict[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 256,
        modality: str | None = None,
        embedder_params: dict[str, Any] | None = None,
        max_chars: int | None = None,
        progress: bool = False,
        random_state: int | None = 0,
    ) -> None:
        self.embedder = embedder
        self.column = column
        self.head = head
        self.head_params = head_params
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.modality = modality
        self.embedder_params = embedder_params
        self.max_chars = max_chars
        self.progress = progress
        self.random_state = random_state

    # -- embedding ----------------------------------------------------------------------------------------------
    def _build_embedder(self) -> tuple[Any, str]:
        kwargs = {**(self.embedder_params or {}), **getattr(self, "embedder_adapted_", {})}
        modality = self.modality or ("image" if self.column == "image" else None)
        if not isinstance(self.embedder, str):
            return self.embedder, modality or str(getattr(self.embedder, "modality", "text"))
        if modality is not None:
            embedder = registry.create(f"{modality}-embedder", self.embedder, **kwargs)
        else:
            try:
                embedder, modality = registry.create("text-embedder", self.embedder, **kwargs), "text"
            except KeyError:
                embedder, modality = registry.create("image-embedder", self.embedder, **kwargs), "image"
        if hasattr(embedder, "progress") and "progress" not in kwargs:
            embedder.progress = False  # the embedding cache shows one bar over all batches (``progress``)
        return embedder, modality

    def _columns(self) -> list[str]:
        return [self.column] if isinstance(self.column, str) else list(self.column)

    def _items(self, X: Any, column: str) -> list[Any]:
        if not isinstance(X, pd.DataFrame):  # a bare sequence of items stands for the single column
            items = list(X)
        elif column == "text" and "text" not in X:
            return truncate(catalog_text(X), self.max_chars)
        elif column not in X:
            raise KeyError(
                f"column {column!r} not in the catalog (columns: {', '.join(map(str, X.columns))})"
            )
        else:
            items = X[column].tolist()
        if self.modality_ == "text":
            return truncate([clean_text(t) for t in items], self.max_chars)
        return [None if isinstance(it, float) and np.isnan(it) else it for it in items]

    def backbone(self) -> Any:
        """The embedder object, built from ``embedder`` and ``embedder_params`` on first call (weights load
        lazily, on the first ``embed``). Its ``fingerprint`` is recorded in model bundles and checked on load."""
        if not hasattr(self, "embedder_"):
            self.embedder_, self.modality_ = self._build_embedder()
        return self.embedder_

    def embed(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of ``X``: ``(vectors (n, dim * n_columns) float32, available (n,) bool)``.

        ``available`` is False where every column's item is missing or undecodable. Usable for feature-level
        fusion. Fitted or not, the embedder is built on first use.
        """
        self.backbone()
        parts, oks = [], []

        def embed(items: list[Any]) -> tuple[np.ndarray, np.ndarray]:
            return cached_embed(
                self.embedder_,
                items,
                modality=self.modality_,
                cache_dir=self.cache_dir,
                batch_size=self.batch_size,
                progress=self.progress,
            )

        for column in self._columns():
            if self.modality_ == "image":  # each photo once, the mean over a product's photos
                vec, ok = embed_photos(embed, photo_lists(X, column))
            else:
                vec, ok = embed(self._items(X, column))
            parts.append(vec)
            oks.append(ok)
        return np.hstack(parts), np.logical_or.reduce(oks)

    def check_params(self) -> None:
        """Raise ``ValueError`` naming the bad setting when the embedder or head cannot be built from the
        parameters. Cheap (embedders load their weights lazily): the pipeline calls it for every configured model
        before training any, so a typo fails at once instead of after the earlier models' work."""
        validate_params(self, {"max_chars": [Interval(Integral, 1, None, closed="left"), None]})
        try:
            self._build_embedder()
        except TypeError as e:  # an unknown embedder_params key
            raise ValueError(f"embedder {self.embedder!r}: {e}") from None
        try:
            make_head(self.head, self.head_params, random_state=self.random_state)
        except (TypeError, ValueError) as e:
            raise ValueError(f"head {self.head!r}: {e}") from None

    # -- sklearn contract ---------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> EmbeddingClassifier:
        """Embed ``X`` (catalog DataFrame, n rows), fit the head on rows with an item. Returns self."""
        y = np.asarray(y)
        sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.embedder_adapted_: dict[str, Any] = {}
        self.embedder_, self.modality_ = self._build_embedder()
        if callable(getattr(self.embedder_, "adapt", None)):  # e.g. the image box follows the photos' shape
            if self.embedder_ is self.embedder:  # adapt a copy: leave an embedder object passed in as it was
                self.embedder_ = copy.copy(self.embedder_)
            items = [it for column in self._columns() for it in self._items(X, column)]
            self.embedder_adapted_ = dict(self.embedder_.adapt(items))
        self._fit_prior(y, sw)
        Z, ok = self.embed(X)
        self.n_features_embedded_ = Z.shape[1]
        self.head_ = None
        seen = np.unique(y[ok])
        if len(seen) >= 2:
            head = make_head(
                self.head,
                self.head_params,
                random_state=self.random_state,
                n_rows=int(ok.sum()),
                n_classes=len(seen),
            )
            self.head_ = fit_head(head, Z[ok], y[ok], None if sw is None else sw[ok])
        # With items of one class only, that class is certain for any row with an item.
        self.only_class_ = self._only_class(seen)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) probabilities in ``classes_`` order; rows with a missing item get ``prior_``."""
        return self.predict_proba_with_mask(X)[0]

    def predict_proba_with_mask(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``predict_proba(X)`` and the ``(n,)`` bool mask of rows whose item was embedded (False: missing or
        undecodable, the row holds ``prior_``), from one embedding pass."""
        check_is_fitted(self, "classes_")
        return self.proba_from_inputs(self.model_inputs(X))

    # -- inputs shared by models on the same backbone (prodcat.folds.FoldEnsemble's members) ------------------
    def inputs_key(self) -> tuple[Any, ...]:
        """Identifies the inputs :meth:`model_inputs` computes: fitted models with equal keys embed any ``X``
        identically (same backbone fingerprint, columns, modality and text cut), so they can share one pass."""
        emb = self.backbone()
        fingerprint = getattr(emb, "fingerprint", None) or getattr(emb, "name", None) or id(emb)
        return ("embedding", str(fingerprint), tuple(self._columns()), self.modality_, self.max_chars)

    def model_inputs(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """What the head reads: ``embed(X)``, the vectors and the mask of rows with an item."""
        return self.embed(X)

    def proba_from_inputs(
        self, inputs: tuple[np.ndarray, np.ndarray], head_proba: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(proba (n, C), mask (n,))`` from :meth:`model_inputs`' output (this model's head, its prior).

        ``head_proba``: the head's probabilities on the rows with an item (``(mask.sum(), len(head_.classes_))``),
        when the caller computed them (:meth:`linear_head`); the head is not run again."""
        check_is_fitted(self, "classes_")
        Z, ok = inputs
        rows = np.flatnonzero(ok)
        if head_proba is not None and self.head_ is not None:
            return self._proba_with_prior(len(Z), rows, head_proba, self.head_.classes_), ok
        return self._head_proba(len(Z), rows, self.head_, Z[rows]), ok

    def linear_head(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The fitted head as ``(W (d, C'), b (C',))`` with ``head_.predict_proba(Z) == softmax(Z @ W + b)`` over
        ``head_.classes_`` (standardiser folded in; :func:`prodcat.heads.softmax_affine`), or None (an MLP head,
        no head). :class:`prodcat.folds.FoldEnsemble` runs its K members' heads as one matrix product with it."""
        from prodcat.heads import softmax_affine

        check_is_fitted(self, "classes_")
        dim = getattr(self.head_, "n_features_in_", None)
        return None if self.head_ is None or dim is None else softmax_affine(self.head_, int(dim))
