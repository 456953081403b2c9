"""Name -> factory registries (timm style), so configs and CLIs pick backbones and methods by name.

Each kind (``"text-embedder"``, ``"image-embedder"``, ``"text-model"``, ``"fusion"``...) has its own table.
Modules register on import; ``create`` imports the modules that fill a table on first use so that heavy
dependencies load only when a name is actually asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

_TABLES: dict[str, dict[str, Callable[..., Any]]] = {}
# Modules whose import fills a table; imported lazily by ``create``/``available``.
_PROVIDERS: dict[str, list[str]] = {
    "text-embedder": ["prodcat.text.encoders"],
    "image-embedder": ["prodcat.image.encoders"],
    "text-model": ["prodcat.text.models"],
    "image-model": ["prodcat.image.models"],
    "fusion": ["prodcat.fusion"],
}


def register(kind: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``factory`` under ``name`` in the ``kind`` table."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        table = _TABLES.setdefault(kind, {})
        if name in table and table[name] is not factory:
            raise ValueError(f"{kind} {name!r} is already registered")
        table[name] = factory
        return factory

    return deco


def _load(kind: str) -> dict[str, Callable[..., Any]]:
    for module in _PROVIDERS.get(kind, []):
        importlib.import_module(module)
    return _TABLES.get(kind, {})


def available(kind: str) -> list[str]:
    """Sorted names registered for ``kind``."""
    return sorted(_load(kind))


def lookup(kind: str, name: str) -> Callable[..., Any]:
    """The factory registered as ``name`` (a prefix ``hf:`` for ``hf:<path>``); KeyError naming the choices."""
    table = _load(kind)
    if name in table:
        return table[name]
    prefix, sep, _ = name.partition(":")
    if sep and f"{prefix}:" in table:
        return table[f"{prefix}:"]
    raise KeyError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table)) or 'none'}")


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Build the ``kind`` object registered as ``name``; prefixes such as ``hf:<path>`` match ``hf:``."""
    factory = lookup(kind, name)
    if name in _TABLES.get(kind, {}):
        return factory(**kwargs)
    return factory(name.partition(":")[2], **kwargs)
