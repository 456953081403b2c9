"""Taxonomy: building from columns / paths, per-level probabilities, hierarchical metrics, back-off."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prodcat.taxonomy import (
    Taxonomy,
    TaxonomyError,
    back_off,
    canonical_path,
    confused_groups,
    hierarchical_prf,
    learn_thresholds,
    level_scores,
)

FRAME = pd.DataFrame(
    {
        "master": ["Footwear", "Footwear", "Footwear", "Apparel", "Apparel"],
        "sub": ["Shoes", "Shoes", "Sandal", "Topwear", "Topwear"],
        "label": ["Casual Shoes", "Sports Shoes", "Flip Flops", "Tshirts", "Shirts"],
    }
)


def _tax() -> Taxonomy:
    return Taxonomy.from_columns(FRAME, ["master", "sub"])


def test_from_columns_levels_and_paths() -> None:
    tax = _tax()
    assert tax.levels == ("master", "sub", "label")
    assert list(tax.leaves) == sorted(FRAME["label"])
    assert list(tax.ancestors(["Flip Flops", "Shirts"], "master")) == ["Footwear", "Apparel"]
    assert list(tax.nodes("sub")) == ["Sandal", "Shoes", "Topwear"]


def test_leaf_under_two_parents_names_rows() -> None:
    bad = pd.concat(
        [FRAME, pd.DataFrame({"master": ["Apparel"], "sub": ["Topwear"], "label": ["Flip Flops"]})]
    )
    with pytest.raises(TaxonomyError, match="'Flip Flops' is under 2 sub values") as e:
        Taxonomy.from_columns(bad.reset_index(drop=True), ["master", "sub"])
    assert e.value.rows == [2, 5]


def test_empty_parent_is_an_error_naming_rows() -> None:
    bad = FRAME.copy()
    bad.loc[3, "sub"] = None
    with pytest.raises(TaxonomyError, match="empty taxonomy value") as e:
        Taxonomy.from_columns(bad, ["master", "sub"])
    assert e.value.rows == [3]


def test_paths_pad_shallow_leaves_and_allow_repeated_names() -> None:
    labels = ["Men > Shoes > Boots", "Women > Shoes > Boots", "Men > Bags"]
    tax = Taxonomy.from_paths(labels, " > ")
    assert tax.levels == ("level_1", "level_2", "level_3")
    assert list(tax.ancestors(["Men > Bags"], 2)) == ["Men > Bags"]
    assert list(tax.ancestors(["Women > Shoes > Boots"], 1)) == ["Women > Shoes"]
    assert canonical_path("Men>Shoes >  Boots", " > ") == "Men > Shoes > Boots"
    assert canonical_path("Men >  > Boots", " > ") is None


def test_round_trip_and_subset() -> None:
    tax = _tax()
    again = Taxonomy.from_dict(tax.to_dict())
    assert again.levels == tax.levels and (again.paths == tax.paths).all()
    sub = tax.subset(["Tshirts", "Casual Shoes"])
    assert list(sub.leaves) == ["Tshirts", "Casual Shoes"]
    assert list(sub.paths[:, 0]) == ["Apparel", "Footwear"]
    with pytest.raises(TaxonomyError, match="not in the taxonomy"):
        tax.subset(["Nope"])


@st.composite
def _tree_and_proba(draw: st.DrawFn) -> tuple[Taxonomy, np.ndarray]:
    n_leaves = draw(st.integers(1, 12))
    depth = draw(st.integers(1, 4))
    parents = [
        [draw(st.integers(0, 2)) for _ in range(depth - 1)] for _ in range(n_leaves)
    ]  # leaf i's branch choice at each level
    labels = [" > ".join([*(f"n{j}{b}" for j, b in enumerate(p)), f"leaf{i}"]) for i, p in enumerate(parents)]
    n = draw(st.integers(1, 6))
    raw = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=n * n_leaves, max_size=n * n_leaves)))
    proba = raw.reshape(n, n_leaves)
    return Taxonomy.from_paths(labels, " > "), proba / proba.sum(1, keepdims=True)


@settings(max_examples=60, deadline=None)
@given(_tree_and_proba())
def test_level_probabilities_sum_to_one_and_are_consistent(case: tuple[Taxonomy, np.ndarray]) -> None:
    tax, proba = case
    for j in range(tax.depth):
        P = tax.level_proba(proba, j)
        assert np.allclose(P.sum(1), 1.0)
        if j + 1 < tax.depth:  # a parent holds exactly its children's mass
            child, nodes_next = tax.level_proba(proba, j + 1), list(tax.nodes(j + 1))
            for k, node in enumerate(tax.nodes(j)):
                children = set(tax.paths[tax.paths[:, j] == node, j + 1])
                assert np.allclose(P[:, k], sum(child[:, nodes_next.index(c)] for c in children))
    path = tax.path_proba(proba, proba.argmax(1))
    assert (np.diff(path, axis=1) <= 1e-12).all()  # never more probable going down
    assert np.allclose(path[:, -1], proba.max(1))


def test_level_scores_and_hierarchical_prf() -> None:
    tax = _tax()
    y = ["Casual Shoes", "Sports Shoes", "Tshirts", "Shirts"]
    pred = ["Sports Shoes", "Sports Shoes", "Flip Flops", "Shirts"]
    scores = level_scores(y, pred, tax)
    assert scores["master"]["accuracy"] == pytest.approx(0.75)
    assert scores["sub"]["accuracy"] == pytest.approx(0.75)
    assert scores["label"]["accuracy"] == pytest.approx(0.5)
    h = hierarchical_prf(y, pred, tax)
    # intersections: 2 (same sub), 3, 0, 3 over 12 true and 12 predicted nodes
    assert h["precision"] == pytest.approx(8 / 12) and h["recall"] == pytest.approx(8 / 12)
    assert hierarchical_prf(y, y, tax)["f1"] == pytest.approx(1.0)


def test_confused_groups_charge_the_deepest_shared_node() -> None:
    tax = _tax()
    y = ["Casual Shoes", "Casual Shoes", "Tshirts", "Flip Flops"]
    pred = ["Sports Shoes", "Sports Shoes", "Flip Flops", "Casual Shoes"]
    groups = confused_groups(y, pred, tax)
    assert groups[0]["node"] == "Shoes" and groups[0]["errors"] == 2 and groups[0]["n"] == 2
    assert groups[0]["top_confusions"] == [["Casual Shoes", "Sports Shoes", 2]]
    nodes = {g["node"]: g for g in groups}
    assert nodes[None]["errors"] == 1 and nodes["Footwear"]["errors"] == 1


def test_back_off_decides_the_deepest_level_meeting_the_target() -> None:
    rng = np.random.default_rng(0)
    tax = _tax()
    C, n = len(tax.leaves), 3000
    y = rng.integers(0, C, n)
    # leaf guesses right 60% of the time, but wrong guesses stay within the true sub category (siblings)
    sibling = {c: [k for k in range(C) if tax.paths[k, 1] == tax.paths[c, 1]] for c in range(C)}
    guess = np.array([c if rng.random() < 0.6 else rng.choice(sibling[c]) for c in y])
    proba = np.full((n, C), 0.02)
    proba[np.arange(n), guess] = 0.9
    proba /= proba.sum(1, keepdims=True)
    thresholds = learn_thresholds(proba, tax.leaves[y], tax, target_precision=0.95)
    assert np.isfinite(thresholds[:2]).all() and not np.isfinite(thresholds[2])
    level, label = back_off(proba, tax, thresholds)
    assert (level == 1).all()  # decided at sub: always right there, never at the leaf
    assert (label == tax.paths[guess, 1]).all()
    with pytest.raises(ValueError, match="one per level"):
        back_off(proba, tax, thresholds[:2])


def test_back_off_abstains_when_no_level_is_reliable() -> None:
    tax = _tax()
    proba = np.full((4, len(tax.leaves)), 0.2)
    level, label = back_off(proba, tax, np.full(3, np.inf))
    assert (level == -1).all() and all(v is None for v in label)
