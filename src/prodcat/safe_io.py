"""Fitted estimators to bytes and back without pickle: skops with an allow-list of types.

Shared by the model bundle (:mod:`prodcat.bundle`) and the training cache (:mod:`prodcat.pipeline`), so both
refuse the same things: a file naming any type outside :data:`ALLOWED_PREFIXES` is never loaded.
"""

from __future__ import annotations

import copy
from typing import Any

# Types a saved estimator may contain besides prodcat's own; anything else is refused at load time.
ALLOWED_PREFIXES = ("prodcat.", "sklearn.", "numpy.", "scipy.sparse.", "builtins.", "collections.")
# Fitted attributes that hold live resources (ONNX sessions, encoders); rebuilt on first use after loading.
RUNTIME_ATTRS = ("embedder_",)


class UnsafeContentError(ValueError):
    """Saved estimator bytes that name refused types or cannot be read; the message says which."""


def strip_runtime(est: Any) -> Any:
    """A shallow copy of ``est`` without live resources (nested estimators are handled by skops)."""
    clean = copy.copy(est)
    for attr in RUNTIME_ATTRS:
        clean.__dict__.pop(attr, None)
    return clean


def dumps_estimator(est: Any) -> bytes:
    """``est`` (without its live resources) as skops bytes."""
    import skops.io as sio

    return bytes(sio.dumps(strip_runtime(est)))


def loads_estimator(data: bytes, *, source: str = "data") -> Any:
    """The estimator in skops ``data``; :class:`UnsafeContentError` naming ``source`` if refused or unreadable."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as e:  # not a skops archive at all
        raise UnsafeContentError(f"{source}: not a saved estimator ({e.__class__.__name__}: {e})") from e
    refused = [t for t in untrusted if not t.startswith(ALLOWED_PREFIXES)]
    if refused:
        raise UnsafeContentError(f"{source}: refuses to load unexpected types {refused}")
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception as e:  # skops raises many types for incompatible content
        raise UnsafeContentError(f"{source}: cannot load ({e.__class__.__name__}: {e})") from e
