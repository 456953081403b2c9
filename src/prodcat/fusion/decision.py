"""Decision-level (late) fusion: classifiers whose input is the concatenated class probabilities of m models.

``X`` has shape ``(n, m * C [+ n_extra])``: model 0's C probabilities, then model 1's, ..., every block in the
order of ``classes_``, then ``n_extra`` optional trailing columns (e.g. image-available flags). The block structure
is given by ``n_models`` or inferred as ``(n_features - n_extra) / C`` with ``C = len(classes_)``; ``classes``
fixes the column class order when it is not ``np.unique(y)`` (e.g. the order of a model-outputs ``classes.json``,
or when a class is missing from the fusion training set).

This module holds the shared base class and the two closed-form-ish fusers, ``mean`` and ``logistic``;
``paper-mlp`` lives in :mod:`prodcat.fusion.paper_mlp` and ``gbdt`` in :mod:`prodcat.fusion.gbdt`.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from prodcat.evaluate import macro_f1
from prodcat.params import Interval, Options, validate_params
from prodcat.probability import check_probabilities, clipped_log

_EPS = 1e-6  # probability floor before taking logs


class DecisionFusion(ClassifierMixin, BaseEstimator):
    """Base class: block bookkeeping, input checks and label coding for the decision-level fusers.

    Subclasses define ``__init__`` with (at least) ``classes``, ``n_models`` and ``n_extra``, implement
    ``_fit(X, codes, sample_weight)`` and ``_proba(X)``, and ``_fitted_state`` / ``_restore_state`` for saving.
    """

    classes: Sequence[Any] | None
    n_models: int | None
    n_extra: int

    # scikit-learn's parameter validation: type and range of each constructor argument (subclasses extend it).
    _constraints: ClassVar[dict[str, list[Any]]] = {
        "classes": ["array-like", None],
        "n_models": [Interval(Integral, 1, None, closed="left"), None],
        "n_extra": [Interval(Integral, 0, None, closed="left")],
    }

    def check_params(self) -> None:
        """Check the parameters without fitting: types and ranges (:func:`prodcat.params.validate_params`, a
        ``ValueError`` naming the parameter), then the checks across parameters. ``fit`` runs it first; the
        training pipeline runs it before any model is trained."""
        validate_params(self, self._constraints)
        self._check_params()

    def _setup(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Check inputs, set ``classes_``, ``n_models_``, ``n_extra_``, ``n_features_in_``; return
        (X float64 (n, d), y as integer codes into ``classes_``)."""
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        X = np.asarray(X, dtype=np.float64)
        y = column_or_1d(y, warn=True)  # a (n, 1) column is taken, with scikit-learn's warning
        if self.classes is None:
            check_classification_targets(y)  # a continuous target is an error, not thousands of classes
        if X.ndim != 2 or len(X) != len(y) or len(y) == 0:
            raise ValueError(f"need X (n, d) and y (n,) with n > 0, got {X.shape} and {y.shape}")
        self.classes_ = np.unique(y) if self.classes is None else np.asarray(list(self.classes))
        if len(np.unique(self.classes_)) != len(self.classes_):
            raise ValueError("`classes` has duplicates")
        pos = {c: i for i, c in enumerate(self.classes_.tolist())}
        unknown = sorted({str(v) for v in y.tolist() if v not in pos})
        if unknown:
            raise ValueError(f"y holds labels not in `classes`: {unknown[:5]} (compare types: str vs int?)")
        codes = np.fromiter((pos[v] for v in y.tolist()), dtype=np.int64, count=len(y))
        C, d, extra = len(self.classes_), X.shape[1], self.n_extra or 0
        if self.n_models is not None:
            m = int(self.n_models)
            if m < 1 or m * C + extra != d:
                raise ValueError(
                    f"X has {d} columns but n_models={m} x {C} classes + n_extra={extra} = {m * C + extra}"
                )
        else:
            if (d - extra) % C or d - extra <= 0:
                raise ValueError(
                    f"cannot split X's {d} columns (minus n_extra={extra}) into blocks of {C} classes; "
                    "pass `classes` (the input column classes) or `n_models`"
                )
            m = (d - extra) // C
        self.n_models_, self.n_extra_, self.n_features_in_ = m, extra, d
        for k in range(m):
            check_probabilities(X[:, k * C : (k + 1) * C], name=f"X block {k} (model {k})")
        return X, codes

    def _check_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "classes_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has shape {X.shape}; this fuser was fitted on {self.n_models_} models x "
                f"{len(self.classes_)} classes + {self.n_extra_} extra = {self.n_features_in_} columns"
            )
        C = len(self.classes_)
        for k in range(self.n_models_):
            check_probabilities(X[:, k * C : (k + 1) * C], name=f"X block {k} (model {k})")
        return X

    def _blocks(self, X: np.ndarray) -> np.ndarray:
        """(n, m, C) view of the probability columns."""
        C = len(self.classes_)
        return X[:, : self.n_models_ * C].reshape(len(X), self.n_models_, C)

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> DecisionFusion:
        """Fit on ``X`` (n, m*C [+ n_extra]) probabilities and labels ``y`` (n,). Returns self."""
        self.check_params()
        X, codes = self._setup(X, y)
        self._fit(X, codes, _sample_weight(sample_weight, len(X)))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) fused probabilities in ``classes_`` order, rows summing to 1."""
        return self._proba(self._check_X(X))

    def predict(self, X: Any) -> np.ndarray:
        """(n,) labels from ``classes_`` (argmax of ``predict_proba`` unless a subclass votes)."""
        return self.classes_[self.predict_proba(X).argmax(1)]

    def predict_with_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(predict(X), predict_proba(X))``; one forward pass when the labels are the argmax."""
        P = self.predict_proba(X)
        if type(self).predict is DecisionFusion.predict:
            return self.classes_[P.argmax(1)], P
        return np.asarray(self.predict(X)), P  # a subclass with its own rule (e.g. a vote) keeps it

    # Subclass hooks -------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        """Checks across parameters, beyond ``_constraints`` (none by default)."""

    def _fit(self, X: np.ndarray, codes: np.ndarray, sample_weight: np.ndarray | None) -> None:
        raise NotImplementedError

    def _proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able info, named arrays) of the learned state beyond the base attributes."""
        raise NotImplementedError

    def _restore_state(self, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


def softmax_rows_(z: np.ndarray) -> np.ndarray:
    """Softmax of each row of ``z`` (n, C) computed in place (``z`` becomes the probabilities); returns the (n,)
    log-sum-exp of the rows as they were."""
    top = z.max(axis=1, keepdims=True)
    z -= top
    np.exp(z, out=z)
    total = z.sum(axis=1, keepdims=True)
    z /= total
    return (top + np.log(total)).ravel()


def log_pool_weights(L: np.ndarray, codes: np.ndarray, sw: np.ndarray) -> np.ndarray:
    """(m,) non-negative weights ``w`` minimising the ``sw``-weighted log-loss (``sw`` sums to 1) of
    ``softmax(sum_k w_k L[:, k])`` on class codes ``codes``; ``L`` (n, m, C) the models' log-probabilities.
    One (n, C) work array whatever the iteration (thousands of classes, issue 16)."""
    n, m, _ = L.shape
    rows = np.arange(n)
    Ly = L[rows, :, codes]  # (n, m) log-prob each model gives the true class

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.einsum("nmc,m->nc", L, w)
        picked = z[rows, codes]
        nll = float(sw @ (softmax_rows_(z) - picked))  # z now holds the probabilities
        grad = -(sw @ (Ly - np.einsum("nmc,nc->nm", L, z)))
        return nll, grad

    res = minimize(loss, np.full(m, 1.0 / m), jac=True, method="L-BFGS-B", bounds=[(0, None)] * m)
    return np.asarray(res.x)


def _sample_weight(sample_weight: Any, n: int) -> np.ndarray | None:
    """``sample_weight`` as float64 (n,), or None; refuses a wrong shape, negative or non-finite values and all
    zeros (nothing to learn from), naming the parameter."""
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected ({n},)")
    if not np.isfinite(sw).all() or (sw < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    if not sw.any():
        raise ValueError("sample_weight is all zero: no row to learn from")
    return sw


class MeanFusion(DecisionFusion):
    """Weighted mean of the models' probabilities, weights fit on the (out-of-fold) fusion training set.

    Parameters
    ----------
    pooling : ``"log"`` (weighted geometric mean: softmax of ``sum_k w_k log p_k``; the weights are >= 0 and
        also act as a temperature) or ``"linear"`` (``sum_k w_k p_k`` with weights on the simplex).
    weights : ``"fit"`` (minimise log-loss, then optionally refine for macro-F1), ``"uniform"``, or m numbers.
    objective : ``"log_loss"`` or ``"macro_f1"`` (coordinate search from the log-loss optimum; non-smooth, so it
        may overfit small fusion sets).
    classes, n_models, n_extra : block structure (see module docstring); extra columns are ignored.

    Attributes
    ----------
    weights_ : (m,) the weights used.
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        **DecisionFusion._constraints,
        "pooling": [Options({"log", "linear"})],
        "weights": [Options({"fit", "uniform"}), "array-like"],
        "objective": [Options({"log_loss", "macro_f1"})],
    }

    def __init__(
        self,
        *,
        pooling: str = "log",
        weights: str | Sequence[float] = "fit",
        objective: str = "log_loss",
        classes: Sequence[Any] | None = None,
        n_models: int | None = None,
        n_extra: int = 0,
    ) -> None:
        self.pooling = pooling
        self.weights = weights
        self.objective = objective
        self.classes = classes
        self.n_models = n_models
        self.n_extra = n_extra

    def _combine(self, B: np.ndarray, w: np.ndarray) -> np.ndarray:
        if self.pooling == "log":
            return softmax(np.einsum("nmc,m->nc", clipped_log(B, _EPS, 1), w), axis=1)
        p = np.einsum("nmc,m->nc", B, w)
        return p / np.maximum(p.sum(1, keepdims=True), 1e-300)

    def _check_params(self) -> None:
        if isinstance(self.weights, str):
            return
        w = np.asarray(self.weights, dtype=np.float64)
        m = self.n_models
        if w.ndim != 1 or not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
            raise ValueError(
                f"weights must be 'fit', 'uniform' or non-negative numbers, got {self.weights!r}"
            )
        if m is not None and len(w) != m:
            raise ValueError(f"weights must be {m} numbers (one per model), got {self.weights!r}")

    def _fit(self, X: np.ndarray, codes: np.ndarray, sample_weight: np.ndarray | None) -> None:
        B, m = self._blocks(X), self.n_models_
        uniform = np.full(m, 1.0 / m)
        if isinstance(self.weights, str):
            w = uniform if self.weights == "uniform" else self._fit_log_loss(B, codes, sample_weight)
            if self.weights == "fit" and self.objective == "macro_f1":
                w = self._refine_macro_f1(B, codes, w)
        else:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (m,):
                raise ValueError(f"weights must be {m} numbers (one per model), got {self.weights!r}")
            if self.pooling == "linear":
                w = w / w.sum()
        self.weights_ = w

    def _fit_log_loss(self, B: np.ndarray, codes: np.ndarray, sw: np.ndarray | None) -> np.ndarray:
        n, m, _ = B.shape
        sw = np.ones(n) / n if sw is None else sw / sw.sum()
        rows = np.arange(n)
        if self.pooling == "log":
            return log_pool_weights(clipped_log(B, _EPS, 1), codes, sw)
        Py = B[rows, :, codes]  # (n, m)

        def loss_lin(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = softmax(theta)
            py = np.maximum(Py @ w, 1e-300)
            g = -(sw @ (Py / py[:, None]))  # d nll / d w
            return float(-(sw @ np.log(py))), w * (g - w @ g)

        res = minimize(loss_lin, np.zeros(m), jac=True, method="L-BFGS-B")
        return np.asarray(softmax(res.x))

    def _refine_macro_f1(self, B: np.ndarray, codes: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Greedy coordinate search over multiplicative changes of one weight at a time (3 rounds)."""

        def score(v: np.ndarray) -> float:
            return macro_f1(codes, self._combine(B, v).argmax(1))

        best, best_w = score(w), w.copy()
        for _ in range(3):
            improved = False
            for k in range(len(w)):
                for f in (0.0, 0.5, 0.75, 0.9, 1.1, 1.33, 2.0):
                    v = best_w.copy()
                    v[k] *= f
                    if v.sum() <= 0:
                        continue
                    v = v / v.sum() if self.pooling == "linear" else v
                    s = score(v)
                    if s > best + 1e-9:
                        best, best_w, improved = s, v, True
            if not improved:
                break
        return best_w

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return self._combine(self._blocks(X), self.weights_)

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"weights_": self.weights_.tolist()}, {}

    def _restore_state(self, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.weights_ = np.asarray(info["weights_"], dtype=np.float64)


class LogisticFusion(DecisionFusion):
    """Logistic-regression stacking (multinomial, L2) on the probabilities or their logs.

    ``coef_`` / ``intercept_`` apply to the raw features (``p`` or ``log(max(p, 1e-6))``, then the extra columns);
    with ``standardize`` the solver sees z-scored features and the scaling is folded back into them.

    Parameters
    ----------
    features : ``"proba"`` or ``"log"``.
    C : inverse L2 strength (scikit-learn's ``C``), on the features as the solver sees them.
    standardize : z-score features for the solver (default: only for ``features="log"``, whose scale is
        unbounded; probabilities already live in [0, 1], and on split_a_val z-scoring them was slower and no
        better).
    max_iter, tol : solver limits.

    Attributes
    ----------
    coef_ : (C, d) and intercept_ : (C,) in ``classes_`` order (classes absent from y get -1e9 intercepts).
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        **DecisionFusion._constraints,
        "features": [Options({"proba", "log"})],
        "C": [Interval(Real, 0, None, closed="neither")],
        "standardize": ["boolean", None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        *,
        features: str = "proba",
        C: float = 1.0,
        standardize: bool | None = None,
        max_iter: int = 500,
        tol: float = 1e-4,
        classes: Sequence[Any] | None = None,
        n_models: int | None = None,
        n_extra: int = 0,
    ) -> None:
        self.features = features
        self.C = C
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.classes = classes
        self.n_models = n_models
        self.n_extra = n_extra

    def _features(self, X: np.ndarray) -> np.ndarray:
        if self.features == "proba":
            return X
        k = self.n_models_ * len(self.classes_)
        return np.hstack([clipped_log(X[:, :k], _EPS, 1), X[:, k:]])

    def _fit(self, X: np.ndarray, codes: np.ndarray, sample_weight: np.ndarray | None) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        F = self._features(X)
        standardize = self.features == "log" if self.standardize is None else self.standardize
        mu, sd = (F.mean(0), F.std(0)) if standardize else (np.zeros(F.shape[1]), np.ones(F.shape[1]))
        sd = np.where(sd > 1e-12, sd, 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr = LogisticRegression(C=self.C, max_iter=self.max_iter, tol=self.tol)
            lr.fit((F - mu) / sd, codes, sample_weight=sample_weight)
        coef, icpt = lr.coef_ / sd, lr.intercept_ - (lr.coef_ / sd) @ mu
        if coef.shape[0] == 1:  # binary: sigmoid(z) == softmax([0, z])
            coef, icpt = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, icpt[0]])
        self.coef_ = np.zeros((len(self.classes_), F.shape[1]))
        self.intercept_ = np.full(len(self.classes_), -1e9)
        self.coef_[lr.classes_] = coef
        self.intercept_[lr.classes_] = icpt

    def _proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self._features(X) @ self.coef_.T + self.intercept_, axis=1)

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"coef_": self.coef_, "intercept_": self.intercept_}

    def _restore_state(self, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.coef_ = np.asarray(arrays["coef_"], dtype=np.float64)
        self.intercept_ = np.asarray(arrays["intercept_"], dtype=np.float64)
