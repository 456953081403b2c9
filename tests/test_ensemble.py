"""Majority / soft voting: tie rules, weights, members already fitted or not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from prodcat.ensemble import VotingEnsemble, majority_vote, vote_probas
from prodcat.fusion import LogisticFusion, MeanFusion, from_state, get_state
from prodcat.registry import create


def test_majority_wins() -> None:
    votes = np.array([[0, 1, 2], [0, 2, 2], [1, 2, 0]])  # 3 voters x 3 rows
    np.testing.assert_array_equal(majority_vote(votes, n_classes=3), [0, 2, 2])


def test_tie_is_broken_by_summed_probability() -> None:
    votes = np.array([[0], [1]])  # one vote each for class 0 and class 1
    probas = np.array([[[0.5, 0.4, 0.1]], [[0.05, 0.9, 0.05]]])  # summed: 0.55 vs 1.3
    assert majority_vote(votes, probas=probas)[0] == 1


def test_tie_without_probabilities_goes_to_the_first_class() -> None:
    votes = np.array([[2, 3], [1, 0]])
    np.testing.assert_array_equal(majority_vote(votes, n_classes=4), [1, 0])


def test_probability_only_breaks_ties_never_overrules_votes() -> None:
    votes = np.array([[0], [0], [1]])
    probas = np.array([[[0.51, 0.49]], [[0.51, 0.49]], [[0.0, 1.0]]])  # class 1 has the larger sum
    assert majority_vote(votes, probas=probas)[0] == 0


def test_weights_change_the_vote() -> None:
    votes = np.array([[0], [1], [1]])
    assert majority_vote(votes, n_classes=2)[0] == 1
    assert majority_vote(votes, n_classes=2, weights=[3, 1, 1])[0] == 0


def _dense_vote(votes: np.ndarray, C: int, probas: np.ndarray | None, w: np.ndarray) -> np.ndarray:
    """The rule written out over every class: weighted tally, classes within 1e-9 of the top count tie, the
    largest summed probability among them wins, then the first class."""
    n = votes.shape[1]
    counts = np.zeros((n, C))
    for j in range(len(votes)):
        counts[np.arange(n), votes[j]] += w[j]
    tied = np.abs(counts - counts.max(1, keepdims=True)) <= 1e-9
    if probas is None:
        return tied.argmax(1)
    return np.where(tied, np.einsum("k,knc->nc", w, probas), -np.inf).argmax(1)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 6),
    n=st.integers(1, 30),
    C=st.integers(1, 8),
    seed=st.integers(0, 2**16),
    with_probas=st.booleans(),
    weighted=st.booleans(),
)
def test_majority_vote_matches_the_rule_over_every_class(
    k: int, n: int, C: int, seed: int, with_probas: bool, weighted: bool
) -> None:
    """The vote looks only at the classes someone voted for; it must pick what the rule over all C classes picks
    (few classes and voters: many ties, equal weights and equal probability sums included)."""
    rng = np.random.default_rng(seed)
    votes = rng.integers(0, C, size=(k, n))
    w = rng.choice([0.5, 1.0, 2.0], size=k) if weighted else np.ones(k)
    probas = None
    if with_probas:
        probas = rng.choice([0.0, 0.25, 0.5], size=(k, n, C))  # coarse values: equal sums happen
    got = majority_vote(votes, n_classes=C, probas=probas, weights=w)
    np.testing.assert_array_equal(got, _dense_vote(votes, C, probas, w))


def test_vote_errors() -> None:
    with pytest.raises(ValueError, match="k voters"):
        majority_vote(np.array([0, 1]))
    with pytest.raises(ValueError, match="lie in"):
        majority_vote(np.array([[0, 5]]), n_classes=3)
    with pytest.raises(ValueError, match="shape"):
        majority_vote(np.array([[0, 1]]), probas=np.ones((1, 3, 2)) / 2)
    with pytest.raises(ValueError, match="hard"):
        vote_probas(np.ones((2, 3, 2)) / 2, voting="median")


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 7), st.integers(1, 20), st.integers(2, 5), st.integers(0, 10_000))
def test_winner_always_has_the_most_votes(k: int, n: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    probas = rng.dirichlet(np.ones(c), size=(k, n))
    votes = probas.argmax(2)
    win = majority_vote(votes, probas=probas)
    counts = np.stack([(votes == j).sum(0) for j in range(c)], 1)  # (n, c)
    assert (counts[np.arange(n), win] == counts.max(1)).all()
    if k == 1:
        np.testing.assert_array_equal(win, votes[0])


def test_soft_vote_is_argmax_of_weighted_mean() -> None:
    P = np.array([[[0.6, 0.4]], [[0.0, 1.0]]])
    pred, mean = vote_probas(P, voting="soft", weights=[3, 1])
    np.testing.assert_allclose(mean, [[0.45, 0.55]])
    assert pred[0] == 1
    assert vote_probas(P, voting="hard")[0][0] == 1  # 1-1 tie, broken by summed probability


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    z = rng.normal(size=(300, 3))
    z[np.arange(300), y] += 2.5
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    q = rng.dirichlet(np.ones(3), 300)
    return np.hstack([p, q]), y


def test_voting_ensemble_prefit_members_are_kept() -> None:
    X, y = _data()
    a = MeanFusion().fit(X, y)
    b = LogisticFusion().fit(X, y)
    ens = VotingEnsemble([("mean", a), ("logistic", b)]).fit(X, y)
    assert ens.estimators_[0] is a and ens.estimators_[1] is b
    np.testing.assert_allclose(ens.predict_proba(X), (a.predict_proba(X) + b.predict_proba(X)) / 2)
    assert np.mean(ens.predict(X) == y) > 0.85


def test_voting_ensemble_fits_unfitted_members_and_aligns_classes() -> None:
    X, y = _data()
    labels = np.array(["x", "y", "z"])[y]
    ens = VotingEnsemble([("lr", LogisticRegression(max_iter=200)), ("mean", MeanFusion())], voting="soft")
    ens.fit(X, labels)
    assert list(ens.classes_) == ["x", "y", "z"]
    np.testing.assert_allclose(ens.predict_proba(X).sum(1), 1.0)
    assert set(ens.predict(X)) <= {"x", "y", "z"}
    with pytest.raises(ValueError, match="at least one"):
        VotingEnsemble([]).fit(X, y)


def test_hard_voting_uses_the_members_own_predict() -> None:
    class Stubborn(LogisticFusion):
        def predict(self, X: np.ndarray) -> np.ndarray:
            return np.full(len(X), self.classes_[0])

    X, y = _data()
    members = [(f"s{i}", Stubborn().fit(X, y)) for i in range(2)] + [("m", MeanFusion().fit(X, y))]
    ens = VotingEnsemble(members).fit(X, y)
    assert (ens.predict(X) == 0).all()  # two stubborn votes beat one honest vote


def test_registered_ensemble_round_trips() -> None:
    X, y = _data()
    ens = create("fusion", "ensemble", members="mean+logistic[C=0.5]+mean[pooling=linear]", n_models=2)
    ens.fit(X, y)
    assert [name for name, _ in ens.estimators] == ["0:mean", "1:logistic[C=0.5]", "2:mean[pooling=linear]"]
    assert ens.estimators_[1].C == 0.5
    back = from_state(*get_state(ens))
    np.testing.assert_allclose(back.predict_proba(X), ens.predict_proba(X))
    np.testing.assert_array_equal(back.predict(X), ens.predict(X))


def test_predict_with_proba_runs_each_member_once_and_matches_separate_calls() -> None:
    """Prediction wants labels and probabilities; hard voting used to run every member's forward pass 3 times."""
    calls = {"n": 0}

    class Counting(LogisticFusion):
        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            calls["n"] += 1
            return super().predict_proba(X)

    X, y = _data()
    paper = create("fusion", "paper-mlp-tiny", n_models=2).fit(X, y)
    members = [("c", Counting().fit(X, y)), ("p", paper), ("m", MeanFusion().fit(X, y))]
    ens = VotingEnsemble(members).fit(X, y)
    calls["n"] = 0
    labels, proba = ens.predict_with_proba(X)
    assert calls["n"] == 1
    np.testing.assert_array_equal(labels, ens.predict(X))
    np.testing.assert_allclose(proba, ens.predict_proba(X))
    p_labels, p_proba = paper.predict_with_proba(X)
    np.testing.assert_array_equal(p_labels, paper.predict(X))
    np.testing.assert_allclose(p_proba, paper.predict_proba(X))
