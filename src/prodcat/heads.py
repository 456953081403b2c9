"""A classifier head whose training cost does not grow with the class count: shrinkage LDA with a temperature.

Multinomial logistic regression costs ``n * d * C`` per solver iteration, times hundreds of iterations: at 1,000
classes on 2,000-d image features that is hours per fit. Linear discriminant analysis (Gaussian classes with one
shared covariance) has a closed form: the pooled covariance (``n * d^2``, the same for any C), one Cholesky
factorisation (``d^3``) and one solve for the class means (``d^2 * C``). Its posteriors are over-confident in
high dimension, so a temperature is fitted on a held-out tenth of the rows (log-loss), then the model is refit on
all rows. Ledoit-Wolf shrinkage of the covariance keeps it well conditioned with few rows per class.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from prodcat.params import Interval, Options, validate_params


class SharedCovarianceClassifier(ClassifierMixin, BaseEstimator):
    """Weighted shrinkage LDA: ``p(c | x) = softmax((x W + b) / T)``.

    Parameters
    ----------
    shrinkage : ``"auto"`` (Ledoit-Wolf) or a number in [0, 1] (weight of the scaled identity).
    temperature : ``"fit"`` (log-loss on a held-out ``calibration_fraction`` of the rows) or a positive number.
    calibration_fraction : rows held out to fit the temperature.
    random_state : seed of the held-out draw.

    Attributes
    ----------
    classes_ (C,), coef_ (d, C), intercept_ (C,), temperature_ (float), shrinkage_ (float).
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        "shrinkage": [Options({"auto"}), Interval(Real, 0, 1, closed="both")],
        "temperature": [Options({"fit"}), Interval(Real, 0, None, closed="neither")],
        "calibration_fraction": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        shrinkage: str | float = "auto",
        temperature: str | float = "fit",
        calibration_fraction: float = 0.1,
        random_state: int | None = 0,
    ) -> None:
        self.shrinkage = shrinkage
        self.temperature = temperature
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> SharedCovarianceClassifier:
        """Fit on ``X`` (n, d) and labels ``y`` (n,), optionally weighted. Returns self."""
        validate_params(self, self._constraints)
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if isinstance(self.temperature, str):
            rng = np.random.default_rng(self.random_state)
            held = rng.random(len(y)) < self.calibration_fraction
            if held.any() and (~held).any():
                coef, icpt, _ = self._solve(X[~held], codes[~held], w[~held])
                logits = X[held] @ coef + icpt
                self.temperature_ = _fit_temperature(logits, codes[held], w[held])
            else:
                self.temperature_ = 1.0
        else:
            self.temperature_ = float(self.temperature)
        self.coef_, self.intercept_, self.shrinkage_ = self._solve(X, codes, w)
        return self

    def _solve(self, X: np.ndarray, codes: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        from scipy.linalg import cho_factor, cho_solve
        from sklearn.covariance import ledoit_wolf_shrinkage

        C, d = len(self.classes_), X.shape[1]
        mass = np.bincount(codes, weights=w, minlength=C)  # (C,)
        sums = np.zeros((C, d))
        np.add.at(sums, codes, X * w[:, None])
        overall = sums.sum(0) / max(mass.sum(), 1e-12)
        means = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-12)[:, None], overall)  # (C, d)
        R = (X - means[codes]) * np.sqrt(w / max(w.sum(), 1e-12))[:, None]  # weighted residuals
        cov = R.T @ R  # (d, d) pooled within-class covariance
        alpha = (
            float(ledoit_wolf_shrinkage(R * np.sqrt(len(R)), assume_centered=True))
            if self.shrinkage == "auto"
            else float(self.shrinkage)
        )
        mu = np.trace(cov) / d
        cov = (1 - alpha) * cov + alpha * mu * np.eye(d) + 1e-9 * max(mu, 1e-12) * np.eye(d)
        coef = cho_solve(cho_factor(cov), means.T)  # (d, C) = cov^-1 mean_c
        prior = np.maximum(mass, 1e-12) / max(mass.sum(), 1e-12)
        icpt = -0.5 * np.einsum("cd,dc->c", means, coef) + np.log(prior)
        icpt[mass <= 0] = -1e9  # a class without weight is never predicted
        return coef, icpt, alpha

    def decision_function(self, X: Any) -> np.ndarray:
        """(n, C) tempered logits."""
        check_is_fitted(self, "coef_")
        return (np.asarray(X, dtype=np.float64) @ self.coef_ + self.intercept_) / self.temperature_

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) probabilities in ``classes_`` order."""
        return softmax(self.decision_function(X), axis=1)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(1)]


def _fit_temperature(logits: np.ndarray, codes: np.ndarray, w: np.ndarray) -> float:
    """Temperature minimising the weighted log-loss of ``softmax(logits / T)`` (searched on log T)."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(codes))

    def loss(log_t: float) -> float:
        return float(-(w * log_softmax(logits / np.exp(log_t), axis=1)[rows, codes]).sum())

    return float(np.exp(minimize_scalar(loss, bounds=(-6.0, 8.0), method="bounded").x))


class GroupedClassifier(ClassifierMixin, BaseEstimator):
    """Two stages for many classes: ``p(c | x) = p(g(c) | x) * p(c | x, g(c))``, with the classes clustered into
    about ``sqrt(C)`` groups of similar classes.

    A one-vs-rest or multinomial linear model costs ``rows x classes`` per pass. Here one model picks the group
    among ``G`` and one model per group picks the class among that group's ``~C/G`` classes from that group's rows:
    about ``rows x 2 sqrt(C)`` in all, so 1,000 classes cost ~4x 55 classes instead of ~18x, and every stage has few
    enough classes for an exact solver. Groups are a balanced spherical k-means of the classes' mean feature
    vectors (classes whose rows look alike share a group, where the second stage can tell them apart).

    Parameters
    ----------
    estimator : the classifier of every stage (cloned; default multinomial logistic regression, C=10).
    n_groups : number of groups; None for ``round(sqrt(C))``. With fewer than two groups, one model over all classes.
    max_group_size : a group holds at most this many times the average group's classes (balance).
    class_weight : ``"balanced"`` (every class weighs the same in total, in both stages), a dict, or None.
        Applied as sample weights (the estimator's own ``class_weight`` would balance groups, not classes).
    random_state : seed of the k-means.

    Attributes
    ----------
    classes_ (C,), group_of_ (C,) group of each class, group_estimator_ (fitted on group ids, None with one group),
    estimators_ (per group: fitted on its classes' codes, None when the group holds one class), columns_ (per group:
    with sparse input, the feature columns its estimator reads, those its training rows use; else None).
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        "n_groups": [Interval(Integral, 1, None, closed="left"), None],
        "max_group_size": [Interval(Real, 1, None, closed="left")],
        "class_weight": [Options({"balanced"}), dict, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator: Any = None,
        *,
        n_groups: int | None = None,
        max_group_size: float = 2.0,
        class_weight: str | dict[Any, float] | None = "balanced",
        random_state: int | None = 0,
    ) -> None:
        self.estimator = estimator
        self.n_groups = n_groups
        self.max_group_size = max_group_size
        self.class_weight = class_weight
        self.random_state = random_state

    def _stage(self) -> Any:
        from sklearn.base import clone
        from sklearn.linear_model import LogisticRegression

        if self.estimator is None:
            return LogisticRegression(C=10.0, max_iter=300, random_state=self.random_state)
        return clone(self.estimator)

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> GroupedClassifier:
        """Fit on ``X`` (n, d), dense or sparse, and labels ``y`` (n,), optionally weighted. Returns self."""
        validate_params(self, self._constraints)
        y = np.asarray(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        C = len(self.classes_)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        w = w * _class_weights(self.class_weight, self.classes_, codes, w)
        G = min(C, self.n_groups or int(np.sqrt(C) + 0.5))
        self.group_of_ = np.zeros(C, dtype=np.int64) if G < 2 else self._groups(X, codes, w, G)
        groups = self.group_of_[codes]
        self.group_estimator_ = None if G < 2 else self._stage().fit(X, groups, sample_weight=w)
        self.estimators_: list[Any] = []
        self.columns_: list[np.ndarray | None] = []  # sparse input: the features a group's rows use
        for g in range(int(self.group_of_.max()) + 1):
            rows = np.flatnonzero(groups == g)
            members = np.flatnonzero(self.group_of_ == g)
            Xg, cols = _used_columns(X[rows])
            fit = len(members) > 1 and len(np.unique(codes[rows])) > 1
            self.estimators_.append(
                self._stage().fit(Xg, codes[rows], sample_weight=w[rows]) if fit else None
            )
            self.columns_.append(cols if fit else None)
        return self

    def _groups(self, X: Any, codes: np.ndarray, w: np.ndarray, G: int) -> np.ndarray:
        """(C,) group of each class: balanced spherical k-means of the L2-normalised class mean vectors."""
        from sklearn.cluster import KMeans
        from sklearn.preprocessing import normalize

        C = len(self.classes_)
        member = sp.csr_matrix((w, (codes, np.arange(len(codes)))), shape=(C, len(codes)))
        means = normalize(member @ X)  # (C, d): direction of each class's weighted sum
        km = KMeans(n_clusters=G, n_init=1, max_iter=50, random_state=self.random_state).fit(means)
        sim = np.asarray(means @ normalize(km.cluster_centers_).T)  # (C, G) cosine to each centre
        cap = int(np.ceil(self.max_group_size * C / G))
        out, size = np.full(C, -1, dtype=np.int64), np.zeros(G, dtype=np.int64)
        for c in np.argsort(
            -sim.max(1), kind="stable"
        ):  # surest classes first, then the best group with room
            for g in np.argsort(-sim[c], kind="stable"):
                if size[g] < cap:
                    out[c], size[g] = g, size[g] + 1
                    break
        used = np.unique(out)  # renumber 0..G'-1 (k-means may leave a centre without classes)
        return np.searchsorted(used, out)

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) probabilities in ``classes_`` order."""
        check_is_fitted(self, "group_of_")
        n = X.shape[0]
        group_p = (
            np.ones((n, 1))
            if self.group_estimator_ is None
            else _columns(self.group_estimator_, X, len(self.estimators_))
        )
        out = np.zeros((n, len(self.classes_)))
        Xc = X.tocsc() if sp.issparse(X) else X  # column subsets of CSC are cheap
        for g, (est, cols) in enumerate(zip(self.estimators_, self.columns_, strict=True)):
            if est is None:  # one class in the group
                out[:, self.group_of_ == g] = group_p[:, [g]]
            else:
                out[:, est.classes_] = group_p[:, [g]] * est.predict_proba(
                    Xc if cols is None else Xc[:, cols]
                )
        return out

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]


def _used_columns(X: Any) -> tuple[Any, np.ndarray | None]:
    """Sparse ``X`` restricted to its columns with a stored value, and their indices; dense ``X`` as is, None.

    A group's rows use a small part of the vocabulary: fitting on that part keeps the solver's state (n-grams x
    classes; L-BFGS spends most of its time updating it) proportional to what the group's rows hold."""
    if not sp.issparse(X):
        return X, None
    X = X.tocsr()
    cols = np.unique(X.indices) if X.nnz else np.zeros(1, dtype=np.int64)  # a solver needs one column
    return X[:, cols], cols


def _columns(est: Any, X: Any, k: int) -> np.ndarray:
    """(n, k) ``est.predict_proba(X)`` with its integer classes spread to columns 0..k-1 (absent ones: 0)."""
    out = np.zeros((X.shape[0], k))
    out[:, est.classes_] = est.predict_proba(X)
    return out


def _class_weights(
    class_weight: str | dict[Any, float] | None, classes: np.ndarray, codes: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """(n,) weight of each row's class: ``"balanced"`` gives every class the same total weight (mean 1 over rows,
    as scikit-learn's), a dict maps class to weight (1 if absent), None gives 1."""
    if class_weight is None:
        return np.ones(len(codes))
    if isinstance(class_weight, dict):
        return np.array([float(class_weight.get(c, 1.0)) for c in classes])[codes]
    mass = np.bincount(codes, weights=w, minlength=len(classes))
    per_class = np.divide(w.sum(), len(classes) * mass, out=np.zeros(len(classes)), where=mass > 0)
    return per_class[codes]


def softmax_affine(head: Any, dim: int, *, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray] | None:
    """``(W (dim, C), b (C,))`` with ``head.predict_proba(Z) == softmax(Z @ W + b)``, or None when ``head`` is not
    of that form.

    Recognised: a fitted :class:`~sklearn.pipeline.Pipeline` of :class:`~sklearn.preprocessing.StandardScaler`
    steps ending in a :class:`~sklearn.linear_model.LogisticRegression` or a :class:`SharedCovarianceClassifier`
    (the heads of :func:`prodcat.models.make_head`), or either estimator alone; the scaler is folded into the map.
    The map is checked against ``head.predict_proba`` on a few probe rows (within ``tol``): a solver or version
    whose probabilities are not a softmax of the decision function (one-vs-rest normalisation) gives None.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [s for _, s in head.steps] if isinstance(head, Pipeline) else [head]
    *scalers, final = steps
    if not all(isinstance(s, StandardScaler) for s in scalers) or not hasattr(final, "coef_"):
        return None
    if isinstance(final, SharedCovarianceClassifier):
        W, b = final.coef_ / final.temperature_, final.intercept_ / final.temperature_
    elif isinstance(final, LogisticRegression):
        coef, icpt = np.asarray(final.coef_, dtype=np.float64), np.asarray(final.intercept_, dtype=np.float64)
        if coef.shape[0] == 1:  # binary: [1 - s(z), s(z)] = softmax([0, z])
            coef, icpt = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], icpt])
        W, b = coef.T, icpt
    else:
        return None
    W, b = np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if W.shape[0] != dim:
        return None
    for scaler in reversed(scalers):  # z = (x - mean) / scale  ->  x @ (W / scale) + (b - (mean / scale) @ W)
        scale = scaler.scale_ if scaler.with_std else np.ones(dim)
        shift = scaler.mean_ if scaler.with_mean else np.zeros(dim)
        b = b - (shift / scale) @ W
        W = W / scale[:, None]
    center = scalers[0].mean_ if scalers and scalers[0].mean_ is not None else np.zeros(dim)
    spread = scalers[0].scale_ if scalers and scalers[0].scale_ is not None else np.ones(dim)
    probe = center + spread * np.random.default_rng(0).standard_normal((4, dim))
    if not np.allclose(head.predict_proba(probe), softmax(probe @ W + b, axis=1), rtol=0, atol=tol):
        return None
    return W, b
