"""Fusion methods, registered under registry kind ``"fusion"``, and their pickle-free state.

Names (``prodcat.registry.create("fusion", name, **kwargs)``):

- decision-level, ``X = (n, m * C)`` concatenated probabilities: ``paper-mlp`` (the paper's K-fold shallow nets),
  ``mean`` (weighted mean), ``log-linear`` (a weight per model and class, for many classes), ``logistic``
  (stacking), ``gbdt`` (gradient-boosted trees), ``paper-mlp-tiny``
  (a seconds-fast variant for tests and demos);
- feature-level, ``X = embeddings``: ``feature-concat``, ``feature-sum``, ``feature-attention``;
- ``ensemble``: a :class:`~prodcat.ensemble.VotingEnsemble` of decision-level fusers, e.g.
  ``create("fusion", "ensemble", members="paper-mlp+paper-mlp[n_layers=2]+logistic", voting="hard")``.

:func:`get_state` / :func:`from_state` turn a fitted fuser into ``(JSON-able dict, {name: numpy array})`` and back;
:func:`dumps_fuser` / :func:`loads_fuser` are the one byte encoding of that state (JSON + safetensors, never
pickle), used by the bundle, the ``prodcat fuse`` folder and the training cache alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from prodcat.ensemble import VotingEnsemble
from prodcat.fusion.decision import DecisionFusion, LogisticFusion, MeanFusion
from prodcat.fusion.feature import FeatureFusion
from prodcat.fusion.gbdt import GBDTFusion
from prodcat.fusion.loglinear import LogLinearFusion
from prodcat.fusion.paper_mlp import PaperMLPFusion
from prodcat.probability import check_probabilities
from prodcat.registry import create, register

__all__ = [
    "DecisionFusion",
    "FeatureFusion",
    "GBDTFusion",
    "LogLinearFusion",
    "LogisticFusion",
    "MeanFusion",
    "PaperMLPFusion",
    "check_probabilities",
    "dumps_fuser",
    "from_state",
    "get_state",
    "loads_fuser",
    "make_ensemble",
    "parse_members",
]

#: Default members of ``ensemble`` (chosen on split_a_val folds and split_b_val; see docs/bench/fusion.md), used
#: when the class count is not known; :func:`default_members` picks from :data:`DEFAULT_CANDIDATES` by count.
DEFAULT_MEMBERS = "mean+paper-mlp[inputs=log]+gbdt"

#: Every member the default ensemble may hold, each used at the class counts of :data:`CLASS_RANGES`.
DEFAULT_CANDIDATES = DEFAULT_MEMBERS + "+log-linear"

#: Class counts ``(fewest, most)`` (None: no bound) at which a fuser is a default member; one absent here
#: serves every count. ``gbdt`` grows one tree per class per boosting round and ``paper-mlp`` (like
#: ``logistic``) learns an (m*C, C) weight matrix, K nets at a time: both cost ~C or C^2 per row and ran for
#: tens of minutes at 331 classes. Above 100 classes ``log-linear`` (m*C + C weights, a pass costs n*m*C like
#: ``mean``'s) replaces them and ``mean``: at 327 leaves it beat ``mean`` alone (docs/bench/classes.md). A
#: fuser named in an explicit member list is always kept.
CLASS_RANGES: dict[str, tuple[int, int | None]] = {
    "mean": (1, 100),
    "gbdt": (1, 100),
    "paper-mlp": (1, 100),
    "logistic": (1, 100),
    "log-linear": (101, None),
}


def default_members(n_classes: int | None) -> str:
    """The members of :data:`DEFAULT_CANDIDATES` whose :data:`CLASS_RANGES` hold ``n_classes`` (``mean`` if
    none does); :data:`DEFAULT_MEMBERS` when the class count is not known."""
    if n_classes is None:
        return DEFAULT_MEMBERS

    def serves(name: str) -> bool:
        low, high = CLASS_RANGES.get(name, (1, None))
        return low <= n_classes and (high is None or n_classes <= high)

    kept = [
        item
        for (name, _), item in zip(
            parse_members(DEFAULT_CANDIDATES), DEFAULT_CANDIDATES.split("+"), strict=True
        )
        if serves(name)
    ]
    return "+".join(kept) or "mean"


register("fusion", "paper-mlp")(PaperMLPFusion)
register("fusion", "mean")(MeanFusion)
register("fusion", "logistic")(LogisticFusion)
register("fusion", "gbdt")(GBDTFusion)
register("fusion", "log-linear")(LogLinearFusion)


@register("fusion", "paper-mlp-tiny")
def _paper_mlp_tiny(**kwargs: Any) -> PaperMLPFusion:
    # 20 epochs: with 5 it underfit badly on a few hundred rows (0.39 vs 0.71 macro-F1, 300 Rakuten rows).
    return PaperMLPFusion(**{"epochs": 20, "n_splits": 3, **kwargs})


for _combine in ("concat", "sum", "attention"):
    register("fusion", f"feature-{_combine}")(
        lambda _c=_combine, **kw: FeatureFusion(**{"combine": _c, **kw})  # type: ignore[misc]
    )


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_members(members: str | Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``"paper-mlp+paper-mlp[n_layers=2,seed=1]+logistic"`` (or a list of such items) ->
    ``[("paper-mlp", {}), ("paper-mlp", {"n_layers": 2, "seed": 1}), ("logistic", {})]``.
    Values are read as JSON when they parse, else kept as strings."""
    items = members.split("+") if isinstance(members, str) else list(members)
    out = []
    for item in (i.strip() for i in items):
        name, _, rest = item.partition("[")
        kwargs: dict[str, Any] = {}
        if rest:
            if not rest.endswith("]"):
                raise ValueError(f"bad ensemble member {item!r}: expected name[key=value,...]")
            for pair in filter(None, rest[:-1].split(",")):
                key, eq, value = pair.partition("=")
                if not eq:
                    raise ValueError(f"bad option {pair!r} in ensemble member {item!r}")
                kwargs[key.strip()] = _parse_value(value.strip())
        if not name:
            raise ValueError(f"empty ensemble member in {members!r}")
        out.append((name.strip(), kwargs))
    return out


def _count(classes: Sequence[Any] | None) -> int | None:
    return None if classes is None else len(classes)


def _accepts(name: str) -> set[str]:
    est = create("fusion", name)
    return set(est.get_params(deep=False))


@register("fusion", "ensemble")
def make_ensemble(
    members: str | Sequence[str] = "auto",
    *,
    voting: str = "hard",
    weights: Sequence[float] | None = None,
    n_classes: int | None = None,
    **shared: Any,
) -> VotingEnsemble:
    """A :class:`VotingEnsemble` of registered fusers; ``shared`` options (``classes``, ``n_models``, ``seed``...)
    go to every member that accepts them, member options (``name[key=value]``) override them.

    ``members="auto"``: :func:`default_members` for ``n_classes`` (the training pipeline passes the class
    count): ``DEFAULT_MEMBERS`` up to 100 classes, ``log-linear`` alone above."""
    if isinstance(members, str) and members == "auto":
        members = default_members(n_classes if n_classes is not None else _count(shared.get("classes")))
    estimators = []
    for i, (name, kwargs) in enumerate(parse_members(members)):
        accepted = _accepts(name)
        opts = {k: v for k, v in shared.items() if k in accepted}
        label = name + ("[" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + "]" if kwargs else "")
        estimators.append((f"{i}:{label}", create("fusion", name, **{**opts, **kwargs})))
    return VotingEnsemble(estimators, voting=voting, weights=weights, refit=True)


# --- pickle-free state ---------------------------------------------------------------------------------

_CLASSES: dict[str, type] = {
    c.__name__: c
    for c in (
        MeanFusion,
        LogisticFusion,
        LogLinearFusion,
        GBDTFusion,
        PaperMLPFusion,
        FeatureFusion,
        VotingEnsemble,
    )
}


def _jsonable(value: Any) -> Any:
    """Plain JSON types (NaN/inf -> None); raises TypeError for anything else."""
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store {type(value).__name__} value {value!r} as JSON")


def get_state(est: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a fitted fuser: ``meta`` is JSON-able (class, constructor params, small fitted
    values), ``arrays`` maps names to numpy arrays (weights, trees). Inverse: :func:`from_state`."""
    kind = type(est).__name__
    if kind not in _CLASSES:
        raise TypeError(f"cannot save a {kind}; supported: {', '.join(sorted(_CLASSES))}")
    if not hasattr(est, "classes_"):
        raise ValueError(f"{kind} is not fitted")
    params = {k: v for k, v in est.get_params(deep=False).items() if k != "estimators"}
    fitted: dict[str, Any] = {"classes_": est.classes_.tolist()}
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"class": kind, "params": params, "fitted": fitted}
    if isinstance(est, VotingEnsemble):
        meta["members"] = []
        for i, (name, member) in enumerate(est.named_estimators_.items()):
            m_meta, m_arrays = get_state(member)
            meta["members"].append({"name": name, **m_meta})
            arrays.update({f"m{i}.{k}": v for k, v in m_arrays.items()})
    else:
        if isinstance(est, DecisionFusion):
            fitted.update(n_models_=est.n_models_, n_extra_=est.n_extra_, n_features_in_=est.n_features_in_)
        info, own = est._fitted_state()
        fitted.update(info)
        arrays.update(own)
    return _jsonable(meta), {k: np.ascontiguousarray(v) for k, v in arrays.items()}


def dumps_fuser(est: Any) -> tuple[bytes, bytes]:
    """``(meta JSON, arrays safetensors)`` bytes of a fitted fuser (:func:`get_state`). Inverse:
    :func:`loads_fuser`."""
    from safetensors.numpy import save

    meta, arrays = get_state(est)
    return json.dumps(meta, indent=1, allow_nan=False).encode(), save(arrays or {"_empty": np.zeros(1)})


def loads_fuser(meta_json: bytes, arrays_safetensors: bytes) -> Any:
    """The fitted fuser of :func:`dumps_fuser`'s bytes. Raises ValueError (or KeyError / TypeError) on bytes
    that are not a fuser's state; nothing in them is executed."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        arrays = {k: v for k, v in load(arrays_safetensors).items() if k != "_empty"}
    except SafetensorError as e:
        raise ValueError(f"unreadable fuser arrays ({e})") from None
    return from_state(json.loads(meta_json), arrays)


def from_state(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """Rebuild a fitted fuser from :func:`get_state` output (no code is executed from the data)."""
    kind = meta.get("class")
    if kind not in _CLASSES:
        raise ValueError(f"unknown fuser class {kind!r} in saved state")
    fitted = dict(meta["fitted"])
    if kind == "VotingEnsemble":
        members = []
        for i, m_meta in enumerate(meta["members"]):
            prefix = f"m{i}."
            sub = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            members.append((m_meta["name"], from_state(m_meta, sub)))
        est = VotingEnsemble(members, **meta["params"])
        est.named_estimators_ = dict(members)
        est.estimators_ = [m for _, m in members]
        est.classes_ = np.asarray(fitted["classes_"])
        return est
    est = _CLASSES[kind](**meta["params"])
    est.classes_ = np.asarray(fitted.pop("classes_"))
    for key in ("n_models_", "n_extra_", "n_features_in_"):
        if key in fitted and isinstance(est, DecisionFusion):
            setattr(est, key, int(fitted.pop(key)))
    est._restore_state(fitted, arrays)
    return est
