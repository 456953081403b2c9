"""Fitted estimators to bytes and back without pickle: skops, loaded against an exact allow-list.

Shared by the model bundle (:mod:`prodcat.bundle`) and the training cache (:mod:`prodcat.pipeline`), so both
refuse the same things. A skops file is a zip archive whose ``schema.json`` names, for every object, a loader
(``ObjectNode``, ``TypeNode``, ``FunctionNode``...) and a ``module.name``. Before skops builds anything,
:func:`audit` reads that schema and refuses the archive unless every ``(loader, module.name)`` pair is in
:data:`ALLOWED`: the exact set that prodcat's own models save (``tests/test_safe_io.py`` saves every built-in
config's models and every registered model and checks it). There is no prefix matching and no function
reference is allowed at all: ``TfidfVectorizer(analyzer=eval)`` names ``builtins.eval`` through a
``FunctionNode`` and is refused before it is built.

Archives are also bounded before anything is read: a zip bomb (a small file that unpacks to gigabytes) is
refused from its directory (declared sizes, which :mod:`zipfile` enforces while reading).
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

# Fitted attributes that hold live resources (ONNX sessions, encoders); rebuilt on first use after loading.
RUNTIME_ATTRS = ("embedder_",)

_CONTAINERS = {
    "DictNode": {"builtins.dict"},
    "ListNode": {"builtins.list"},
    "TupleNode": {"builtins.tuple"},
    "JsonNode": {"builtins.str", "builtins.int", "builtins.float", "builtins.bool", "builtins.NoneType"},
}
# Array and scalar payloads: read by numpy with allow_pickle=False.
_ARRAYS = {
    "NdArrayNode": {
        "numpy.ndarray",
        "numpy.float64",
        "numpy.float32",
        "numpy.int64",
        "numpy.int32",
        "numpy.bool",
        "numpy.bool_",
        "numpy.str_",
    },
    "RandomStateNode": {"numpy.random.mtrand.RandomState"},
}
# Estimators rebuilt attribute by attribute (``__new__`` + ``__setstate__``/``__dict__``), never called.
_ESTIMATORS = {
    "ObjectNode": {
        "prodcat.folds.FoldEnsemble",
        "prodcat.models.EmbeddingClassifier",
        "prodcat.text.models.TfidfTextClassifier",
        "prodcat.image.finetune.ImageFineTuneClassifier",
        "prodcat.image.top.LiteTopClassifier",
        "prodcat.heads.GroupedClassifier",
        "prodcat.heads.SharedCovarianceClassifier",
        "prodcat.text.finetune.HFTextClassifier",
        "sklearn.feature_extraction.text.TfidfTransformer",
        "sklearn.feature_extraction.text.TfidfVectorizer",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.linear_model._stochastic_gradient.SGDClassifier",
        "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._label.LabelBinarizer",
    },
    # SGDClassifier keeps its loss object (rebuilt from its class by skops; a compiled scikit-learn type).
    "LossNode": {"sklearn._loss._loss.CyHalfBinomialLoss"},
}
# References to a type, not an instance: the ``dtype=`` of vectorizers and the key types of dicts.
_TYPE_REFERENCES = {"TypeNode": {"builtins.str", "numpy.float32", "numpy.float64", "numpy.int64"}}

ALLOWED: dict[str, frozenset[str]] = {
    loader: frozenset(names)
    for table in (_CONTAINERS, _ARRAYS, _ESTIMATORS, _TYPE_REFERENCES)
    for loader, names in table.items()
}
"""``loader -> {module.name}``: everything a skops file written by prodcat may hold. No ``FunctionNode``,
``MethodNode``, ``PartialNode`` or ``OperatorFuncNode``: prodcat's models store no function reference."""

# ``CachedNode`` points back at an object already built from an earlier node (shared references).
_BACK_REFERENCE = "CachedNode"
# An estimator archive larger than this once unpacked is refused (the largest tfidf model seen: ~200 MB).
MAX_UNPACKED_BYTES = 4 * 1024**3
# prodcat writes stored (uncompressed) archives; a member that would grow more than this is refused.
MAX_COMPRESSION_RATIO = 100


class UnsafeContentError(ValueError):
    """Saved estimator bytes that name refused types or cannot be read; the message says which."""


def one_line(e: BaseException, *, limit: int = 400) -> str:
    """``ClassName: message`` of ``e`` on one line (library messages span lines), at most ``limit`` characters."""
    text = f"{e.__class__.__name__}: {' '.join(str(e).split())}"
    return text if len(text) <= limit else text[:limit] + "..."


def strip_runtime(est: Any) -> Any:
    """A shallow copy of ``est`` without live resources, and so the fitted members of an ensemble
    (``estimators_``, :class:`prodcat.folds.FoldEnsemble`)."""
    clean = copy.copy(est)
    for attr in RUNTIME_ATTRS:
        clean.__dict__.pop(attr, None)
    members = clean.__dict__.get("estimators_")
    if isinstance(members, list):
        clean.__dict__["estimators_"] = [strip_runtime(m) for m in members]
    return clean


def _skops_io() -> Any:
    """:mod:`skops.io`, imported without walking every scikit-learn estimator.

    On import, skops builds its default trust list of scikit-learn estimators with
    :func:`sklearn.utils.all_estimators`, which imports every scikit-learn module (pytest and, through
    ``sklearn.externals.array_api_compat.torch``, torch: seconds before the first prediction). prodcat never
    relies on that default list: :func:`loads_estimator` passes the exact names that :func:`audit` checked
    against :data:`ALLOWED`, so the walk is replaced by an empty list for the duration of the import (skops'
    own default trust then only shrinks, never grows).
    """
    import sys

    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    import sklearn.utils

    walk = sklearn.utils.all_estimators
    sklearn.utils.all_estimators = lambda type_filter=None: []
    try:
        import skops.io
    finally:
        sklearn.utils.all_estimators = walk
    return skops.io


def dumps_estimator(est: Any) -> bytes:
    """``est`` (without its live resources) as skops bytes."""
    sio = _skops_io()
    return bytes(sio.dumps(strip_runtime(est)))


def _nodes(state: Any) -> Iterator[dict[str, Any]]:
    """Every skops node (a dict with ``__loader__``) in a parsed ``schema.json``, depth first, iteratively."""
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__loader__" in item:
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _check_sizes(archive: zipfile.ZipFile, source: str) -> None:
    total = 0
    for info in archive.infolist():
        total += info.file_size
        if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1024):
            raise UnsafeContentError(
                f"{source}: refused: member {info.filename!r} unpacks {info.file_size} bytes from "
                f"{info.compress_size} (a zip bomb?)"
            )
    if total > MAX_UNPACKED_BYTES:
        raise UnsafeContentError(
            f"{source}: refused: unpacks to {total} bytes, more than {MAX_UNPACKED_BYTES} (a zip bomb?)"
        )


def audit(data: bytes, *, source: str = "data") -> set[str]:
    """The ``module.name`` of every node in skops ``data`` after checking each against :data:`ALLOWED`.

    Raises :class:`UnsafeContentError` naming ``source`` and the first refused ``loader module.name`` (or why
    the archive cannot be read). Nothing in ``data`` is imported or built.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            _check_sizes(archive, source)
            schema = json.loads(archive.read("schema.json"))
    except UnsafeContentError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, RecursionError, OSError) as e:
        raise UnsafeContentError(f"{source}: not a saved estimator ({one_line(e)})") from None
    names: set[str] = set()
    for node in _nodes(schema):
        loader, module, cls = node.get("__loader__"), node.get("__module__"), node.get("__class__")
        if not (isinstance(loader, str) and isinstance(module, str) and isinstance(cls, str)):
            raise UnsafeContentError(f"{source}: not a saved estimator (malformed node {str(node)[:80]})")
        name = f"{module}.{cls}"
        # a dotted class name would let "a" + "b.c" pass as "a.b" + "c"
        allowed = "." not in cls and (
            name in ALLOWED.get(loader, ()) or (loader == _BACK_REFERENCE and _allowed_anywhere(name))
        )
        if not allowed:
            raise UnsafeContentError(f"{source}: refused type {name} ({loader}): not on prodcat's allow-list")
        names.add(name)
    return names


def _allowed_anywhere(name: str) -> bool:
    return any(name in names for names in ALLOWED.values())


def loads_estimator(data: bytes, *, source: str = "data") -> Any:
    """The estimator in skops ``data`` after :func:`audit`; :class:`UnsafeContentError` naming ``source`` if
    refused or unreadable."""
    sio = _skops_io()
    names = audit(data, source=source)
    try:
        # every name was checked above; skops' own default trust list is a superset we do not rely on
        return sio.loads(data, trusted=sorted(names))
    except Exception as e:  # skops raises many types for incompatible content
        raise UnsafeContentError(f"{source}: cannot load ({one_line(e)})") from e
