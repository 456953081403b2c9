"""Voting over classifiers: the paper's majority vote of fusion models, and soft voting.

Tie rule of :func:`majority_vote` (used everywhere a vote is taken, including inside ``paper-mlp``):
the class with the most (weighted) votes wins; among classes tied on votes, the one with the largest summed
probability over the voters wins (when probabilities are given); a remaining tie goes to the class that comes
first in ``classes_`` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from prodcat.oof import align_proba
from prodcat.params import Options, validate_params


def majority_vote(
    votes: np.ndarray,
    *,
    n_classes: int | None = None,
    probas: np.ndarray | None = None,
    weights: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Winning class index per row.

    Parameters
    ----------
    votes : (k, n) integer class indices, one row per voter.
    probas : optional (k, n, C) voter probabilities, used only to break ties on vote counts (summed over voters,
        weighted like the votes).
    weights : optional (k,) non-negative voter weights (default 1 each).

    Returns
    -------
    (n,) int64 class indices; see the module docstring for the tie rule.
    """
    votes = np.asarray(votes, dtype=np.int64)
    if votes.ndim != 2:
        raise ValueError(f"votes must be (k voters, n rows), got shape {votes.shape}")
    k, n = votes.shape
    C = n_classes or (probas.shape[2] if probas is not None else int(votes.max()) + 1 if votes.size else 1)
    w = np.ones(k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or (w < 0).any():
        raise ValueError(f"weights must be {k} non-negative numbers")
    if votes.size and (votes.min() < 0 or votes.max() >= C):
        raise ValueError(f"vote indices must lie in [0, {C})")
    if probas is not None:
        probas = np.asarray(probas, dtype=np.float64)
        if probas.shape != (k, n, C):
            raise ValueError(f"probas must have shape {(k, n, C)}, got {probas.shape}")
    if not n:
        return np.zeros(0, dtype=np.int64)
    # Only the (at most k) classes someone voted for can win: everything is computed on them, O(k^2 n) whatever
    # the class count (a dense (n, C) tally cost several (n, C) passes at thousands of classes).
    same = votes[:, None, :] == votes[None, :, :]  # (k, k, n): voter j voted as voter i
    count = np.einsum("j,ijn->in", w, same)  # (k, n) weighted votes for voter i's class
    tied = np.isclose(count, count.max(0), rtol=0, atol=1e-9)
    if probas is not None:  # summed probability of voter i's class, over the voters j
        picked = probas[
            np.arange(k)[:, None, None], np.arange(n)[None, None, :], votes[None, :, :]
        ]  # (j, i, n)
        score = np.where(tied, np.einsum("j,jin->in", w, picked), -np.inf)
        tied = score == score.max(0)
    return np.where(tied, votes, C).min(0)  # among the best, the first class


def vote_probas(
    probas: Sequence[np.ndarray] | np.ndarray,
    *,
    voting: str = "hard",
    weights: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Combine k voters' (n, C) probabilities (same class order).

    Returns
    -------
    (pred, proba): (n,) winning class indices (``voting="hard"``: :func:`majority_vote` on each voter's argmax;
    ``"soft"``: argmax of the weighted mean) and the (n, C) weighted mean probability.
    """
    P = np.asarray(probas, dtype=np.float64)  # (k, n, C)
    if P.ndim != 3:
        raise ValueError(f"probas must be k arrays of shape (n, C), got shape {P.shape}")
    w = np.ones(len(P)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = np.tensordot(w, P, axes=1) / w.sum()  # one BLAS product over the voters
    if voting == "soft":
        return mean.argmax(1), mean
    if voting != "hard":
        raise ValueError(f"voting must be 'hard' or 'soft', got {voting!r}")
    return majority_vote(P.argmax(2), n_classes=P.shape[2], probas=P, weights=w), mean


def labels_and_proba(est: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(est.predict(X), est.predict_proba(X))`` in one pass when ``est`` offers ``predict_with_proba`` (the
    fusers whose labels come from a vote over the same forward passes), else by calling both."""
    fast = getattr(est, "predict_with_proba", None)
    if fast is not None:
        labels, proba = fast(X)
        return np.asarray(labels), proba
    return np.asarray(est.predict(X)), est.predict_proba(X)


def _is_fitted(est: Any) -> bool:
    return hasattr(est, "classes_")


class VotingEnsemble(ClassifierMixin, BaseEstimator):
    """Vote over classifiers that share an input ``X`` (e.g. fusion models of different configurations).

    Unlike scikit-learn's ``VotingClassifier`` it accepts members that are already fitted: ``fit`` refits
    (clones of) the members only when ``refit=True`` or when a member is not fitted yet.

    Parameters
    ----------
    estimators : list of ``(name, classifier)``.
    voting : ``"hard"`` (majority vote, see the module tie rule) or ``"soft"`` (mean probability).
    weights : optional per-member weights (votes and probabilities).

    Notes
    -----
    ``predict_proba`` is always the weighted mean of the members' probabilities (a proper distribution);
    with ``voting="hard"``, ``predict`` follows the vote and may differ from ``predict_proba(X).argmax(1)``.
    """

    _constraints: ClassVar[dict[str, list[Any]]] = {
        "estimators": [list, tuple],
        "voting": [Options({"hard", "soft"})],
        "weights": ["array-like", None],
        "refit": ["boolean"],
    }

    def __init__(
        self,
        estimators: Sequence[tuple[str, Any]],
        *,
        voting: str = "hard",
        weights: Sequence[float] | None = None,
        refit: bool = False,
    ) -> None:
        self.estimators = estimators
        self.voting = voting
        self.weights = weights
        self.refit = refit

    def fit(self, X: Any, y: Any, sample_weight: np.ndarray | None = None) -> VotingEnsemble:
        """Fit the members that need it (see class docstring); ``classes_`` = union of members' classes."""
        self.check_params()
        fitted = []
        for name, est in self.estimators:
            if self.refit or not _is_fitted(est):
                est = clone(est)
                kw = {} if sample_weight is None else {"sample_weight": sample_weight}
                est.fit(X, y, **kw)
            fitted.append((name, est))
        self.named_estimators_ = dict(fitted)
        self.estimators_ = [e for _, e in fitted]
        self._set_classes()
        n_features = {getattr(e, "n_features_in_", None) for e in self.estimators_}
        if len(n_features) == 1 and None not in n_features:  # members on a 2-D array: say its width
            self.n_features_in_ = n_features.pop()
        return self

    def adapt_to_labels(self, y: Any) -> list[str]:
        """Each member's ``adapt_to_labels(y)`` (members that have one adapt their settings to a small training
        set); returns the changes in words, prefixed by the member's name."""
        notes = []
        for name, est in self.estimators:
            adapt = getattr(est, "adapt_to_labels", None)
            notes += [f"member {name!r}: {note}" for note in (adapt(y) if callable(adapt) else [])]
        return notes

    def check_params(self) -> None:
        """Check the ensemble's parameters and each member's (``check_params`` where a member has one) without
        fitting; a ``ValueError`` names the parameter and, for a member, the member."""
        validate_params(self, self._constraints)
        if not self.estimators:
            raise ValueError("VotingEnsemble needs at least one estimator")
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=np.float64)
            if w.shape != (len(self.estimators),) or not np.isfinite(w).all() or (w < 0).any():
                raise ValueError(
                    f"weights must be {len(self.estimators)} non-negative numbers (one per member), "
                    f"got {self.weights!r}"
                )
        for name, est in self.estimators:
            check = getattr(est, "check_params", None)
            if not callable(check):
                continue
            try:
                check()
            except ValueError as e:
                raise ValueError(f"member {name!r}: {e}") from e

    def _set_classes(self) -> None:
        first = self.estimators_[0].classes_
        extra = [c for e in self.estimators_[1:] for c in e.classes_ if c not in set(first.tolist())]
        self.classes_ = np.concatenate([first, np.unique(np.asarray(extra))]) if extra else np.asarray(first)

    def _member_probas(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "estimators_")
        return np.stack(
            [align_proba(e.predict_proba(X), e.classes_, self.classes_) for e in self.estimators_]
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, C) weighted mean of member probabilities in ``classes_`` order."""
        return vote_probas(self._member_probas(X), voting="soft", weights=self.weights)[1]

    def predict(self, X: Any) -> np.ndarray:
        """(n,) labels: majority vote of the members' own ``predict`` (``voting="hard"``; a ``paper-mlp``
        member thus votes with its internal vote) or argmax of the mean probability (``"soft"``)."""
        return self.predict_with_proba(X)[0]

    def predict_with_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(predict(X), predict_proba(X))`` with each member run once."""
        check_is_fitted(self, "estimators_")
        if self.voting == "soft":
            P = self._member_probas(X)
            win, proba = vote_probas(P, voting="soft", weights=self.weights)
            return self.classes_[win], proba
        pos = {c: i for i, c in enumerate(self.classes_.tolist())}
        votes, probas = [], []
        for e in self.estimators_:
            labels, proba = labels_and_proba(e, X)
            votes.append(np.fromiter((pos[v] for v in labels.tolist()), np.int64, count=len(labels)))
            probas.append(align_proba(proba, e.classes_, self.classes_))
        P = np.stack(probas)
        win = majority_vote(np.stack(votes), n_classes=len(self.classes_), probas=P, weights=self.weights)
        return self.classes_[win], vote_probas(P, voting="soft", weights=self.weights)[1]
