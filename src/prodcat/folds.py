"""The K models of an out-of-fold pass, kept and predicting together (bagging), instead of one model refit on all rows.

Why (issue 17, docs/bench/trust.md): the fusion, the calibration and the acceptance rule learn from out-of-fold
probabilities, each row scored by a model trained on (K-1)/K of the rows. A model refit on every row is more
confident on new products than those fold models were on their held-out rows, by more than it is more accurate,
so a threshold learnt on out-of-fold confidence accepted too many new products (fashion-masked: 0.971 precision
at a 0.98 target). Predicting with the average of the fold models keeps new products' probabilities on the scale
the later stages learnt from; AutoGluon's bagged models predict the same way, and the paper's fusion votes its 8
fold models.

:class:`FoldEnsemble` is an sklearn classifier: ``fit`` trains one clone of ``estimator`` per fold;
:meth:`FoldEnsemble.fit_oof` also returns the out-of-fold probabilities of the training rows (what the fusion
learns from), so the fold models cost nothing beyond the out-of-fold pass that training runs anyway (and no
refit). ``predict_proba`` is the mean of the members' probabilities. Members that compute the same inputs (an
embedding model's vectors: the same backbone on the same columns) share one computation per call
(:meth:`prodcat.models.EmbeddingClassifier.model_inputs`), so an image is embedded once, not K times; other models
(``tfidf``: its vocabulary is learnt per fold) run each member in turn.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, _num_samples, check_is_fitted, column_or_1d
from tqdm.auto import tqdm

from prodcat.oof import align_proba
from prodcat.params import Interval, validate_params
from prodcat.splits import kfold_indices


def _take(X: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a DataFrame, an array, a sparse matrix or a list (whatever the members take)."""
    from sklearn.utils import _safe_indexing

    if sp.issparse(X):  # every sparse format indexed by rows as CSR
        X = X.tocsr()
    elif not isinstance(X, list) and not hasattr(X, "iloc") and not hasattr(X, "shape"):
        X = np.asarray(X)  # other array-likes
    return _safe_indexing(X, idx)


#: Each fitted FoldEnsemble's stacked heads (:meth:`FoldEnsemble._linear_stack`), with the ids of the members they
#: were built from; an entry goes with its ensemble.
_STACKS: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], Any]] = weakref.WeakKeyDictionary()


class FoldEnsemble(ClassifierMixin, BaseEstimator):
    """One clone of ``estimator`` per stratified fold (trained on the other folds); predicts their mean.

    Parameters
    ----------
    estimator : an unfitted sklearn-style classifier (``fit`` / ``predict_proba``, ``sample_weight`` optional).
    n_splits : number of folds K (each member is trained on (K-1)/K of the rows).
    seed : seed of the fold assignment (:func:`prodcat.splits.kfold_indices`, the out-of-fold pass's folds).

    Attributes
    ----------
    estimators_ : the K fitted members, fold order. classes_ : (C,) sorted labels of the training rows.
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        "n_splits": [Interval(Integral, 2, None, closed="left")],
        "seed": [Integral],
    }

    def __init__(self, estimator: Any = None, *, n_splits: int = 5, seed: int = 42) -> None:
        self.estimator = estimator
        self.n_splits = n_splits
        self.seed = seed

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> FoldEnsemble:
        """Train the K members (``sample_weight``: training weights of the rows, each member gets its own rows')."""
        self.fit_oof(X, y, sample_weight=sample_weight, progress=False)
        return self

    def fit_oof(
        self,
        X: Any,
        y: Any,
        *,
        sample_weight: np.ndarray | None = None,
        progress: bool = True,
        desc: str = "folds",
    ) -> np.ndarray:
        """Train the K members and return the (n, C) out-of-fold probabilities of the training rows (each row's
        from the member that did not see it), in ``classes_`` order."""
        validate_params(self, self._constraints)
        if self.estimator is None:
            raise ValueError("FoldEnsemble needs an estimator")
        if y is None:
            raise ValueError("FoldEnsemble requires y to be passed, but the target y is None")
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        n = _num_samples(X)
        if n != len(y):
            raise ValueError(f"X has {n} rows and y {len(y)} labels; they must be equal")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, np.empty((n, 0)))
        self.classes_ = np.unique(y)
        oof = np.zeros((len(y), len(self.classes_)), dtype=np.float64)
        members = []
        splits = list(kfold_indices(y, n_splits=self.n_splits, seed=self.seed))
        for tr, te in tqdm(splits, desc=desc, disable=not progress, leave=False):
            member = clone(self.estimator)
            kw = {} if sample_weight is None else {"sample_weight": np.asarray(sample_weight)[tr]}
            member.fit(_take(X, tr), y[tr], **kw)
            oof[te] = align_proba(member.predict_proba(_take(X, te)), member.classes_, self.classes_)
            members.append(member)
        self.estimators_ = members
        n_features = {getattr(m, "n_features_in_", None) for m in members}
        if len(n_features) == 1 and None not in n_features:  # members on a 2-D array: say its width
            self.n_features_in_ = n_features.pop()
        return oof

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) mean of the members' probabilities in ``classes_`` order."""
        return self.predict_proba_with_mask(X)[0]

    def predict_proba_with_mask(self, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``predict_proba(X)`` and the ``(n,)`` mask of rows the members had an input for (None when the members
        do not report one); members computing the same inputs share one computation."""
        check_is_fitted(self, "estimators_")
        total: np.ndarray | None = None
        mask: np.ndarray | None = None
        for member, proba, ok in self._member_probas(X):
            proba = align_proba(proba, member.classes_, self.classes_)
            total = proba if total is None else total + proba
            if ok is not None:
                mask = ok if mask is None else mask | ok
        assert total is not None
        return total / len(self.estimators_), mask

    def _member_probas(self, X: Any) -> Iterator[tuple[Any, np.ndarray, np.ndarray | None]]:
        """``(member, proba in member.classes_ order, mask or None)`` for every member."""
        stack = self._linear_stack()
        if stack is not None:  # one input pass and one matrix product for the K heads
            W, b, bounds = stack
            inputs = self.estimators_[0].model_inputs(X)
            Z, ok = inputs
            logits = np.asarray(Z[np.flatnonzero(ok)], dtype=W.dtype) @ W
            logits += b
            for member, (lo, hi) in zip(self.estimators_, bounds, strict=True):
                head = _softmax_inplace(logits[:, lo:hi])
                yield (member, *member.proba_from_inputs(inputs, head_proba=head))
            return
        shared: dict[Any, Any] = {}
        for member in self.estimators_:
            key = member.inputs_key() if callable(getattr(member, "inputs_key", None)) else None
            if key is not None:
                if key not in shared:
                    shared[key] = member.model_inputs(X)
                yield (member, *member.proba_from_inputs(shared[key]))
            elif callable(getattr(member, "predict_proba_with_mask", None)):
                yield (member, *member.predict_proba_with_mask(X))
            else:
                yield member, member.predict_proba(X), None

    #: dtype of the stacked heads' matrix product (float32: half the memory traffic of float64; the
    #: probabilities stay within ~1e-6 of the members' own, tests/test_folds.py).
    STACK_DTYPE = np.float32

    def _linear_stack(self) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]] | None:
        """The members' heads side by side, when every member reads the same inputs (one ``inputs_key``) and has
        a linear softmax head (:meth:`prodcat.models.EmbeddingClassifier.linear_head`): ``(W (d, sum C_k), b,
        column range of each member)``; else None. Built on the first prediction of a fitted ensemble and kept
        beside it (:data:`_STACKS`), never in its ``__dict__``: prediction leaves the estimator as it was
        (scikit-learn's contract) and the bundle never holds it. The probabilities are the members' own (mean of
        their softmaxes, not a pool of their logits), so what the fusion and calibration learnt from is unchanged;
        the gain is one product of ``d x K*C`` instead of K pipelines, at thousands of classes most of a
        prediction's cost."""
        members = self.estimators_
        ids = tuple(id(m) for m in members)
        cached = _STACKS.get(self)
        if cached is not None and cached[0] == ids:
            return cached[1]
        stack = None
        keys = {m.inputs_key() if callable(getattr(m, "inputs_key", None)) else None for m in members}
        if (
            None not in keys
            and len(keys) == 1
            and all(callable(getattr(m, "linear_head", None)) for m in members)
        ):
            maps = [m.linear_head() for m in members]
            heads = [mp for mp in maps if mp is not None]
            if len(heads) == len(maps):
                edges = np.cumsum([0] + [W.shape[1] for W, _ in heads]).tolist()
                stack = (
                    np.hstack([W for W, _ in heads]).astype(self.STACK_DTYPE),
                    np.concatenate([b for _, b in heads]).astype(self.STACK_DTYPE),
                    list(itertools.pairwise(edges)),
                )
        _STACKS[self] = (ids, stack)
        return stack

    @staticmethod
    def shares_inputs(estimator: Any) -> bool:
        """Whether K members of ``estimator`` share their inputs (:meth:`~prodcat.models.EmbeddingClassifier.
        model_inputs`: K small heads on one embedding pass), so that keeping all K costs little at prediction.
        Training keeps the fold models of such models only; others (``tfidf``, whose vocabulary and weights would be
        stored, loaded and run K times; fine-tuned networks) are refit once on all rows (docs/trust.md)."""
        return all(callable(getattr(estimator, m, None)) for m in ("inputs_key", "model_inputs"))

    def predict(self, X: Any) -> np.ndarray:
        """(n,) labels of the highest mean probability."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    # -- what the rest of prodcat asks of a modality model, answered by the members ---------------------------
    #: Asked of a modality model by the bundle (the fingerprint of the frozen backbone it embeds with): answered by
    #: the first member when the members have it (they share the backbone), absent otherwise, as for the member.
    _DELEGATED = frozenset({"backbone", "backbone_fingerprint"})

    def __getattr__(self, name: str) -> Any:
        members = self.__dict__.get("estimators_")
        if name in FoldEnsemble._DELEGATED and members:
            return getattr(members[0], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__() if self.estimator is not None else None
        if inner is not None:
            tags.input_tags = inner.input_tags
        return tags


def _softmax_inplace(z: np.ndarray) -> np.ndarray:
    """Row softmax of ``z`` computed in ``z``'s own memory and dtype (a float32 view of the stacked logits: no
    float64 copy of an (n, C) block per member, about half the time of scipy's at thousands of classes)."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def set_runtime(est: Any, **params: Any) -> None:
    """Set run-time parameters (``cache_dir``, ``progress``: how a model runs, never what it predicts) on a fitted
    modality model, or on every member of a :class:`FoldEnsemble`, where it has them."""
    for member in est.estimators_ if isinstance(est, FoldEnsemble) else [est]:
        own = member.get_params(deep=False)
        member.set_params(**{k: v for k, v in params.items() if k in own})
