"""``log-linear``: a weight per model and class on the models' log-probabilities, the fuser for many classes.

``p(c | x) = softmax_c(sum_k a[k, c] log p_k(c | x) + b[c])``: ``mean``'s log pooling (one weight per model) given
one weight per model *and class* plus a class bias, ``m*C + C`` parameters. A pass over the data costs ``n*m*C``,
like ``mean``'s, where ``logistic`` and ``paper-mlp`` learn an ``(m*C, C)`` matrix (``C^2``) and ``gbdt`` a tree per
class per round. It starts from ``mean``'s fitted weights (``a[k, c] = w_k``, ``b = 0``) and is pulled towards
them by an L2 penalty, so a class with few rows keeps ``mean``'s pooling. At 327 fashion leaves it beat ``mean``
alone (cross-validated macro-F1 0.808 vs 0.789, held-out 0.800 vs 0.787; docs/bench/classes.md): the default
ensemble uses it above 100 classes (:data:`prodcat.fusion.CLASS_RANGES`).

Memory: the log-probabilities ``(n, m, C)`` and two ``(n, C)`` work arrays, whatever the solver's iteration.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np

from prodcat.fusion.decision import _EPS, DecisionFusion, log_pool_weights, softmax_rows_
from prodcat.params import Interval
from prodcat.probability import clipped_log


class LogLinearFusion(DecisionFusion):
    """Per-class log-linear pooling of m models' probabilities (see the module docstring).

    Parameters
    ----------
    alpha : L2 strength pulling the weights towards ``mean``'s (and the biases towards 0), on the mean
        log-loss; larger keeps the fuser closer to ``mean``.
    max_iter : most L-BFGS iterations.
    classes, n_models, n_extra : block structure (:class:`~prodcat.fusion.decision.DecisionFusion`); extra
        columns are ignored.

    Attributes
    ----------
    coef_ : (m, C) weight of each model's log-probability per class; intercept_ : (C,) class biases;
    start_weights_ : (m,) ``mean``'s weights the fit started from; n_iter_ : solver iterations.
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        **DecisionFusion._constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        alpha: float = 1e-3,
        max_iter: int = 300,
        classes: Sequence[Any] | None = None,
        n_models: int | None = None,
        n_extra: int = 0,
    ) -> None:
        self.alpha = alpha
        self.max_iter = max_iter
        self.classes = classes
        self.n_models = n_models
        self.n_extra = n_extra

    def _fit(self, X: np.ndarray, codes: np.ndarray, sample_weight: np.ndarray | None) -> None:
        from scipy.optimize import minimize

        n, m, C = len(X), self.n_models_, len(self.classes_)
        L = clipped_log(self._blocks(X), _EPS, 1)  # (n, m, C)
        sw = np.full(n, 1.0 / n) if sample_weight is None else sample_weight / sample_weight.sum()
        w0 = log_pool_weights(L, codes, sw)
        start = np.concatenate([np.repeat(w0, C), np.zeros(C)])
        rows = np.arange(n)
        z, tmp = np.empty((n, C)), np.empty((n, C))  # reused by every evaluation

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            a, b = theta[: m * C].reshape(m, C), theta[m * C :]
            z[:] = b
            for k in range(m):
                np.add(z, np.multiply(L[:, k, :], a[k], out=tmp), out=z)
            picked = z[rows, codes]
            nll = float(sw @ (softmax_rows_(z) - picked))  # z now holds the probabilities
            z[rows, codes] -= 1.0
            np.multiply(z, sw[:, None], out=z)  # d loss / d logits
            grad_a = np.stack([np.einsum("nc,nc->c", L[:, k, :], z) for k in range(m)])
            d = theta - start
            grad = np.concatenate([grad_a.ravel(), z.sum(axis=0)]) + self.alpha * d
            return nll + 0.5 * self.alpha * float(d @ d), grad

        res = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        self.coef_ = res.x[: m * C].reshape(m, C).copy()
        self.intercept_ = res.x[m * C :].copy()
        self.start_weights_ = w0
        self.n_iter_ = int(res.nit)

    def _proba(self, X: np.ndarray) -> np.ndarray:
        B = self._blocks(X)
        z = np.empty((len(X), len(self.classes_)))
        z[:] = self.intercept_
        for k in range(self.n_models_):
            z += clipped_log(B[:, k, :], _EPS, 1) * self.coef_[k]
        softmax_rows_(z)
        return z

    def _fitted_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        info = {"start_weights_": self.start_weights_.tolist(), "n_iter_": self.n_iter_}
        return info, {"coef_": self.coef_, "intercept_": self.intercept_}

    def _restore_state(self, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        coef = np.asarray(arrays["coef_"], dtype=np.float64)
        intercept = np.asarray(arrays["intercept_"], dtype=np.float64)
        C = len(self.classes_)
        if coef.shape != (self.n_models_, C) or intercept.shape != (C,):
            raise ValueError(
                f"log-linear state: coef_ {coef.shape} / intercept_ {intercept.shape} do not fit "
                f"{self.n_models_} models x {C} classes"
            )
        self.coef_, self.intercept_ = coef, intercept
        self.start_weights_ = np.asarray(info["start_weights_"], dtype=np.float64)
        self.n_iter_ = int(info["n_iter_"])
