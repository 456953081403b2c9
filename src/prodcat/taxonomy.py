"""Category taxonomies: leaves and their ancestors, per-level probabilities, hierarchical metrics and back-off.

A catalog names its hierarchy either with parent columns (coarse to fine, the label being the leaf) or with path
labels split on a separator (``"Footwear > Shoes > Casual Shoes"``, as the Google and Shopify taxonomies are
written). Either way the classifier still predicts leaves; everything above the leaf is derived here, without
retraining:

- a parent's probability is the sum of its leaves' (:meth:`Taxonomy.level_proba`, a sparse (C, K_level) 0/1
  aggregation matrix), so a path's probabilities never increase going down and always agree with each other;
- per-level and hierarchical metrics (:func:`level_scores`, :func:`hierarchical_prf`, ancestor-augmented sets
  after Kiritchenko et al. 2005) and the sibling groups the model confuses most (:func:`confused_groups`);
- back-off (:func:`learn_thresholds`, :func:`back_off`): one probability threshold per level, learned so that the
  products decided at that level meet a target precision with a lower confidence bound (issue 17's rule); a product whose leaf is
  uncertain gets the deepest level of its predicted path that clears its threshold.

Paths of different depths (a path label "A > B" beside "A > B > C") are padded with their last node, so every
leaf has one ancestor per level. Pure: arrays in, arrays out; no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

Labels = Sequence[Any] | np.ndarray  # (n,) labels


class TaxonomyError(ValueError):
    """The labels do not form a tree; ``rows`` are the positions (0-based) of the rows at fault."""

    def __init__(self, message: str, rows: Sequence[int] | np.ndarray = ()) -> None:
        super().__init__(message)
        self.rows = [int(r) for r in rows]


@dataclass(frozen=True)
class Taxonomy:
    """A tree of categories whose leaves are the classifier's classes.

    Attributes
    ----------
    levels : level names, coarse to fine; the last is the leaf level.
    leaves : (C,) leaf labels (the classes, in the classifier's ``classes_`` order once :meth:`subset` is applied).
    paths : (C, L) ancestor label of every leaf at every level (``paths[:, -1] == leaves``).
    separator : the path separator of path labels, or None for parent columns.
    """

    levels: tuple[str, ...]
    leaves: np.ndarray
    paths: np.ndarray
    separator: str | None = None

    # --- building ------------------------------------------------------------------------------------
    @classmethod
    def from_columns(cls, frame: pd.DataFrame, columns: Sequence[str], *, label: str = "label") -> Taxonomy:
        """From parent columns of ``frame`` (coarse to fine) and its ``label`` column (the leaf).

        Raises :class:`TaxonomyError` when a value is empty or a node sits under two parents (naming the rows).
        """
        names = [*columns, label]
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise TaxonomyError(f"taxonomy column(s) {missing} not found")
        if len(set(names)) != len(names):
            raise TaxonomyError(f"taxonomy columns repeat a column: {names}")
        values = np.column_stack([frame[c].map(_node_str).to_numpy(dtype=object) for c in names])
        empty = np.flatnonzero((values == "").any(axis=1))
        if len(empty):
            raise TaxonomyError(f"empty taxonomy value ({', '.join(names)}) in rows", empty)
        for j in range(1, len(names)):  # each node at level j has one parent at level j - 1
            _check_single_parent(values[:, j - 1], values[:, j], names[j - 1], names[j])
        return cls._from_values((*columns, label), values, separator=None)

    @classmethod
    def from_paths(cls, labels: Labels, separator: str) -> Taxonomy:
        """From path labels (``"A > B > C"``); node labels are the path prefixes (``"A"``, ``"A > B"``...), so a
        name may recur under different parents. Labels must be canonical (see :func:`canonical_path`)."""
        parts = [str(v).split(separator) for v in labels]
        depth = max((len(p) for p in parts), default=1)
        values = np.empty((len(parts), depth), dtype=object)
        for i, p in enumerate(parts):
            prefixes = [separator.join(p[: j + 1]) for j in range(len(p))]
            values[i] = prefixes + [prefixes[-1]] * (depth - len(p))
        levels = tuple(f"level_{j + 1}" for j in range(depth))
        return cls._from_values(levels, values, separator=separator)

    @classmethod
    def _from_values(cls, levels: tuple[str, ...], values: np.ndarray, *, separator: str | None) -> Taxonomy:
        leaves, first = np.unique(values[:, -1].astype(str), return_index=True)
        return cls(levels=levels, leaves=leaves, paths=values[first].astype(str), separator=separator)

    def subset(self, classes: Labels) -> Taxonomy:
        """The taxonomy restricted to ``classes``, leaves in that order (e.g. a model's ``classes_``)."""
        pos = {c: i for i, c in enumerate(self.leaves.tolist())}
        unknown = [str(c) for c in classes if str(c) not in pos]
        if unknown:
            raise TaxonomyError(f"classes not in the taxonomy: {unknown[:5]}")
        idx = np.array([pos[str(c)] for c in classes], dtype=np.int64)
        return Taxonomy(self.levels, self.leaves[idx], self.paths[idx], self.separator)

    # --- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the bundle manifest's ``taxonomy``)."""
        return {
            "levels": list(self.levels),
            "separator": self.separator,
            "paths": [list(map(str, row)) for row in self.paths],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Taxonomy:
        paths = np.asarray(data["paths"], dtype=str).reshape(len(data["paths"]), len(data["levels"]))
        return cls(tuple(data["levels"]), paths[:, -1].copy(), paths, data.get("separator"))

    # --- levels --------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self.levels)

    def level_of(self, level: int | str) -> int:
        """Level index of a level name or index (negative counts from the leaf)."""
        if isinstance(level, str):
            if level not in self.levels:
                raise KeyError(f"no level {level!r}; levels are {list(self.levels)}")
            return self.levels.index(level)
        if not -self.depth <= level < self.depth:
            raise IndexError(f"level {level} out of range for {self.depth} levels")
        return level % self.depth

    def nodes(self, level: int | str) -> np.ndarray:
        """Sorted node labels at ``level``."""
        return np.unique(self.paths[:, self.level_of(level)])

    def aggregation(self, level: int | str) -> Any:
        """Sparse (C, K) 0/1 matrix: leaf c belongs to node k of ``level`` (nodes in :meth:`nodes` order)."""
        import scipy.sparse as sp

        nodes, codes = np.unique(self.paths[:, self.level_of(level)], return_inverse=True)
        C = len(self.leaves)
        return sp.csr_matrix((np.ones(C), (np.arange(C), codes)), shape=(C, len(nodes)))

    def level_proba(self, proba: np.ndarray, level: int | str) -> np.ndarray:
        """(n, K) probabilities of the nodes of ``level`` from leaf probabilities ``proba`` (n, C), by summing."""
        return np.asarray(self.aggregation(level).T.dot(np.asarray(proba, dtype=np.float64).T).T)

    def ancestors(self, labels: Labels, level: int | str) -> np.ndarray:
        """(n,) the ancestor at ``level`` of each leaf label."""
        idx = self.leaf_index(labels)
        return self.paths[idx, self.level_of(level)]

    def leaf_index(self, labels: Labels) -> np.ndarray:
        """(n,) position of each leaf label in ``leaves``; :class:`TaxonomyError` for a label not in the tree."""
        pos = {c: i for i, c in enumerate(self.leaves.tolist())}
        try:
            return np.fromiter((pos[str(v)] for v in labels), dtype=np.int64, count=len(labels))
        except KeyError as e:
            raise TaxonomyError(f"label {e.args[0]!r} is not a leaf of the taxonomy") from None

    def path_proba(self, proba: np.ndarray, leaf_idx: np.ndarray) -> np.ndarray:
        """(n, L) probability of each level's node on the path of leaf ``leaf_idx[i]`` (coarse to fine)."""
        proba = np.asarray(proba, dtype=np.float64)
        rows = np.arange(len(proba))
        out = np.empty((len(proba), self.depth))
        for j in range(self.depth):
            agg = self.aggregation(j)
            node = agg.indices[leaf_idx]  # one node per leaf (CSR rows hold one entry)
            out[:, j] = self.level_proba(proba, j)[rows, node]
        return out


def canonical_path(label: Any, separator: str) -> str | None:
    """``label`` split on ``separator`` with each part stripped, joined again; None if a part is empty."""
    parts = [p.strip() for p in str(label).split(separator.strip() or separator)]
    return separator.join(parts) if all(parts) else None


def _node_str(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v).strip()


def _check_single_parent(parent: np.ndarray, child: np.ndarray, parent_name: str, child_name: str) -> None:
    frame = pd.DataFrame({"p": parent, "c": child})
    counts = frame.groupby("c")["p"].nunique()
    bad = counts[counts > 1]
    if bad.empty:
        return
    node = bad.index[0]
    rows = np.flatnonzero(child == node)
    seen = {p: int(rows[parent[rows] == p][0]) for p in pd.unique(parent[rows])}
    listing = ", ".join(f"{p!r} (row {r})" for p, r in seen.items())
    raise TaxonomyError(
        f"{child_name} {node!r} is under {len(seen)} {parent_name} values: {listing}; a node must have one "
        f"parent ({len(bad)} such {child_name} value(s) in all)",
        sorted(seen.values()),
    )


# --- metrics -----------------------------------------------------------------------------------------


def level_scores(y_true: Labels, y_pred: Labels, taxonomy: Taxonomy) -> dict[str, dict[str, float]]:
    """``{level: {"macro_f1", "accuracy", "n_nodes"}}`` of the predicted leaves' ancestors, coarse to fine."""
    from sklearn.metrics import accuracy_score, f1_score

    out = {}
    for j, name in enumerate(taxonomy.levels):
        t, p = taxonomy.ancestors(y_true, j), taxonomy.ancestors(y_pred, j)
        out[name] = {
            "macro_f1": float(f1_score(t, p, average="macro", labels=np.unique(t), zero_division=0)),
            "accuracy": float(accuracy_score(t, p)),
            "n_nodes": len(np.unique(t)),
        }
    return out


def _node_sets(taxonomy: Taxonomy) -> list[frozenset[tuple[int, str]]]:
    """Per leaf, its ancestor-augmented set: the distinct nodes of its path (a node repeated at the next level,
    as padding or a category named twice, counts once)."""
    sets = []
    for row in taxonomy.paths:
        nodes = [(j, lab) for j, lab in enumerate(row) if j == 0 or lab != row[j - 1]]
        sets.append(frozenset(nodes))
    return sets


def hierarchical_prf(y_true: Labels, y_pred: Labels, taxonomy: Taxonomy) -> dict[str, float]:
    """Hierarchical precision, recall and F1 (Kiritchenko et al.): with T_i and P_i the true and predicted
    leaves' ancestor-augmented sets, hP = sum|T_i & P_i| / sum|P_i|, hR = sum|T_i & P_i| / sum|T_i|."""
    t_idx, p_idx = taxonomy.leaf_index(y_true), taxonomy.leaf_index(y_pred)
    if not len(t_idx):
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    sets = _node_sets(taxonomy)
    pairs, counts = np.unique(np.column_stack([t_idx, p_idx]), axis=0, return_counts=True)
    inter = sum(int(k) * len(sets[t] & sets[p]) for (t, p), k in zip(pairs, counts, strict=True))
    size = np.array([len(s) for s in sets])
    hp, hr = inter / size[p_idx].sum(), inter / size[t_idx].sum()
    return {
        "precision": float(hp),
        "recall": float(hr),
        "f1": float(2 * hp * hr / (hp + hr) if hp + hr else 0.0),
    }


def confused_groups(
    y_true: Labels, y_pred: Labels, taxonomy: Taxonomy, *, top: int = 10, pairs: int = 3
) -> list[dict[str, Any]]:
    """The sibling groups where most mistakes happen: each wrong leaf is charged to the deepest node its true
    and predicted paths share (``None`` at the root). Sorted by errors; per group: ``node``, ``level``,
    ``errors``, ``n`` (true products under the node), ``error_rate`` and the most frequent ``(true, predicted,
    count)`` confusions inside it."""
    t_idx, p_idx = taxonomy.leaf_index(y_true), taxonomy.leaf_index(y_pred)
    wrong = t_idx != p_idx
    groups: dict[tuple[int, str | None], Counter[tuple[str, str]]] = {}
    for t, p in zip(t_idx[wrong], p_idx[wrong], strict=True):
        shared = [j for j in range(taxonomy.depth - 1) if taxonomy.paths[t, j] == taxonomy.paths[p, j]]
        key = (shared[-1], str(taxonomy.paths[t, shared[-1]])) if shared else (-1, None)
        groups.setdefault(key, Counter())[(str(taxonomy.leaves[t]), str(taxonomy.leaves[p]))] += 1
    out: list[dict[str, Any]] = []
    for (j, node), confusions in groups.items():
        n = len(t_idx) if node is None else int((taxonomy.paths[t_idx, j] == node).sum())
        errors = sum(confusions.values())
        out.append(
            {
                "node": node,
                "level": None if node is None else taxonomy.levels[j],
                "errors": errors,
                "n": n,
                "error_rate": errors / n if n else 0.0,
                "top_confusions": [[a, b, k] for (a, b), k in confusions.most_common(pairs)],
            }
        )
    out.sort(key=lambda g: (-g["errors"], -g["error_rate"]))
    return out[:top]


def taxonomy_metrics(y_true: Labels, y_pred: Labels, taxonomy: Taxonomy) -> dict[str, Any]:
    """``{"levels": level_scores, "hierarchical": hierarchical_prf, "confused_groups": confused_groups}``."""
    return {
        "levels": level_scores(y_true, y_pred, taxonomy),
        "hierarchical": hierarchical_prf(y_true, y_pred, taxonomy),
        "confused_groups": confused_groups(y_true, y_pred, taxonomy),
    }


# --- back-off ----------------------------------------------------------------------------------------


def learn_thresholds(
    proba: np.ndarray,
    y: Labels,
    taxonomy: Taxonomy,
    *,
    target_precision: float,
    confidence: float = 0.95,
    bound: str = "clopper-pearson",
) -> np.ndarray:
    """(L,) per-level probability thresholds for :func:`back_off`, from held-out (e.g. out-of-fold) leaf
    probabilities ``proba`` (n, C, in ``taxonomy.leaves`` order) and true leaves ``y``.

    At level j each product is scored by the probability of its predicted leaf's ancestor; the threshold is the
    lowest score such that the products at or above it are right (ancestor equals the true one) with a
    ``confidence`` lower bound (``bound``: issue 17's :func:`prodcat.acceptance.bounded_threshold`, Clopper-Pearson
    or Wilson) on precision of at least ``target_precision``. ``inf`` when no threshold can.
    """
    from prodcat.acceptance import bounded_threshold

    if not 0 < target_precision <= 1:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(1)
    scores = taxonomy.path_proba(proba, pred)  # (n, L)
    true_idx = taxonomy.leaf_index(y)
    out = np.empty(taxonomy.depth)
    for j in range(taxonomy.depth):
        right = taxonomy.paths[pred, j] == taxonomy.paths[true_idx, j]
        out[j] = bounded_threshold(
            scores[:, j], right, target=target_precision, level=confidence, method=bound
        )
    return out


def back_off(
    proba: np.ndarray, taxonomy: Taxonomy, thresholds: np.ndarray, *, leaf: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The deepest decided level of each product's predicted path.

    Returns ``(level (n,) int, -1 where no level clears its threshold; label (n,) object, the node decided at
    that level or None)``. The path is the predicted leaf's (``leaf`` indices, default the argmax of ``proba``);
    its probabilities grow going up, so backing off trades depth for precision.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (taxonomy.depth,):
        raise ValueError(f"need {taxonomy.depth} thresholds (one per level), got shape {thresholds.shape}")
    pred = np.asarray(proba).argmax(1) if leaf is None else np.asarray(leaf, dtype=np.int64)
    clears = taxonomy.path_proba(proba, pred) >= thresholds  # (n, L)
    depth_idx = np.arange(taxonomy.depth)
    level = np.where(clears, depth_idx, -1).max(1)
    label = np.array(
        [taxonomy.paths[c, j] if j >= 0 else None for c, j in zip(pred, level, strict=True)], dtype=object
    )
    return level, label
